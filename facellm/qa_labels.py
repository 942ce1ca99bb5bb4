"""The offline `labels` backend of FairFaceGPT: question-answer pairs written from the FairFace labels alone.

It needs no network and no model, so the whole pipeline can run anywhere. Its answers state only what the
labels support (perceived gender, age range, race group) and say so; what the labels cannot tell (lighting,
pose, texture) is answered as unknown rather than invented. The eight aspects are the ones the released
FaceLLM generator asks about, one question each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

from facellm.fairface import AGE_BINS, GENDERS, RACES, FaceRecord


@dataclass(frozen=True)
class Aspect:
    key: str
    question: str


ASPECTS = (
    Aspect("demographics", "What can you tell about the apparent age, gender and ethnicity of this person?"),
    Aspect("facial_structure", "Describe the facial structure of the person in this image."),
    Aspect("skin_texture", "What can you observe about the skin texture and complexion of this face?"),
    Aspect("expression", "What expression or emotion does this person show?"),
    Aspect("image_quality", "How would you describe the lighting and the quality of this face image?"),
    Aspect("pose_occlusion", "What is the head pose, and is any part of the face occluded?"),
    Aspect("forensic", "Which facial details would matter in a forensic comparison of this face?"),
    Aspect("describe", "Describe this face in detail."),
)

RACE_PHRASES = {
    "White": "White",
    "Black": "Black",
    "Latino_Hispanic": "Latino or Hispanic",
    "East Asian": "East Asian",
    "Southeast Asian": "Southeast Asian",
    "Indian": "Indian",
    "Middle Eastern": "Middle Eastern",
}


def person_noun(record: FaceRecord) -> str:
    male = record.gender == "Male"
    if record.age == "0-2":
        return "baby boy" if male else "baby girl"
    if record.age == "3-9":
        return "boy" if male else "girl"
    if record.age == "10-19":
        return "teenage boy" if male else "teenage girl"
    return "man" if male else "woman"


def age_phrase(record: FaceRecord) -> str:
    return "over 70 years old" if record.age == "more than 70" else f"{record.age} years old"


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'AEIOUaeiou' else 'a'} {phrase}"


def answer(aspect: Aspect, record: FaceRecord) -> str:
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
    return answers[aspect.key]


def qa_pairs(record: FaceRecord) -> list[tuple[Aspect, str, str]]:
    """(aspect, question, answer) for every aspect of one image."""
    return [(aspect, aspect.question, answer(aspect, record)) for aspect in ASPECTS]


def corpus_for_tokenizer() -> Iterator[str]:
    """Every text the labels backend can produce, plus benchmark phrasing: the tiny tokenizer's corpus."""
    for age, gender, race in product(AGE_BINS, GENDERS, RACES):
        record = FaceRecord(file="", age=age, gender=gender, race=race)
        for aspect, question, text in qa_pairs(record):
            yield question
            yield text
            yield aspect.key
    yield "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
    yield "Answer: (A) (B) (C) (D) Option A B C D. The answer is"
    yield " ".join(AGE_BINS + GENDERS + RACES)
