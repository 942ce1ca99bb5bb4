"""The whole FaceLLM pipeline on the tiny offline model and a synthetic face world, on CPU, with proof that it
learns what the images show.

The tiny model is trained on the short-answer and multiple-choice items that the labels backend writes about
the world's `train` faces, exported, asked about a face, and evaluated on a held-out benchmark built from the
world's `val` faces three times: untrained, trained, and trained with every image replaced by a blank one.
Each stage runs the same top-level command a user would type, printed as typed, with its log kept in
WORKDIR/logs/: by default each command's entry point is called in this process, so that torch, transformers,
LLaMA-Factory and VLMEvalKit are imported once, not once per stage (--subprocess runs each as its own process,
as a shell would: the same results, a few minutes slower).

The run ends with the accuracy table (base / trained / blank / chance per task, also written
to WORKDIR/signal.json) and a table of what every stage wrote and how long it took. Gender and age are drawn
visibly; race is assigned at random, so a model above chance on it reads a leak, not the pixels.

    python -m facellm.testing.demo [--workdir saves/demo]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError, run_cli
from facellm.common.files import REPO, write_json_atomic
from facellm.common.transcript import output_to
from facellm.testing.local_endpoint import LocalEndpoint

SAMPLE_FACES = REPO / "assets" / "fairface-sample"
TINY_RECIPE = REPO / "configs" / "tiny_cpu_full_sft.yaml"
DEMO_PROMPT = "What is the perceived gender of the person in this image?"
WORLD = {"train": 400, "val": 120}
RUNS = {  # results folder -> (model name, what the run shows)
    "base": ("InternVL3-tiny", "the untrained tiny model"),
    "trained": ("FaceLLM-tiny", "after training"),
    "blank": ("FaceLLM-tiny", "after training, every image replaced by a grey one"),
}


def shown(path: Path) -> str:
    """Paths inside the repository are printed relative to it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclass
class Stage:
    name: str
    command: list[str]
    output: Path
    seconds: float = 0.0
    env: dict[str, str] | None = None


def plan(workdir: Path, tiny_model: Path, endpoint_url: str) -> list[Stage]:
    py = sys.executable
    world, bench = workdir / "face-world", workdir / "face-world-benchmark"
    image_root = world / "fairface-img-margin025-trainval"
    dataset_dir, endpoint_dir = workdir / "fairfacegpt", workdir / "fairfacegpt-endpoint"
    trained, merged = workdir / "full", workdir / "export" / "FaceLLM-tiny"
    world_cli = [py, "-m", "facellm.testing.face_world"]
    sizes = ["--train", str(WORLD["train"]), "--val", str(WORLD["val"])]
    generate = [py, "fairfacegpt.py", "--fairface-root"]
    stages = [
        Stage("tiny model", [py, "-m", "facellm.testing.tiny_model", "--out", str(tiny_model)], tiny_model),
        Stage("face world", [*world_cli, "world", "--out", str(world), *sizes], world),
        Stage(
            "fairfacegpt",
            [*generate, str(world), "--split", "train", "--out", str(dataset_dir), "--backend", "labels",
             "--items", "short,mcq"],
            dataset_dir / "dataset.json",
        ),
        Stage(
            "fairfacegpt endpoint",
            [*generate, str(SAMPLE_FACES), "--out", str(endpoint_dir), "--limit", "4", "--base-url",
             endpoint_url, "--concurrency", "8"],
            endpoint_dir / "ledger.jsonl",
            # the live backend's real client path, against a local endpoint: never the user's real key
            env={"OPENAI_API_KEY": "local-endpoint"},
        ),
        Stage(
            "train",
            ["bash", "train.sh", str(TINY_RECIPE), f"model_name_or_path={tiny_model}",
             f"dataset_dir={dataset_dir}", f"media_dir={image_root}", f"output_dir={trained}"],
            trained,
        ),
        Stage(
            "export",  # the demo retrains every time: its earlier export is stale
            ["bash", "export.sh", "--adapter", str(trained), "--replace", "--out", str(merged)],
            merged,
        ),
        Stage(
            "inference",
            [py, "inference.py", "--model", str(merged), "--path_image", str(image_root / "val" / "1.jpg"),
             "--prompt", DEMO_PROMPT, "--max-new-tokens", "8"],
            workdir / "logs" / "inference.log",
        ),
        Stage(
            "held-out benchmark",
            [*world_cli, "benchmark", "--world", str(world), "--out", str(bench), "--per-task",
             str(WORLD["val"])],
            bench,
        ),
    ]  # fmt: skip
    return stages + evaluations(workdir, bench, {"InternVL3-tiny": tiny_model, "FaceLLM-tiny": merged})


def evaluations(workdir: Path, bench: Path, models: dict[str, Path]) -> list[Stage]:
    """evaluate.py then aggregate_results.py for each run of RUNS, each into WORKDIR/results/<run>/."""
    py, stages = sys.executable, []
    for run, (name, _) in RUNS.items():
        results = workdir / "results" / run
        blank = ["--blank-images"] if run == "blank" else []
        stages += [
            Stage(
                f"evaluate {run}",
                [py, "vlmeval/evaluate.py", "--model", name, "--model-path", str(models[name]),
                 "--benchmark-dir", str(bench), "--results-dir", str(results), "--protocol", "training",
                 "--max-new-tokens", "8", "--batch-size", "16", *blank],
                results / "results.txt",
            ),
            Stage(
                f"aggregate {run}",
                [py, "vlmeval/aggregate_results.py", "--results_dir", str(results), "--model", name,
                 "--no-plot"],
                results / "results.json",
            ),
        ]  # fmt: skip
    return stages


def signal_table(workdir: Path) -> dict:
    """Accuracy per task of the three evaluations, and chance (the best an answer that ignores the image can
    expect, as the benchmark file records it), from the files evaluate.py wrote."""
    from facellm.common.files import read_json

    bench = workdir / "face-world-benchmark"
    scored = {run: read_json(workdir / "results" / run / "results.json") for run in RUNS}
    table = {}
    for path in sorted(bench.glob("face_world_*.json")):
        task = read_json(path)
        row = {run: data["files"][path.stem]["accuracy"] / 100 for run, data in scored.items()}
        table[task["sub-category"]] = {**row, "chance": task["chance"], "questions": len(task["questions"])}
    return table


def print_table(table: dict) -> None:
    print("held-out accuracy on the face world (val faces never trained on)")
    print(f"{'task':8} {'base':>6} {'trained':>8} {'blank':>6} {'chance':>7}  questions")
    for task, row in table.items():
        note = "  (control: race is not drawn)" if task == "race" else ""
        print(
            f"{task:8} {row['base']:6.2f} {row['trained']:8.2f} {row['blank']:6.2f} {row['chance']:7.2f}"
            f"  {row['questions']}{note}"
        )
    print("base: the untrained tiny model; blank: the trained model with every image replaced by a grey one;")
    print("chance: the best score of an answer that ignores the image. The tiny model is no FaceLLM release.")
    print("Asked under the training protocol (as LLaMA-Factory trained it: system prompt, 8 new tokens).")


# the program of a command -> the entry point it runs (what the demo calls in this process)
ENTRY_POINTS = {
    "train.sh": "facellm.train.launch",
    "export.sh": "facellm.train.export",
    "fairfacegpt.py": "facellm.data.generate",
    "inference.py": "facellm.infer.cli",
    "vlmeval/evaluate.py": REPO / "vlmeval" / "evaluate.py",
    "vlmeval/aggregate_results.py": REPO / "vlmeval" / "aggregate_results.py",
}


def entry_point(command: list[str]) -> tuple[Callable, list[str]]:
    """(the main function COMMAND runs, its arguments)."""
    from facellm.eval.plugin import import_file

    if command[:2] == [sys.executable, "-m"]:
        return importlib.import_module(command[2]).main, command[3:]
    program = command[1]
    target = ENTRY_POINTS[program]
    if isinstance(target, Path):
        module = import_file(target, f"facellm_demo_{target.stem}")
    else:
        module = importlib.import_module(target)
    return module.main, command[2:]


def run_here(stage: Stage, handle) -> int:
    """Call the stage's entry point in this process, as its command would; returns the exit code."""
    main, argv = entry_point(stage.command)
    before = {name: os.environ.get(name) for name in stage.env or {}}
    os.environ.update(stage.env or {})
    try:
        with output_to(handle):
            run_cli(lambda: main(argv))
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_stage(stage: Stage, index: int, total: int, logs: Path, subprocess_mode: bool) -> None:
    log = logs / f"{stage.name.replace(' ', '_')}.log"
    command = shlex.join(stage.command).replace(f"{REPO}{os.sep}", "")
    print(f"[{index}/{total}] {stage.name}: {command}", flush=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        if subprocess_mode:
            env = {**os.environ, **(stage.env or {})}
            code = subprocess.run(
                stage.command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
            ).returncode
        else:
            code = run_here(stage, handle)
    stage.seconds = time.perf_counter() - start
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join("    " + line for line in tail), file=sys.stderr)
        raise FaceLLMError(f"stage '{stage.name}' failed with exit code {code} (full log: {log})")
    if stage.name == "inference":
        stage.output = log
    print(f"      done in {stage.seconds:.1f} s -> {shown(stage.output)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.demo",
        description="Run every FaceLLM stage on the tiny offline InternVL3 and a synthetic face world (CPU), "
        "and show held-out accuracy before and after training, and with blank images.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("saves/demo"), help="outputs (default: %(default)s)"
    )
    parser.add_argument(
        "--tiny-model",
        type=Path,
        default=Path("saves/tiny-internvl3"),
        help="tiny model folder, built once and reused (default: %(default)s)",
    )
    parser.add_argument(
        "--subprocess", action="store_true",
        help="run each stage as its own process, as a shell would (slower: each one imports the libraries)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    workdir, tiny_model = args.workdir.resolve(), args.tiny_model.resolve()
    os.chdir(REPO)  # the commands are shown, and run, from the repository root
    # the stages' own commands find this environment's tools (llamafactory-cli) first; nothing is downloaded
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # every demo retrains the model (train.sh would otherwise resume the finished run), so answers left by
    # an earlier demo belong to another model
    shutil.rmtree(workdir / "full", ignore_errors=True)
    shutil.rmtree(workdir / "results", ignore_errors=True)
    started = time.perf_counter()
    with LocalEndpoint(latency=0.05) as endpoint:  # stands in for a paid API in the demo
        stages = plan(workdir, tiny_model, endpoint.base_url)
        for index, stage in enumerate(stages, start=1):
            run_stage(stage, index, len(stages), logs, args.subprocess)
    total = time.perf_counter() - started

    answer = (logs / "inference.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
    print(f"\ninference answer to {DEMO_PROMPT!r}:\n    {answer[0] if answer else '(empty)'}\n")
    table = signal_table(workdir)
    write_json_atomic(workdir / "signal.json", table)
    print_table(table)
    print()
    width = max(len(stage.name) for stage in stages)
    print(f"{'stage':{width}}  {'seconds':>8}  output")
    for stage in stages:
        print(f"{stage.name:{width}}  {stage.seconds:8.1f}  {shown(stage.output)}")
    print(f"{'total':{width}}  {total:8.1f}")
    timings = {stage.name: round(stage.seconds, 2) for stage in stages} | {"total": round(total, 2)}
    (workdir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
