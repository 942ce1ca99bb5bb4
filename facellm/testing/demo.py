"""The whole FaceLLM pipeline on the tiny offline model and the bundled sample faces, on CPU.

Each stage runs through the same top-level command a user would type, in a subprocess, with its log kept in
WORKDIR/logs/. The run ends with a table of what every stage wrote and how long it took.

    python -m facellm.testing.demo [--workdir saves/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError, run_cli
from facellm.common.files import REPO
from facellm.testing.local_endpoint import LocalEndpoint

SAMPLE_FACES = REPO / "assets" / "fairface-sample"
TINY_RECIPE = REPO / "configs" / "tiny_cpu_lora_sft.yaml"
DEMO_PROMPT = "Describe this face in detail."


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
    image_root = SAMPLE_FACES / "fairface-img-margin025-trainval"
    dataset_dir, endpoint_dir = workdir / "fairfacegpt", workdir / "fairfacegpt-endpoint"
    adapter = workdir / "lora"
    merged = workdir / "export" / "FaceLLM-tiny"
    bench = workdir / "facexbench-sample"
    results = workdir / "facexbench-results"
    generate = [py, "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES)]
    return [
        Stage("tiny model", [py, "-m", "facellm.testing.tiny_model", "--out", str(tiny_model)], tiny_model),
        Stage(
            "fairfacegpt", [*generate, "--out", str(dataset_dir), "--backend", "labels"],
            dataset_dir / "dataset.json",
        ),
        Stage(
            "fairfacegpt endpoint",
            [*generate, "--out", str(endpoint_dir), "--limit", "4", "--base-url", endpoint_url,
             "--concurrency", "8"],
            endpoint_dir / "ledger.jsonl",
            # the live backend's real client path, against a local endpoint: never the user's real key
            env={"OPENAI_API_KEY": "local-endpoint"},
        ),
        Stage(
            "train",
            ["bash", "train.sh", str(TINY_RECIPE), f"model_name_or_path={tiny_model}",
             f"dataset_dir={dataset_dir}", f"media_dir={image_root}", f"output_dir={adapter}"],
            adapter,
        ),
        Stage(
            "export",  # the demo retrains every time: its earlier export is stale
            ["bash", "export.sh", "--base", str(tiny_model), "--adapter", str(adapter), "--replace", "--out",
             str(merged)],
            merged,
        ),
        Stage(
            "inference",
            [py, "inference.py", "--model", str(merged), "--path_image", str(image_root / "val" / "1.jpg"),
             "--prompt", DEMO_PROMPT, "--max-new-tokens", "48"],
            workdir / "logs" / "inference.log",
        ),
        Stage(
            "facexbench sample",
            [py, "-m", "facellm.testing.sample_benchmark", "--fairface-root", str(SAMPLE_FACES),
             "--out", str(bench)],
            bench / "benchmark",
        ),
        Stage(
            "evaluate",
            [py, "vlmeval/evaluate.py", "--model", "FaceLLM-1B", "--model-path", str(merged),
             "--benchmark-dir", str(bench / "benchmark"), "--results-dir", str(results),
             "--max-new-tokens", "16", "--batch-size", "4"],
            results / "results.txt",
        ),
        Stage(
            "aggregate",
            [py, "vlmeval/aggregate_results.py", "--results_dir", str(results), "--model", "FaceLLM-1B"],
            results / "facexbench_comparison.png",
        ),
    ]  # fmt: skip


def run_stage(stage: Stage, index: int, total: int, logs: Path) -> None:
    log = logs / f"{stage.name.replace(' ', '_')}.log"
    command = shlex.join(stage.command).replace(f"{REPO}{os.sep}", "")
    print(f"[{index}/{total}] {stage.name}: {command}", flush=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("HF_HUB_OFFLINE", "1")  # the demo never downloads anything
    env.update(stage.env or {})
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        result = subprocess.run(
            stage.command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    stage.seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join("    " + line for line in tail), file=sys.stderr)
        raise FaceLLMError(
            f"stage '{stage.name}' failed with exit code {result.returncode} (full log: {log})"
        )
    if stage.name == "inference":
        stage.output = log
    print(f"      done in {stage.seconds:.1f} s -> {shown(stage.output)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.demo",
        description="Run every FaceLLM stage on the tiny offline InternVL3 and the bundled sample faces "
        "(CPU).",
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
    args = parser.parse_args(argv)
    workdir, tiny_model = args.workdir.resolve(), args.tiny_model.resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # every demo retrains the model (train.sh would otherwise resume the finished run), so answers left by
    # an earlier demo belong to another model
    shutil.rmtree(workdir / "lora", ignore_errors=True)
    shutil.rmtree(workdir / "facexbench-results", ignore_errors=True)
    started = time.perf_counter()
    with LocalEndpoint(latency=0.05) as endpoint:  # stands in for a paid API in the demo
        stages = plan(workdir, tiny_model, endpoint.base_url)
        for index, stage in enumerate(stages, start=1):
            run_stage(stage, index, len(stages), logs)
    total = time.perf_counter() - started

    answer = (logs / "inference.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
    report = (workdir / "facexbench-results" / "results.txt").read_text(encoding="utf-8")
    print(f"\ninference answer to {DEMO_PROMPT!r}:\n    {answer[0] if answer else '(empty)'}\n")
    print(report)
    width = max(len(stage.name) for stage in stages)
    print(f"{'stage':{width}}  {'seconds':>8}  output")
    for stage in stages:
        print(f"{stage.name:{width}}  {stage.seconds:8.1f}  {shown(stage.output)}")
    print(f"{'total':{width}}  {total:8.1f}")
    timings = {stage.name: round(stage.seconds, 2) for stage in stages} | {"total": round(total, 2)}
    (workdir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
