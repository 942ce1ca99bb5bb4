"""Command-line options declared once.

A tool's settings are one dataclass whose fields carry their help (`option`): the parser is built from it
(`add_options`) and the parsed namespace turns back into it (`from_args`), so a default or a help text is
written in one place. The flag groups several tools share (device and dtype, answer length, progress bars)
are declared here once as well.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


def option(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: tuple | None = None,
    aliases: tuple[str, ...] = (),
    group: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option `--field-name` (ALIASES: other spellings)."""
    meta = {"help": help, "parse": parse, "choices": choices, "aliases": aliases, "group": group}
    return dataclasses.field(default=default, metadata={"option": meta | {"metavar": metavar}})


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser of KIND that refuses zero and negative values."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_options(parser: argparse.ArgumentParser, settings: type) -> None:
    """One option per `option` field of the dataclass SETTINGS, in declaration order, in its group."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(settings):
        meta = field.metadata.get("option")
        if meta is None:
            continue
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flags = [f"--{field.name.replace('_', '-')}", *meta["aliases"]]
        shown = "" if field.default is None or field.default is False else " (default: %(default)s)"
        if field.default is False:
            target.add_argument(*flags, dest=field.name, action="store_true", help=meta["help"])
            continue
        parse = meta["parse"] or (type(field.default) if field.default is not None else str)
        target.add_argument(
            *flags, dest=field.name, type=parse, default=field.default, choices=meta["choices"],
            metavar=meta["metavar"], help=meta["help"] + shown,
        )  # fmt: skip


def from_args(settings: type, args: argparse.Namespace, **given: Any) -> Any:
    """The dataclass SETTINGS filled from the parsed ARGS (every field the parser set, its `option` fields
    and shared ones such as `progress`) and GIVEN."""
    names = {f.name for f in dataclasses.fields(settings) if hasattr(args, f.name)} - set(given)
    return settings(**{name: getattr(args, name) for name in names}, **given)


def add_device_options(
    parser: argparse.ArgumentParser,
    what: str = "the model",
    dtype_default: str = "bfloat16 on CUDA, else float32",
) -> None:
    parser.add_argument(
        "--device",
        default=None,
        help=f"where {what} runs: cuda, cuda:1, cpu ... (default: cuda if available)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help=f"weights' precision (default: {dtype_default})",
    )


def add_answer_length(parser: argparse.ArgumentParser, default: int | None, default_text: str = "") -> None:
    parser.add_argument(
        "--max-new-tokens", type=positive(int), default=default,
        help=f"answer length limit in tokens (default: {default_text or default})",
    )  # fmt: skip


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar (for logs and CI)"
    )
