"""The launcher behind train.sh: recipe + overrides -> checks -> resume -> `llamafactory-cli train`.

Everything that can be checked without a GPU is checked first (argument names, DeepSpeed, the dataset), so a
typo or a missing image costs seconds, not a queue slot. The exact arguments LLaMA-Factory runs with are
saved as `facellm_resolved_config.yaml` in the output folder and are what it is started on; the loss curve
(`loss_curve.png`) is drawn there when training ends.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from facellm.cli import FaceLLMError, run_cli
from facellm.preflight import run_preflight
from facellm.recipes import (
    RESOLVED_CONFIG,
    check_keys,
    checkpoints,
    load_recipe,
    parse_overrides,
    write_resolved,
)
from facellm.training_report import plot_loss, training_summary

REPO = Path(__file__).resolve().parent.parent
# keys that may change between a run and its resumption without changing what is being trained
RUN_LENGTH_KEYS = {"resume_from_checkpoint", "max_steps", "num_train_epochs", "save_steps", "logging_steps"}


def _recipes_epilog() -> str:
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    listed = "\n".join(f"  configs/{recipe.name}" for recipe in recipes)
    return (
        f"recipes:\n{listed}\n\n"
        "One GPU: runs as is. All GPUs of a node: LLaMA-Factory starts torchrun when it sees more\n"
        "than one GPU (FORCE_TORCHRUN=1 forces it; a recipe with `deepspeed:` always uses it).\n"
        "Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT on every node and run\n"
        "the same command (see configs/slurm/train_multinode.sbatch)."
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


def _changed_since(previous: Path, config: dict) -> list[str]:
    try:
        before = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    keys = (set(before) | set(config)) - RUN_LENGTH_KEYS
    return sorted(key for key in keys if before.get(key) != config.get(key))


def _check_deepspeed(config: dict, source: str, dry_run: bool) -> None:
    if not config.get("deepspeed"):
        return
    path = Path(str(config["deepspeed"]))
    if not path.is_file():
        raise FaceLLMError(f"{source}: deepspeed config {path} not found")
    if not dry_run and importlib.util.find_spec("deepspeed") is None:
        raise FaceLLMError(
            f"{source}: uses DeepSpeed ({path}) but deepspeed is not installed: `uv pip install deepspeed` "
            "on the GPU machine (it compiles against the local CUDA)"
        )


def _launch(resolved: Path, env: dict) -> int:
    """Run LLaMA-Factory, passing SIGTERM on (a scheduler's stop must stop the trainer too)."""
    cli = shutil.which("llamafactory-cli", path=env.get("PATH")) or str(
        Path(sys.executable).parent / "llamafactory-cli"
    )
    process = subprocess.Popen([cli, "train", str(resolved)], env=env)

    def forward(signum, _frame):
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="./train.sh",
        description="LoRA SFT of InternVL3 with LLaMA-Factory from a recipe. key=value pairs override the "
        "recipe (e.g. output_dir=saves/lora/run2 max_steps=100). Resumes from the newest complete "
        "checkpoint in output_dir when there is one.",
        epilog=_recipes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    args = parser.parse_intermixed_args(argv)

    source = str(args.recipe)
    overrides = parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe)
    check_keys(recipe, source)
    check_keys(overrides, "override")
    config = {**recipe, **overrides}
    if not config.get("output_dir"):
        raise FaceLLMError(f"{source}: no output_dir")
    _check_deepspeed(config, source, args.dry_run)
    output_dir = Path(str(config["output_dir"]))

    resume = _resume_point(config, overrides, args.fresh)
    if resume is not None:
        config["resume_from_checkpoint"] = str(resume)
        print(f"train: resuming from {resume} (--fresh to refuse, or another output_dir)", file=sys.stderr)
        changed = _changed_since(output_dir / RESOLVED_CONFIG, config)
        if changed:
            print(f"train: warning: changed since that run: {', '.join(changed)}", file=sys.stderr)

    node_rank = os.environ.get("NODE_RANK", "0")
    if not args.no_preflight:
        run_preflight(config, source, None if args.dry_run else output_dir / "preflight.json")
    if args.dry_run:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return
    # the other nodes start from their own copy: the shared folder may lag behind node 0
    resolved = output_dir / (
        RESOLVED_CONFIG if node_rank == "0" else f"facellm_resolved_config.node{node_rank}.yaml"
    )
    write_resolved(config, resolved)

    env = dict(os.environ)
    if config.get("deepspeed") or int(env.get("NNODES", "1")) > 1:
        env["FORCE_TORCHRUN"] = "1"
    code = _launch(resolved, env)
    if code != 0:
        print(f"error: training failed (exit {code}); resume with the same command", file=sys.stderr)
        sys.exit(code)
    if node_rank == "0":
        summary = training_summary(output_dir)
        plot = plot_loss(output_dir, title=f"{args.recipe.stem} ({config.get('model_name_or_path')})")
        print(
            f"train: {summary['global_step']} steps, final loss {summary['final_loss']}; adapter {output_dir}"
            + (f"; loss curve {plot}" if plot else "")
        )


if __name__ == "__main__":
    run_cli(main)
