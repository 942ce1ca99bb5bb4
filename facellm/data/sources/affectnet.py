"""AffectNet (manually annotated part) on disk: one expression, valence and arousal per face.

Layout (as released; the lists next to the image folder are accepted too):

    ROOT/Manually_Annotated_file_lists/training.csv    the train split
    ROOT/Manually_Annotated_file_lists/validation.csv  the val split
    ROOT/Manually_Annotated_Images/                    the images (or Manually_Annotated/ holding that folder)

Each list has the header subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
expression,valence,arousal; subDirectory_filePath is relative to Manually_Annotated_Images/, the face box is
in pixels of that image, the landmarks are `x;y;...`. Expression codes (AffectNet's manual): 0 Neutral,
1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None, 9 Uncertain, 10 No-Face. The
last three are not emotions: their rows are left out and counted, without looking for their images. Every
other row's image must exist.

The images are not face crops: the labels describe the face in the box (labels["face_box"] = x, y, width,
height), which a consumer that shows the whole image should crop to.
"""

from __future__ import annotations

import csv
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.data.sources.base import (
    EXPRESSION_FIELDS,
    EXPRESSION_QUESTION,
    FirstSeen,
    Grouping,
    LabelQuestion,
    Loaded,
    SourceRecord,
    existing,
    expression_fields,
    image_inside,
    label,
    one_of,
    require_root,
    vocabulary,
)

TITLE = "AffectNet"
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")  # fmt: skip
EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
NOT_EMOTIONS = ("None", "Uncertain", "No-Face")
CODES = {str(code): name for code, name in enumerate((*EXPRESSIONS, *NOT_EMOTIONS))}
LISTS = {"train": "training.csv", "val": "validation.csv"}
SPLITS = tuple(LISTS)
LIST_FOLDER = "Manually_Annotated_file_lists"
IMAGE_FOLDER = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")

QUESTIONS = (LabelQuestion("expression", EXPRESSION_QUESTION, label("expression"), vocabulary(EXPRESSIONS)),)
HINT_FIELDS = EXPRESSION_FIELDS | {"valence", "arousal", "pleasantness", "intensity"}
# valence and arousal run from -1 to 1; within +-0.2 of 0 they are read as neutral and moderate
NEUTRAL_BAND = 0.2


def hint_fields(labels) -> dict[str, str]:
    """The labels as the prompt templates (data/prompts/affectnet/) and the offline answers read them."""
    name, valence, arousal = str(labels["expression"]), float(labels["valence"]), float(labels["arousal"])
    pleasant = "pleasant" if valence > NEUTRAL_BAND else "unpleasant" if valence < -NEUTRAL_BAND else None
    intensity = "intense" if arousal > NEUTRAL_BAND else "calm" if arousal < -NEUTRAL_BAND else "moderate"
    return expression_fields(name) | {
        "valence": f"{valence:+.2f}",
        "arousal": f"{arousal:+.2f}",
        "pleasantness": pleasant or "neither pleasant nor unpleasant",
        "intensity": intensity,
    }


GROUPINGS = (Grouping("expression", EXPRESSIONS, label("expression")),)


def _number(path: Path, line: int, column: str, text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise FaceLLMError(f"{path}:{line}: {column} {text!r} is not {what}") from None


def _labels(path: Path, line: int, row: dict[str, str], expression: str) -> dict:
    box = tuple(_number(path, line, c, row[c], int) for c in COLUMNS[1:5])
    valence, arousal = (_number(path, line, c, row[c], float) for c in COLUMNS[7:])
    return {"expression": expression, "valence": valence, "arousal": arousal, "face_box": box}


def read_list(path: Path, image_root: Path, split: str) -> Loaded:
    records, skipped, seen = [], {}, FirstSeen()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            if tuple(column.strip() for column in next(reader, [])) != COLUMNS:
                raise FaceLLMError(
                    f"{path}:1: not an AffectNet list (expected the header {','.join(COLUMNS)})"
                )
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue
                if len(fields) != len(COLUMNS):
                    raise FaceLLMError(f"{path}:{line}: {len(fields)} columns, expected {len(COLUMNS)}")
                row = dict(zip(COLUMNS, fields, strict=True))
                file = row["subDirectory_filePath"]
                seen.check(file, path, line)
                expression = one_of(path, line, "expression", row["expression"].strip(), CODES)
                if expression in NOT_EMOTIONS:
                    code = row["expression"].strip()
                    skipped.setdefault(f"expression {code} {expression}: not an emotion", []).append(file)
                    continue
                image_inside(image_root, file, f"{path}:{line}")
                records.append(SourceRecord(file, _labels(path, line, row, expression), split))
    except UnicodeDecodeError as error:
        raise FaceLLMError(f"{path}: not a text CSV ({error.reason})") from None
    except csv.Error as error:
        raise FaceLLMError(f"{path}: malformed CSV ({error})") from None
    if not records:
        raise FaceLLMError(f"{path}: no row with an emotion")
    return Loaded(image_root, records, skipped)


def load_split(root: Path, split: str) -> Loaded:
    require_root(root, TITLE)
    if split not in SPLITS:
        raise FaceLLMError(f"split {split!r} is not one of {', '.join(SPLITS)} (AffectNet's lists)")
    path = existing(root, (f"{LIST_FOLDER}/{LISTS[split]}", LISTS[split]), f"{split} list")
    image_root = existing(root, IMAGE_FOLDER, "image folder", folder=True)
    return read_list(path, image_root, split)
