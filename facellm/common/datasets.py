"""Training datasets as LLaMA-Factory reads them: the one reader of preflight, the model card and the
contamination check, so that they accept exactly what training accepts.

LLaMA-Factory's own code decides what it can:
  * `get_dataset_list` parses `dataset_info.json` into its `DatasetAttr`s (formatting, columns, tags, split);
  * `datasets.load_dataset` loads the files with the arguments `_load_single_dataset` passes it for a local
    dataset, so the rows are the ones training gets (and the Arrow cache it writes is the one training
    reuses; the table is memory-mapped, so a large dataset does not fill the memory);
  * its converter (`get_dataset_converter`: sharegpt, alpaca, openai) turns each row into the prompt,
    response, system and image paths the trainer sees, and marks a conversation it would skip; its
    `_find_medias` resolves each image against `media_dir`.

Re-implemented here, because LLaMA-Factory has these only inside functions that do much more:
  * which files make a local dataset (inside `_load_single_dataset`, which also loads and converts them, drops
    the raw columns and stops at the first row its converter fails on): the file, or every file of the
    folder, typed by extension with its FILEEXT2TYPE, all of one type;
  * the supervised processor's rule that drops a converted record (it needs an odd number of prompt turns
    and one response);
  * mm_plugin's count of image placeholders (its IMAGE_PLACEHOLDER) in a record's messages.

LLaMA-Factory is imported inside the functions only: importing it takes some 20 seconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from facellm.common.cli import FaceLLMError, first_line
from facellm.common.sharegpt import read_registry

REGISTRY = "dataset_info.json"  # LLaMA-Factory's DATA_CONFIG
CONVERTER_LOGGER = "llamafactory.data.converter"


@dataclass(frozen=True)
class Media:
    """An image of a record: as the record writes it, and the path LLaMA-Factory opens (joined to media_dir
    when the file is there, else as written; None when the value is not a path, e.g. embedded bytes)."""

    written: object
    path: str | None

    @property
    def escapes(self) -> bool:
        """A relative path whose `..` leads out of media_dir (an absolute path is taken as it is)."""
        if not isinstance(self.written, str) or os.path.isabs(self.written):
            return False
        normalised = os.path.normpath(self.written)
        return normalised == os.pardir or normalised.startswith(os.pardir + os.sep)


@dataclass
class Record:
    """One row of a dataset and what LLaMA-Factory's converter makes of it."""

    index: int  # 0-based, in the order LLaMA-Factory loads the rows
    row: dict
    converted: dict | None = None  # the converter's output: _prompt, _response, _system, _tools, _images ...
    failure: str | None = None  # the converter raised on it (training would stop): why
    skipped: str | None = None  # LLaMA-Factory would leave it out of training: why
    images: list[Media] = field(default_factory=list)
    image_tags: int = 0  # image placeholders in the converted messages

    @property
    def messages(self) -> list[dict]:
        """The converted turns (system excepted), in order: roles user, assistant, observation, function."""
        if not self.converted:
            return []
        return [*self.converted["_prompt"], *self.converted["_response"]]


@dataclass
class TrainingDataset:
    name: str
    attr: Any  # LLaMA-Factory's DatasetAttr
    path: Path | None = None  # the data file or folder; None when not local (hub, script, cloud file)
    rows: Any = None  # a datasets.Dataset
    converter: Any = None

    @property
    def local(self) -> bool:
        return self.rows is not None

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else 0

    def records(self) -> Iterator[Record]:
        """Every row, in order, as LLaMA-Factory's converter sees it; its log messages are kept, not shown."""
        from llamafactory.extras.constants import IMAGE_PLACEHOLDER

        with _converter_log() as log:
            for index, row in enumerate(self.rows):
                yield _record(index, row, self, log, IMAGE_PLACEHOLDER)


class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(str(record.msg)[:80])  # the start says what; the rest repeats the record


@contextmanager
def _converter_log():
    """The converter's warnings collected instead of printed (it prints them through its own handler)."""
    logger, log = logging.getLogger(CONVERTER_LOGGER), _Log()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(log)
    logger.propagate = False
    logger.setLevel(logging.WARNING)  # its warnings say why a record is skipped, whatever the verbosity
    try:
        yield log
    finally:
        logger.removeHandler(log)
        logger.propagate = propagate
        logger.setLevel(level)


def _record(index: int, row: dict, dataset: TrainingDataset, log: _Log, placeholder: str) -> Record:
    record = Record(index, row)
    attr, converter = dataset.attr, dataset.converter
    written = row.get(attr.images) if attr.images else None
    # the value as _find_medias takes it: one value or a list; None or an empty list is no image
    listed = written if isinstance(written, list) else [] if written is None else [written]
    log.messages.clear()
    try:
        record.converted = converter(row)
    except Exception as error:  # any failure of LLaMA-Factory's converter on this row
        record.failure = f"{error.__class__.__name__}: {first_line(error)}"
        if isinstance(error, KeyError) and error.args == (None,):
            record.failure += " (a column or tag the entry leaves unset)"
        try:  # the images still, as the converter would resolve them
            resolved = converter._find_medias(written) or []
        except Exception:  # a value it cannot take: left unresolved
            resolved = [None] * len(listed)
    else:
        resolved = record.converted["_images"] or []
        record.skipped = _skip_reason(record, attr, log.messages)
        record.image_tags = sum(
            m["content"].count(placeholder) for m in record.messages if isinstance(m.get("content"), str)
        )
    record.images = [
        Media(value, path if isinstance(path, str) else None)
        for value, path in zip(listed, resolved, strict=True)
    ]
    return record


def _skip_reason(record: Record, attr, messages: list[str]) -> str | None:
    """Why LLaMA-Factory would leave the record out: its converter's own warning, or (re-implemented) the
    supervised processor's rule, which needs an odd number of prompt turns and one response."""
    for warning in ("Invalid role tag", "Invalid message count"):
        if any(message.startswith(warning) for message in messages):
            return f"{warning.lower()} (turns: {_roles(record.row, attr)})"
    if attr.ranking or attr.kto_tag:
        return None  # other training stages: not checked here
    prompt, response = record.converted["_prompt"], record.converted["_response"]
    if len(prompt) % 2 == 1 and len(response) == 1:
        return None
    if not prompt and not response:
        return "no conversation"
    return f"{len(prompt)} prompt turn(s) and {len(response)} response(s): it takes an odd number and one"


def _roles(row: dict, attr) -> str:
    """The role of each turn as written, for a message naming a conversation LLaMA-Factory skips."""
    turns = row.get(attr.messages) if attr.messages else None
    if not isinstance(turns, list):
        return "none"
    return ", ".join(repr(t.get(attr.role_tag)) if isinstance(t, dict) else "?" for t in turns) or "none"


def split_names(names: str | list[str]) -> list[str]:
    """Dataset names as LLaMA-Factory splits its `dataset` argument."""
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


def open_datasets(
    dataset_dir: str | Path,
    names: str | list[str],
    media_dir: str | Path | None = None,
    registry: dict | None = None,
) -> list[TrainingDataset]:
    """The datasets NAMES of DATASET_DIR as LLaMA-Factory resolves and loads them, with MEDIA_DIR (default:
    DATASET_DIR, as in LLaMA-Factory) for their images. REGISTRY stands in for DATASET_DIR's
    dataset_info.json when given. A bad registry, name or data file is a FaceLLMError naming the file."""
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list

    dataset_dir = str(dataset_dir)
    info_path = Path(dataset_dir) / REGISTRY
    if registry is None and (dataset_dir == "ONLINE" or dataset_dir.startswith("REMOTE:")):
        return [TrainingDataset(name, None) for name in split_names(names)]  # a hub registry: not local
    if registry is None:
        if not info_path.is_file():
            raise FaceLLMError(f"{info_path}: dataset registry not found (dataset_dir: {dataset_dir})")
        registry = read_registry(info_path)
    data_args = SimpleNamespace(media_dir=str(media_dir if media_dir is not None else dataset_dir))
    found = []
    for name in split_names(names):
        try:
            (attr,) = get_dataset_list([name], registry)
            converter = get_dataset_converter(attr.formatting, attr, data_args)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            if name not in registry:
                known = ", ".join(map(repr, registry)) or "none"
                raise FaceLLMError(f"{info_path}: no dataset named {name!r} (known: {known})") from None
            raise FaceLLMError(f"{info_path}: dataset {name!r}: LLaMA-Factory cannot read its entry "
                               f"({first_line(error)})") from None  # fmt: skip
        dataset = TrainingDataset(name, attr, converter=converter)
        if attr.load_from == "file":
            dataset.path = Path(dataset_dir) / attr.dataset_name
            dataset.rows = _load(dataset.path, name, attr)
        found.append(dataset)
    return found


def _data_files(path: Path, name: str) -> tuple[list[str], str]:
    """(files, loader) of a local dataset: the file, or every file of the folder, typed by extension.
    Re-implemented from `_load_single_dataset` (see the module's docstring)."""
    from llamafactory.extras.constants import FILEEXT2TYPE

    if path.is_dir():
        files = [os.path.join(path, entry) for entry in os.listdir(path)]
        if not files:
            raise FaceLLMError(f"{path}: the folder of dataset {name!r} is empty")
    elif path.is_file():
        files = [str(path)]
    else:
        raise FaceLLMError(f"{path}: data file of dataset {name!r} not found")
    kinds = [FILEEXT2TYPE.get(os.path.splitext(file)[-1][1:]) for file in files]
    if None in kinds:
        odd = files[kinds.index(None)]
        raise FaceLLMError(f"{odd}: not a type of data file LLaMA-Factory reads ({', '.join(FILEEXT2TYPE)})")
    if len(set(kinds)) > 1:
        raise FaceLLMError(f"{path}: dataset {name!r} mixes file types ({', '.join(sorted(set(kinds)))})")
    return files, kinds[0]


def _load(path: Path, name: str, attr):
    """The rows of a local dataset, loaded as LLaMA-Factory's `_load_single_dataset` loads them."""
    import datasets

    files, loader = _data_files(path, name)
    bars_were_off, verbosity = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a file it cannot parse: one error, below
    try:
        rows = datasets.load_dataset(
            path=loader, name=None, data_dir=None, data_files=files, split=attr.split, streaming=False
        )
    except Exception as error:  # whatever the loader raises on a file it cannot read
        if _holds_no_data(error):
            raise FaceLLMError(f"{path}: dataset {name!r} holds no records: nothing to train on") from None
        raise FaceLLMError(f"{path}: dataset {name!r} not readable as {loader} ({_cause(error)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()
    if len(rows) == 0:
        raise FaceLLMError(f"{path}: dataset {name!r} holds no records: nothing to train on")
    return rows


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _holds_no_data(error: BaseException) -> bool:
    """An empty file: the loader finds no split, no example to infer a schema from, or no column."""
    empty = ("SchemaInferenceError", "EmptyDataError")
    return any("corresponds to no data" in str(e) or e.__class__.__name__ in empty for e in _chain(error))


def _cause(error: BaseException) -> str:
    """The first line of the innermost error: the loader wraps the parser's in a generic one."""
    innermost = list(_chain(error))[-1]
    return f"{innermost.__class__.__name__}: {first_line(innermost)}"


def registration(path: Path) -> tuple[Path, str] | None:
    """(dataset_dir, name) of the entry, in a dataset_info.json of PATH's folder or a folder above it, whose
    data file or folder is PATH; None when none is."""
    target = path.resolve()
    for folder in target.parents:
        info = folder / REGISTRY
        if not info.is_file():
            continue
        for name, entry in read_registry(info).items():
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            if isinstance(file_name, str) and (folder / file_name).resolve() == target:
                return folder, name
    return None
