"""The files of a training mix (facellm.data.mix): who wrote them, re-rooted records, the mixed recipe.

OUT/mix.json records the digests of the files mix wrote; any other file in their place (or one changed since)
is refused, never overwritten. train.yaml is the base recipe rewritten line by line, every comment and block
kept, and read back to check that it holds exactly the base's keys with the mix's changes.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

from facellm.common.cli import FaceLLMError
from facellm.common.files import (
    REPO,
    read_json,
    resolve_inside,
    write_json_atomic,
    write_text_atomic,
)
from facellm.common.ledger import DONE, FAILED, Ledger
from facellm.data import items as qa_items
from facellm.data import overlap
from facellm.data.generate import LEDGER

MARK = "facellm.data.mix"
MIXED = ("dataset_dir", "dataset", "media_dir", "mix_strategy", "interleave_probs")  # set by the mix
BLOCK = {key: "dataset" for key in MIXED} | {"output_dir": "output"}  # where a key the base lacks goes


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Owned:
    """The files of OUT that mix wrote (mix.json: path -> digests): only those are ever overwritten."""

    def __init__(self, out: Path):
        self.out, self.marker = out, out / "mix.json"
        previous = read_json(self.marker) if self.marker.is_file() else {"written_by": MARK, "files": {}}
        if not isinstance(previous, dict) or previous.get("written_by") != MARK:
            raise FaceLLMError(f"{self.marker}: not written by {MARK}; choose another out")
        self.record = previous
        self.files: dict[str, list[str]] = dict(previous.get("files") or {})

    def check(self, relative: str) -> None:
        path = self.out / relative
        if path.exists() and (not path.is_file() or _digest(path) not in self.files.get(relative, ())):
            raise FaceLLMError(
                f"{path}: not written by {MARK} (or changed since); move it away or choose another out"
            )

    def write(self, relative: str, text: str) -> None:
        new = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.files[relative] = [*self.files.get(relative, [])[-1:], new]  # a crash here leaves either
        write_json_atomic(self.marker, {**self.record, "files": self.files})
        write_text_atomic(self.out / relative, text)
        self.files[relative] = [new]

    def finish(self, record: dict, stale: list[str]) -> None:
        for relative in stale:  # files of sources the config no longer names
            (self.out / relative).unlink(missing_ok=True)
            self.files.pop(relative, None)
        self.record = {"written_by": MARK, **record}
        write_json_atomic(self.marker, {**self.record, "files": self.files})


def shown(path: Path | str) -> str:
    """PATH as a recipe writes it: relative to the repository root when inside it (as train.sh reads it)."""
    absolute = os.path.abspath(path)
    inside = os.path.commonpath([absolute, str(REPO)]) == str(REPO)
    return os.path.relpath(absolute, REPO) if inside else absolute


def reroot(dataset: Path, image_root: Path, media_dir: str) -> tuple[set[str], list[dict]]:
    """(the images as DATASET names them, its records with each image path relative to MEDIA_DIR instead of
    IMAGE_ROOT); an image that would lead out of MEDIA_DIR is refused."""
    records = read_json(dataset)
    images = set()
    for index, record in enumerate(records):
        images.update(record["images"])
        where = f"{dataset} record {index}"
        moved = []
        for image in record["images"]:
            relative = os.path.relpath(resolve_inside(image_root, image, where), media_dir)
            if relative == os.pardir or relative.startswith(os.pardir + os.sep):
                raise FaceLLMError(f"{where}: image {image!r} escapes media_dir {media_dir}")
            moved.append(relative)
        record["images"] = moved
    return images, records


def probabilities(weights: list[float]) -> list[float]:
    """WEIGHTS normalised, to 6 decimals summing to exactly 1 (datasets samples with numpy, which checks)."""
    total = sum(weights)
    probs = [round(weight / total, 6) for weight in weights]
    largest = probs.index(max(probs))
    probs[largest] = round(1 - sum(p for i, p in enumerate(probs) if i != largest), 6)
    return probs


def examples(records: list[int], probs: list[float] | None, max_samples) -> list[float]:
    """Training examples per source: every record (concat; max_samples caps each source), or about its
    probability times the total interleave_under reaches when the first source runs out."""
    counts = [min(n, max_samples) if isinstance(max_samples, int) else n for n in records]
    if probs is None:
        return counts
    total = min(n / p for n, p in zip(counts, probs, strict=True) if p > 0)
    return [p * total for p in probs]


def _line(key: str, value, comment: str = "") -> str:
    text = yaml.safe_dump({key: value}, width=math.inf).rstrip("\n")
    return f"{text:<34} # {comment}" if comment else text


def _span(lines: list[str], key: str) -> tuple[int, int] | None:
    """Lines of KEY in a recipe: its own and any indented or list lines of its value."""
    for start, line in enumerate(lines):
        if re.match(rf"{re.escape(key)}\s*:", line):
            end = start + 1
            while end < len(lines) and lines[end][:1] in (" ", "\t", "-") and lines[end].strip():
                end += 1
            return start, end
    return None


def _end_of_block(lines: list[str], block: str) -> int:
    """Where a key of BLOCK (### dataset, ...) goes: after its last line; a new block at the end."""
    header = next((i for i, line in enumerate(lines) if line.strip() == f"### {block}"), None)
    if header is None:
        lines += ["", f"### {block}"]
        return len(lines)
    end = next((i for i in range(header + 1, len(lines)) if lines[i].startswith("###")), len(lines))
    while end > header + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def lay_out(base: Path, changes: dict[str, tuple], header: list[str]) -> str:
    """The recipe BASE with each key of CHANGES (key -> (value, comment); value None: removed) in its place;
    one it lacks after the mix's key before it, or at the end of its block; every other line as written.
    Checked by reading it back."""
    text = base.read_text(encoding="utf-8")
    lines = text.splitlines()
    for key, (value, comment) in changes.items():
        new = [] if value is None else [_line(key, value, comment)]
        before = [_span(lines, k) for k in MIXED[: MIXED.index(key)]] if key in MIXED else []
        if span := _span(lines, key):
            lines[span[0] : span[1]] = new
        elif new:
            at = max((s[1] for s in before if s), default=None) or _end_of_block(
                lines, BLOCK.get(key, "train")
            )
            lines[at:at] = new
    written = "\n".join([*(f"# {line}".rstrip() for line in header), *lines]) + "\n"
    expected = {**yaml.safe_load(text), **{k: v for k, (v, _) in changes.items()}}
    if yaml.safe_load(written) != {k: v for k, v in expected.items() if v is not None}:
        raise FaceLLMError(
            f"{base}: its keys could not be rewritten line by line (a key over several lines?)"
        )
    return written


def source_row(plan, summary, images: set[str], records: int) -> dict:
    """What the run of PLAN (facellm.data.mix.Plan) gave: generate()'s SUMMARY of its items; their count per
    kind from its ledger (done: those of the IMAGES its RECORDS show; failed: every failed item, when that
    is the summary's count); its cost (cost.json, as its cost report computed it)."""
    with Ledger(plan.config.out / LEDGER) as ledger:
        entries = [(key, e["status"]) for (image, key), e in ledger.entries.items() if image in images
                   or e["status"] == FAILED]  # fmt: skip
    kinds = Counter(
        (key.partition(":")[0] if qa_items.is_label_item(key) else "open", s) for key, s in entries
    )
    if sum(n for (_, status), n in kinds.items() if status == FAILED) != summary.failed:
        kinds = Counter({key: n for key, n in kinds.items() if key[1] == DONE})  # failures of other images
    cost = read_json(plan.config.out / "cost.json")
    overlap_report = plan.config.out / overlap.REPORT
    excluded = (
        read_json(overlap_report) if plan.config.exclude_benchmark and overlap_report.is_file() else None
    )
    folder = plan.config.out.name
    return {
        "name": plan.name, "source": plan.source.name, "split": plan.config.split,
        "root": shown(plan.config.root), "images": summary.images, "records": records,
        "done": summary.done + summary.skipped, "failed": summary.failed,
        "kinds": {k: {"done": kinds[k, DONE], "failed": kinds[k, FAILED]}
                  for k in qa_items.KINDS if kinds[k, DONE] or kinds[k, FAILED]},
        "usd": cost.get("usd"), "pricing": cost.get("pricing"), "weight": plan.weight,
        "fairness_report": f"{folder}/fairness_report.md", "cost_report": f"{folder}/cost_report.md",
        "benchmark_excluded": None if excluded is None else {
            "images": excluded["excluded"], "by_benchmark_file": excluded["by_benchmark_file"]},
    }  # fmt: skip


def recipe_changes(mix, names: list[str], media_dir: str, probs: list[float] | None) -> dict:
    """The keys train.yaml sets over the base recipe: key -> (value, comment); None removes the key."""
    concat = ("concat", "every record of every source, once")
    changes = {
        "dataset_dir": (shown(mix.out), "its dataset_info.json registers each source: datasets/<name>.json"),
        "dataset": (",".join(names), "every source of the mix config"),
        "media_dir": (shown(media_dir), "holds every source's images; the records' paths are relative to it"),
        "mix_strategy": concat if probs is None else ("interleave_under", "draws by interleave_probs until "
                                                      "the first source runs out"),
        "interleave_probs": (None, "") if probs is None else (",".join(f"{p:g}" for p in probs),
                                                              f"the weights, normalised: {', '.join(names)}"),
    }  # fmt: skip
    if mix.output_dir is not None:
        changes["output_dir"] = (shown(mix.output_dir), "from the mix config")
    return changes | {key: (value, "from the mix config") for key, value in (mix.overrides or {}).items()}


def _cost(usd: float | None, pricing: str | None) -> str:
    if usd is not None:
        return f"${usd:,.4f}"
    return f"$0 ({pricing.partition(':')[0]})" if "no API cost" in str(pricing) else "unknown"


def _cells(row: dict, total: float, about: str) -> list[str]:
    done = [str(row["kinds"][k]["done"]) if k in row["kinds"] else "-" for k in qa_items.KINDS]
    return [
        row["name"], f"{row['source']} {row['split']}", str(row["images"]), str(row["done"]),
        str(row["failed"]), *done, _cost(row["usd"], row["pricing"]),
        "-" if row["weight"] is None else f"{row['weight']:g}",
        f"{100 * row['examples'] / total if total else 0:.1f}%", f"{about}{round(row['examples'])}",
        f"[fairness]({row['fairness_report']}), [cost]({row['cost_report']})",
    ]  # fmt: skip


def report(record: dict) -> str:
    """mix_report.md: one row per source and a total."""
    rows = record["sources"]
    total = sum(row["examples"] for row in rows)
    about = "" if record["mix_strategy"] == "concat" else "~"
    how = "sources drawn by weight until the first one runs out: expected counts" if about else "each once"
    unknown = any(row["usd"] is None and "no API cost" not in str(row["pricing"]) for row in rows)
    usd = sum(row["usd"] or 0 for row in rows)
    kinds = [str(sum(row["kinds"].get(k, {}).get("done", 0) for row in rows)) for k in qa_items.KINDS]
    totals = [
        "**total**",
        "",
        *(str(sum(row[k] for row in rows)) for k in ("images", "done", "failed")),
        *kinds,
        (f"${usd:,.4f}" if usd else "$0") + (" + unknown" if unknown else ""),
        "",
        "100%",
        f"{about}{round(total)}",
        "",
    ]
    lines = [
        "# Training mix", "",
        f"Written by `python -m facellm.data.mix {record['config']}` from the base recipe "
        f"`{record['recipe']}`. Images under media_dir `{record['media_dir']}`; mix_strategy "
        f"`{record['mix_strategy']}` ({how}); max_samples {record['max_samples']} per source.", "",
        "| source | data | images | items done | failed | open | short | mcq | cost | weight | share "
        "| training examples | reports |",
        "|---|---|" + "---:|" * 6 + "---|---:|---:|---:|---|",
        *("| " + " | ".join(_cells(row, total, about)) + " |" for row in rows),
        "| " + " | ".join(totals) + " |",
        "", _benchmark_line(rows),
        "", f"Train it from the repository root: `{record['train_command']}`",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _benchmark_line(rows: list[dict]) -> str:
    """What was left out of each source as a FaceXBench image (exclude_benchmark), per benchmark file."""
    checked = [row for row in rows if row.get("benchmark_excluded") is not None]
    if not checked:
        return "FaceXBench images were not left out (no exclude_benchmark)."
    parts = []
    for row in checked:
        files = ", ".join(f"{name} {n}" for name, n in row["benchmark_excluded"]["by_benchmark_file"].items())
        parts.append(
            f"{row['name']} {row['benchmark_excluded']['images']}" + (f" ({files})" if files else "")
        )
    unchecked = [row["name"] for row in rows if row.get("benchmark_excluded") is None]
    return (
        "FaceXBench images left out before generation: "
        + "; ".join(parts)
        + (f"; not checked: {', '.join(unchecked)}" if unchecked else "")
        + "."
    )


def print_plan(mix, path: Path, plans: list) -> None:
    print(f"mix: dry run of {path}: every source checked; nothing generated or written")
    for plan in plans:
        weight = "" if plan.weight is None else f", weight {plan.weight:g}"
        excluded = plan.config.exclude_benchmark
        before = " (before FaceXBench's are left out)" if excluded else ""
        print(
            f"  {plan.name}: {plan.source.name} {plan.config.split} from {shown(plan.config.root)}, "
            f"{len(plan.records)} images{before}, items {plan.config.items}{weight} -> "
            f"{shown(plan.config.out)}",
            flush=True,
        )
        warning = None if excluded else overlap.benchmark_warning(plan.source.name, plan.config.split)
        if warning:  # in a mix config the flag is a key
            print(f"  {plan.name}: {warning.replace(overlap.FLAG + ' DIR', 'exclude_benchmark: DIR')}",
                  file=sys.stderr, flush=True)  # fmt: skip
    media_dir = os.path.commonpath([str(plan.image_root) for plan in plans])
    strategy = "concat" if plans[0].weight is None else "interleave_under"
    names = ",".join(plan.name for plan in plans)
    print(f"media_dir: {shown(media_dir)}; mix_strategy: {strategy}")
    print(f"would write: {shown(mix.out)}/datasets/{{{names}}}.json, dataset_info.json, train.yaml, "
          "mix_report.md, mix.json")  # fmt: skip
    print(f"then, from the repository root:\n./train.sh {shown(mix.out / 'train.yaml')}")


def print_summary(record: dict) -> bool:
    """The console summary, ending with the train.sh command; False when a source has no records."""
    rows = record["sources"]
    counts = ", ".join(f"{row['name']} {row['records']}" for row in rows)
    total = sum(row["examples"] for row in rows)
    shares = ", ".join(f"{row['name']} {100 * row['examples'] / total:.1f}%" for row in rows) if total else ""
    about = "" if record["mix_strategy"] == "concat" else "about "
    print(f"mix: {sum(row['records'] for row in rows)} records from {len(rows)} sources ({counts}) -> "
          f"{record['out']}/dataset_info.json")  # fmt: skip
    print(f"mix: media_dir {record['media_dir']}; {record['mix_strategy']}: {about}{round(total)} training "
          f"examples ({shares})")  # fmt: skip
    empty = [row["name"] for row in rows if not row["records"]]
    if empty:
        print(f"mix: {', '.join(empty)}: no records; training refuses an empty dataset", file=sys.stderr)
    if any(row["failed"] for row in rows):
        print("mix: some items failed; re-run the same command to retry them", file=sys.stderr)
    print(f"report: {record['out']}/mix_report.md\ntrain it, from the repository root:")
    print(record["train_command"])
    return not empty
