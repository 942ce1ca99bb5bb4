"""FairFaceGPT generation: question-answer pairs about every FairFace image, grounded in its labels.

Stage 1 of the pipeline. Reads a FairFace root (labels CSV + image folder) and asks an LLM about each image,
one aspect at a time (`per-question`, as the released generator does) or all aspects in one call
(`per-image`). Every finished item goes to OUT/ledger.jsonl at once, so an interrupted run resumes where it
stopped. At the end the ledger is compiled into OUT/dataset.json (ShareGPT) with its dataset_info.json, and
into the cost and fairness reports.

Backends: `openai` (live requests to any OpenAI-compatible endpoint), `batch` (the OpenAI Batch API),
`labels` (offline answers written from the labels alone; needs no endpoint). `--items` adds short-answer
and multiple-choice items (facellm.data.items), answered from the labels with any backend. `--source` reads
another label source (facellm.data.sources.registry: UTKFace, CelebA, RAF-DB, AffectNet), asked with its own
aspects and hint templates (data/prompts/<source>/).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from facellm.common import sharegpt
from facellm.common.cli import FaceLLMError, changed_settings
from facellm.common.files import read_json, write_json_atomic
from facellm.common.ledger import DONE, FAILED, Ledger
from facellm.common.options import add_options, add_progress_option, from_args, option, positive
from facellm.data import items as qa_items
from facellm.data import labels as qa_labels
from facellm.data import overlap
from facellm.data.credentials import check_before_claiming
from facellm.data.fairface import FaceRecord
from facellm.data.prompts import PromptSet
from facellm.data.reports import DEFAULT_PRICES, cost_report, fairness_report, load_prices
from facellm.data.requests import MODES, Job, Settings
from facellm.data.sources import registry as sources

BACKENDS = ("openai", "batch", "labels")
DEFAULT_MODEL = "gpt-4o-2024-11-20"
LEDGER = "ledger.jsonl"
RUN_FILE = "run.json"


@dataclass
class Config:
    """Every setting of a FairFaceGPT run; each is also the command-line option of the same name."""

    fairface_root: Path = option(
        Path("data/fairface"), "folder with fairface_label_<split>.csv and fairface-img-margin025-trainval/ "
        "(or fairface_img_margin025/)", parse=Path, group="data",
    )  # fmt: skip
    source: str = option(
        sources.DEFAULT, "label source, in its official layout under --root; each has its own aspects and "
        "hint templates (data/prompts/<source>/) and its own short and mcq questions",
        choices=tuple(sources.SOURCES), group="data",
    )  # fmt: skip
    root: Path | None = option(
        None,
        "the source's folder, in its official layout (fairface: --fairface-root)",
        parse=Path,
        group="data",
    )
    exclude_benchmark: Path | None = option(
        None, "FaceXBench's benchmark/ folder with its images: leave out, before any request, every source "
        "image that is a near-copy of a benchmark image (perceptual hashes; counts per benchmark file in "
        "OUT/benchmark_overlap.json)", parse=Path, group="data", metavar="DIR",
    )  # fmt: skip
    out: Path = option(Path("data/fairfacegpt"), "output folder", parse=Path, group="data")
    split: str | None = option(
        None, "split: FairFace train or val (default val); UTKFace all (the default); CelebA train, val or "
        "test; RAF-DB train or test; AffectNet train or val", choices=sources.SPLITS, group="data",
    )  # fmt: skip
    limit: int | None = option(None, "only the first N images of the list", parse=positive(int), group="data")
    backend: str = option(
        "openai", "openai: live requests; batch: OpenAI Batch API (half price, within 24 h); labels: offline "
        "answers from the labels alone", choices=BACKENDS, group="generation",
    )  # fmt: skip
    mode: str = option(
        "per-question", "per-question: one request per question with the labels as a hint, as the released "
        "generator; per-image: one request per image answering all questions as JSON", choices=MODES,
        group="generation",
    )  # fmt: skip
    model: str = option(DEFAULT_MODEL, "model name at the endpoint", group="generation")
    base_url: str | None = option(
        None, "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for vLLM or LLaMA-Factory "
        "(default: OpenAI, or OPENAI_BASE_URL)", group="generation",
    )  # fmt: skip
    prompts_dir: Path | None = option(
        None, "prompt files (default: data/prompts/ for FairFace, data/prompts/<source>/ for the others)",
        parse=Path, group="generation",
    )  # fmt: skip
    items: str = option(
        qa_items.DEFAULT, "comma-separated item kinds: open (the aspects' questions), short (the source's "
        "label questions, e.g. FairFace's gender, age and race, answered with the label), mcq (the same as "
        "multiple choice, answered with the option's text); short and mcq come from the labels with any "
        "backend", parse=qa_items.item_list,
        group="generation", metavar="KINDS",
    )  # fmt: skip
    max_tokens: int | None = option(
        None, "answer length limit (default: 1024 per question, 4096 per image)", parse=positive(int),
        group="generation",
    )  # fmt: skip
    temperature: float | None = option(
        None, "sampling temperature (default: the endpoint's)", parse=float, group="generation"
    )
    concurrency: int = option(
        32, "requests in flight", parse=positive(int), group="throughput and robustness"
    )
    rpm: float | None = option(
        None, "requests-per-minute ceiling", parse=positive(float), group="throughput and robustness"
    )
    tpm: float | None = option(
        None, "tokens-per-minute ceiling (prompt + max_tokens)", parse=positive(float),
        group="throughput and robustness",
    )  # fmt: skip
    timeout: float = option(
        120.0, "seconds per request", parse=positive(float), group="throughput and robustness"
    )
    max_attempts: int = option(
        3, "answers an item may get (empty, refused or truncated ones are asked again) before it is recorded "
        "as failed", parse=positive(int), group="throughput and robustness",
    )  # fmt: skip
    max_retries: int = option(
        8, "retries per item on 429, 5xx, timeouts and dropped connections", parse=positive(int),
        group="throughput and robustness",
    )  # fmt: skip
    poll_interval: float = option(
        60.0, "seconds between status checks", parse=positive(float), group="batch backend"
    )
    batch_max_requests: int = option(
        50_000, "requests per batch file", parse=positive(int), group="batch backend"
    )
    batch_max_bytes: int = option(
        190_000_000, "bytes per batch file", parse=positive(int), group="batch backend"
    )
    prices: Path | None = option(
        None, "price table in USD per million tokens (default: data/prices.json); a model named in a table "
        "given here is priced even on a local endpoint", parse=Path, group="reports",
    )  # fmt: skip
    progress: bool = True
    media_dir_hint: bool = True  # a mix re-roots the images to its own media_dir and says so itself


@dataclass
class Summary:
    dataset: Path
    images: int
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already done before this run
    requests: int | None = None  # sent by the live backend, retries included
    retries: int | None = None
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def _check_config(config: Config) -> None:
    if config.backend not in BACKENDS:
        raise FaceLLMError(f"backend {config.backend!r} is not available (choose from {', '.join(BACKENDS)})")
    if config.mode not in MODES:
        raise FaceLLMError(f"mode {config.mode!r} is not one of {', '.join(MODES)}")
    if config.out.exists() and not config.out.is_dir():
        raise FaceLLMError(f"{config.out}: --out exists and is not a folder")
    if config.base_url is not None:
        try:
            url = urlparse(config.base_url)
            valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # e.g. an unclosed IPv6 bracket or a port above 65535
            valid = False
        if not valid:
            raise FaceLLMError(
                f"--base-url {config.base_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)"
            )


def _settings(config: Config) -> Settings:
    if config.backend == "labels":
        return qa_labels.SETTINGS
    max_tokens = config.max_tokens or (1024 if config.mode == "per-question" else 4096)
    return Settings(config.model, config.mode, max_tokens, config.temperature)


def _check_run_identity(out: Path, identity: dict, write: bool = True) -> None:
    """A ledger holds one kind of data: refuse to mix models, modes, prompts, splits, items or sources in one
    folder. At their defaults, `items` and `source` are left out of run.json (which reads as the defaults)."""
    path = out / RUN_FILE
    ledger = out / LEDGER
    nothing_yet = not ledger.is_file() or ledger.stat().st_size == 0
    if path.is_file() and not nothing_yet:
        defaults = {"items": qa_items.DEFAULT, "source": sources.DEFAULT, "exclude_benchmark": False}
        previous = read_json(path)
        ok = isinstance(previous, dict)
        detail = changed_settings(defaults | previous, defaults | identity) if ok else "unreadable"
        if detail:
            raise FaceLLMError(
                f"{path}: this folder holds a run with other settings ({detail}); use another --out "
                "or the same settings to resume"
            )
    elif write:
        write_json_atomic(path, identity)


def _jobs(
    faces: list[FaceRecord],
    prompts: PromptSet,
    settings: Settings,
    ledger: Ledger,
    kinds: tuple[str, ...] = (qa_items.DEFAULT,),
) -> list[Job]:
    """The pending open items, as the backend asks them: one job per item, or per image in per-image mode."""
    jobs = []
    for face in faces if "open" in kinds else []:
        pending = tuple(a for a in prompts.aspects if not ledger.is_done(face.file, a.key))
        if not pending:
            continue
        if settings.mode == "per-image":
            jobs.append(Job(face, pending))
        else:
            jobs.extend(Job(face, (aspect,)) for aspect in pending)
    return jobs


def _run_jobs(config: Config, run: Prepared, jobs, label_jobs, ledger, all_faces, summary) -> None:
    """Answer LABEL_JOBS from the labels, then JOBS with the configured backend, a progress bar counting
    finished and failed items."""
    settings, prompts, image_root = run.settings, run.prompts, run.image_root
    failures: Counter[str] = Counter()
    bar = tqdm(
        total=sum(len(job.aspects) for job in [*jobs, *label_jobs]),
        desc=f"FairFaceGPT [{config.backend}, {settings.mode}]",
        unit="qa",
        disable=not config.progress or None,
        file=sys.stderr,
    )

    def on_item(entry: dict) -> None:
        if entry["status"] == FAILED:
            failures[entry["reason"]] += 1
            bar.set_postfix(failed=sum(failures.values()), refresh=False)
        bar.update(1)

    try:
        local = [*jobs, *label_jobs] if config.backend == "labels" else label_jobs
        qa_labels.answer_jobs(
            local, qa_labels.SETTINGS, ledger, image_root, on_item, run.source.questions, prompts
        )
        if config.backend != "labels" and jobs:
            from facellm.data.remote import run_remote  # openai's import is paid only when it is used

            counters = asyncio.run(
                run_remote(config, jobs, prompts, settings, ledger, image_root, on_item, all_faces)
            )
            if counters is not None:
                summary.requests, summary.retries = counters.requests, counters.retries
    except KeyboardInterrupt:  # exit 130, as for any Ctrl-C, with the way back
        raise KeyboardInterrupt(
            f"{ledger.path} keeps every finished item: run the same command to resume"
        ) from None
    finally:
        bar.close()


def _tally(summary: Summary, faces: list[FaceRecord], keys: list[str], ledger: Ledger) -> dict:
    """The ledger's last word on every item of this run, counted into SUMMARY."""
    entries = {
        (face.file, key): entry for face in faces for key in keys if (entry := ledger.get(face.file, key))
    }
    failures = Counter(e["reason"] for e in entries.values() if e["status"] == FAILED)
    summary.done = sum(1 for e in entries.values() if e["status"] == DONE) - summary.skipped
    summary.failed, summary.failed_by_reason = failures.total(), dict(failures.most_common())
    return entries


@dataclass
class Prepared:
    """A run as checked before it claims OUT: every refusal comes from prepare(), which writes nothing."""

    kinds: tuple[str, ...]
    prices: dict
    settings: Settings
    source: sources.Source
    image_root: Path
    records: list  # the whole split: benchmark images are left out, then --limit applied, by generate()
    prompts: PromptSet
    identity: dict  # what run.json ties OUT to


def prepare(config: Config, quiet: bool = False) -> Prepared:
    """Every check of a run (settings, source, labels, prompts, prices, key, benchmark folder, the settings
    of a run already in OUT), OUT untouched; QUIET: do not print what the reader left out."""
    _check_config(config)
    kinds = qa_items.parse_kinds(config.items)
    prices = load_prices(config.prices or DEFAULT_PRICES)
    settings = _settings(config)
    config.split = sources.split_of(config.source, config.split)  # what the run and run.json are tied to
    source, image_root, records = sources.read(
        config.source, config.root, config.fairface_root, config.split, quiet
    )
    prompts = source.prompts(config.prompts_dir)
    if config.exclude_benchmark is not None:
        overlap.check_benchmark(config.exclude_benchmark)
    identity = {
        "model": settings.model,
        "mode": settings.mode,
        "prompts": prompts.digest,
        "split": config.split,
    }
    if kinds != (qa_items.DEFAULT,):  # absent at its default: run.json as it was before --items
        identity["items"] = ",".join(kinds)
    if source.name != sources.DEFAULT:
        identity["source"] = source.name
    if config.exclude_benchmark:  # where the benchmark lies may change; whether it was left out may not
        identity["exclude_benchmark"] = True
    _check_run_identity(config.out, identity, write=False)
    if config.backend != "labels" and "open" in kinds:  # refused for its key, a run leaves OUT as it was
        faces = records[: config.limit] if config.limit and not config.exclude_benchmark else records
        aspects = [aspect.key for aspect in prompts.aspects]
        check_before_claiming(config.out / LEDGER, [face.file for face in faces], aspects)
    return Prepared(kinds, prices, settings, source, image_root, records, prompts, identity)


def generate(config: Config, prepared: Prepared | None = None) -> Summary:
    """One run; PREPARED: its checks, made beforehand (a mix makes them for every source first)."""
    run = prepared or prepare(config)
    source, prompts, settings, kinds = run.source, run.prompts, run.settings, run.kinds
    config.out.mkdir(parents=True, exist_ok=True)
    all_faces = overlap.leave_out(config, source, run.image_root, run.records)
    faces = all_faces[: config.limit] if config.limit else all_faces  # --limit counts the images kept
    # the ledger is the folder's lock: taken before run.json is read or written, so a second run with other
    # settings cannot rewrite it while the first one is still appending
    with Ledger(config.out / LEDGER) as ledger:
        sharegpt.read_registry(config.out / "dataset_info.json")  # a damaged registry stops us before work
        _check_run_identity(config.out, run.identity)
        jobs = _jobs(faces, prompts, settings, ledger, kinds)
        label_jobs = qa_labels.jobs(faces, ledger, kinds, source.questions)
        pending = sum(len(job.aspects) for job in [*jobs, *label_jobs])
        keys = qa_items.keys(prompts.aspects, kinds, source.questions)
        summary = Summary(
            dataset=config.out / "dataset.json", images=len(faces), skipped=len(faces) * len(keys) - pending
        )
        _run_jobs(config, run, jobs, label_jobs, ledger, all_faces, summary)
        entries = _tally(summary, faces, keys, ledger)
        records = sharegpt.from_ledger(faces, keys, ledger)

    dataset_path, info_path = sharegpt.write_dataset(config.out, records)
    cost_report(
        list(entries.values()), run.prices, settings.model, config.backend == "batch", len(faces),
        len(all_faces), config.out, endpoint=config.base_url or os.environ.get("OPENAI_BASE_URL"),
        own_table=config.prices is not None, offline=config.backend == "labels",
    )  # fmt: skip
    fairness_report(faces, entries, config.out, source.groupings)
    write_json_atomic(config.out / "summary.json", {**asdict(summary), "dataset": str(summary.dataset)})
    media_dir = run.image_root if config.media_dir_hint else None
    _print_summary(summary, len(records), dataset_path, info_path, media_dir, config.out)
    return summary


def _print_summary(summary: Summary, records: int, dataset_path, info_path, media_dir, out) -> None:
    print(
        f"{records} QA pairs about {summary.images} images -> {dataset_path} (registered in {info_path})\n"
        f"this run: {summary.done} done, {summary.failed} failed, {summary.skipped} already done before"
        + (f"; {summary.requests} requests sent ({summary.retries} retried)" if summary.requests else "")
    )
    for reason, count in summary.failed_by_reason.items():
        print(f"  failed: {count} x {reason}")
    print(f"reports: {out / 'cost_report.md'}, {out / 'fairness_report.md'}")
    if media_dir is not None:
        print(f"image paths are relative to {media_dir}: pass it to training as media_dir")
    if summary.failed:
        print("re-run the same command to retry the failed items", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python fairfacegpt.py",
        description="Generate the FairFaceGPT question-answer dataset from a labelled face dataset: "
        "FairFace (the default), UTKFace, CelebA, RAF-DB or AffectNet (--source), in its official layout. "
        "Writes OUT/dataset.json (ShareGPT) and OUT/dataset_info.json (LLaMA-Factory registration), "
        "OUT/ledger.jsonl (one line per finished item: re-run the same command to resume), "
        "cost and fairness reports. Exits 1 when some items failed, 2 on bad input, 130 when interrupted "
        "(Ctrl-C: rerun the same command to resume).",
        epilog="The API key is read from OPENAI_API_KEY only. Prompts and aspects are files in "
        "data/prompts/ (see --prompts-dir).",
        allow_abbrev=False,  # a misspelt flag is an error, never a guess at a longer one
    )
    add_options(parser, Config)
    add_progress_option(parser)
    summary = generate(from_args(Config, parser.parse_args(argv)))
    if not summary.ok:
        sys.exit(1)
