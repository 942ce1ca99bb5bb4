"""What every FaceLLM command shares: one error type for bad input, and a wrapper that turns it into a
one-line message and a non-zero exit instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_BAD_INPUT = 2


class FaceLLMError(Exception):
    """A problem with the user's input or set-up. The message names the file and the problem."""


def first_line(error: BaseException, named: bool = False) -> str:
    """The first line of an exception's message (its class name when it has none), for one-line errors;
    NAMED puts the class name first ("ValueError: ...")."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if named:
        return f"{error.__class__.__name__}: {line}"
    return line or error.__class__.__name__


def changed_settings(recorded: dict, wanted: dict) -> str:
    """Each setting that differs between a folder's RECORDED run and the WANTED one, in words: "model
    'a' -> 'b', mode 'x' -> 'y'" (what a refusal to mix two runs in one folder shows)."""
    names = [*wanted, *(k for k in recorded if k not in wanted)]
    return ", ".join(
        f"{k} {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in names if recorded.get(k) != wanted.get(k)
    )


def is_text(text: str) -> bool:
    """False for a string that cannot be written as UTF-8: lone surrogates, from a JSON escape or from
    command-line bytes that were not UTF-8. Tokenizers and files fail on them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run_cli(main: Callable[[], object]) -> None:
    try:
        main()
    except FaceLLMError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:  # a file or folder the user named cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt as interrupt:  # a command may say how to resume in the interrupt's message
        print("interrupted" + (f"; {interrupt}" if str(interrupt) else ""), file=sys.stderr)
        sys.exit(getattr(interrupt, "code", 130))  # 143 for an interrupt that SIGTERM raised
