"""The FairFaceGPT dataset as LLaMA-Factory reads it: ShareGPT records and their `dataset_info.json` entry.

A record is one single-turn conversation about one image:
    {"conversations": [{"from": "human", "value": "<image>\\nQUESTION"},
                       {"from": "assistant", "value": "ANSWER"}],
     "images": ["val/123.jpg"]}
Image paths are relative to the FairFace image folder; training passes that folder as `media_dir`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from facellm.cli import FaceLLMError

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


def write_dataset(out_dir: Path, records: list[dict], name: str = DATASET_NAME) -> tuple[Path, Path]:
    """Write `dataset.json` and a `dataset_info.json` that registers it, so OUT_DIR is a LLaMA-Factory
    `dataset_dir` on its own. Returns both paths."""
    dataset_path = out_dir / "dataset.json"
    info_path = out_dir / "dataset_info.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FaceLLMError(f"{info_path}: corrupt JSON ({error})") from None
        if not isinstance(info, dict):
            raise FaceLLMError(f"{info_path}: not a LLaMA-Factory dataset registry (expected an object)")
    info[name] = dataset_info_entry(dataset_path.name)
    write_json_atomic(dataset_path, records)
    write_json_atomic(info_path, info)
    return dataset_path, info_path
