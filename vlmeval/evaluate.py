"""Evaluate a FaceLLM (or any VLMEvalKit model) on FaceXBench. Run with --help for the options."""

import argparse
import os
import sys
from pathlib import Path

from facellm.common.cli import run_cli
from facellm.common.options import add_answer_length, add_device_options, add_progress_option
from facellm.eval.plugin import (
    DEFAULT_PROTOCOLS,
    MAKE_LOCAL,
    REGISTERED_MODELS,
    check_model_name,
    register_plugin,
    unknown_model,
)
from facellm.eval.results import Shard, check_folders
from facellm.eval.runner import MAX_BATCH_TOKENS, MAX_CONSECUTIVE_FAILURES, evaluate, merge, prepare
from facellm.eval.scoring import RESULTS_TEXT
from facellm.infer.model import EXPORT_HINT, check_model_path, locate_model
from facellm.infer.protocol import DEFAULT_PROTOCOL, PROTOCOLS

DESCRIPTION = """\
Answer the FaceXBench questions with a model registered in VLMEvalKit's supported_VLM (FaceLLM-1B/8B/38B and
InternVL3-{1B,2B,8B,14B,38B}-hf are added by this repository's plug-in) and write the results in the
FaceXBench format: RESULTS/<file>.json is the question file with a "prediction" per answered question, plus
results.txt / results.json (accuracy per category, task, image count and file) and summary.json.

The plug-in's models ask each question under one of two protocols (--protocol, recorded with the results):
  released  the FaceLLM authors' evaluation, how the published numbers were made: no system message, images
            tiled by InternVLProcessor's defaults (up to 12 tiles + a thumbnail), bfloat16, 2048 new tokens
  training  as LLaMA-Factory showed the data in training: its system prompt, tiling as the image
            processor's config says, 64 new tokens, the machine's dtype (CUDA bfloat16, CPU float32)
--max-new-tokens and --dtype override the protocol's own.

Every image is resolved against --benchmark-dir and checked before the model loads: a missing image, or a
file that is not an image, stops the run (an image is never handed to the model as text). Results are saved
after every batch; rerunning the same command resumes (also after Ctrl-C, exit 130, or SIGTERM, exit 143),
and asks again the questions that failed (a failing question is recorded with its error and the run goes on;
the exit code is then 1).

Sharding: run shard I of N (I from 0) with --shard I/N, one process per GPU (CUDA_VISIBLE_DEVICES=I), or
under torchrun (RANK and WORLD_SIZE are read; each rank uses cuda:LOCAL_RANK). Shards write to
RESULTS/shards/I-of-N/; the last one to finish merges into RESULTS/ (or run --merge), giving the files an
unsharded run gives.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python vlmeval/evaluate.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a misspelt flag is an error, never a guess at a longer one
    )
    parser.add_argument(
        "--model", default="FaceLLM-1B", help="name in VLMEvalKit's supported_VLM (default: %(default)s)"
    )
    parser.add_argument(
        "--model-path", "--model_path", default=None,
        help="local model folder (an export.sh output) or hub id instead of the registered one",
    )  # fmt: skip
    parser.add_argument(
        "--benchmark-dir", "--benchmark_dir", type=Path, default=Path("data/facexbench/benchmark"),
        help="folder with the FaceXBench *.json files and their images/ (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--results-dir", "--results_dir", type=Path, default=None,
        help="where results go, outside --benchmark-dir (default: saves/facexbench/MODEL)",
    )  # fmt: skip
    parser.add_argument(
        "--prepend-text", "--prepend_text", dest="prepend", action="store_true",
        help="put each file's task instruction (prepend_text) before the question; off by default, as in "
        "the authors' evaluation",
    )  # fmt: skip
    parser.add_argument(
        "--protocol", choices=sorted(PROTOCOLS), default=None,
        help=f"how the plug-in's models are asked (default: {DEFAULT_PROTOCOL}; training for the tiny "
        "models, which have no published numbers and were trained by this repository's recipes)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", "--batch_size", type=int, default=1,
        help="questions per forward pass (default: 1, the authors' protocol). FaceLLM answers a batch "
        "left-padded, with the same greedy answers as one at a time in float32; in bfloat16 an answer may "
        "change where two tokens are nearly tied",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-tokens", "--max_batch_tokens", type=int, default=MAX_BATCH_TOKENS,
        help="most prompt tokens in one batch, padding included (rows x longest prompt; images counted as "
        "the tiles they make): a bound on a batch's memory; a longer question is asked alone "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions of each file")
    parser.add_argument(
        "--shard",
        default=None,
        help="I/N: answer only shard I (from 0) of N (default: RANK/WORLD_SIZE if set)",
    )
    parser.add_argument(
        "--merge", action="store_true",
        help="merge the shards of --results-dir into it (checks that every question is answered) and exit",
    )  # fmt: skip
    parser.add_argument(
        "--blank-images", action="store_true",
        help="replace every image by a uniform grey one of the same size: a control that shows how much of "
        "the score the images earn (recorded in run.json; use its own --results-dir)",
    )  # fmt: skip
    add_answer_length(parser, None, "the protocol's for the plug-in's models, the model's own for others")
    add_device_options(
        parser,
        "a plug-in model",
        "the protocol's: bfloat16 for released; for training bfloat16 on CUDA, else float32",
    )
    parser.add_argument(
        "--max-consecutive-failures", type=int, default=MAX_CONSECUTIVE_FAILURES,
        help="stop when this many questions in a row fail, e.g. a broken model or GPU "
        "(default: %(default)s; 0 never stops)",
    )  # fmt: skip
    add_progress_option(parser)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.max_batch_tokens < 1:
        parser.error("--max-batch-tokens must be at least 1")
    if args.max_consecutive_failures < 0:
        parser.error("--max-consecutive-failures must be 0 or more")
    results_dir = args.results_dir or Path("saves/facexbench") / args.model
    check_folders(args.benchmark_dir, results_dir)  # before anything is written or VLMEvalKit is imported

    if args.merge:
        summary = merge(args.benchmark_dir, results_dir, args.limit)
        finish(summary, results_dir)
        return

    shard = Shard.parse(args.shard) if args.shard else Shard.from_environment()
    # Everything that depends on the arguments and files only is checked before VLMEvalKit, torch and
    # transformers are imported (20 to 40 s): the model's name and path, then the benchmark and its images.
    check_model_name(args.model)
    registered = args.model in REGISTERED_MODELS
    if args.protocol and not registered:
        parser.error(f"--protocol applies to the plug-in's models ({', '.join(REGISTERED_MODELS)})")
    if registered:
        default_path = REGISTERED_MODELS[args.model]
        if args.model_path:
            locate_model(args.model_path)
        else:
            locate_model(default_path, hint=MAKE_LOCAL.get(args.model, EXPORT_HINT).format(path=default_path))
    elif args.model_path:  # another model class: its own kind of path, but a missing folder is missing
        check_model_path(args.model_path)
    tasks = prepare(args.benchmark_dir, args.limit)
    if not registered:  # any other VLMEvalKit model: its entry says where its weights are
        supported_vlm = register_plugin().supported_VLM
        if args.model not in supported_vlm:
            raise unknown_model(args.model, supported_vlm)
        default_path = getattr(supported_vlm[args.model], "keywords", {}).get("model_path")
    overrides = {}
    if args.model_path:
        # a local folder is recorded by its absolute path, so that resuming from elsewhere still matches
        local = Path(args.model_path)
        overrides["model_path"] = str(local.absolute()) if local.exists() else args.model_path
    protocol = PROTOCOLS[args.protocol or DEFAULT_PROTOCOLS[args.model]] if registered else None
    max_new_tokens = args.max_new_tokens or (protocol.max_new_tokens if protocol else None)
    if max_new_tokens is not None:
        overrides["max_new_tokens"] = max_new_tokens
    identity = {
        "model": args.model,
        "model_path": overrides.get("model_path", default_path),
        "prepend_text": args.prepend,
        "max_new_tokens": max_new_tokens,
    }
    if protocol:  # answers of one protocol and dtype are never mixed with the other's
        identity |= {"protocol": protocol.name, "dtype": args.dtype or protocol.dtype}
    if args.blank_images:  # only when set: results folders written before the option keep their identity
        identity["blank_images"] = True

    def make_model():
        options = dict(overrides)
        if registered:
            options |= {
                "protocol": protocol.name,
                "dtype": args.dtype,
                "device": args.device or device_for(shard),
            }
        return register_plugin().supported_VLM[args.model](**options)

    # Ctrl-C (130) or SIGTERM (143) ends it through run_cli, saying what is saved and the way back
    summary = evaluate(
        make_model, identity, args.benchmark_dir, results_dir, limit=args.limit, prepend=args.prepend,
        batch_size=args.batch_size, shard=shard, progress=args.progress,
        max_consecutive_failures=args.max_consecutive_failures, blank_images=args.blank_images,
        tasks=tasks, max_batch_tokens=args.max_batch_tokens,
    )  # fmt: skip
    if shard and not summary["merged"]:
        counts = summary["overall"]
        print(
            f"shard {shard.index}/{shard.count}: {counts['answered']} answered, {counts['failed']} failed, "
            f"{counts['pending']} pending, in {results_dir / 'shards' / shard.name}; the results are merged "
            "when every shard is done"
        )
        sys.exit(1 if counts["failed"] else 0)
    finish(summary, results_dir)


def device_for(shard: Shard | None) -> str | None:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK); otherwise the plug-in chooses."""
    if shard is None or "LOCAL_RANK" not in os.environ:
        return None
    import torch

    return f"cuda:{int(os.environ['LOCAL_RANK'])}" if torch.cuda.is_available() else None


def finish(summary: dict, results_dir: Path) -> None:
    print((results_dir / RESULTS_TEXT).read_text(encoding="utf-8"), end="")
    print(f"results: {results_dir}")
    failed = summary["overall"]["failed"]
    if failed:
        print(
            f"{failed} questions failed (errors in {results_dir / 'summary.json'}); run the same command "
            "again to retry them",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
