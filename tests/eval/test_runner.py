"""The evaluation runner's bookkeeping (resume, failures, batches, shards, merge) with a scripted VLMEvalKit
model; the same runner on the real FaceLLM model is tested in test_vlmeval_plugin.py."""

import json
import os
import re
import signal
import sys
import time

import pytest
from vlmeval.vlm.base import BaseModel

from facellm.common.cli import FaceLLMError, run_cli
from facellm.eval.plugin import check_model_name, import_file
from facellm.eval.results import Shard
from facellm.eval.runner import Interrupted, batches, evaluate, merge
from facellm.eval.scoring import load_results, score
from facellm.testing.sample_benchmark import build
from tests.support import REPO, SAMPLE_FACES

IDENTITY = {"model": "oracle", "model_path": "oracle-path", "prepend_text": False, "max_new_tokens": 8}


class OracleModel(BaseModel):
    """Answers B to single-image questions and 'The answer is (C)' to multi-image ones, and logs each call.
    With FAIL_ON, a question whose text contains it raises; BATCHED adds a generate_batch logging batches."""

    INTERLEAVE = True

    def __init__(self, fail_on=None, batched=False):
        super().__init__()
        self.calls, self.batches, self.fail_on = [], [], fail_on
        if batched:
            self.generate_batch = self._generate_batch

    def generate_inner(self, message, dataset=None):
        assert dataset == "MCQ"  # what the authors' evaluation passes
        self.calls.append(message)
        text = message[-1]["value"]
        if self.fail_on and self.fail_on in text:
            raise RuntimeError(f"cannot answer {self.fail_on}")
        images = [m for m in message if m["type"] == "image"]
        return " B " if len(images) == 1 else "The answer is (C)"

    def _generate_batch(self, messages, dataset=None):
        self.batches.append(len(messages))
        if self.fail_on and any(self.fail_on in m[-1]["value"] for m in messages):
            raise RuntimeError("out of memory")  # the whole batch fails; the runner retries one by one
        return [self.generate_inner(m, dataset) for m in messages]


@pytest.fixture
def bench(tmp_path):
    return build(SAMPLE_FACES, tmp_path / "fxb", per_task=3)


def saved(folder, name="sample_multiple_mcq_race"):
    return json.loads((folder / f"{name}.json").read_text())


def run(bench, results, model=None, **options):
    model = model or OracleModel()
    return model, evaluate(lambda: model, IDENTITY, bench, results, progress=False, **options)


def test_runner_answers_every_question_and_writes_results_format(bench, tmp_path):
    model, summary = run(bench, tmp_path / "results")
    assert len(model.calls) == 9
    data = saved(tmp_path / "results")
    assert all(q["prediction"] == "The answer is (C)" for q in data["questions"].values())
    assert saved(tmp_path / "results", "sample_single_mcq_age")["questions"]["1"]["prediction"] == "B"
    original = json.loads((bench / "sample_multiple_mcq_race.json").read_text())
    assert {k: v for k, v in data.items() if k != "questions"} == {
        k: v for k, v in original.items() if k != "questions"
    }
    assert all(
        {k: v for k, v in q.items() if k != "prediction"} == original["questions"][n]
        for n, q in data["questions"].items()
    )
    expected = sum(
        q["correct_answer_option"] == ("B" if len(q["image_paths"]) == 1 else "C")
        for path in bench.glob("*.json")
        for q in json.loads(path.read_text())["questions"].values()
    )
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["overall"]["correct"] == expected
    assert summary["overall"] == {"questions": 9, "answered": 9, "failed": 0, "pending": 0}
    assert "Bias & Fairness" in (tmp_path / "results" / "results.txt").read_text()


def test_images_come_first_as_absolute_paths_and_the_prompt_is_the_authors(bench, tmp_path):
    model, _ = run(bench, tmp_path / "r", limit=1)
    race = next(m for m in model.calls if len(m) == 4)
    assert [m["type"] for m in race] == ["image", "image", "image", "text"]
    assert all(m["value"].startswith(str(bench.resolve())) for m in race[:3])
    task = json.loads((bench / "sample_multiple_mcq_race.json").read_text())
    question = task["questions"]["1"]
    assert race[-1]["value"] == (
        f"{question['question_text']}\n{task['postpend_text']}\n(A) 0\n(B) 1\n(C) 2\n(D) 3\n"
    )


def test_rerun_asks_only_what_is_missing(bench, tmp_path):
    first, _ = run(bench, tmp_path / "r", limit=1)
    assert len(first.calls) == 3
    second, summary = run(bench, tmp_path / "r")
    assert len(second.calls) == 6
    assert summary["overall"]["answered"] == 9
    third, _ = run(bench, tmp_path / "r")
    assert third.calls == []


def test_a_failing_question_is_recorded_and_retried(bench, tmp_path):
    model = OracleModel(fail_on="How many of these images")
    _, summary = run(bench, tmp_path / "r", model=model)
    assert summary["overall"] == {"questions": 9, "answered": 6, "failed": 3, "pending": 0}
    race = saved(tmp_path / "r")["questions"]
    assert all("prediction" not in q and "cannot answer" in q["error"] for q in race.values())
    assert summary["errors"]["sample_multiple_mcq_race"]["1"].startswith("RuntimeError: cannot answer")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["overall"]["failed"] == 3 and results["overall"]["answered"] == 6

    healthy, summary = run(bench, tmp_path / "r")
    assert len(healthy.calls) == 3  # only the failed ones are asked again
    assert summary["overall"]["failed"] == 0
    assert all("error" not in q for q in saved(tmp_path / "r")["questions"].values())


def test_batches_fall_back_to_one_at_a_time_when_a_batch_fails(bench, tmp_path):
    model = OracleModel(fail_on="How many of these images", batched=True)
    _, summary = run(bench, tmp_path / "r", model=model, batch_size=4)
    assert model.batches == [4, 2, 3]  # 6 one-image questions, then the 3 three-image ones (longer)
    assert summary["overall"]["answered"] == 6 and summary["overall"]["failed"] == 3
    batched = saved(tmp_path / "r", "sample_single_mcq_gender")
    _, _ = run(bench, tmp_path / "single")
    assert batched == saved(tmp_path / "single", "sample_single_mcq_gender")


def test_batches_keep_prompts_of_similar_length_together():
    lengths = [1, 1, 1, 1, 2, 3, 10, 11]
    assert batches(lengths, 3, lambda x: x) == [[1, 1, 1], [1], [2, 3], [10, 11]]
    assert batches(lengths, 1, lambda x: x) == [[x] for x in lengths]
    long = [1_500, 2_000, 2_200, 2_200]  # past 2,000 tokens a prompt is answered alone
    assert batches(long, 16, lambda x: x) == [[1_500, 2_000], [2_200], [2_200]]


def test_batches_never_exceed_the_token_budget():
    lengths = [100, 100, 110, 120, 130, 140, 150, 600, 700]
    groups = batches(lengths, 16, lambda x: x, max_tokens=450)
    assert groups == [[100, 100, 110], [120, 130, 140], [150], [600], [700]]  # 3 x 110 fits, 4 x 120 not
    assert all(len(group) * max(group) <= 450 for group in groups if len(group) > 1)
    assert [x for group in groups for x in group] == lengths  # one over the budget: a batch of its own


def test_many_failures_in_a_row_stop_the_run_with_answers_kept(bench, tmp_path):
    model = OracleModel(fail_on="\n")  # every prompt has one: every question fails
    with pytest.raises(FaceLLMError, match="2 questions in a row failed, the last with RuntimeError"):
        run(bench, tmp_path / "r", model=model, max_consecutive_failures=2)
    assert len(model.calls) == 2
    files = [saved(tmp_path / "r", path.stem) for path in (tmp_path / "r").glob("sample_*.json")]
    assert sum("error" in q for data in files for q in data["questions"].values()) == 2
    # every file is there from the start: a report on the stopped run counts what is left
    assert len(files) == 3
    assert score(load_results(tmp_path / "r"))["overall"]["pending"] == 7


def test_results_of_another_model_or_prompt_are_refused(bench, tmp_path):
    run(bench, tmp_path / "r", limit=1)
    for change in ({"model": "other"}, {"model_path": "path/b"}, {"prepend_text": True}):
        identity = {**IDENTITY, **change}
        ((name, value),) = change.items()
        said = re.escape(f"made with other settings ({name} {IDENTITY.get(name)!r} -> {value!r})")
        with pytest.raises(FaceLLMError, match="holds results of .* " + said):
            evaluate(OracleModel, identity, bench, tmp_path / "r", progress=False)


def test_corrupt_results_file_is_named(bench, tmp_path):
    run(bench, tmp_path / "r", limit=1)
    (tmp_path / "r" / "sample_single_mcq_age.json").write_text("{torn")
    with pytest.raises(FaceLLMError, match=r"sample_single_mcq_age\.json: corrupt JSON"):
        run(bench, tmp_path / "r")


def test_results_of_other_questions_are_refused(bench, tmp_path):
    run(bench, tmp_path / "r", limit=1)
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    data["questions"]["1"]["question_text"] = "Something else?"
    (bench / "sample_single_mcq_age.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=r"question 1 is not the benchmark's question 1"):
        run(bench, tmp_path / "r")


def test_results_files_get_ordinary_permissions(bench, tmp_path):
    run(bench, tmp_path / "r", limit=1)
    mode = (tmp_path / "r" / "results.txt").stat().st_mode & 0o777
    assert mode & 0o044  # readable by group/others under the usual umask, unlike mkstemp's 0600


def test_missing_image_stops_before_the_model_is_loaded(bench, tmp_path):
    (bench / "images" / "sample_single_mcq_age" / "question_2.png").unlink()
    loaded = []
    with pytest.raises(FaceLLMError, match=r"question 2: image .* not found"):
        evaluate(lambda: loaded.append(1), IDENTITY, bench, tmp_path / "r", progress=False)
    assert loaded == []


def evaluate_main(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """vlmeval/evaluate.py in this process: (exit code, stderr lines)."""
    script = import_file(REPO / "vlmeval" / "evaluate.py", "facellm_vlmeval_evaluate_script")
    monkeypatch.setattr(sys, "argv", ["vlmeval/evaluate.py", "--no-progress", *args])
    with pytest.raises(SystemExit) as stopped:
        run_cli(script.main)
    return stopped.value.code, capsys.readouterr().err.splitlines()


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    ("results", "same"),
    [
        ("{bench}/../{name}", True),  # the same folder, written another way
        ("{link}", True),  # a symbolic link to it
        ("{bench}/results", False),
        ("{link}/images/r", False),
    ],
)
@pytest.mark.parametrize("merging", [False, True])
def test_results_folder_in_the_benchmark_folder_is_refused(
    bench, tmp_path, monkeypatch, capsys, results, same, merging
):
    link = tmp_path / "link"
    link.symlink_to(bench, target_is_directory=True)
    results = results.format(bench=bench, name=bench.name, link=link)
    before = snapshot(bench)
    # an unknown model: had the check come after the plug-in's registration, this would be the error
    args = ["--model", "NoSuchModel", "--benchmark-dir", str(bench), "--results-dir", results]
    code, errors = evaluate_main(monkeypatch, capsys, *args, *(["--merge"] if merging else []))
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    assert f"results folder {results} is" in errors[0] and f"benchmark folder {bench}" in errors[0]
    assert ("is the benchmark folder" if same else "is inside the benchmark folder") in errors[0]
    assert snapshot(bench) == before


def test_evaluate_and_merge_refuse_the_benchmark_folder_as_results_folder(bench):
    before, loaded = snapshot(bench), []
    with pytest.raises(FaceLLMError, match=r"is the benchmark folder .*would overwrite the question files"):
        evaluate(lambda: loaded.append(1), IDENTITY, bench, bench / "images" / "..", progress=False)
    with pytest.raises(FaceLLMError, match=r"is inside the benchmark folder"):
        merge(bench, bench / "shards")
    assert loaded == [] and snapshot(bench) == before


def test_non_image_file_stops_before_the_model_is_loaded(bench, tmp_path):
    image = bench / "images" / "sample_single_mcq_age" / "question_2.png"
    image.write_text("not an image")
    loaded = []
    with pytest.raises(FaceLLMError) as raised:
        evaluate(lambda: loaded.append(1), IDENTITY, bench, tmp_path / "r", progress=False)
    assert str(raised.value) == (
        f"{bench / 'sample_single_mcq_age.json'}: question 2: image "
        "images/sample_single_mcq_age/question_2.png is not an image (its content is in no image format)"
    )
    assert loaded == [] and not (tmp_path / "r").exists()


def test_image_path_naming_another_kind_of_file_is_an_error_line(bench, tmp_path, monkeypatch, capsys):
    """A path to a file VLMEvalKit would not pass as an image (a bare AssertionError per question before)."""
    (bench / "images" / "notes.txt").write_text("a face")
    task = bench / "sample_single_mcq_gender.json"
    data = json.loads(task.read_text())
    data["questions"]["3"]["image_paths"] = ["images/notes.txt"]
    task.write_text(json.dumps(data))
    code, errors = evaluate_main(
        monkeypatch, capsys, "--benchmark-dir", str(bench), "--results-dir", str(tmp_path / "r")
    )
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {task}: question 3: image images/notes.txt is not an image file")
    assert "AssertionError" not in errors[0] and not (tmp_path / "r").exists()


def test_shards_split_the_questions_and_merge_to_the_unsharded_files(bench, tmp_path):
    run(bench, tmp_path / "whole")
    models = []
    for index in range(3):
        model, summary = run(bench, tmp_path / "sharded", shard=Shard(index, 3))
        models.append(model)
        assert summary["merged"] == (index == 2)  # the shard that completes the set merges
        if index < 2:
            assert not (tmp_path / "sharded" / "sample_single_mcq_age.json").exists()
    assert [len(m.calls) for m in models] == [3, 3, 3]
    answered = [
        {
            (path.stem, n)
            for path in folder.glob("sample_*.json")
            for n, q in saved(folder, path.stem)["questions"].items()
            if "prediction" in q
        }
        for folder in sorted((tmp_path / "sharded" / "shards").iterdir())
    ]
    assert [len(found) for found in answered] == [3, 3, 3] and len(set().union(*answered)) == 9
    for name in ("sample_single_mcq_age", "sample_single_mcq_gender", "sample_multiple_mcq_race"):
        assert (tmp_path / "sharded" / f"{name}.json").read_bytes() == (
            tmp_path / "whole" / f"{name}.json"
        ).read_bytes()
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    sharded = json.loads((tmp_path / "sharded" / "results.json").read_text())
    assert whole == sharded
    shard_file = saved(tmp_path / "sharded" / "shards" / "1-of-3", "sample_single_mcq_age")
    assert sum("prediction" in q for q in shard_file["questions"].values()) == 1  # positions 1, 4, 7


def test_merge_refuses_until_every_shard_has_run(bench, tmp_path):
    run(bench, tmp_path / "r", shard=Shard(0, 2))
    with pytest.raises(FaceLLMError, match=r"questions not answered yet .*shards 1/2"):
        merge(bench, tmp_path / "r")
    run(bench, tmp_path / "r", shard=Shard(1, 2))
    summary = merge(bench, tmp_path / "r")
    assert summary["overall"]["answered"] == 9
    model, _ = run(bench, tmp_path / "r", shard=Shard(0, 3))  # another split: everything is answered
    assert model.calls == []
    with pytest.raises(FaceLLMError, match="not a results folder"):
        merge(bench, tmp_path / "elsewhere")
    run(bench, tmp_path / "plain", limit=1)
    with pytest.raises(FaceLLMError, match="no shard folders"):
        merge(bench, tmp_path / "plain")


def test_an_unsharded_rerun_takes_over_the_answers_of_shards(bench, tmp_path):
    run(bench, tmp_path / "r", shard=Shard(0, 2))
    model, summary = run(bench, tmp_path / "r")
    assert len(model.calls) == 4 and summary["overall"]["answered"] == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [("3/3", "I must be 0 to N-1"), ("1-3", "expected I/N"), ("a/b", "expected I/N"), ("0/0", "I must be")],
)
def test_shard_spec_is_checked(text, message):
    with pytest.raises(FaceLLMError, match=message):
        Shard.parse(text)


def test_shard_from_torchrun_environment():
    assert Shard.from_environment({"RANK": "2", "WORLD_SIZE": "4"}) == Shard(2, 4)
    assert Shard.from_environment({}) is None
    assert Shard.from_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    with pytest.raises(FaceLLMError, match="RANK 5 is not between 0 and"):
        Shard.from_environment({"RANK": "5", "WORLD_SIZE": "4"})


def test_blank_images_replace_every_image_by_a_grey_one_of_its_size(bench, tmp_path):
    from PIL import Image

    model = OracleModel()
    results = tmp_path / "blank"
    run(bench, results, model, blank_images=True)
    for message in model.calls:
        for part in (p for p in message if p["type"] == "image"):
            path = part["value"]
            assert path.startswith(str(results / "blank-images"))
            with Image.open(path) as image:
                assert image.size == (224, 224) and image.getextrema() == ((128, 128),) * 3
    # the same model with the images: its messages name the benchmark's files instead
    seen = OracleModel()
    run(bench, tmp_path / "normal", seen)
    assert all(str(bench) in p["value"] for m in seen.calls for p in m if p["type"] == "image")


def test_blank_image_answers_are_kept_apart_from_real_ones(bench, tmp_path):
    results = tmp_path / "results"
    run(bench, results)
    blank = {**IDENTITY, "blank_images": True}  # what evaluate.py --blank-images records
    with pytest.raises(FaceLLMError, match="blank_images"):
        evaluate(OracleModel, blank, bench, results, progress=False, blank_images=True)


def cannot_load():
    raise FaceLLMError("model path 'wrong/path' does not exist")  # what a mistyped --model-path raises


WRONG = {**IDENTITY, "model_path": "wrong/path"}


def errors_in(folder):
    return [
        q["error"]
        for path in folder.glob("sample_*.json")
        for q in saved(folder, path.stem)["questions"].values()
        if "error" in q
    ]


def test_a_run_whose_model_cannot_be_loaded_leaves_the_folder_to_the_corrected_one(bench, tmp_path):
    with pytest.raises(FaceLLMError, match="does not exist"):
        evaluate(cannot_load, WRONG, bench, tmp_path / "r", progress=False)
    model, summary = run(bench, tmp_path / "r")
    assert len(model.calls) == 9 and summary["overall"]["answered"] == 9
    assert json.loads((tmp_path / "r" / "run.json").read_text()) == IDENTITY


def test_a_run_whose_every_question_failed_leaves_the_folder_to_another(bench, tmp_path):
    results = tmp_path / "r"
    failing = OracleModel(fail_on="\n")  # every prompt has one
    summary = evaluate(lambda: failing, WRONG, bench, results, progress=False)
    assert summary["overall"]["failed"] == 9 and len(errors_in(results)) == 9
    # the corrected run answers half: the failed run's errors are not taken for its own
    model, summary = run(bench, results, shard=Shard(0, 2))
    assert len(model.calls) == 5 and not summary["merged"]
    assert errors_in(results) == [] and not (results / "results.json").exists()
    model, summary = run(bench, results, shard=Shard(1, 2))
    assert len(model.calls) == 4 and summary["merged"]
    scored = json.loads((results / "results.json").read_text())
    assert scored["overall"]["answered"] == 9 and scored["model_path"] == IDENTITY["model_path"]


def test_answers_of_one_run_refuse_another_in_one_line(bench, tmp_path):
    run(bench, tmp_path / "r", limit=1)
    other = {**IDENTITY, "max_new_tokens": 16}
    with pytest.raises(FaceLLMError) as refused:
        evaluate(OracleModel, other, bench, tmp_path / "r", progress=False)
    assert str(refused.value) == (
        f"{tmp_path / 'r'}: holds results of 'oracle' made with other settings (max_new_tokens 8 -> 16); "
        "use another --results-dir, delete the folder, or rerun with the old settings to resume"
    )
    # answers kept in a shard folder only claim the whole results folder too
    run(bench, tmp_path / "sharded", shard=Shard(0, 2))
    for shard in (None, Shard(1, 2), Shard(0, 2)):
        with pytest.raises(
            FaceLLMError, match=r"sharded: holds results of 'oracle' .*max_new_tokens 8 -> 16"
        ):
            evaluate(OracleModel, other, bench, tmp_path / "sharded", progress=False, shard=shard)
    assert json.loads((tmp_path / "sharded" / "run.json").read_text()) == IDENTITY


def test_shards_of_a_run_that_answered_nothing_are_taken_over(bench, tmp_path):
    results = tmp_path / "r"
    with pytest.raises(FaceLLMError, match="does not exist"):
        evaluate(cannot_load, WRONG, bench, results, progress=False, shard=Shard(0, 2))
    failing = OracleModel(fail_on="\n")
    evaluate(lambda: failing, WRONG, bench, results, progress=False, shard=Shard(1, 2))
    models = [run(bench, results, shard=Shard(index, 2))[0] for index in range(2)]
    assert [len(m.calls) for m in models] == [5, 4]
    assert merge(bench, results)["overall"] == {"questions": 9, "answered": 9, "failed": 0, "pending": 0}
    for folder in (results, *sorted((results / "shards").iterdir())):
        assert json.loads((folder / "run.json").read_text()) == IDENTITY
    assert errors_in(results / "shards" / "1-of-2") == []


@pytest.mark.parametrize("script", ["evaluate", "aggregate_results"])
def test_flags_take_both_spellings_hyphens_first_and_are_never_abbreviated(script, tmp_path, capsys):
    from tests.support import run_main

    main = import_file(REPO / "vlmeval" / f"{script}.py", f"facellm_vlmeval_{script}_script").main
    shown = run_main(main, ["--help"], capsys)
    assert shown.returncode == 0, shown.stderr
    pairs = re.findall(r"(--[a-z-]+)(?: [A-Z_]+)?, (--[a-z_]+)", shown.stdout)
    assert pairs and all(hyphens == underscores.replace("_", "-") for hyphens, underscores in pairs)
    assert set(re.findall(r"--[a-z]+_[a-z_]+", shown.stdout)) == {underscores for _, underscores in pairs}
    refused = run_main(main, ["--results", str(tmp_path)], capsys)  # a prefix of --results-dir
    assert refused.returncode == 2 and "unrecognized arguments: --results" in refused.stderr, refused.stderr
    before = ["--benchmark-dir", str(tmp_path)] if script == "evaluate" else []  # results inside: refused
    for flag in ("--results-dir", "--results_dir"):  # taken either way: the folder's own error, not usage
        given = run_main(main, [*before, flag, str(tmp_path / "none")], capsys)
        assert given.returncode != 0 and "usage:" not in given.stderr, given.stderr
        assert str(tmp_path / "none") in given.stderr and "results folder" in given.stderr, given.stderr


@pytest.fixture
def no_vlmevalkit(monkeypatch):
    """evaluate.py's script module, where registering the plug-in (importing VLMEvalKit) fails the test."""
    script = import_file(REPO / "vlmeval" / "evaluate.py", "facellm_vlmeval_evaluate_script")
    monkeypatch.setattr(script, "register_plugin", lambda: pytest.fail("VLMEvalKit was imported"))
    return script


def test_a_misspelt_name_of_ours_is_refused_before_vlmevalkit_is_imported(
    bench, no_vlmevalkit, monkeypatch, capsys
):
    for name, guess in (
        ("FaceLLM-tin", "FaceLLM-tiny"),
        ("facellm-8b", "FaceLLM-8B"),
        ("InternVL3-1B-HF", None),
    ):
        code, errors = evaluate_main(monkeypatch, capsys, "--model", name, "--benchmark-dir", str(bench))
        assert code == 2 and len(errors) == 1, errors
        assert errors[0].startswith(f"error: unknown model '{name}'")
        assert f"did you mean {guess or 'InternVL3-1B-hf'}?" in errors[0]
        assert "FaceLLM-1B, FaceLLM-8B, FaceLLM-38B, InternVL3-1B-hf" in errors[0]  # the plug-in's names
    check_model_name("InternVL3-8B")  # VLMEvalKit's own (remote code): left to VLMEvalKit
    check_model_name("NoSuchModel")  # maybe one of VLMEvalKit's hundreds: checked once it is imported


def test_a_missing_local_model_is_named_with_how_to_make_it(
    bench, tmp_path, no_vlmevalkit, monkeypatch, capsys
):
    from facellm.eval import plugin

    tiny, export = tmp_path / "saves" / "tiny-internvl3", tmp_path / "saves" / "demo" / "FaceLLM-tiny"
    monkeypatch.setitem(plugin.REGISTERED_MODELS, "InternVL3-tiny", str(tiny))
    monkeypatch.setitem(plugin.REGISTERED_MODELS, "FaceLLM-tiny", str(export))
    results = ["--benchmark-dir", str(bench), "--results-dir", str(tmp_path / "r")]
    code, errors = evaluate_main(monkeypatch, capsys, "--model", "InternVL3-tiny", *results)
    assert code == 2 and errors == [
        f"error: {tiny}: no such model folder; build it with `python -m facellm.testing.tiny_model --out "
        f"{tiny}` (or `make demo`)"
    ]
    code, errors = evaluate_main(monkeypatch, capsys, "--model", "FaceLLM-tiny", *results)
    assert code == 2 and errors[0].startswith(
        f"error: {export}: no such model folder; make it with `make demo`"
    )
    path = ["--model-path", "saves/export/FaceLLM-1B"]
    for name in ("FaceLLM-1B", "NoSuchModel"):  # any model class: a path that can only be a folder
        code, errors = evaluate_main(monkeypatch, capsys, "--model", name, *path, *results)
        assert code == 2 and errors == [
            "error: saves/export/FaceLLM-1B: no such model folder; export one with ./export.sh (or pass a "
            "hub id ORG/NAME)"
        ]
    assert not (tmp_path / "r").exists()


class StoppedModel(OracleModel):
    """Stopped while answering its question number AT: by Ctrl-C, or by SIGTERM sent to this process."""

    def __init__(self, at, sigterm=False):
        super().__init__()
        self.at, self.sigterm = at, sigterm

    def generate_inner(self, message, dataset=None):
        if len(self.calls) + 1 == self.at:
            if not self.sigterm:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # never over: the handler raises here as soon as the signal arrives
        return super().generate_inner(message, dataset)


def test_ctrl_c_says_what_is_saved_and_the_same_run_resumes(bench, tmp_path):
    results = tmp_path / "r"
    stopped = None
    try:  # caught here, not by pytest.raises: a bare KeyboardInterrupt would end the whole session
        run(bench, results, model=StoppedModel(at=4))
    except KeyboardInterrupt as interrupt:
        stopped = interrupt
    assert isinstance(stopped, Interrupted) and stopped.code == 130
    assert str(stopped) == (
        f"3 of 9 questions answered so far are saved in {results}; the same command resumes"
    )
    saved_answers = sum(
        "prediction" in q
        for p in results.glob("sample_*.json")
        for q in saved(results, p.stem)["questions"].values()
    )
    assert saved_answers == 3
    model, summary = run(bench, results)
    assert len(model.calls) == 6 and summary["overall"]["answered"] == 9


def test_sigterm_stops_evaluate_py_with_143_and_the_resume_hint(bench, tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    script = import_file(REPO / "vlmeval" / "evaluate.py", "facellm_vlmeval_evaluate_script")
    model = StoppedModel(at=3, sigterm=True)
    registry = SimpleNamespace(supported_VLM={"FaceLLM-1B": lambda **options: model})
    monkeypatch.setattr(script, "register_plugin", lambda: registry)

    def unhandled(*_):  # what the test gets instead of the default action, which would end pytest itself
        raise AssertionError("SIGTERM reached the handler evaluate.py should have replaced")

    before = signal.signal(signal.SIGTERM, unhandled)
    results = tmp_path / "r"
    try:
        code, errors = evaluate_main(
            monkeypatch, capsys, "--benchmark-dir", str(bench), "--results-dir", str(results)
        )
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and errors == [
        f"interrupted; 2 of 9 questions answered so far are saved in {results}; the same command resumes"
    ]
