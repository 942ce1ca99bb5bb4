"""RAF-DB (basic emotions) on disk: one of seven expressions per face, the split in the file name.

Layout (as released):

    ROOT/EmoLabel/list_patition_label.txt   `train_00001.jpg 5` ("patition" is RAF-DB's spelling)
    ROOT/Image/aligned/train_00001_aligned.jpg
                                            the aligned 100 x 100 faces (Image/original/ is not used)

labels 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral; splits train and test.
FaceXBench's `rafdb_*` questions show RAF-DB's train images: a model evaluated on FaceXBench should not be
trained on this split.
"""

from __future__ import annotations

import re
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
    text_lines,
    vocabulary,
)

TITLE = "RAF-DB"
SPLITS = ("train", "test")
EXPRESSIONS = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
CODES = {str(code): name for code, name in enumerate(EXPRESSIONS, start=1)}
LABEL_FILE = "EmoLabel/list_patition_label.txt"
IMAGE_FOLDER = "Image/aligned"
NAME = re.compile(r"(?P<split>train|test)_\d+\.jpg")

QUESTIONS = (LabelQuestion("expression", EXPRESSION_QUESTION, label("expression"), vocabulary(EXPRESSIONS)),)
GROUPINGS = (Grouping("expression", EXPRESSIONS, label("expression")),)
HINT_FIELDS = EXPRESSION_FIELDS


def hint_fields(labels) -> dict[str, str]:
    """The labels as the prompt templates (data/prompts/rafdb/) and the offline answers read them."""
    return expression_fields(str(labels["expression"]))


def aligned_name(image: str) -> str:
    """The aligned image of a listed one: train_00001.jpg -> train_00001_aligned.jpg."""
    return image.removesuffix(".jpg") + "_aligned.jpg"


def load_split(root: Path, split: str) -> Loaded:
    require_root(root, TITLE)
    if split not in SPLITS:
        raise FaceLLMError(f"split {split!r} is not one of {', '.join(SPLITS)} (RAF-DB's)")
    path = existing(root, (LABEL_FILE,), "label file")
    image_root = existing(root, (IMAGE_FOLDER,), "aligned image folder", folder=True)
    records, seen = [], FirstSeen()
    for number, text in text_lines(path):
        if not text.strip():
            continue
        fields = text.split()
        if len(fields) != 2:
            raise FaceLLMError(f"{path}:{number}: expected `<image> <label>`, found {text.strip()!r}")
        image, code = fields
        name = NAME.fullmatch(image)
        if name is None:
            raise FaceLLMError(
                f"{path}:{number}: image {image!r} is not named train_NNNNN.jpg or test_NNNN.jpg"
            )
        seen.check(image, path, number)
        expression = one_of(path, number, "label", code, CODES)
        if name["split"] == split:
            image_inside(image_root, aligned_name(image), f"{path}:{number}")
            records.append(SourceRecord(aligned_name(image), {"expression": expression}, split))
    if not records:
        raise FaceLLMError(f"{path}: no image of the {split} split")
    return Loaded(image_root, records, {})
