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
    # uv's own cache stays where `make test` installed from: the quick start installs a fresh clone with it
    home_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    os.environ.setdefault("UV_CACHE_DIR", str(Path(home_cache) / "uv"))
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


# the quick start, started in the background once the collected tests are known to need it
STARTED: dict = {}


def pytest_collection_finish(session) -> None:
    """Start the README's quick start (minutes of mostly one-core work: imports, a short training) as soon as
    a collected test needs it, so that it runs beside the tests that come before its first user instead of
    holding them up."""
    if any("quickstart" in getattr(item, "fixturenames", ()) for item in session.items):
        from tests.quickstart import start_quickstart

        clone = session.config._tmp_path_factory.mktemp("quickstart") / "FaceLLM"
        log = clone.parent / "quickstart.log"
        STARTED["quickstart"] = (start_quickstart(clone, log), clone, log)


def pytest_sessionfinish(session) -> None:
    if "quickstart" in STARTED and STARTED["quickstart"][0].poll() is None:  # the session ended first
        STARTED["quickstart"][0].kill()


@pytest.fixture(scope="session")
def quickstart() -> Path:
    """The clone in which the README's quick start ran, as printed, by bash (tests/quickstart.py): its
    LoRA run and export are the LoRA path's fixtures."""
    process, clone, log = STARTED["quickstart"]
    code = process.wait(timeout=1800)
    assert code == 0, log.read_text(encoding="utf-8", errors="replace")[-4000:]
    return clone


@pytest.fixture(scope="session")
def lora_run(quickstart) -> Path:
    """The quick start's train.sh run: the LoRA recipe on the sample faces' dry-run data."""
    return quickstart / "saves" / "quickstart" / "lora"


@pytest.fixture(scope="session")
def trained_tiny(quickstart, lora_run) -> tuple[Path, Path]:
    """(LoRA adapter, its merged float32 export by the quick start's export.sh)."""
    return lora_run, quickstart / "saves" / "quickstart" / "FaceLLM-tiny"
