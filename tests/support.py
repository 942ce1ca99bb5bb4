"""What the tests share besides fixtures: the repository's paths and running commands as a user would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FACES = REPO / "assets" / "fairface-sample"
SHARED_FACEXBENCH = REPO.parent / "shared" / "facexbench" / "benchmark"


def quickstart_train_args(clone: Path, output_dir: Path, *extra: str) -> list[str]:
    """train.sh's arguments for the README quick start's LoRA run in CLONE (tests/quickstart.py), into
    OUTPUT_DIR, every path spelt out (this checkout's train.sh would read the recipe's from here)."""
    return [
        "configs/tiny_cpu_lora_sft.yaml", f"model_name_or_path={clone / 'saves/tiny-internvl3'}",
        f"dataset_dir={clone / 'saves/quickstart/ffgpt'}",
        f"media_dir={clone / 'assets/fairface-sample/fairface-img-margin025-trainval'}",
        f"output_dir={output_dir}", *extra,
    ]  # fmt: skip


def command_env() -> dict:
    """The environment of a user's shell with this environment's tools on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_command(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level command the way a user would, with this environment's tools on PATH."""
    return subprocess.run(
        args, cwd=cwd, env=command_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Bad input: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def run_main(main, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """MAIN(ARGV) in this process, as its entry point runs it (one-line errors, exit codes), with what it
    printed: the tests of a command's behaviour, without paying its imports in a new interpreter each time."""
    from facellm.common.cli import run_cli

    capsys.readouterr()
    try:
        run_cli(lambda: main(argv))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)
