"""A small benchmark in the FaceXBench file format, built from the sample faces, with answers known from
their labels. It exercises the evaluation path (single- and multi-image questions, string and integer options)
where the real FaceXBench images are not available. Texts are our own; only the schema is FaceXBench's.

    python -m facellm.testing.sample_benchmark --fairface-root assets/fairface-sample \
        --out saves/facexbench-sample
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

from facellm.common.cli import FaceLLMError, run_cli
from facellm.common.files import REPO, write_json_atomic
from facellm.data.fairface import AGE_BINS, FaceRecord, load_split, require_images
from facellm.eval.facexbench import LETTERS

SAMPLE = REPO / "assets" / "fairface-sample"
ANSWER_FORMAT = "Reply with the letter of the correct option only (A, B, C or D)."


def _question(images: list[str], text: str, options: list, correct) -> dict:
    return {
        "image_paths": images,
        "question_text": text,
        "options": options,
        "correct_answer_option": LETTERS[options.index(correct)],
        "answer": correct,
    }


def _task(category: str, sub: str, num_images: str, prepend: str, questions: list[dict]) -> dict:
    return {
        "category": category,
        "sub-category": sub,
        "dataset": "facellm_sample",
        "question_type": "MCQ",
        "num_images": num_images,
        "prepend_text": prepend,
        "postpend_text": ANSWER_FORMAT,
        "questions": {str(n): q for n, q in enumerate(questions, start=1)},
    }


def build(fairface_root: Path, out: Path, per_task: int = 4, seed: int = 0) -> Path:
    """Write OUT/benchmark/<task>.json and OUT/benchmark/images/<task>/...; returns the benchmark folder."""
    image_root, faces = load_split(fairface_root, "val")
    if not 1 <= per_task <= len(faces) // 2:
        most = len(faces) // 2
        raise FaceLLMError(
            f"{fairface_root}: {len(faces)} faces allow 1 to {most} questions per task, not {per_task}"
        )
    require_images(image_root, faces)
    rng = random.Random(seed)
    bench = out / "benchmark"

    def save(task: str, name: str, face: FaceRecord) -> str:
        relative = f"images/{task}/{name}.png"
        (bench / relative).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(image_root / face.file) as image:
            image.convert("RGB").save(bench / relative)
        return relative

    tasks = {}
    name = "sample_single_mcq_gender"
    questions = []
    for n, face in enumerate(faces[:per_task], start=1):
        options = ["Male", "Female", "Both", "None of the above"]
        rng.shuffle(options)
        questions.append(
            _question(
                [save(name, f"question_{n}", face)],
                "What is the gender of the person shown?",
                options,
                face.gender,
            )
        )
    tasks[name] = _task(
        "bias_fairness", "gender", "single", "Tell the perceived gender of a face.", questions
    )

    name = "sample_single_mcq_age"
    questions = []
    for n, face in enumerate(faces[per_task : 2 * per_task], start=1):
        options = [face.age, *rng.sample([a for a in AGE_BINS if a != face.age], 3)]
        rng.shuffle(options)
        questions.append(
            _question(
                [save(name, f"question_{n}", face)],
                "Which age group fits the person shown?",
                options,
                face.age,
            )
        )
    tasks[name] = _task("bias_fairness", "age", "single", f"Age groups: {', '.join(AGE_BINS)}.", questions)

    name = "sample_multiple_mcq_race"
    questions = []
    for n in range(1, per_task + 1):
        group = rng.sample(faces, 3)
        race = rng.choice(group).race
        images = [save(name, f"question_{n}_{k}", face) for k, face in enumerate(group, start=1)]
        count = sum(face.race == race for face in group)
        options = [0, 1, 2, 3]  # integers on purpose: some FaceXBench files have integer options
        questions.append(
            _question(images, f"How many of these images show a person of the {race} group?", options, count)
        )
    tasks[name] = _task("bias_fairness", "race", "multiple", "Each image shows one face.", questions)

    for name, data in tasks.items():
        write_json_atomic(bench / f"{name}.json", data)
    return bench


def with_placeholder_images(
    question_dir: Path, out: Path, names: list[str], limit: int | None = None, fairface_root: Path = SAMPLE
) -> Path:
    """OUT/benchmark/: the question files NAMES of QUESTION_DIR (real FaceXBench ones, say: their schema and
    texts), the first LIMIT questions of each, with every image they name drawn as a placeholder from the
    sample faces (a different face, mirrored or not, for each image). The FaceXBench images are not needed;
    the copies stay where OUT is and are never meant to be committed. Returns the benchmark folder."""
    from PIL import ImageOps

    from facellm.common.files import resolve_inside
    from facellm.data.fairface import find_image_root
    from facellm.eval.facexbench import load_task

    faces = sorted((find_image_root(fairface_root) / "val").glob("*.jpg"))
    if not faces:
        raise FaceLLMError(f"{fairface_root}: no sample faces under val/")
    bench = out / "benchmark"
    count = 0
    for name in names:
        task = load_task(question_dir / f"{name}.json")
        questions = dict(list(task.questions.items())[:limit])
        for question in questions.values():
            for relative in question["image_paths"]:
                target = resolve_inside(bench, relative, f"{task.path}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(faces[count % len(faces)]) as face:
                    image = face.convert("RGB")
                (ImageOps.mirror(image) if (count // len(faces)) % 2 else image).save(target)
                count += 1
        write_json_atomic(bench / f"{name}.json", {**task.header, "questions": questions})
    return bench


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.sample_benchmark",
        description="Write a small FaceXBench-format benchmark built from FairFace-layout sample faces, or "
        "(--questions-from) copies of FaceXBench question files with placeholder images, to try the "
        "evaluation without the FaceXBench images.",
    )
    parser.add_argument("--fairface-root", type=Path, default=Path("assets/fairface-sample"))
    parser.add_argument("--out", type=Path, default=Path("saves/facexbench-sample"))
    parser.add_argument("--per-task", type=int, default=4, help="questions per task file (default: 4)")
    parser.add_argument(
        "--questions-from", type=Path, default=None,
        help="a folder of FaceXBench question files: copy them (first --per-task questions of each) and "
        "draw a placeholder image for every image they name",
    )  # fmt: skip
    parser.add_argument("--files", nargs="+", default=None, help="with --questions-from: file names (stems)")
    args = parser.parse_args(argv)
    if args.questions_from:
        names = args.files or sorted(p.stem for p in args.questions_from.glob("*.json"))
        if not names:
            raise FaceLLMError(f"{args.questions_from}: no question files (*.json) in this folder")
        bench = with_placeholder_images(
            args.questions_from, args.out, names, args.per_task, args.fairface_root
        )
    else:
        bench = build(args.fairface_root, args.out, args.per_task)
    print(f"sample benchmark: {bench}")


if __name__ == "__main__":
    run_cli(main)
