"""Small copies of UTKFace, CelebA, RAF-DB and AffectNet in their official layouts, with drawn faces.

Each writer lays ROOT out file for file as the release does (facellm.data.sources.<name> describes it):
the same folder and file names, the same label files with the same separators and spacing, JPEG images of
the release's size. The faces are drawn (facellm.testing.sample_faces), so no licensed image or label is
copied; the labels cover every value of each vocabulary, the ones a reader skips included (UTKFace's
malformed names on request, AffectNet's None, Uncertain and No-Face rows). Only what the readers use is
written: RAF-DB's Image/original/, CelebA's other annotation files and AffectNet's automatically annotated
part are left out.

    python -m facellm.testing.label_sources utkface --out saves/utkface-sample
    python -m facellm.testing.label_sources celeba --out saves/celeba-sample
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
from pathlib import Path

from PIL import Image

from facellm.common.cli import FaceLLMError, run_cli
from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.sources import affectnet, celeba, rafdb, utkface
from facellm.testing.sample_faces import draw_face

UTKFACE_LABELS = [  # age, gender code, race code: every code, the ends of the age range
    (0, 0, 0), (1, 1, 1), (4, 0, 2), (9, 1, 3), (16, 0, 4), (23, 1, 0), (35, 0, 1), (47, 1, 2),
    (58, 0, 3), (64, 1, 4), (79, 0, 0), (116, 1, 2),
]  # fmt: skip
# three aligned faces without a race field, named as reported for the release
UTKFACE_MALFORMED = ("39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
                     "61_1_20170109150557335.jpg.chip.jpg")  # fmt: skip
RAFDB_LABELS = {"train": [1, 2, 3, 4, 5, 6, 7, 4, 7], "test": [7, 1, 4, 6]}
AFFECTNET_LABELS = {"train": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1], "val": [3, 0, 7, 2, 9]}
CELEBA_PARTITIONS = (0, 0, 0, 1, 0, 2, 1, 2)  # cycled: every split, train the largest


def face(index: int, rng: random.Random, size: int, gender: str | None = None, age: str | None = None):
    """A drawn face, square, SIZE pixels wide."""
    record = FaceRecord(
        file="", age=age or AGE_BINS[(3 + index * 4) % len(AGE_BINS)],
        gender=gender or GENDERS[index % 2], race=RACES[index % len(RACES)],
    )  # fmt: skip
    image = draw_face(record, rng)
    return image if size == image.width else image.resize((size, size), Image.Resampling.LANCZOS)


def _empty(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FaceLLMError(f"{out}: exists and is not an empty folder; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_utkface(
    root: Path, labels=UTKFACE_LABELS, folder: str = "UTKFace", aligned: bool = True, malformed: bool = False,
    seed: int = 0,
) -> Path:  # fmt: skip
    """ROOT/FOLDER/[age]_[gender]_[race]_[date&time].jpg(.chip.jpg when ALIGNED), 200 x 200; MALFORMED adds
    the release's three names without a race field."""
    images = _empty(root) / folder
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}/utkface")
    suffix = ".jpg.chip.jpg" if aligned else ".jpg"
    names = [
        f"{age}_{gender}_{race}_2017011{index:010d}{suffix}"
        for index, (age, gender, race) in enumerate(labels)
    ]
    names += list(UTKFACE_MALFORMED) if malformed else []
    for index, name in enumerate(names):
        age, gender = (labels[index][0], labels[index][1]) if index < len(labels) else (39, 1)
        drawn = face(index, rng, 200, utkface.GENDERS[gender], utkface.age_bin(age))
        drawn.save(images / name, quality=90)
    return root


def write_celeba(root: Path, count: int = 8, seed: int = 0, flat: bool = False) -> Path:
    """Img/img_align_celeba/000001.jpg ... (178 x 218), Anno/list_attr_celeba.txt and
    Eval/list_eval_partition.txt as released; FLAT puts all three in ROOT, as torchvision expects."""
    parts = (".", ".", "img_align_celeba") if flat else ("Anno", "Eval", "Img/img_align_celeba")
    _empty(root)
    anno, evaluation, images = (root / part for part in parts)
    for folder in (anno, evaluation, images):
        folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}/celeba")
    rows, partition = [], []
    for index in range(count):
        name = f"{index + 1:06d}.jpg"
        values = [rng.choice((1, -1)) for _ in celeba.ATTRIBUTES]
        male = values[celeba.INDEX["Male"]] == 1
        drawn = face(index, rng, 218, "Male" if male else "Female")
        drawn.crop((20, 0, 198, 218)).save(images / name, quality=90)
        rows.append(name + "".join(f" {value:>2}" for value in values))  # the release's spacing
        partition.append(f"{name} {CELEBA_PARTITIONS[index % len(CELEBA_PARTITIONS)]}")
    header = [str(count), " ".join(celeba.ATTRIBUTES) + " "]  # the release's line 2 ends with a space
    (anno / "list_attr_celeba.txt").write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    (evaluation / "list_eval_partition.txt").write_text("\n".join(partition) + "\n", encoding="utf-8")
    return root


def write_rafdb(root: Path, labels: dict[str, list[int]] = RAFDB_LABELS, seed: int = 0) -> Path:
    """EmoLabel/list_patition_label.txt (train then test, as released) and Image/aligned/*_aligned.jpg
    (100 x 100); train images are numbered train_00001, test images test_0001."""
    _empty(root)
    (root / "EmoLabel").mkdir()
    images = root / rafdb.IMAGE_FOLDER
    images.mkdir(parents=True)
    rng = random.Random(f"{seed}/rafdb")
    lines = []
    for split, digits in (("train", 5), ("test", 4)):
        for index, code in enumerate(labels.get(split, []), start=1):
            name = f"{split}_{index:0{digits}d}.jpg"
            face(index, rng, 100).save(images / rafdb.aligned_name(name), quality=90)
            lines.append(f"{name} {code}")
    (root / rafdb.LABEL_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _affectnet_row(file: str, box: tuple[int, int, int, int], code: int, rng: random.Random) -> list[str]:
    x, y, width, height = box
    points = [(x + rng.uniform(0.15, 0.85) * width, y + rng.uniform(0.2, 0.9) * height) for _ in range(68)]
    landmarks = ";".join(f"{value:.2f}" for point in points for value in point)
    valence, arousal = (-2.0, -2.0) if code >= 8 else (rng.uniform(-1, 1), rng.uniform(-1, 1))
    return [file, *map(str, box), landmarks, str(code), f"{valence:.6f}", f"{arousal:.6f}"]


def write_affectnet(root: Path, labels: dict[str, list[int]] = AFFECTNET_LABELS, seed: int = 0) -> Path:
    """Manually_Annotated_file_lists/{training,validation}.csv and Manually_Annotated_Images/<n>/<hex>.jpg:
    whole pictures (not crops) with the face at the listed box."""
    lists, images = _empty(root) / affectnet.LIST_FOLDER, root / affectnet.IMAGE_FOLDER[0]
    lists.mkdir()
    rng = random.Random(f"{seed}/affectnet")
    for split, codes in labels.items():
        with (lists / affectnet.LISTS[split]).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(affectnet.COLUMNS)
            for index, code in enumerate(codes):
                digest = hashlib.sha256(f"{seed}/{split}/{index}".encode()).hexdigest()[:56]
                file = f"{100 + index * 37 % 900}/{digest}.jpg"
                picture = Image.new(
                    "RGB", (320 + 8 * index, 280), tuple(rng.randrange(40, 220) for _ in "rgb")
                )
                box = (rng.randrange(0, 80), rng.randrange(0, 40), 224, 224)
                picture.paste(face(index, rng, 224), box[:2])
                (images / file).parent.mkdir(parents=True, exist_ok=True)
                picture.save(images / file, quality=90)
                writer.writerow(_affectnet_row(file, box, code, rng))
    return root


WRITERS = {
    "utkface": write_utkface,
    "celeba": write_celeba,
    "rafdb": write_rafdb,
    "affectnet": write_affectnet,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.label_sources",
        description="Write a small copy of a label source in its official layout, with drawn faces.",
    )
    parser.add_argument("source", choices=tuple(WRITERS))
    parser.add_argument("--out", type=Path, required=True, help="root to write: a new or empty folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    WRITERS[args.source](args.out, seed=args.seed)
    print(f"{args.source}: written to {args.out}")


if __name__ == "__main__":
    run_cli(main)
