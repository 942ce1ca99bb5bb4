"""Training recipes: LLaMA-Factory YAML files in configs/, command-line overrides, checks and checkpoints.

A recipe is read the way `llamafactory-cli train` reads it (YAML, then `key=value` overrides on top), but
every key is checked against the arguments LLaMA-Factory actually has before any GPU time is spent: a typo
such as `learning_rat=1e-4` would otherwise stop the run only after the model is loaded, or, with
`ALLOW_EXTRA_ARGS`, be silently ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
from importlib.metadata import version
from pathlib import Path

import yaml

from facellm.cli import FaceLLMError
from facellm.files import read_json, write_json_atomic

RESOLVED_CONFIG = "facellm_resolved_config.yaml"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def load_recipe(path: Path) -> dict:
    if not path.is_file():
        raise FaceLLMError(f"{path}: recipe not found (see configs/)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise FaceLLMError(f"{path}: not a readable YAML recipe ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict) or not config:
        raise FaceLLMError(f"{path}: a recipe is a YAML mapping of LLaMA-Factory arguments")
    return config


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings as a dict; values are read as YAML scalars (1e-4, true, null, 5)."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise FaceLLMError(f"override '{pair}' is not key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        # YAML 1.1 reads 1e-4 (no dot) as text; LLaMA-Factory would then fail deep inside the trainer
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
            value = float(value)
        overrides[key] = value
    return overrides


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facellm"


def _llamafactory_facts() -> dict:
    """What train.sh needs to know of LLaMA-Factory: its argument names and its templates' default system
    prompts. Importing LLaMA-Factory takes about 20 s, so they are cached per LLaMA-Factory and transformers
    version."""
    stamp = f"llamafactory-{version('llamafactory')}_transformers-{version('transformers')}"
    cache = _cache_dir() / f"llamafactory-facts_{stamp}.json"
    try:
        cached = read_json(cache)
        if isinstance(cached, dict) and cached.get("keys") and isinstance(cached.get("systems"), dict):
            return cached
    except (OSError, ValueError):
        pass
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams.parser import _TRAIN_ARGS

    facts = {
        "keys": sorted({field.name for cls in _TRAIN_ARGS for field in dataclasses.fields(cls)}),
        "systems": {name: template.default_system or "" for name, template in TEMPLATES.items()},
    }
    with contextlib.suppress(OSError):  # a read-only home only costs the next run the import
        write_json_atomic(cache, facts)
    return facts


def llamafactory_keys() -> set[str]:
    """Every argument name `llamafactory-cli train` accepts."""
    return set(_llamafactory_facts()["keys"])


def template_system_prompt(template: str) -> str:
    """The system prompt LLaMA-Factory inserts for TEMPLATE when a dataset has none."""
    systems = _llamafactory_facts()["systems"]
    if template not in systems:
        raise FaceLLMError(f"template {template!r} is not a LLaMA-Factory template")
    return systems[template]


def check_keys(config: dict, source: str) -> None:
    known = llamafactory_keys()
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise FaceLLMError(f"{source}: '{key}' is not a LLaMA-Factory training argument{hint}")


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints in OUTPUT_DIR, oldest first. The Trainer writes trainer_state.json last, so
    a checkpoint without it was cut short by a crash and cannot be resumed from."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def model_size(model: str) -> str:
    """'8B' for OpenGVLab/InternVL3-8B-hf or a folder named after it; else the folder name."""
    match = re.search(r"(\d+(?:\.\d+)?[BM])(?![A-Za-z])", Path(model).name)
    return match.group(1) if match else Path(model).name


def write_resolved(config: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
