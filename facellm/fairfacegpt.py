"""FairFaceGPT generation: question-answer pairs about every FairFace image, grounded in its labels.

Stage 1 of the pipeline. Reads a FairFace root (labels CSV + image folder), writes a ShareGPT `dataset.json`
plus the `dataset_info.json` that registers it for LLaMA-Factory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from facellm import qa_labels, sharegpt
from facellm.cli import FaceLLMError
from facellm.fairface import SPLITS, load_split, require_images

BACKENDS = ("labels",)


def generate(fairface_root: Path, split: str, out: Path, limit: int | None, backend: str) -> Path:
    if backend not in BACKENDS:
        raise FaceLLMError(f"backend {backend!r} is not available (choose from {', '.join(BACKENDS)})")
    image_root, faces = load_split(fairface_root, split)
    if limit is not None:
        faces = faces[:limit]
    require_images(image_root, faces)

    records = []
    for face in tqdm(faces, desc=f"FairFaceGPT [{backend}]", unit="image"):
        for _aspect, question, answer in qa_labels.qa_pairs(face):
            records.append(sharegpt.record(question, answer, face.file))
    dataset_path, info_path = sharegpt.write_dataset(out, records)
    print(f"{len(records)} QA pairs about {len(faces)} images -> {dataset_path} (registered in {info_path})")
    print(f"image paths are relative to {image_root}: pass it to training as media_dir")
    return dataset_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python fairfacegpt.py",
        description="Generate the FairFaceGPT question-answer dataset from FairFace labels and images. "
        "Writes OUT/dataset.json (ShareGPT) and OUT/dataset_info.json (LLaMA-Factory registration).",
    )
    parser.add_argument(
        "--fairface-root",
        type=Path,
        default=Path("data/fairface"),
        help="folder holding fairface_label_<split>.csv and fairface-img-margin025-trainval/ "
        "(or fairface_img_margin025/) (default: %(default)s)",
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="val", help="FairFace split (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, default=Path("data/fairfacegpt"), help="output folder")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="labels",
        help="labels: offline answers written from the FairFace labels only (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    generate(args.fairface_root, args.split, args.out, args.limit, args.backend)
