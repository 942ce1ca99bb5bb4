"""Registers FaceLLM with VLMEvalKit without touching VLMEvalKit's files.

Importing this file (see `facellm.plugin.register_plugin`) adds the `FaceLLM` class to `vlmeval.vlm` and the
models below to `vlmeval.config.supported_VLM`, the dict every VLMEvalKit entry point reads. Each entry
accepts `model_path=` to point at a local export instead of the hub id.
"""

from functools import partial

import vlmeval.vlm
from vlmeval.config import supported_VLM

from facellm.plugin import PLUGIN_DIR, import_file

FaceLLM = import_file(PLUGIN_DIR / "vlm" / "facellm.py", "facellm_vlmeval_model").FaceLLM

FACELLM_MODELS = {
    "FaceLLM-1B": "Idiap/FaceLLM-1B",
    "FaceLLM-8B": "Idiap/FaceLLM-8B",
    "FaceLLM-38B": "Idiap/FaceLLM-38B",
}

vlmeval.vlm.FaceLLM = FaceLLM
for name, path in FACELLM_MODELS.items():
    supported_VLM[name] = partial(FaceLLM, model_path=path)
