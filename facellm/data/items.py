"""The kinds of FairFaceGPT items (`--items`): open questions, and short-answer and multiple-choice questions
whose answers are the FairFace labels themselves.

    open   the aspects of data/prompts/aspects.json, answered in prose (by the LLM, or by the labels backend)
    short  one question per attribute (gender, age, race); the answer is the label as FairFace spells it
    mcq    the same questions with lettered options, laid out as the FaceXBench evaluation prompt is
           (facellm.common.mcq): the question, INSTRUCTION, then "(A) option" lines; the answer is the text
           of the correct option (a letter would mean nothing once the options are shuffled)

An item is an Aspect (key, question): the open ones are shared by every image, the label items are keyed
`short:<attribute>` and `mcq:<attribute>` (never an aspect key, which must be an identifier) and the
question of an mcq item is the image's own. Its options (the label and other values of the vocabulary) and
their order are drawn from a hash of the image's file name, so a rerun or a resumed run writes the same
items. Every image gets its items in one fixed order: open, short, mcq; gender, age, race.

The other label sources (facellm.data.sources) bring their own questions (LabelQuestion: UTKFace's age in
years, CelebA's visible attributes, RAF-DB's and AffectNet's expression), passed as QUESTIONS; FairFace's
are the default, so its items are what they have always been.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator

from facellm.common import mcq
from facellm.common.cli import FaceLLMError
from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.prompts import Aspect
from facellm.data.sources.base import LabelQuestion, SourceRecord, label, vocabulary

KINDS = ("open", "short", "mcq")
DEFAULT = "open"
LABEL_KINDS = ("short", "mcq")
VOCABULARIES = {"gender": GENDERS, "age": AGE_BINS, "race": RACES}
QUESTIONS = {
    "gender": "What is the perceived gender of the person in this image?",
    "age": "Which age range does this person appear to be in?",
    "race": "Which race group does this person appear to belong to?",
}
INSTRUCTION = "Answer with the text of the correct option."
FAIRFACE = tuple(
    LabelQuestion(attribute, text, label(attribute), vocabulary(VOCABULARIES[attribute]))
    for attribute, text in QUESTIONS.items()
)
Record = FaceRecord | SourceRecord


def _kinds(text: str) -> tuple[tuple[str, ...], str | None]:
    """The kinds TEXT names (comma-separated), in the fixed order, or the reason TEXT is not such a list."""
    names = [name.strip() for name in str(text).split(",")]
    if not any(names):
        return (), f"no item kind given (a comma-separated list of {', '.join(KINDS)})"
    if "" in names:
        return (), f"an empty item kind in {text!r} (a comma-separated list of {', '.join(KINDS)})"
    if unknown := [name for name in names if name not in KINDS]:
        return (), f"unknown item kind {unknown[0]!r} (choose from {', '.join(KINDS)}, comma-separated)"
    return tuple(kind for kind in KINDS if kind in names), None


def item_list(text: str) -> str:
    """`--items` as the parser reads it: the kinds in the fixed order, e.g. "mcq, open" -> "open,mcq"."""
    kinds, problem = _kinds(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return ",".join(kinds)


def parse_kinds(text: str) -> tuple[str, ...]:
    """The kinds of an `items` setting; one given in code is checked here, naming the bad value."""
    kinds, problem = _kinds(text)
    if problem:
        raise FaceLLMError(f"--items {text!r}: {problem}")
    return kinds


def is_label_item(key: str) -> bool:
    """Whether the item KEY is answered from the labels whatever the backend (short and mcq items)."""
    return key.partition(":")[0] in LABEL_KINDS


def keys(
    aspects: tuple[Aspect, ...], kinds: tuple[str, ...], questions: tuple[LabelQuestion, ...] = FAIRFACE
) -> list[str]:
    """The keys of every item of an image, in dataset order."""
    found = [aspect.key for aspect in aspects] if "open" in kinds else []
    return found + [f"{kind}:{q.key}" for kind in LABEL_KINDS if kind in kinds for q in questions]


def for_face(
    face: Record,
    aspects: tuple[Aspect, ...],
    kinds: tuple[str, ...],
    questions: tuple[LabelQuestion, ...] = FAIRFACE,
) -> tuple[Aspect, ...]:
    """Every item of FACE, in dataset order, with its question."""
    found = list(aspects) if "open" in kinds else []
    label_keys = [key for key in keys(aspects, kinds, questions) if is_label_item(key)]
    return tuple(found + [label_item(face, key, questions) for key in label_keys])


def _question(questions: tuple[LabelQuestion, ...], key: str) -> LabelQuestion:
    found = next((question for question in questions if question.key == key), None)
    if found is None:  # an item key of another source's questions: a caller passed the wrong ones
        raise KeyError(f"no label question {key!r} among {', '.join(q.key for q in questions)}")
    return found


def label_item(face: Record, key: str, questions: tuple[LabelQuestion, ...] = FAIRFACE) -> Aspect:
    """The short or mcq item KEY of FACE, with the question stored for training."""
    kind, _, attribute = key.partition(":")
    text = _question(questions, attribute).question
    if kind == "short":
        return Aspect(key, text)
    return Aspect(key, mcq.prompt([text, INSTRUCTION], mcq_options(face, attribute, questions)))


def label_answer(face: Record, key: str, questions: tuple[LabelQuestion, ...] = FAIRFACE) -> str:
    """The answer of a short or mcq item: the label as the source spells it (and as its option reads)."""
    return _question(questions, key.partition(":")[2]).value(face.labels)


def _rank(*parts: str) -> bytes:
    """A stable pseudo-random sort key (the same in every process, unlike hash())."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).digest()


def mcq_options(face: Record, attribute: str, questions: tuple[LabelQuestion, ...] = FAIRFACE) -> list[str]:
    """The label of FACE and other candidates of its question, up to len(LETTERS) in all (FairFace: both
    genders; four age bins; four race groups), in an order drawn from the image's file name."""
    question = _question(questions, attribute)
    answer = question.value(face.labels)
    candidates = question.candidates(answer)
    others = sorted(
        (v for v in candidates if v != answer), key=lambda v: _rank(face.file, attribute, "other", v)
    )
    chosen = [answer, *others[: min(len(mcq.LETTERS), len(candidates)) - 1]]
    return sorted(chosen, key=lambda v: _rank(face.file, attribute, "order", v))


def texts_for_tokenizer() -> Iterator[str]:
    """Every question, the instruction and every option line the label items can show."""
    yield from QUESTIONS.values()
    yield INSTRUCTION
    for values in VOCABULARIES.values():
        for letter in mcq.LETTERS:
            yield from (mcq.option_line(letter, value) for value in values)
