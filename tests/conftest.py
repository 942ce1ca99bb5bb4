import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import four_samples, run_command, tiny_train_args

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
def learned_tiny(demo) -> dict[str, Path]:
    """The demo's model that learned the face world (full fine-tuning, then export.sh): "model" (the export),
    "run" (train.sh's output), "world" (FairFace layout), "benchmark" (held-out, FaceXBench layout)."""
    workdir = demo[1]
    return {
        "model": workdir / "export" / "FaceLLM-tiny",
        "run": workdir / "full",
        "world": workdir / "face-world",
        "benchmark": workdir / "face-world-benchmark",
    }


@pytest.fixture(scope="session")
def lora_run(tiny_model, tmp_path_factory) -> Path:
    """train.sh's LoRA run of the tests (tests/support.py LORA_RUN) on four samples, in this process through
    train.sh's entry point; the resume test repeats it as its reference."""
    from facellm.common.cli import run_cli
    from facellm.train.launch import main

    folder = tmp_path_factory.mktemp("lora")
    out = folder / "lora"
    run_cli(lambda: main(tiny_train_args(tiny_model, four_samples(folder / "data"), out)))
    return out


@pytest.fixture(scope="session")
def trained_tiny(lora_run, tiny_model) -> tuple[Path, Path]:
    """(LoRA adapter, its merged float32 export by export.sh's entry point, in this process)."""
    from facellm.common.cli import run_cli
    from facellm.train.export import main

    merged = lora_run.parent / "export" / "FaceLLM-tiny-lora"
    run_cli(lambda: main(["--adapter", str(lora_run), "--base", str(tiny_model), "--out", str(merged)]))
    return lora_run, merged
