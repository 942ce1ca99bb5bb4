"""FaceXBench: reading the question files, building the authors' prompts, reading an option letter from an
answer (the scores are in facellm.eval.scoring).

A benchmark folder holds `<name>.json` files (one task each; schema in the README of the FaceXBench copy) and
`images/<name>/question_<n>[_<k>].png`. Image paths in the JSONs are relative to that folder and are always
resolved against it here: an image that does not exist stops the run instead of reaching the model as text,
and `check_images` stops it on a file that is not an image.

An answer is read by the ordered rules written above `extract_letter`; a letter offered with another ("A or
B", "A/B") or negated ("not A", "isn't B", "except D", "A is wrong") reads as no letter: unparsed, counted
as answered and never credited.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from facellm.common import mcq
from facellm.common.cli import FaceLLMError
from facellm.common.files import resolve_inside
from facellm.common.mcq import LETTERS

HEADER_KEYS = (
    "category",
    "sub-category",
    "dataset",
    "question_type",
    "num_images",
    "postpend_text",
    "questions",
)
QUESTION_KEYS = ("image_paths", "question_text", "options", "correct_answer_option", "answer")


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
    wrong = [key for key in ("category", "sub-category", "num_images") if not isinstance(data[key], str)]
    if wrong:
        raise FaceLLMError(f"{path}: {', '.join(wrong)} must be text")
    if not isinstance(data["questions"], dict) or not data["questions"]:
        raise FaceLLMError(f"{path}: 'questions' must be a non-empty object keyed by question number")
    for number, question in data["questions"].items():
        if not isinstance(question, dict):
            raise FaceLLMError(f"{path}: question {number} is not an object")
        absent = [key for key in QUESTION_KEYS if key not in question]
        if absent:
            raise FaceLLMError(f"{path}: question {number} lacks {', '.join(absent)}")
        answer, options = question["correct_answer_option"], question["options"]
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise FaceLLMError(f"{path}: question {number}: options must be a list of 2 to {len(LETTERS)}")
        if not all(isinstance(o, str | int | float) and not isinstance(o, bool) for o in options):
            raise FaceLLMError(f"{path}: question {number}: options must be texts or numbers")
        if not isinstance(question["question_text"], str):
            raise FaceLLMError(f"{path}: question {number}: question_text must be a text")
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


def check_images(task: Task, number: str, benchmark_dir: Path) -> None:
    """Stop on an image of the question that a model could not take: missing, named with a suffix that is not
    an image's (VLMEvalKit refuses such a file with a bare AssertionError), or whose content is not an image
    (only its header is read: a truncated image is still reported by the model, naming the file)."""
    from PIL import Image, UnidentifiedImageError

    from facellm.common.images import IMAGE_SUFFIXES

    paths = image_files(task, number, benchmark_dir)
    for relative, path in zip(task.questions[number]["image_paths"], paths, strict=True):
        where = f"{task.path}: question {number}: image {relative}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            names = ", ".join(IMAGE_SUFFIXES)
            raise FaceLLMError(f"{where} is not an image file (the name must end in one of {names})")
        try:
            with Image.open(path):
                pass
        except UnidentifiedImageError:
            raise FaceLLMError(f"{where} is not an image (its content is in no image format)") from None
        except Image.DecompressionBombError:
            raise FaceLLMError(f"{where} has too many pixels to decode safely") from None
        except (OSError, SyntaxError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise FaceLLMError(f"{where} cannot be read ({reason})") from None


def prompt_text(task: Task, number: str, prepend: bool = False) -> str:
    """The authors' prompt: [tool context] [task instruction when PREPEND] question, answer format, then one
    option a line as "(A) text", every part ending with a newline. The authors leave the instruction out
    unless asked (their --prepend_text)."""
    question = task.questions[number]
    lines = []
    if task.header.get("context"):
        lines.append(task.header["context"])
    if prepend and task.header.get("prepend_text"):
        lines.append(task.header["prepend_text"])
    lines.append(question["question_text"])
    if task.header.get("postpend_text"):
        lines.append(task.header["postpend_text"])
    return mcq.prompt(lines, question["options"])


def vlmeval_message(task: Task, number: str, benchmark_dir: Path, prepend: bool = False) -> list[dict]:
    """A VLMEvalKit message: the question's images (absolute paths), then the prompt text."""
    images = [{"type": "image", "value": str(path)} for path in image_files(task, number, benchmark_dir)]
    return [*images, {"type": "text", "value": prompt_text(task, number, prepend)}]


# Answer extraction. The rules, tried in order; the first that designates exactly one valid letter decides:
#   1. a letter after "answer" ("The answer is D", "Answer: (b)", "answer - c"),
#   2. then after "option" / "choice" ("The correct option is (B) sad", "Choice: c"),
#   3. a first line that is a letter alone, or a letter followed by . : ) ]
#      ("C", "(c)", "C. neutral", "b) sad"),
#   4. letters in brackets anywhere ("I pick (B)"): only when all of them agree,
#   5. the whole answer, its first line, or what follows "answer is" / "answer:" equal to one option's text
#      ("sad", "The answer is sad.", "2" for integer options, "27 to 31"), ignoring case and a final period,
#   6. a lone capital letter anywhere ("I think it's C"): only when all of them agree.
# A lower-case letter counts in brackets, after the keywords of rules 1-2, and at the start of the first line.
# "A" or "a" followed by a lower-case word ("A man with ...", "The answer is a man") is the English article,
# never an answer, unless that word is a connective ("A because ...", "A is correct").
# When a letter and an option text disagree ("(A) sad" where sad is B), the letter wins: rules 1-4 come first.
# A hedged or negated letter designates nothing. When the letter a rule finds (for rules 4 and 6, any of the
# agreeing letters) is
#   - one of several candidates: joined to another letter A-D by "or", "and", "nor", "vs", "/" or "&"
#     (", or" too), optionally followed by "maybe", "perhaps", "possibly", "probably", "either", "option" or
#     "choice" ("The answer is A or B", "Answer: A/B", "A and B", "either A or C", "(B), or maybe (C)"),
#   - negated: right after "not", "n't", "never", "neither", "nor", "cannot", "except", "excluding",
#     "other than", "rather than" or "instead of", with nothing between but "be", "the", "option", "choice",
#     "answer", "letter", "for", "choose", "pick" or "select" ("Not A", "not (A)", "isn't B", "cannot be C",
#     "except D", "don't pick A"), or right before "not", "never", a word ending in "n't", or "is wrong" /
#     "is incorrect" ("A is not right", "A isn't", "B can't be", "A is wrong"),
# the answer is unparsed: no later rule is tried. Other letters of the answer may be listed or negated
# ("Options A and B are wrong, the answer is C" reads C; "The answer is D, not A" reads D). A comma alone
# does not join letters ("The answer is C, A and B are wrong" reads C).
# Markdown emphasis and \boxed{} are removed first. Anything else is unparsed (None) and scored wrong.
_LETTER = r"(?:\(([A-Da-d])\)|\[([A-Da-d])\]|([A-Da-d])(?![A-Za-z0-9]))"
_AFTER_ANSWER = re.compile(r"(?i:\banswer)(?i:\s+is)?\s*[:\-–=]?\s*" + _LETTER)
_AFTER_OPTION = re.compile(r"(?i:\b(?:option|choice))(?i:\s+is)?\s*[:\-–=]?\s*" + _LETTER)
_FIRST_LINE = re.compile(r"^\s*[(\[]?([A-Da-d])(?:[)\]]|[.:])?\s*$|^\s*[(\[]?([A-Da-d])[.:)\]]\s")
_BRACKETED = re.compile(r"[(\[]([A-Da-d])[)\]]")
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9'’])([A-D])(?![A-Za-z0-9'’])")
_ARTICLE_AFTER = re.compile(r"\s+(?!(?:because|since|as|and|or|for|which|is|was|seems)\b)[a-z]")
# A letter, bare or bracketed, that is not the article "A" (what a list of letters is made of).
_MENTION = (
    r"(?:[(\[][A-Da-d][)\]]|(?<![A-Za-z0-9'’])"
    r"(?:[B-Db-d]|[Aa](?!" + _ARTICLE_AFTER.pattern + r"))(?![A-Za-z0-9'’]))"
)
_JOIN = (
    r"[)\]]?\s*(?i:,?\s*\b(?:or|and|nor|vs\.?|versus)(?![A-Za-z])|/|&)\s*"
    r"(?i:(?:maybe|perhaps|possibly|probably|either|option|choice)\s+)*"
)
_LISTED_AFTER = re.compile(_JOIN + _MENTION)
_LISTED_BEFORE = re.compile(_MENTION + _JOIN + r"$")
_NEGATED_BEFORE = re.compile(
    r"(?i:(?:\b(?:not|never|neither|nor|cannot|except|excluding)|n['’]t"
    r"|\b(?:other|rather)\s+than|\binstead\s+of)"
    r"(?:\s+(?:be|the|option|choice|answer|letter|for|choose|pick|select)\b)*)\s*[:\-]?\s*$"
)
_NEGATED_AFTER = re.compile(
    r"[^\S\n]*(?i:(?:not|never)\b|[a-z]*n['’]t\b"
    r"|(?:is|are|was|were|does|do|did|can|could|would|should|must|seems?|looks?)"
    r"(?:\s*not\b|\s+(?:be\s+)?(?:wrong|incorrect)\b))"
)
_ANSWER_TEXT = re.compile(r"(?i:\banswer)(?i:\s+is)?\s*[:\-–=]?\s*([^\n]+)")
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def _letters(pattern: re.Pattern, text: str, valid: str) -> list[tuple[str, bool]]:
    """Each valid letter PATTERN finds in TEXT (the article "A" left out), with whether it is doubtful: hedged
    or negated (rules above)."""
    found = []
    for match in pattern.finditer(text):
        index, letter = next((i, g) for i, g in enumerate(match.groups(), start=1) if g)
        if letter in "Aa" and _ARTICLE_AFTER.match(text, match.end(index)):
            continue
        if letter.upper() in valid:
            found.append((letter.upper(), _doubtful(text, *match.span(index))))
    return found


def _doubtful(text: str, start: int, end: int) -> bool:
    """Whether the letter at TEXT[START:END] is one of a list of letters or negated."""
    if start > 0 and end < len(text) and text[start - 1] in "([" and text[end] in ")]":
        start, end = start - 1, end + 1  # "(A)" as a whole
    window = max(0, start - 100)
    return bool(
        _LISTED_AFTER.match(text, end)
        or _NEGATED_AFTER.match(text, end)
        or _LISTED_BEFORE.search(text, window, start)
        or _NEGATED_BEFORE.search(text, window, start)
    )


def _agreed(found: list[tuple[str, bool]]) -> str | None:
    """The letter when every one found is the same and none is doubtful."""
    letters = {letter for letter, _ in found}
    return letters.pop() if len(letters) == 1 and not any(doubtful for _, doubtful in found) else None


def _normalised(text: str) -> str:
    return text.strip().strip("\"'`").rstrip(".").strip().lower()


def extract_letter(prediction: str, options: list) -> str | None:
    """The option letter a free-text answer designates, or None when it names none (rules above)."""
    text = _BOXED.sub(r"\1", str(prediction)).replace("**", "").replace("__", "").strip()
    if not text:
        return None
    valid = LETTERS[: len(options)]
    first_line = text.splitlines()[0].strip()
    bracketed = _letters(_BRACKETED, text, valid)
    for pattern in (_AFTER_ANSWER, _AFTER_OPTION):
        found = _letters(pattern, text, valid)
        if found:
            letter, doubtful = found[0]
            return None if doubtful else letter
    found = _letters(_FIRST_LINE, first_line, valid)
    in_brackets = {letter for letter, _ in bracketed}
    if found and len(in_brackets) <= 1:  # a first line "(A) and (B)" names two letters, not one
        letter, doubtful = found[0]
        return None if doubtful else letter
    if len(in_brackets) == 1:
        return _agreed(bracketed)
    after_answer = [match.group(1) for match in _ANSWER_TEXT.finditer(text)]
    texts = {_normalised(str(option)): letter for letter, option in zip(LETTERS, options, strict=False)}
    for candidate in (text, first_line, *after_answer):
        letter = texts.get(_normalised(candidate))
        if letter is not None:
            return letter
    lone = _letters(_LONE_CAPITAL, text, valid)
    return _agreed(lone) if lone else None
