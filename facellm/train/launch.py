"""The launcher behind train.sh: recipe + overrides -> checks -> resume -> LLaMA-Factory's trainer.

Everything that can be checked without a GPU is checked first (argument names, DeepSpeed, the dataset), so a
typo or a missing image costs seconds, not a queue slot. A one-process run calls LLaMA-Factory's trainer in
this process (what `llamafactory-cli train` runs then, without a second interpreter importing it all again);
a distributed one (torchrun: several GPUs, FORCE_TORCHRUN, DeepSpeed, NNODES > 1) is handed to
`llamafactory-cli train`, which starts the workers. The exact arguments LLaMA-Factory runs with are
saved as `facellm_resolved_config.yaml` in the output folder and are what it is started on; the loss curve
(`training_loss.png`, LLaMA-Factory's own plot) is drawn there when training ends. When training fails, the
last line says what failed and whether the same command can resume it (only when a checkpoint exists);
stopped by SIGTERM or SIGINT, it exits 143 or 130.

On several nodes every node runs the same command with its own NODE_RANK, and the output folder is shared:
node 0 alone writes the run's files there (resolved config, preflight report, train.log; its rank 0 worker
the checkpoints, adapter and plot), node N only its log, train.nodeN.log (facellm.train.distributed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from facellm.common.cli import FaceLLMError, changed_settings, first_line, run_cli
from facellm.common.files import REPO, read_json
from facellm.common.transcript import transcript
from facellm.train.distributed import (
    CPU_RESUME,
    DDP_TIMEOUT,
    FORWARDED,
    describe,
    node_settings,
    run_workers,
    signal_name,
    uses_torchrun,
)
from facellm.train.preflight import run_preflight
from facellm.train.progress import progress_callback
from facellm.train.recipes import (
    RESOLVED_CONFIG,
    check_config,
    check_models,
    checkpoints,
    load_recipe,
    parse_overrides,
    resolve_paths,
    write_resolved,
)
from facellm.train.report import LOSS_PLOT, training_summary

# keys that may change between a run and its resumption without changing what is being trained
RUN_LENGTH_KEYS = {
    "resume_from_checkpoint", "max_steps", "num_train_epochs", "save_steps", "logging_steps", "ddp_timeout",
}  # fmt: skip
# keys that make it another run: resuming across a change of these would train one model on two set-ups
IDENTITY_KEYS = (
    "model_name_or_path", "adapter_name_or_path", "stage", "finetuning_type", "template", "dataset",
    "dataset_dir", "media_dir",
)  # fmt: skip
LOG = "train.log"  # the trainer's whole output, in output_dir


def _recipes_epilog() -> str:
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    listed = "\n".join(f"  configs/{recipe.name}" for recipe in recipes)
    return (
        f"recipes:\n{listed}\n\n"
        "One GPU: runs as is. All GPUs of a node: LLaMA-Factory starts torchrun when it sees more\n"
        "than one GPU (FORCE_TORCHRUN=1 forces it, NPROC_PER_NODE sets the number of processes; a\n"
        "recipe with `deepspeed:` always uses it).\n"
        "Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT on every node and run\n"
        "the same command (see configs/slurm/train_multinode.sbatch); output_dir, the model and the\n"
        "data must be at the same paths on every node, output_dir on a shared filesystem. Node 0 writes\n"
        "the run's files there, node N only train.nodeN.log.\n"
        "A worker that dies stops the run on every node with an error: at once where its connections\n"
        f"close, at the latest after ddp_timeout seconds (default {DDP_TIMEOUT}; ddp_timeout=600 on the\n"
        "command line or in the recipe), which also bounds the wait for all nodes to join. The same\n"
        "command, run again on every node, resumes from the newest complete checkpoint."
    )


def _resume_point(config: dict, overrides: dict, fresh: bool) -> Path | None:
    output_dir = Path(str(config["output_dir"]))
    found = checkpoints(output_dir)
    if "resume_from_checkpoint" in overrides:
        return None  # the user named one (or null): LLaMA-Factory takes it as given
    if fresh:
        if found:
            raise FaceLLMError(
                f"{output_dir}: holds checkpoints of an earlier run ({found[-1].name}); --fresh would mix "
                "them with the new run: choose another output_dir or move them away"
            )
        return None
    return found[-1] if found else None


def _previous_config(output_dir: Path) -> dict:
    """The resolved config of the run in OUTPUT_DIR ({} when there is none), its relative paths (written
    before train.sh made them absolute) read against the repository root."""
    try:
        before = yaml.safe_load((output_dir / RESOLVED_CONFIG).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return resolve_paths(before, {}) if isinstance(before, dict) else {}


def _check_resumable(before: dict, config: dict, output_dir: Path) -> None:
    """Refuse to resume a run on another model or other data; warn about any other changed setting."""
    identity = [key for key in IDENTITY_KEYS if before and before.get(key) != config.get(key)]
    if identity:
        changes = changed_settings({k: before.get(k) for k in identity}, {k: config.get(k) for k in identity})
        raise FaceLLMError(
            f"{output_dir}: holds a run on another set-up ({changes}); train into a new folder with "
            "output_dir=NEW (the earlier settings resume this one)"
        )
    keys = (set(before) | set(config)) - RUN_LENGTH_KEYS if before else set()
    changed = sorted(key for key in keys if before.get(key) != config.get(key))
    if changed:
        print(f"train: warning: changed since that run: {', '.join(changed)}", file=sys.stderr)


def _finished(checkpoint: Path, before: dict, config: dict) -> tuple[int, int] | None:
    """(step, max_steps) when CHECKPOINT ends its run and the run's length is unchanged: resuming would
    train nothing."""
    if not before or any(before.get(k) != config.get(k) for k in ("max_steps", "num_train_epochs")):
        return None
    try:
        state = read_json(checkpoint / "trainer_state.json")
        step, total = int(state["global_step"]), int(state["max_steps"])
    except (FaceLLMError, KeyError, TypeError, ValueError):
        return None
    return (step, total) if 0 < total <= step else None


def _check_deepspeed(config: dict, source: str, dry_run: bool) -> None:
    if not config.get("deepspeed"):
        return
    path = Path(str(config["deepspeed"]))
    if not path.is_file():
        raise FaceLLMError(f"{source}: deepspeed config {path} not found")
    if not dry_run and importlib.util.find_spec("deepspeed") is None:
        raise FaceLLMError(
            f"{source}: uses DeepSpeed ({path}) but deepspeed is not installed: `make deepspeed` "
            "on the GPU machine (it compiles against the local CUDA)"
        )


class _Stop(BaseException):
    """Raised in the trainer by SIGTERM or SIGINT (a BaseException: no `except Exception` swallows it)."""


def _train_here(resolved: Path, view) -> tuple[int, int | None, str | None]:
    """LLaMA-Factory's trainer in this process, as `llamafactory-cli train` runs it on one device. Returns the
    exit code, the signal that stopped it (None when none came) and the exception it failed with."""
    import traceback

    received: list[int] = []

    def stop(signum, _frame):
        received.append(signum)
        raise _Stop

    previous = {
        signum: signal.signal(signum, stop)
        for signum in FORWARDED
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    argv = sys.argv
    try:
        import torch
        from llamafactory.train.tuner import run_exp

        sys.argv = ["llamafactory-cli", str(resolved)]  # it reads its config from the command line
        with torch.enable_grad():  # whatever an import did to this process (VLMEvalKit switches it off)
            run_exp(callbacks=[progress_callback(view)])
        return 0, None, None
    except _Stop:
        return 128 + received[0], received[0], None
    except SystemExit as error:  # its argument checks exit
        code = error.code if isinstance(error.code, int) else 1
        return code, None, None if code == 0 else first_line(error)
    except Exception as error:
        traceback.print_exc()
        return 1, None, first_line(error, named=True)[:300]
    finally:
        sys.argv = argv
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stopped(
    output_dir: Path, code: int, received: int | None, failure: str | None, log: Path, nodes: int = 1
) -> int:
    """Say why training stopped and whether the same command can resume it; the exit code to leave with."""
    found = checkpoints(output_dir)
    again = "the same command" + (", run again on every node," if nodes > 1 else "")
    resume = f"{again} resumes from {found[-1]}" if found else None
    if received is not None:
        print(
            f"train: stopped by {signal_name(received)}; "
            + (resume or "no checkpoint was saved: the same command starts it again from the beginning"),
            file=sys.stderr,
        )
        return 128 + received
    if code < 0:  # killed by a signal that did not come through this launcher (e.g. the OOM killer)
        failure, code = f"killed by {signal_name(-code)}", 128 - code
    what = failure or "see the log"
    if resume:
        message = f"training failed (exit {code}): {what}; {resume}"
    else:
        message = f"training failed (exit {code}) before any checkpoint was saved: {what}"
    print(f"error: {message}; full log: {log}", file=sys.stderr)
    return code


def _run(config: dict, node_rank: int, env: dict | None, log: Path, verbose: bool):
    """Write the resolved config and train on it, in torchrun's workers started with ENV (None: in this
    process), the trainer's output going to LOG. Returns the exit code, the signal that stopped it and what
    failed."""
    output_dir = Path(str(config["output_dir"]))
    shim = env is not None and bool(config.get("resume_from_checkpoint"))
    # files of this node's own, only when it needs them (a launcher killed by SIGKILL leaves them behind)
    private = Path(tempfile.mkdtemp(prefix=f"facellm-node{node_rank}-")) if node_rank or shim else None
    # Node 0 alone writes the shared folder. The other nodes start from a copy of their own, outside it: it
    # may lag behind node 0, and two nodes must never write one file.
    resolved = private / RESOLVED_CONFIG if node_rank else output_dir / RESOLVED_CONFIG
    if shim:
        (private / "sitecustomize.py").write_text(CPU_RESUME, encoding="utf-8")
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(private), env.get("PYTHONPATH")]))}
    try:
        write_resolved(config, resolved)
        print(f"train: {output_dir} (full log: {log}{'' if verbose else '; --verbose shows it'})",
              file=sys.stderr)  # fmt: skip
        with transcript(log, verbose) as view:
            if env is not None:
                return run_workers(resolved, env, None if verbose else view)
            return _train_here(resolved, view)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./train.sh",
        description="LoRA SFT of InternVL3 with LLaMA-Factory from a recipe. key=value pairs override the "
        "recipe (e.g. output_dir=saves/lora/run2 max_steps=100). Relative paths in a recipe are read from "
        "the repository root, on the command line from the current folder. Resumes from the newest "
        "complete checkpoint in output_dir when there is one. Shows a progress bar; the trainer's whole "
        f"output is in output_dir/{LOG}.",
        epilog=_recipes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("recipe", type=Path, help="a recipe in configs/")
    parser.add_argument("overrides", nargs="*", help="key=value: LLaMA-Factory arguments over the recipe")
    parser.add_argument(
        "--dry-run", action="store_true", help="check and print the resolved config, no training"
    )
    parser.add_argument("--no-preflight", action="store_true", help="skip the dataset check")
    parser.add_argument(
        "--fresh", action="store_true", help="do not resume (output_dir must hold no checkpoint)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help=f"show the trainer's whole output (always kept in {LOG})"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_intermixed_args(argv)
    source = str(args.recipe)
    cluster = node_settings(os.environ)
    overrides = parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe)
    check_config(recipe, overrides, source)
    config = resolve_paths(recipe, overrides)
    if not config.get("output_dir"):
        raise FaceLLMError(f"{source}: no output_dir")
    check_models(config, source)
    _check_deepspeed(config, source, args.dry_run)
    output_dir = Path(str(config["output_dir"]))

    timeout = config.get("ddp_timeout", DDP_TIMEOUT)
    if not isinstance(timeout, int) or timeout < 1:
        raise FaceLLMError(f"ddp_timeout: {timeout!r} is not a number of seconds (at least 1)")

    resume = _resume_point(config, overrides, args.fresh)
    start = 0
    if resume is not None:
        before = _previous_config(output_dir)
        _check_resumable(before, config, output_dir)
        if done := _finished(resume, before, config):
            print(
                f"train: nothing to train: {output_dir} already finished ({done[0]} of {done[1]} steps). "
                "For another run pass output_dir=NEW; to train this one longer, raise max_steps or "
                "num_train_epochs",
                file=sys.stderr,
            )
            return
        config["resume_from_checkpoint"] = str(resume)
        start = int(resume.name.split("-")[-1])
        print(f"train: resuming from {resume} (--fresh to refuse, or another output_dir)", file=sys.stderr)

    env = dict(os.environ)
    if config.get("deepspeed") or cluster.nodes > 1:
        env["FORCE_TORCHRUN"] = "1"
    distributed = uses_torchrun(env, count_devices=not args.dry_run)
    if distributed:
        config.setdefault("ddp_timeout", timeout)
        # the wait for the other nodes to join, which torchrun would otherwise cap at 600 s on its own
        env.setdefault("PET_RDZV_CONF", f"timeout={timeout}")
    node_rank = cluster.node_rank
    if not args.no_preflight:  # on every node (each must see the data), its report written by node 0
        run_preflight(config, source, None if args.dry_run or node_rank else output_dir / "preflight.json")
    if distributed:
        print(describe(cluster, timeout), file=sys.stderr)
    if args.dry_run:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return
    log = output_dir / (f"train.node{node_rank}.log" if node_rank else LOG)
    code, received, failure = _run(config, node_rank, env if distributed else None, log, args.verbose)
    if code != 0 or received is not None:
        sys.exit(_stopped(output_dir, code, received, failure, log, cluster.nodes))
    if node_rank == 0:
        summary = training_summary(output_dir)
        plot = output_dir / LOSS_PLOT
        step = summary["global_step"]
        trained = f"steps {start} -> {step}" if start else f"{step} steps"
        loss = summary["final_loss"]
        print(
            f"train: {trained}, final loss {'n/a' if loss is None else f'{loss:.4g}'}; model in {output_dir}"
            + (f"; loss curve {plot}" if plot.is_file() else "")
        )


if __name__ == "__main__":
    run_cli(main)
