import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support import REPO, command_env

# the quick start and the demo, started in the background once the collected tests are known to need them
STARTED: dict = {}

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
    if "tiny" in STARTED:  # built when the background work was started
        return STARTED["tiny"]
    from facellm.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-internvl3")


@pytest.fixture(scope="session")
def demo() -> tuple[subprocess.CompletedProcess, Path]:
    """(its output, its folder): `make demo`'s pipeline, run once per session on the session's tiny model.
    Every stage runs for real; the tests that need a trained, exported or evaluated model use its outputs."""
    STARTED["demo thread"].join(timeout=1800)
    process, command, workdir = STARTED["demo"]
    code = process.wait(timeout=900)
    out, err = ((workdir.parent / name).read_text() for name in ("stdout", "stderr"))
    assert code == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(command, code, out, err), workdir


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


def pytest_collection_finish(session) -> None:
    """Start the README's quick start, then the demo, in the background as soon as a collected test needs
    them: minutes of work each, much of it on one core (imports, tiny models), which runs beside the tests
    that come before their first users instead of holding them up. One after the other, on one thread
    each, so that with the tests beside them the two cores are busy but not oversubscribed."""
    needed = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    factory = session.config._tmp_path_factory
    if "quickstart" in needed:
        from tests.quickstart import start_quickstart

        clone = factory.mktemp("quickstart") / "FaceLLM"
        log = clone.parent / "quickstart.log"
        STARTED["quickstart"] = (start_quickstart(clone, log), clone, log)
    if "demo" in needed:
        from facellm.testing.tiny_model import build_tiny_model

        STARTED["tiny"] = build_tiny_model(factory.mktemp("tiny") / "tiny-internvl3")
        workdir = factory.mktemp("demo") / "demo"
        STARTED["demo thread"] = threading.Thread(target=_demo_after_quickstart, args=(workdir,), daemon=True)
        STARTED["demo thread"].start()


def _demo_after_quickstart(workdir: Path) -> None:
    if "quickstart" in STARTED:
        STARTED["quickstart"][0].wait()
    command = ["python", "-m", "facellm.testing.demo", "--workdir", str(workdir), "--tiny-model"]
    command.append(str(STARTED["tiny"]))
    env = {**command_env(), "OMP_NUM_THREADS": "1"}
    with (workdir.parent / "stdout").open("w") as out, (workdir.parent / "stderr").open("w") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
    STARTED["demo"] = (process, command, workdir)


def pytest_sessionfinish(session) -> None:
    for name in ("quickstart", "demo"):
        if name in STARTED and STARTED[name][0].poll() is None:  # the session ended first
            STARTED[name][0].kill()


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
