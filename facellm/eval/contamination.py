"""Training images that reappear in FaceXBench (contamination), found by perceptual hashes.

FairFace publishes no test split and is one of FaceXBench's sources, while FaceLLM trains on FairFace val:
some benchmark questions may show faces the model was trained on. This module measures it instead of
assuming it. Every image is reduced to two 256-bit perceptual hashes of its grey levels:

    pHash  the image at 64 x 64 (Lanczos), its 2-D DCT-II, the 16 x 16 lowest frequencies; a bit is set when
           the coefficient is above their median (the constant term left out of the median)
    dHash  the image at 17 x 16; a bit is set when a pixel is brighter than its left neighbour

A benchmark image overlaps a training image when both Hamming distances are within the thresholds (default
pHash <= 24 and dHash <= 28 of 256 bits). On the bundled sample faces a PNG re-encode is at 0 / 0, JPEG at
quality 60 within 8 / 14, rescaling within 6 / 5 and a 20 % brightness change within 22 / 23, while two
different faces -- drawn alike, so harder to tell apart than real photos -- are at least 54 / 43 apart.
Mirrored or cropped copies are not caught. A question overlaps when any of its images does.

    python -m facellm.eval.contamination --benchmark-dir data/facexbench/benchmark \\
        --train data/fairfacegpt/dataset.json --media-dir data/fairface/fairface-img-margin025-trainval \\
        --out saves/facexbench/contamination.json

The hashes are cached (JSONL next to the report, one line per image, keyed by path, size and modification
time), so a rerun, or an interrupted run, hashes only what is new.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from facellm.common.cli import FaceLLMError, run_cli
from facellm.common.datasets import Record, open_datasets, registration
from facellm.common.files import write_json_atomic
from facellm.common.images import images_under, load_image
from facellm.common.ledger import DONE, FAILED, Ledger
from facellm.common.options import add_progress_option
from facellm.common.sharegpt import dataset_info_entry
from facellm.eval.facexbench import image_files, load_benchmark

HASH_BITS = 256
PHASH_THRESHOLD = 24
DHASH_THRESHOLD = 28
FORMATS = {"sharegpt": "ShareGPT", "alpaca": "Alpaca", "openai": "OpenAI"}
METHOD = (
    "pHash (16x16 lowest DCT frequencies of the 64x64 grey image) and dHash (17x16 grey image), 256 bits "
    "each; a benchmark image overlaps a training image when both Hamming distances are within the thresholds"
)


def _dct_matrix(size: int) -> np.ndarray:
    k, n = np.arange(size)[:, None], np.arange(size)[None, :]
    return np.cos(np.pi * (2 * n + 1) * k / (2 * size))


_DCT = _dct_matrix(64)


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.astype(np.uint8)).tobytes(), "big")


def phash(image: Image.Image) -> int:
    grey = np.asarray(image.convert("L").resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:16, :16].flatten()
    return _bits_to_int(low > np.median(low[1:]))


def dhash(image: Image.Image) -> int:
    grey = np.asarray(image.convert("L").resize((17, 16), Image.Resampling.LANCZOS), dtype=np.float64)
    return _bits_to_int((grey[:, 1:] > grey[:, :-1]).flatten())


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def image_hashes(path: Path) -> tuple[int, int]:
    image = load_image(path)  # upright RGB; a clear FaceLLMError for a missing or broken file
    return phash(image), dhash(image)


def _hash_or_error(path: str) -> tuple[str, str | None, str | None, str | None]:
    try:
        p, d = image_hashes(Path(path))
        return path, f"{p:064x}", f"{d:064x}", None
    except FaceLLMError as error:
        return path, None, None, str(error)


def training_images(source: Path, media_dir: Path | None = None) -> list[Path]:
    """The training images: every image file under a folder, or the images of a dataset read as
    LLaMA-Factory reads it (facellm.common.datasets). A dataset file or folder is read by its entry in a
    dataset_info.json of its folder or one above it, else as a FaceLLM ShareGPT file. Image paths are relative
    to MEDIA_DIR, by default the registry's folder (the file's folder), as LLaMA-Factory's media_dir defaults
    to the dataset_dir. Every record's images are counted, also those of a record training would skip."""
    registered = registration(source) if source.exists() else None
    if source.is_dir() and registered is None:
        return images_under(source)
    if not source.exists():
        raise FaceLLMError(f"{source}: no such folder or dataset file")
    dataset_dir, name = registered or (source.parent, source.name)
    registry = None if registered else {name: dataset_info_entry(source.name)}
    root = str(media_dir or dataset_dir)
    found: dict[str, Path] = {}
    for dataset in open_datasets(dataset_dir, [name], root, registry):
        for record in dataset.records():
            _add_images(record, source, root, dataset.attr.formatting, found)
    if not found:
        raise FaceLLMError(f"{source}: no images in this dataset")
    return sorted(found.values())


def _add_images(record: Record, source: Path, root: str, formatting: str, found: dict[str, Path]) -> None:
    """Add the images of RECORD to FOUND, by the path training opens (one that is missing: under ROOT)."""
    kind = FORMATS.get(formatting, formatting)
    for media in record.images:
        if media.escapes:
            raise FaceLLMError(f"{source} record {record.index}: path {media.written!r} escapes {root}")
    if record.failure:
        raise FaceLLMError(
            f"{source}: not a {kind} dataset LLaMA-Factory can read (record {record.index}: {record.failure})"
        )
    for media in record.images:
        if isinstance(media.path, str):
            path = media.path if os.path.exists(media.path) else os.path.join(root, media.path)
            found.setdefault(media.path, Path(os.path.abspath(path)))


class HashCache:
    """Hashes already computed, in a JSONL ledger keyed by path, size and modification time."""

    def __init__(self, path: Path):
        self.ledger = Ledger(path, key_fields=("path", "size", "mtime_ns"))

    @staticmethod
    def key(path: Path) -> tuple:
        stat = path.stat()
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def hashes(self, paths: list[Path], workers: int, desc: str, progress: bool = True) -> tuple[dict, dict]:
        """({path: (phash, dhash)}, {path: error}) for PATHS, hashing (in WORKERS processes) what the cache
        lacks."""
        done, failed, todo = {}, {}, []
        for path in paths:
            try:
                key = self.key(path)
            except OSError as error:
                failed[path] = f"{path}: {error.strerror or error}"
                continue
            entry = self.ledger.get(*key)
            if entry and entry["status"] == DONE:
                done[path] = (int(entry["phash"], 16), int(entry["dhash"], 16))
            else:
                todo.append((path, key))
        keys = dict(todo)
        with tqdm(total=len(todo), desc=desc, unit="image", disable=not progress or not todo) as bar:
            for name, p, d, error in self._run([str(path) for path, _ in todo], workers):
                path = Path(name)
                entry = dict(zip(("path", "size", "mtime_ns"), keys[path], strict=True))
                if error is None:
                    done[path] = (int(p, 16), int(d, 16))
                    self.ledger.append({**entry, "status": DONE, "phash": p, "dhash": d})
                else:
                    failed[path] = error
                    self.ledger.append({**entry, "status": FAILED, "error": error})
                bar.update()
        self.ledger.sync()
        return done, failed

    @staticmethod
    def _run(paths: list[str], workers: int):
        if workers <= 1 or len(paths) < 64:
            yield from map(_hash_or_error, paths)
            return
        # spawn: the caller may hold threads (torch) that a forked child would inherit in a broken state
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            yield from pool.map(_hash_or_error, paths, chunksize=64)

    def close(self) -> None:
        self.ledger.close()


def _words(hashes: list[int]) -> np.ndarray:
    """256-bit integers as rows of four 64-bit words, for vectorised Hamming distances."""
    mask = (1 << 64) - 1
    return np.array([[(h >> (64 * i)) & mask for i in range(4)] for h in hashes], dtype=np.uint64).reshape(
        -1, 4
    )


def nearest_overlaps(
    queries: list[tuple[int, int]],
    train: list[tuple[int, int]],
    phash_threshold: int = PHASH_THRESHOLD,
    dhash_threshold: int = DHASH_THRESHOLD,
    chunk: int = 16,
) -> list[tuple[int, int, int] | None]:
    """For each query (phash, dhash): (training index, phash distance, dhash distance) of the closest training
    image within both thresholds (closest by the sum of the two distances), or None."""
    if not train:
        return [None] * len(queries)
    train_p, train_d = _words([p for p, _ in train]), _words([d for _, d in train])
    query_p, query_d = _words([p for p, _ in queries]), _words([d for _, d in queries])
    found: list[tuple[int, int, int] | None] = []
    for start in range(0, len(queries), chunk):
        p_dist = np.bitwise_count(query_p[start : start + chunk, None, :] ^ train_p[None]).sum(
            -1, dtype=np.int32
        )
        for row, distances in enumerate(p_dist):
            candidates = np.flatnonzero(distances <= phash_threshold)
            best = None
            if candidates.size:
                d_dist = np.bitwise_count(query_d[start + row] ^ train_d[candidates]).sum(-1, dtype=np.int32)
                keep = d_dist <= dhash_threshold
                if keep.any():
                    total = distances[candidates[keep]] + d_dist[keep]
                    pick = int(np.argmin(total))
                    best = (
                        int(candidates[keep][pick]),
                        int(distances[candidates[keep]][pick]),
                        int(d_dist[keep][pick]),
                    )
            found.append(best)
    return found


def _overlaps_by_file(questions: dict, matches: dict, train_list: list[Path]) -> tuple[dict, dict]:
    """({file: counts}, {file: {question: [overlapping images]}}) from each benchmark image's match."""
    files: dict[str, dict] = {}
    overlaps: dict[str, dict] = {}
    for (name, number), images in questions.items():
        row = files.setdefault(
            name, {"questions": 0, "overlapping_questions": 0, "images": 0, "overlapping_images": 0}
        )
        row["questions"] += 1
        row["images"] += len(images)
        hits = []
        for relative, path in images:
            match = matches[path]
            if match is not None:
                index, p, d = match
                hits.append(
                    {
                        "image": relative,
                        "train_image": str(train_list[index]),
                        "phash_distance": p,
                        "dhash_distance": d,
                    }
                )
        if hits:
            row["overlapping_questions"] += 1
            row["overlapping_images"] += len(hits)
            overlaps.setdefault(name, {})[number] = hits
    return files, overlaps


def contamination(
    benchmark_dir: Path,
    train_source: Path,
    media_dir: Path | None = None,
    cache_path: Path | None = None,
    phash_threshold: int = PHASH_THRESHOLD,
    dhash_threshold: int = DHASH_THRESHOLD,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """The report: per benchmark file, its questions with an image that overlaps a training image, and for
    each such image the closest training image and the two distances."""
    tasks = load_benchmark(benchmark_dir)
    questions = {
        (task.name, number): list(
            zip(task.questions[number]["image_paths"], image_files(task, number, benchmark_dir), strict=True)
        )
        for task in tasks
        for number in task.questions
    }
    train_paths = training_images(train_source, media_dir)
    cache = HashCache(cache_path or Path(f"{train_source}.hashes.jsonl"))
    try:
        bench_paths = sorted({path for images in questions.values() for _, path in images})
        bench_hashes, bench_failed = cache.hashes(bench_paths, workers, "benchmark images", progress)
        if bench_failed:
            raise FaceLLMError(next(iter(bench_failed.values())))
        train_hashes, train_failed = cache.hashes(train_paths, workers, "training images", progress)
    finally:
        cache.close()
    train_list = sorted(train_hashes)
    matches = dict(
        zip(
            bench_paths,
            nearest_overlaps(
                [bench_hashes[p] for p in bench_paths],
                [train_hashes[p] for p in train_list],
                phash_threshold,
                dhash_threshold,
            ),
            strict=True,
        )
    )
    files, overlaps = _overlaps_by_file(questions, matches, train_list)
    return {
        "method": METHOD,
        "thresholds": {"phash": phash_threshold, "dhash": dhash_threshold, "bits": HASH_BITS},
        "train": {
            "source": str(train_source),
            "media_dir": str(media_dir) if media_dir else None,
            "images": len(train_hashes),
            "unreadable": len(train_failed),
            "unreadable_examples": sorted(train_failed.values())[:10],
        },
        "benchmark": {"dir": str(benchmark_dir), "files": len(tasks), "questions": len(questions)},
        "overall": {
            "questions": len(questions),
            "overlapping_questions": sum(r["overlapping_questions"] for r in files.values()),
            "images": sum(r["images"] for r in files.values()),
            "overlapping_images": sum(r["overlapping_images"] for r in files.values()),
        },
        "files": files,
        "overlaps": overlaps,
    }


def summary_text(report: dict) -> str:
    overall = report["overall"]
    lines = [
        f"training images: {report['train']['images']} ({report['train']['unreadable']} unreadable) from "
        f"{report['train']['source']}",
        f"overlap (pHash <= {report['thresholds']['phash']}, dHash <= {report['thresholds']['dhash']} of "
        f"{report['thresholds']['bits']} bits): {overall['overlapping_questions']} of {overall['questions']} "
        f"questions, {overall['overlapping_images']} of {overall['images']} images",
    ]
    width = max(len(name) for name in report["files"])
    for name, row in report["files"].items():
        if row["overlapping_questions"]:
            lines.append(
                f"  {name:<{width}} {row['overlapping_questions']:>5} / {row['questions']:<5} questions"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.eval.contamination",
        description="Find FaceXBench questions whose images are (near-)copies of training images, by "
        "perceptual hashes. The report (JSON) goes to --out; pass it to vlmeval/aggregate_results.py "
        "--contamination to see the overlap per file and the accuracy without those questions.",
    )
    parser.add_argument("--benchmark-dir", type=Path, required=True, help="FaceXBench benchmark folder")
    parser.add_argument(
        "--train", type=Path, required=True,
        help="training images: a folder (searched recursively), or a dataset file or folder, read as "
        "LLaMA-Factory reads it (by its entry in a dataset_info.json beside or above it, else as ShareGPT)",
    )  # fmt: skip
    parser.add_argument(
        "--media-dir", type=Path, default=None,
        help="folder the dataset's image paths are relative to (default: the dataset's folder)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="report file (JSON)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="hash cache (JSONL; default: OUT with .hashes.jsonl)"
    )
    parser.add_argument("--phash-threshold", type=int, default=PHASH_THRESHOLD, help="default: %(default)s")
    parser.add_argument("--dhash-threshold", type=int, default=DHASH_THRESHOLD, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="hashing processes")
    add_progress_option(parser)
    args = parser.parse_args(argv)
    for name in ("phash_threshold", "dhash_threshold"):
        if not 0 <= getattr(args, name) <= HASH_BITS:
            parser.error(f"--{name.replace('_', '-')} must be 0 to {HASH_BITS}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    report = contamination(
        args.benchmark_dir, args.train, args.media_dir, args.cache or args.out.with_suffix(".hashes.jsonl"),
        args.phash_threshold, args.dhash_threshold, args.workers, args.progress,
    )  # fmt: skip
    write_json_atomic(args.out, report)
    print(summary_text(report), end="")
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_cli(main)
