"""The Batch API backend end to end against the local endpoint's files and batches routes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from facellm.testing.local_endpoint import LocalEndpoint
from tests.data.support import API_KEY, dataset, image_digest, image_tag, ledger_lines, run
from tests.support import REPO, SAMPLE_FACES


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def _state(out):
    return json.loads((out / "batch" / "state.json").read_text())


def test_batch_per_question_with_split_files_and_failed_lines(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, batch_faults=["length", "error", "refusal"]) as endpoint:
        summary = run(endpoint, out, limit=2, backend="batch", poll_interval=0.01, batch_max_requests=10)
        input_files = [f for f in endpoint.files.values() if f["purpose"] == "batch"]
        # round 0: 16 requests in files of at most 10; round 1: the 3 that failed
        assert [f["content"].count(b"\n") for f in input_files] == [10, 6, 3]
        assert len(endpoint.batches) == 3
    assert summary.ok and summary.done == 16
    records = dataset(out)
    assert len(records) == 16
    assert all(
        r["conversations"][1]["value"].startswith(image_tag(SAMPLE_FACES, r["images"][0])) for r in records
    )
    retried = [line for line in ledger_lines(out) if line["attempts"] == 2 and line["status"] == "done"]
    assert len(retried) == 3
    assert all(b["merged"] for b in _state(out)["batches"])
    assert "via the Batch API" in (out / "cost_report.md").read_text()


def test_batch_per_image_mode_survives_a_bad_gateway_while_polling(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        endpoint.poll_faults.extend(["503", "429", "503"])
        summary = run(endpoint, out, limit=3, backend="batch", mode="per-image", poll_interval=0.01)
        (input_file,) = [f for f in endpoint.files.values() if f["purpose"] == "batch"]
        assert input_file["content"].count(b"\n") == 3
        assert not endpoint.poll_faults
    assert summary.ok and len(dataset(out)) == 24


def test_item_that_keeps_failing_is_recorded_after_max_attempts_rounds(tmp_path):
    out = tmp_path / "out"
    refused = {image_digest(SAMPLE_FACES, "val/1.jpg")}
    with LocalEndpoint(api_key=API_KEY, refuse_images=refused) as endpoint:
        summary = run(endpoint, out, limit=2, backend="batch", poll_interval=0.01, max_attempts=2)
        assert len(endpoint.batches) == 2
    assert summary.failed == 8 and summary.failed_by_reason == {"refusal": 8} and summary.done == 8
    final = [line for line in ledger_lines(out) if line["attempts"] == 2]
    assert len(final) == 8 and all(line["status"] == "failed" and line["refusals"] == 2 for line in final)
    assert all(line["usage"]["prompt_tokens"] > 0 for line in final)


def _start(out, endpoint):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
               "--limit", "2", "--backend", "batch", "--base-url", endpoint.base_url,
               "--poll-interval", "0.05"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_when(out, process, condition):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = out / "batch" / "state.json"
        if state.is_file() and condition(_state(out)["batches"][0]):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the batch never reached the expected step")
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_while_polling_resumes_the_same_batch(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        endpoint.batch_hold = True
        process = _start(out, endpoint)
        _kill_when(out, process, lambda batch: batch["status"] == "in_progress")
        endpoint.batch_hold = False
        process = _start(out, endpoint)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "resuming requests-r0-000.jsonl" in stderr
        assert len(endpoint.batches) == 1  # not paid twice
        assert len([f for f in endpoint.files.values() if f["purpose"] == "batch"]) == 1
    assert len(dataset(out)) == 16
    assert len(ledger_lines(out)) == 16


def test_batch_created_but_not_saved_is_adopted_not_duplicated(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        endpoint.batch_hold = True
        process = _start(out, endpoint)
        _kill_when(out, process, lambda batch: batch["batch_id"] is not None)
        state = _state(out)
        state["batches"][0]["batch_id"] = None  # as if killed between creating the batch and saving its id
        (out / "batch" / "state.json").write_text(json.dumps(state))
        endpoint.batch_hold = False
        process = _start(out, endpoint)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "adopted batch batch_1" in stderr
        assert len(endpoint.batches) == 1
    assert len(dataset(out)) == 16


def test_merging_a_batch_again_after_a_crash_counts_nothing_twice(tmp_path):
    out = tmp_path / "out"
    refused = {image_digest(SAMPLE_FACES, "val/1.jpg")}
    with LocalEndpoint(api_key=API_KEY, refuse_images=refused) as endpoint:
        run(endpoint, out, limit=1, backend="batch", poll_interval=0.01, max_attempts=1)
        lines_before = len(ledger_lines(out))
        state = _state(out)
        state["batches"][0]["merged"] = False  # as if killed in the middle of the merge
        (out / "batch" / "state.json").write_text(json.dumps(state))
        summary = run(endpoint, out, limit=1, backend="batch", poll_interval=0.01, max_attempts=1)
        assert len(endpoint.batches) == 2  # the old batch merged again, then one new round
    new_lines = ledger_lines(out)[lines_before:]
    assert len(new_lines) == 8  # only the new round's answers, none from merging the old batch again
    assert summary.failed == 8
    assert all(line["attempts"] == 2 and line["refusals"] == 2 for line in new_lines)
