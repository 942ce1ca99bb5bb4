"""Score a FaceXBench results folder. Run with --help for the options."""

import argparse
from pathlib import Path

from facellm.common.cli import FaceLLMError, run_cli
from facellm.common.files import read_json
from facellm.eval.scoring import (
    PLOT_FILE,
    RESULTS_TEXT,
    load_results,
    plot,
    read_identity,
    report,
    text,
    write_reports,
)

DESCRIPTION = """\
Read an option letter from every prediction of a FaceXBench results folder (written by vlmeval/evaluate.py,
or by the FaceXBench authors' script) and write, into that folder:
  results.txt   accuracy overall and per category, task (sub-category), image count and file
  results.json  the same, plus the letter read from each answer and the published numbers
  facexbench_comparison.png  this run next to the published FaceLLM results (elsewhere with --plot); this
                run's accuracy is written on its bars, a 0 included, and "n/a" marks a category of which the
                results hold no question
Letters are read by ordered rules (facellm/eval/facexbench.py); an answer that names no single option is
"unparsed" and counts as wrong, as does a failed question. Accuracy = correct / (answered + failed).

With --contamination (a report of python -m facellm.eval.contamination), each file's questions whose images
overlap the training images are counted, and accuracy is also given without them; --exclude-contaminated
makes that the headline (tables and plot).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python vlmeval/aggregate_results.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a misspelt flag is an error, never a guess at a longer one
    )
    parser.add_argument(
        "--results-dir", "--results_dir", type=Path, default=None,
        help="a model's results folder, or the folder holding it as MODEL/ (with --model)",
    )  # fmt: skip
    parser.add_argument(
        "--model", default=None,
        help="model name: picks RESULTS_DIR/MODEL when that exists; must be the model that wrote the results",
    )  # fmt: skip
    parser.add_argument(
        "--contamination", type=Path, default=None,
        help="contamination report (JSON) of python -m facellm.eval.contamination for this benchmark",
    )  # fmt: skip
    parser.add_argument(
        "--exclude-contaminated", "--exclude_contaminated", action="store_true",
        help="score only the questions without training-image overlap (needs --contamination)",
    )  # fmt: skip
    parser.add_argument(
        "--plot", type=Path, default=None,
        help=f"comparison plot file (default: RESULTS/{PLOT_FILE}; e.g. assets/facexbench_<model>.png)",
    )  # fmt: skip
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument(
        "--published-only", action="store_true",
        help="only draw the published numbers into --plot (no results folder needed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.published_only:
        if args.plot is None:
            parser.error("--published-only needs --plot FILE")
        print(f"plot: {plot(args.plot)}")
        return
    if args.results_dir is None:
        parser.error("--results-dir is required")
    if args.exclude_contaminated and args.contamination is None:
        parser.error("--exclude-contaminated needs --contamination FILE")

    folder = args.results_dir
    if args.model and (folder / args.model).is_dir():
        folder = folder / args.model
    identity = read_identity(folder) if folder.is_dir() else {}
    if args.model and identity and identity.get("model") != args.model:
        raise FaceLLMError(f"{folder}: holds results of {identity.get('model')!r}, not of {args.model!r}")
    tasks = load_results(folder)
    if not identity:  # results of the authors' script: no run.json
        identity = {"model": args.model or folder.name, "model_path": None}
    contamination = None
    if args.contamination is not None:
        contamination = read_json(args.contamination)
        if not isinstance(contamination, dict) or "overlaps" not in contamination:
            raise FaceLLMError(
                f"{args.contamination}: not a contamination report of facellm.eval.contamination"
            )
        contamination["source"] = str(args.contamination)
    data = report(tasks, identity, contamination, args.exclude_contaminated)
    write_reports(folder, data)
    print(text(data), end="")
    print(f"results: {folder / RESULTS_TEXT}, {folder / 'results.json'}")
    if not args.no_plot:
        print(f"plot: {plot(args.plot or folder / PLOT_FILE, data)}")


if __name__ == "__main__":
    run_cli(main)
