"""FaceXBench evaluation in batches vs one question at a time, on the tiny InternVL3 model, CPU.

Both runs go through the same path as `vlmeval/evaluate.py` (the FaceLLM class from VLMEvalKit's
supported_VLM, facellm.eval.runner.evaluate with its per-batch result files), over the same questions: the
sample benchmark (single- and three-image questions) copied a few times, or real FaceXBench question files
with placeholder images (--questions-from). The model is the tiny model's noisy copy
(facellm.testing.noisy_model):
the plain tiny model answers every question with the same newlines, which would make "same predictions"
hold even if answers were swapped or images dropped. Reports identical predictions, the largest next-token
logit difference over one batch, and the speed ratio measured in this one run. Target: >= 4x. (With
--questions-from, the tool-use questions are answered one at a time in both runs, see
facellm.eval.runner.ALONE_CHARACTERS, which bounds the ratio of that mix.)

    uv run python bench/eval_batching.py [--batch-size 16] [--copies 4] [--max-new-tokens 32]
    uv run python bench/eval_batching.py --questions-from PATH/TO/facexbench/benchmark --limit 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from facellm.eval.facexbench import load_benchmark, vlmeval_message
from facellm.eval.plugin import register_plugin
from facellm.eval.runner import evaluate
from facellm.infer.model import Part
from facellm.testing.noisy_model import noisy_copy
from facellm.testing.sample_benchmark import SAMPLE, build, with_placeholder_images
from facellm.testing.tiny_model import build_tiny_model

REAL_FILES = [
    "affectnet_multiple_mcq", "celeba_single_mcq", "fairface_multiple_mcq_race_test", "agedb30_multiple_mcq",
    "jhucrowd_single_mcq_range_test", "tools_retrieval",
]  # fmt: skip


def benchmark(work: Path, args) -> Path:
    shutil.rmtree(work / "fxb", ignore_errors=True)
    if args.questions_from:
        return with_placeholder_images(args.questions_from, work / "fxb", REAL_FILES, limit=args.limit)
    bench = build(SAMPLE, work / "fxb", per_task=8)
    for path in list(bench.glob("*.json")):
        for copy in range(1, args.copies):
            shutil.copy(path, bench / f"{path.stem}_{copy}.json")
    return bench


def predictions(results: Path) -> dict:
    return {
        (path.stem, number): question.get("prediction")
        for path in sorted(results.glob("*.json"))
        if path.name not in ("run.json", "summary.json", "results.json")
        for number, question in json.loads(path.read_text())["questions"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model's noisy copy)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--copies", type=int, default=4, help="sample benchmark: copies of its 24 questions")
    parser.add_argument("--questions-from", type=Path, default=None, help="a FaceXBench benchmark folder")
    parser.add_argument("--limit", type=int, default=10, help="--questions-from: questions per file")
    parser.add_argument("--work", type=Path, default=Path("saves/bench-eval-batching"))
    args = parser.parse_args()

    model_dir = args.model or str(
        noisy_copy(build_tiny_model(Path("saves/tiny-internvl3")), Path("saves/tiny-internvl3-noisy"))
    )
    bench = benchmark(args.work, args)
    model = register_plugin().supported_VLM["FaceLLM-1B"](
        model_path=model_dir, max_new_tokens=args.max_new_tokens
    )
    identity = {"model": "FaceLLM-1B", "model_path": model_dir, "max_new_tokens": args.max_new_tokens}
    tasks = load_benchmark(bench)
    messages = [vlmeval_message(t, n, bench) for t in tasks for n in t.questions]
    model.generate_batch(messages[:2])  # warm-up: first-call allocations are not part of either figure

    seconds = {}
    for label, batch_size in (("one at a time", 1), (f"batches of {args.batch_size}", args.batch_size)):
        results = args.work / f"results-{batch_size}"
        shutil.rmtree(results, ignore_errors=True)
        start = time.perf_counter()
        evaluate(lambda: model, identity, bench, results, batch_size=batch_size, progress=False)
        seconds[label] = time.perf_counter() - start
    alone, batched = (
        predictions(args.work / "results-1"),
        predictions(args.work / f"results-{args.batch_size}"),
    )
    same = sum(alone[key] == batched[key] for key in alone)
    distinct = len(set(alone.values()))

    engine = model.engine
    chunk = [[Part(m["type"], m["value"]) for m in message] for message in messages[: args.batch_size]]
    with torch.inference_mode():
        together = engine.model(**engine.encode(chunk)).logits[:, -1]
        single = torch.cat([engine.model(**engine.encode(turn)).logits[:, -1] for turn in chunk])
    drift = (together - single).abs().max().item()

    images = sum(len(t.questions[n]["image_paths"]) for t in tasks for n in t.questions)
    print(f"model: {model_dir}; {len(alone)} questions in {len(tasks)} files ({images} images), "
          f"{args.max_new_tokens} new tokens max")  # fmt: skip
    print(f"identical predictions: {same}/{len(alone)} ({distinct} distinct answers); "
          f"max next-token logit difference over one batch: {drift:.2e}")  # fmt: skip
    for label, value in seconds.items():
        print(f"{label}: {value:.2f} s ({len(alone) / value:.1f} questions/s)")
    ratio = seconds["one at a time"] / seconds[f"batches of {args.batch_size}"]
    verdict = "met" if ratio >= 4 and same == len(alone) and drift < 1e-4 else "NOT met"
    print(f"speed-up: {ratio:.1f}x (target >= 4x with identical predictions: {verdict})")


if __name__ == "__main__":
    main()
