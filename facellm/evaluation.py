"""Running a VLMEvalKit model over a FaceXBench folder, with per-question resume, then scoring it.

Results follow the FaceXBench results format: `<results>/<task>.json` is the input question file with a
`prediction` added to every answered question, rewritten atomically after each answer, so an interrupted
run continues where it stopped. `report.txt` and `summary.json` hold the accuracy per task file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from facellm.cli import FaceLLMError
from facellm.facexbench import Task, image_files, load_benchmark, report_text, score, vlmeval_message
from facellm.sharegpt import write_json_atomic

RUN_FILE = "run.json"


def check_results_dir(results_dir: Path, model_name: str) -> None:
    """Refuse to mix the answers of two models in one results folder."""
    run_file = results_dir / RUN_FILE
    if run_file.is_file():
        recorded = json.loads(run_file.read_text(encoding="utf-8")).get("model")
        if recorded != model_name:
            raise FaceLLMError(f"{results_dir}: holds results of model {recorded!r}, not {model_name!r}")
    else:
        write_json_atomic(run_file, {"model": model_name})


def load_predictions(results_dir: Path, tasks: list[Task]) -> dict[str, dict[str, str]]:
    predictions = {}
    for task in tasks:
        path = results_dir / f"{task.name}.json"
        done = {}
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            done = {n: q["prediction"] for n, q in saved.get("questions", {}).items() if "prediction" in q}
        predictions[task.name] = done
    return predictions


def _write_results(results_dir: Path, task: Task, done: dict[str, str]) -> None:
    questions = {n: ({**q, "prediction": done[n]} if n in done else q) for n, q in task.questions.items()}
    write_json_atomic(results_dir / f"{task.name}.json", {**task.header, "questions": questions})


def evaluate(
    make_model: Callable[[], object],
    model_name: str,
    benchmark_dir: Path,
    results_dir: Path,
    limit: int | None = None,
    prepend: bool = True,
) -> dict:
    """Answer every pending question (the first LIMIT of each file when given) and return the scores."""
    tasks = load_benchmark(benchmark_dir)
    if limit is not None:
        for task in tasks:
            task.questions = dict(list(task.questions.items())[:limit])
    for task in tasks:  # every image is checked before any time is spent loading the model
        for number in task.questions:
            image_files(task, number, benchmark_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    check_results_dir(results_dir, model_name)
    predictions = load_predictions(results_dir, tasks)
    pending = [(t, n) for t in tasks for n in t.questions if n not in predictions[t.name]]

    if pending:
        model = make_model()
        for task, number in tqdm(pending, desc=f"FaceXBench [{model_name}]", unit="question"):
            message = vlmeval_message(task, number, benchmark_dir, prepend)
            predictions[task.name][number] = model.generate(message, dataset="FaceXBench")
            _write_results(results_dir, task, predictions[task.name])

    summary = score(tasks, predictions)
    summary["model"] = model_name
    write_json_atomic(results_dir / "summary.json", summary)
    (results_dir / "report.txt").write_text(report_text(summary, model_name), encoding="utf-8")
    return summary
