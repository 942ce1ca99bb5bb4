"""Shared by the FairFaceGPT tests: a writable copy of the sample faces and a run against a local endpoint."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from facellm.data.generate import Config, generate
from tests.support import SAMPLE_FACES

API_KEY = "sk-facellm-test-9f8e7d6c5b4a"
IMAGE_DIR = "fairface-img-margin025-trainval"


def copy_faces(tmp_path: Path) -> Path:
    root = tmp_path / "fairface"
    shutil.copytree(SAMPLE_FACES, root)
    return root


def image_digest(root: Path, image: str) -> str:
    return hashlib.sha256((root / IMAGE_DIR / image).read_bytes()).hexdigest()


def image_tag(root: Path, image: str) -> str:
    """What the local endpoint writes into answers about this image."""
    return "image " + image_digest(root, image)[:16]


def run(endpoint, out: Path, root: Path = SAMPLE_FACES, **overrides):
    config = Config(
        fairface_root=root,
        out=out,
        base_url=endpoint.base_url if endpoint else None,
        progress=False,
        timeout=5.0,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return generate(config)


def ledger_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]


def dataset(out: Path) -> list[dict]:
    return json.loads((out / "dataset.json").read_text())
