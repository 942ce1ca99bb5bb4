"""Running a VLMEvalKit model over a FaceXBench folder: batched, resumable per question, shardable.

Results follow the FaceXBench results format: `<results>/<task>.json` is the input question file with a
`prediction` (the model's answer, stripped) added to every answered question. A question whose attempt raised
an error gets an `error` instead, the run goes on, and the next run asks it again. Files are rewritten
atomically after every batch, so a killed run loses at most the batch in flight and a rerun of the same
command continues where it stopped.

Sharding: shard I of N (`--shard I/N`, or RANK / WORLD_SIZE under torchrun) answers the questions at the
positions p with p % N == I (files in name order, questions in file order) and writes them to
`<results>/shards/I-of-N/`. A question answered in any folder of a results folder is never asked again, so
runs with different splits (or none) can be mixed. The merge writes the union into `<results>/`: the same
files an unsharded run writes. The shard that completes
the set merges on its own; `merge` (evaluate.py --merge) does it by hand.

Ctrl-C or SIGTERM stops a run (losing at most the batch in flight) with `Interrupted`, whose message says how
many answers are saved where; the same command resumes.

`run.json` ties a results folder, and each of its shard folders, to one model name, model path and prompt
settings; another combination is refused instead of mixed in, unless the folder holds no answer (a run whose
model did not load, or whose every question failed, does not claim it).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facellm.common.cli import FaceLLMError, first_line
from facellm.common.files import write_json_atomic
from facellm.eval.facexbench import Task, check_images, load_benchmark, prompt_text, vlmeval_message
from facellm.eval.results import (
    SHARDS_DIR,
    Answers,
    Shard,
    check_folders,
    check_results_dir,
    known_answers,
    read_answers,
    shard_folders,
    with_answers,
    write_task,
)
from facellm.eval.scoring import RUN_FILE, SUMMARY_FILE, read_identity, report, write_reports

# The dataset name the authors' evaluation hands to VLMEvalKit models (some models adapt their prompt to the
# dataset type; "MCQ" keeps baselines comparable with the published numbers).
DATASET = "MCQ"
MAX_CONSECUTIVE_FAILURES = 32
BLANK_DIR = "blank-images"  # in the results folder: the stand-ins of --blank-images
BLANK_GREY = (128, 128, 128)


def _free_accelerator_memory() -> None:
    torch = sys.modules.get("torch")  # only when the model brought it in
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def blanked(message: list[dict], folder: Path) -> list[dict]:
    """MESSAGE with every image replaced by a uniform grey image of the same size (written once per size into
    FOLDER): the control that shows how much of a score the images earn."""
    import os

    from PIL import Image

    parts = []
    for part in message:
        if part["type"] == "image":
            with Image.open(part["value"]) as image:
                width, height = image.size
            path = folder / f"{width}x{height}.png"
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                Image.new("RGB", (width, height), BLANK_GREY).save(partial, format="PNG")
                os.replace(partial, path)
            part = {**part, "value": str(path)}
        parts.append(part)
    return parts


def answer_batch(model, messages: list[list[dict]]) -> list[tuple[str | None, str | None]]:
    """(prediction, error) for each message: in one batch when the model has `generate_batch` (FaceLLM
    does), else, or when the batch fails, one at a time so that one bad question fails alone."""
    if len(messages) > 1 and hasattr(model, "generate_batch"):
        try:
            answers = list(model.generate_batch(messages, DATASET))
            if len(answers) != len(messages):
                raise ValueError(f"{len(answers)} answers to {len(messages)} questions")
            return [(str(a if a is not None else "").strip(), None) for a in answers]
        except Exception:
            _free_accelerator_memory()  # an out-of-memory batch: each question is tried on its own below
    results = []
    for message in messages:
        try:
            answer = model.generate(message, dataset=DATASET)
            results.append((str(answer if answer is not None else "").strip(), None))
        except Exception as error:  # recorded with the question; the run goes on
            _free_accelerator_memory()
            results.append((None, first_line(error, named=True)[:500]))
    return results


# Without a model that measures its prompts (`prompt_tokens`), a prompt's length is guessed from its text
# (about four characters per token) and images (an InternVL tile is 256 tokens).
CHARACTERS_PER_TOKEN, IMAGE_TOKENS = 4, 258
# Longer prompts (in FaceXBench: the tool-use questions, ~2.2k tokens, and tiled large images) are answered
# alone. Their prefill is compute-bound, so a batch saves nothing, and padding makes attention take its masked
# path: two different tool-use prompts took 2.5 to 3.5 times as long in one batch as one after the other.
ALONE_TOKENS = 2_000
# The padded prompt tokens of one batch (rows x longest prompt), a bound on its activation memory.
MAX_BATCH_TOKENS = 32_768


def guessed_tokens(task: Task, number: str, prepend: bool) -> int:
    images = len(task.questions[number]["image_paths"])
    return len(prompt_text(task, number, prepend)) // CHARACTERS_PER_TOKEN + IMAGE_TOKENS * images


def batches(
    items: list, size: int, length: Callable[[object], int], max_tokens: int | None = None
) -> list[list]:
    """ITEMS (sorted by LENGTH, in tokens) in batches of at most SIZE whose padded size (rows x longest)
    stays within MAX_TOKENS; an item longer than that is a batch of its own. A new batch also starts where an
    item is more than 1.5 times as long as the batch's first (every prompt is padded to the longest, which
    would cost more than batching saves), and an item longer than ALONE_TOKENS is a batch of its own."""
    groups: list[list] = []
    for item in items:
        current = groups[-1] if groups else []
        tokens = length(item)
        fits = (
            current
            and len(current) < size
            and tokens <= 1.5 * length(current[0])
            and tokens <= ALONE_TOKENS
            and (max_tokens is None or (len(current) + 1) * max(tokens, *map(length, current)) <= max_tokens)
        )
        if fits:
            current.append(item)
        else:
            groups.append([item])
    return groups


def prepare(benchmark_dir: Path, limit: int | None) -> list[Task]:
    """The benchmark's question files (first LIMIT questions of each), every image of them checked."""
    tasks = load_benchmark(benchmark_dir)
    if limit is not None:
        for task in tasks:
            task.questions = dict(list(task.questions.items())[:limit])
    for task in tasks:  # every image is checked before any time is spent loading the model
        for number in task.questions:
            check_images(task, number, benchmark_dir)
    return tasks


def _positions(tasks: list[Task]) -> list[tuple[Task, str]]:
    return [(task, number) for task in tasks for number in task.questions]


def _summary(tasks: list[Task], answers: Answers, identity: dict, shard: Shard | None) -> dict:
    """summary.json: how many of the questions this folder is for are answered, failed or pending, and the
    error of each failed one."""
    owned = [
        (t, n) for position, (t, n) in enumerate(_positions(tasks)) if shard is None or shard.owns(position)
    ]
    answered = sum(answers.has(t.name, n) for t, n in owned)
    errors = {}
    for task, number in owned:
        if not answers.has(task.name, number) and number in answers.errors.get(task.name, {}):
            errors.setdefault(task.name, {})[number] = answers.errors[task.name][number]
    failed = sum(len(found) for found in errors.values())
    return {
        **identity,
        "shard": shard.name if shard else None,
        "overall": {
            "questions": len(owned),
            "answered": answered,
            "failed": failed,
            "pending": len(owned) - answered - failed,
        },
        "errors": errors,
    }


def _finish_merged(results_dir: Path, tasks: list[Task], answers: Answers, identity: dict) -> dict:
    """Write the union into RESULTS_DIR: results files, summary.json, results.json and results.txt."""
    for task in tasks:
        write_task(results_dir, task, answers)
    summary = _summary(tasks, answers, identity, None)
    write_json_atomic(results_dir / SUMMARY_FILE, summary)
    scored = [Task(t.name, results_dir / f"{t.name}.json", t.header, with_answers(t, answers)) for t in tasks]
    write_reports(results_dir, report(scored, identity))
    return summary


def evaluate(
    make_model: Callable[[], object],
    identity: dict,
    benchmark_dir: Path,
    results_dir: Path,
    limit: int | None = None,
    prepend: bool = False,
    batch_size: int = 1,
    shard: Shard | None = None,
    progress: bool = True,
    max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
    blank_images: bool = False,
    tasks: list[Task] | None = None,
    max_batch_tokens: int | None = MAX_BATCH_TOKENS,
) -> dict:
    """Answer every pending question of the benchmark (the first LIMIT of each file when given; only those of
    SHARD when given) and return the summary of the folder written. IDENTITY (model, model_path and prompt
    settings) is recorded in run.json; MAKE_MODEL is called only when something is left to answer. With
    BLANK_IMAGES every image is replaced by a grey one of its size (see `blanked`). TASKS: the benchmark as
    `prepare` read it, when the caller has read it already. Batches hold at most BATCH_SIZE questions and
    MAX_BATCH_TOKENS padded prompt tokens (see `batches`). Ctrl-C or SIGTERM raises `Interrupted`."""
    check_folders(benchmark_dir, results_dir)
    tasks = prepare(benchmark_dir, limit) if tasks is None else tasks
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / SHARDS_DIR / shard.name if shard else results_dir
    check_results_dir(results_dir, identity, out)
    known = known_answers(results_dir, tasks, identity)
    mine = read_answers(out, tasks) if shard else known  # what this run's folder will hold
    pending = [
        (task, number)
        for position, (task, number) in enumerate(_positions(tasks))
        if (shard is None or shard.owns(position)) and not known.has(task.name, number)
    ]
    for task in tasks:  # every file from the start, so that a report on a run in progress counts what is left
        if not (out / f"{task.name}.json").is_file():
            write_task(out, task, mine)

    if pending:
        run = _Run(
            benchmark_dir, results_dir, out, prepend, blank_images, max_consecutive_failures, max_batch_tokens
        )
        try:
            with _sigterm_interrupts():
                run.answer(make_model(), pending, mine, batch_size, progress, identity, shard)
        except KeyboardInterrupt as stop:
            answered = _summary(tasks, mine, identity, shard)["overall"]
            raise Interrupted(
                f"{answered['answered']} of {answered['questions']} questions answered so far are saved in "
                f"{out}; the same command resumes",
                EXIT_SIGTERM if isinstance(stop, _Terminated) else EXIT_SIGINT,
            ) from None

    if shard is None:
        return _finish_merged(results_dir, tasks, known, identity)
    summary = _summary(tasks, mine, identity, shard)
    write_json_atomic(out / SUMMARY_FILE, summary)
    merged = merge(benchmark_dir, results_dir, limit, required=False)
    summary["merged"] = merged is not None
    return summary


EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal, as a shell reports a command it stopped


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while answering. The message says what is saved and how to resume; CODE is the exit
    code (130 or 143). A KeyboardInterrupt, so that nothing catching Exception swallows it."""

    def __init__(self, message: str, code: int = EXIT_SIGINT):
        super().__init__(message)
        self.code = code


class _Terminated(KeyboardInterrupt):
    """Raised by SIGTERM (a scheduler's stop, `kill`): stops the run as Ctrl-C does."""


@contextmanager
def _sigterm_interrupts():
    """SIGTERM raises _Terminated in the main thread while the block runs (by default it would end the
    process without a word of what is saved); elsewhere signals cannot be handled, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum, _frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Run:
    """Answering the pending questions of one run, batch by batch, each batch saved as it is answered."""

    benchmark_dir: Path
    results_dir: Path
    out: Path
    prepend: bool
    blank_images: bool
    max_consecutive_failures: int
    max_batch_tokens: int | None

    def lengths(self, model, pending) -> dict[tuple[str, str], int]:
        """The prompt length in tokens of each pending question: measured by the model when it can
        (FaceLLM's `prompt_tokens`), else guessed. A question that cannot be measured counts as long, so it is
        asked alone and fails alone."""
        measure = getattr(model, "prompt_tokens", None)
        found = {}
        for task, number in pending:
            tokens = None
            if measure is not None:
                try:
                    tokens = int(measure(vlmeval_message(task, number, self.benchmark_dir, self.prepend)))
                except Exception:  # the question's own attempt reports the problem
                    tokens = ALONE_TOKENS + 1
            found[task.name, number] = tokens or guessed_tokens(task, number, self.prepend)
        return found

    def answer(self, model, pending, mine: Answers, batch_size: int, progress: bool, identity, shard) -> None:
        label = f"FaceXBench {identity.get('model')}" + (
            f" shard {shard.index}/{shard.count}" if shard else ""
        )
        failures_in_a_row, failed = 0, 0
        tokens = self.lengths(model, pending) if batch_size > 1 else {}
        length = (lambda item: tokens[item[0].name, item[1]]) if tokens else (lambda item: 0)
        # Similar prompt lengths side by side: less padding in a batch
        pending = sorted(pending, key=length)
        with tqdm(total=len(pending), desc=label, unit="question", disable=not progress) as bar:
            for batch in batches(pending, batch_size, length, self.max_batch_tokens):
                messages = [
                    vlmeval_message(task, number, self.benchmark_dir, self.prepend) for task, number in batch
                ]
                if self.blank_images:
                    messages = [blanked(message, self.results_dir / BLANK_DIR) for message in messages]
                for (task, number), (prediction, error) in zip(
                    batch, answer_batch(model, messages), strict=True
                ):
                    mine.record(task.name, number, prediction, error)
                    failed += error is not None
                    failures_in_a_row = failures_in_a_row + 1 if error is not None else 0
                for task in {task.name: task for task, _ in batch}.values():
                    write_task(self.out, task, mine)
                bar.update(len(batch))
                if failed:
                    bar.set_postfix(failed=failed)
                if self.max_consecutive_failures and failures_in_a_row >= self.max_consecutive_failures:
                    last = mine.errors[batch[-1][0].name][batch[-1][1]]
                    raise FaceLLMError(
                        f"{failures_in_a_row} questions in a row failed, the last with {last}; stopped "
                        f"(answers so far are saved in {self.out})"
                    )


def merge(
    benchmark_dir: Path, results_dir: Path, limit: int | None = None, required: bool = True
) -> dict | None:
    """Write the union of the shard folders into RESULTS_DIR once every question of the benchmark (first
    LIMIT per file) is answered or failed somewhere. Returns the merged summary; when something is still
    pending, raises (REQUIRED) or returns None."""
    check_folders(benchmark_dir, results_dir)
    tasks = prepare(benchmark_dir, limit)
    identity = read_identity(results_dir)
    if not identity:
        raise FaceLLMError(f"{results_dir}: no {RUN_FILE}: not a results folder of vlmeval/evaluate.py")
    folders = shard_folders(results_dir)
    if required and not folders:
        raise FaceLLMError(f"{results_dir}: no shard folders in {SHARDS_DIR}/ to merge")
    known = known_answers(results_dir, tasks, identity)
    waiting = [
        (position, task.name, number)
        for position, (task, number) in enumerate(_positions(tasks))
        if not known.has(task.name, number) and number not in known.errors.get(task.name, {})
    ]
    if waiting:
        if not required:
            return None
        counts = {folder.name.split("-of-")[-1] for folder in folders}
        where = ""
        if len(counts) == 1:  # one split: say which of its shards still have work
            count = int(counts.pop())
            shards = sorted({position % count for position, _, _ in waiting})
            where = "; shards " + ", ".join(f"{index}/{count}" for index in shards)
        raise FaceLLMError(
            f"{results_dir}: {len(waiting)} questions not answered yet (first: {waiting[0][1]} question "
            f"{waiting[0][2]}{where}); run them, then merge"
        )
    return _finish_merged(results_dir, tasks, known, identity)
