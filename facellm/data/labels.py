"""The offline `labels` backend of FairFaceGPT: question-answer pairs written from the FairFace labels alone.

It needs no network and no model, so the whole pipeline can run anywhere. Its answers state only what the
labels support (perceived gender, age range, race group) and say so; what the labels cannot tell (lighting,
pose, texture) is answered as unknown rather than invented. The eight aspects are the ones the released
FaceLLM generator asks about, one question each.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.prompts import RACE_PHRASES, Aspect, age_phrase, load_prompts, person_noun, with_article


def answer(aspect: Aspect, record: FaceRecord) -> str:
    """The labels-only answer; an aspect added to aspects.json gets the plain description."""
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
        for aspect, question, text in qa_pairs(record, aspects):
            yield question
            yield text
            yield aspect.key
    yield "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
    yield "Answer: (A) (B) (C) (D) Option A B C D. The answer is"
    yield " ".join(AGE_BINS + GENDERS + RACES)
