"""Preflight: check a recipe's dataset before any GPU time is spent on it.

LLaMA-Factory finds a missing image, an unbalanced `<image>` tag or a broken conversation only while it
tokenises (after the model is loaded) or, worse, never: a conversation that does not alternate is dropped
with a warning and a long sample is silently truncated. Here every record is read as LLaMA-Factory reads it
(facellm.common.datasets: its registry parser, loader arguments and format converters, so every format,
column and tag name it accepts is accepted here) and checked up front:

  * every image exists, decodes, and a relative path does not lead out of `media_dir` (an absolute path is
    taken as it is, as LLaMA-Factory takes it);
  * one `<image>` tag per image of the record;
  * LLaMA-Factory would not skip the record: its converter takes the roles (user or observation, then
    assistant or function call, an optional system turn first) and it ends with an answer;
  * no turn is empty, and LLaMA-Factory's converter does not fail on the record;
  * the length in tokens against `cutoff_len` (estimated: the chat template's text through the model's own
    tokenizer, plus each image's tokens as the intern_vl template expands them); a record whose text is too
    long to fit whatever it holds is listed as over-long without being tokenised (memory stays bounded);
  * a dataset holds at least one record.

    python -m facellm.train.preflight RECIPE [key=value ...]

Each problem is listed with its record index (0-based, in the order LLaMA-Factory loads the rows) and the run
stops before any model is loaded. `train.sh` runs the same check first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from facellm.common.cli import FaceLLMError, first_line, run_cli
from facellm.common.datasets import Record, open_datasets
from facellm.common.files import write_json_atomic
from facellm.common.sharegpt import IMAGE_TAG
from facellm.train.recipes import check_config, load_recipe, parse_overrides, template_system_prompt

SHOWN_PER_KIND = 10
# texts are tokenised in batches of at most this many records and characters, so that memory stays bounded
BATCH_RECORDS = 1024
BATCH_CHARS = 1 << 20


@dataclass
class Problem:
    dataset: str
    index: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.dataset} record {self.index}: {self.detail}"


@dataclass
class Report:
    records: int = 0
    images: int = 0
    problems: list[Problem] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    cutoff_len: int | None = None
    notes: list[str] = field(default_factory=list)
    # records far longer than cutoff_len, not tokenised: (dataset, index, characters of text)
    overlong: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def truncated(self) -> int:
        if not self.cutoff_len:
            return 0
        return sum(length > self.cutoff_len for length in self.lengths) + len(self.overlong)

    def summary(self) -> dict:
        lengths = sorted(self.lengths)

        def pick(q: float) -> int | None:
            return lengths[min(len(lengths) - 1, int(q * len(lengths)))] if lengths else None

        return {
            "records": self.records,
            "images": self.images,
            "problems": Counter(p.kind for p in self.problems),
            "tokens": {"min": pick(0), "median": pick(0.5), "p95": pick(0.95), "max": pick(1.0)},
            "cutoff_len": self.cutoff_len,
            "truncated": self.truncated,
            "overlong": [{"dataset": d, "index": i, "characters": n} for d, i, n in self.overlong],
            "notes": self.notes,
        }

    def text(self) -> str:
        lines = [f"preflight: {self.records} records, {self.images} distinct images"]
        shown = Counter()
        for problem in self.problems:
            shown[problem.kind] += 1
            if shown[problem.kind] <= SHOWN_PER_KIND:
                lines.append(f"  {problem}")
        for kind, count in shown.items():
            if count > SHOWN_PER_KIND:
                lines.append(f"  ... and {count - SHOWN_PER_KIND} more '{kind}' problems")
        if self.lengths or self.overlong:
            tokens = self.summary()["tokens"]
            counted = (
                f"min {tokens['min']}, median {tokens['median']}, p95 {tokens['p95']}, max {tokens['max']}"
                if self.lengths
                else "none counted"
            )
            lines.append(
                f"  tokens per sample (estimated): {counted}; cutoff_len {self.cutoff_len}: "
                f"{self.truncated} of {len(self.lengths) + len(self.overlong)} samples would be truncated"
            )
        for dataset, index, characters in self.overlong[:SHOWN_PER_KIND]:
            lines.append(
                f"  {dataset} record {index}: over-long: {characters:,} characters of text, far beyond "
                f"cutoff_len {self.cutoff_len} (truncated in training; not tokenised here)"
            )
        if len(self.overlong) > SHOWN_PER_KIND:
            lines.append(f"  ... and {len(self.overlong) - SHOWN_PER_KIND} more over-long records")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _decode(path: Path) -> str | None:
    """None when the image decodes, else why not."""
    if not path.is_file():
        return "not found"
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # any decoder failure makes a bad image, whatever PIL raises
        return f"does not decode ({first_line(error, named=True)})"
    return None


def _text_of(converted: dict, system: str) -> str:
    """The training text of a converted record as the intern_vl template lays it out (ChatML), images left
    out: the record's own system prompt (or SYSTEM) and tools, then the turns."""
    head = (converted.get("_system") or system) + str(converted.get("_tools") or "")
    parts = [f"<|im_start|>system\n{head}<|im_end|>\n"] if head else []
    for turn in [*converted["_prompt"], *converted["_response"]]:
        speaker = "assistant" if turn["role"] in ("assistant", "function") else "user"
        parts.append(f"<|im_start|>{speaker}\n{turn['content'].replace(IMAGE_TAG, '')}<|im_end|>\n")
    return "".join(parts)


def _length_counter(config: dict, report: Report):
    """(count, tokens per image, most characters worth tokenising): count is a function texts -> token
    counts with the recipe's model tokenizer, or None (and a note) when the tokenizer cannot be loaded here
    (e.g. a hub model on an offline machine)."""
    model = str(config.get("model_name_or_path", ""))
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
    except Exception as error:  # any loading failure only skips the length estimate
        report.notes.append(
            f"token lengths not checked: cannot load the processor of {model} ({first_line(error)})"
        )
        return None, 0, 0
    tokenizer = processor.tokenizer
    # <img> + image_seq_length x <IMG_CONTEXT> + </img> for each tile; one tile unless crop_to_patches
    per_image = int(getattr(processor, "image_seq_length", 256)) + 2
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "crop_to_patches", False):
        per_image *= int(getattr(image_processor, "max_patches", 12)) + 1
        report.notes.append("crop_to_patches is on: image tokens counted at the maximum number of tiles")

    # A token stands for at most as many characters as its string in the vocabulary has (byte-level BPE, as
    # in Qwen2 and so InternVL3, spells a token with one character per byte, and a text character is at
    # least one byte). A text of more than cutoff_len x the longest vocabulary string therefore has more
    # than cutoff_len tokens whatever it holds: it is truncated, and is reported so without being tokenised
    # (a tokenizer holds hundreds of bytes per token: one 10 MB answer took 2.6 GB). An exotic tokenizer
    # that fuses unknown characters into one token can break this bound; it then only flags a truncation.
    longest = max(map(len, tokenizer.get_vocab()), default=1)
    max_chars = report.cutoff_len * max(longest, 1)
    backend = getattr(tokenizer, "backend_tokenizer", None)

    def count(texts: list[str]) -> list[int]:
        if backend is not None:  # a fast tokenizer: count without making Python lists of every id
            return [len(encoding) for encoding in backend.encode_batch(texts, add_special_tokens=False)]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    return count, per_image, max_chars


def _record_problems(record: Record, media_dir: str) -> list[tuple[str, str]]:
    """(kind, detail) of what is wrong with RECORD before its images are opened."""
    if record.failure:
        return [
            ("conversation", f"LLaMA-Factory's converter fails on it ({record.failure}): training would stop")
        ]
    if record.skipped:
        return [("roles", f"LLaMA-Factory would skip it: {record.skipped}")]
    found = []
    for number, turn in enumerate(record.messages):
        content = turn.get("content")
        if not isinstance(content, str):
            found.append(("conversation", f"turn {number} ({turn['role']}) is not text: {content!r}"))
        elif not content.replace(IMAGE_TAG, "").strip():
            found.append(("empty turn", f"turn {number} ({turn['role']}) is empty"))
    if record.image_tags != len(record.images):
        found.append(
            ("image tags", f"{record.image_tags} {IMAGE_TAG} tag(s) for {len(record.images)} image(s)")
        )
    for media in record.images:
        if media.escapes:
            found.append(("image path", f"image {media.written!r} escapes media_dir {media_dir}"))
        elif media.path is None and not isinstance(media.written, (bytes, dict, Image.Image)):
            found.append(("images", f"image {media.written!r} is neither a path nor an image"))
    return found


def _scan(found: list, media_dir: str, report: Report, image_users: dict, image_counts: list, texts_of):
    """Check every record, collecting its problems in REPORT and its images in IMAGE_USERS; yield the text
    of each sound record when TEXTS_OF (system prompt, most characters worth tokenising) is given, and its
    number of images in IMAGE_COUNTS. A record too long to fit whatever it holds is listed as over-long."""
    for dataset in found:
        if not dataset.local:
            report.notes.append(f"dataset {dataset.name!r} is not a local file: not checked")
            continue
        for record in dataset.records():
            report.records += 1
            problems = _record_problems(record, media_dir)
            report.problems += [
                Problem(dataset.name, record.index, kind, detail) for kind, detail in problems
            ]
            if record.failure or record.skipped:
                continue
            for media in record.images:
                if media.path is not None and not media.escapes:
                    image_users.setdefault(media.path, []).append((dataset.name, record.index, media.written))
            if texts_of is None or problems:
                continue
            system, max_chars = texts_of
            text = _text_of(record.converted, system)
            if len(text) > max_chars:
                report.overlong.append((dataset.name, record.index, len(text)))
            else:
                image_counts.append(len(record.images))
                yield text


def _check_images(image_users: dict, media_dir: str, report: Report, progress: bool) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = pool.map(_decode, map(Path, image_users))
        bar = tqdm(
            outcomes, total=len(image_users), desc="preflight: images", unit="image", disable=not progress
        )
        for image, failure in zip(image_users, bar, strict=True):
            if failure:
                for name, index, written in image_users[image]:
                    kind = "missing image" if failure == "not found" else "bad image"
                    where = "" if os.path.isabs(written) else f" under media_dir {media_dir}"
                    report.problems.append(Problem(name, index, kind, f"image {written} {failure}{where}"))


def check_dataset(config: dict, source: str = "recipe", progress: bool = True) -> Report:
    """Every record of the recipe's datasets, read as LLaMA-Factory reads them (facellm.common.datasets)."""
    report = Report(cutoff_len=int(config["cutoff_len"]) if config.get("cutoff_len") else None)
    if not str(config.get("dataset") or "").strip():
        raise FaceLLMError(f"{source}: no 'dataset' to train on")
    dataset_dir = str(config.get("dataset_dir", "data"))
    media_dir = str(config.get("media_dir") or dataset_dir)
    found = open_datasets(dataset_dir, str(config["dataset"]), media_dir)
    count_tokens, per_image, max_chars = (
        _length_counter(config, report) if report.cutoff_len else (None, 0, 0)
    )
    system = config.get("default_system") or template_system_prompt(str(config.get("template", "intern_vl")))
    image_users: dict[str, list[tuple[str, int, object]]] = {}
    image_counts, counts = [], []
    texts_of = (system, max_chars) if count_tokens else None
    texts = _scan(found, media_dir, report, image_users, image_counts, texts_of)
    bar = tqdm(_batches(texts), desc="preflight: records", unit="batch", disable=not progress)
    for batch in bar:  # the texts are tokenised as the records are read: a batch at a time in memory
        counts += count_tokens(batch)
    report.images = len(image_users)
    _check_images(image_users, media_dir, report, progress)
    report.problems.sort(key=lambda p: (p.dataset, p.index))
    if count_tokens:
        report.lengths = [n + per_image * k for n, k in zip(counts, image_counts, strict=True)]
    return report


def _batches(texts):
    """TEXTS in order, in batches of at most BATCH_RECORDS texts and BATCH_CHARS characters (or one text)."""
    batch, size = [], 0
    for text in texts:
        if batch and (len(batch) == BATCH_RECORDS or size + len(text) > BATCH_CHARS):
            yield batch
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        yield batch


def run_preflight(
    config: dict, source: str, report_path: Path | None = None, progress: bool = True
) -> Report:
    """Check, print the report, save it (when REPORT_PATH), and stop with an error if anything is wrong."""
    report = check_dataset(config, source, progress)
    print(report.text(), file=sys.stderr)
    if report_path is not None:
        write_json_atomic(
            report_path, {**report.summary(), "problem_list": [p.__dict__ for p in report.problems]}
        )
    if report.problems:
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(p.kind for p in report.problems).items())
        raise FaceLLMError(f"{source}: dataset check failed ({kinds}); fix the records listed above")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.train.preflight",
        description="Check the dataset of a training recipe (images, <image> tags, roles, empty turns, token "
        "lengths against cutoff_len) without loading the model. Exit 0 when it is ready to train on.",
    )
    parser.add_argument("recipe", type=Path, help="a recipe in configs/")
    parser.add_argument("overrides", nargs="*", help="key=value pairs, as for train.sh")
    parser.add_argument("--report", type=Path, default=None, help="also write the full report as JSON here")
    args = parser.parse_intermixed_args(argv)
    recipe, overrides = load_recipe(args.recipe), parse_overrides(args.overrides)
    check_config(recipe, overrides, str(args.recipe))
    config = {**recipe, **overrides}
    report = run_preflight(config, str(args.recipe), args.report)
    print(f"preflight: ok ({report.records} records)")


if __name__ == "__main__":
    run_cli(main)
