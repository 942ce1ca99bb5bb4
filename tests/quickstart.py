"""The README's quick start, run as a newcomer runs it: in a fresh clone, by bash, exactly as printed.

The block that follows the QUICKSTART marker in README.md is handed to `bash -e` unchanged, in a copy of
this checkout as `git clone` would make it (tracked files, and new ones git does not ignore: no `.venv/`,
no `saves/`), from a shell with no environment activated. Its own first line installs the environment, so
the path checked is the README's from the first command on. The suite runs it once (the `quickstart`
fixture) and uses its LoRA run and export for the tests of that path;
`python -m tests.quickstart --keep DIR` runs it by hand and leaves the clone in DIR.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = "<!-- quickstart: the suite runs the block below exactly as printed -->"
# where the quick start writes, relative to the clone
OUT = Path("saves/quickstart")


def quickstart_block(readme: str) -> str:
    """The bash block right after the QUICKSTART marker."""
    _, marker, after = readme.partition(QUICKSTART)
    block = re.match(r"\s*```bash\n(.*?)```", after, re.DOTALL) if marker else None
    if block is None:
        raise ValueError(f"README.md: no ```bash block after {QUICKSTART}")
    return block.group(1)


def fresh_clone(destination: Path) -> None:
    """The files `git clone` of this working tree would hold (its uncommitted changes included)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not in the clone
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def newcomer_env() -> dict:
    """A user's shell: nothing of this project's environment on PATH or activated."""
    venv = str(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(venv)]
    env["PATH"] = os.pathsep.join([*path, str(Path.home() / ".local" / "bin")])  # where make puts uv
    return env


def background_env() -> dict:
    """newcomer_env on one thread: the suite runs the quick start beside its other tests, on two cores."""
    return {**newcomer_env(), "OMP_NUM_THREADS": "1"}


def start_quickstart(clone: Path, log: Path) -> subprocess.Popen:
    """Clone into CLONE and start the README's block there, its whole output going to LOG."""
    fresh_clone(clone)
    block = quickstart_block((clone / "README.md").read_text(encoding="utf-8"))
    with log.open("w", encoding="utf-8") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            ["bash", "-e", "-c", block], cwd=clone, env=background_env(), stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def run_quickstart(clone: Path, log: Path) -> int:
    """start_quickstart, waited for; its exit code."""
    return start_quickstart(clone, log).wait(timeout=1800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="clone into this new folder and leave it there")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="facellm-quickstart-")) / "FaceLLM"
    if clone.exists() and any(clone.iterdir()):
        sys.exit(f"error: {clone}: not empty; give a new folder")
    clone.mkdir(parents=True, exist_ok=True)
    log = clone.parent / "quickstart.log"
    code = run_quickstart(clone, log)
    print(f"quick start: exit {code}; clone {clone}; output {log}")
    sys.exit(code)


if __name__ == "__main__":
    main()
