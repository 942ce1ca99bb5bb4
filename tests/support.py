"""What the tests share besides fixtures: the repository's paths and running commands as a user would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FACES = REPO / "assets" / "fairface-sample"
SHARED_FACEXBENCH = REPO.parent / "shared" / "facexbench" / "benchmark"


def four_samples(folder: Path) -> Path:
    """FOLDER as a dataset of four labels pairs about one sample face (dataset.json + dataset_info.json)."""
    import json

    from facellm.data.generate import Config, generate

    generate(Config(SAMPLE_FACES, folder, backend="labels", limit=1, progress=False))  # one face: 8 pairs
    records = json.loads((folder / "dataset.json").read_text())[:4]
    (folder / "dataset.json").write_text(json.dumps(records))
    return folder


# The LoRA run of the tests: 60 steps of 2 on four samples, a checkpoint every 10. The tiny model's output
# layer is random and frozen, which caps what LoRA on the linear layers alone can reach; training it too
# (additional_target=lm_head) lets a real optimisation show.
LORA_RUN = ("max_steps=60", "learning_rate=1e-2", "additional_target=lm_head", "save_steps=10")


def tiny_train_args(tiny_model: Path, data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """train.sh's arguments for the tests' LoRA run: the LoRA recipe on DATA_DIR (sample-face images)."""
    return [
        "configs/tiny_cpu_lora_sft.yaml", f"model_name_or_path={tiny_model}", f"dataset_dir={data_dir}",
        f"media_dir={SAMPLE_FACES / 'fairface-img-margin025-trainval'}", f"output_dir={output_dir}",
        *LORA_RUN, *extra,
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
