import os
import tempfile
from pathlib import Path

import pytest

from tests.support import SAMPLE_FACES, run_command, tiny_train_command

# Nothing in the suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config) -> None:
    """Caches of our own and of Hugging Face datasets live in one folder per test session (and so do the
    subprocesses'), so a run's timing and results never depend on what the developer's home holds."""
    cache = Path(tempfile.mkdtemp(prefix="facellm-tests-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "hf-datasets")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from facellm.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-internvl3")


@pytest.fixture(scope="session")
def trained_tiny(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """(LoRA adapter, its merged export): the tiny model trained for 128 steps on the labels dataset of the
    sample faces (in `adapter.parent / "data"`), so that its answers differ from image to image."""
    from facellm.data.generate import Config, generate

    work = tmp_path_factory.mktemp("trained")
    generate(Config(SAMPLE_FACES, work / "data", backend="labels", progress=False))
    train = run_command(*tiny_train_command(tiny_model, work / "data", work / "lora"))
    assert train.returncode == 0, train.stderr[-3000:]
    export = run_command(
        "bash", "export.sh", "--base", str(tiny_model), "--adapter", str(work / "lora"),
        "--out", str(work / "merged"), "--dtype", "float32",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    return work / "lora", work / "merged"
