"""The recipes in configs/ and the pieces train.sh reads them with."""

import dataclasses
import enum
import json
import sys
import types
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from facellm.common.cli import FaceLLMError
from facellm.train import recipes
from facellm.train.recipes import (
    check_config,
    check_keys,
    checkpoints,
    llamafactory_keys,
    load_recipe,
    model_size,
    parse_overrides,
)
from tests.support import REPO

SIZES = ("1B", "2B", "8B", "14B", "38B")
RELEASED = {
    "stage": "sft", "finetuning_type": "lora", "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0,
    "lora_target": "all", "learning_rate": 1e-5, "lr_scheduler_type": "cosine", "warmup_ratio": 0.0,
    "num_train_epochs": 1.0, "cutoff_len": 2048, "max_samples": 100000, "bf16": True, "packing": False,
    "max_grad_norm": 1.0, "optim": "adamw_torch", "template": "intern_vl", "trust_remote_code": False,
    "flash_attn": "auto", "include_num_input_tokens_seen": True, "logging_steps": 5, "save_steps": 100,
}  # fmt: skip


def recipe(size: str) -> dict:
    return yaml.safe_load((REPO / "configs" / f"internvl3_{size.lower()}_lora_sft.yaml").read_text())


@pytest.mark.parametrize("size", SIZES)
def test_every_size_has_a_recipe_with_the_released_hyperparameters(size):
    config = recipe(size)
    assert config["model_name_or_path"] == f"OpenGVLab/InternVL3-{size}-hf"
    assert {key: config.get(key) for key in RELEASED} == RELEASED
    assert config["output_dir"] == f"saves/lora/internvl3-{size.lower()}"
    assert config["media_dir"] and config["dataset_dir"] == "data" and config["dataset"] == "fairfacegpt"


def test_released_batch_settings():
    # 1B and 8B: 10 x 8 on one GPU; 38B: 2 x 6 (REFERENCE of the released train.sh)
    for size, batch in {"1B": (10, 8), "8B": (10, 8), "38B": (2, 6)}.items():
        config = recipe(size)
        assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == batch


def test_every_recipe_uses_only_llamafactory_arguments():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        check_keys(load_recipe(path), str(path))  # raises on an unknown key or a value of the wrong type


def test_deepspeed_configs_and_the_38b_recipe_uses_zero3():
    stages = {
        name: json.loads((REPO / "configs" / "deepspeed" / name).read_text())
        for name in ("ds_z2.json", "ds_z3.json")
    }
    assert stages["ds_z2.json"]["zero_optimization"]["stage"] == 2
    assert stages["ds_z3.json"]["zero_optimization"]["stage"] == 3
    # LoRA weights must come out whole from a ZeRO-3 run, or export.sh would merge shards
    assert stages["ds_z3.json"]["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert recipe("38B")["deepspeed"] == "configs/deepspeed/ds_z3.json"


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(
        FaceLLMError, match=r"'learning_rat' is not a LLaMA-Factory training argument.*learning_rate"
    ):
        check_keys({"learning_rat": 1e-4}, "override")
    assert {"media_dir", "deepspeed", "lora_rank", "resume_from_checkpoint"} <= llamafactory_keys()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cutoff_len=abc", "override: cutoff_len: 'abc' is not an integer"),
        ("learning_rate=fast", "override: learning_rate: 'fast' is not a number"),
        ("bf16=maybe", "override: bf16: 'maybe' is not true or false"),
        ("max_steps=2.5", "override: max_steps: 2.5 is not an integer"),
        ("finetuning_type=lorra", "override: finetuning_type: 'lorra' is not one of 'lora', 'oft'"),
        ("lora_rank=null", "override: lora_rank: null is not an integer"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_key_value_and_type(override, message):
    with pytest.raises(FaceLLMError, match=message):
        check_keys(parse_overrides([override]), "override")


def test_recipe_values_are_checked_naming_the_recipe_and_values_of_the_right_type_pass(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("cutoff_len: abc\nlearning_rate: 1e-4\n")
    recipe = load_recipe(path)
    assert recipe["learning_rate"] == 1e-4  # read as LLaMA-Factory reads it (OmegaConf), not as text
    with pytest.raises(FaceLLMError, match=f"{path}: cutoff_len: 'abc' is not an integer"):
        check_config(recipe, {}, str(path))
    good = parse_overrides(
        ["cutoff_len=512", "learning_rate=1e-4", "bf16=false", "max_samples=null", "flash_attn=auto",
         "lr_scheduler_type=cosine", "report_to=none", "dataset=a,b", "warmup_ratio=0", "run_name=2024"]
    )  # fmt: skip
    check_config(recipe, good, str(path))  # and the override replaces the recipe's bad value


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class FakeArguments:
    steps: int = 1
    rate: float = 0.1
    flag: bool = False
    name: Optional[str] = None  # noqa: UP045 (the typing spelling is what LLaMA-Factory's classes use too)
    stage: Literal["sft", "pt"] = "sft"
    color: Color = Color.RED
    limit: int | None = None
    targets: str | list[str] | None = None
    path: Path | None = None


def test_argument_types_are_read_from_the_dataclasses_and_cached_in_a_new_format(tmp_path, monkeypatch):
    # stand-ins for LLaMA-Factory's modules, so that this needs no 20 s import
    monkeypatch.setitem(
        sys.modules, "llamafactory.hparams.parser", types.SimpleNamespace(_TRAIN_ARGS=[FakeArguments])
    )
    monkeypatch.setitem(
        sys.modules,
        "llamafactory.data.template",
        types.SimpleNamespace(TEMPLATES={"plain": types.SimpleNamespace(default_system="Be brief.")}),
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # a cache of the format before types were checked: names only
    old = {"keys": ["steps", "rate"], "systems": {"plain": "Be brief."}}
    stamp = f"llamafactory-{recipes.version('llamafactory')}_transformers-{recipes.version('transformers')}"
    (tmp_path / "facellm").mkdir()
    for name in ("llamafactory-facts", f"llamafactory-facts-v{recipes.FACTS_FORMAT}"):
        (tmp_path / "facellm" / f"{name}_{stamp}.json").write_text(json.dumps(old))

    good = {"steps": 3, "rate": 1, "flag": True, "name": "x", "stage": "pt", "color": "blue", "limit": None,
            "targets": ["q", "v"], "path": {"any": "thing"}}  # fmt: skip
    check_keys(good, "override")
    for key, value, expected in [
        ("steps", "abc", "an integer"),
        ("steps", True, "an integer"),
        ("rate", "fast", "a number"),
        ("flag", "maybe", "true or false"),
        ("name", False, "text or null"),
        ("stage", "ppo", "one of 'sft', 'pt'"),
        ("color", "green", "one of 'red', 'blue'"),
        ("limit", 1.5, "an integer or null"),
        ("targets", {"a": 1}, "text, a list or null"),
    ]:
        with pytest.raises(FaceLLMError, match=f"override: {key}: .* is not {expected}$"):
            check_keys({key: value}, "override")
    # rebuilt in the new format, and read back from it
    cached = json.loads(next((tmp_path / "facellm").glob(f"*-v{recipes.FACTS_FORMAT}_*.json")).read_text())
    assert cached["format"] == recipes.FACTS_FORMAT and cached["types"]["steps"] == ["int"]
    monkeypatch.setitem(sys.modules, "llamafactory.hparams.parser", None)  # importing it now fails
    assert llamafactory_keys() == {field.name for field in dataclasses.fields(FakeArguments)}


def test_overrides_are_typed_like_yaml():
    assert parse_overrides(["learning_rate=1e-4", "bf16=false", "max_steps=10", "dataset=a,b", "x=a=b"]) == {
        "learning_rate": 1e-4, "bf16": False, "max_steps": 10, "dataset": "a,b", "x": "a=b",
    }  # fmt: skip
    assert parse_overrides(["resume_from_checkpoint=null"]) == {"resume_from_checkpoint": None}
    for bad in ("max_steps", "=3", "two words=1"):
        with pytest.raises(FaceLLMError, match="is not key=value"):
            parse_overrides([bad])


def test_checkpoints_are_complete_ones_in_step_order(tmp_path):
    for step, complete in ((9, True), (10, True), (2, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [path.name for path in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    assert checkpoints(tmp_path / "absent") == []


def test_model_size():
    assert model_size("OpenGVLab/InternVL3-38B-hf") == "38B"
    assert model_size("/models/InternVL3-1B-hf") == "1B"
    assert model_size("saves/tiny-internvl3") == "tiny-internvl3"
