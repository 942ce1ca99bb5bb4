"""The VLMEvalKit plug-in: which models it registers, and loading its files by path.

The repository's `vlmeval/` folder deliberately has no `__init__.py`: as a package it would shadow the
installed VLMEvalKit (also called `vlmeval`). Its files are therefore imported by path, under module names
of their own. Nothing in VLMEvalKit's installed files is modified: registration only adds keys to its
`supported_VLM` dict and one class to its `vlmeval.vlm` module, both shared by everything that imports them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from facellm.common.cli import FaceLLMError
from facellm.common.files import REPO

PLUGIN_DIR = REPO / "vlmeval"

# name -> default model path (a hub id; every entry takes model_path= for a local export instead)
FACELLM_MODELS = {
    "FaceLLM-1B": "Idiap/FaceLLM-1B",
    "FaceLLM-8B": "Idiap/FaceLLM-8B",
    "FaceLLM-38B": "Idiap/FaceLLM-38B",
}
# The base models FaceLLM is trained from, run through the same class: the baselines of a comparison.
# VLMEvalKit's own InternVL3 entries load the remote-code checkpoints; these are the HF-native ones.
BASELINE_MODELS = {
    f"InternVL3-{size}-hf": f"OpenGVLab/InternVL3-{size}-hf" for size in ("1B", "2B", "8B", "14B", "38B")
}
# The tiny offline models of `make demo` (CPU, no download): the untrained one and the demo's trained export.
# They are test fixtures, reported under their own names and never compared with the published FaceLLMs.
TINY_MODELS = {
    "InternVL3-tiny": str(REPO / "saves" / "tiny-internvl3"),
    "FaceLLM-tiny": str(REPO / "saves" / "demo" / "export" / "FaceLLM-tiny"),
}
REGISTERED_MODELS = FACELLM_MODELS | BASELINE_MODELS | TINY_MODELS


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file once under MODULE_NAME (later calls return the same module)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def register_plugin(plugin_dir: Path = PLUGIN_DIR) -> ModuleType:
    """Run `vlmeval/config.py`, which adds the models above to VLMEvalKit's `supported_VLM` and the FaceLLM
    class to `vlmeval.vlm`. Returns that config module."""
    if not (plugin_dir / "vlm" / "facellm.py").is_file():
        raise FaceLLMError(
            f"{plugin_dir}: FaceLLM's VLMEvalKit plug-in not found; run from a checkout of the repository "
            "installed in editable mode (uv sync)"
        )
    # Running one of the folder's scripts puts the folder first on sys.path, where its evaluate.py and
    # run.py would shadow modules of those names for everything imported later (Hugging Face's `evaluate`,
    # which some VLMEvalKit datasets import). Its files are loaded by path, so it is not needed there.
    folder = plugin_dir.resolve()
    sys.path[:] = [entry for entry in sys.path if not entry or Path(entry).resolve() != folder]
    return import_file(plugin_dir / "config.py", "facellm_vlmeval_config")
