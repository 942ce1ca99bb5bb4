"""The generation ledger: one JSON line per finished item, appended as soon as the item finishes.

It is the single source of truth of a FairFaceGPT run. `dataset.json` and the reports are compiled from it,
and re-running the same command reads it to skip every item that is already done. A crash can tear only
the last line; opening the ledger drops that fragment so the next append starts on a clean line, but only
when at least one valid ledger line comes before it: any other file (a JSON document, a list of images) is
refused and left byte for byte as it was. An item may appear more than once (failed, then done on a later
run); the last line for an item wins, and an item that is done is never requested again, so the dataset
never holds duplicates.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from facellm.common.cli import FaceLLMError, is_text

DONE, FAILED = "done", "failed"


class Ledger:
    def __init__(self, path: Path, key_fields: tuple[str, ...] = ("image", "aspect")):
        """KEY_FIELDS name the entry fields that identify an item (FairFaceGPT: image and aspect)."""
        self.path = path
        self.key_fields = key_fields
        self.entries: dict[tuple, dict] = {}
        self.torn_lines = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")
        try:  # two runs on one folder would ask for the same items twice and interleave their lines
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise FaceLLMError(f"{path}: in use by another run on the same output folder") from None
        self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        valid = 0
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            entry = self._parse(line, number)
            valid += 1
            key, status = self.key(entry), entry["status"]
            if status == DONE or self.entries.get(key, {}).get("status") != DONE:
                self.entries[key] = entry
        if len(complete) == len(raw):
            return
        if not valid:  # no ledger line before it: a file of someone else's, not a torn ledger
            raise self._refusal(complete.count(b"\n") + 1)
        # a crash in the middle of the last append of a ledger: drop only that fragment
        self.torn_lines += 1
        with self.path.open("r+b") as handle:
            handle.truncate(len(complete))

    def _refusal(self, number: int) -> FaceLLMError:
        self._handle.close()
        return FaceLLMError(
            f"{self.path}:{number}: not a ledger line (this file was not written by FaceLLM); "
            "choose another file, or move this one away to start over"
        )

    def _parse(self, line: str, number: int) -> dict:
        """One ledger line, or the refusal naming it: a file that is not ours is never rewritten."""
        try:
            entry = json.loads(line)
            self.key(entry)
            entry["status"]  # every ledger line has one
        except (json.JSONDecodeError, KeyError, TypeError):
            raise self._refusal(number) from None
        return entry

    def key(self, entry: dict) -> tuple:
        return tuple(entry[field] for field in self.key_fields)

    def status(self, *key: str) -> str | None:
        entry = self.entries.get(key)
        return entry["status"] if entry else None

    def is_done(self, *key: str) -> bool:
        return self.status(*key) == DONE

    def get(self, *key: str) -> dict | None:
        return self.entries.get(key)

    def append(self, entry: dict) -> None:
        """Record one finished item. Flushed at once, so a killed process loses at most the item in flight."""
        key = self.key(entry)
        if self.entries.get(key, {}).get("status") == DONE:
            return  # done is final: never a second copy
        line = json.dumps(entry, ensure_ascii=False)
        if not is_text(line):  # a lone surrogate (from a JSON escape): escaped, it still reads back equal
            line = json.dumps(entry)
        self._handle.write(line + "\n")
        self._handle.flush()
        self.entries[key] = entry

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
