"""`make demo` end to end: every stage runs for real on the tiny model and writes its output."""

import json

import pytest
from safetensors import safe_open


@pytest.mark.slow
def test_demo_runs_every_stage(demo):
    result, workdir = demo  # the session's one run of the pipeline (it fails there when a stage fails)

    dataset = json.loads((workdir / "fairfacegpt" / "dataset.json").read_text())
    assert len(dataset) == 16 * 8

    live = [
        json.loads(line)
        for line in (workdir / "fairfacegpt-endpoint" / "ledger.jsonl").read_text().splitlines()
    ]
    assert len(live) == 4 * 8 and all(e["backend"] == "openai" and e["status"] == "done" for e in live)
    assert (workdir / "fairfacegpt-endpoint" / "fairness.png").is_file()

    adapter = workdir / "lora"
    assert (adapter / "adapter_config.json").is_file()
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    state = json.loads((adapter / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) > 10 and losses[-1] < losses[0]  # the adapter learned something

    merged = workdir / "export" / "FaceLLM-tiny"
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    assert not (merged / "adapter_config.json").exists()

    assert (workdir / "logs" / "inference.log").read_text().strip()

    results = workdir / "facexbench-results"
    for path in (workdir / "facexbench-sample" / "benchmark").glob("*.json"):
        saved = json.loads((results / path.name).read_text())
        assert all("prediction" in q for q in saved["questions"].values())
    summary = json.loads((results / "summary.json").read_text())
    assert summary["overall"]["answered"] == summary["overall"]["questions"] == 12

    timings = json.loads((workdir / "timings.json").read_text())
    for stage in (
        "tiny model",
        "fairfacegpt",
        "fairfacegpt endpoint",
        "train",
        "export",
        "inference",
        "facexbench sample",
        "evaluate",
    ):
        assert timings[stage] > 0
        assert stage in result.stdout
