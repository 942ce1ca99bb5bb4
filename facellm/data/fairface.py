"""FairFace on disk: label vocabularies, the labels CSV, and image paths that stay inside the dataset root.

Layout (as in the official release):
    ROOT/fairface_label_{train,val}.csv        columns file,age,gender,race,service_test
    ROOT/fairface-img-margin025-trainval/val/  images; `file` in the CSV reads `val/123.jpg`
The folder name `fairface_img_margin025` used by some copies is accepted too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.files import resolve_inside

AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS = ("Male", "Female")
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
COLUMNS = ("file", "age", "gender", "race", "service_test")
IMAGE_FOLDERS = ("fairface-img-margin025-trainval", "fairface_img_margin025")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class FaceRecord:
    file: str  # relative to the image folder, e.g. "val/1.jpg"
    age: str
    gender: str
    race: str

    @property
    def labels(self) -> dict[str, str]:
        """The labels as every source gives them (facellm.data.sources.base.SourceRecord)."""
        return {"age": self.age, "gender": self.gender, "race": self.race}

    @property
    def is_child(self) -> bool:
        return self.age in ("0-2", "3-9")


def labels_csv(root: Path, split: str) -> Path:
    return root / f"fairface_label_{split}.csv"


def find_image_root(root: Path) -> Path:
    """The image folder under ROOT, whichever of the two known names it has."""
    if not root.is_dir():
        raise FaceLLMError(f"{root}: FairFace root folder does not exist")
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise FaceLLMError(f"{root}: no image folder found (expected {' or '.join(IMAGE_FOLDERS)})")


def read_labels(csv_path: Path) -> list[FaceRecord]:
    """Read and validate a FairFace labels CSV; every problem names the file (and the line)."""
    if not csv_path.is_file():
        raise FaceLLMError(f"{csv_path}: labels CSV not found")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet exports
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
            if missing:
                raise FaceLLMError(
                    f"{csv_path}: not a FairFace labels CSV, missing column(s) {', '.join(missing)} "
                    f"(expected {','.join(COLUMNS)})"
                )
            records = [_record(csv_path, reader.line_num, row) for row in reader]
    except UnicodeDecodeError as error:
        raise FaceLLMError(f"{csv_path}: not a text CSV ({error.reason})") from None
    except csv.Error as error:
        raise FaceLLMError(f"{csv_path}: malformed CSV ({error})") from None
    if not records:
        raise FaceLLMError(f"{csv_path}: labels CSV has no rows")
    return records


def _record(csv_path: Path, line: int, row: dict[str, str]) -> FaceRecord:
    for column, vocabulary in (("age", AGE_BINS), ("gender", GENDERS), ("race", RACES)):
        if row.get(column) not in vocabulary:
            raise FaceLLMError(
                f"{csv_path}:{line}: {column} {row.get(column)!r} is not a FairFace label "
                f"(one of {', '.join(vocabulary)})"
            )
    if not row.get("file"):
        raise FaceLLMError(f"{csv_path}:{line}: empty 'file' column")
    return FaceRecord(file=row["file"], age=row["age"], gender=row["gender"], race=row["race"])


def require_images(image_root: Path, faces: list[FaceRecord]) -> None:
    """Stop before any work when an image listed in the labels CSV is not on disk."""
    missing = [face.file for face in faces if not (image_root / face.file).is_file()]
    if missing:
        raise FaceLLMError(
            f"{image_root}: {len(missing)} image(s) listed in the labels CSV are missing, e.g. {missing[0]}"
        )


def load_split(root: Path, split: str) -> tuple[Path, list[FaceRecord]]:
    """The image folder and the validated records of one split."""
    if split not in SPLITS:
        raise FaceLLMError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    csv_path = labels_csv(root, split)
    image_root = find_image_root(root)
    records = read_labels(csv_path)
    first_row: dict[str, int] = {}
    for row, record in enumerate(records, start=2):  # line 1 is the header
        path = resolve_inside(image_root, record.file, str(csv_path))
        if (seen := first_row.setdefault(str(path), row)) != row:
            raise FaceLLMError(
                f"{csv_path}:{row}: image {record.file!r} is listed twice (first on line {seen})"
            )
    return image_root, records
