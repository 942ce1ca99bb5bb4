"""Loading the VLMEvalKit plug-in files by path.

The repository's `vlmeval/` folder deliberately has no `__init__.py`: as a package it would shadow the
installed VLMEvalKit (also called `vlmeval`). Its files are therefore imported by path, under module names
of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from facellm.cli import FaceLLMError

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "vlmeval"


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
    """Run `vlmeval/config.py`, which adds the FaceLLM models to VLMEvalKit's `supported_VLM`."""
    if not (plugin_dir / "vlm" / "facellm.py").is_file():
        raise FaceLLMError(
            f"{plugin_dir}: FaceLLM's VLMEvalKit plug-in not found; run from a checkout of the repository "
            "installed in editable mode (uv sync)"
        )
    return import_file(plugin_dir / "config.py", "facellm_vlmeval_config")
