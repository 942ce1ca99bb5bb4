import json

import pytest
from vlmeval.vlm.base import BaseModel

from facellm.cli import FaceLLMError
from facellm.evaluation import evaluate
from facellm.sample_benchmark import build
from tests.conftest import SAMPLE_FACES


class OracleModel(BaseModel):
    """A VLMEvalKit model that reads the right answer from the image count (for testing the runner only):
    it answers B to single-image questions and 'The answer is (C)' to multi-image ones, and logs each call."""

    INTERLEAVE = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def generate_inner(self, message, dataset=None):
        self.calls.append(message)
        images = [m for m in message if m["type"] == "image"]
        return "B" if len(images) == 1 else "The answer is (C)"


@pytest.fixture
def bench(tmp_path):
    return build(SAMPLE_FACES, tmp_path / "fxb", per_task=3)


def test_runner_answers_every_question_and_writes_results_format(bench, tmp_path):
    model = OracleModel()
    summary = evaluate(lambda: model, "oracle", "oracle-path", bench, tmp_path / "results")
    assert len(model.calls) == 9
    saved = json.loads((tmp_path / "results" / "sample_multiple_mcq_race.json").read_text())
    assert all(q["prediction"] == "The answer is (C)" for q in saved["questions"].values())
    assert saved["category"] == "bias_fairness"
    expected = sum(
        q["correct_answer_option"] == ("B" if len(q["image_paths"]) == 1 else "C")
        for path in bench.glob("*.json")
        for q in json.loads(path.read_text())["questions"].values()
    )
    assert summary["overall"]["correct"] == expected
    assert "overall" in (tmp_path / "results" / "report.txt").read_text()


def test_rerun_asks_only_what_is_missing(bench, tmp_path):
    first = OracleModel()
    evaluate(lambda: first, "oracle", "oracle-path", bench, tmp_path / "r", limit=1)
    assert len(first.calls) == 3
    second = OracleModel()
    summary = evaluate(lambda: second, "oracle", "oracle-path", bench, tmp_path / "r")
    assert len(second.calls) == 6
    assert summary["overall"]["answered"] == 9
    third = OracleModel()
    evaluate(lambda: third, "oracle", "oracle-path", bench, tmp_path / "r")
    assert third.calls == []


def test_results_of_another_model_are_refused(bench, tmp_path):
    evaluate(OracleModel, "oracle", "path/a", bench, tmp_path / "r", limit=1)
    with pytest.raises(FaceLLMError, match=r"holds results of .*'oracle'.* not of .*'other'"):
        evaluate(OracleModel, "other", "path/a", bench, tmp_path / "r")
    with pytest.raises(FaceLLMError, match=r"holds results of .*path/a.* not of .*path/b"):
        evaluate(OracleModel, "oracle", "path/b", bench, tmp_path / "r")


def test_corrupt_results_file_is_named(bench, tmp_path):
    evaluate(OracleModel, "oracle", "p", bench, tmp_path / "r", limit=1)
    (tmp_path / "r" / "sample_single_mcq_age.json").write_text("{torn")
    with pytest.raises(FaceLLMError, match=r"sample_single_mcq_age\.json: corrupt JSON"):
        evaluate(OracleModel, "oracle", "p", bench, tmp_path / "r")


def test_results_files_get_ordinary_permissions(bench, tmp_path):
    evaluate(OracleModel, "oracle", "p", bench, tmp_path / "r", limit=1)
    mode = (tmp_path / "r" / "report.txt").stat().st_mode & 0o777
    assert mode & 0o044  # readable by group/others under the usual umask, unlike mkstemp's 0600


def test_missing_image_stops_before_the_model_is_loaded(bench, tmp_path):
    (bench / "images" / "sample_single_mcq_age" / "question_2.png").unlink()
    loaded = []
    with pytest.raises(FaceLLMError, match=r"question 2: image .* not found"):
        evaluate(lambda: loaded.append(1), "oracle", "p", bench, tmp_path / "r")
    assert loaded == []
