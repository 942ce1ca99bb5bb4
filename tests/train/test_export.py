"""export.sh: the merge is verified against base+adapter, a damaged merge fails, a model card is written."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from facellm.train.card import _dataset_size, model_card
from facellm.train.export import PROBE_IMAGE, PROBE_PROMPT, Verifier, main
from tests.support import assert_one_line_error, run_main


def test_export_verifies_and_writes_a_model_card(trained_tiny, tiny_model):
    adapter, merged = trained_tiny
    verification = json.loads((merged / "verification.json").read_text())
    assert verification["passed"] and verification["max_abs_diff"] < 1e-4
    assert verification["adapter_effect"] > 10 * verification["max_abs_diff"]  # the probe sees the adapter
    card = (merged / "README.md").read_text()
    assert f"base_model: {tiny_model.name}" in card and str(tiny_model) not in card  # a name, not a path
    assert_no_machine_path(card)
    assert "| steps | 60 |" in card and "| lora_rank | `16` |" in card and "merged into the base" in card
    final = json.loads((adapter / "trainer_state.json").read_text())["log_history"][-2]["loss"]
    assert f"| final training loss | {final:.4f} |" in card


def _verifier(adapter, tiny_model):
    return Verifier(str(tiny_model), adapter, "intern_vl", "float32", "cpu", PROBE_IMAGE, PROBE_PROMPT)


def test_damaged_merges_fail_verification(trained_tiny, tiny_model, tmp_path):
    adapter, merged = trained_tiny
    verifier = _verifier(adapter, tiny_model)
    assert verifier.check(merged)["passed"]
    # the base without the adapter, as if the merge had been skipped
    assert not verifier.check(tiny_model)["passed"]
    # one language-model weight off by 2%
    damaged = tmp_path / "damaged"
    shutil.copytree(merged, damaged)
    weights = load_file(damaged / "model.safetensors")
    name = next(n for n in weights if "language_model" in n and "mlp.down_proj.weight" in n)
    weights[name] = weights[name] * 1.02 + 0.02 * torch.randn_like(weights[name])
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    result = verifier.check(damaged)
    assert not result["passed"] and result["max_abs_diff"] > result["tolerance"]


def test_verify_only_fails_loudly_on_a_damaged_merge(trained_tiny, tiny_model, tmp_path, capsys):
    adapter, _ = trained_tiny
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model, damaged)  # the base itself: no adapter in it
    result = run_main(main, ["--adapter", str(adapter), "--out", str(damaged), "--verify-only"], capsys)
    assert result.returncode == 1
    assert "MERGE VERIFICATION FAILED" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((damaged / "verification.json").read_text())["passed"] is False


def test_adapter_that_does_not_fit_the_base_is_refused_before_writing(trained_tiny, tmp_path, capsys):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    adapter, merged = trained_tiny
    other = tmp_path / "other-base"
    config = AutoConfig.from_pretrained(merged)
    config.text_config.hidden_size = 48
    config.text_config.intermediate_size = 96
    AutoModelForImageTextToText.from_config(config).save_pretrained(other)
    AutoProcessor.from_pretrained(merged).save_pretrained(other)
    out = tmp_path / "out"
    result = run_main(main, ["--adapter", str(adapter), "--base", str(other), "--out", str(out)], capsys)
    assert_one_line_error(result, str(adapter), "does not fit the base model")
    assert not out.exists()


def test_out_may_not_overlap_the_base_or_the_adapter_and_an_export_is_replaced_only_when_asked(
    trained_tiny, tiny_model, tmp_path, capsys
):
    from facellm.common.cli import FaceLLMError

    adapter, merged = trained_tiny
    base_files = {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()}
    for out in (tiny_model, tiny_model / "merged", adapter, adapter.parent):
        with pytest.raises(FaceLLMError, match=r"--out overlaps --(base|adapter)"):
            main(["--adapter", str(adapter), "--base", str(tiny_model), "--out", str(out)])
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()} == base_files
    earlier = tmp_path / "earlier"
    shutil.copytree(merged, earlier)
    with pytest.raises(FaceLLMError, match="holds an earlier export; pass --replace"):
        main(["--adapter", str(adapter), "--base", str(tiny_model), "--out", str(earlier), "--no-verify"])
    (earlier / "stale.txt").write_text("from the old export")
    argv = ["--adapter", str(adapter), "--base", str(tiny_model), "--out", str(earlier), "--dtype", "float32"]
    result = run_main(main, [*argv, "--no-verify", "--replace"], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    # a short view; LLaMA-Factory's export output is kept whole in the run's folder
    shown = result.stdout + result.stderr
    assert "[INFO" not in shown and len(shown.splitlines()) <= 6 and "merged model:" in shown, shown
    assert (
        f"full log in {adapter / 'export.log'}" in shown
        and "Writing model shards" in (adapter / "export.log").read_text()
    )
    left = {p.name for p in earlier.iterdir()}
    assert "config.json" in left and not left & {"README.md", "verification.json", "stale.txt"}, left


@pytest.mark.parametrize("damage", ["deleted", "empty", "cut short", "pickled"])
def test_an_adapter_folder_with_damaged_weights_is_named(trained_tiny, tmp_path, damage):
    from facellm.common.cli import FaceLLMError

    adapter = tmp_path / "adapter"
    shutil.copytree(trained_tiny[0], adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    if damage == "pickled":
        weights.rename(adapter / "adapter_model.bin")
    elif damage == "deleted":
        weights.unlink()
    else:
        weights.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    message = "damaged adapter weights" if damage in ("empty", "cut short") else "without its weights"
    with pytest.raises(FaceLLMError, match=message):
        main(["--adapter", str(adapter), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_model_card_counts_the_records_of_every_dataset_as_llamafactory_reads_them(tmp_path):
    chat = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.jsonl").write_text(json.dumps(chat) + "\n" + json.dumps(chat) + "\n")
    (tmp_path / "parts" / "b.jsonl").write_text(json.dumps(chat) + "\n")
    (tmp_path / "q.csv").write_text("instruction,output\nHi,Hello\nHow are you?,Well\n")
    registry = {"chats": {"file_name": "parts", "formatting": "sharegpt"}, "qa": {"file_name": "q.csv"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(registry))
    assert _dataset_size({"dataset_dir": str(tmp_path), "dataset": "chats, qa"}) == 5
    assert _dataset_size({"dataset_dir": str(tmp_path), "dataset": "other"}) is None


def test_model_card_takes_the_count_preflight_saved_beside_the_adapter(tmp_path, monkeypatch):
    import facellm.train.card as card

    adapter = tmp_path / "lora" / "checkpoint-64"
    adapter.mkdir(parents=True)
    (tmp_path / "lora" / "preflight.json").write_text(json.dumps({"records": 77}))
    monkeypatch.setattr(card, "open_datasets", lambda *args: pytest.fail("the datasets were read again"))
    assert _dataset_size({"dataset_dir": str(tmp_path), "dataset": "faces"}, adapter) == 77


def test_a_full_fine_tuning_run_is_exported_as_it_is_and_verified(learned_tiny, tiny_model):
    # the demo's run: every weight trained, so there is no adapter; export.sh re-saves it and checks it
    merged, run = learned_tiny["model"], learned_tiny["run"]
    assert not (run / "adapter_config.json").exists() and not (merged / "adapter_config.json").exists()
    verification = json.loads((merged / "verification.json").read_text())
    assert verification["passed"] and verification["max_abs_diff"] < 1e-4
    assert verification["adapter_effect"] > 1  # trained from the tiny base: the probe sees the training
    card = (merged / "README.md").read_text()
    assert "full fine-tuning (every weight)" in card and "| freeze_vision_tower | `False` |" in card
    assert f"base_model: {tiny_model.name}" in card and "| steps | 640 |" in card
    assert_no_machine_path(card)
    damaged = Verifier(
        tiny_model.as_posix(), run, "intern_vl", "float32", "cpu", PROBE_IMAGE, PROBE_PROMPT, True
    )
    assert damaged.check(merged)["passed"] and not damaged.check(tiny_model)["passed"]


def assert_no_machine_path(card: str) -> None:
    """No path of the exporting machine in CARD: no absolute path that exists here, no home folder."""
    for word in re.findall(r"(?<![\w:/.])[/~][^\s`'\"|),]*", card):
        assert word.startswith("~") or not Path(word).exists(), word
    assert str(Path.home()) not in card and "/home/" not in card


VERIFIED = {
    "probe_image": "probe.png", "probe_prompt": "Describe this face.", "tokens": 40, "max_abs_diff": 1e-5,
    "tolerance": 1e-3, "dtype": "float32", "adapter_effect": 2.5, "top1_agreement": 1.0,
}  # fmt: skip


def front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n"), card[:200]
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_names_hub_ids_and_folder_names_never_paths_and_has_the_hub_metadata(tmp_path):
    base = tmp_path / "models" / "tiny-internvl3"
    base.mkdir(parents=True)
    adapter = tmp_path / "saves" / "lora" / "internvl3-1b"
    adapter.mkdir(parents=True)
    (adapter / "preflight.json").write_text(json.dumps({"records": 87632}))
    recipe = {
        "model_name_or_path": str(base), "dataset": "fairfacegpt", "dataset_dir": str(tmp_path / "data"),
        "media_dir": str(tmp_path / "fairface" / "fairface-img-margin025-trainval"), "lora_rank": 16,
        "deepspeed": str(tmp_path / "configs" / "ds_z3.json"), "image_max_pixels": 50176,
    }  # fmt: skip
    card = model_card("FaceLLM-tiny", str(base), adapter, recipe, VERIFIED)
    assert str(tmp_path) not in card
    assert_no_machine_path(card)
    meta = front_matter(card)
    assert meta["base_model"] == "tiny-internvl3" and "a local model folder" in card
    assert meta["license"] == "apache-2.0" and "base model's card" in card  # the weights' own licence
    assert meta["datasets"] == ["HuggingFaceM4/FairFace"] and "CC BY 4.0" in card
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert {"facellm", "lora", "local-base-model"} <= set(meta["tags"])
    assert "| dataset | `fairfacegpt`, 87,632 samples |" in card
    assert "`fairface-img-margin025-trainval`" in card and "| deepspeed | `ds_z3.json` |" in card
    assert "Adapter: `internvl3-1b`." in card

    hub = model_card(
        "FaceLLM-1B", "OpenGVLab/InternVL3-1B-hf", adapter, {**recipe, "dataset": "mine"}, VERIFIED
    )
    meta = front_matter(hub)
    assert meta["base_model"] == "OpenGVLab/InternVL3-1B-hf" and "local" not in hub
    assert "datasets" not in meta and "FairFace" not in hub  # only FairFaceGPT is known to be FairFace
