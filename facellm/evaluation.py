"""Running a VLMEvalKit model over a FaceXBench folder, with per-question resume, then scoring it.

Results follow the FaceXBench results format: `<results>/<task>.json` is the input question file with a
`prediction` added to every answered question, rewritten atomically after each answer, so an interrupted
run continues where it stopped. `report.txt` and `summary.json` hold the accuracy per task file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from facellm.cli import FaceLLMError
from facellm.facexbench import Task, image_files, load_benchmark, report_text, score, vlmeval_message
from facellm.files import read_json, write_json_atomic, write_text_atomic

RUN_FILE = "run.json"


def check_results_dir(results_dir: Path, identity: dict) -> None:
    """Refuse to mix the answers of two models (or two checkpoints of one) in one results folder."""
    run_file = results_dir / RUN_FILE
    if run_file.is_file():
        recorded = read_json(run_file)
        if recorded != identity:
            raise FaceLLMError(f"{results_dir}: holds results of {recorded}, not of {identity}")
    else:
        write_json_atomic(run_file, identity)


def load_predictions(results_dir: Path, tasks: list[Task]) -> dict[str, dict[str, str]]:
    predictions = {}
    for task in tasks:
        path = results_dir / f"{task.name}.json"
        done = {}
        if path.is_file():
            saved = read_json(path)
            questions = saved.get("questions") if isinstance(saved, dict) else None
            if not isinstance(questions, dict):
                raise FaceLLMError(f"{path}: not a FaceXBench results file (no 'questions' object)")
            done = {
                n: str(q["prediction"])
                for n, q in questions.items()
                if isinstance(q, dict) and "prediction" in q
            }
        predictions[task.name] = done
    return predictions


def _write_results(results_dir: Path, task: Task, done: dict[str, str]) -> None:
    questions = {n: ({**q, "prediction": done[n]} if n in done else q) for n, q in task.questions.items()}
    write_json_atomic(results_dir / f"{task.name}.json", {**task.header, "questions": questions})


def evaluate(
    make_model: Callable[[], object],
    model_name: str,
    model_path: str | None,
    benchmark_dir: Path,
    results_dir: Path,
    limit: int | None = None,
    prepend: bool = True,
) -> dict:
    """Answer every pending question (the first LIMIT of each file when given) and return the scores.
    MODEL_NAME and MODEL_PATH identify the model; a results folder only ever holds one model's answers."""
    tasks = load_benchmark(benchmark_dir)
    if limit is not None:
        for task in tasks:
            task.questions = dict(list(task.questions.items())[:limit])
    for task in tasks:  # every image is checked before any time is spent loading the model
        for number in task.questions:
            image_files(task, number, benchmark_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    check_results_dir(results_dir, {"model": model_name, "model_path": model_path})
    predictions = load_predictions(results_dir, tasks)
    pending = [(t, n) for t in tasks for n in t.questions if n not in predictions[t.name]]

    if pending:
        model = make_model()
        for task, number in tqdm(pending, desc=f"FaceXBench [{model_name}]", unit="question"):
            message = vlmeval_message(task, number, benchmark_dir, prepend)
            prediction = model.generate(message, dataset="FaceXBench")
            predictions[task.name][number] = "" if prediction is None else str(prediction)
            _write_results(results_dir, task, predictions[task.name])

    summary = score(tasks, predictions)
    summary["model"], summary["model_path"] = model_name, model_path
    write_json_atomic(results_dir / "summary.json", summary)
    write_text_atomic(results_dir / "report.txt", report_text(summary, model_name))
    return summary
