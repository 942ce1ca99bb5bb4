import json
import shutil

import pytest

from facellm.common.cli import FaceLLMError
from facellm.eval.facexbench import load_task
from facellm.eval.scoring import (
    CATEGORIES,
    PUBLISHED_CATEGORIES,
    PUBLISHED_OVERALL,
    comparison_figure,
    load_results,
    plot,
    report,
    score,
    text,
)
from facellm.testing.sample_benchmark import build
from tests.support import SAMPLE_FACES, assert_one_line_error, run_command

IDENTITY = {"model": "FaceLLM-1B", "model_path": "somewhere", "prepend_text": False}
QUESTIONS = 4 * 3


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build(SAMPLE_FACES, tmp_path_factory.mktemp("fxb"), per_task=4)


@pytest.fixture
def results(bench, tmp_path):
    """A results folder. Gender: all right. Age: right, wrong, unparsed, failed. Race: 2 right, 2 pending."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(IDENTITY))
    for path in bench.glob("*.json"):
        data = json.loads(path.read_text())
        for number, question in data["questions"].items():
            right = question["correct_answer_option"]
            wrong = "A" if right != "A" else "B"
            if path.stem == "sample_single_mcq_gender":
                question["prediction"] = f"The answer is {right}"
            elif path.stem == "sample_single_mcq_age":
                outcomes = {
                    "1": {"prediction": f"({right})"}, "2": {"prediction": wrong},
                    "3": {"prediction": "I cannot tell"}, "4": {"error": "RuntimeError: CUDA out of memory"},
                }  # fmt: skip
                question.update(outcomes[number])
            elif number in ("1", "2"):
                question["prediction"] = str(question["options"][ord(right) - ord("A")])  # the option's text
        (folder / path.name).write_text(json.dumps(data))
    return folder


def test_counts_and_accuracy_per_group(results):
    scores = score(load_results(results))
    overall = scores["overall"]
    assert overall == {
        "questions": QUESTIONS, "answered": 9, "failed": 1, "pending": 2, "unparsed": 1, "correct": 7,
        "accuracy": 70.0,  # 7 correct of 10 scored (answered + failed); pending left out
    }  # fmt: skip
    assert scores["files"]["sample_single_mcq_age"]["accuracy"] == 25.0
    assert scores["files"]["sample_multiple_mcq_race"] == {
        "questions": 4, "answered": 2, "failed": 0, "pending": 2, "unparsed": 0, "correct": 2,
        "accuracy": 100.0,
    }  # fmt: skip
    assert set(scores["categories"]) == {"Bias & Fairness"}
    assert set(scores["tasks"]) == {f"Bias & Fairness / {t}" for t in ("age", "gender", "race")}
    assert scores["images"]["single image"]["questions"] == 8
    assert scores["images"]["multiple images"]["correct"] == 2
    age = scores["answers"]["sample_single_mcq_age"]
    assert [age[n]["status"] for n in "1234"] == ["answered", "answered", "unparsed", "failed"]
    assert age["1"]["correct"] and not age["2"]["correct"]


def test_hedged_or_negated_answers_are_counted_unparsed_never_credited(results):
    path = results / "sample_single_mcq_gender.json"
    data = json.loads(path.read_text())
    for question in data["questions"].values():
        right = question["correct_answer_option"]
        other = "A" if right != "A" else "B"
        question["prediction"] = f"The answer is {right} or {other}"
    data["questions"]["1"]["prediction"] = f"Not {data['questions']['1']['correct_answer_option']}"
    path.write_text(json.dumps(data))
    gender = score(load_results(results))["files"]["sample_single_mcq_gender"]
    assert gender == {
        "questions": 4, "answered": 4, "failed": 0, "pending": 0, "unparsed": 4, "correct": 0,
        "accuracy": 0.0,
    }  # fmt: skip


def test_questions_can_be_left_out(results):
    tasks = load_results(results)
    scores = score(tasks, {"sample_single_mcq_age": {"2", "3", "4"}, "sample_multiple_mcq_race": {"3"}})
    assert scores["overall"]["questions"] == QUESTIONS - 4
    assert scores["overall"]["accuracy"] == 100.0
    assert scores["answers"]["sample_single_mcq_age"]["2"]["status"] == "answered"  # still read, not counted


def test_report_with_contamination(results):
    tasks = load_results(results)
    found = {"overlaps": {"sample_single_mcq_age": {"2": [], "3": []}, "elsewhere": {"1": []}}, "source": "c"}
    data = report(tasks, IDENTITY, found)
    assert data["scope"] == "all questions" and data["overall"]["accuracy"] == 70.0
    assert data["files"]["sample_single_mcq_age"]["overlapping"] == 2
    assert data["contamination"]["overlapping_questions"] == {"sample_single_mcq_age": ["2", "3"]}
    assert data["contamination"]["overall_without_overlap"]["accuracy"] == 87.5  # 7 of 8
    clean = report(tasks, IDENTITY, found, exclude_overlapping=True)
    assert clean["overall"]["accuracy"] == 87.5 and clean["overall"]["questions"] == QUESTIONS - 2
    assert clean["contamination"]["overall_all_questions"]["accuracy"] == 70.0
    assert "questions without training-image overlap" in text(clean)
    with pytest.raises(FaceLLMError, match="needs a contamination report"):
        report(tasks, IDENTITY, None, exclude_overlapping=True)


def test_text_report_says_what_is_incomplete_and_compares_with_the_paper(results):
    data = report(load_results(results), IDENTITY)
    report_text = text(data)
    assert "INCOMPLETE: 2 of 12 questions not answered yet" in report_text
    assert "1 questions failed" in report_text
    assert "published FaceLLM-1B (FaceLLM paper) vs this run" in report_text
    assert "Bias & Fairness        40.67   70.00" in report_text
    assert data["published"]["overall"]["FaceLLM-1B"] == 38.86


def test_published_numbers_agree_with_each_other():
    """The per-category figures, weighted by the categories' question counts, give the overall ones."""
    counts = dict(zip(CATEGORIES.values(), (1500, 800, 700, 800, 1100, 100), strict=True))
    for model, categories in PUBLISHED_CATEGORIES.items():
        weighted = sum(categories[c] * n for c, n in counts.items()) / 5000
        assert weighted == pytest.approx(PUBLISHED_OVERALL[model], abs=0.01), model


def test_plot_is_a_png(results, tmp_path):
    for data in (None, report(load_results(results), IDENTITY)):
        path = plot(tmp_path / "plots" / "p.png", data)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left


def written_at_this_run(data):
    """The text written at each of this run's bars in the per-category panel, in category order."""
    import matplotlib.pyplot as plt

    figure = comparison_figure(data)
    panel = figure.axes[0]
    mine = next(bars for bars in panel.containers if bars.get_label() == f"{data['model']} (this run)")
    texts = {round(text.get_position()[0], 6): text.get_text() for text in panel.texts}
    plt.close(figure)
    return [texts.get(round(bar.get_x() + bar.get_width() / 2, 6)) for bar in mine]


def test_comparison_plot_writes_a_zero_score_and_marks_categories_without_data(results):
    for path in results.glob("sample_*.json"):
        data = json.loads(path.read_text())
        for question in data["questions"].values():
            question.pop("error", None)
            question["prediction"] = "A" if question["correct_answer_option"] != "A" else "B"
        path.write_text(json.dumps(data))
    data = report(load_results(results), IDENTITY)
    assert data["overall"]["accuracy"] == 0.0 and set(data["categories"]) == {"Bias & Fairness"}
    # Overall and Bias & Fairness score 0 (a bar of no height); the five other categories have no question
    assert written_at_this_run(data) == ["0.0", "0.0", "n/a", "n/a", "n/a", "n/a", "n/a"]


def test_comparison_plot_writes_this_run_values_and_nothing_on_the_published_bars(results):
    import matplotlib.pyplot as plt

    data = report(load_results(results), IDENTITY)
    assert written_at_this_run(data) == ["70.0", "70.0", *["n/a"] * 5]
    figure = comparison_figure(None)
    assert list(figure.axes[0].texts) == []
    plt.close(figure)


def aggregate(*args):
    return run_command("python", "vlmeval/aggregate_results.py", *args)


def test_aggregate_cli(results, tmp_path):
    parent = tmp_path / "all"
    parent.mkdir()
    shutil.move(results, parent / "FaceLLM-1B")
    done = aggregate("--results_dir", str(parent), "--model", "FaceLLM-1B", "--plot", str(tmp_path / "p.png"))
    assert done.returncode == 0, done.stderr
    folder = parent / "FaceLLM-1B"
    assert (folder / "results.txt").read_text() in done.stdout
    assert json.loads((folder / "results.json").read_text())["overall"]["correct"] == 7
    assert (tmp_path / "p.png").is_file() and not (folder / "facexbench_comparison.png").exists()
    # the results files are read, never rewritten
    assert load_task(folder / "sample_single_mcq_age.json").questions["3"]["prediction"] == "I cannot tell"

    other = aggregate("--results_dir", str(folder), "--model", "FaceLLM-8B", "--no-plot")
    assert_one_line_error(other, str(folder), "holds results of 'FaceLLM-1B', not of 'FaceLLM-8B'")
    empty = aggregate("--results_dir", str(tmp_path))
    assert_one_line_error(empty, str(tmp_path), "no FaceXBench results files")


def test_aggregate_cli_on_results_of_the_authors_script(results, tmp_path):
    (results / "run.json").unlink()  # their evaluate.py writes only the question files
    (results / "contamination.json").write_text(
        json.dumps({"overlaps": {"sample_single_mcq_gender": {"1": []}}})
    )
    done = aggregate(
        "--results_dir", str(results), "--model", "SomeVLM",
        "--contamination", str(results / "contamination.json"), "--exclude-contaminated", "--no-plot",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads((results / "results.json").read_text())
    assert data["model"] == "SomeVLM" and data["overall"]["questions"] == QUESTIONS - 1


def test_aggregate_cli_points_at_unmerged_shards(tmp_path):
    (tmp_path / "shards" / "0-of-2").mkdir(parents=True)
    result = aggregate("--results_dir", str(tmp_path))
    assert_one_line_error(result, "merge its shards first", "--merge")
