"""The API key of the live and Batch API backends: read from OPENAI_API_KEY only, checked, never printed.

A run is refused for its key before it claims its output folder (creates it, takes the ledger's lock,
writes run.json or answers a label item), so the refusal leaves OUT exactly as it was. A run with nothing
left to ask an endpoint (label items only, or a folder whose open items are all done) needs no key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.ledger import DONE


def api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise FaceLLMError(
            "OPENAI_API_KEY is not set: export it (a server without authentication accepts any value, "
            "e.g. OPENAI_API_KEY=EMPTY)"
        )
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise FaceLLMError(  # never printed: even a malformed key may be most of a real one
            "OPENAI_API_KEY is malformed: it holds a space, a line break or a non-ASCII character; "
            "set it to the key alone"
        )
    return key


def _done_items(ledger: Path) -> set[tuple[str, str]]:
    """The (image, aspect) pairs LEDGER records as done, read without its lock and without judging it:
    the Ledger that opens it under the lock refuses a file that is not a ledger, with its line."""
    done = set()
    if not ledger.is_file():
        return done
    for line in ledger.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            if entry["status"] == DONE:
                done.add((entry["image"], entry["aspect"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def check_before_claiming(ledger: Path, images: list[str], aspects: list[str]) -> None:
    """Refuse a missing or malformed key while OUT is untouched, unless every (image, aspect) that an
    endpoint would be asked is already done in LEDGER. The ledger is read only when the key is bad, so a
    run with a good key pays nothing for the check."""
    try:
        api_key()
    except FaceLLMError:
        done = _done_items(ledger)
        if any((image, aspect) not in done for image in images for aspect in aspects):
            raise
