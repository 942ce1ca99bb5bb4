"""Folders built from known inputs and reused while those inputs are the same (the tiny and noisy models)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def build_or_reuse(out: Path, marker_name: str, fingerprint: dict, build: Callable[[Path], None]) -> Path:
    """OUT as BUILD(OUT) makes it from the inputs FINGERPRINT describes. A folder whose marker file records
    the same fingerprint is reused; the marker is written last, so a build that dies half-way is redone."""
    marker = out / marker_name
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
            return out
    except (OSError, ValueError):  # absent or damaged: build again
        pass
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    build(out)
    marker.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    return out
