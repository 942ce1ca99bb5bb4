"""The VLMEvalKit plug-in on the real VLMEvalKit package and a real (tiny) InternVL3 model: registration, the
run.py routes, the batched path, the image guard, and FaceXBench end to end (CLI, SIGKILL resume, shards)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import vlmeval
import vlmeval.vlm
from vlmeval.config import supported_VLM
from vlmeval.vlm.base import BaseModel

from facellm.common.cli import FaceLLMError
from facellm.eval.plugin import REGISTERED_MODELS, import_file, register_plugin
from facellm.eval.results import Shard
from facellm.eval.runner import evaluate
from facellm.testing.noisy_model import noisy_copy
from facellm.testing.sample_benchmark import build, with_placeholder_images
from tests.support import REPO, SAMPLE_FACES, SHARED_FACEXBENCH, assert_one_line_error, run_main

TASKS = ("sample_single_mcq_age", "sample_single_mcq_gender", "sample_multiple_mcq_race")


@pytest.fixture(scope="module")
def noisy(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with large random weights: each question gets its own answer
    (facellm.testing.noisy_model)."""
    return noisy_copy(tiny_model, tmp_path_factory.getbasetemp() / "noisy-tiny")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return build(SAMPLE_FACES, tmp_path_factory.mktemp("fxb"), per_task=4)


@pytest.fixture(scope="module")
def facellm(noisy):
    """The default (released) protocol, in float32: batches are exact in float32 only."""
    register_plugin()
    return supported_VLM["FaceLLM-1B"](model_path=str(noisy), max_new_tokens=8, dtype="float32")


@pytest.fixture(scope="module")
def facellm_training(noisy):
    register_plugin()
    return supported_VLM["FaceLLM-1B"](model_path=str(noisy), max_new_tokens=8, protocol="training")


def identity(path, max_new_tokens=8):
    return {
        "model": "FaceLLM-1B",
        "model_path": str(path),
        "prepend_text": False,
        "max_new_tokens": max_new_tokens,
    }


def test_repo_folder_does_not_shadow_vlmevalkit():
    assert not (REPO / "vlmeval" / "__init__.py").exists()
    assert Path(vlmeval.__file__).parent != REPO / "vlmeval"
    assert "site-packages" in vlmeval.__file__


def test_registration_adds_models_and_class_without_patching():
    config = register_plugin()
    assert vlmeval.vlm.FaceLLM is config.FaceLLM
    assert issubclass(config.FaceLLM, BaseModel)
    assert set(config.FACELLM_MODELS) == {"FaceLLM-1B", "FaceLLM-8B", "FaceLLM-38B"}
    assert set(config.BASELINE_MODELS) == {f"InternVL3-{s}-hf" for s in ("1B", "2B", "8B", "14B", "38B")}
    for name, path in REGISTERED_MODELS.items():
        assert supported_VLM[name].func is config.FaceLLM
        assert supported_VLM[name].keywords["model_path"] == path
    assert supported_VLM["InternVL3-8B-hf"].keywords["model_path"] == "OpenGVLab/InternVL3-8B-hf"
    # none of VLMEvalKit's own entries is replaced, and none of its files is touched
    installed = Path(vlmeval.__file__).parent / "config.py"
    assert not any(f'"{name}"' in installed.read_text() for name in REGISTERED_MODELS)
    assert [n for n, e in supported_VLM.items() if getattr(e, "func", None) is config.FaceLLM] == list(
        REGISTERED_MODELS
    )
    assert register_plugin() is config  # registering twice changes nothing


def test_registration_refuses_a_folder_without_the_plugin(tmp_path):
    with pytest.raises(FaceLLMError, match="plug-in not found"):
        register_plugin(tmp_path)


def test_vlmevalkit_config_route_builds_the_class_by_name(noisy):
    from vlmeval.run import build_model_from_config

    register_plugin()
    config = {
        "by-class": {"class": "FaceLLM", "model_path": str(noisy), "max_new_tokens": 4},
        "FaceLLM-8B": {"model_path": str(noisy), "max_new_tokens": 4},  # a registered name, path overridden
    }
    for name in config:
        model = build_model_from_config(config, name)
        assert type(model).__name__ == "FaceLLM" and model.model_path == str(noisy)


def test_launcher_hands_over_to_vlmevalkit_run(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", sys.argv)
    # as when a script of the folder runs: its evaluate.py would shadow Hugging Face's `evaluate`
    monkeypatch.syspath_prepend(str(REPO / "vlmeval"))
    launcher = import_file(REPO / "vlmeval" / "run.py", "facellm_vlmeval_run")
    with pytest.raises(SystemExit) as done:
        launcher.run_vlmevalkit(["--help"])
    assert done.value.code == 0
    assert "--config" in capsys.readouterr().out
    assert all(Path(entry).resolve() != REPO / "vlmeval" for entry in sys.path if entry)


def test_vlmevalkit_run_py_config_route_end_to_end(noisy, tmp_path):
    """VLMEvalKit's own run.py, through our launcher: a registered name with its path overridden and the class
    named in a config file, on a local MCQ dataset (VLMEvalKit's custom-TSV route), inference only."""
    faces = sorted((SAMPLE_FACES / "fairface-img-margin025-trainval" / "val").glob("*.jpg"))[:3]
    with (tmp_path / "FaceLLMSample.tsv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "question", "A", "B", "C", "D", "answer", "image_path"])
        for index, face in enumerate(faces):
            writer.writerow([index, "Gender?", "Male", "Female", "Both", "None", "A", str(face)])
    config = {
        "model": {
            "FaceLLM-1B": {"model_path": str(noisy), "max_new_tokens": 4},
            "by-class": {"class": "FaceLLM", "model_path": str(noisy), "max_new_tokens": 4},
        },
        "data": {"FaceLLMSample": {"class": "CustomMCQDataset", "dataset": "FaceLLMSample"}},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "LMUData": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["python", "vlmeval/run.py", "--config", str(tmp_path / "config.json"), "--work-dir",
         str(tmp_path / "out"), "--mode", "infer"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas

    for name in ("FaceLLM-1B", "by-class"):
        predictions = pandas.read_excel(tmp_path / "out" / name / f"{name}_FaceLLMSample.xlsx")
        assert len(predictions) == 3 and predictions["prediction"].notna().all(), result.stderr[-3000:]


@pytest.mark.parametrize("protocol", ["released", "training"])
def test_batched_path_gives_the_one_at_a_time_answers(protocol, request, bench):
    from facellm.eval.facexbench import load_benchmark, vlmeval_message

    facellm = request.getfixturevalue("facellm" if protocol == "released" else "facellm_training")
    assert facellm.engine.protocol.name == protocol

    messages = [vlmeval_message(t, n, bench) for t in load_benchmark(bench) for n in t.questions]
    alone = [facellm.generate(m, dataset="MCQ") for m in messages]
    together = facellm.generate_batch(messages, dataset="MCQ")
    assert together == alone
    assert len(set(alone)) == len(alone)  # every question its own answer: nothing was swapped or dropped
    engine = facellm.engine
    import torch

    parts = [facellm_parts(m) for m in messages[:6]]
    with torch.inference_mode():
        batch = engine.model(**engine.encode(parts)).logits[:, -1]
        single = torch.cat([engine.model(**engine.encode(p)).logits[:, -1] for p in parts])
    assert (batch - single).abs().max().item() < 1e-4


def facellm_parts(message):
    from facellm.infer.model import Part

    return [Part(item["type"], item["value"]) for item in message]


def test_every_image_reaches_the_model_as_pixels(facellm, bench):
    """The no-image-as-text guard: FaceXBench images arrive as images (pixels and image tokens), and a path
    that would arrive as text is refused."""
    from facellm.eval.facexbench import load_task, vlmeval_message

    task = load_task(bench / "sample_multiple_mcq_race.json")
    message = vlmeval_message(task, "1", bench)
    inputs = facellm.engine.encode(facellm_parts(message))
    context = facellm.engine.processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    # the released protocol tiles each 224-px face in 3 x 3 of the tiny model's 56-px tiles plus a thumbnail
    assert inputs["pixel_values"].shape[0] == 3 * 10
    assert (inputs["input_ids"] == context).sum().item() == 3 * 10 * 4  # 4 tokens per tile in the tiny model
    relative = task.questions["1"]["image_paths"][0]
    with pytest.raises(FaceLLMError, match=r"image not found .*would reach the model as text"):
        facellm.generate([relative, "Who is this?"], dataset="MCQ")
    swapped = [message[1], message[0], *message[2:]]
    assert facellm.generate(swapped, dataset="MCQ") != facellm.generate(message, dataset="MCQ")


def test_an_image_item_that_is_no_image_file_is_named(facellm, bench, tmp_path):
    """VLMEvalKit refuses an image item whose path is a folder or a file of another type with a bare
    AssertionError; the plug-in names the file and the problem."""
    notes, unnamed, folder, fake = (tmp_path / name for name in ("notes.txt", "face", "faces.png", "x.png"))
    notes.write_text("a face")
    shutil.copy(bench / "images" / "sample_single_mcq_age" / "question_1.png", unnamed)
    folder.mkdir()
    fake.write_text("a face")
    cases = [
        (notes, "not an image file (text/plain, by its name)"),
        (unnamed, "not an image file (its name has no image suffix"),
        (folder, "not an image (a folder)"),
        (fake, "not an image"),  # VLMEvalKit passes it on; the model's image loader names it
    ]
    for path, problem in cases:
        message = [{"type": "image", "value": str(path)}, {"type": "text", "value": "Who is this?"}]
        with pytest.raises(FaceLLMError) as alone:
            facellm.generate(message, dataset="MCQ")
        with pytest.raises(FaceLLMError) as batched:
            facellm.generate_batch([message, message], dataset="MCQ")
        for raised in (alone, batched):
            assert str(raised.value).startswith(f"{path}: {problem}")


@pytest.mark.skipif(not SHARED_FACEXBENCH.is_dir(), reason="real FaceXBench question files not available")
def test_real_question_files_end_to_end_through_supported_vlm(facellm, noisy, tmp_path):
    """Real FaceXBench question files (single, multiple and no-image files, integer and 3-option questions,
    the tool-use context) with placeholder images, answered through supported_VLM in batches."""
    names = [
        "affectnet_multiple_mcq",
        "celeba_single_mcq",
        "tools_retrieval",
        "fairface_single_mcq_race_test",
    ]
    bench = with_placeholder_images(SHARED_FACEXBENCH, tmp_path / "fxb", names, limit=3)
    summary = evaluate(lambda: facellm, identity(noisy), bench, tmp_path / "r", batch_size=4, progress=False)
    assert summary["overall"] == {"questions": 12, "answered": 12, "failed": 0, "pending": 0}
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(results["images"]) == {"single image", "multiple images", "no image"}
    assert set(results["categories"]) == {"Face Analysis", "Face Tools Use", "Bias & Fairness"}
    for name in names:
        saved = json.loads((tmp_path / "r" / f"{name}.json").read_text())
        source = json.loads((SHARED_FACEXBENCH / f"{name}.json").read_text())
        assert {k: v for k, v in saved.items() if k != "questions"} == {
            k: v for k, v in source.items() if k != "questions"
        }
        for number, question in saved["questions"].items():
            assert isinstance(question.pop("prediction"), str)
            assert question == source["questions"][number]


def test_sharded_run_merges_to_the_unsharded_results(facellm, noisy, bench, tmp_path):
    whole = evaluate(lambda: facellm, identity(noisy), bench, tmp_path / "whole", progress=False)
    for index in (1, 0):
        evaluate(
            lambda: facellm, identity(noisy), bench, tmp_path / "sharded", shard=Shard(index, 2),
            batch_size=3, progress=False,
        )  # fmt: skip
    for name in TASKS:
        assert (tmp_path / "sharded" / f"{name}.json").read_bytes() == (
            tmp_path / "whole" / f"{name}.json"
        ).read_bytes()
    assert json.loads((tmp_path / "sharded" / "results.json").read_text()) == json.loads(
        (tmp_path / "whole" / "results.json").read_text()
    )
    assert whole["overall"]["answered"] == 12


def evaluate_cli(*args, capsys):
    """vlmeval/evaluate.py run in this process (its subprocess runs: the resume test below and the demo)."""
    script = import_file(REPO / "vlmeval" / "evaluate.py", "facellm_vlmeval_evaluate_script")
    return run_main(script.main, ["--no-progress", *args], capsys)


def answered(results: Path) -> int:
    count = 0
    for path in results.glob("sample_*.json"):
        try:
            count += sum("prediction" in q for q in json.loads(path.read_text())["questions"].values())
        except (OSError, ValueError):  # replaced while being read
            continue
    return count


def test_resume_after_sigkill_gives_the_uninterrupted_results(
    facellm, noisy, bench, tmp_path, monkeypatch, capsys
):
    # four copies of every file: enough questions that the kill lands in the middle of the run
    big = tmp_path / "big"
    shutil.copytree(bench, big)
    for name in TASKS:
        for copy in range(1, 4):
            shutil.copy(big / f"{name}.json", big / f"{name}_{copy}.json")
    results = tmp_path / "killed"
    args = [
        "--model-path",
        str(noisy),
        "--benchmark-dir",
        "big",
        "--results-dir",
        str(results),
        "--dtype",
        "float32",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["python", str(REPO / "vlmeval" / "evaluate.py"), "--max-new-tokens", "8", *args],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not answered(results) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < answered(results) < 48, "the kill should land while questions are left"

    monkeypatch.chdir(tmp_path)  # the resumed run: in this process, on the killed run's folder
    resumed = evaluate_cli("--max-new-tokens", "8", *args, capsys=capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "accuracy" in resumed.stdout
    evaluate(lambda: facellm, identity(noisy), big, tmp_path / "whole", progress=False)
    files = sorted(p.name for p in (tmp_path / "whole").glob("sample_*.json"))
    assert len(files) == 12
    for name in files:
        assert (results / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    killed = json.loads((results / "results.json").read_text())
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert killed["answers"] == whole["answers"] and killed["files"] == whole["files"]


def test_evaluate_cli_unknown_model(bench, capsys):
    """A name that is not the plug-in's is looked up in VLMEvalKit's supported_VLM, once the benchmark is
    checked; the error names the closest of its models and the plug-in's."""
    result = evaluate_cli("--model", "NoSuchModel", "--benchmark-dir", str(bench), capsys=capsys)
    assert_one_line_error(result, "unknown model 'NoSuchModel'", "FaceLLM's plug-in adds FaceLLM-1B")
    assert "did you mean" not in result.stderr
    result = evaluate_cli("--model", "Qwen2-VL-2B-Instruc", "--benchmark-dir", str(bench), capsys=capsys)
    assert_one_line_error(result, "not in VLMEvalKit's supported_VLM; did you mean Qwen2-VL-2B-Instruct")


def test_evaluate_cli_empty_benchmark_folder(tmp_path, capsys):
    result = evaluate_cli("--benchmark-dir", str(tmp_path), capsys=capsys)
    assert_one_line_error(result, str(tmp_path), "no FaceXBench question files")


def test_evaluate_cli_malformed_question(bench, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(bench, broken)
    data = json.loads((broken / "sample_single_mcq_age.json").read_text())
    del data["questions"]["3"]["correct_answer_option"]
    (broken / "sample_single_mcq_age.json").write_text(json.dumps(data))
    result = evaluate_cli("--benchmark-dir", str(broken), "--results-dir", str(tmp_path / "r"), capsys=capsys)
    assert_one_line_error(result, "sample_single_mcq_age.json: question 3 lacks correct_answer_option")
    assert not (tmp_path / "r").exists()


def test_evaluate_cli_missing_image_and_results_of_another_model(bench, tmp_path, capsys):
    results = tmp_path / "r"
    results.mkdir()
    (results / "run.json").write_text(json.dumps({"model": "FaceLLM-8B", "model_path": "x"}))
    answered = {"questions": {"1": {"prediction": "A"}}}  # a folder whose run answered nothing is taken over
    (results / "sample_single_mcq_age.json").write_text(json.dumps(answered))
    result = evaluate_cli("--benchmark-dir", str(bench), "--results-dir", str(results), capsys=capsys)
    assert_one_line_error(result, str(results), "holds results of", "FaceLLM-8B")
    (bench / "images" / "sample_single_mcq_age" / "question_2.png").rename(tmp_path / "away.png")
    try:
        result = evaluate_cli(
            "--benchmark-dir", str(bench), "--results-dir", str(tmp_path / "r2"), capsys=capsys
        )
        assert_one_line_error(
            result, "question 2: image images/sample_single_mcq_age/question_2.png not found"
        )
    finally:
        (tmp_path / "away.png").rename(bench / "images" / "sample_single_mcq_age" / "question_2.png")


def test_the_protocol_is_recorded_shown_and_never_mixed(noisy, bench, tmp_path, capsys):
    results = tmp_path / "training"
    common = ["--model-path", str(noisy), "--benchmark-dir", str(bench), "--limit", "1"]
    common += ["--max-new-tokens", "4", "--results-dir", str(results)]
    result = evaluate_cli("--protocol", "training", *common, capsys=capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((results / "run.json").read_text())
    assert (run["protocol"], run["dtype"]) == ("training", None)
    assert json.loads((results / "results.json").read_text())["settings"]["protocol"] == "training"
    text = (results / "results.txt").read_text()
    assert "protocol: training (as LLaMA-Factory trained:" in text
    assert "this run used the training protocol, they the released one" in text

    released = evaluate_cli(*common, capsys=capsys)  # the default protocol, into the training run's folder
    assert_one_line_error(
        released, str(results), "protocol 'training' -> 'released'", "dtype None -> 'bfloat16'"
    )
    other = evaluate_cli("--model", "InternVL3-tiny", "--protocol", "training", *common[2:], capsys=capsys)
    assert other.returncode != 0
    not_ours = evaluate_cli("--model", "Qwen2-VL-2B-Instruct", "--protocol", "training", capsys=capsys)
    assert not_ours.returncode == 2 and "--protocol applies to the plug-in's models" in not_ours.stderr


def test_batches_stay_within_the_token_budget(facellm, bench, tmp_path, monkeypatch):
    """Batches are sized by the prompt tokens the model will see (images as the tiles they make), padding
    included, never by question count alone."""
    from facellm.eval.facexbench import load_benchmark, vlmeval_message

    messages = [vlmeval_message(t, n, bench) for t in load_benchmark(bench) for n in t.questions]
    lengths = sorted(facellm.prompt_tokens(m) for m in messages)
    budget = 3 * lengths[0] + 10  # three one-image questions fit, four do not; a three-image one is alone
    shapes = []
    encode = facellm.engine.encode

    def recording(parts):
        inputs = encode(parts)
        shapes.append(tuple(inputs["input_ids"].shape))
        return inputs

    monkeypatch.setattr(facellm.engine, "encode", recording)
    evaluate(
        lambda: facellm, identity("noisy"), bench, tmp_path / "r", batch_size=16, progress=False,
        max_batch_tokens=budget,
    )  # fmt: skip
    assert sum(rows for rows, _ in shapes) == len(messages)  # every question in one batch, none retried
    assert max(rows for rows, _ in shapes) == 3
    assert all(rows * width <= budget for rows, width in shapes if rows > 1)
    assert lengths[-1] > budget / 2 and (1, lengths[-1]) in shapes  # the longest could share with nothing
