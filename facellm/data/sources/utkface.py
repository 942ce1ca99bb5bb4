"""UTKFace on disk: the labels are the file names.

Layout (as released): the images, in ROOT itself or one folder down (`UTKFace/` of the aligned and cropped
faces, `crop_part1/`, `part1/` to `part3/` of the in-the-wild images), named

    [age]_[gender]_[race]_[date&time].jpg            in-the-wild images
    [age]_[gender]_[race]_[date&time].jpg.chip.jpg   aligned and cropped faces

age 0-116 (years); gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others; date&time
yyyymmddHHMMSSFFF. UTKFace has no official split: its one split is `all`. Other files (the landmark lists)
are not looked at.

A `.jpg` whose name does not have these four fields is skipped and counted, not refused: the release itself
holds a few (aligned faces reported without the race field, such as 39_1_20170116174525125.jpg.chip.jpg),
and refusing them would make UTKFace unusable as it is distributed. A name with the four fields and a value
outside the vocabulary (gender 2, race 5, age 117) is refused, naming the file: that is a labelling error,
not a known defect. The same face twice (its aligned crop next to its in-the-wild image, or crop_part1/ next
to UTKFace/) is refused: pass the folder of one of them as ROOT.
"""

from __future__ import annotations

import re
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.data.fairface import AGE_BINS
from facellm.data.items import QUESTIONS as FAIRFACE_QUESTIONS
from facellm.data.prompts import with_article
from facellm.data.sources.base import (
    Grouping,
    LabelQuestion,
    Loaded,
    SourceRecord,
    label,
    require_root,
    vocabulary,
)

TITLE = "UTKFace"
SPLITS = ("all",)
MAX_AGE = 116
GENDERS = ("Male", "Female")
RACES = ("White", "Black", "Asian", "Indian", "Others")
NAME = re.compile(r"(?P<age>\d+)_(?P<gender>\d+)_(?P<race>\d+)_(?P<stamp>\d+)\.jpg(?:\.chip\.jpg)?")
MALFORMED = "not named [age]_[gender]_[race]_[date&time].jpg"
AGE_BIN_TOPS = (2, 9, 19, 29, 39, 49, 59, 69)  # the oldest age of each of FairFace's bins but the last

# The mcq distractors of an age are other ages 5 to 30 years away in steps of 5: close enough to need the
# face, far enough apart that exactly one option is right.
AGE_STEP, AGE_SPAN = 5, 6


def nearby_ages(answer: str) -> tuple[str, ...]:
    age = int(answer)
    steps = range(-AGE_SPAN, AGE_SPAN + 1)
    return tuple(str(age + AGE_STEP * k) for k in steps if 0 <= age + AGE_STEP * k <= MAX_AGE)


def age_bin(age: object) -> str:
    """FairFace's age bin of an age in years, so that the two sources' reports compare."""
    return next(
        (name for top, name in zip(AGE_BIN_TOPS, AGE_BINS[:-1], strict=True) if int(age) <= top), AGE_BINS[-1]
    )


QUESTIONS = (
    LabelQuestion("gender", FAIRFACE_QUESTIONS["gender"], label("gender"), vocabulary(GENDERS)),
    LabelQuestion("age", "How old does this person appear to be, in years?", label("age"), nearby_ages),
    LabelQuestion("race", FAIRFACE_QUESTIONS["race"], label("race"), vocabulary(RACES)),
)
GROUPINGS = (
    Grouping("race", RACES, label("race")),
    Grouping("gender", GENDERS, label("gender")),
    Grouping("age", AGE_BINS, lambda labels: age_bin(labels["age"])),
)

# the LLM's hint (data/prompts/utkface/): the fields its templates may use
HINT_FIELDS = frozenset({"person", "gender", "race", "age", "years", "summary"})
OTHER_RACE = "other than White, Black, Asian or Indian"  # UTKFace's Others


def _noun(age: int, male: bool) -> str:
    """A face named by age and gender, by the same age lines as FairFace's bins."""
    if age <= 2:
        return "baby boy" if male else "baby girl"
    if age <= 9:
        return "boy" if male else "girl"
    if age <= 19:
        return "teenage boy" if male else "teenage girl"
    return "man" if male else "woman"


def hint_fields(labels) -> dict[str, str]:
    """The labels as the prompt templates and the offline answers read them."""
    age, male, race = int(labels["age"]), labels["gender"] == "Male", str(labels["race"])
    noun = _noun(age, male)
    years = "under one year old" if age == 0 else f"{age} year{'s' if age != 1 else ''} old"
    named = with_article(noun if race == "Others" else f"{race} {noun}")
    return {
        "person": with_article(noun),
        "gender": "male" if male else "female",
        "race": f"{OTHER_RACE} (e.g. Hispanic, Latino or Middle Eastern)" if race == "Others" else race,
        "age": years,
        "years": str(age),
        "summary": f"{named}, {years}" + (f", of a race group {OTHER_RACE}" if race == "Others" else ""),
    }


def parse_name(path: Path) -> dict | None:
    """The labels in an image's file name; None for a name without the four fields; refused when a value is
    outside the vocabulary."""
    match = NAME.fullmatch(path.name)
    if match is None:
        return None
    age, gender, race = int(match["age"]), int(match["gender"]), int(match["race"])
    if age > MAX_AGE:
        raise FaceLLMError(f"{path}: age {age} is outside UTKFace's 0-{MAX_AGE}")
    if gender >= len(GENDERS):
        raise FaceLLMError(f"{path}: gender {gender} is not a UTKFace label (0 male, 1 female)")
    if race >= len(RACES):
        codes = ", ".join(f"{code} {name}" for code, name in enumerate(RACES))
        raise FaceLLMError(f"{path}: race {race} is not a UTKFace label ({codes})")
    return {"age": age, "gender": GENDERS[gender], "race": RACES[race]}


def image_files(root: Path) -> list[Path]:
    """The .jpg files in ROOT and one folder down, in name order."""
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    return [p for folder in folders for p in sorted(folder.glob("*.jpg")) if p.is_file()]


def load_split(root: Path, split: str = "all") -> Loaded:
    require_root(root, TITLE)
    if split not in SPLITS:
        raise FaceLLMError(
            f"split {split!r} is not one of {', '.join(SPLITS)} (UTKFace has no official split)"
        )
    records, skipped, faces = [], {}, {}
    for path in image_files(root):
        relative = path.relative_to(root).as_posix()
        labels = parse_name(path)
        if labels is None:
            skipped.setdefault(MALFORMED, []).append(relative)
            continue
        face = path.name.removesuffix(".chip.jpg")
        if (first := faces.setdefault(face, relative)) != relative:
            raise FaceLLMError(
                f"{root}: the same face is both {first} and {relative}; "
                "pass the folder of one of them as the root"
            )
        records.append(SourceRecord(file=relative, labels=labels, split=split))
    if not records:
        raise FaceLLMError(
            f"{root}: no UTKFace images in it or one folder down ([age]_[gender]_[race]_[date&time].jpg)"
        )
    return Loaded(root, records, skipped)
