import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import run_command

# Nothing in the suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config) -> None:
    """Caches of our own and of Hugging Face datasets live in one folder per test session (shared by its
    subprocesses), so a run's timing and results never depend on what the developer's home holds."""
    cache = Path(tempfile.mkdtemp(prefix="facellm-tests-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "hf-datasets")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from facellm.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-internvl3")


@pytest.fixture(scope="session")
def demo(tiny_model, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """(its output, its folder): `make demo`'s pipeline, run once per session on the session's tiny model.
    Every stage runs for real; the tests that need a trained, exported or evaluated model use its outputs."""
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    result = run_command(
        "python", "-m", "facellm.testing.demo", "--workdir", str(workdir), "--tiny-model", str(tiny_model),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, workdir


@pytest.fixture(scope="session")
def trained_tiny(demo) -> tuple[Path, Path]:
    """(LoRA adapter, its merged float32 export) of the demo: the tiny recipe trained on the labels dataset
    of the sample faces (in `adapter.parent / "fairfacegpt"`), so that its answers differ from image to
    image. `tiny_train_command` repeats exactly that training run."""
    workdir = demo[1]
    return workdir / "lora", workdir / "export" / "FaceLLM-tiny"
