"""A long command's full output kept in a log file, while the terminal shows a short view of its progress.

LLaMA-Factory and transformers print hundreds of lines per run (config dumps, every file saved, deprecation
warnings); a user needs the progress, the result and, when something fails, where to read the rest. The
redirection is at the file-descriptor level, so that C code, tqdm bars, loggers set up at import time and
child processes (torchrun workers) all land in the log.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def output_to(handle) -> Iterator[None]:
    """Everything written to stdout and stderr (by Python, tqdm, loggers, C code or child processes) goes to
    HANDLE, a file open for writing."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    # Python-level writers too, where a caller (a test harness) had swapped sys.stdout/sys.stderr out
    raw = open(1, "wb", closefd=False)  # noqa: SIM115 (it lives as long as the redirection)
    sys.stdout = sys.stderr = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", line_buffering=True)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@contextmanager
def _tee(handle, view: TextIO) -> Iterator[None]:
    """output_to(HANDLE, a text file), with every byte also shown on VIEW (--verbose)."""
    read, write = os.pipe()

    def copy() -> None:
        while chunk := os.read(read, 65536):
            handle.buffer.write(chunk)
            handle.flush()
            view.write(chunk.decode("utf-8", "replace"))
            view.flush()

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        with os.fdopen(write, "wb") as pipe, output_to(pipe):
            yield
    finally:
        # a process the command left behind may hold the pipe open: do not wait for it for long
        reader.join(timeout=5)
        if not reader.is_alive():
            os.close(read)


def _terminal() -> tuple[TextIO, bool]:
    """A stream on what stderr is now (the terminal), that keeps pointing there once fd 2 is redirected;
    and whether it was opened here (and must be closed)."""
    try:
        if sys.stderr.fileno() == 2:
            sys.stderr.flush()
            return os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace", buffering=1), True
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is a ValueError and an OSError
        pass
    return sys.stderr, False  # a stream without a descriptor (a test's capture): it is not redirected


@contextmanager
def transcript(log: Path, verbose: bool = False) -> Iterator[TextIO]:
    """Append everything the block prints to LOG (with a header naming the command and the time), and show
    it on the terminal only when VERBOSE. Yields a stream on the terminal for the short view."""
    log.parent.mkdir(parents=True, exist_ok=True)
    view, opened = _terminal()
    try:
        with log.open("a", encoding="utf-8") as handle:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"\n===== {started}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n")
            handle.flush()
            with _tee(handle, view) if verbose else output_to(handle):
                yield view
    finally:
        if opened:
            view.close()
