"""Batch mode of inference.py: folders and lists in, one JSONL line per image out, resumable."""

import json
import shutil
from pathlib import Path

import pytest

# transformers gives its log handler the sys.stderr of the moment it is first imported: imported here, under
# pytest's session-long capture, not inside a capsys test whose stream is closed when that test ends (later
# warnings would then print a logging traceback into another test's stderr)
import transformers  # noqa: F401

from facellm.common.cli import FaceLLMError
from facellm.infer.batch import list_items, open_answers, run_batch
from facellm.infer.cli import main
from facellm.infer.model import FaceLLMModel, Part
from tests.support import SAMPLE_FACES, assert_one_line_error, run_main

FACES = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val"


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"):
        shutil.copy(FACES / name, images / name)
    (images / "broken.jpg").write_bytes((FACES / "6.jpg").read_bytes()[:400])  # truncated
    (images / "notes.txt").write_text("not listed: not an image suffix")
    return images


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def batch_cli(tiny_model, source, out, *extra, capsys):
    """inference.py in batch mode, run in this process (its subprocess smoke test is in test_model.py)."""
    argv = [
        "--model", str(tiny_model), "--images", str(source), "--output", str(out), "--max-new-tokens", "8",
        "--no-progress", *extra,
    ]  # fmt: skip
    return run_main(main, argv, capsys)


def test_folder_with_a_corrupt_image_answers_the_rest_and_resumes(trained_tiny, folder, tmp_path, capsys):
    tiny_model = trained_tiny[1]
    out = tmp_path / "answers.jsonl"
    first = batch_cli(tiny_model, folder, out, "--batch-size", "4", capsys=capsys)
    assert first.returncode == 1, first.stderr  # one image failed
    assert "5 answered, 1 failed, 0 already" in first.stdout
    rows = {row["image"]: row for row in lines(out)}
    assert set(rows) == {"1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "broken.jpg"}
    assert rows["broken.jpg"]["status"] == "failed" and "unreadable image" in rows["broken.jpg"]["error"]
    good = [row for row in rows.values() if row["status"] == "done"]
    assert all(row["answer"] and row["tokens"] > 0 and row["latency_s"] > 0 for row in good)
    # the batched answers are the one-at-a-time greedy answers
    model = FaceLLMModel(str(tiny_model), max_new_tokens=8)
    assert rows["3.jpg"]["answer"] == model.generate(
        [Part("image", FACES / "3.jpg"), Part("text", good[0]["prompt"])]
    )

    shutil.copy(FACES / "7.jpg", folder / "7.jpg")
    again = batch_cli(tiny_model, folder, out, capsys=capsys)
    assert "1 answered, 1 failed, 5 already" in again.stdout  # the new image, and broken.jpg asked again
    assert len(lines(out)) == 7 and len({row["image"] for row in lines(out)}) == 7  # its newest line only


def test_jsonl_list_with_prompts_and_a_text_list(tiny_model, tmp_path, capsys):
    listing = tmp_path / "list.jsonl"
    shutil.copy(FACES / "1.jpg", tmp_path / "a.jpg")
    listing.write_text('{"image": "a.jpg", "prompt": "How old is this person?"}\n{"image": "a.jpg"}\n')
    result = batch_cli(tiny_model, listing, tmp_path / "out.jsonl", capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert [row["prompt"] for row in lines(tmp_path / "out.jsonl")] == [
        "How old is this person?",
        "Describe this face in detail.",
    ]
    text_list = tmp_path / "list.txt"
    text_list.write_text("# faces\na.jpg\n")
    assert [item.image for item in list_items(text_list, "q")] == ["a.jpg"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "list.jsonl:1: not a JSON line"),
        ('{"prompt": "x"}\n', 'list.jsonl:1: expected {"image"'),
    ],
)
def test_bad_list_lines_are_named(tmp_path, content, message):
    listing = tmp_path / "list.jsonl"
    listing.write_text(content)
    with pytest.raises(FaceLLMError, match=message.replace("(", r"\(").replace("{", r"\{")):
        list_items(listing, "q")


def test_absolute_paths_inside_the_list_folder_are_its_images_and_others_fail_alone(tmp_path):
    """A list made by `find $PWD -name '*.jpg'`: absolute paths inside the list's folder are accepted (one
    file written two ways is one image); a line outside it is that line's error, naming it and the folder."""
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("1.jpg", "sub/2.jpg"):
        shutil.copy(FACES / "1.jpg", tmp_path / "photos" / name)
    shutil.copy(FACES / "1.jpg", tmp_path / "secret.jpg")
    root = tmp_path / "photos"
    listing = root / "list.txt"
    lines_ = [f"{root}/1.jpg", f"{root}/sub/2.jpg", "1.jpg", f"{tmp_path}/secret.jpg", "../secret.jpg"]
    listing.write_text("\n".join(lines_) + "\n")
    items = list_items(listing, "q")
    assert [(item.image, item.path) for item in items if not item.error] == [
        (f"{root}/1.jpg", root / "1.jpg"),
        (f"{root}/sub/2.jpg", root / "sub" / "2.jpg"),
    ]
    errors = {item.image: item.error for item in items if item.error}
    assert set(errors) == {f"{tmp_path}/secret.jpg", "../secret.jpg"}
    assert errors["../secret.jpg"].startswith(
        f"{listing}:5: path '../secret.jpg' escapes its root folder {root}"
    )
    assert (
        f"{listing}:4: path '{tmp_path}/secret.jpg' escapes its root folder {root}"
        in errors[f"{tmp_path}/secret.jpg"]
    )
    jsonl = root / "list.jsonl"
    jsonl.write_text(f'{{"image": "{root}/1.jpg"}}\n{{"image": "../secret.jpg"}}\n')
    assert [bool(item.error) for item in list_items(jsonl, "q")] == [False, True]


class EchoModel:
    """A stand-in for FaceLLMModel: answers each image with its size, so batch bookkeeping runs model-free."""

    def check_fits(self, parts):
        pass

    def generate_batch(self, batch, **generation):
        return [(f"{len(parts[0].value)} bytes", 1) for parts in batch]


def test_a_line_outside_the_list_folder_is_recorded_as_failed_and_the_batch_goes_on(tmp_path):
    shutil.copy(FACES / "1.jpg", tmp_path / "1.jpg")
    (tmp_path / "list.txt").write_text(f"{tmp_path}/1.jpg\n/etc/hostname\n../x.jpg\n")
    with open_answers(tmp_path / "out.jsonl", {}) as ledger:
        items = list_items(tmp_path / "list.txt", "q")
        counts = run_batch(EchoModel(), items, ledger, 8, Path.read_bytes, {}, progress=False)
    assert counts == (1, 2, 0)
    rows = {row["image"]: row for row in lines(tmp_path / "out.jsonl")}
    assert rows[f"{tmp_path}/1.jpg"]["status"] == "done"
    assert rows["/etc/hostname"]["status"] == rows["../x.jpg"]["status"] == "failed"
    assert (
        f"list.txt:2: path '/etc/hostname' escapes its root folder {tmp_path}"
        in rows["/etc/hostname"]["error"]
    )


def test_batch_mode_needs_an_output_and_a_source(tiny_model, tmp_path, capsys):
    result = run_main(main, ["--model", str(tiny_model), "--images", str(FACES)], capsys)
    assert_one_line_error(result, "--images needs --output")
    result = batch_cli(tiny_model, tmp_path / "nowhere", tmp_path / "o.jsonl", capsys=capsys)
    assert_one_line_error(result, "nowhere", "no such folder or list file")


def test_failed_images_are_asked_again_and_other_settings_are_refused(trained_tiny, folder, tmp_path, capsys):
    merged = trained_tiny[1]
    out = tmp_path / "answers.jsonl"
    assert batch_cli(merged, folder, out, capsys=capsys).returncode == 1  # broken.jpg failed
    shutil.copy(FACES / "6.jpg", folder / "broken.jpg")  # the user repairs it
    again = batch_cli(merged, folder, out, capsys=capsys)
    assert again.returncode == 0, again.stderr
    assert "1 answered, 0 failed, 5 already" in again.stdout
    final = {row["image"]: row for row in lines(out)}
    assert len(final) == len(lines(out)) == 6 and final["broken.jpg"]["status"] == "done"
    other = batch_cli(merged, folder, out, "--temperature", "0.7", capsys=capsys)
    assert_one_line_error(other, "answers.jsonl", "other settings", "temperature 0.0 -> 0.7")


def test_lists_that_are_not_lists(tmp_path):
    shutil.copy(FACES / "1.jpg", tmp_path / "a.jpg")
    with pytest.raises(FaceLLMError, match="an image, not a folder or list"):
        list_items(tmp_path / "a.jpg", "q")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(FaceLLMError, match="not a UTF-8 text list"):
        list_items(tmp_path / "latin1.txt", "q")
    (tmp_path / "twice.txt").write_text("a.jpg\na.jpg\n")
    assert len(list_items(tmp_path / "twice.txt", "q")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceLLMError, match="no images to answer"):
        list_items(tmp_path / "empty", "q")


def test_hostile_lines_fail_alone_and_one_file_written_three_ways_is_asked_once(tiny_model, tmp_path, capsys):
    shutil.copy(FACES / "1.jpg", tmp_path / "1.jpg")
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "list.jsonl"
    rows = [
        {"image": "1.jpg"},
        {"image": "./1.jpg"},
        {"image": "sub/../1.jpg"},
        {"image": "1.jpg", "prompt": "bad \ud800 text"},  # a lone surrogate, from a JSON escape
        {"image": "1.jpg", "prompt": "face " * 33000},  # beyond the tiny model's 32768 positions
    ]
    listing.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    result = batch_cli(tiny_model, listing, out, capsys=capsys)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "1 answered, 2 failed" in result.stdout, result.stdout
    answers = {row["prompt"][:3]: row for row in lines(out)}
    assert len(answers) == 3 and {row["image"] for row in answers.values()} == {"1.jpg"}
    assert answers["Des"]["status"] == "done" and answers["Des"]["answer"] is not None
    surrogate, too_long = answers["bad"], answers["fac"]
    assert surrogate["prompt"] == "bad \ud800 text"
    assert "list.jsonl:4: the prompt is not valid UTF-8" in surrogate["error"]
    assert too_long["status"] == "failed" and "the model reads at most 32768" in too_long["error"]
    again = batch_cli(tiny_model, listing, out, capsys=capsys)  # the surrogate line reads back as itself
    assert "0 answered, 2 failed, 1 already" in again.stdout, again.stderr


@pytest.mark.parametrize(
    "content", [b'{"important": "data"}', b"photos/1.jpg"], ids=["json-document", "one-line-list"]
)
def test_an_output_that_is_not_an_answers_file_is_refused_before_the_model_loads(tmp_path, content):
    shutil.copy(FACES / "1.jpg", tmp_path / "1.jpg")
    (tmp_path / "list.txt").write_text("1.jpg\n")
    out = tmp_path / "x.json"
    out.write_bytes(content)
    argv = [
        "--model",
        str(tmp_path / "no-model"),
        "--images",
        str(tmp_path / "list.txt"),
        "--output",
        str(out),
    ]
    with pytest.raises(FaceLLMError, match=r"x.json:1: not a ledger line"):
        main(argv)
    assert out.read_bytes() == content


def test_prompts_that_are_not_text(tmp_path):
    listing = tmp_path / "list.jsonl"
    listing.write_text('{"image": "a.jpg", "prompt": 5}\n')
    with pytest.raises(FaceLLMError, match=r"list.jsonl:1: the prompt must be a text, not 5"):
        list_items(listing, "q")
    with pytest.raises(FaceLLMError, match="--prompt is not valid UTF-8"):  # command-line bytes, not UTF-8
        main(
            ["--path_image", str(FACES / "1.jpg"), "--prompt", b"caf\xe9".decode("utf-8", "surrogateescape")]
        )


class FakeModel:
    """A stand-in for FaceLLMModel behind inference.py's command line: answers every image, counts batches,
    and raises INTERRUPT (Ctrl-C) when asked its batch number INTERRUPT_AT."""

    def __init__(self, interrupt_at=None):
        self.batches, self.interrupt_at = 0, interrupt_at

    def check_fits(self, parts):
        pass

    def generate_batch(self, batch, **generation):
        self.batches += 1
        if self.batches == self.interrupt_at:
            raise KeyboardInterrupt
        return [(f"a face of {parts[0].value.size[0]} pixels", 3) for parts in batch]


def fake_cli(monkeypatch, model, source, out, *extra, capsys):
    """inference.py in batch mode on MODEL (None: loading a model fails the test)."""
    import facellm.infer.cli as cli

    def load(args):
        if model is None:
            pytest.fail("the model was loaded")
        return model

    monkeypatch.setattr(cli, "_model", load)
    argv = ["--images", str(source), "--output", str(out), "--no-progress", "--batch-size", "2", *extra]
    return run_main(main, argv, capsys)


def test_a_rerun_with_nothing_pending_does_not_load_the_model(folder, tmp_path, monkeypatch, capsys):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "answers.jsonl"
    first = fake_cli(monkeypatch, FakeModel(), folder, out, capsys=capsys)
    assert first.returncode == 0 and "5 answered, 0 failed, 0 already" in first.stdout, first.stderr
    written = out.read_bytes()
    again = fake_cli(monkeypatch, None, folder, out, capsys=capsys)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"nothing to do: 5 images already answered in {out}"
    assert out.read_bytes() == written
    (folder / "broken.jpg").write_bytes(b"not an image")  # a failed image is pending: the model loads
    third = fake_cli(monkeypatch, FakeModel(), folder, out, capsys=capsys)
    assert third.returncode == 1 and "0 answered, 1 failed, 5 already" in third.stdout, third.stderr


def test_a_retried_image_leaves_one_line_per_image_and_keeps_every_answer(
    folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "answers.jsonl"
    assert fake_cli(monkeypatch, FakeModel(), folder, out, capsys=capsys).returncode == 1  # broken.jpg
    answered = [row for row in lines(out) if row["status"] == "done"]
    assert len(answered) == 5
    shutil.copy(FACES / "6.jpg", folder / "broken.jpg")  # the user repairs it
    (folder / "5.jpg").unlink()  # and takes another out of the folder: its answer stays in OUT
    again = fake_cli(monkeypatch, FakeModel(), folder, out, capsys=capsys)
    assert again.returncode == 0 and "1 answered, 0 failed, 4 already" in again.stdout, again.stderr
    rows = lines(out)
    assert sorted(row["image"] for row in rows) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "broken.jpg"]
    assert all(row["status"] == "done" for row in rows)
    assert [row for row in rows if row["image"] != "broken.jpg"] == answered  # the first run's, untouched
    assert not list(tmp_path.glob(".answers.jsonl.*"))  # no temporary file left beside it


def test_an_interrupted_batch_run_says_what_is_saved_and_resumes(folder, tmp_path, monkeypatch, capsys):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "answers.jsonl"
    stopped = fake_cli(monkeypatch, FakeModel(interrupt_at=2), folder, out, capsys=capsys)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr
    assert (
        f"interrupted; 2 of 5 images answered so far are saved in {out}; the same command resumes"
        in stopped.stderr
    ), stopped.stderr
    resumed = fake_cli(monkeypatch, FakeModel(), folder, out, capsys=capsys)
    assert "3 answered, 0 failed, 2 already" in resumed.stdout, resumed.stderr


def test_list_lines_that_cannot_be_asked_need_no_model(tmp_path, monkeypatch, capsys):
    shutil.copy(FACES / "1.jpg", tmp_path / "1.jpg")
    (tmp_path / "list.txt").write_text("1.jpg\n../outside.jpg\n")
    out = tmp_path / "answers.jsonl"
    first = fake_cli(monkeypatch, FakeModel(), tmp_path / "list.txt", out, capsys=capsys)
    assert "1 answered, 1 failed, 0 already" in first.stdout, first.stderr
    again = fake_cli(monkeypatch, None, tmp_path / "list.txt", out, capsys=capsys)  # only the bad line left
    assert again.returncode == 1 and "0 answered, 1 failed, 1 already" in again.stdout, again.stderr
    assert sorted(row["image"] for row in lines(out)) == ["../outside.jpg", "1.jpg"]  # one line each
