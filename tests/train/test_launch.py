"""train.sh on the tiny model: learning, resume after a kill, resolved config and loss curve, refusals."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from facellm.common.cli import run_cli
from facellm.train.launch import main
from facellm.train.recipes import checkpoints
from facellm.train.report import losses, training_summary
from tests.quickstart import background_env
from tests.support import (
    REPO,
    assert_one_line_error,
    quickstart_train_args,
    run_command,
    run_main,
)

# the fake trainers below load no model: a hub id, which train.sh does not look for on disk
HUB_MODEL = "model_name_or_path=OpenGVLab/InternVL3-1B-hf"

# A stand-in for llamafactory-cli (`train CONFIG`): FAKE_TRAINER=fail fails as a Python trainer does, after
# writing a checkpoint when FAKE_CHECKPOINT names one; FAKE_TRAINER=wait waits, and dies of the SIGTERM or
# SIGINT it gets, as a Python trainer does, noting which in FAKE_DIR/got.
FAKE_TRAINER = """#!/usr/bin/env bash
echo started > "$FAKE_DIR/started"
if [ "$FAKE_TRAINER" = fail ]; then
  if [ -n "${FAKE_CHECKPOINT:-}" ]; then
    mkdir -p "$FAKE_CHECKPOINT" && echo {} > "$FAKE_CHECKPOINT/trainer_state.json"
  fi
  printf 'Traceback (most recent call last):\\n  File "train.py", line 1\\n' >&2
  printf 'ValueError: Cannot find valid samples\\n' >&2
  exit 1
fi
on() { echo "$1" > "$FAKE_DIR/got"; kill "$sleeper"; trap - "$1"; kill -s "$1" $$; }
trap 'on TERM' TERM
trap 'on INT' INT
sleep 60 & sleeper=$!
wait "$sleeper"
"""


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    """A folder, first on PATH, with the stand-in llamafactory-cli and the `python` train.sh runs with it."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "llamafactory-cli").write_text(FAKE_TRAINER)
    (fake / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for name in ("llamafactory-cli", "python"):
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(fake))
    return fake


def logged_losses(folder) -> dict[int, float]:
    return dict(losses(json.loads((folder / "trainer_state.json").read_text())))


def test_the_quickstart_run_cuts_the_loss_by_more_than_two_thirds(lora_run):
    # the first logged loss is that of a random model; measured 6.53 -> 1.47 (the last five steps)
    values = list(logged_losses(lora_run).values())
    first, last = values[0], sum(values[-5:]) / 5
    assert len(values) == 60 and last < 0.3 * first, (first, last)


def test_run_leaves_resolved_config_loss_curve_and_preflight(lora_run, quickstart):
    resolved = yaml.safe_load((lora_run / "facellm_resolved_config.yaml").read_text())
    assert resolved["output_dir"] == str(lora_run) and resolved["save_steps"] == 10
    assert resolved["dataset_dir"] == str(quickstart / "saves/quickstart/ffgpt")
    assert resolved["lora_rank"] == 16 and resolved["additional_target"] == "lm_head"
    assert (lora_run / "training_loss.png").stat().st_size > 10_000  # LLaMA-Factory's plot: the only one
    assert json.loads((lora_run / "preflight.json").read_text())["records"] == 128
    assert training_summary(lora_run)["global_step"] == 60


def test_killed_run_resumes_from_its_checkpoint(lora_run, quickstart, tmp_path):
    # the quick start's own command in its clone, into another folder: killed, then run again
    out = tmp_path / "lora"
    command = ("./train.sh", "configs/tiny_cpu_lora_sft.yaml", "dataset_dir=saves/quickstart/ffgpt",
               f"output_dir={out}", "--no-preflight")  # fmt: skip
    process = subprocess.Popen(
        command, cwd=quickstart, env=background_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not checkpoints(out):
        assert process.poll() is None, "training ended before a checkpoint was written"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    resumed_from = checkpoints(out)[-1]
    step = int(resumed_from.name.split("-")[1])
    assert step < 60 and not (out / "trainer_state.json").exists(), "the kill came too late"

    result = subprocess.run(command, cwd=quickstart, env=background_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {resumed_from}" in result.stderr
    # a short view (progress bar, summary); LLaMA-Factory's hundreds of lines go to the run's log
    assert "[INFO" not in result.stderr and len(result.stderr.split("\n")) < 12, result.stderr
    assert f"full log: {out / 'train.log'}" in result.stderr and f"train: steps {step} -> 60" in result.stdout
    assert "llamafactory" in (out / "train.log").read_text() and "train: 100%" in result.stderr
    resumed, reference = logged_losses(out), logged_losses(lora_run)
    assert max(resumed) == 60
    # optimizer, scheduler, RNG and data order restored: the steps after the checkpoint are those of the
    # uninterrupted run (a fresh optimizer would change every loss from step+2 on)
    after = [s for s in reference if s > step]
    assert after and all(abs(resumed[s] - reference[s]) <= 1e-4 * reference[s] for s in after), [
        (s, resumed[s], reference[s]) for s in after[:5]
    ]


def test_a_finished_run_trains_nothing_and_says_so_and_other_data_is_a_new_run(
    lora_run, quickstart, tmp_path, capsys
):
    arguments = quickstart_train_args(quickstart, lora_run, "--no-preflight")
    log = (lora_run / "train.log").read_text()
    result = run_main(main, arguments, capsys)  # the same command again
    assert result.returncode == 0 and "nothing to train" in result.stderr, result.stderr
    assert (
        f"{lora_run} already finished (60 of 60 steps)" in result.stderr and "output_dir=NEW" in result.stderr
    )
    assert (lora_run / "train.log").read_text() == log  # no trainer was started
    # your own data into the folder of a finished run: refused, in words, before anything is loaded
    mine = tmp_path / "my-data"
    mine_args = [a if not a.startswith("dataset_dir=") else f"dataset_dir={mine}" for a in arguments]
    result = run_main(main, mine_args, capsys)
    old = quickstart / "saves/quickstart/ffgpt"
    assert_one_line_error(result, f"dataset_dir '{old}' -> '{mine}'", "output_dir=NEW")


def test_recipe_paths_are_read_from_the_repository_root_and_command_line_ones_from_here(
    tiny_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    recipe = str(REPO / "configs" / "tiny_cpu_lora_sft.yaml")
    args = [recipe, f"model_name_or_path={tiny_model}", "output_dir=runs/mine", "--dry-run", "--no-preflight"]
    result = run_main(main, args, capsys)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["media_dir"] == str(REPO / "assets/fairface-sample/fairface-img-margin025-trainval")
    assert resolved["dataset_dir"] == str(REPO / "saves/demo/fairfacegpt")  # the recipe's, from the root
    assert resolved["output_dir"] == str(tmp_path / "runs/mine")  # the command line's, from here
    assert resolved["model_name_or_path"] == str(tiny_model)
    # a local model folder that is not there is named at once, not taken for a hub id
    result = run_main(
        main, [recipe, "model_name_or_path=saves/no-model", "--dry-run", "--no-preflight"], capsys
    )
    assert_one_line_error(result, f"model_name_or_path {tmp_path / 'saves/no-model'}: no such folder")


def test_a_missing_tiny_model_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    import facellm.train.recipes as recipes

    monkeypatch.setattr(recipes, "REPO", tmp_path)  # a checkout where the tiny model was never built
    started = time.monotonic()
    result = run_main(main, ["configs/tiny_cpu_lora_sft.yaml", "--dry-run"], capsys)
    assert_one_line_error(
        result, "saves/tiny-internvl3: no such folder", "python -m facellm.testing.tiny_model"
    )
    assert time.monotonic() - started < 3


def test_dry_run_resolves_overrides_and_the_resume_point(tmp_path):
    out = tmp_path / "lora"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-9").mkdir()  # cut short: no trainer_state.json
    result = run_command(
        "bash", "train.sh", "configs/internvl3_8b_lora_sft.yaml", f"output_dir={out}", "learning_rate=2e-5",
        "--dry-run", "--no-preflight",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["learning_rate"] == 2e-5 and resolved["per_device_train_batch_size"] == 10
    assert resolved["resume_from_checkpoint"] == str(out / "checkpoint-7")


def test_fresh_refuses_a_folder_with_checkpoints(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    result = run_command(
        "bash", "train.sh", "configs/internvl3_1b_lora_sft.yaml", f"output_dir={tmp_path}", "--fresh",
        "--dry-run", "--no-preflight",
    )  # fmt: skip
    assert_one_line_error(result, str(tmp_path), "checkpoint-3", "another output_dir")


def test_unknown_override_key_is_one_line():
    result = run_command("bash", "train.sh", "configs/tiny_cpu_lora_sft.yaml", "learning_rat=1e-4")
    assert_one_line_error(result, "'learning_rat' is not a LLaMA-Factory training argument", "learning_rate")


def test_deepspeed_recipe_needs_deepspeed_installed(tmp_path):
    result = run_command(
        "bash", "train.sh", "configs/internvl3_38b_lora_sft.yaml", f"output_dir={tmp_path}", "--no-preflight"
    )
    assert_one_line_error(result, "deepspeed")


def test_slurm_example_is_valid_bash():
    assert run_command("bash", "-n", "configs/slurm/train_multinode.sbatch").returncode == 0


def test_a_value_of_the_wrong_type_is_one_line_before_anything_starts(fake_trainer, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    base = yaml.safe_load((REPO / "configs" / "tiny_cpu_lora_sft.yaml").read_text())
    recipe.write_text(yaml.safe_dump({**base, "learning_rate": "fast"}))
    out = tmp_path / "out"
    tiny = "configs/tiny_cpu_lora_sft.yaml"
    for args, error in [
        ((tiny, "cutoff_len=abc"), "override: cutoff_len: 'abc' is not an integer"),
        ((tiny, "bf16=maybe"), "override: bf16: 'maybe' is not true or false"),
        ((str(recipe),), f"{recipe}: learning_rate: 'fast' is not a number"),
    ]:
        with pytest.raises(SystemExit) as stop:
            run_cli(lambda args=args: main([*args, f"output_dir={out}"]))
        assert stop.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"error: {error}"]
    assert not out.exists() and not (fake_trainer / "started").exists()  # nothing written, nothing started


def test_a_failed_run_says_what_failed_and_offers_to_resume_only_from_a_checkpoint(
    fake_trainer, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_TRAINER", "fail")
    monkeypatch.setenv("FORCE_TORCHRUN", "1")  # the distributed path: the trainer is a process of its own
    out = tmp_path / "out"
    args = ["configs/tiny_cpu_lora_sft.yaml", HUB_MODEL, f"output_dir={out}", "--no-preflight"]

    def errors() -> list[str]:
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 1
        err = capsys.readouterr().err
        # the trainer's own output is in the run's log, not on the terminal
        assert "Traceback" not in err and "Traceback (most recent call last)" in log.read_text()
        return [line for line in err.splitlines() if line.startswith("error:")]

    failed, log = "ValueError: Cannot find valid samples", out / "train.log"
    assert errors() == [
        f"error: training failed (exit 1) before any checkpoint was saved: {failed}; full log: {log}"
    ]
    # a checkpoint written before the failure: then, and only then, the same command can resume
    monkeypatch.setenv("FAKE_CHECKPOINT", str(out / "checkpoint-2"))
    assert errors() == [
        f"error: training failed (exit 1): {failed}; the same command resumes from {out / 'checkpoint-2'}; "
        f"full log: {log}"
    ]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_one_process_run_is_stopped_by_sigterm_and_sigint_and_says_so(
    monkeypatch, tmp_path, capsys, signum, code
):
    import llamafactory.train.tuner as tuner

    started = []

    def trainer(**_):  # LLaMA-Factory's trainer, in this process, gets the signal
        started.append(True)
        os.kill(os.getpid(), signum)
        time.sleep(30)

    monkeypatch.setattr(tuner, "run_exp", trainer)
    args = ["configs/tiny_cpu_lora_sft.yaml", HUB_MODEL, f"output_dir={tmp_path / 'out'}", "--no-preflight"]
    result = run_main(main, args, capsys)
    name = signal.Signals(signum).name
    assert started and result.returncode == code, result.stderr
    assert f"train: stopped by {name}; no checkpoint was saved" in result.stderr
    assert signal.getsignal(signum) is not None and "Traceback" not in result.stderr


def test_a_one_process_run_that_fails_says_what_failed(monkeypatch, tmp_path, capsys):
    import llamafactory.train.tuner as tuner

    def trainer(**_):
        raise ValueError("Cannot find valid samples")

    monkeypatch.setattr(tuner, "run_exp", trainer)
    result = run_main(
        main,
        ["configs/tiny_cpu_lora_sft.yaml", HUB_MODEL, f"output_dir={tmp_path / 'out'}", "--no-preflight"],
        capsys,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    failed, log = "ValueError: Cannot find valid samples", tmp_path / "out" / "train.log"
    assert errors == [
        f"error: training failed (exit 1) before any checkpoint was saved: {failed}; full log: {log}"
    ]
    assert "Traceback" not in result.stderr and "raise ValueError" in log.read_text()  # whole, in the log


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_the_trainer_and_exit_143_and_130(fake_trainer, tmp_path, signum, code):
    process = subprocess.Popen(
        ("bash", "train.sh", "configs/tiny_cpu_lora_sft.yaml", HUB_MODEL, f"output_dir={tmp_path / 'out'}",
         "--no-preflight"),
        cwd=REPO, env={**os.environ, "FAKE_TRAINER": "wait", "FORCE_TORCHRUN": "1"}, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (fake_trainer / "started").exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    name = signal.Signals(signum).name
    assert process.returncode == code, stderr
    assert (fake_trainer / "got").read_text().strip() == name[3:]  # passed on to the trainer, which stopped
    assert f"train: stopped by {name}; no checkpoint was saved" in stderr and "Traceback" not in stderr
