"""CelebA on disk: 40 binary attributes per aligned face, and the official train/val/test partition.

Layout (as released; the flat layout that torchvision reads is accepted too):

    ROOT/Anno/list_attr_celeba.txt     line 1 the number of images, line 2 the 40 attribute names, then
                                       `000001.jpg -1  1 ...`: 1 or -1 per attribute, one or more spaces apart
    ROOT/Eval/list_eval_partition.txt  `000001.jpg 0`: 0 train, 1 val (CelebA's "valid"), 2 test
    ROOT/Img/img_align_celeba/         the aligned 178 x 218 images

Every attribute is kept (labels: attribute name -> True or False); the questions ask about the ones that can
be seen rather than judged (Attractive, Big_Nose, Oval_Face and the like are not asked).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.data.items import QUESTIONS as FAIRFACE_QUESTIONS
from facellm.data.sources.base import (
    FirstSeen,
    Grouping,
    LabelQuestion,
    Loaded,
    SourceRecord,
    existing,
    image_inside,
    listing,
    one_of,
    require_root,
    text_lines,
    vocabulary,
)

TITLE = "CelebA"
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
SPLITS = tuple(PARTITIONS.values())
VALUES = frozenset(("1", "-1"))
INDEX = {name: n for n, name in enumerate(ATTRIBUTES)}
ATTRIBUTES_FILE = ("Anno/list_attr_celeba.txt", "list_attr_celeba.txt")
PARTITION_FILE = ("Eval/list_eval_partition.txt", "list_eval_partition.txt")
IMAGE_FOLDER = ("Img/img_align_celeba", "img_align_celeba")
GENDERS = ("Male", "Female")
YES_NO = ("Yes", "No")


def gender(labels) -> str:
    return "Male" if labels["Male"] else "Female"


def has(attribute: str, present: bool = True):
    """Yes when ATTRIBUTE is PRESENT (No_Beard is asked as "a beard?", so its answer is reversed)."""
    return lambda labels: "Yes" if labels[attribute] == present else "No"


QUESTIONS = (
    LabelQuestion("gender", FAIRFACE_QUESTIONS["gender"], gender, vocabulary(GENDERS)),
    *(
        LabelQuestion(key, question, has(attribute, present), vocabulary(YES_NO))
        for key, question, attribute, present in (
            ("smiling", "Is the person in this image smiling?", "Smiling", True),
            ("eyeglasses", "Is this person wearing eyeglasses?", "Eyeglasses", True),
            ("hat", "Is this person wearing a hat?", "Wearing_Hat", True),
            ("beard", "Does this person have a beard?", "No_Beard", False),
            ("mustache", "Does this person have a mustache?", "Mustache", True),
            ("bald", "Is this person bald?", "Bald", True),
            ("bangs", "Does this person have bangs?", "Bangs", True),
            ("lipstick", "Is this person wearing lipstick?", "Wearing_Lipstick", True),
        )
    ),
)
GROUPINGS = (Grouping("gender", GENDERS, gender), Grouping("young", YES_NO, has("Young")))

# The LLM's hint (data/prompts/celeba/) names the attributes that are set, as phrases. Attractive is a
# judgement, not something seen: it never reaches a hint. Male, Young, Smiling, Blurry, No_Beard and the
# accessories have fields of their own.
HINT_FIELDS = frozenset({"person", "gender", "features", "accessories", "expression", "sharpness", "summary"})
FEATURES = {
    "5_o_Clock_Shadow": "a five o'clock shadow", "Arched_Eyebrows": "arched eyebrows",
    "Bags_Under_Eyes": "bags under the eyes", "Bald": "a bald head", "Bangs": "bangs", "Big_Lips": "big lips",
    "Big_Nose": "a big nose", "Black_Hair": "black hair", "Blond_Hair": "blond hair",
    "Brown_Hair": "brown hair", "Bushy_Eyebrows": "bushy eyebrows", "Chubby": "a chubby face",
    "Double_Chin": "a double chin", "Goatee": "a goatee", "Gray_Hair": "gray hair",
    "Heavy_Makeup": "heavy makeup", "High_Cheekbones": "high cheekbones", "Mustache": "a mustache",
    "Narrow_Eyes": "narrow eyes", "Oval_Face": "an oval face", "Pale_Skin": "pale skin",
    "Pointy_Nose": "a pointy nose", "Receding_Hairline": "a receding hairline", "Rosy_Cheeks": "rosy cheeks",
    "Sideburns": "sideburns", "Straight_Hair": "straight hair", "Wavy_Hair": "wavy hair",
    "Wearing_Lipstick": "lipstick",
}  # fmt: skip
ACCESSORIES = {
    "Eyeglasses": "eyeglasses", "Wearing_Hat": "a hat", "Wearing_Earrings": "earrings",
    "Wearing_Necklace": "a necklace", "Wearing_Necktie": "a necktie",
}  # fmt: skip


def hint_fields(labels) -> dict[str, str]:
    """The labels as the prompt templates and the offline answers read them."""
    noun = "man" if labels["Male"] else "woman"
    person = f"a young-looking {noun}" if labels["Young"] else f"a {noun}"
    features = [phrase for name, phrase in FEATURES.items() if labels[name]]
    if not labels["No_Beard"]:
        features.append("a beard")
    worn = [phrase for name, phrase in ACCESSORIES.items() if labels[name]]
    mouth = " with the mouth slightly open" if labels["Mouth_Slightly_Open"] else ""
    features_text = listing(features) or "no marked feature among CelebA's attributes"
    accessories_text = listing(worn) or "no eyeglasses, hat, earrings, necklace or necktie"
    return {
        "person": person,
        "gender": "male" if labels["Male"] else "female",
        "features": features_text,
        "accessories": accessories_text,
        "expression": ("smiling" if labels["Smiling"] else "not smiling") + mouth,
        "sharpness": "blurry" if labels["Blurry"] else "sharp",
        "summary": f"{person} with {features_text}, wearing {accessories_text}",
    }


class Attributes(Mapping):
    """One image's 40 attributes (name -> True or False), held as the bits of an int: CelebA has 202,599
    images, and a dict per image would take half a gigabyte."""

    __slots__ = ("bits",)

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __getitem__(self, name: str) -> bool:
        return bool(self.bits >> INDEX[name] & 1)

    def __iter__(self):
        return iter(ATTRIBUTES)

    def __len__(self) -> int:
        return len(ATTRIBUTES)

    def __repr__(self) -> str:
        return f"Attributes({dict(self)})"


def _header(path: Path, lines: list[tuple[int, str]]) -> int:
    """The image count of line 1, once line 2 is checked to hold the 40 names in CelebA's order."""
    if len(lines) < 2:
        raise FaceLLMError(f"{path}: not a CelebA attribute file (expected a count, the 40 names, then rows)")
    (count_line, count_text), (names_line, names_text) = lines[:2]
    if not count_text.strip().isdigit():
        raise FaceLLMError(
            f"{path}:{count_line}: expected the number of images, found {count_text.strip()!r}"
        )
    names = tuple(names_text.split())
    if names != ATTRIBUTES:
        wrong = next((n for n, (a, b) in enumerate(zip(names, ATTRIBUTES, strict=False)) if a != b), None)
        detail = (
            f"{len(names)} names, expected {len(ATTRIBUTES)}" if wrong is None
            else f"name {wrong + 1} is {names[wrong]!r}, expected {ATTRIBUTES[wrong]!r}"
        )  # fmt: skip
        raise FaceLLMError(f"{path}:{names_line}: not CelebA's 40 attribute names ({detail})")
    return int(count_text)


def read_attributes(path: Path) -> dict[str, Attributes]:
    """Image -> its attributes, every line checked."""
    lines = [(number, text) for number, text in text_lines(path) if text.strip()]
    count = _header(path, lines)
    found, seen = {}, FirstSeen()
    for number, text in lines[2:]:
        image, *values = text.split()
        if len(values) != len(ATTRIBUTES):
            raise FaceLLMError(f"{path}:{number}: {len(values)} attribute values, expected {len(ATTRIBUTES)}")
        seen.check(image, path, number)
        if not VALUES.issuperset(values):
            name, value = next((n, v) for n, v in zip(ATTRIBUTES, values, strict=True) if v not in VALUES)
            raise FaceLLMError(f"{path}:{number}: {name} is {value!r}, expected 1 or -1")
        # bit n is attribute n: the values reversed, each -1 a 0 (a string operation, fast on 202,599 rows)
        found[image] = Attributes(int("".join(reversed(values)).replace("-1", "0"), 2))
    if len(found) != count:
        raise FaceLLMError(f"{path}:{lines[0][0]}: says {count} images, the file lists {len(found)}")
    return found


def read_partition(path: Path, split: str) -> list[tuple[int, str]]:
    """(line, image) of every image of SPLIT, every line checked."""
    chosen, seen = [], FirstSeen()
    for number, text in text_lines(path):
        if not text.strip():
            continue
        fields = text.split()
        if len(fields) != 2:
            raise FaceLLMError(f"{path}:{number}: expected `<image> 0|1|2`, found {text.strip()!r}")
        seen.check(fields[0], path, number)
        if one_of(path, number, "partition", fields[1], PARTITIONS) == split:
            chosen.append((number, fields[0]))
    return chosen


def load_split(root: Path, split: str) -> Loaded:
    require_root(root, TITLE)
    if split not in SPLITS:
        raise FaceLLMError(f"split {split!r} is not one of {', '.join(SPLITS)} (CelebA's partition)")
    attributes_path = existing(root, ATTRIBUTES_FILE, "attribute file")
    partition_path = existing(root, PARTITION_FILE, "partition file")
    image_root = existing(root, IMAGE_FOLDER, "image folder", folder=True)
    attributes = read_attributes(attributes_path)
    records = []
    for number, image in read_partition(partition_path, split):
        if image not in attributes:
            raise FaceLLMError(f"{partition_path}:{number}: image {image!r} has no row in {attributes_path}")
        image_inside(image_root, image, f"{partition_path}:{number}")
        records.append(SourceRecord(file=image, labels=attributes[image], split=split))
    if not records:
        raise FaceLLMError(f"{partition_path}: no image of the {split} split")
    return Loaded(image_root, records, {})
