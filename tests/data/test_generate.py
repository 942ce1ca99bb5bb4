"""fairfacegpt.py with the live `openai` backend against a local OpenAI-compatible endpoint, and the offline
`labels` backend; bad input on the command line."""

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from facellm.data import items
from facellm.data.fairface import read_labels
from facellm.data.prompts import load_prompts
from facellm.testing.local_endpoint import LocalEndpoint
from tests.data.support import (
    API_KEY,
    IMAGE_DIR,
    copy_faces,
    dataset,
    image_tag,
    ledger_lines,
    run,
)
from tests.support import REPO, SAMPLE_FACES, assert_one_line_error, run_command, run_main

ASPECTS = load_prompts().aspects


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def test_labels_backend_writes_eight_pairs_per_image(tmp_path):
    summary = run(None, tmp_path / "out", limit=3, backend="labels", base_url=None)
    records = dataset(tmp_path / "out")
    assert summary.ok and summary.done == 24
    assert len(records) == 3 * 8
    assert {r["images"][0] for r in records} == {"val/1.jpg", "val/2.jpg", "val/3.jpg"}
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["fairfacegpt"]["file_name"] == "dataset.json"


def test_per_question_answers_belong_to_their_image_and_questions_hide_the_labels(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        summary = run(endpoint, out, limit=4, concurrency=8)
        assert len(endpoint.chat_requests()) == 4 * 8
    assert summary.ok and (summary.done, summary.failed, summary.skipped) == (32, 0, 0)
    records = dataset(out)
    assert len(records) == 32
    # deterministic order: CSV order, then aspect order, whatever order the answers came back in
    assert [r["images"][0] for r in records[:9]] == ["val/1.jpg"] * 8 + ["val/2.jpg"]
    assert [r["conversations"][0]["value"] for r in records[:8]] == [
        f"<image>\n{a.question}" for a in ASPECTS
    ]
    labels = {
        row.split(",")[0]: row.split(",")
        for row in (SAMPLE_FACES / "fairface_label_val.csv").read_text().splitlines()[1:]
    }
    for record in records:
        image = record["images"][0]
        answer = record["conversations"][1]["value"]
        assert answer.startswith(image_tag(SAMPLE_FACES, image))  # the endpoint saw this very image
        question = record["conversations"][0]["value"]
        assert answer.endswith(question.removeprefix("<image>\n"))
        gender = labels[image][2]
        assert f"perceived gender {gender.lower()}" in answer  # the hint reached the LLM ...
        assert (
            "annotation" not in question.lower() and gender.lower() not in question.lower()
        )  # ... not the data
    entry = ledger_lines(out)[0]
    assert {
        "image",
        "aspect",
        "question",
        "answer",
        "model",
        "usage",
        "finish_reason",
        "latency_s",
        "attempts",
    } <= set(entry)
    assert entry["model"] == "gpt-4o-2024-11-20" and entry["usage"]["prompt_tokens"] > 0


def test_per_image_mode_sends_each_image_once(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        summary = run(endpoint, out, limit=3, mode="per-image")
        assert len(endpoint.chat_requests()) == 3
    assert summary.ok and summary.done == 24
    records = dataset(out)
    assert len(records) == 24
    for record in records:
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        answer = record["conversations"][1]["value"]
        assert answer.startswith(image_tag(SAMPLE_FACES, record["images"][0]))
        assert answer.endswith(question)  # each JSON answer landed on its own question


def test_every_fault_is_survived_and_counted(tmp_path):
    out = tmp_path / "out"
    faults = ["429", "500", "503", "drop", "timeout", "malformed", "badshape", "length", "empty", "refusal"]
    with LocalEndpoint(api_key=API_KEY, faults=faults, retry_after="0", hang_s=3) as endpoint:
        summary = run(endpoint, out, limit=2, concurrency=4, timeout=1.0, max_attempts=4)
        assert len(endpoint.chat_requests()) == 16 + len(faults)
    assert summary.ok and summary.done == 16
    assert (summary.requests, summary.retries) == (16 + len(faults), 7)  # 7 transport faults, 3 bad answers
    lines = ledger_lines(out)
    assert len(lines) == 16 and all(line["status"] == "done" for line in lines)
    assert sum(line["attempts"] for line in lines) == 16 + len(faults)
    assert sum(line["refusals"] for line in lines) == 1
    assert all(not line["answer"].startswith("I'm sorry") for line in lines)


def test_retry_after_pauses_the_whole_client(tmp_path):
    with LocalEndpoint(api_key=API_KEY, faults=["429"], retry_after="2", latency=0.2) as endpoint:
        summary = run(endpoint, tmp_path / "out", limit=1, concurrency=4)
        times = [entry["time"] for entry in endpoint.chat_requests()]
    assert summary.ok and len(times) == 9
    # the first four arrive together; the 429 goes back 0.2 s later; then nobody may ask for 2 s
    first = times[0]
    waiting = [t for t in times if first + 0.3 < t < first + 0.2 + 1.9]
    assert waiting == [], [round(t - first, 2) for t in times]
    assert max(times) >= first + 2.2


def test_retries_run_out_and_a_rejected_request_is_not_retried(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, faults=["500", "500", "500", "400"], retry_after="0") as endpoint:
        summary = run(endpoint, out, limit=1, concurrency=1, max_retries=2)
        assert len(endpoint.chat_requests()) == 3 + 1 + 6
    failed = {line["reason"]: line for line in ledger_lines(out) if line["status"] == "failed"}
    assert summary.failed == 2 and len(failed) == 2
    assert failed["HTTP 500 (3 times)"]["attempts"] == 3
    (rejected,) = [line for reason, line in failed.items() if reason.startswith("rejected by the endpoint")]
    assert rejected["attempts"] == 1
    assert "400" in rejected["reason"] and "signed with [redacted]" in rejected["reason"]


def test_rpm_ceiling_spaces_requests(tmp_path):
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        run(endpoint, tmp_path / "out", limit=1, concurrency=8, rpm=600)
        times = sorted(entry["time"] for entry in endpoint.chat_requests())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 8 and min(gaps) >= 0.08  # 600 per minute: one every 0.1 s


def test_refused_item_fails_after_max_attempts_and_exit_code_is_1(tmp_path):
    root = copy_faces(tmp_path)
    refused = image_tag(root, "val/2.jpg").removeprefix("image ")
    digest = hashlib.sha256((root / IMAGE_DIR / "val/2.jpg").read_bytes()).hexdigest()
    assert digest.startswith(refused)
    with LocalEndpoint(api_key=API_KEY, refuse_images={digest}) as endpoint:
        result = run_command(
            sys.executable, "fairfacegpt.py", "--fairface-root", str(root), "--out", str(tmp_path / "out"),
            "--limit", "2", "--base-url", endpoint.base_url, "--max-attempts", "2", "--no-progress",
        )  # fmt: skip
        assert len(endpoint.chat_requests()) == 8 + 8 * 2
    assert result.returncode == 1, result.stderr
    assert "8 x refusal" in result.stdout
    failed = [line for line in ledger_lines(tmp_path / "out") if line["status"] == "failed"]
    assert len(failed) == 8 and {f["image"] for f in failed} == {"val/2.jpg"}
    assert all(f["reason"] == "refusal" and f["attempts"] == 2 for f in failed)
    assert len(dataset(tmp_path / "out")) == 8
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed_by_reason"] == {"refusal": 8}


def test_missing_and_corrupt_images_fail_without_a_request(tmp_path):
    root = copy_faces(tmp_path)
    (root / IMAGE_DIR / "val/1.jpg").unlink()
    (root / IMAGE_DIR / "val/2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        summary = run(endpoint, tmp_path / "out", root=root, limit=3)
        assert len(endpoint.chat_requests()) == 8
    assert summary.failed == 16 and summary.done == 8
    reasons = {
        line["image"]: line["reason"] for line in ledger_lines(tmp_path / "out") if line["status"] == "failed"
    }
    assert reasons["val/1.jpg"] == "missing image"
    assert reasons["val/2.jpg"].startswith("unreadable image")


def test_rerun_requests_nothing_and_a_larger_limit_only_the_new_images(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        run(endpoint, out, limit=2)
        before = (out / "dataset.json").read_text()
        again = run(endpoint, out, limit=2)
        assert len(endpoint.chat_requests()) == 16
        assert (again.done, again.skipped) == (0, 16)
        assert (out / "dataset.json").read_text() == before
        more = run(endpoint, out, limit=3)
        assert len(endpoint.chat_requests()) == 24 and (more.done, more.skipped) == (8, 16)
    assert len(dataset(out)) == 24


def test_failed_items_are_retried_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, faults=["refusal"] * 1) as endpoint:
        first = run(endpoint, out, limit=1, concurrency=1, max_attempts=1)
        assert first.failed == 1
        (failed,) = [line for line in ledger_lines(out) if line["status"] == "failed"]
        second = run(endpoint, out, limit=1)
    assert second.ok and second.done == 1 and len(dataset(out)) == 8
    (retried,) = ledger_lines(out)[8:]
    assert retried["aspect"] == failed["aspect"] and retried["status"] == "done"
    # the cost of the failed run is carried forward, not forgotten
    assert (retried["attempts"], retried["refusals"]) == (2, 1)
    assert retried["usage"]["prompt_tokens"] > failed["usage"]["prompt_tokens"] > 0


def _start(out, endpoint, *extra):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
               "--base-url", endpoint.base_url, "--no-progress", *extra]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigkill_then_resume_gives_a_complete_duplicate_free_dataset(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, latency=0.05) as endpoint:
        process = _start(out, endpoint, "--concurrency", "4")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ledger = out / "ledger.jsonl"
            if ledger.is_file() and ledger.read_text().count("\n") >= 20:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with (out / "ledger.jsonl").open("a") as handle:
            handle.write('{"image": "val/9.jpg", "aspe')  # what a kill in the middle of a write leaves
        finished_before = len(ledger_lines_tolerant(out))
        assert 20 <= finished_before < 128
        requests_before = quiet_count(endpoint)
        process = _start(out, endpoint, "--concurrency", "4")
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        resumed_requests = len(endpoint.chat_requests()) - requests_before
    assert resumed_requests == 128 - finished_before  # nothing finished is asked again
    lines = ledger_lines(out)
    assert len(lines) == 128 and len({(line["image"], line["aspect"]) for line in lines}) == 128
    records = dataset(out)
    assert len(records) == 128
    assert len({(r["images"][0], r["conversations"][0]["value"]) for r in records}) == 128


def quiet_count(endpoint) -> int:
    """The endpoint's chat requests once no more arrive: a request sent just before a kill may still be
    read by its handler thread, and would otherwise be counted as the resumed run's."""
    count = len(endpoint.chat_requests())
    while True:
        time.sleep(0.25)
        if (now := len(endpoint.chat_requests())) == count:
            return count
        count = now


def ledger_lines_tolerant(out):
    return [
        json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines() if line.endswith("}")
    ]


def test_api_key_never_reaches_outputs_or_logs(tmp_path, capsys):
    from facellm.data.generate import main

    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, faults=["500", "401"]) as endpoint:
        result = run_command(
            sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
            "--limit", "2", "--base-url", endpoint.base_url, "--concurrency", "1",
        )  # fmt: skip
    assert_one_line_error(result, "rejected the API key", "re-run to resume")
    assert "[redacted]" in result.stderr  # the endpoint echoed the key; we did not
    # the same command twice more, in this process (the first run above is the subprocess one)
    with LocalEndpoint(api_key=API_KEY, faults=["400"], batch_faults=["error"]) as endpoint:
        result2 = run_main(main, [
            "--fairface-root", str(SAMPLE_FACES), "--out", str(out), "--limit", "2", "--base-url",
            endpoint.base_url, "--backend", "batch", "--poll-interval", "0.05", "--no-progress",
        ], capsys)  # fmt: skip
    assert result2.returncode == 0, result2.stderr
    with LocalEndpoint(api_key=API_KEY, faults=["400"]) as endpoint:
        result3 = run_main(main, [
            "--fairface-root", str(SAMPLE_FACES), "--out", str(out), "--limit", "3", "--base-url",
            endpoint.base_url, "--no-progress",
        ], capsys)  # fmt: skip
    assert result3.returncode == 1 and "rejected by the endpoint" in result3.stdout
    texts = [result3.stdout, result3.stderr, result.stdout, result.stderr, result2.stdout, result2.stderr]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()]
    assert len(texts) > 10
    assert not any(API_KEY in text for text in texts)


def test_wrong_key_is_one_line_and_not_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0123456789")
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        result = run_command(
            sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES),
            "--out", str(tmp_path / "o"), "--base-url", endpoint.base_url,
        )  # fmt: skip
    assert_one_line_error(result, "rejected the API key", "OPENAI_API_KEY")
    assert "sk-wrong-key-0123456789" not in result.stderr + result.stdout


def test_missing_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    result = run_command(
        sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "OPENAI_API_KEY is not set")


def folder_state(folder):
    """Every file and folder under FOLDER, each file with its bytes: what "left as it was" compares."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("key", "needle"),
    [(None, "OPENAI_API_KEY is not set"), ("sk abc", "OPENAI_API_KEY is malformed")],
    ids=["missing", "malformed"],
)
def test_a_run_refused_for_its_key_leaves_out_as_it_was(tmp_path, monkeypatch, capsys, key, needle):
    from facellm.data.generate import main

    earlier = tmp_path / "earlier"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        run(endpoint, earlier, limit=1, items="open,short")
    before = folder_state(earlier)
    if key is None:
        monkeypatch.delenv("OPENAI_API_KEY")
    else:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    # the short items of the second image come from the labels: not even they are written before the refusal
    argv = ["--fairface-root", str(SAMPLE_FACES), "--limit", "2", "--items", "open,short", "--no-progress",
            "--base-url", "http://127.0.0.1:9/v1"]  # fmt: skip
    fresh = run_main(main, [*argv, "--out", str(tmp_path / "new" / "out")], capsys)
    assert_one_line_error(fresh, needle)
    assert not (tmp_path / "new").exists()
    again = run_main(main, [*argv, "--out", str(earlier)], capsys)
    assert_one_line_error(again, needle)
    assert folder_state(earlier) == before
    # nothing left to ask an endpoint: no key needed, as before
    finished = run_main(main, [*argv[:-2], "--limit", "1", "--out", str(earlier)], capsys)
    assert finished.returncode == 0, finished.stderr


@pytest.mark.parametrize(
    ("url", "needle"),
    [("localhost:8000", "not an http(s) URL"), ("ftp://example.org/v1", "not an http(s) URL"),
     ("http://[::1", "not an http(s) URL"), ("http://127.0.0.1:99999/v1", "not an http(s) URL"),
     ("http://127.0.0.1:9/v1", "cannot reach")],
)  # fmt: skip
def test_bad_base_url(tmp_path, url, needle):
    result = run_command(
        sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(tmp_path / "o"),
        "--base-url", url,
    )  # fmt: skip
    assert_one_line_error(result, needle)


def test_changed_settings_in_the_same_out_are_refused(tmp_path):
    out = tmp_path / "out"
    run(None, out, limit=1, backend="labels", base_url=None)
    result = run_command(
        sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
        "--base-url", "http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert_one_line_error(result, "run.json", "other settings", "'labels' -> 'gpt-4o-2024-11-20'")


def test_missing_labels_csv(tmp_path):
    (tmp_path / "fairface-img-margin025-trainval").mkdir()
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "fairface_label_val.csv", "not found")


def test_image_folder_that_does_not_exist(tmp_path):
    shutil.copy(SAMPLE_FACES / "fairface_label_val.csv", tmp_path)
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, str(tmp_path), "no image folder")


def test_csv_without_the_fairface_columns(tmp_path):
    (tmp_path / "fairface-img-margin025-trainval").mkdir()
    (tmp_path / "fairface_label_val.csv").write_text("path,label\nx.jpg,1\n")
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "fairface_label_val.csv", "missing column")


def test_label_outside_the_vocabulary(tmp_path):
    root = copy_faces(tmp_path)
    csv = root / "fairface_label_val.csv"
    csv.write_text(csv.read_text().replace("East Asian", "Asian", 1))
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(root), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "fairface_label_val.csv:", "race 'Asian' is not a FairFace label")


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(tmp_path / "out")
    )
    assert_one_line_error(result, str(tmp_path / "out"), "not a folder")


def labels_cli(out):
    return run_command(
        "python",
        "fairfacegpt.py",
        "--fairface-root",
        str(SAMPLE_FACES),
        "--out",
        str(out),
        "--backend",
        "labels",
    )


def test_corrupt_registry_in_out_is_named_and_ledger_kept(tmp_path):
    out = tmp_path / "o"
    run(None, out, limit=1, backend="labels", base_url=None)
    ledger_before = (out / "ledger.jsonl").read_text()
    (out / "dataset_info.json").write_text("{torn")
    result = labels_cli(out)
    assert_one_line_error(result, "dataset_info.json", "corrupt JSON")
    assert (out / "ledger.jsonl").read_text() == ledger_before


def test_help_explains_backends_modes_and_resume(capsys):
    from facellm.data.generate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--backend", "batch", "labels", "per-image", "--concurrency", "--rpm", "--tpm", "resume",
                   "OPENAI_API_KEY", "--max-attempts", "--prices", "--items", "mcq"):  # fmt: skip
        assert needle in text, needle


def test_changed_settings_are_accepted_while_nothing_was_generated(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(
        '{"model": "gpt-4o-typo", "mode": "per-question", "prompts": "x", "split": "val"}'
    )
    summary = run(None, out, limit=1, backend="labels", base_url=None)
    assert summary.ok and json.loads((out / "run.json").read_text())["model"] == "labels"


def test_two_runs_on_one_folder_are_refused(tmp_path):
    from facellm.common.ledger import Ledger

    out = tmp_path / "out"
    run(None, out, limit=1, backend="labels", base_url=None)
    with Ledger(out / "ledger.jsonl"):
        result = labels_cli(out)
    assert_one_line_error(result, "ledger.jsonl", "in use by another run")


def test_an_image_listed_twice_is_refused(tmp_path):
    root = copy_faces(tmp_path)
    csv = root / "fairface_label_val.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[3]]) + "\n")
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(root), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, f"fairface_label_val.csv:{len(lines) + 1}", "listed twice", "line 4")


def test_a_key_quoted_back_inside_answers_is_redacted_everywhere(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, faults=["echo-key"] * 8) as endpoint:
        summary = run(endpoint, out, limit=1, concurrency=1)
    assert summary.ok
    stored = [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()]
    assert any("your key is [redacted]" in text for text in stored)  # the answers were kept, the key not
    assert not any(API_KEY in text for text in stored)


def test_an_image_too_large_to_decode_fails_alone_and_the_run_finishes(tmp_path):
    from PIL import Image

    root = copy_faces(tmp_path)
    bomb = Image.new("L", (20000, 20000))  # 400 megapixels: PIL refuses to decode it
    bomb.save(root / IMAGE_DIR / "val/2.jpg")
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        result = run_command(
            sys.executable, "fairfacegpt.py", "--fairface-root", str(root), "--out", str(out), "--limit", "3",
            "--base-url", endpoint.base_url, "--no-progress",
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    reasons = {line["image"]: line["reason"] for line in ledger_lines(out) if line["status"] == "failed"}
    assert set(reasons) == {"val/2.jpg"} and "too many pixels" in reasons["val/2.jpg"]
    assert len(dataset(out)) == 16


def test_the_labels_backend_checks_images_as_the_live_one_does(tmp_path):
    root = copy_faces(tmp_path)
    (root / IMAGE_DIR / "val/1.jpg").unlink()
    (root / IMAGE_DIR / "val/2.jpg").write_bytes(b"")
    (root / IMAGE_DIR / "val/3.jpg").write_text("not an image")
    summary = run(None, tmp_path / "out", root=root, limit=4, backend="labels", base_url=None)
    assert summary.failed == 24 and summary.done == 8 and not summary.ok
    reasons = {line["image"]: line["reason"] for line in ledger_lines(tmp_path / "out")}
    assert reasons["val/1.jpg"] == "missing image" and reasons["val/4.jpg"] is None
    assert reasons["val/2.jpg"].startswith("unreadable image") and reasons["val/3.jpg"].startswith(
        "unreadable"
    )
    assert {record["images"][0] for record in dataset(tmp_path / "out")} == {"val/4.jpg"}


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-abcé", "sk abc"], ids=["newline", "non-ascii", "space"])
def test_a_malformed_key_is_named_without_printing_it(tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    result = run_command(
        sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(tmp_path / "o"),
        "--base-url", "http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert_one_line_error(result, "OPENAI_API_KEY is malformed")
    assert "abc" not in result.stderr


def test_a_run_waiting_for_the_lock_leaves_run_json_alone(tmp_path):
    from facellm.common.ledger import Ledger

    out = tmp_path / "out"
    run(None, out, limit=1, backend="labels", base_url=None)
    before = (out / "run.json").read_bytes()
    with Ledger(out / "ledger.jsonl"):  # the first run is still going
        (out / "ledger.jsonl").write_text("")  # ...and has not finished an item yet
        result = run_command(
            sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
            "--base-url", "http://127.0.0.1:9/v1",
        )  # fmt: skip
    assert_one_line_error(result, "ledger.jsonl", "in use by another run")
    assert (out / "run.json").read_bytes() == before


def test_ctrl_c_exits_130_with_the_way_to_resume(tmp_path):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY, latency=0.5) as endpoint:
        process = subprocess.Popen(
            [sys.executable, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out),
             "--base-url", endpoint.base_url, "--concurrency", "1", "--no-progress"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not endpoint.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command to resume" in stderr


# --items: short-answer and multiple-choice items answered from the labels

ALL_ITEMS = "open,short,mcq"
LABEL_KEYS = ["short:gender", "short:age", "short:race", "mcq:gender", "mcq:age", "mcq:race"]
SAMPLE_LABELS = {face.file: face for face in read_labels(SAMPLE_FACES / "fairface_label_val.csv")}


def labels_run(out, **overrides):
    return run(None, out, backend="labels", base_url=None, **overrides)


def turns(record):
    """(question as stored, without the image tag; answer) of a ShareGPT record."""
    human, assistant = record["conversations"]
    return human["value"].removeprefix("<image>\n"), assistant["value"]


def assert_label_items(records, image):
    """The six label items of IMAGE, in order: short then mcq, gender, age, race; answers are its labels."""
    face = SAMPLE_LABELS[image]
    assert [r["images"] for r in records] == [[image]] * 6
    questions, answers = zip(*(turns(r) for r in records), strict=True)
    assert list(answers) == [face.gender, face.age, face.race] * 2
    assert list(questions[:3]) == list(items.QUESTIONS.values())
    for question, answer, size, first in zip(
        questions[3:], answers[3:], (2, 4, 4), questions[:3], strict=True
    ):
        lines = question.splitlines(keepends=True)
        assert lines[:2] == [f"{first}\n", f"{items.INSTRUCTION}\n"] and "".join(lines) == question
        options = [line[4:-1] for line in lines[2:]]
        assert lines[2:] == [
            f"({letter}) {option}\n" for letter, option in zip("ABCD", options, strict=False)
        ]
        assert len(options) == size and options.count(answer) == 1


def test_default_items_are_the_open_aspects_as_before(tmp_path):
    labels_run(tmp_path / "default", limit=3)
    labels_run(tmp_path / "open", limit=3, items="open")
    labels_run(tmp_path / "every", limit=3, items="mcq,open,short")
    default = (tmp_path / "default" / "dataset.json").read_bytes()
    assert (tmp_path / "open" / "dataset.json").read_bytes() == default
    assert "items" not in json.loads((tmp_path / "default" / "run.json").read_text())  # as before --items
    open_questions = {aspect.question for aspect in ASPECTS}
    every = dataset(tmp_path / "every")
    assert [r for r in every if turns(r)[0] in open_questions] == json.loads(default)
    assert json.loads((tmp_path / "every" / "run.json").read_text())["items"] == ALL_ITEMS


def test_items_add_short_and_mcq_questions_answered_with_the_labels(tmp_path):
    out = tmp_path / "out"
    summary = labels_run(out, limit=3, items=ALL_ITEMS)
    assert summary.ok and (summary.done, summary.skipped) == (3 * 14, 0)
    records = dataset(out)
    assert len(records) == 3 * 14
    for n, image in enumerate(["val/1.jpg", "val/2.jpg", "val/3.jpg"]):
        mine = records[14 * n : 14 * (n + 1)]  # image order, then open, short, mcq
        assert [turns(r)[0] for r in mine[:8]] == [aspect.question for aspect in ASPECTS]
        assert_label_items(mine[8:], image)
    entries = [line for line in ledger_lines(out) if line["aspect"] in LABEL_KEYS]
    assert len(entries) == 3 * 6 and {(e["model"], e["backend"], e["status"]) for e in entries} == {
        ("labels", "labels", "done")
    }
    only = labels_run(tmp_path / "only", limit=2, items="short,mcq")
    assert only.ok and only.done == 12 and len(dataset(tmp_path / "only")) == 12
    assert_label_items(dataset(tmp_path / "only")[6:], "val/2.jpg")


def test_items_are_the_same_in_every_run_and_after_a_resume(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    labels_run(first, limit=4, items=ALL_ITEMS)
    labels_run(second, limit=2, items="mcq,short,open")  # the same setting, spelled otherwise
    ledger = second / "ledger.jsonl"
    kept = ledger.read_text().splitlines(keepends=True)[:-5]  # as if killed before the last five items
    assert {json.loads(line)["aspect"] for line in ledger.read_text().splitlines()[-5:]} <= set(LABEL_KEYS)
    ledger.write_text("".join(kept))
    resumed = labels_run(second, limit=4, items=ALL_ITEMS)
    assert (resumed.skipped, resumed.done) == (2 * 14 - 5, 2 * 14 + 5)
    assert (second / "dataset.json").read_bytes() == (first / "dataset.json").read_bytes()
    lines = ledger_lines(second)
    assert len(lines) == 4 * 14 and len({(line["image"], line["aspect"]) for line in lines}) == 4 * 14


@pytest.mark.parametrize(
    ("first", "second", "change"),
    [(None, "open,mcq", "items 'open' -> 'open,mcq'"), (ALL_ITEMS, None, "items 'open,short,mcq' -> 'open'"),
     ("short", "mcq", "items 'short' -> 'mcq'")],
)  # fmt: skip
def test_other_items_in_the_same_out_are_refused(tmp_path, capsys, first, second, change):
    from facellm.data.generate import main

    out = tmp_path / "out"
    labels_run(out, limit=1, **({"items": first} if first else {}))
    before = (out / "dataset.json").read_bytes()
    argv = ["--fairface-root", str(SAMPLE_FACES), "--out", str(out), "--backend", "labels", "--limit", "1"]
    result = run_main(main, [*argv, *(["--items", second] if second else [])], capsys)
    assert_one_line_error(result, "run.json", "other settings", change)
    assert (out / "dataset.json").read_bytes() == before
    assert run_main(main, [*argv, *(["--items", first] if first else [])], capsys).returncode == 0


def test_unknown_item_kinds_are_refused_before_any_work(tmp_path, capsys):
    from facellm.common.cli import FaceLLMError
    from facellm.data.generate import main

    out = tmp_path / "out"
    argv = ["--fairface-root", str(SAMPLE_FACES), "--out", str(out), "--backend", "labels"]
    result = run_main(main, [*argv, "--items", "open,faces"], capsys)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "argument --items: unknown item kind 'faces'" in errors[0]
    assert "no item kind" in run_main(main, [*argv, "--items", ""], capsys).stderr
    with pytest.raises(FaceLLMError, match="--items 'open,faces': unknown item kind 'faces'"):
        labels_run(out, items="open,faces")
    assert not out.exists()


@pytest.mark.parametrize(
    ("backend", "mode", "asked"),
    [("openai", "per-question", 16), ("openai", "per-image", 2), ("batch", "per-question", 16)],
)
def test_llm_backends_are_asked_the_open_questions_only(tmp_path, backend, mode, asked):
    out = tmp_path / "out"
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        summary = run(endpoint, out, limit=2, backend=backend, mode=mode, items=ALL_ITEMS, poll_interval=0.01)
        chat = len(endpoint.chat_requests())
        batched = sum(f["content"].count(b"\n") for f in endpoint.files.values() if f["purpose"] == "batch")
    assert chat + batched == asked
    assert summary.ok and summary.done == 2 * 14
    records = dataset(out)
    for n, image in enumerate(["val/1.jpg", "val/2.jpg"]):
        mine = records[14 * n : 14 * (n + 1)]
        assert all(turns(r)[1].startswith(image_tag(SAMPLE_FACES, image)) for r in mine[:8])  # the LLM's
        assert_label_items(mine[8:], image)  # the labels'
    backends = {line["aspect"]: (line["model"], line["backend"]) for line in ledger_lines(out)}
    assert {backends[key] for key in LABEL_KEYS} == {("labels", "labels")}
    assert backends["demographics"] == ("gpt-4o-2024-11-20", backend)


def test_label_items_alone_need_no_endpoint_and_no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    summary = run(None, tmp_path / "out", limit=2, items="short,mcq")  # the openai backend, never asked
    assert summary.ok and summary.done == 12 and summary.requests is None
    assert_label_items(dataset(tmp_path / "out")[:6], "val/1.jpg")


def test_label_items_of_an_unreadable_image_fail_with_the_others(tmp_path):
    root = copy_faces(tmp_path)
    (root / IMAGE_DIR / "val/2.jpg").write_text("not an image")
    summary = labels_run(tmp_path / "out", root=root, limit=2, items=ALL_ITEMS)
    assert (summary.done, summary.failed) == (14, 14)
    failed = [line for line in ledger_lines(tmp_path / "out") if line["status"] == "failed"]
    assert {line["image"] for line in failed} == {"val/2.jpg"} and len(failed) == 14
    assert {r["images"][0] for r in dataset(tmp_path / "out")} == {"val/1.jpg"}


def test_flags_are_never_abbreviated(tmp_path, capsys):
    """`--fairface` is not taken for `--fairface-root`: a misspelt flag is an argument error, not a guess."""
    from facellm.data.generate import main

    argv = ["--fairface", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--backend", "labels"]
    result = run_main(main, argv, capsys)
    assert result.returncode == 2 and "unrecognized arguments: --fairface " in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
