"""The offline `labels` backend of FairFaceGPT: question-answer pairs written from the FairFace labels alone.

It needs no network and no model, so the whole pipeline can run anywhere. Its answers state only what the
labels support (perceived gender, age range, race group) and say so; what the labels cannot tell (lighting,
pose, texture) is answered as unknown rather than invented. The eight aspects are the ones the released
FaceLLM generator asks about, one question each.

With `--items` (facellm.data.items) it also writes short-answer and multiple-choice items, one per attribute,
whose answer is the label exactly as FairFace spells it, so that an evaluation can compare strings. For the
sample image val/4.jpg (labelled 50-59, Female, East Asian):

    open    What can you tell about the apparent age, gender and ethnicity of this person?
            -> The image shows an East Asian woman, apparently 50-59 years old. Perceived gender: female; ...
    short   Which age range does this person appear to be in?
            -> 50-59
    mcq     Which race group does this person appear to belong to?
            Answer with the text of the correct option.
            (A) East Asian
            (B) Latino_Hispanic
            (C) White
            (D) Black
            -> East Asian

The mcq layout is the FaceXBench evaluation prompt's (facellm.common.mcq); the options of each image (both
genders, four age bins, four race groups) and their order are drawn from its file name, so every run writes
the same items. Short and mcq items are answered here whatever the backend: no LLM request is made for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import product
from pathlib import Path

from facellm.common.ledger import Ledger
from facellm.data import items
from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.items import Record
from facellm.data.prompts import (
    RACE_PHRASES,
    Aspect,
    PromptSet,
    age_phrase,
    label_fields,
    load_prompts,
    person_noun,
    with_article,
)
from facellm.data.requests import (
    Answer,
    BadImage,
    Job,
    Settings,
    failure_entries,
    image_data_url,
    ledger_entry,
)
from facellm.data.sources.base import LabelQuestion

SETTINGS = Settings(model="labels", mode="per-question", max_tokens=0)


def answer(
    aspect: Aspect,
    record: Record,
    questions: tuple[LabelQuestion, ...] = items.FAIRFACE,
    prompts: PromptSet | None = None,
) -> str:
    """The labels-only answer: the aspect's `offline` template filled with the record's hint (PROMPTS: the
    source's prompt set); FairFace's eight aspects are written here. An aspect without one gets the plain
    description."""
    if items.is_label_item(aspect.key):
        return items.label_answer(record, aspect.key, questions)
    if aspect.offline is not None or not isinstance(record, FaceRecord):
        hint = prompts.hint(record) if prompts is not None else label_fields(record)
        if aspect.offline is None:
            return f"The image shows {hint['summary']}; the annotations available for this image say no more."
        return aspect.offline.format(**hint)
    noun, race, age = person_noun(record), RACE_PHRASES[record.race], age_phrase(record)
    who = f"{with_article(f'{race} {noun}')}, apparently {age}"
    unknown = "the annotations available for this image do not describe"
    answers = {
        "demographics": f"The image shows {who}. Perceived gender: {record.gender.lower()}; "
        f"age range: {age}; race group: {race}.",
        "facial_structure": f"This is {who}. The face proportions are consistent with that age range; "
        f"{unknown} bone structure in more detail.",
        "skin_texture": f"The skin is that of {who}; {unknown} wrinkles, blemishes or marks.",
        "expression": f"The face belongs to {who}; {unknown} the expression, so no emotion is claimed.",
        "image_quality": f"The image is a face crop of {who}; {unknown} the lighting or the sharpness.",
        "pose_occlusion": f"The face of {who} is centred in the crop; {unknown} the head pose or occlusions.",
        "forensic": f"For a comparison, the stable cues are those of {who}: perceived gender "
        f"{record.gender.lower()}, age range {age}, race group {race}.",
        "describe": f"The image shows the face of {who}. Perceived gender {record.gender.lower()}, "
        f"age range {age}, race group {race}.",
    }
    return answers.get(aspect.key, answers["describe"])


def qa_pairs(record: FaceRecord, aspects: tuple[Aspect, ...] | None = None) -> list[tuple[Aspect, str, str]]:
    """(aspect, question, answer) for every aspect of one image."""
    aspects = load_prompts().aspects if aspects is None else aspects
    return [(aspect, aspect.question, answer(aspect, record)) for aspect in aspects]


def corpus_for_tokenizer() -> Iterator[str]:
    """Every text the labels backend can produce, plus benchmark phrasing: the tiny tokenizer's corpus."""
    aspects = load_prompts().aspects
    for age, gender, race in product(AGE_BINS, GENDERS, RACES):
        record = FaceRecord(file="", age=age, gender=gender, race=race)
        for aspect, question, text in qa_pairs(record, items.for_face(record, aspects, items.KINDS)):
            yield question
            yield text
            yield aspect.key
    yield from items.texts_for_tokenizer()
    yield "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
    yield "Answer: (A) (B) (C) (D) Option A B C D. The answer is"
    yield " ".join(AGE_BINS + GENDERS + RACES)


def jobs(
    faces: list[Record],
    ledger: Ledger,
    kinds: tuple[str, ...],
    questions: tuple[LabelQuestion, ...] = items.FAIRFACE,
) -> list[Job]:
    """One job per image with its pending short and mcq items (none for the open kind)."""
    found = []
    for face in faces:
        keys = [key for key in items.keys((), kinds, questions) if not ledger.is_done(face.file, key)]
        if keys:
            found.append(Job(face, tuple(items.label_item(face, key, questions) for key in keys)))
    return found


def answer_jobs(
    jobs: list[Job],
    settings: Settings,
    ledger: Ledger,
    image_root: Path,
    on_item: Callable[[dict], None],
    questions: tuple[LabelQuestion, ...] = items.FAIRFACE,
    prompts: PromptSet | None = None,
) -> None:
    """Answer JOBS from the labels into LEDGER, calling ON_ITEM with each entry (QUESTIONS and PROMPTS: the
    source's)."""
    for job in jobs:
        try:  # the same check as the live backend: no answers about a file that is not a readable image
            image_data_url(image_root / job.face.file)
        except BadImage as error:
            for entry in failure_entries(job, str(error), settings, "labels", attempts=0, latency_s=0.0):
                ledger.append(entry)
                on_item(entry)
            continue
        for aspect in job.aspects:
            answer_ = Answer(aspect, answer(aspect, job.face, questions, prompts), None, "stop", {})
            entry = ledger_entry(job, answer_, settings, "labels", attempts=1, refusals=0, latency_s=0.0)
            ledger.append(entry)
            on_item(entry)
