"""The FairFaceGPT prompts as data: system prompt, the aspects, the two user-message templates and the
refusal phrases live in `data/prompts/` so they can be read, reviewed and changed without touching code.

    system.txt        system prompt of every request
    aspects.json      [{"key": ..., "question": ...}, ...]: one question per aspect, in dataset order; an
                      entry may add "offline": the labels backend's answer, a template of the same fields
    per_question.txt  user text of one question; FairFace's fields {person} {gender} {race} {age} {question}
    per_image.txt     user text asking all questions at once as JSON; same fields, {questions} for the list
    refusals.txt      answer openings that mark a refusal, one per line (# starts a comment)

FairFace's prompts are `data/prompts/` itself; every other label source has its own folder
(`data/prompts/<source>/`, whose templates use that source's fields: facellm.data.sources) and may leave out
refusals.txt, which is then the shared one. The labels reach the LLM as a hint inside the user text; the
question stored in the dataset is the bare question, so the trained model never sees the labels.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.files import REPO
from facellm.data.fairface import FaceRecord

DEFAULT_PROMPTS_DIR = REPO / "data" / "prompts"
LABEL_FIELDS = frozenset({"person", "gender", "race", "age"})
FILES = ("system.txt", "aspects.json", "per_question.txt", "per_image.txt", "refusals.txt")

RACE_PHRASES = {
    "White": "White",
    "Black": "Black",
    "Latino_Hispanic": "Latino or Hispanic",
    "East Asian": "East Asian",
    "Southeast Asian": "Southeast Asian",
    "Indian": "Indian",
    "Middle Eastern": "Middle Eastern",
}


@dataclass(frozen=True)
class Aspect:
    key: str
    question: str
    offline: str | None = None  # the labels backend's answer (a template of the hint's fields), if written


@dataclass(frozen=True)
class PromptSet:
    system: str
    aspects: tuple[Aspect, ...]
    per_question: str
    per_image: str
    refusals: tuple[str, ...]
    digest: str  # of all five files: a run's outputs are tied to the prompts that made them
    fields: Callable[[object], dict[str, str]] | None = None  # a record's hint fields (None: FairFace's)

    def hint(self, face) -> dict[str, str]:
        """The template fields of FACE: its labels as the hint (and the offline answers) read them."""
        return (self.fields or label_fields)(face)

    def aspect(self, key: str) -> Aspect:
        for aspect in self.aspects:
            if aspect.key == key:
                return aspect
        raise KeyError(key)

    def question_text(self, face: FaceRecord, aspect: Aspect) -> str:
        return self.per_question.format(**self.hint(face), question=aspect.question)

    def all_questions_text(self, face: FaceRecord, aspects: list[Aspect]) -> str:
        listing = "\n".join(f'"{aspect.key}": {aspect.question}' for aspect in aspects)
        return self.per_image.format(**self.hint(face), questions=listing)

    def is_refusal(self, answer: str) -> bool:
        opening = answer.strip().lower().replace("\u2019", "'")
        return any(opening.startswith(phrase) for phrase in self.refusals)


def person_noun(face: FaceRecord) -> str:
    """How a face is named in text: a boy or girl below ten, as the released generator does."""
    male = face.gender == "Male"
    if face.age == "0-2":
        return "baby boy" if male else "baby girl"
    if face.age == "3-9":
        return "boy" if male else "girl"
    if face.age == "10-19":
        return "teenage boy" if male else "teenage girl"
    return "man" if male else "woman"


def age_phrase(face: FaceRecord) -> str:
    return "over 70 years old" if face.age == "more than 70" else f"{face.age} years old"


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'AEIOUaeiou' else 'a'} {phrase}"


def label_fields(face: FaceRecord) -> dict[str, str]:
    return {
        "person": with_article(person_noun(face)),
        "gender": face.gender.lower(),
        "race": RACE_PHRASES[face.race],
        "age": age_phrase(face),
    }


def _fields(template: str, path: Path | str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise FaceLLMError(f"{path}: not a valid template ({error}); write a literal brace twice") from None


def _check_fields(text: str, where: str, allowed: frozenset[str]) -> set[str]:
    fields = _fields(text, where)
    if unknown := fields - allowed:
        raise FaceLLMError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})"
        )
    return fields


def _template(path: Path, last_field: str, names: frozenset[str]) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if last_field not in _check_fields(text, str(path), names | {last_field}):
        raise FaceLLMError(f"{path}: the template must contain {{{last_field}}}")
    return text


def _aspects(path: Path, names: frozenset[str]) -> tuple[Aspect, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FaceLLMError(f"{path}: corrupt JSON ({error})") from None
    if not isinstance(data, list) or not data:
        raise FaceLLMError(f'{path}: expected a non-empty list of {{"key", "question"}} objects')
    aspects = []
    for index, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get("key"), str) and item.get("question")):
            raise FaceLLMError(f"{path}: entry {index} needs a string 'key' and a non-empty 'question'")
        if not item["key"].isidentifier():
            raise FaceLLMError(f"{path}: entry {index}: key {item['key']!r} must be a plain identifier")
        offline = item.get("offline")
        if offline is not None:
            if not isinstance(offline, str) or not offline.strip():
                raise FaceLLMError(f"{path}: entry {index}: 'offline' must be a non-empty text")
            _check_fields(offline, f"{path}: entry {index} ('offline')", names)
            offline = offline.strip()
        aspects.append(Aspect(item["key"], str(item["question"]).strip(), offline))
    keys = [aspect.key for aspect in aspects]
    if len(set(keys)) != len(keys):
        raise FaceLLMError(f"{path}: aspect keys must be unique")
    return tuple(aspects)


def load_prompts(
    folder: Path = DEFAULT_PROMPTS_DIR,
    fields: Callable[[object], dict[str, str]] | None = None,
    names: frozenset[str] = LABEL_FIELDS,
) -> PromptSet:
    """The prompt set in FOLDER, whose templates may use the field NAMES that FIELDS gives for a record
    (FairFace's by default). A folder without refusals.txt uses the shared one of data/prompts/."""
    paths = {name: folder / name for name in FILES}
    if not paths["refusals.txt"].is_file():
        paths["refusals.txt"] = DEFAULT_PROMPTS_DIR / "refusals.txt"
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise FaceLLMError(f"{folder}: prompt folder lacks {', '.join(missing)}")
    digest = hashlib.sha256()
    for name, path in paths.items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    system = paths["system.txt"].read_text(encoding="utf-8").strip()
    if not system:
        raise FaceLLMError(f"{paths['system.txt']}: the system prompt is empty")
    refusals = tuple(
        line.strip().lower()
        for line in paths["refusals.txt"].read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return PromptSet(
        system=system,
        aspects=_aspects(paths["aspects.json"], names),
        per_question=_template(paths["per_question.txt"], "question", names),
        per_image=_template(paths["per_image.txt"], "questions", names),
        refusals=refusals,
        digest=digest.hexdigest(),
        fields=fields,
    )
