"""Answering many images with one model load: inputs from a folder or a list, answers to a JSONL file.

Inputs: a folder (its image files, sorted), a `.txt` list (one path per line, `#` comments), or a `.jsonl`
list (`{"image": PATH, "prompt": optional}` per line). Paths in a list are relative to the list's folder or
absolute (`find $PWD -name '*.jpg'`), and may not leave that folder: a line that does fails alone, its error
in OUT. Spellings of one file (`1.jpg`, `./1.jpg`, `sub/../1.jpg`, `$PWD/1.jpg`) are one image. Each answer
is one line of OUT (image, prompt, answer, tokens, latency); an image that cannot be read gets a line with
its error and the run goes on. Lines already in OUT are skipped, so an interrupted run resumes where it
stopped; failed ones are asked again, and at the end of a run OUT holds one line per image, its newest
result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facellm.common.cli import FaceLLMError, changed_settings, is_text
from facellm.common.files import resolve_inside, write_text_atomic
from facellm.common.images import IMAGE_SUFFIXES, images_under
from facellm.common.ledger import DONE, FAILED, Ledger

KEY_FIELDS = ("image", "prompt")


@dataclass(frozen=True)
class Item:
    image: str  # as listed: relative to the folder or list
    path: Path
    prompt: str
    error: str | None = None  # a line that cannot be asked: recorded as failed, the run goes on


def list_items(source: Path, default_prompt: str) -> list[Item]:
    if source.is_dir():
        items = [Item(p.relative_to(source).as_posix(), p, default_prompt) for p in images_under(source)]
    elif not source.is_file():
        raise FaceLLMError(f"{source}: no such folder or list file")
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        raise FaceLLMError(f"{source}: an image, not a folder or list; ask about one image with --path-image")
    else:
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise FaceLLMError(f"{source}: not a UTF-8 text list of images") from None
        parse = _jsonl_items if source.suffix.lower() == ".jsonl" else _text_items
        items = list(parse(source, lines, default_prompt))
    if not items:
        raise FaceLLMError(f"{source}: no images to answer")
    unique: dict[tuple[Path, str], Item] = {}
    for item in items:  # a repeated line, or one file written two ways, is asked once
        unique.setdefault((item.path, item.prompt), item)
    return list(unique.values())


def _text_items(source: Path, lines: list[str], prompt: str):
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield _item(source, number, line, prompt)


def _jsonl_items(source: Path, lines: list[str], default_prompt: str):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise FaceLLMError(f"{source}:{number}: not a JSON line") from None
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise FaceLLMError(f'{source}:{number}: expected {{"image": PATH, "prompt": optional}}')
        prompt = row.get("prompt", default_prompt)
        if not isinstance(prompt, str):
            raise FaceLLMError(f"{source}:{number}: the prompt must be a text, not {json.dumps(prompt)}")
        if not prompt.strip():
            raise FaceLLMError(f"{source}:{number}: the prompt is empty")
        error = None if is_text(prompt) else f"{source}:{number}: the prompt is not valid UTF-8 text"
        yield _item(source, number, row["image"], prompt, error)


def _item(source: Path, number: int, image: str, prompt: str, error: str | None = None) -> Item:
    """Line NUMBER's item; a path outside the list's folder is that line's error, not the list's."""
    try:
        return Item(image, resolve_inside(source.parent, image, f"{source}:{number}"), prompt, error)
    except FaceLLMError as problem:
        hint = "paths in a list are relative to its folder, or absolute inside it"
        return Item(image, Path(image), prompt, f"{problem}; {hint}")


def open_answers(out: Path, settings: dict) -> Ledger:
    """The answers file, locked and checked before the model loads: a file that is not ours, or answers
    made with another model or other decoding, stop the run in seconds and are left as they are."""
    ledger = Ledger(out, key_fields=KEY_FIELDS)
    earlier = next((entry.get("settings") for entry in ledger.entries.values()), settings)
    if earlier != settings:
        ledger.close()
        changed = changed_settings(earlier, settings)
        raise FaceLLMError(f"{out}: answers made with other settings ({changed}); use another --output")
    return ledger


def pending(items: list[Item], ledger: Ledger) -> list[Item]:
    """The ITEMS LEDGER holds no answer for: new ones, and failed ones (asked again)."""
    return [item for item in items if not ledger.is_done(item.image, item.prompt)]


def compact(ledger: Ledger) -> None:
    """Rewrite the answers file with one line per image and prompt, its newest result (an answer once given
    is final: a later error never replaces it), atomically, in the order the images first appeared. Lines
    of images no longer listed are kept."""
    ledger.sync()
    lines = ledger.path.read_bytes().count(b"\n")
    if lines == len(ledger.entries):
        return  # nothing repeated: the file is left as it is
    text = "".join(_line(entry) + "\n" for entry in ledger.entries.values())
    # under the answers file's lock: no other run writes to it while it is replaced
    write_text_atomic(ledger.path, text)


def _line(entry: dict) -> str:
    line = json.dumps(entry, ensure_ascii=False)
    return line if is_text(line) else json.dumps(entry)  # a lone surrogate is written escaped, as appended


def run_batch(
    model,
    items: list[Item],
    ledger: Ledger,
    batch_size: int,
    load: Callable[[Path], object],
    settings: dict,
    progress: bool = True,
    **generation,
) -> tuple[int, int, int]:
    """Answer every item not yet answered in LEDGER (failed ones are asked again), BATCH_SIZE images per
    forward pass. Returns (done, failed, skipped). LOAD turns a path into the image the model sees
    (decoding, cropping, downscaling: done per image so one bad file fails alone, not its batch)."""
    from facellm.infer.model import Part

    counts = {DONE: 0, FAILED: 0}

    def record(item: Item, answer: str | None, error: str | None, tokens: int = 0, latency: float = 0.0):
        status = FAILED if error else DONE
        line = {"image": item.image, "prompt": item.prompt, "status": status, "answer": answer}
        timing = {"tokens": tokens, "latency_s": round(latency, 4)}
        ledger.append({**line, **timing, "error": error, "settings": settings})
        counts[status] += 1

    todo = pending(items, ledger)
    bar = tqdm(total=len(todo), desc="answering", unit="image", disable=not progress or None, file=sys.stderr)
    for start in range(0, len(todo), batch_size):
        ready = []
        for item in todo[start : start + batch_size]:
            if item.error:
                record(item, None, item.error)
                continue
            try:
                parts = [Part("image", load(item.path)), Part("text", item.prompt)]
                model.check_fits(parts)  # a prompt beyond the model's context fails alone, not its batch
                ready.append((item, parts))
            except Exception as error:  # any image that cannot be read is recorded; the run goes on
                problem = str(error) if isinstance(error, FaceLLMError) else f"{item.path}: {error!r}"[:300]
                record(item, None, problem)
        if ready:
            began = time.perf_counter()
            answers = model.generate_batch([parts for _, parts in ready], **generation)
            latency = (time.perf_counter() - began) / len(ready)
            for (item, _), (answer, tokens) in zip(ready, answers, strict=True):
                record(item, answer, None, tokens, latency)
        bar.update(min(batch_size, len(todo) - start))
        bar.set_postfix(failed=counts[FAILED], refresh=False)
    bar.close()
    return counts[DONE], counts[FAILED], len(items) - len(todo)
