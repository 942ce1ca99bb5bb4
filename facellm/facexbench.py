"""FaceXBench: reading the question files, building the prompts, reading the answers, scoring.

A benchmark folder holds `<name>.json` files (one task each; schema in the README of the FaceXBench copy) and
`images/<name>/question_<n>[_<k>].png`. Image paths in the JSONs are relative to that folder and are always
resolved against it here: an image that does not exist stops the run instead of reaching the model as text.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from facellm.cli import FaceLLMError
from facellm.fairface import resolve_inside

LETTERS = "ABCD"
HEADER_KEYS = (
    "category",
    "sub-category",
    "dataset",
    "question_type",
    "num_images",
    "postpend_text",
    "questions",
)
QUESTION_KEYS = ("image_paths", "question_text", "options", "correct_answer_option")


@dataclass
class Task:
    name: str  # file stem, e.g. fairface_single_mcq_gender_test
    path: Path
    header: dict
    questions: dict[str, dict] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.header['category']}/{self.header['sub-category']}"


def load_task(path: Path) -> Task:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceLLMError(f"{path}: not a readable FaceXBench JSON ({error})") from None
    if not isinstance(data, dict):
        raise FaceLLMError(f"{path}: not a FaceXBench question file (top level is not an object)")
    missing = [key for key in HEADER_KEYS if key not in data]
    if missing:
        raise FaceLLMError(f"{path}: not a FaceXBench question file (missing {', '.join(missing)})")
    if not isinstance(data["questions"], dict) or not data["questions"]:
        raise FaceLLMError(f"{path}: 'questions' must be a non-empty object keyed by question number")
    for number, question in data["questions"].items():
        if not isinstance(question, dict):
            raise FaceLLMError(f"{path}: question {number} is not an object")
        absent = [key for key in QUESTION_KEYS if key not in question]
        if absent:
            raise FaceLLMError(f"{path}: question {number} lacks {', '.join(absent)}")
        answer, options = question["correct_answer_option"], question["options"]
        if not isinstance(options, list) or len(options) < 2:
            raise FaceLLMError(f"{path}: question {number}: options must be a list of at least 2")
        if not isinstance(answer, str) or answer not in tuple(LETTERS[: len(options)]):
            raise FaceLLMError(
                f"{path}: question {number}: correct_answer_option {answer!r} is not a valid letter"
            )
        paths = question["image_paths"]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise FaceLLMError(f"{path}: question {number}: image_paths must be a list of paths")
    header = {key: value for key, value in data.items() if key != "questions"}
    return Task(name=path.stem, path=path, header=header, questions=data["questions"])


def load_benchmark(benchmark_dir: Path) -> list[Task]:
    if not benchmark_dir.is_dir():
        raise FaceLLMError(f"{benchmark_dir}: benchmark folder does not exist")
    files = sorted(benchmark_dir.glob("*.json"))
    if not files:
        raise FaceLLMError(f"{benchmark_dir}: no FaceXBench question files (*.json) in this folder")
    return [load_task(path) for path in files]


def image_files(task: Task, number: str, benchmark_dir: Path) -> list[Path]:
    """The question's images as real files under the benchmark folder (never passed on as text)."""
    paths = []
    for relative in task.questions[number]["image_paths"]:
        path = resolve_inside(benchmark_dir, relative, f"{task.path} question {number}")
        if not path.is_file():
            raise FaceLLMError(
                f"{task.path}: question {number}: image {relative} not found under {benchmark_dir}"
            )
        paths.append(path)
    return paths


def prompt_text(task: Task, number: str, prepend: bool = True) -> str:
    """The authors' layout: [tool context] [task instruction] question, answer format, one option a line."""
    question = task.questions[number]
    lines = []
    if task.header.get("context"):
        lines.append(task.header["context"])
    if prepend and task.header.get("prepend_text"):
        lines.append(task.header["prepend_text"])
    lines.append(question["question_text"])
    lines.append(task.header["postpend_text"])
    lines += [f"({letter}) {option}" for letter, option in zip(LETTERS, question["options"], strict=False)]
    return "\n".join(lines)


def vlmeval_message(task: Task, number: str, benchmark_dir: Path, prepend: bool = True) -> list[dict]:
    """A VLMEvalKit message: the question's images (absolute paths), then the prompt text."""
    images = [{"type": "image", "value": str(path)} for path in image_files(task, number, benchmark_dir)]
    return [*images, {"type": "text", "value": prompt_text(task, number, prepend)}]


# Answer extraction. The rules, tried in order; the first that designates exactly one valid letter decides:
#   1. a letter after "answer" ("The answer is D", "Answer: (b)", "answer - C"),
#   2. then after "option" / "choice" ("The correct option is (B) sad"),
#   3. a first line that is a letter alone or a letter with . : ) ] ("C", "(C)", "C. neutral", "D) anger"),
#   4. letters in brackets anywhere ("I pick (B)"): only when all of them agree,
#   5. the whole answer, or its first line, equal to one option's text ("sad", 2 for integer options),
#   6. a lone capital letter anywhere ("I think it's C"): only when all of them agree.
# A lower-case letter counts only in brackets or alone on the first line. A capital "A" followed by a
# lower-case word ("A man with ...", "The answer is a man") is the English article, never an answer,
# unless that word is a connective ("A because ...", "A as ...").
# Markdown emphasis and \boxed{} are removed first. Anything else is unparsed (None) and scored wrong.
_LETTER = r"(?:\(([A-Da-d])\)|\[([A-Da-d])\]|([A-D])(?![A-Za-z0-9]))"
_AFTER_ANSWER = re.compile(r"(?i:\banswer)(?i:\s+is)?\s*[:\-–=]?\s*" + _LETTER)
_AFTER_OPTION = re.compile(r"(?i:\b(?:option|choice))(?i:\s+is)?\s*[:\-–=]?\s*" + _LETTER)
_FIRST_LINE = re.compile(r"^\s*[(\[]?([A-Da-d])(?:[)\]]|[.:])?\s*$|^\s*[(\[]?([A-D])[.:)\]]\s")
_BRACKETED = re.compile(r"[(\[]([A-Da-d])[)\]]")
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9'’])([A-D])(?![A-Za-z0-9'’])")
_ARTICLE_AFTER = re.compile(r"\s+(?!(?:because|since|as|and|or|for|which|is|was|seems)\b)[a-z]")
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def _letters(pattern: re.Pattern, text: str, valid: str) -> list[str]:
    found = []
    for match in pattern.finditer(text):
        index, letter = next((i, g) for i, g in enumerate(match.groups(), start=1) if g)
        if letter == "A" and _ARTICLE_AFTER.match(text, match.end(index)):
            continue
        if letter.upper() in valid:
            found.append(letter.upper())
    return found


def extract_letter(prediction: str, options: list) -> str | None:
    """The option letter a free-text answer designates, or None when it names none (rules above)."""
    text = _BOXED.sub(r"\1", str(prediction)).replace("**", "").replace("__", "").strip()
    if not text:
        return None
    valid = LETTERS[: len(options)]
    first_line = text.splitlines()[0].strip()
    bracketed = set(_letters(_BRACKETED, text, valid))
    for pattern in (_AFTER_ANSWER, _AFTER_OPTION):
        found = _letters(pattern, text, valid)
        if found:
            return found[0]
    found = _letters(_FIRST_LINE, first_line, valid)
    if found and len(bracketed) <= 1:  # a first line "(A) and (B)" names two letters, not one
        return found[0]
    if len(bracketed) == 1:
        return bracketed.pop()
    for candidate in (text, first_line):
        normalised = candidate.lower().rstrip(".").strip()
        matches = [
            letter
            for letter, option in zip(LETTERS, options, strict=False)
            if str(option).lower() == normalised
        ]
        if len(matches) == 1:
            return matches[0]
    lone = set(_letters(_LONE_CAPITAL, text, valid))
    return lone.pop() if len(lone) == 1 else None


def score(tasks: list[Task], predictions: dict[str, dict[str, str]]) -> dict:
    """Accuracy per task and overall; unanswered and unparseable answers count as wrong and are reported."""
    per_task, totals = {}, defaultdict(int)
    for task in tasks:
        done = predictions.get(task.name, {})
        correct = unparsed = answered = 0
        for number, question in task.questions.items():
            if number not in done:
                continue
            answered += 1
            letter = extract_letter(done[number], question["options"])
            unparsed += letter is None
            correct += letter == question["correct_answer_option"]
        per_task[task.name] = {
            "task": task.label,
            "questions": len(task.questions),
            "answered": answered,
            "correct": correct,
            "unparsed": unparsed,
            "accuracy": round(100 * correct / answered, 2) if answered else None,
        }
        for key in ("questions", "answered", "correct", "unparsed"):
            totals[key] += per_task[task.name][key]
    overall = dict(totals)
    overall["accuracy"] = (
        round(100 * totals["correct"] / totals["answered"], 2) if totals["answered"] else None
    )
    return {"overall": overall, "files": per_task}


def report_text(summary: dict, model: str) -> str:
    lines = [f"FaceXBench accuracy of {model} (% of answered questions; unparsed answers count as wrong)", ""]
    lines.append(f"{'file':44} {'task':36} {'answered':>9} {'acc %':>7} {'unparsed':>9}")
    for name, row in summary["files"].items():
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.2f}"
        lines.append(
            f"{name:44} {row['task']:36} {row['answered']:>4}/{row['questions']:<4} "
            f"{accuracy:>7} {row['unparsed']:>9}"
        )
    overall = summary["overall"]
    accuracy = "-" if overall["accuracy"] is None else f"{overall['accuracy']:.2f}"
    lines.append(
        f"{'overall':44} {'':36} {overall['answered']:>4}/{overall['questions']:<4} {accuracy:>7} "
        f"{overall['unparsed']:>9}"
    )
    return "\n".join(lines) + "\n"
