"""A synthetic face world that a model can learn from, and a held-out FaceXBench-format benchmark built on it.

`world` draws faces in the FairFace layout (labels CSVs + image folder, `train` and `val` splits, any count,
deterministic by seed) whose labels are visible in the pixels:

    perceived gender   Female: long hair down both sides of the face and red lips; Male: short hair, and a
                       beard from adulthood on
    age group          child ("3-9"): a small, round face low in the frame with large eyes; adult ("30-39"):
                       black, brown or auburn hair; elderly ("more than 70"): silver hair, thick glasses and
                       forehead lines
    race group         four FairFace groups, balanced and shuffled apart from gender and age, independently
                       of the drawing (skin tone included): the control. A model that beats chance on it
                       reads labels through a leak (file names, order, prompt), not pixels.

Each age group is drawn as one FairFace age bin, so an answer is either that bin or wrong. Labels are balanced
(gender x age and race each cycle through their values, then are shuffled by seed, separately).

`benchmark` writes single-image multiple-choice questions about the `val` faces only (never trained on) in
the FaceXBench layout: BENCH/<stem>.json and BENCH/images/<stem>/question_<n>.png, one file per task
(gender, age, race), options shuffled. Age questions offer the three drawn bins plus one other bin, race
questions the four world groups, gender questions both genders: a model that ignores the image can do no
better than the most frequent answer (`chance` in the task header says how well that is).

    python -m facellm.testing.face_world world --out saves/face-world --train 400 --val 120
    python -m facellm.testing.face_world benchmark --world saves/face-world --out saves/face-world-benchmark
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from facellm.common.cli import FaceLLMError, changed_settings, run_cli
from facellm.common.files import read_json, write_json_atomic
from facellm.common.mcq import LETTERS
from facellm.data.fairface import AGE_BINS, COLUMNS, GENDERS, IMAGE_FOLDERS, FaceRecord, load_split
from facellm.data.items import INSTRUCTION, QUESTIONS

IMAGE_SIZE = 224  # FairFace crops are 224 x 224
AGE_GROUPS = {"child": "3-9", "adult": "30-39", "elderly": "more than 70"}
WORLD_RACES = ("White", "Black", "East Asian", "Indian")
TASKS = ("gender", "age", "race")
MARKER = "face_world.json"
BENCHMARK_MARKER = "face_world_benchmark.marker"  # not *.json: every *.json there is a question file
WORLD_VERSION = 3  # bump when the drawing or the label assignment changes

SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 129), (198, 134, 96), (141, 85, 54), (92, 58, 38)]
YOUNG_HAIR = [(25, 20, 18), (60, 38, 24), (95, 60, 32), (120, 45, 25)]  # dark: never mistaken for silver
OLD_HAIR = (165, 165, 170)  # silver


def world_records(count: int, split: str, rng: random.Random) -> list[FaceRecord]:
    """COUNT balanced labels: gender x age group cycle, race cycles on its own; the two are shuffled apart, so
    race says nothing of gender, age or the drawing."""
    combos = [(gender, age) for age in AGE_GROUPS.values() for gender in GENDERS]
    drawn = [combos[index % len(combos)] for index in range(count)]
    races = [WORLD_RACES[index % len(WORLD_RACES)] for index in range(count)]
    rng.shuffle(drawn)
    rng.shuffle(races)
    return [
        FaceRecord(file=f"{split}/{index + 1}.jpg", age=age, gender=gender, race=race)
        for index, ((gender, age), race) in enumerate(zip(drawn, races, strict=True))
    ]


def draw_face(record: FaceRecord, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """One face; the gender and age cues are strong enough to survive a 56-pixel resize."""
    base = rng.randrange(205, 240)  # light and nearly neutral: hair of any colour stands out against it
    background = tuple(min(255, base + rng.randrange(-8, 9)) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    child, elderly = record.age == AGE_GROUPS["child"], record.age == AGE_GROUPS["elderly"]
    female = record.gender == "Female"
    scale = 0.52 if child else 1.0
    cx = size / 2 + rng.uniform(-8, 8)
    cy = size / 2 + (22 if child else 0) + rng.uniform(-6, 6)
    half_w, half_h = (
        64 * scale * rng.uniform(0.93, 1.05),
        (70 if child else 84) * scale * rng.uniform(0.95, 1.05),
    )
    skin = rng.choice(SKIN_TONES)  # independent of race on purpose
    hair = OLD_HAIR if elderly else rng.choice(YOUNG_HAIR)

    if female:  # long hair behind the face, down to the bottom of the image
        draw.rectangle((cx - half_w - 22, cy - half_h - 8, cx + half_w + 22, size), fill=hair)
    draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=skin)
    draw.chord((cx - half_w - 3, cy - half_h - 12, cx + half_w + 3, cy - half_h * 0.15), 180, 360, fill=hair)

    eye_y, eye_dx = cy - half_h * 0.12, half_w * 0.42
    eye_r = 13 if child else 9
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - eye_r, eye_y - eye_r * 0.7, ex + eye_r, eye_y + eye_r * 0.7), fill=(250, 250, 250))
        draw.ellipse((ex - 5, eye_y - 5, ex + 5, eye_y + 5), fill=(50, 35, 25))
        draw.line(
            (ex - 12, eye_y - 16, ex + 12, eye_y - 18), fill=hair if not elderly else (200, 200, 200), width=4
        )
    if elderly:  # thick dark glasses across the eyes, and forehead lines
        for side in (-1, 1):
            ex = cx + side * eye_dx
            draw.rectangle((ex - 17, eye_y - 12, ex + 17, eye_y + 12), outline=(20, 20, 20), width=5)
        draw.line((cx - eye_dx + 17, eye_y, cx + eye_dx - 17, eye_y), fill=(20, 20, 20), width=5)
        for k in range(3):
            y = cy - half_h * (0.62 - 0.12 * k)
            draw.arc(
                (cx - half_w * 0.55, y - 6, cx + half_w * 0.55, y + 6), 200, 340, fill=(90, 60, 50), width=3
            )
    mouth_y, mouth_w = cy + half_h * 0.5, half_w * 0.36
    lips = (200, 20, 40) if female else (130, 60, 55)
    draw.arc(
        (cx - mouth_w, mouth_y - 8, cx + mouth_w, mouth_y + 10), 15, 165, fill=lips, width=7 if female else 4
    )
    if not female and not child:  # a beard over the jaw
        draw.chord(
            (cx - half_w * 0.9, cy + half_h * 0.2, cx + half_w * 0.9, cy + half_h * 1.02), 0, 180, fill=hair
        )
        draw.arc(
            (cx - mouth_w, mouth_y - 8, cx + mouth_w, mouth_y + 10), 15, 165, fill=(130, 60, 55), width=4
        )
    return image


def _claim(out: Path, marker_name: str, fingerprint: dict, what: str) -> bool:
    """True when OUT already holds this exact output (nothing to do). A folder holding anything else is
    refused: another seed's or size's output, or files this tool did not write, are never overwritten."""
    marker = out / marker_name
    if marker.is_file():
        previous = read_json(marker)
        if previous == fingerprint:
            return True
        changed = changed_settings(previous if isinstance(previous, dict) else {}, fingerprint)
        raise FaceLLMError(
            f"{out}: holds another {what} ({changed}); choose another --out or delete that folder"
        )
    if out.exists() and any(out.iterdir()):
        raise FaceLLMError(f"{out}: folder is not empty and holds no {what}; choose an empty or new --out")
    return False


def write_world(out: Path, train: int, val: int, seed: int = 0) -> Path:
    """Write the world into OUT (a FairFace root) unless OUT already holds this exact one; returns OUT."""
    if train < 6 or val < 6:
        raise FaceLLMError(
            f"--train {train} / --val {val}: each split needs at least 6 faces (one per gender and age group)"
        )
    fingerprint = {"version": WORLD_VERSION, "seed": seed, "train": train, "val": val}
    if _claim(out, MARKER, fingerprint, "face world"):
        return out
    image_root = out / IMAGE_FOLDERS[0]
    for split, count in (("train", train), ("val", val)):
        rng = random.Random(f"{seed}/{split}")  # each split on its own stream: --val does not change train
        records = world_records(count, split, rng)
        (image_root / split).mkdir(parents=True, exist_ok=True)
        for record in records:
            draw_face(record, rng).save(image_root / record.file, quality=92)
        with (out / f"fairface_label_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows([r.file, r.age, r.gender, r.race, "True"] for r in records)
    write_json_atomic(out / MARKER, fingerprint)  # last: a world cut short is not taken for a finished one
    return out


def _options(task: str, face: FaceRecord, rng: random.Random) -> list[str]:
    if task == "gender":
        options = list(GENDERS)
    elif task == "age":
        others = [age for age in AGE_BINS if age not in AGE_GROUPS.values()]
        options = [*AGE_GROUPS.values(), rng.choice(others)]
    else:
        options = list(WORLD_RACES)
    rng.shuffle(options)
    return options


def chance(questions: list[dict]) -> float:
    """The best accuracy an answer that ignores the image can expect: guessing among the options, or always
    giving the most frequent correct answer, whichever is higher."""
    guess = sum(1 / len(q["options"]) for q in questions) / len(questions)
    most_frequent = Counter(q["answer"] for q in questions).most_common(1)[0][1] / len(questions)
    return round(max(guess, most_frequent), 4)


def write_benchmark(
    world: Path, out: Path, per_task: int, tasks: tuple[str, ...] = TASKS, seed: int = 0
) -> Path:
    """OUT/<stem>.json and OUT/images/<stem>/question_<n>.png for each task, from the world's val faces."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise FaceLLMError(f"unknown task {unknown[0]!r}: one of {', '.join(TASKS)}")
    image_root, faces = load_split(world, "val")
    if not 1 <= per_task <= len(faces):
        raise FaceLLMError(
            f"{world}: {len(faces)} val faces allow 1 to {len(faces)} questions per task, not {per_task}"
        )
    world_marker = read_json(world / MARKER) if (world / MARKER).is_file() else None
    fingerprint = {"world": world_marker, "per_task": per_task, "tasks": list(tasks), "seed": seed}
    if _claim(out, BENCHMARK_MARKER, fingerprint, "benchmark"):
        return out
    for task in tasks:
        rng = random.Random(f"{seed}/{task}")
        stem = f"face_world_{task}"
        questions = {}
        for number, face in enumerate(faces[:per_task], start=1):
            relative = f"images/{stem}/question_{number}.png"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(image_root / face.file) as image:
                image.convert("RGB").save(out / relative)
            options, correct = _options(task, face, rng), getattr(face, task)
            questions[str(number)] = {
                "image_paths": [relative],
                "question_text": QUESTIONS[task],
                "options": options,
                "correct_answer_option": LETTERS[options.index(correct)],
                "answer": correct,
            }
        header = {
            "category": "face_world",
            "sub-category": task,
            "dataset": "facellm_face_world",
            "question_type": "MCQ",
            "num_images": "single",
            "prepend_text": f"Tell the {task} of the person shown.",
            "postpend_text": INSTRUCTION,  # the wording the labels backend trains with
            "chance": chance(list(questions.values())),
        }
        write_json_atomic(out / f"{stem}.json", {**header, "questions": questions})
    write_json_atomic(out / BENCHMARK_MARKER, fingerprint)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.face_world",
        description="Draw a synthetic face world whose gender and age are visible (race is a control), or "
        "write a held-out FaceXBench-format benchmark from its val faces.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    world = commands.add_parser("world", help="draw the faces (FairFace layout, train and val splits)")
    world.add_argument(
        "--out", type=Path, default=Path("saves/face-world"),
        help="FairFace root to write: new, empty, or holding this very world (default: %(default)s)",
    )  # fmt: skip
    world.add_argument("--train", type=int, default=400, help="train faces (default: %(default)s)")
    world.add_argument("--val", type=int, default=120, help="val (held-out) faces (default: %(default)s)")
    world.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    bench = commands.add_parser("benchmark", help="held-out multiple-choice questions about the val faces")
    bench.add_argument(
        "--world", type=Path, default=Path("saves/face-world"),
        help="a world written by the `world` command (default: %(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--out", type=Path, default=Path("saves/face-world-benchmark"),
        help="benchmark folder to write, new or empty (default: %(default)s)",
    )  # fmt: skip
    bench.add_argument(
        "--per-task",
        type=int,
        default=120,
        help="questions per task, one val face each (default: %(default)s)",
    )
    bench.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)} (default: all)"
    )
    bench.add_argument("--seed", type=int, default=0, help="option order (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "world":
        write_world(args.out, args.train, args.val, args.seed)
        print(f"face world: {args.train} train + {args.val} val faces in {args.out}")
    else:
        tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
        write_benchmark(args.world, args.out, args.per_task, tasks, args.seed)
        print(f"held-out benchmark: {len(tasks)} tasks x {args.per_task} questions in {args.out}")


if __name__ == "__main__":
    run_cli(main)
