"""Evaluate a FaceLLM (or any registered VLMEvalKit model) on FaceXBench. Run with --help for the options."""

import argparse
from pathlib import Path

from facellm.cli import FaceLLMError, run_cli
from facellm.evaluation import evaluate
from facellm.facexbench import report_text
from facellm.plugin import register_plugin


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python vlmeval/evaluate.py",
        description="Answer FaceXBench questions with a VLMEvalKit model and report accuracy per task. "
        "Resumes: questions already answered in --results-dir are not asked again.",
    )
    parser.add_argument(
        "--model", default="FaceLLM-1B", help="name in VLMEvalKit's supported_VLM (default: %(default)s)"
    )
    parser.add_argument(
        "--model-path", default=None, help="local model folder instead of the registered hub id"
    )
    parser.add_argument(
        "--benchmark-dir",
        type=Path,
        default=Path("data/facexbench/benchmark"),
        help="folder with the FaceXBench *.json files and images/ (default: %(default)s)",
    )
    parser.add_argument("--results-dir", type=Path, default=None, help="default: saves/facexbench/<model>")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions of each file")
    parser.add_argument(
        "--no-prepend-text",
        dest="prepend",
        action="store_false",
        help="leave out each task's instruction text before the question",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default: 64)")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")

    supported_vlm = register_plugin().supported_VLM
    if args.model not in supported_vlm:
        raise FaceLLMError(f"unknown model {args.model!r}: not in VLMEvalKit's supported_VLM")
    overrides = {"max_new_tokens": args.max_new_tokens}
    if args.model_path:
        # a local folder is recorded by its absolute path, so that resuming from elsewhere still matches
        local = Path(args.model_path)
        overrides["model_path"] = str(local.absolute()) if local.exists() else args.model_path
    model_path = overrides.get("model_path") or getattr(supported_vlm[args.model], "keywords", {}).get(
        "model_path"
    )
    results_dir = args.results_dir or Path("saves/facexbench") / args.model
    summary = evaluate(
        lambda: supported_vlm[args.model](**overrides),
        args.model,
        model_path,
        args.benchmark_dir,
        results_dir,
        args.limit,
        args.prepend,
    )
    print(report_text(summary, args.model), end="")
    print(f"results: {results_dir}")


if __name__ == "__main__":
    run_cli(main)
