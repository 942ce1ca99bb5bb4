"""Registers FaceLLM with VLMEvalKit without touching VLMEvalKit's files.

Importing this file (see `facellm.eval.plugin.register_plugin`) adds the `FaceLLM` class to `vlmeval.vlm`
and the models of `facellm.eval.plugin.REGISTERED_MODELS` to `vlmeval.config.supported_VLM`, the dict
every VLMEvalKit entry point reads: FaceLLM-1B/8B/38B and their base models
InternVL3-{1B,2B,8B,14B,38B}-hf. Each entry accepts `model_path=` to point at a local export instead of the
hub id, and `protocol=` (released by default; training for the tiny models).
"""

from functools import partial

import vlmeval.vlm
from vlmeval.config import supported_VLM

from facellm.eval.plugin import (
    BASELINE_MODELS,
    DEFAULT_PROTOCOLS,
    FACELLM_MODELS,
    PLUGIN_DIR,
    REGISTERED_MODELS,
    import_file,
)

FaceLLM = import_file(PLUGIN_DIR / "vlm" / "facellm.py", "facellm_vlmeval_model").FaceLLM

__all__ = ["BASELINE_MODELS", "FACELLM_MODELS", "FaceLLM"]

# run.py --config {"class": "FaceLLM", ...} looks the class up by name in vlmeval.vlm
vlmeval.vlm.FaceLLM = FaceLLM
for name, path in REGISTERED_MODELS.items():
    supported_VLM[name] = partial(FaceLLM, model_path=path, protocol=DEFAULT_PROTOCOLS[name])
