"""The FairFaceGPT dataset as LLaMA-Factory reads it: ShareGPT records and their `dataset_info.json` entry.

A record is one single-turn conversation about one image:
    {"conversations": [{"from": "human", "value": "<image>\\nQUESTION"},
                       {"from": "assistant", "value": "ANSWER"}],
     "images": ["val/123.jpg"]}
Image paths are relative to the FairFace image folder; training passes that folder as `media_dir`.
"""

from __future__ import annotations

from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json, write_json_atomic
from facellm.common.ledger import DONE, Ledger

DATASET_NAME = "fairfacegpt"
IMAGE_TAG = "<image>"


def record(question: str, answer: str, image: str) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TAG}\n{question}"},
            {"from": "assistant", "value": answer},
        ],
        "images": [image],
    }


def dataset_info_entry(file_name: str) -> dict:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "assistant",
        },
    }


def read_registry(info_path: Path) -> dict:
    """The `dataset_info.json` at INFO_PATH (empty when absent); a damaged one is an error naming it."""
    info = read_json(info_path) if info_path.is_file() else {}
    if not isinstance(info, dict):
        raise FaceLLMError(f"{info_path}: not a LLaMA-Factory dataset registry (expected an object)")
    return info


def write_dataset(out_dir: Path, records: list[dict], name: str = DATASET_NAME) -> tuple[Path, Path]:
    """Write `dataset.json` and a `dataset_info.json` that registers it, so OUT_DIR is a LLaMA-Factory
    `dataset_dir` on its own. Returns both paths."""
    dataset_path = out_dir / "dataset.json"
    info_path = out_dir / "dataset_info.json"
    info = read_registry(info_path)
    info[name] = dataset_info_entry(dataset_path.name)
    write_json_atomic(dataset_path, records)
    write_json_atomic(info_path, info)
    return dataset_path, info_path


def from_ledger(faces: list, keys: list[str], ledger: Ledger) -> list[dict]:
    """ShareGPT records of every done item (KEYS: an image's items), in CSV order then item order: the same
    ledger always gives the same file, however the requests were scheduled."""
    records = []
    for face in faces:
        for key in keys:
            entry = ledger.get(face.file, key)
            if entry and entry["status"] == DONE:
                records.append(record(entry["question"], entry["answer"], face.file))
    return records
