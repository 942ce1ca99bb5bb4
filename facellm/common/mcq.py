"""The layout of a multiple-choice prompt, shared by the FaceXBench evaluation (its authors' prompt) and the
FairFaceGPT multiple-choice items, so that a model is trained on the layout it is evaluated with:

    QUESTION
    INSTRUCTION
    (A) first option
    (B) second option

one part a line, every line ending with a newline, at most len(LETTERS) options.
"""

from __future__ import annotations

from collections.abc import Sequence

LETTERS = "ABCD"


def option_line(letter: str, option: object) -> str:
    """One option as the prompt shows it: "(A) text"."""
    return f"({letter}) {option}"


def option_lines(options: Sequence[object]) -> list[str]:
    """The options lettered A, B, ... in order (options beyond the last letter are left out)."""
    return [option_line(letter, option) for letter, option in zip(LETTERS, options, strict=False)]


def prompt(lines: Sequence[str], options: Sequence[object]) -> str:
    """LINES (context, question, instruction: whatever the caller has), then the options, each on its own
    line ending with a newline."""
    return "".join(f"{line}\n" for line in [*lines, *option_lines(options)])
