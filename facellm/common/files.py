"""Files that survive crashes: atomic writes, and JSON reads that name the file when it is damaged."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from facellm.common.cli import FaceLLMError

# The checkout the package runs from: recipes, prompts, sample faces and the VLMEvalKit plug-in live there.
REPO = Path(__file__).resolve().parents[2]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that a crash never leaves a half-written file in place of a good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceLLMError(f"{path}: corrupt JSON ({error}); move it away to start this file again") from None


def resolve_inside(root: Path, relative: str, source: str) -> Path:
    """Join a path read from a data file to its declared root, refusing anything that escapes the root.

    The check is on the path as written (no `..`, not absolute), not on where symlinks point: datasets
    managed by DVC, git-annex or a hub cache are symlink farms whose targets live elsewhere."""
    if "\0" in relative:
        raise FaceLLMError(f"{source}: path {relative!r} contains a NUL byte")
    normalised = os.path.normpath(relative)
    if os.path.isabs(relative) or normalised == ".." or normalised.startswith(".." + os.sep):
        raise FaceLLMError(f"{source}: path {relative!r} escapes its root folder {root}")
    return Path(os.path.abspath(root)) / normalised
