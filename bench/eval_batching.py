"""FaceXBench evaluation in batches vs one question at a time, on the tiny InternVL3 model, CPU.

Both runs go through the same path as `vlmeval/evaluate.py` (the FaceLLM class from VLMEvalKit's
supported_VLM, facellm.eval.runner.evaluate with its per-batch result files), over the same questions: the
sample benchmark (single- and three-image questions) copied a few times, or real FaceXBench question files
with placeholder images (--questions-from). The model is the tiny model's noisy copy
(facellm.testing.noisy_model):
the plain tiny model answers every question with the same newlines, which would make "same predictions"
hold even if answers were swapped or images dropped. Reports identical predictions, the largest next-token
logit difference over one batch, the speed ratio measured in this one run, the prompt length per question
(this model's: its 56-px tiles, and its small tokenizer splits English text about 3 times finer than
Qwen2's) and the image tokens per question as InternVL3's 448-px tiles make them, under each protocol
(facellm.infer.protocol), in float32. Target: >= 4x. (With --questions-from, the tool-use questions are
answered one at a time in both runs, see facellm.eval.runner.ALONE_TOKENS, which bounds the ratio of that
mix.)

    python bench/eval_batching.py [--batch-size 16] [--copies 4] [--max-new-tokens 32]
    python bench/eval_batching.py --questions-from PATH/TO/facexbench/benchmark --limit 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoProcessor

from facellm.eval.facexbench import load_benchmark, vlmeval_message
from facellm.eval.plugin import register_plugin
from facellm.eval.runner import evaluate
from facellm.infer.protocol import PROTOCOLS, Part, image_tokens
from facellm.testing.noisy_model import noisy_copy
from facellm.testing.sample_benchmark import SAMPLE, build, with_placeholder_images
from facellm.testing.tiny_model import build_tiny_model, with_internvl3_tiles

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


def token_stats(counts: list[int]) -> str:
    return f"min {min(counts)} / median {int(statistics.median(counts))} / max {max(counts)}"


def run_protocol(protocol: str, model_dir: str, bench: Path, args, internvl3) -> dict:
    """Both runs of one protocol (float32: batches are exact in float32 only), and its prompt lengths."""
    model = register_plugin().supported_VLM["FaceLLM-1B"](
        model_path=model_dir, max_new_tokens=args.max_new_tokens, protocol=protocol, dtype="float32"
    )
    identity = {"model": "FaceLLM-1B", "model_path": model_dir, "max_new_tokens": args.max_new_tokens}
    tasks = load_benchmark(bench)
    messages = [vlmeval_message(t, n, bench) for t in tasks for n in t.questions]
    parts = [[Part(m["type"], m["value"]) for m in message] for message in messages]
    chosen = PROTOCOLS[protocol]
    tokens = [model.prompt_tokens(message) for message in messages]
    real_tiles = [
        sum(image_tokens(internvl3, chosen, part.value) for part in turn if part.kind == "image")
        for turn in parts
    ]
    model.generate_batch(messages[:2])  # warm-up: first-call allocations are not part of either figure

    seconds = {}
    for batch_size in (1, args.batch_size):
        results = args.work / protocol / f"results-{batch_size}"
        shutil.rmtree(results, ignore_errors=True)
        start = time.perf_counter()
        evaluate(lambda: model, identity, bench, results, batch_size=batch_size, progress=False)
        seconds[batch_size] = time.perf_counter() - start
    alone = predictions(args.work / protocol / "results-1")
    batched = predictions(args.work / protocol / f"results-{args.batch_size}")

    engine = model.engine
    chunk = parts[: args.batch_size]
    with torch.inference_mode():
        together = engine.model(**engine.encode(chunk)).logits[:, -1]
        single = torch.cat([engine.model(**engine.encode(turn)).logits[:, -1] for turn in chunk])
    return {
        "questions": len(alone),
        "same": sum(alone[key] == batched[key] for key in alone),
        "distinct": len(set(alone.values())),
        "drift": (together - single).abs().max().item(),
        "tokens": tokens,
        "internvl3_tokens": real_tiles,
        "seconds": seconds,
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
    parser.add_argument("--protocols", default="released,training", help="comma-separated (default: both)")
    parser.add_argument("--work", type=Path, default=Path("saves/bench-eval-batching"))
    args = parser.parse_args()

    tiny = build_tiny_model(Path("saves/tiny-internvl3"))
    model_dir = args.model or str(noisy_copy(tiny, Path("saves/tiny-internvl3-noisy")))
    bench = benchmark(args.work, args)
    # prompt lengths as a real InternVL3-hf processor makes them (448-px tiles of 256 tokens)
    internvl3 = AutoProcessor.from_pretrained(with_internvl3_tiles(tiny, args.work / "internvl3-tiles"))
    images = sum(len(t.questions[n]["image_paths"]) for t in load_benchmark(bench) for n in t.questions)
    print(f"model: {model_dir}, float32 on CPU; {args.max_new_tokens} new tokens max; {images} images")
    verdicts = []
    for protocol in args.protocols.split(","):
        found = run_protocol(protocol, model_dir, bench, args, internvl3)
        alone, batched = found["seconds"][1], found["seconds"][args.batch_size]
        ratio = alone / batched
        print(f"\n{protocol} protocol ({PROTOCOLS[protocol].summary})")
        print(f"  prompt tokens per question (this model): {token_stats(found['tokens'])}")
        real = token_stats(found["internvl3_tokens"])
        print(f"  image tokens per question with InternVL3's 448-px tiles: {real}")
        print(f"  identical predictions: {found['same']}/{found['questions']} ({found['distinct']} distinct "
              f"answers); max next-token logit difference over one batch: {found['drift']:.2e}")  # fmt: skip
        print(f"  one at a time: {alone:.2f} s; batches of {args.batch_size}: {batched:.2f} s; "
              f"speed-up {ratio:.1f}x")  # fmt: skip
        verdicts.append(ratio >= 4 and found["same"] == found["questions"] and found["drift"] < 1e-4)
    verdict = "met" if all(verdicts) else "NOT met"
    print(f"\ntarget >= 4x with identical predictions under every protocol: {verdict}")


if __name__ == "__main__":
    main()
