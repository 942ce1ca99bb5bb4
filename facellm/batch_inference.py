"""Answering many images with one model load: inputs from a folder or a list, answers to a JSONL file.

Inputs: a folder (its image files, sorted), a `.txt` list (one path per line, `#` comments), or a `.jsonl`
list (`{"image": PATH, "prompt": optional}` per line). Paths in a list are relative to the list's folder and
may not leave it. Each answer is one line of OUT (image, prompt, answer, tokens, latency); an image that
cannot be read gets a line with its error and the run goes on. Lines already in OUT are skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facellm.cli import FaceLLMError
from facellm.fairface import resolve_inside
from facellm.images import IMAGE_SUFFIXES, images_under
from facellm.ledger import DONE, FAILED, Ledger

KEY_FIELDS = ("image", "prompt")


@dataclass(frozen=True)
class Item:
    image: str  # as listed: relative to the folder or list
    path: Path
    prompt: str


def list_items(source: Path, default_prompt: str) -> list[Item]:
    if source.is_dir():
        items = [Item(p.relative_to(source).as_posix(), p, default_prompt) for p in images_under(source)]
    elif not source.is_file():
        raise FaceLLMError(f"{source}: no such folder or list file")
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        raise FaceLLMError(f"{source}: an image, not a folder or list; ask about one image with --path_image")
    else:
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise FaceLLMError(f"{source}: not a UTF-8 text list of images") from None
        parse = _jsonl_items if source.suffix.lower() == ".jsonl" else _text_items
        items = list(parse(source, lines, default_prompt))
    if not items:
        raise FaceLLMError(f"{source}: no images to answer")
    return list({(item.image, item.prompt): item for item in items}.values())  # a repeated line: asked once


def _text_items(source: Path, lines: list[str], prompt: str):
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield Item(line, resolve_inside(source.parent, line, f"{source}:{number}"), prompt)


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
        prompt = row.get("prompt") or default_prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise FaceLLMError(f"{source}:{number}: the prompt is empty")
        yield Item(row["image"], resolve_inside(source.parent, row["image"], f"{source}:{number}"), prompt)


def _check_settings(ledger: Ledger, settings: dict) -> None:
    """Answers made with another model or other decoding are not mixed into one file."""
    earlier = next((entry.get("settings") for entry in ledger.entries.values()), settings)
    if earlier != settings:
        changed = ", ".join(
            f"{k} {earlier.get(k)!r} -> {v!r}" for k, v in settings.items() if earlier.get(k) != v
        )
        raise FaceLLMError(
            f"{ledger.path}: answers made with other settings ({changed}); use another --output"
        )


def run_batch(
    model,
    items: list[Item],
    out: Path,
    batch_size: int,
    load: Callable[[Path], object],
    settings: dict,
    progress: bool = True,
    **generation,
) -> tuple[int, int, int]:
    """Answer every item not yet answered in OUT (failed ones are asked again), BATCH_SIZE images per
    forward pass. Returns (done, failed, skipped). LOAD turns a path into the image the model sees
    (decoding, cropping, downscaling: done per image so one bad file fails alone, not its batch)."""
    from facellm.inference import Part

    done = failed = 0
    with Ledger(out, key_fields=KEY_FIELDS) as ledger:
        _check_settings(ledger, settings)
        todo = [item for item in items if not ledger.is_done(item.image, item.prompt)]  # failed: asked again
        skipped = len(items) - len(todo)
        bar = tqdm(
            total=len(todo), desc="answering", unit="image", disable=not progress or None, file=sys.stderr
        )
        for start in range(0, len(todo), batch_size):
            ready = []
            for item in todo[start : start + batch_size]:
                try:
                    ready.append((item, load(item.path)))
                except Exception as error:  # any image that cannot be read is recorded; the run goes on
                    message = (
                        str(error) if isinstance(error, FaceLLMError) else f"{item.path}: {error!r}"[:300]
                    )
                    line = {"image": item.image, "prompt": item.prompt, "status": FAILED, "answer": None}
                    ledger.append(
                        {**line, "tokens": 0, "latency_s": 0.0, "error": message, "settings": settings}
                    )
                    failed += 1
                    bar.update(1)
            if not ready:
                continue
            began = time.perf_counter()
            answers = model.generate_batch(
                [[Part("image", image), Part("text", item.prompt)] for item, image in ready], **generation
            )
            latency = (time.perf_counter() - began) / len(ready)
            for (item, _), (answer, tokens) in zip(ready, answers, strict=True):
                line = {"image": item.image, "prompt": item.prompt, "status": DONE, "answer": answer}
                timing = {"tokens": tokens, "latency_s": round(latency, 4)}
                ledger.append({**line, **timing, "error": None, "settings": settings})
                done += 1
            bar.update(len(ready))
            bar.set_postfix(failed=failed, refresh=False)
        bar.close()
    return done, failed, skipped
