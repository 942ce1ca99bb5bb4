"""Synthetic sample faces in the FairFace layout, so the real FairFace code path runs with no licensed data.

The faces are drawn (ellipse head, eyes, brows, nose, mouth, hair) from a seeded generator; the labels are
assigned to cover every race group, both genders and the age bins, and steer only a few drawing choices
(face size for children, grey hair past 60). They are placeholders for the pipeline, not data to learn from.

    python -m facellm.testing.sample_faces --out assets/fairface-sample --count 16
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

from facellm.common.cli import run_cli
from facellm.data.fairface import AGE_BINS, COLUMNS, GENDERS, IMAGE_FOLDERS, RACES, FaceRecord

IMAGE_SIZE = 224  # FairFace crops are 224 x 224
SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 129), (198, 134, 96), (141, 85, 54), (92, 58, 38)]
HAIR_COLOURS = [(20, 16, 14), (70, 45, 30), (120, 80, 40), (200, 160, 90), (150, 40, 20)]


def sample_records(count: int, split: str = "val") -> list[FaceRecord]:
    """Labels that cycle through every race, gender and age bin (deterministic, no randomness needed)."""
    return [
        FaceRecord(
            file=f"{split}/{index + 1}.jpg",
            age=AGE_BINS[(index * 4 + 3) % len(AGE_BINS)],
            gender=GENDERS[index % len(GENDERS)],
            race=RACES[index % len(RACES)],
        )
        for index in range(count)
    ]


def draw_face(record: FaceRecord, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    background = tuple(rng.randrange(60, 230) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    scale = 0.8 if record.is_child else 1.0
    cx, cy = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-4, 8)
    half_w, half_h = 62 * scale * rng.uniform(0.9, 1.05), 80 * scale * rng.uniform(0.92, 1.05)
    skin = rng.choice(SKIN_TONES)
    grey = record.age in ("60-69", "more than 70")
    hair = (185, 185, 185) if grey else rng.choice(HAIR_COLOURS)
    long_hair = record.gender == "Female" and rng.random() < 0.8

    if long_hair:
        draw.rounded_rectangle(
            (cx - half_w - 14, cy - half_h - 6, cx + half_w + 14, cy + half_h + 30), radius=40, fill=hair
        )
    draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=skin)
    draw.chord((cx - half_w - 2, cy - half_h - 8, cx + half_w + 2, cy - half_h * 0.1), 180, 360, fill=hair)

    eye_y, eye_dx = cy - half_h * 0.18, half_w * 0.42
    iris = rng.choice([(60, 40, 20), (40, 90, 140), (70, 110, 60)])
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - 11, eye_y - 6, ex + 11, eye_y + 6), fill=(250, 250, 250))
        draw.ellipse((ex - 5, eye_y - 5, ex + 5, eye_y + 5), fill=iris)
        draw.line((ex - 13, eye_y - 15, ex + 13, eye_y - 17 - rng.uniform(0, 4)), fill=hair, width=4)
    draw.line(
        (cx, eye_y + 8, cx - 6, cy + half_h * 0.22, cx + 4, cy + half_h * 0.25), fill=(120, 70, 50), width=2
    )

    mouth_y, mouth_w = cy + half_h * 0.5, half_w * 0.38
    smile = rng.uniform(-6, 14)
    draw.arc(
        (cx - mouth_w, mouth_y - 10, cx + mouth_w, mouth_y + 10 + smile), 15, 165, fill=(150, 40, 50), width=4
    )
    if record.gender == "Male" and not record.is_child and rng.random() < 0.4:
        draw.chord((cx - half_w * 0.8, cy + half_h * 0.25, cx + half_w * 0.8, cy + half_h), 0, 180, fill=hair)
    return image


def write_sample(out: Path, count: int = 16, seed: int = 0, split: str = "val") -> Path:
    """Write ROOT/fairface_label_<split>.csv and the images; returns ROOT."""
    records = sample_records(count, split)
    image_root = out / IMAGE_FOLDERS[0]
    (image_root / split).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for record in records:
        draw_face(record, rng).save(image_root / record.file, quality=90)
    with (out / f"fairface_label_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for record in records:
            writer.writerow([record.file, record.age, record.gender, record.race, "True"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.sample_faces",
        description="Draw synthetic faces and write them in the FairFace layout (labels CSV + image folder).",
    )
    parser.add_argument("--out", default="assets/fairface-sample", help="FairFace root to write")
    parser.add_argument("--count", type=int, default=16, help="number of faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val", choices=["train", "val"])
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    root = write_sample(Path(args.out), args.count, args.seed, args.split)
    print(f"wrote {args.count} faces to {root}")


if __name__ == "__main__":
    run_cli(main)
