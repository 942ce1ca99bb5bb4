"""The VLMEvalKit plug-in: which models it registers, and loading its files by path.

The repository's `vlmeval/` folder deliberately has no `__init__.py`: as a package it would shadow the
installed VLMEvalKit (also called `vlmeval`). Its files are therefore imported by path, under module names
of their own. Nothing in VLMEvalKit's installed files is modified: registration only adds keys to its
`supported_VLM` dict and one class to its `vlmeval.vlm` module, both shared by everything that imports them.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from facellm.common.cli import FaceLLMError
from facellm.common.files import REPO
from facellm.infer.protocol import DEFAULT_PROTOCOL

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
# How each is asked by default (facellm.infer.protocol): as the authors evaluated, so that scores compare with
# the published ones; the tiny models, which have none and were trained by this repository's recipes, as
# they were trained.
DEFAULT_PROTOCOLS = {name: DEFAULT_PROTOCOL for name in FACELLM_MODELS | BASELINE_MODELS} | {
    name: "training" for name in TINY_MODELS
}
# How to make the local folder of a registered model when it is missing (a hub id is the hub's business).
MAKE_LOCAL = {
    "InternVL3-tiny": "build it with `python -m facellm.testing.tiny_model --out {path}` (or `make demo`)",
    "FaceLLM-tiny": "make it with `make demo` (it trains and exports it there), or pass --model-path with "
    "an export of yours (./export.sh)",
}
# Names of ours, and misspellings of them, are settled without importing VLMEvalKit (20 to 40 s).
OUR_PREFIXES = ("facellm", "internvl3")


def vlmevalkit_names() -> set[str]:
    """The model names VLMEvalKit's config.py spells out as dict keys, read from its source without importing
    it: enough to know that a name of ours is also one of its own (InternVL3-8B is, with remote code), not a
    full list (a few of its names are made by code; those are found after the import)."""
    spec = importlib.util.find_spec("vlmeval")
    folders = list(spec.submodule_search_locations or []) if spec else []
    source = Path(folders[0]) / "config.py" if folders else None
    if source is None or not source.is_file():
        return set()
    return set(re.findall(r"""["']([^"'\n]+)["']\s*:""", source.read_text(encoding="utf-8")))


def _closest(name: str, candidates) -> list[str]:
    """The CANDIDATES closest to NAME, letter case aside: up to three, all about as close as the closest
    (FaceLLM-tin is FaceLLM-tiny, not also FaceLLM-1B)."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    if name.lower() in lowered:
        return [lowered[name.lower()]]
    found = difflib.get_close_matches(name.lower(), lowered, n=3, cutoff=0.75)
    ratio = [difflib.SequenceMatcher(None, name.lower(), match).ratio() for match in found]
    return [lowered[match] for match, r in zip(found, ratio, strict=True) if r >= ratio[0] - 0.03]


def unknown_model(name: str, others=()) -> FaceLLMError:
    """The refusal of an unknown model NAME: the closest of the plug-in's names and of OTHERS (VLMEvalKit's),
    then the plug-in's names (VLMEvalKit's hundreds are not listed)."""
    close = _closest(name, [*REGISTERED_MODELS, *others])
    guess = f"; did you mean {' or '.join(close)}?" if close else ""
    return FaceLLMError(
        f"unknown model {name!r}: not in VLMEvalKit's supported_VLM{guess} (FaceLLM's plug-in adds "
        f"{', '.join(REGISTERED_MODELS)})"
    )


def check_model_name(name: str) -> None:
    """Refuse at once a NAME that is meant to be one of the plug-in's (a FaceLLM or InternVL3 prefix, or
    close to one of its names) but is not registered, unless VLMEvalKit has it: any other name may be one of
    VLMEvalKit's models and is checked once it is imported."""
    if name in REGISTERED_MODELS:
        return
    ours = name.lower().startswith(OUR_PREFIXES) or _closest(name, REGISTERED_MODELS)
    if ours and name not in (theirs := vlmevalkit_names()):
        raise unknown_model(name, sorted(theirs))


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
