"""Leaving out, before generation, the source images FaceXBench shows: its questions must not be trained on.

FaceXBench draws its images from public face datasets, five of which FairFaceGPT reads as label sources.
`FACEXBENCH_DRAWS` says which question files draw from each source and from which of its splits, where that
is known. Without the benchmark images, `benchmark_warning` is the line to print: which files draw from the
source and the flag that leaves their images out. With them (`--exclude-benchmark DIR`, DIR being
FaceXBench's `benchmark/` folder: the question files and `images/<file>/question_<n>[_<k>].png`),
`exclude_overlap` drops every record whose image is a (near-)copy of a benchmark image.

The comparison is facellm.eval.contamination's: a pHash and a dHash (256 bits each) of every image, an
overlap when both Hamming distances are within its thresholds (re-encoded, rescaled and slightly brightened
copies are caught; mirrored or cropped ones are not). Every benchmark image is compared, not only those of the
files drawing from the source: a face may be shown by another file too. The hashes are cached (JSONL keyed
by path, size and modification time), so a rerun or a resumed run hashes only what is new; CelebA's 200k
images are hashed in a process pool, and compared to the benchmark's in vectorised chunks.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facellm.common.cli import FaceLLMError
from facellm.common.files import write_json_atomic
from facellm.data.sources import registry
from facellm.eval.contamination import (
    DHASH_THRESHOLD,
    HASH_BITS,
    PHASH_THRESHOLD,
    HashCache,
    nearest_overlaps,
)
from facellm.eval.facexbench import image_files, load_benchmark

FLAG = "--exclude-benchmark"
DEFAULT_BENCHMARK = Path("data/facexbench/benchmark")  # where the evaluation reads FaceXBench by default
REPORT = "benchmark_overlap.json"
HASH_CACHE = "benchmark_hashes.jsonl"
EXAMPLES = 5
SLICE = 8192  # records compared at a time: the comparison's progress bar moves per slice
LAYOUT = "the question files (*.json) and their images as images/<file>/question_<n>[_<k>].png beside them"


@dataclass(frozen=True)
class Draw:
    """The FaceXBench question files showing a source's images: the file names start with one of PREFIXES;
    SPLIT is the source split they come from, None when it is not known (then any split may overlap);
    CAVEAT is what the hashes of the source's images may miss."""

    prefixes: tuple[str, ...]
    split: str | None
    caveat: str | None = None


# Where this comes from: the 48 question files of FaceXBench's benchmark/ folder
# (github.com/Kartik-3004/facexbench, commits 4ebf1450 and b949c91f), their names and their `dataset` field
# (fairface, utkface, celeba, celebamaskhq, rafdb, affectnet).
# Splits: only RAF-DB's is named (rafdb_{single,multiple}_mcq_train.json show RAF-DB's train images). The
# `_test` of the FairFace and UTKFace files is FaceXBench's own naming: FairFace publishes only train and
# val, UTKFace no split at all. celebamaskhq_*_{test,val} name CelebAMask-HQ's split, not CelebA's partition,
# and CelebAMask-HQ's 30k faces are CelebA images. celeba_* and affectnet_* name no split.
FACEXBENCH_DRAWS: dict[str, Draw] = {
    "fairface": Draw(("fairface_",), None),
    "utkface": Draw(("utkface_",), None),
    "celeba": Draw(
        ("celeba_", "celebamaskhq_"), None,
        "celebamaskhq_* show CelebA-HQ faces (1024 x 1024, made anew from CelebA's in-the-wild photos with "
        "another crop), which the hashes of the aligned CelebA images may not match",
    ),
    "rafdb": Draw(
        ("rafdb_",), "train",
        "the aligned faces (Image/aligned/) are compared: a benchmark image cut otherwise is not caught",
    ),
    "affectnet": Draw(
        ("affectnet_",), None,
        "AffectNet's whole pictures are compared: a benchmark image cropped to the face is not caught",
    ),
}  # fmt: skip


def drawing_files(source_name: str, names: list[str]) -> list[str]:
    """The question file NAMES (stems) whose images come from the source."""
    draw = FACEXBENCH_DRAWS.get(source_name)
    return [name for name in names if draw and name.startswith(draw.prefixes)]


def benchmark_warning(source_name: str, split: str, benchmark_dir: Path | None = None) -> str | None:
    """The line to print when a run generates from SOURCE_NAME's SPLIT without the benchmark images: which
    FaceXBench files show this source's images (those of BENCHMARK_DIR when it holds any, else their name
    prefixes), whether SPLIT is theirs, and the flag that leaves them out. None when FaceXBench does not draw
    from the source, or draws from another of its splits."""
    draw = FACEXBENCH_DRAWS.get(source_name)
    if draw is None or (draw.split is not None and draw.split != split):
        return None
    title = registry.get(source_name).title
    found = []
    if benchmark_dir is not None and benchmark_dir.is_dir():
        found = drawing_files(source_name, sorted(path.stem for path in benchmark_dir.glob("*.json")))
    if found:
        files = f"{', '.join(f'{name}.json' for name in found)} in {benchmark_dir}"
    else:
        files = " and ".join(f"{prefix}*" for prefix in draw.prefixes) + " question files"
    if draw.split is not None:
        which = f"{title} {draw.split} images, the split generated here"
    elif len(registry.get(source_name).splits) == 1:
        which = f"{title} images, and {title} has no split that leaves them out"
    else:
        which = f"{title} images from splits it does not name (the {split} split may hold them)"
    return (
        f"warning: FaceXBench shows {which}: {files}; pass {FLAG} DIR (FaceXBench's benchmark/ folder with "
        "its images) to leave them out"
    )


def benchmark_images(benchmark_dir: Path) -> dict[Path, tuple[str, str]]:
    """Every image the question files of BENCHMARK_DIR show -> (the file (stem) showing it first, its path
    there as written)."""
    tasks = load_benchmark(benchmark_dir)  # refuses a missing folder and one without question files
    images: dict[Path, tuple[str, str]] = {}
    missing: list[str] = []
    questions = 0
    for task in tasks:
        for number in task.questions:
            questions += 1
            try:
                paths = image_files(task, number, benchmark_dir)
            except FaceLLMError as error:
                missing.append(str(error))
                continue
            for written, path in zip(task.questions[number]["image_paths"], paths, strict=True):
                images.setdefault(path, (task.name, written))
    if not images:
        raise FaceLLMError(
            f"{benchmark_dir}: FaceXBench question files but none of their images, so nothing can be "
            f"excluded; {FLAG} needs the benchmark as released: {LAYOUT}"
        )
    if missing:
        raise FaceLLMError(
            f"{benchmark_dir}: the images of {len(missing)} of {questions} questions are missing, so their "
            f"faces could not be excluded (first: {missing[0]})"
        )
    return images


def check_benchmark(benchmark_dir: Path) -> None:
    """Refuse, before anything is written, a benchmark folder that exclusion could not use."""
    try:
        benchmark_images(benchmark_dir)
    except FaceLLMError as error:
        raise FaceLLMError(f"{FLAG}: {error}") from None


def exclude_overlap(
    records: list,
    image_root: Path,
    source_name: str,
    benchmark_dir: Path,
    cache_path: Path,
    progress: bool = True,
    *,
    workers: int | None = None,
    phash_threshold: int = PHASH_THRESHOLD,
    dhash_threshold: int = DHASH_THRESHOLD,
) -> tuple[list, dict]:
    """(the records whose image matches no benchmark image, in their order; the report). Each record's image
    is IMAGE_ROOT / record.file. An image that cannot be read is kept (generation reports it) and counted
    as unreadable; an unreadable benchmark image stops the run. WORKERS: hashing processes (default: the
    CPUs)."""
    source = registry.get(source_name)
    bench_images = benchmark_images(benchmark_dir)
    paths = [image_root / record.file for record in records]
    workers = workers or os.cpu_count() or 1
    cache = HashCache(cache_path)
    try:
        bench_paths = sorted(bench_images)
        bench_hashes, bench_failed = cache.hashes(bench_paths, workers, "FaceXBench images", progress)
        if bench_failed:
            raise FaceLLMError(next(iter(bench_failed.values())))
        hashes, failed = cache.hashes(paths, workers, f"{source.title} images", progress)
    finally:
        cache.close()
    checked = [index for index, path in enumerate(paths) if path in hashes]
    queries = [hashes[paths[index]] for index in checked]
    bench_list = [bench_hashes[path] for path in bench_paths]
    matches = []
    desc = "comparing with FaceXBench"
    with tqdm(
        total=len(queries), desc=desc, unit="image", disable=not progress or len(queries) <= SLICE
    ) as bar:
        for start in range(0, len(queries), SLICE):
            part = queries[start : start + SLICE]
            matches += nearest_overlaps(part, bench_list, phash_threshold, dhash_threshold)
            bar.update(len(part))
    matched = {index: match for index, match in zip(checked, matches, strict=True) if match is not None}
    by_file = Counter(bench_images[bench_paths[bench]][0] for bench, _, _ in matched.values())
    examples = [
        {
            "file": records[index].file,
            "benchmark_image": bench_images[bench_paths[bench]][1],
            "benchmark_file": bench_images[bench_paths[bench]][0],
            "phash": p,
            "dhash": d,
        }
        for index, (bench, p, d) in list(matched.items())[:EXAMPLES]
    ]
    kept = [record for index, record in enumerate(records) if index not in matched]
    report = {
        "source": source_name,
        "benchmark_dir": str(benchmark_dir),
        "benchmark_images": len(bench_paths),
        "thresholds": {"phash": phash_threshold, "dhash": dhash_threshold, "bits": HASH_BITS},
        "checked": len(checked),
        "excluded": len(matched),
        "kept": len(kept),
        "unreadable": len(failed),
        "unreadable_examples": [failed[path] for path in paths if path in failed][:EXAMPLES],
        "by_benchmark_file": dict(sorted(by_file.items(), key=lambda item: (-item[1], item[0]))),
        "examples": examples,
        "caveat": FACEXBENCH_DRAWS[source_name].caveat if source_name in FACEXBENCH_DRAWS else None,
    }
    return kept, report


def summary_line(report: dict, source_title: str) -> str:
    """One console line: how many of the source's images were left out, against what, and by which file."""
    limits = f"pHash <= {report['thresholds']['phash']}, dHash <= {report['thresholds']['dhash']}"
    against = (
        f"{report['benchmark_images']} FaceXBench images of {report['benchmark_dir']} compared, {limits}"
    )
    if report["excluded"]:
        files = list(report["by_benchmark_file"].items())
        shown = ", ".join(f"{name} {count}" for name, count in files[:6])
        more = f", {len(files) - 6} more files" if len(files) > 6 else ""
        line = (
            f"FaceXBench overlap: {report['excluded']} of {report['checked']} {source_title} images left "
            f"out as near-copies of benchmark images ({against}): {shown}{more}"
        )
    else:
        line = f"FaceXBench overlap: none of {report['checked']} {source_title} images is a copy ({against})"
    if report["unreadable"]:
        line += f"; {report['unreadable']} unreadable, not checked (e.g. {report['unreadable_examples'][0]})"
    return line


def leave_out(config, source, image_root: Path, records: list) -> list:
    """RECORDS of a FairFaceGPT run (CONFIG, a generate.Config) less the images FaceXBench shows
    (--exclude-benchmark: the report in OUT), or RECORDS with a warning naming the benchmark files that draw
    from this source and split."""
    if config.exclude_benchmark is None:
        if warning := benchmark_warning(source.name, config.split, DEFAULT_BENCHMARK):
            print(warning, file=sys.stderr)
        return records
    kept, report = exclude_overlap(
        records, image_root, source.name, config.exclude_benchmark, config.out / HASH_CACHE,
        config.progress,
    )  # fmt: skip
    write_json_atomic(config.out / REPORT, report)
    print(summary_line(report, source.title))
    if report["caveat"]:
        print(f"note: {report['caveat']}")
    return kept
