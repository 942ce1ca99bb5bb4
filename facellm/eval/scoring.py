"""FaceXBench scores: reading a results folder, accuracy per category, task, file and image count, the text
and JSON reports, and a plot against the published numbers.

Counting (the same for every row of every table):
    questions  questions in the results files
    answered   questions with a prediction
    failed     questions whose last attempt raised an error (no prediction; a rerun asks them again)
    pending    questions not asked yet (an interrupted run or --limit)
    unparsed   answered, but no option letter could be read, or only a hedged or negated one ("A or B",
               "not A"; see facellm.eval.facexbench.extract_letter)
    correct    the letter read equals correct_answer_option
    accuracy   100 * correct / (answered + failed): unparsed and failed questions count as wrong, pending ones
               are left out (and a report with pending questions says it is incomplete)
Accuracies are micro averages: a category's accuracy is its correct answers over its questions, as the
published tables count them (5,000 questions: 1,500 bias & fairness, 800 recognition, 700 authentication,
800 analysis, 1,100 localisation, 100 tool use).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json, write_json_atomic, write_text_atomic
from facellm.eval.facexbench import Task, extract_letter, load_task
from facellm.infer.protocol import PROTOCOLS

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
RESULTS_JSON = "results.json"
RESULTS_TEXT = "results.txt"
PLOT_FILE = "facexbench_comparison.png"
OWN_FILES = {RUN_FILE, SUMMARY_FILE, RESULTS_JSON, "contamination.json"}

CATEGORIES = {  # file category -> the published table's name
    "bias_fairness": "Bias & Fairness",
    "face_recognition": "Face Recognition",
    "fas_deepfakes": "Face Authentication",
    "attributes_expression": "Face Analysis",
    "face_localization": "Face Localization",
    "tools_use": "Face Tools Use",
}
IMAGE_GROUPS = {"single": "single image", "multiple": "multiple images", "zero": "no image"}

# Published overall accuracy (%) on the 5,000 questions: the FaceLLM paper (arXiv 2507.10300) and the
# FaceXBench paper, with its random and human baselines.
PUBLISHED_OVERALL = {
    "human": 70.28,
    "FaceLLM-38B": 60.52,
    "Qwen2-VL-72B": 57.86,
    "InternVL2-76B": 57.80,
    "GeminiPro-1.5": 56.96,
    "FaceLLM-8B": 56.14,
    "InternVL2-8B": 53.24,
    "GPT-4o": 50.50,
    "FaceLLM-1B": 38.86,
    "random": 25.10,
}
# Published accuracy (%) per category of the three FaceLLM models. The Face Authentication figures are not a
# whole number of its 700 questions (the other categories are): the paper counted that one differently.
PUBLISHED_CATEGORIES = {
    "FaceLLM-1B": dict(zip(CATEGORIES.values(), (40.67, 32.50, 32.66, 53.00, 35.64, 28.00), strict=True)),
    "FaceLLM-8B": dict(zip(CATEGORIES.values(), (65.20, 62.50, 34.38, 63.25, 48.18, 52.00), strict=True)),
    "FaceLLM-38B": dict(zip(CATEGORIES.values(), (71.40, 66.12, 37.97, 65.12, 53.73, 48.00), strict=True)),
}
COUNTS = ("questions", "answered", "failed", "pending", "unparsed", "correct")


def load_results(results_dir: Path) -> list[Task]:
    """The results files of a folder (FaceXBench question files with `prediction`/`error` per question)."""
    if not results_dir.is_dir():
        raise FaceLLMError(f"{results_dir}: results folder does not exist")
    files = sorted(p for p in results_dir.glob("*.json") if p.name not in OWN_FILES)
    if not files:
        hint = ""
        if (results_dir / "shards").is_dir():
            hint = f"; merge its shards first: python vlmeval/evaluate.py --merge --results-dir {results_dir}"
        raise FaceLLMError(f"{results_dir}: no FaceXBench results files (*.json) in this folder{hint}")
    return [load_task(path) for path in files]


def question_status(question: dict) -> tuple[str, str | None]:
    """(status, letter read) of one result question; status is answered, unparsed, failed or pending."""
    if "prediction" in question:
        letter = extract_letter(question["prediction"], question["options"])
        return ("answered" if letter else "unparsed"), letter
    return ("failed" if "error" in question else "pending"), None


def _row() -> dict:
    return dict.fromkeys(COUNTS, 0)


def _finish(row: dict) -> dict:
    scored = row["answered"] + row["failed"]
    row["accuracy"] = round(100 * row["correct"] / scored, 2) if scored else None
    return row


def score(tasks: list[Task], leave_out: dict[str, set[str]] | None = None) -> dict:
    """Counts and accuracy overall and per category, task, image group and file, plus what was read from
    every answer. LEAVE_OUT (file -> question numbers) drops those questions from every row."""
    leave_out = leave_out or {}
    overall, groups = _row(), {key: defaultdict(_row) for key in ("categories", "tasks", "images", "files")}
    questions = {}
    for task in tasks:
        category = CATEGORIES.get(task.header["category"], task.header["category"])
        labels = {
            "categories": category,
            "tasks": f"{category} / {task.header['sub-category']}",
            "images": IMAGE_GROUPS.get(task.header["num_images"], str(task.header["num_images"])),
            "files": task.name,
        }
        read = questions[task.name] = {}
        for number, question in task.questions.items():
            status, letter = question_status(question)
            correct = letter is not None and letter == question["correct_answer_option"]
            read[number] = {"status": status, "letter": letter, "correct": correct}
            if number in leave_out.get(task.name, ()):
                continue
            rows = [overall, *(groups[key][label] for key, label in labels.items())]
            for row in rows:
                row["questions"] += 1
                row["answered"] += status in ("answered", "unparsed")
                if status != "answered":
                    row[status] += 1
                row["correct"] += correct
    result = {"overall": _finish(overall)}
    for key, rows in groups.items():
        result[key] = {label: _finish(row) for label, row in sorted(rows.items())}
    result["answers"] = questions
    return result


def report(
    tasks: list[Task],
    identity: dict,
    contamination: dict | None = None,
    exclude_overlapping: bool = False,
) -> dict:
    """The content of results.json: scores of all questions or, with EXCLUDE_OVERLAPPING, of the questions
    none of whose images overlap the training images (CONTAMINATION, see facellm.eval.contamination)."""
    overlapping = _overlapping(contamination, tasks) if contamination else {}
    if exclude_overlapping and not contamination:
        raise FaceLLMError("leaving out overlapping questions needs a contamination report (--contamination)")
    scores = score(tasks, overlapping if exclude_overlapping else None)
    data = {
        "model": identity.get("model"),
        "model_path": identity.get("model_path"),
        "settings": {k: v for k, v in identity.items() if k not in ("model", "model_path")},
        "scope": "questions without training-image overlap" if exclude_overlapping else "all questions",
        **{key: scores[key] for key in ("overall", "categories", "tasks", "images", "files")},
    }
    if contamination:
        for name, row in data["files"].items():
            row["overlapping"] = len(overlapping.get(name, ()))
        other = score(tasks, None if exclude_overlapping else overlapping)
        data["contamination"] = {
            "report": contamination.get("source"),
            "method": contamination.get("method"),
            "thresholds": contamination.get("thresholds"),
            "train": contamination.get("train"),
            "overlapping_questions": {name: sorted(found, key=int) for name, found in overlapping.items()},
            "overall_all_questions": scores["overall"] if not exclude_overlapping else other["overall"],
            "overall_without_overlap": other["overall"] if not exclude_overlapping else scores["overall"],
        }
    data["published"] = {"overall": PUBLISHED_OVERALL, "categories": PUBLISHED_CATEGORIES}
    # not "questions": the authors' aggregate script reads every JSON of a folder with that key as questions
    data["answers"] = scores["answers"]
    return data


def _overlapping(contamination: dict, tasks: list[Task]) -> dict[str, set[str]]:
    found = contamination.get("overlaps")
    if not isinstance(found, dict):
        raise FaceLLMError(f"{contamination.get('source')}: not a contamination report (no 'overlaps')")
    names = {task.name for task in tasks}
    return {name: set(numbers) for name, numbers in found.items() if name in names and numbers}


def _accuracy(row: dict) -> str:
    return "-" if row["accuracy"] is None else f"{row['accuracy']:.2f}"


def text(data: dict) -> str:
    """results.txt: the tables of results.json."""
    overall = data["overall"]
    lines = [f"FaceXBench: {data['model']} ({data['model_path']})"]
    protocol = data.get("settings", {}).get("protocol")
    if protocol:
        lines.append(f"protocol: {protocol} ({PROTOCOLS[protocol].summary})")
    lines.append(
        f"accuracy {_accuracy(overall)} % = {overall['correct']} correct / "
        f"{overall['answered'] + overall['failed']} scored ({data['scope']})"
    )
    if overall["pending"]:
        lines.append(f"INCOMPLETE: {overall['pending']} of {overall['questions']} questions not answered yet")
    if overall["failed"]:
        lines.append(f"{overall['failed']} questions failed (counted wrong; rerun the evaluation to retry)")
    lines.append(
        "scored = answered + failed; unparsed answers and failed questions count as wrong; accuracy in %"
    )
    contamination = data.get("contamination")
    if contamination:
        count = sum(len(v) for v in contamination["overlapping_questions"].values())
        lines.append(
            f"training-image overlap: {count} questions; accuracy with them "
            f"{_accuracy(contamination['overall_all_questions'])} %, without them "
            f"{_accuracy(contamination['overall_without_overlap'])} %"
        )
    for key, title in (
        ("categories", "category"),
        ("tasks", "task"),
        ("images", "images per question"),
        ("files", "file"),
    ):
        rows = data[key]
        width = max([len(title), *(len(label) for label in rows)])
        extra = contamination is not None and key == "files"
        head = f"{title:<{width}} {'acc':>7} {'correct':>8} {'scored':>7} {'unparsed':>9} {'failed':>7}"
        head += f" {'pending':>8}" + (f" {'overlap':>8}" if extra else "")
        lines += ["", head]
        for label, row in rows.items():
            scored = row["answered"] + row["failed"]
            line = (
                f"{label:<{width}} {_accuracy(row):>7} {row['correct']:>8} {scored:>7} "
                f"{row['unparsed']:>9} {row['failed']:>7} {row['pending']:>8}"
            )
            lines.append(line + (f" {row['overlapping']:>8}" if extra else ""))
    published = PUBLISHED_CATEGORIES.get(data["model"])
    if published:
        how = (
            ""
            if protocol in (None, "released")
            else f"; this run used the {protocol} protocol, they the released one"
        )
        lines += ["", f"published {data['model']} (FaceLLM paper) vs this run, accuracy %{how}"]
        for category, value in published.items():
            row = data["categories"].get(category)
            lines.append(f"{category:<20} {value:>7.2f} {_accuracy(row) if row else '-':>7}")
        overall_published = PUBLISHED_OVERALL[data["model"]]
        lines.append(f"{'overall':<20} {overall_published:>7.2f} {_accuracy(overall):>7}")
    return "\n".join(lines) + "\n"


def write_reports(results_dir: Path, data: dict) -> None:
    write_json_atomic(results_dir / RESULTS_JSON, data)
    write_text_atomic(results_dir / RESULTS_TEXT, text(data))


def read_identity(results_dir: Path) -> dict:
    run_file = results_dir / RUN_FILE
    identity = read_json(run_file) if run_file.is_file() else {}
    if not isinstance(identity, dict):
        raise FaceLLMError(f"{run_file}: not a FaceLLM run file (expected an object)")
    return identity


def _category_panel(axis, data: dict | None, label: str | None) -> None:
    """Bars per category: the published FaceLLM models, and this run's (hatched) with its value written on
    each bar, since a score of 0 draws no bar at all, and "n/a" where the run has no question of a category
    (a bar of 0 would claim a score it never had)."""
    categories = ["Overall", *CATEGORIES.values()]
    series = {
        name: [PUBLISHED_OVERALL[name], *values.values()] for name, values in PUBLISHED_CATEGORIES.items()
    }
    if data is not None:
        mine = [
            data["overall"]["accuracy"],
            *(data["categories"].get(c, {}).get("accuracy") for c in categories[1:]),
        ]
        series[label] = mine
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        positions = [x + (index - (len(series) - 1) / 2) * width for x in range(len(categories))]
        if name != label:
            axis.bar(positions, values, width, label=name)
            continue
        heights = [float("nan") if v is None else v for v in values]
        axis.bar(positions, heights, width, label=name, hatch="//", edgecolor="black")
        for x, value in zip(positions, values, strict=True):
            shown = "n/a" if value is None else f"{value:.1f}"
            inside = value is not None and value > 85  # above the bar it would run into the legend
            axis.text(
                x, (value or 0) + (-1 if inside else 1), shown, ha="center", va="top" if inside else "bottom",
                fontsize=7, rotation=90, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
            )  # fmt: skip
    axis.axhline(
        PUBLISHED_OVERALL["random"], color="grey", linestyle=":", linewidth=1, label="random (overall)"
    )
    axis.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 112)  # the legend's row above 100 %, clear of the bars
    axis.set_yticks(range(0, 101, 20))
    axis.set_title("FaceXBench accuracy per category")
    axis.legend(fontsize=7, loc="upper center", ncol=len(series) + 1, frameon=False)


def _ranking_panel(axis, data: dict | None, label: str | None) -> None:
    ranking = dict(PUBLISHED_OVERALL)
    if data is not None and data["overall"]["accuracy"] is not None:
        ranking[label] = data["overall"]["accuracy"]
    names = sorted(ranking, key=ranking.get)
    colours = [
        "tab:red" if n == label else "tab:blue" if n.startswith("FaceLLM") else "tab:grey" for n in names
    ]
    axis.barh(names, [ranking[n] for n in names], color=colours)
    for y, name in enumerate(names):
        axis.text(ranking[name] + 0.5, y, f"{ranking[name]:.2f}", va="center", fontsize=8)
    axis.set_xlim(0, 100)
    axis.set_xlabel("overall accuracy (%)")
    axis.set_title("Overall (published, and this run)" if data else "Overall (published)")


def comparison_figure(data: dict | None = None):
    """The published FaceLLM accuracies per category and the published overall ranking, with this run's
    (DATA, when given) added to both: the figure of plot(). The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocol = (data or {}).get("settings", {}).get("protocol")
    label = (
        None
        if data is None
        else f"{data['model']} (this run" + (f", {protocol} protocol)" if protocol else ")")
    )
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    _category_panel(left, data, label)
    _ranking_panel(right, data, label)
    subtitle = "published: FaceLLM paper (arXiv 2507.10300) and FaceXBench paper"
    if data is not None:
        subtitle += (
            f"; this run: {data['scope']}, {data['overall']['answered'] + data['overall']['failed']} scored"
        )
    figure.suptitle(subtitle, fontsize=9, y=0.02, va="bottom")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure


def plot(path: Path, data: dict | None = None) -> Path:
    """comparison_figure(DATA), written atomically to PATH."""
    figure = comparison_figure(data)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)
    return path
