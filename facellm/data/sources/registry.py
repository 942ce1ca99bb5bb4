"""Every label source FairFaceGPT reads (`--source`), FairFace included, with what it can ask.

A source is read from ROOT in its official layout (see each module) into Loaded(image_root, records,
skipped). Every source gives open items (its aspects and hint templates: data/prompts/ for FairFace,
data/prompts/<source>/ for the others, filled from the labels by the module's hint_fields) and the
short-answer and multiple-choice items of its questions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.data import fairface, items
from facellm.data.prompts import DEFAULT_PROMPTS_DIR, LABEL_FIELDS, PromptSet, label_fields, load_prompts
from facellm.data.reports import GROUPINGS as FAIRFACE_GROUPINGS
from facellm.data.sources import affectnet, celeba, rafdb, utkface
from facellm.data.sources.base import Grouping, LabelQuestion, Loaded

DEFAULT = "fairface"


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    splits: tuple[str, ...]
    read: Callable[[Path, str], Loaded]
    questions: tuple[LabelQuestion, ...]
    groupings: tuple[Grouping, ...]
    layout: str  # what ROOT holds, in one line
    hint: Callable[[object], dict[str, str]] = label_fields  # a record's template fields
    hint_fields: frozenset[str] = LABEL_FIELDS

    @property
    def prompts_dir(self) -> Path:
        return DEFAULT_PROMPTS_DIR if self.name == DEFAULT else DEFAULT_PROMPTS_DIR / self.name

    def prompts(self, folder: Path | None = None) -> PromptSet:
        """The source's prompt set (FOLDER: a user's, whose templates use the same fields)."""
        return load_prompts(folder or self.prompts_dir, self.hint, self.hint_fields)


def _labels_hint(module) -> dict:
    """A source module's hint as the Source fields: its fields, read from a record's labels."""
    return {"hint": lambda record: module.hint_fields(record.labels), "hint_fields": module.HINT_FIELDS}


def _fairface(root: Path, split: str) -> Loaded:
    image_root, records = fairface.load_split(root, split)
    return Loaded(image_root, records, {})


SOURCES = {
    source.name: source
    for source in (
        Source(
            "fairface", "FairFace", fairface.SPLITS, _fairface, items.FAIRFACE, FAIRFACE_GROUPINGS,
            "fairface_label_<split>.csv and fairface-img-margin025-trainval/",
        ),
        Source(
            "utkface", "UTKFace", utkface.SPLITS, utkface.load_split, utkface.QUESTIONS, utkface.GROUPINGS,
            "the UTKFace images ([age]_[gender]_[race]_[date&time].jpg), in it or one folder down",
            **_labels_hint(utkface),
        ),
        Source(
            "celeba", "CelebA", celeba.SPLITS, celeba.load_split, celeba.QUESTIONS, celeba.GROUPINGS,
            "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt and Img/img_align_celeba/ (or all three "
            "side by side)", **_labels_hint(celeba),
        ),
        Source(
            "rafdb", "RAF-DB", rafdb.SPLITS, rafdb.load_split, rafdb.QUESTIONS, rafdb.GROUPINGS,
            "EmoLabel/list_patition_label.txt and Image/aligned/", **_labels_hint(rafdb),
        ),
        Source(
            "affectnet", "AffectNet", affectnet.SPLITS, affectnet.load_split, affectnet.QUESTIONS,
            affectnet.GROUPINGS, "Manually_Annotated_file_lists/{training,validation}.csv and "
            "Manually_Annotated_Images/", **_labels_hint(affectnet),
        ),
    )
}  # fmt: skip
SPLITS = tuple(dict.fromkeys(split for source in SOURCES.values() for split in source.splits))


def get(name: str) -> Source:
    if name not in SOURCES:
        raise FaceLLMError(f"unknown source {name!r} (choose from {', '.join(SOURCES)})")
    return SOURCES[name]


def root_of(source: Source, root: Path | None, fairface_root: Path) -> Path:
    """The folder to read SOURCE from: --root, or for FairFace --fairface-root as before --source."""
    if root is not None:
        return root
    if source.name == "fairface":
        return fairface_root
    raise FaceLLMError(f"--source {source.name} needs --root, the folder holding {source.layout}")


def split_of(name: str, split: str | None) -> str:
    """SPLIT, or when none is given the source's default: FairFace's val, as before --source, or the only
    split of a source that has one (UTKFace's all); the others need one, as it decides the FaceXBench risk."""
    if split is not None:
        return split
    source = get(name)
    if source.name == DEFAULT:
        return "val"
    if len(source.splits) == 1:
        return source.splits[0]
    raise FaceLLMError(f"--source {name} needs --split (one of {', '.join(source.splits)})")


def load(source: Source, root: Path, split: str) -> Loaded:
    if split not in source.splits:
        raise FaceLLMError(
            f"--split {split}: {source.title} has no such split (one of {', '.join(source.splits)})"
        )
    return source.read(root, split)


def read(
    name: str, root: Path | None, fairface_root: Path, split: str, quiet: bool = False
) -> tuple[Source, Path, list]:
    """A run's source, image root and records (`--source`, `--root`, `--split`), saying what the reader left
    out on purpose (unless QUIET); every refusal comes before anything is written."""
    source = get(name)
    image_root, records, left_out = load(source, root_of(source, root, fairface_root), split)
    for reason, files in left_out.items() if not quiet else ():
        print(f"{source.title}: {len(files)} image(s) left out, {reason} (e.g. {files[0]})")
    return source, image_root, records
