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


def json_text(data: object) -> str:
    """DATA as every JSON file of the project is written."""
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json_text(data))


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceLLMError(f"{path}: corrupt JSON ({error}); move it away to start this file again") from None


def resolve_inside(root: Path, written: str, source: str) -> Path:
    """Join a path read from a data file to its declared root, refusing anything that escapes the root.

    A relative path is taken from the root; an absolute one (a list made by `find $PWD ...`) is accepted
    when it lies inside the root. The check is on the path as written (`..` collapsed, then no way out),
    not on where symlinks point: datasets managed by DVC, git-annex or a hub cache are symlink farms whose
    targets live elsewhere. An absolute path that spells the root another way (through a symlinked folder,
    /tmp for /private/tmp) is judged by the real folder holding it, never by where the file itself points."""
    if "\0" in written:
        raise FaceLLMError(f"{source}: path {written!r} contains a NUL byte")
    base = os.path.abspath(root)
    relative = _inside(base, written) if os.path.isabs(written) else os.path.normpath(written)
    if relative is None or relative == ".." or relative.startswith(".." + os.sep):
        raise FaceLLMError(f"{source}: path {written!r} escapes its root folder {base}")
    return Path(base) / relative


def _inside(base: str, absolute: str) -> str | None:
    """ABSOLUTE relative to the folder BASE, or None when it lies outside BASE."""
    path = os.path.normpath(absolute)
    if os.path.commonpath([base, path]) == base:
        return os.path.relpath(path, base)
    real_base = os.path.realpath(base)
    folder = os.path.realpath(os.path.dirname(path))  # the folder, not the file: symlink farms stay inside
    if os.path.commonpath([real_base, folder]) == real_base:
        return os.path.relpath(os.path.join(folder, os.path.basename(path)), real_base)
    return None
