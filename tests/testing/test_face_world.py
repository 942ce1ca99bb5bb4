"""The synthetic face world and its held-out benchmark: deterministic, balanced, held out, refused when
asked for what it cannot be."""

import csv
import hashlib
import json
from collections import Counter

import pytest

from facellm.eval.facexbench import load_benchmark
from facellm.testing.face_world import AGE_GROUPS, WORLD_RACES, chance, main, write_benchmark, write_world
from tests.support import assert_one_line_error, run_main


def digest(folder) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(
        b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


def labels(world, split):
    with (world / f"fairface_label_{split}.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world") / "w", train=36, val=24, seed=3)


def test_the_world_is_deterministic_by_seed_and_its_labels_balanced(world, tmp_path):
    assert digest(write_world(tmp_path / "again", train=36, val=24, seed=3)) == digest(world)
    assert digest(write_world(tmp_path / "other", train=36, val=24, seed=4)) != digest(world)
    val = labels(world, "val")
    assert len(val) == 24 and len(labels(world, "train")) == 36
    combos = Counter((r["gender"], r["age"]) for r in val)
    assert set(combos) == {(g, a) for g in ("Male", "Female") for a in AGE_GROUPS.values()}
    assert set(combos.values()) == {4}
    assert Counter(r["race"] for r in val) == dict.fromkeys(WORLD_RACES, 6)  # balanced: chance is 1/4
    assert not {r["file"] for r in val} & {r["file"] for r in labels(world, "train")}


def test_the_benchmark_asks_about_val_faces_only_in_the_facexbench_layout(world, tmp_path):
    from PIL import Image, ImageChops

    bench = write_benchmark(world, tmp_path / "bench", per_task=24)
    tasks = {task.name: task for task in load_benchmark(bench)}  # the evaluation's own reader accepts it
    assert set(tasks) == {"face_world_gender", "face_world_age", "face_world_race"}
    val = labels(world, "val")
    for name, task in tasks.items():
        attribute = name.rsplit("_", 1)[1]
        assert len(task.questions) == 24 and task.header["chance"] == chance(list(task.questions.values()))
        letters = Counter(q["correct_answer_option"] for q in task.questions.values())
        assert len(letters) > 1  # options shuffled
        for number, question in task.questions.items():
            assert question["image_paths"] == [f"images/{name}/question_{number}.png"]
            face = val[int(number) - 1]
            assert question["answer"] == face[attribute] and question["options"].count(face[attribute]) == 1
            with (
                Image.open(bench / question["image_paths"][0]) as drawn,
                Image.open(world / "fairface-img-margin025-trainval" / face["file"]) as original,
            ):
                assert not ImageChops.difference(drawn.convert("RGB"), original.convert("RGB")).getbbox()
    age = tasks["face_world_age"].questions.values()
    assert all(set(AGE_GROUPS.values()) <= set(q["options"]) and len(q["options"]) == 4 for q in age)


def test_chance_is_the_best_score_without_the_image():
    assert (
        chance([{"options": ["a", "b"], "answer": "a"}] * 3 + [{"options": ["a", "b"], "answer": "b"}])
        == 0.75
    )
    assert chance([{"options": list("abcd"), "answer": x} for x in "abcd"]) == 0.25


def test_bad_requests_are_one_line_errors_and_overwrite_nothing(world, tmp_path, capsys):
    before = digest(world)
    for argv, needles in [
        (["world", "--out", str(tmp_path / "few"), "--train", "3"], ["at least 6 faces"]),
        (
            ["world", "--out", str(world), "--train", "36", "--val", "24", "--seed", "9"],
            ["another face world", "seed 3 -> 9"],
        ),
        (
            ["benchmark", "--world", str(world), "--out", str(tmp_path / "b"), "--tasks", "gender,mood"],
            ["unknown task 'mood'"],
        ),
        (
            ["benchmark", "--world", str(world), "--out", str(tmp_path / "b"), "--per-task", "25"],
            ["24 val faces"],
        ),
    ]:
        assert_one_line_error(run_main(main, argv, capsys), *needles)
    assert digest(world) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    result = run_main(main, ["world", "--out", str(tmp_path / "notes")], capsys)
    assert_one_line_error(result, "not empty")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    assert json.loads((world / "face_world.json").read_text())["seed"] == 3
