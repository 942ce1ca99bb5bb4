"""What every label source gives the generator, and the checks its readers share.

A reader returns Loaded(image_root, records, skipped): the folder the records' files are relative to, one
SourceRecord per usable image (its file, its labels as a dict, its split) in a fixed order, and what it left
out on purpose (reason -> the files or lines), so that a run can say so. Anything else that is wrong with
the layout or a label stops the reader with one line naming the file (and the line).

A LabelQuestion is one short-answer / multiple-choice question the labels of a source answer; a Grouping is
one attribute the fairness report counts images and items by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from facellm.common.cli import FaceLLMError
from facellm.common.files import resolve_inside

Labels = Mapping[str, object]
EXPRESSION_QUESTION = "Which facial expression does this person show?"
# how an expression label reads in a sentence ("the face shows ..."), RAF-DB's and AffectNet's names alike
EMOTIONS = {"Neutral": "a neutral expression", "Happy": "happiness", "Sad": "sadness"}


@dataclass(frozen=True)
class SourceRecord:
    file: str  # relative to the image root the reader returns
    labels: Labels
    split: str


class Loaded(NamedTuple):
    image_root: Path
    records: list
    skipped: dict[str, list[str]]


@dataclass(frozen=True)
class LabelQuestion:
    """KEY names the items (`short:KEY`, `mcq:KEY`); VALUE is the answer, the label as the source spells it;
    CANDIDATES are the values a multiple-choice item may offer for that answer, the answer among them."""

    key: str
    question: str
    value: Callable[[Labels], str]
    candidates: Callable[[str], Sequence[str]]


class Grouping(NamedTuple):
    name: str
    values: tuple[str, ...]
    value: Callable[[Labels], str]


def label(name: str) -> Callable[[Labels], str]:
    """The VALUE of a question whose answer is the label NAME as it is."""
    return lambda labels: str(labels[name])


def vocabulary(values: Sequence[str]) -> Callable[[str], Sequence[str]]:
    """The CANDIDATES of a question answered from a fixed vocabulary."""
    return lambda _answer: tuple(values)


def require_root(root: Path, title: str) -> Path:
    if not root.is_dir():
        raise FaceLLMError(f"{root}: {title} root folder does not exist")
    return root


def existing(root: Path, candidates: Sequence[str], what: str, folder: bool = False) -> Path:
    """The first of CANDIDATES (paths relative to ROOT, the official place first) that exists."""
    for candidate in candidates:
        path = root / candidate
        if path.is_dir() if folder else path.is_file():
            return path
    raise FaceLLMError(f"{root}: no {what} (expected {' or '.join(candidates)})")


def text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line of a text file, line endings (\\n or \\r\\n) stripped."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: files saved by a Windows editor
            text = handle.read()
    except UnicodeDecodeError as error:
        raise FaceLLMError(f"{path}: not a text file ({error.reason})") from None
    # split("\n"), not splitlines(): a stray form feed or \x1c inside a line must not shift the line numbers
    return [(number, line.removesuffix("\r")) for number, line in enumerate(text.split("\n"), start=1)]


def image_inside(image_root: Path, written: str, where: str) -> Path:
    """The image a data file names, which must lie inside IMAGE_ROOT and exist."""
    path = resolve_inside(image_root, written, where)
    if not path.is_file():
        raise FaceLLMError(f"{where}: image {written!r} not found in {image_root}")
    return path


class FirstSeen:
    """Refuses an image listed twice in one file, naming both lines."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def check(self, name: str, path: Path, line: int) -> None:
        if (first := self.lines.setdefault(name, line)) != line:
            raise FaceLLMError(f"{path}:{line}: image {name!r} is listed twice (first on line {first})")


def one_of(path: Path, line: int, what: str, text: str, codes: Mapping[str, str]) -> str:
    """The label coded TEXT in a data file, refused with the vocabulary when it is not one of CODES."""
    if text not in codes:
        listing = ", ".join(f"{code} {name}" for code, name in codes.items())
        raise FaceLLMError(f"{path}:{line}: {what} {text!r} is not one of {listing}")
    return codes[text]


def emotion(name: str) -> str:
    """An expression label as a noun phrase: Happy -> happiness, Neutral -> a neutral expression."""
    return EMOTIONS.get(name, name.lower())


EXPRESSION_FIELDS = frozenset({"expression", "emotion", "summary"})


def expression_fields(name: str) -> dict[str, str]:
    """The hint fields of an expression label (RAF-DB's and AffectNet's): the label, as a noun phrase, and
    the summary of a face showing it."""
    shown = emotion(name)
    return {"expression": name.lower(), "emotion": shown, "summary": f"a face showing {shown}"}


def listing(phrases: Sequence[str]) -> str:
    """PHRASES as one phrase: "a", "a and b", "a, b and c"."""
    return " and ".join(filter(None, [", ".join(phrases[:-1]), *phrases[-1:]]))
