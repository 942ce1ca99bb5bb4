"""A FaceXBench results folder: which questions are answered, in which shard, under which settings.

`<results>/<task>.json` is the input question file with a `prediction` (or an `error`) added to every asked
question; shard I of N writes the same files into `<results>/shards/I-of-N/`. `run.json` ties the folder and
each of its shard folders to one model and its prompt settings; a folder whose run answered nothing (its model
did not load, every question failed) is taken over by the next run instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from facellm.common.cli import FaceLLMError, changed_settings
from facellm.common.files import read_json, write_json_atomic
from facellm.eval.facexbench import Task
from facellm.eval.scoring import OWN_FILES, RESULTS_JSON, RESULTS_TEXT, RUN_FILE, SUMMARY_FILE, read_identity

SHARDS_DIR = "shards"


@dataclass(frozen=True)
class Shard:
    index: int  # from 0
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise FaceLLMError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I counts from 0)")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise FaceLLMError(f"--shard {text!r}: I must be 0 to N-1 (I counts from 0)")
        return cls(index, count)

    @classmethod
    def from_environment(cls, environ=os.environ) -> Shard | None:
        """torchrun's RANK and WORLD_SIZE, when they name more than one process."""
        try:
            rank, world = int(environ.get("RANK", "0")), int(environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise FaceLLMError("RANK and WORLD_SIZE must be whole numbers") from None
        if world <= 1:
            return None
        if not 0 <= rank < world:
            raise FaceLLMError(f"RANK {rank} is not between 0 and WORLD_SIZE - 1 ({world - 1})")
        return cls(rank, world)

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, position: int) -> bool:
        return position % self.count == self.index


@dataclass
class Answers:
    """What is known about the questions: task name -> question number -> prediction / error."""

    predictions: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)

    def has(self, task: str, number: str) -> bool:
        return number in self.predictions.get(task, {})

    def add(self, other: Answers) -> None:
        """Take OTHER's predictions (a prediction anywhere outranks an error) and its errors."""
        for task, found in other.predictions.items():
            mine = self.predictions.setdefault(task, {})
            for number, prediction in found.items():
                mine.setdefault(number, prediction)
                self.errors.get(task, {}).pop(number, None)
        for task, found in other.errors.items():
            for number, error in found.items():
                if not self.has(task, number):
                    self.errors.setdefault(task, {})[number] = error

    def record(self, task: str, number: str, prediction: str | None, error: str | None) -> None:
        if prediction is not None:
            self.predictions.setdefault(task, {})[number] = prediction
            self.errors.get(task, {}).pop(number, None)
        else:
            self.errors.setdefault(task, {})[number] = error or "unknown error"


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compared as written
        return path.absolute()


def check_folders(benchmark_dir: Path, results_dir: Path) -> None:
    """Refuse a results folder that is the benchmark folder or inside it (after `..` and symbolic links are
    resolved): results files are named after the question files and would overwrite them."""
    benchmark, results = _resolved(benchmark_dir), _resolved(results_dir)
    if results == benchmark:
        same = "" if str(results_dir) == str(benchmark_dir) else f" (both are {benchmark})"
        raise FaceLLMError(
            f"results folder {results_dir} is the benchmark folder {benchmark_dir}{same}: its results files "
            "would overwrite the question files; use another --results-dir"
        )
    if benchmark in results.parents:
        raise FaceLLMError(
            f"results folder {results_dir} is inside the benchmark folder {benchmark_dir}: results must not "
            "be written into the benchmark; use a --results-dir outside it"
        )


def _other_run(folder: Path, recorded: dict, identity: dict) -> FaceLLMError:
    return FaceLLMError(
        f"{folder}: holds results of {recorded.get('model')!r} made with other settings "
        f"({changed_settings(recorded, identity)}); use another --results-dir, delete the folder, or rerun "
        "with the old settings to resume"
    )


def _results_files(folder: Path) -> dict[Path, dict]:
    """FOLDER's results files, read: its JSON files with a 'questions' object (its own files aside)."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        saved = read_json(path) if path.name not in OWN_FILES else None
        if isinstance(saved, dict) and isinstance(saved.get("questions"), dict):
            found[path] = saved
    return found


def _answered(saved: dict) -> bool:
    return any(isinstance(q, dict) and "prediction" in q for q in saved["questions"].values())


def _take_over(folder: Path, identity: dict) -> None:
    """Record IDENTITY in FOLDER, whose run answered nothing: that run's errors and reports are dropped."""
    for path, saved in _results_files(folder).items():
        questions = saved["questions"]
        if any(isinstance(q, dict) and "error" in q for q in questions.values()):
            cleared = {
                n: {k: v for k, v in q.items() if k != "error"} if isinstance(q, dict) else q
                for n, q in questions.items()
            }
            write_json_atomic(path, {**saved, "questions": cleared})
    for name in (SUMMARY_FILE, RESULTS_JSON, RESULTS_TEXT):
        (folder / name).unlink(missing_ok=True)
    write_json_atomic(folder / RUN_FILE, identity)


def check_results_dir(results_dir: Path, identity: dict, shard_dir: Path | None = None) -> None:
    """Refuse to mix the answers of two models (or two checkpoints, or two prompt settings) in one results
    folder, and record IDENTITY in it and in SHARD_DIR. A folder recorded for another run is refused when
    it holds a prediction (the results folder: in it or in any of its shard folders), else taken over."""
    folders = [results_dir, *shard_folders(results_dir)]
    for folder in folders:
        recorded = read_identity(folder)
        if not recorded or recorded == identity:
            continue
        scope = folders if folder == results_dir else [folder]
        if any(_answered(saved) for f in scope for saved in _results_files(f).values()):
            raise _other_run(folder, recorded, identity)
        _take_over(folder, identity)
    for folder in (results_dir, shard_dir):
        if folder is not None and not (folder / RUN_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / RUN_FILE, identity)


def read_answers(folder: Path, tasks: list[Task]) -> Answers:
    """The predictions and errors saved in FOLDER's results files for the questions of TASKS."""
    answers = Answers()
    for task in tasks:
        path = folder / f"{task.name}.json"
        if not path.is_file():
            continue
        saved = read_json(path)
        questions = saved.get("questions") if isinstance(saved, dict) else None
        if not isinstance(questions, dict):
            raise FaceLLMError(f"{path}: not a FaceXBench results file (no 'questions' object)")
        for number, question in questions.items():
            if number not in task.questions or not isinstance(question, dict):
                continue
            asked = task.questions[number]
            if (question.get("question_text"), question.get("options")) != (
                asked["question_text"],
                asked["options"],
            ):
                raise FaceLLMError(
                    f"{path}: question {number} is not the benchmark's question {number} "
                    "(results of another benchmark version?); use another --results-dir"
                )
            if "prediction" in question:
                answers.predictions.setdefault(task.name, {})[number] = str(question["prediction"])
            elif "error" in question:
                answers.errors.setdefault(task.name, {})[number] = str(question["error"])
    return answers


def shard_folders(results_dir: Path) -> list[Path]:
    root = results_dir / SHARDS_DIR
    folders = sorted(root.glob("*-of-*")) if root.is_dir() else []
    return [folder for folder in folders if folder.is_dir()]


def known_answers(results_dir: Path, tasks: list[Task], identity: dict) -> Answers:
    """Everything answered in the results folder and in all of its shard folders."""
    known = read_answers(results_dir, tasks)
    for folder in shard_folders(results_dir):
        recorded = read_identity(folder)
        if recorded and recorded != identity:
            raise _other_run(folder, recorded, identity)
        known.add(read_answers(folder, tasks))
    return known


def with_answers(task: Task, answers: Answers) -> dict[str, dict]:
    """TASK's questions, each with its known prediction (or, failing that, its error) added."""
    predictions, errors = answers.predictions.get(task.name, {}), answers.errors.get(task.name, {})
    questions = {}
    for number, question in task.questions.items():
        if number in predictions:
            question = {**question, "prediction": predictions[number]}
        elif number in errors:
            question = {**question, "error": errors[number]}
        questions[number] = question
    return questions


def write_task(folder: Path, task: Task, answers: Answers) -> None:
    """FOLDER/<task>.json in the FaceXBench results format."""
    write_json_atomic(folder / f"{task.name}.json", {**task.header, "questions": with_answers(task, answers)})
