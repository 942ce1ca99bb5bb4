import json

import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.eval.facexbench import image_files, load_benchmark
from facellm.testing.sample_benchmark import build, with_placeholder_images
from tests.support import SAMPLE_FACES, SHARED_FACEXBENCH, assert_one_line_error, run_command


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return build(SAMPLE_FACES, tmp_path_factory.mktemp("fxb"), per_task=3)


def test_sample_benchmark_has_single_multiple_and_integer_option_questions(sample):
    tasks = {task.name: task for task in load_benchmark(sample)}
    assert {t.header["num_images"] for t in tasks.values()} == {"single", "multiple"}
    race = tasks["sample_multiple_mcq_race"]
    assert all(q["options"] == [0, 1, 2, 3] and len(q["image_paths"]) == 3 for q in race.questions.values())
    for task in tasks.values():  # every answer key is right about the options it names
        for question in task.questions.values():
            assert question["options"][ord(question["correct_answer_option"]) - 65] == question["answer"]


def test_placeholder_images_for_question_files(sample, tmp_path):
    names = ["sample_multiple_mcq_race", "sample_single_mcq_age"]
    bench = with_placeholder_images(sample, tmp_path / "copy", names, limit=2)
    tasks = load_benchmark(bench)
    assert [t.name for t in tasks] == sorted(names)
    for task in tasks:
        source = json.loads((sample / f"{task.name}.json").read_text())
        assert task.questions == dict(list(source["questions"].items())[:2])
        for number in task.questions:
            for path in image_files(task, number, bench):
                with Image.open(path) as image:
                    assert image.size == (224, 224)
    # the images of one question are different faces
    race = image_files(tasks[0], "1", bench)
    pixels = [Image.open(p).tobytes() for p in race]
    assert len(set(pixels)) == len(pixels)


def test_placeholder_images_never_leave_the_benchmark_folder(sample, tmp_path):
    data = json.loads((sample / "sample_single_mcq_age.json").read_text())
    data["questions"]["1"]["image_paths"] = ["../../outside.png"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "evil.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=r"evil\.json"):
        with_placeholder_images(tmp_path / "src", tmp_path / "out", ["evil"])
    assert not (tmp_path / "outside.png").exists()


@pytest.mark.skipif(not SHARED_FACEXBENCH.is_dir(), reason="real FaceXBench question files not available")
def test_placeholder_images_for_real_facexbench_files(tmp_path):
    names = ["agedb30_multiple_mcq", "jhucrowd_single_mcq_range_test", "tools_retrieval"]
    bench = with_placeholder_images(SHARED_FACEXBENCH, tmp_path, names, limit=5)
    tasks = load_benchmark(bench)
    assert sum(len(t.questions) for t in tasks) == 15
    images = [p for t in tasks for n in t.questions for p in image_files(t, n, bench)]
    assert len(images) == len(list((bench / "images").rglob("*.png"))) > 15  # agedb30 has 4-6 per question


def test_cli_copies_question_files_with_placeholders(sample, tmp_path):
    result = run_command(
        "python", "-m", "facellm.testing.sample_benchmark", "--questions-from", str(sample), "--files",
        "sample_single_mcq_gender", "--per-task", "2", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tasks = load_benchmark(tmp_path / "out" / "benchmark")
    assert [t.name for t in tasks] == ["sample_single_mcq_gender"] and len(tasks[0].questions) == 2
    missing = run_command(
        "python", "-m", "facellm.testing.sample_benchmark", "--questions-from", str(tmp_path / "none")
    )
    assert_one_line_error(missing, "no question files")
