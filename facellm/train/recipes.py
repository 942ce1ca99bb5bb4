"""Training recipes: LLaMA-Factory YAML files in configs/, command-line overrides, checks and checkpoints.

A recipe is read the way `llamafactory-cli train` reads it (YAML, then `key=value` overrides on top), but
every key is checked against the arguments LLaMA-Factory actually has before any GPU time is spent: a typo
such as `learning_rat=1e-4` would otherwise stop the run only after the model is loaded, or, with
`ALLOW_EXTRA_ARGS`, be silently ignored. Every value is checked against its argument's type the same way
(`cutoff_len=abc`, `bf16=maybe`): LLaMA-Factory takes a YAML config's values as they are and fails on them
only deep inside training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import json
import os
import re
import types
import typing
from importlib.metadata import version
from pathlib import Path

import yaml

from facellm.common.cli import FaceLLMError, first_line
from facellm.common.files import REPO, read_json, write_json_atomic
from facellm.infer.model import could_be_hub_id

RESOLVED_CONFIG = "facellm_resolved_config.yaml"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# YAML 1.1 reads 1e-4 (an exponent, no dot) as text; LLaMA-Factory's reader (OmegaConf) as a number
EXPONENT_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")
# bump when what _llamafactory_facts caches changes, so that older caches are rebuilt
FACTS_FORMAT = 2
# arguments that name a file or folder (a model or an adapter only when it is not a hub id)
PATH_KEYS = (
    "dataset_dir", "media_dir", "output_dir", "deepspeed", "tokenized_path", "logging_dir", "cache_dir",
    "resume_from_checkpoint",
)  # fmt: skip
MODEL_KEYS = ("model_name_or_path", "adapter_name_or_path")
# first folders of what this project writes and reads: "saves/tiny-internvl3" is a folder, never a hub id
LOCAL_ROOTS = {"saves", "outputs", "data", "configs", "assets"}
EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "none": "null",
    "list": "a list",
    "dict": "a mapping",
}


def _as_number(value: object) -> object:
    return float(value) if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value) else value


def load_recipe(path: Path) -> dict:
    if not path.is_file():
        raise FaceLLMError(f"{path}: recipe not found (see configs/)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise FaceLLMError(f"{path}: not a readable YAML recipe ({first_line(error)})") from None
    if not isinstance(config, dict) or not config:
        raise FaceLLMError(f"{path}: a recipe is a YAML mapping of LLaMA-Factory arguments")
    return {key: _as_number(value) for key, value in config.items()}


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
        overrides[key] = _as_number(value)
    return overrides


def _is_local(value: str, base: Path) -> bool:
    """Whether a model argument names a folder rather than a hub id (NAME or ORG/NAME): what inference takes
    for one, a folder that is there, or a path under one of the project's own folders."""
    parts = Path(value).parts
    return (
        not could_be_hub_id(value) or (base / value).exists() or (len(parts) == 2 and parts[0] in LOCAL_ROOTS)
    )


def _absolute(value: str, base: Path) -> str:
    return str((base / Path(value).expanduser()).resolve())


def resolve_paths(recipe: dict, overrides: dict) -> dict:
    """The recipe with its overrides, every relative path made absolute: a recipe's against the repository
    root (recipes are written from there), an override's against the current folder (as a shell user means
    it). train.sh then behaves the same from any folder, and the resolved config names exactly what ran."""
    config = {**recipe, **overrides}
    for key in (*PATH_KEYS, *MODEL_KEYS):
        value = config.get(key)
        if not isinstance(value, str) or not value or value == "ONLINE":
            continue
        base = Path.cwd() if key in overrides else REPO
        if key in PATH_KEYS:
            config[key] = _absolute(value, base)
        else:  # an adapter list is comma-separated, as LLaMA-Factory reads it
            names = [name.strip() for name in value.split(",")]
            config[key] = ",".join(_absolute(n, base) if _is_local(n, base) else n for n in names)
    return config


def check_models(config: dict, source: str) -> None:
    """A model or adapter that names a local folder must exist: otherwise it would be taken for a hub id and
    cost minutes of download retries before a traceback."""
    for key in MODEL_KEYS:
        value = config.get(key)
        for name in str(value).split(",") if isinstance(value, str) else ():
            if os.path.isabs(name) and not os.path.exists(name):
                hint = "a local model folder must exist (hub ids are ORG/NAME)"
                if Path(name) == REPO / "saves" / "tiny-internvl3":
                    hint = "build the tiny model first: python -m facellm.testing.tiny_model (or make demo)"
                raise FaceLLMError(f"{source}: {key} {name}: no such folder; {hint}")


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facellm"


def _accepted(hint: object) -> list:
    """What an argument of type HINT accepts, as JSON: EXPECTED's kinds, {"choices": [...]} for a Literal or
    an enum, and "any" for a type that a YAML value cannot be checked against (torch.dtype, ...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [kind for arg in typing.get_args(hint) for kind in _accepted(arg)]
    if origin is typing.Literal:
        choices = list(typing.get_args(hint))
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [member.value for member in hint]
    else:
        simple = {type(None): "none", bool: "bool", int: "int", float: "float", str: "str"}
        if hint in simple:
            return [simple[hint]]
        if hint in (list, dict) or origin in (list, dict):
            return ["list" if list in (hint, origin) else "dict"]
        return ["any"]
    if all(isinstance(choice, str | int | float | bool) for choice in choices):
        return [{"choices": choices}]
    return ["any"]


def _argument_types(classes: list) -> dict[str, list]:
    accepted = {}
    for cls in classes:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation that does not resolve: its fields are not type-checked
            hints = {}
        for field in dataclasses.fields(cls):
            kinds = _accepted(hints[field.name]) if field.name in hints else ["any"]
            if field.default is None and "none" not in kinds:
                kinds.append("none")  # declared without Optional but defaulting to None
            accepted.setdefault(field.name, kinds)
    return accepted


def _llamafactory_facts() -> dict:
    """What train.sh needs to know of LLaMA-Factory: its argument names and types and its templates' default
    system prompts. Importing LLaMA-Factory takes about 20 s, so they are cached per LLaMA-Factory and
    transformers version (and per FACTS_FORMAT)."""
    stamp = f"llamafactory-{version('llamafactory')}_transformers-{version('transformers')}"
    cache = _cache_dir() / f"llamafactory-facts-v{FACTS_FORMAT}_{stamp}.json"
    try:
        cached = read_json(cache)
        if (
            isinstance(cached, dict)
            and cached.get("format") == FACTS_FORMAT
            and isinstance(cached.get("types"), dict)
            and cached["types"]
            and isinstance(cached.get("systems"), dict)
        ):
            return cached
    except (OSError, ValueError):
        pass
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams.parser import _TRAIN_ARGS

    facts = {
        "format": FACTS_FORMAT,
        "types": _argument_types(_TRAIN_ARGS),
        "systems": {name: template.default_system or "" for name, template in TEMPLATES.items()},
    }
    with contextlib.suppress(OSError):  # a read-only home only costs the next run the import
        write_json_atomic(cache, facts)
    return facts


def llamafactory_keys() -> set[str]:
    """Every argument name `llamafactory-cli train` accepts."""
    return set(_llamafactory_facts()["types"])


def template_system_prompt(template: str) -> str:
    """The system prompt LLaMA-Factory inserts for TEMPLATE when a dataset has none."""
    systems = _llamafactory_facts()["systems"]
    if template not in systems:
        raise FaceLLMError(f"template {template!r} is not a LLaMA-Factory template")
    return systems[template]


def _accepts(kinds: list, value: object) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    for kind in kinds:
        if isinstance(kind, dict):
            ok = any(value == choice and type(value) is type(choice) for choice in kind["choices"])
        else:
            ok = {
                "any": True,
                "none": value is None,
                "bool": isinstance(value, bool),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": number,
                # text arguments: a number is written as text, and LLaMA-Factory splits comma-separated
                # ones (dataset, lora_target, ...) but takes a list of them as it is
                "str": isinstance(value, str)
                or number
                or (isinstance(value, list) and all(isinstance(item, str) for item in value)),
                "list": isinstance(value, list),
                "dict": isinstance(value, dict),
            }[kind]
        if ok:
            return True
    return False


def _expected(kinds: list) -> str:
    names = []
    for kind in kinds:
        if isinstance(kind, dict):
            name = "one of " + ", ".join(map(_shown, kind["choices"]))
        else:
            name = EXPECTED[kind]
        if name not in names:
            names.append(name)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_keys(config: dict, source: str) -> None:
    """Every key of CONFIG is a LLaMA-Factory training argument and its value is of that argument's type;
    else an error naming SOURCE, the key, the value and what was expected."""
    accepted = _llamafactory_facts()["types"]
    for key, value in config.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise FaceLLMError(f"{source}: '{key}' is not a LLaMA-Factory training argument{hint}")
        if not _accepts(accepted[key], value):
            raise FaceLLMError(f"{source}: {key}: {_shown(value)} is not {_expected(accepted[key])}")


def check_config(recipe: dict, overrides: dict, source: str) -> None:
    """check_keys on a recipe (named SOURCE) and its overrides; a recipe value that an override replaces
    is not type-checked, as it is not what LLaMA-Factory will run with."""
    check_keys({key: value for key, value in recipe.items() if key not in overrides}, source)
    check_keys(overrides, "override")


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
