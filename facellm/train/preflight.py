"""Preflight: check a recipe's dataset before any GPU time is spent on it.

LLaMA-Factory finds a missing image, an unbalanced `<image>` tag or a broken conversation only while it
tokenises (after the model is loaded) or, worse, never: a conversation that does not alternate is dropped
with a warning and a long sample is silently truncated. Here every record is checked up front:

  * every image exists, decodes, and its path stays inside `media_dir`;
  * one `<image>` tag per image of the record;
  * roles alternate human / assistant (an optional system turn first) and end with the assistant;
  * no turn is empty;
  * the length in tokens against `cutoff_len` (estimated: the chat template's text through the model's own
    tokenizer, plus each image's tokens as the intern_vl template expands them); a record whose text is too
    long to fit whatever it holds is listed as over-long without being tokenised (memory stays bounded);
  * a data file holds at least one record.

    python -m facellm.train.preflight RECIPE [key=value ...]

Each problem is listed with its record index (0-based, in file order) and the run stops before any model is
loaded. `train.sh` runs the same check first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from facellm.common.cli import FaceLLMError, first_line, run_cli
from facellm.common.files import write_json_atomic
from facellm.common.sharegpt import IMAGE_TAG, read_registry
from facellm.data.fairface import resolve_inside
from facellm.train.recipes import check_config, load_recipe, parse_overrides, template_system_prompt

SHOWN_PER_KIND = 10
# texts are tokenised in batches of at most this many records and characters, so that memory stays bounded
BATCH_RECORDS = 1024
BATCH_CHARS = 1 << 20
# LLaMA-Factory's defaults for sharegpt columns and tags, used where dataset_info.json does not say
DEFAULT_COLUMNS = {"messages": "conversations", "images": "images", "system": None}
DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}


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


def _dataset_entries(config: dict, source: str) -> list[tuple[str, Path, dict]]:
    """(name, data file, registry entry) for each dataset the recipe trains on."""
    dataset_dir = Path(str(config.get("dataset_dir", "data")))
    names = [n.strip() for n in str(config.get("dataset") or "").split(",") if n.strip()]
    if not names:
        raise FaceLLMError(f"{source}: no 'dataset' to train on")
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise FaceLLMError(f"{info_path}: dataset registry not found (dataset_dir: {dataset_dir})")
    registry = read_registry(info_path)
    entries = []
    for name in names:
        entry = registry.get(name)
        if not isinstance(entry, dict):
            raise FaceLLMError(f"{info_path}: no dataset named {name!r} (known: {', '.join(registry)})")
        if "file_name" not in entry:
            entries.append((name, None, entry))  # a hub or script dataset: checked by LLaMA-Factory
            continue
        path = dataset_dir / entry["file_name"]
        if not path.is_file():
            raise FaceLLMError(f"{path}: data file of dataset {name!r} not found")
        entries.append((name, path, entry))
    return entries


def _read_records(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceLLMError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(records, list):
        raise FaceLLMError(f"{path}: expected a JSON list of records")
    return records


def _conversation_problems(turns, tags: dict) -> list[tuple[str, str]]:
    if not isinstance(turns, list) or not turns:
        return [("conversation", "no conversation")]
    problems = []
    role, content = tags["role_tag"], tags["content_tag"]
    if isinstance(turns[0], dict) and turns[0].get(role) == tags["system_tag"]:
        turns = turns[1:]
    expected = (tags["user_tag"], tags["assistant_tag"])
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            problems.append(("conversation", f"turn {number} is not an object"))
            continue
        want = expected[number % 2]
        if turn.get(role) != want:
            problems.append(("roles", f"turn {number} is from {turn.get(role)!r}, expected {want!r}"))
        value = turn.get(content)
        if not isinstance(value, str) or not value.replace(IMAGE_TAG, "").strip():
            problems.append(("empty turn", f"turn {number} ({turn.get(role)}) is empty"))
    if turns and len(turns) % 2:
        problems.append(("roles", "the conversation does not end with an assistant turn"))
    return problems


def _decode(path: Path) -> str | None:
    """None when the image decodes, else why not."""
    if not path.is_file():
        return "not found"
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # any decoder failure makes a bad image, whatever PIL raises
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"does not decode ({error.__class__.__name__}: {first})"
    return None


def _text_of(turns: list, tags: dict, system: str) -> str:
    """The training text as the intern_vl template lays it out (ChatML), images left out."""
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    for turn in turns:
        speaker = "assistant" if turn.get(tags["role_tag"]) == tags["assistant_tag"] else "user"
        value = str(turn.get(tags["content_tag"], "")).replace(IMAGE_TAG, "")
        parts.append(f"<|im_start|>{speaker}\n{value}<|im_end|>\n")
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


def check_dataset(config: dict, source: str = "recipe", progress: bool = True) -> Report:
    report = Report(cutoff_len=int(config["cutoff_len"]) if config.get("cutoff_len") else None)
    media_dir = Path(str(config.get("media_dir") or config.get("dataset_dir", "data")))
    count_tokens, per_image, max_chars = (
        _length_counter(config, report) if report.cutoff_len else (None, 0, 0)
    )
    system = config.get("default_system") or template_system_prompt(str(config.get("template", "intern_vl")))
    image_users: dict[Path, list[tuple[str, int, str]]] = {}
    texts, image_counts = [], []
    for name, path, entry in _dataset_entries(config, source):
        if path is None:
            report.notes.append(f"dataset {name!r} is not a local file: not checked")
            continue
        columns = {**DEFAULT_COLUMNS, **entry.get("columns", {})}
        tags = {**DEFAULT_TAGS, **entry.get("tags", {})}
        records = _read_records(path)
        if not records:
            raise FaceLLMError(f"{path}: dataset {name!r} holds no records: nothing to train on")
        for index, record in enumerate(records):
            report.records += 1
            found = []
            if not isinstance(record, dict):
                report.problems.append(Problem(name, index, "conversation", "not an object"))
                continue
            turns = record.get(columns["messages"])
            found += _conversation_problems(turns, tags)
            images = (record.get(columns["images"]) or []) if columns["images"] else []
            if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
                found.append(("images", "'images' is not a list of paths"))
                images = []
            if isinstance(turns, list):
                tags_seen = sum(
                    str(t.get(tags["content_tag"], "")).count(IMAGE_TAG) for t in turns if isinstance(t, dict)
                )
                if tags_seen != len(images):
                    found.append(("image tags", f"{tags_seen} {IMAGE_TAG} tag(s) for {len(images)} image(s)"))
            for relative in images:
                try:
                    resolved = resolve_inside(media_dir, relative, f"{path}")
                except FaceLLMError:
                    found.append(("image path", f"image {relative!r} escapes media_dir {media_dir}"))
                    continue
                image_users.setdefault(resolved, []).append((name, index, relative))
            report.problems += [Problem(name, index, kind, detail) for kind, detail in found]
            if count_tokens and isinstance(turns, list) and not found:
                text = _text_of([t for t in turns if isinstance(t, dict)], tags, system)
                if len(text) > max_chars:
                    report.overlong.append((name, index, len(text)))
                else:
                    texts.append(text)
                    image_counts.append(len(images))
    report.images = len(image_users)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = pool.map(_decode, image_users)
        bar = tqdm(
            outcomes, total=len(image_users), desc="preflight: images", unit="image", disable=not progress
        )
        for image, failure in zip(image_users, bar, strict=True):
            if failure:
                for name, index, relative in image_users[image]:
                    kind = "missing image" if failure == "not found" else "bad image"
                    detail = f"image {relative} {failure} under media_dir {media_dir}"
                    report.problems.append(Problem(name, index, kind, detail))
    report.problems.sort(key=lambda p: (p.dataset, p.index))

    if count_tokens and texts:
        counts = []
        for batch in tqdm(_batches(texts), desc="preflight: tokens", unit="batch", disable=not progress):
            counts += count_tokens(batch)
        report.lengths = [n + per_image * k for n, k in zip(counts, image_counts, strict=True)]
    return report


def _batches(texts: list[str]):
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
