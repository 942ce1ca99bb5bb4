"""`make demo` end to end: every stage runs for real on the tiny model, and the model it trains has learned
what the images show (held-out accuracy, blank images, the race control)."""

import json

import pytest

STAGES = (
    "tiny model", "face world", "fairfacegpt", "fairfacegpt endpoint", "train", "export", "inference",
    "held-out benchmark", "evaluate base", "aggregate base", "evaluate trained", "aggregate trained",
    "evaluate blank", "aggregate blank",
)  # fmt: skip


@pytest.mark.slow
def test_demo_runs_every_stage(demo):
    result, workdir = demo  # the session's one run of the pipeline (it fails there when a stage fails)

    dataset = json.loads((workdir / "fairfacegpt" / "dataset.json").read_text())
    assert len(dataset) == 400 * 6  # short and multiple-choice items, three attributes each

    live = [
        json.loads(line)
        for line in (workdir / "fairfacegpt-endpoint" / "ledger.jsonl").read_text().splitlines()
    ]
    assert len(live) == 4 * 8 and all(e["backend"] == "openai" and e["status"] == "done" for e in live)
    assert (workdir / "fairfacegpt-endpoint" / "fairness.png").is_file()

    state = json.loads((workdir / "full" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert state["global_step"] == 640 and losses[-1] < 0.2 * losses[0]

    merged = workdir / "export" / "FaceLLM-tiny"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert (workdir / "logs" / "inference.log").read_text().strip().splitlines()[-1] in ("Female", "Male")

    for run in ("base", "trained", "blank"):
        summary = json.loads((workdir / "results" / run / "summary.json").read_text())
        assert summary["overall"]["answered"] == summary["overall"]["questions"] == 3 * 120
        assert json.loads((workdir / "results" / run / "run.json").read_text()).get("blank_images") == (
            True if run == "blank" else None
        )

    timings = json.loads((workdir / "timings.json").read_text())
    for stage in STAGES:
        assert timings[stage] > 0 and stage in result.stdout
    assert "FaceLLM-1B" not in result.stdout and "published" not in result.stdout  # never compared


@pytest.fixture(scope="module")
def signal(demo):
    return json.loads((demo[1] / "signal.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("task", ["gender", "age"])
def test_the_trained_model_sees_what_is_drawn(signal, task):
    row = signal[task]
    assert row["questions"] >= 100
    assert row["trained"] >= 0.85, row  # held-out faces, never trained on
    assert row["blank"] <= row["chance"] + 0.10, row  # without the image it is back to chance


@pytest.mark.slow
def test_the_race_control_stays_at_chance(signal):
    # race is assigned at random, independently of the drawing: above chance would mean a leak
    row = signal["race"]
    assert abs(row["trained"] - row["chance"]) <= 0.10 and abs(row["blank"] - row["chance"]) <= 0.10, row


@pytest.mark.slow
def test_the_table_is_printed_and_the_base_model_is_reported(demo, signal):
    assert set(signal) == {"gender", "age", "race"}
    assert all(0 <= row["base"] <= 1 for row in signal.values())
    assert all(signal[task]["base"] < signal[task]["trained"] for task in ("gender", "age"))
    out = demo[0].stdout
    assert "held-out accuracy on the face world" in out and "base  trained  blank  chance" in out
