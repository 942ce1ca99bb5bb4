import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from facellm.common.cli import FaceLLMError
from facellm.eval.contamination import (
    DHASH_THRESHOLD,
    PHASH_THRESHOLD,
    contamination,
    dhash,
    distance,
    nearest_overlaps,
    phash,
    training_images,
)
from facellm.eval.facexbench import load_benchmark
from facellm.testing.sample_benchmark import build
from tests.support import SAMPLE_FACES, assert_one_line_error, run_command

FACES = sorted((SAMPLE_FACES / "fairface-img-margin025-trainval" / "val").glob("*.jpg"))


def reencoded(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def faces():
    return [Image.open(path).convert("RGB") for path in FACES]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build(SAMPLE_FACES, tmp_path_factory.mktemp("fxb"), per_task=4)


def within(a, b) -> bool:
    return distance(phash(a), phash(b)) <= PHASH_THRESHOLD and distance(dhash(a), dhash(b)) <= DHASH_THRESHOLD


def test_copies_match_and_different_faces_do_not(faces):
    for face in faces:
        for copy in (
            reencoded(face, format="PNG"),
            reencoded(face, format="JPEG", quality=60),
            face.resize((448, 448)),
            face.resize((150, 150)),
            ImageEnhance.Brightness(face).enhance(1.2),
        ):
            assert within(face, copy)
        assert not within(face, ImageOps.mirror(face))  # documented: mirrored copies are not caught
    pairs = [(a, b) for i, a in enumerate(faces) for b in faces[i + 1 :]]
    assert len(pairs) == 120 and not any(within(a, b) for a, b in pairs)


def test_hashes_are_256_bits_and_deterministic(faces):
    assert phash(faces[0]) == phash(faces[0].copy())
    assert 0 < phash(faces[0]) < 1 << 256 and 0 < dhash(faces[0]) < 1 << 256
    assert distance(0b1011, 0b0001) == 2


def test_nearest_overlap_picks_the_closest_within_both_thresholds():
    train = [(0, 0), (0b111, 0), (1 << 255, (1 << 40) - 1)]
    found = nearest_overlaps([(0b1, 0), ((1 << 255) | 1, 0), ((1 << 30) - 1, 0)], train, 24, 28)
    assert found[0] == (0, 1, 0)
    assert found[1] == (
        0,
        2,
        0,
    )  # (1<<255)|1 is 2 bits from train[0], 1 bit from train[2] whose dHash is 40 off
    assert found[2] is None  # 30 bits from everything
    assert nearest_overlaps([(0, 0)], []) == [None]


def source_faces(bench: Path) -> dict[tuple[str, str], list[int]]:
    """Which sample face each question's images were drawn from (by identical pixels)."""
    pixels = [np.asarray(Image.open(path).convert("RGB")) for path in FACES]
    found = {}
    for task in load_benchmark(bench):
        for number, question in task.questions.items():
            found[task.name, number] = [
                next(
                    i for i, p in enumerate(pixels) if np.array_equal(p, np.asarray(Image.open(bench / rel)))
                )
                for rel in question["image_paths"]
            ]
    return found


def test_report_finds_exactly_the_questions_with_training_faces(bench, tmp_path):
    # training set: faces 0-7, re-encoded and rescaled as a pipeline might store them
    train = tmp_path / "train"
    train.mkdir()
    for index in range(8):
        Image.open(FACES[index]).convert("RGB").resize((256, 256)).save(train / f"{index}.png")
    report = contamination(bench, train, cache_path=tmp_path / "cache.jsonl", progress=False)
    expected = {key for key, faces in source_faces(bench).items() if any(f < 8 for f in faces)}
    found = {(name, number) for name, numbers in report["overlaps"].items() for number in numbers}
    assert found == expected and 0 < len(found) < 12
    assert report["overall"]["overlapping_questions"] == len(expected)
    assert sum(row["overlapping_questions"] for row in report["files"].values()) == len(expected)
    hit = next(iter(report["overlaps"]["sample_single_mcq_gender"].values()))[0]
    assert hit["image"].startswith("images/sample_single_mcq_gender/") and hit["train_image"].endswith(".png")
    # the cache answers a rerun: its lines are not written again
    lines = (tmp_path / "cache.jsonl").read_text().count("\n")
    assert contamination(bench, train, cache_path=tmp_path / "cache.jsonl", progress=False) == report
    assert (tmp_path / "cache.jsonl").read_text().count("\n") == lines


def test_training_images_from_a_sharegpt_dataset(tmp_path):
    media = SAMPLE_FACES / "fairface-img-margin025-trainval"
    records = [{"conversations": [], "images": ["val/1.jpg"]}, {"conversations": [], "images": ["val/2.jpg"]}]
    (tmp_path / "dataset.json").write_text(json.dumps(records * 2))
    assert training_images(tmp_path / "dataset.json", media) == [
        media / "val" / "1.jpg",
        media / "val" / "2.jpg",
    ]
    (tmp_path / "escape.json").write_text(json.dumps([{"images": ["../../etc/passwd"]}]))
    with pytest.raises(FaceLLMError, match=r"escape\.json"):
        training_images(tmp_path / "escape.json", media)
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(FaceLLMError, match=r"bad\.json: not a ShareGPT dataset"):
        training_images(tmp_path / "bad.json")


def _dataset(kind: str, data: Path, media: Path) -> Path:
    """A dataset of KIND that LLaMA-Factory trains on, with images val/1.jpg and val/2.jpg: what to pass."""
    chat = [{"from": "human", "value": "<image>\nAge?"}, {"from": "assistant", "value": "Thirty."}]
    columns = {"messages": "chat", "images": "pictures"}
    entry = {"file_name": "d.json", "formatting": "sharegpt", "columns": columns}
    files = {"d.json": [{"chat": chat, "pictures": [f"val/{n}.jpg"]} for n in (1, 2)]}
    if kind == "single string image":  # an unregistered file: read as FaceLLM's ShareGPT
        entry, files = None, {"d.json": [{"conversations": chat, "images": f"val/{n}.jpg"} for n in (1, 2)]}
    elif kind == "absolute image path":
        absolute = [{"conversations": chat, "images": [str(media / "val" / f"{n}.jpg")]} for n in (1, 2)]
        entry, files = None, {"d.json": absolute}
    elif kind == "folder of json files":
        entry["file_name"] = "parts"
        files = {f"parts/{n}.json": [row] for n, row in enumerate(files["d.json"])}
    elif kind == "csv":
        entry = {"file_name": "d.csv", "columns": {"prompt": "q", "response": "a", "images": "images"}}
        files = {}
        (data / "d.csv").write_text("q,a,images\n<image>Age?,30,val/1.jpg\nAge?<image>,30,val/2.jpg\n")
    else:
        assert kind == "custom column and tag names"
        entry["tags"] = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                         "assistant_tag": "assistant"}  # fmt: skip
    for name, rows in files.items():
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_text(json.dumps(rows))
    if entry:
        (data / "dataset_info.json").write_text(json.dumps({"faces": entry}))
    return data / (entry["file_name"] if entry else "d.json")


@pytest.mark.parametrize(
    "kind",
    [
        "single string image",
        "absolute image path",
        "folder of json files",
        "csv",
        "custom column and tag names",
    ],
)
def test_training_images_of_any_dataset_llamafactory_reads(kind, tmp_path):
    media = SAMPLE_FACES / "fairface-img-margin025-trainval"
    source = _dataset(kind, tmp_path, media)
    assert training_images(source, media) == [media / "val" / "1.jpg", media / "val" / "2.jpg"]


def test_unreadable_training_images_are_counted_not_fatal(bench, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    Image.open(FACES[0]).save(train / "good.jpg")
    (train / "broken.jpg").write_bytes(b"not an image")
    report = contamination(bench, train, cache_path=tmp_path / "c.jsonl", progress=False)
    assert report["train"]["images"] == 1 and report["train"]["unreadable"] == 1
    assert "broken.jpg" in report["train"]["unreadable_examples"][0]


def test_cli_writes_the_report_and_refuses_a_missing_training_source(bench, tmp_path):
    result = run_command(
        "python", "-m", "facellm.eval.contamination", "--benchmark-dir", str(bench),
        "--train", str(FACES[0].parent), "--out", str(tmp_path / "c.json"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["overall"]["overlapping_questions"] == 12  # the sample benchmark is made of these faces
    assert (tmp_path / "c.hashes.jsonl").is_file()
    missing = run_command(
        "python", "-m", "facellm.eval.contamination", "--benchmark-dir", str(bench), "--train",
        str(tmp_path / "nowhere"), "--out", str(tmp_path / "d.json"),
    )  # fmt: skip
    assert_one_line_error(missing, "nowhere: no such folder or dataset file")


def test_a_cache_that_is_not_a_hash_cache_is_refused_and_left_untouched(bench, tmp_path):
    cache = tmp_path / "x.json"
    cache.write_bytes(b'{"important": "data"}')  # no final newline: it must not be taken for a torn line
    with pytest.raises(FaceLLMError, match=r"x.json:1: not a ledger line"):
        contamination(bench, FACES[0].parent, cache_path=cache, progress=False)
    assert cache.read_bytes() == b'{"important": "data"}'
