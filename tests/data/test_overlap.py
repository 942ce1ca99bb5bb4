"""FaceXBench overlap before generation (facellm.data.overlap): which benchmark files draw from each label
source, the warning without the benchmark images, and the exclusion of the source images the benchmark
shows (re-encoded or rescaled copies included), with cached hashes and one-line errors."""

import json
import random
import re
import shutil

import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.data import overlap
from facellm.data.overlap import FACEXBENCH_DRAWS, benchmark_warning, exclude_overlap, summary_line
from facellm.data.sources import registry, utkface
from facellm.eval import contamination
from facellm.testing import label_sources
from facellm.testing.sample_benchmark import build
from tests.support import SAMPLE_FACES, SHARED_FACEXBENCH

needs_shared = pytest.mark.skipif(
    not SHARED_FACEXBENCH.is_dir(), reason="real FaceXBench question files not available"
)
# record index -> (benchmark file, copy): a PNG re-encode, a JPEG at quality 80 rescaled, a JPEG shrunk; the
# third in a file that draws from another source (a face may be shown by any file)
COPIES = {
    2: ("utkface_single_mcq_age_test", "png", 200),
    7: ("utkface_multiple_mcq_race_test", "jpeg", 256),
    9: ("celeba_single_mcq", "jpeg", 160),
}


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def add_task(bench, name: str, questions: list[list[Image.Image | str]]) -> None:
    """BENCH/NAME.json in FaceXBench's schema, question n showing the images (or copying the files) given."""
    entries = {}
    for n, images in enumerate(questions, start=1):
        paths = []
        for k, image in enumerate(images, start=1):
            fmt, size = ("png", 200) if isinstance(image, Image.Image) else image[1:]
            source = image if isinstance(image, Image.Image) else Image.open(image[0]).convert("RGB")
            relative = f"images/{name}/question_{n}" + (f"_{k}" if len(images) > 1 else "") + ".png"
            (bench / relative).parent.mkdir(parents=True, exist_ok=True)
            copy = source.resize((size, size), Image.Resampling.LANCZOS)
            # FaceXBench names every image .png; the JPEG copies keep that name (Pillow reads the content)
            copy.save(bench / relative, format="PNG" if fmt == "png" else "JPEG", quality=80)
            paths.append(relative)
        entries[str(n)] = {
            "image_paths": paths, "question_text": "Which?", "options": ["a", "b"],
            "correct_answer_option": "A", "answer": "a",
        }  # fmt: skip
    header = {
        "category": "bias_fairness", "sub-category": "age", "dataset": name.split("_")[0],
        "question_type": "MCQ", "num_images": "single", "postpend_text": "Answer with a letter.",
    }  # fmt: skip
    (bench / f"{name}.json").write_text(json.dumps({**header, "questions": entries}), encoding="utf-8")


@pytest.fixture
def world(tmp_path):
    """(UTKFace image root, its records, a benchmark): the sample benchmark's unrelated faces, drawn faces
    like UTKFace's that are not UTKFace's, and copies of three UTKFace images (COPIES)."""
    root = label_sources.write_utkface(tmp_path / "utkface")
    image_root, records, _ = utkface.load_split(root, "all")
    bench = build(SAMPLE_FACES, tmp_path / "fxb", per_task=2)
    rng = random.Random("unrelated")
    drawn = [label_sources.face(index, rng, 200) for index in range(4)]
    copy = {index: (image_root / records[index].file, fmt, size) for index, (_, fmt, size) in COPIES.items()}
    add_task(bench, "utkface_single_mcq_age_test", [[drawn[0]], [copy[2]], [drawn[1]]])
    add_task(bench, "utkface_multiple_mcq_race_test", [[drawn[2], copy[7]], [drawn[3], drawn[0]]])
    add_task(bench, "celeba_single_mcq", [[drawn[1]], [copy[9]]])
    return image_root, records, bench


def run(world, tmp_path, **options):
    image_root, records, bench = world
    options.setdefault("progress", False)
    return exclude_overlap(records, image_root, "utkface", bench, tmp_path / "cache.jsonl", **options)


# the table


def test_table_names_registered_sources_and_known_splits():
    assert set(FACEXBENCH_DRAWS) <= set(registry.SOURCES)
    assert FACEXBENCH_DRAWS["celeba"].prefixes == ("celeba_", "celebamaskhq_")
    assert FACEXBENCH_DRAWS["rafdb"].split == "train"
    for name, draw in FACEXBENCH_DRAWS.items():
        assert draw.split is None or draw.split in registry.SOURCES[name].splits


@needs_shared
def test_table_agrees_with_the_dataset_field_of_the_real_question_files():
    datasets = {"fairface": {"fairface"}, "utkface": {"utkface"}, "celeba": {"celeba", "celebamaskhq"},
                "rafdb": {"rafdb"}, "affectnet": {"affectnet"}}  # fmt: skip
    names = sorted(path.stem for path in SHARED_FACEXBENCH.glob("*.json"))
    for source in FACEXBENCH_DRAWS:
        drawing = overlap.drawing_files(source, names)
        by_field = [
            name
            for name in names
            if json.loads((SHARED_FACEXBENCH / f"{name}.json").read_text())["dataset"] in datasets[source]
        ]
        assert drawing == by_field and drawing, source
    assert overlap.drawing_files("rafdb", names) == ["rafdb_multiple_mcq_train", "rafdb_single_mcq_train"]


# the warning without the benchmark images


def test_rafdb_warns_for_train_only():
    warning = benchmark_warning("rafdb", "train")
    assert warning.startswith("warning: FaceXBench shows RAF-DB train images, the split generated here")
    assert "rafdb_* question files" in warning and "--exclude-benchmark DIR" in warning
    assert "\n" not in warning
    assert benchmark_warning("rafdb", "test") is None


def test_celeba_warns_naming_both_prefixes_for_every_split():
    for split in ("train", "val", "test"):
        warning = benchmark_warning("celeba", split)
        assert "celeba_* and celebamaskhq_* question files" in warning, warning
        assert f"the {split} split may hold them" in warning and "--exclude-benchmark DIR" in warning


def test_other_sources_warn_and_undrawn_ones_do_not():
    assert "UTKFace images, and UTKFace has no split that leaves them out" in benchmark_warning(
        "utkface", "all"
    )
    assert "fairface_*" in benchmark_warning("fairface", "val")
    assert "affectnet_*" in benchmark_warning("affectnet", "train")
    assert benchmark_warning("lfw", "test") is None


def test_warning_names_the_files_of_a_benchmark_folder(world, tmp_path):
    bench = world[2]
    warning = benchmark_warning("utkface", "all", bench)
    assert f"utkface_multiple_mcq_race_test.json, utkface_single_mcq_age_test.json in {bench};" in warning
    assert "celeba_single_mcq" not in warning and "sample_" not in warning
    assert "celeba_single_mcq.json in" in benchmark_warning("celeba", "train", bench)
    # a folder without such files, or none at all: the prefixes
    assert "rafdb_* question files" in benchmark_warning("rafdb", "train", bench)
    assert "utkface_* question files" in benchmark_warning("utkface", "all", tmp_path / "absent")


@needs_shared
def test_warning_names_the_real_files():
    warning = benchmark_warning("celeba", "val", SHARED_FACEXBENCH)
    for name in ("celeba_multiple_mcq", "celeba_single_mcq", "celebamaskhq_single_mcq_test",
                 "celebamaskhq_single_mcq_val"):  # fmt: skip
        assert f"{name}.json" in warning
    assert "celebdf" not in warning
    rafdb = benchmark_warning("rafdb", "train", SHARED_FACEXBENCH)
    assert f"rafdb_multiple_mcq_train.json, rafdb_single_mcq_train.json in {SHARED_FACEXBENCH};" in rafdb


# the exclusion


def test_copies_are_excluded_and_the_rest_keep_their_order(world, tmp_path):
    records = world[1]
    kept, report = run(world, tmp_path)
    assert kept == [record for index, record in enumerate(records) if index not in COPIES]
    assert report["checked"] == len(records) == 12 and report["excluded"] == 3 and report["unreadable"] == 0
    assert report["by_benchmark_file"] == {name: 1 for name, _, _ in COPIES.values()}
    assert report["benchmark_images"] == 2 + 2 + 2 * 3 + 3 + 4 + 2  # sample benchmark + the three added
    assert report["thresholds"] == {
        "phash": contamination.PHASH_THRESHOLD, "dhash": contamination.DHASH_THRESHOLD, "bits": 256,
    }  # fmt: skip
    assert [(e["file"], e["benchmark_file"]) for e in report["examples"]] == [
        (records[index].file, name) for index, (name, _, _) in COPIES.items()
    ]
    first = report["examples"][0]
    assert first["benchmark_image"] == "images/utkface_single_mcq_age_test/question_2.png"
    assert first["phash"] == first["dhash"] == 0  # a PNG at the same size: the same pixels
    assert (
        report["examples"][1]["benchmark_image"] == "images/utkface_multiple_mcq_race_test/question_1_2.png"
    )
    assert 0 < report["examples"][1]["phash"] <= contamination.PHASH_THRESHOLD


def test_tight_thresholds_keep_the_altered_copies(world, tmp_path):
    kept, report = run(world, tmp_path, phash_threshold=0, dhash_threshold=0)
    assert report["excluded"] == 1 and report["by_benchmark_file"] == {"utkface_single_mcq_age_test": 1}
    assert len(kept) == 11


def test_rerun_hashes_only_what_is_new(world, tmp_path, monkeypatch):
    hashed = []
    original = contamination.image_hashes
    monkeypatch.setattr(contamination, "image_hashes", lambda path: hashed.append(path) or original(path))
    first = run(world, tmp_path)
    assert len(hashed) == 19 + 12
    hashed.clear()
    assert run(world, tmp_path) == first and hashed == []
    image_root, records, _ = world
    changed = image_root / records[0].file
    Image.open(changed).convert("RGB").rotate(90).save(changed, format="JPEG", quality=90)
    assert run(world, tmp_path) == first and hashed == [changed]


def test_unreadable_images_are_kept_and_counted(world, tmp_path):
    image_root, records, _ = world
    (image_root / records[0].file).write_bytes(b"not a JPEG")
    (image_root / records[1].file).unlink()
    kept, report = run(world, tmp_path)
    assert kept[:2] == records[:2] and len(kept) == 12 - 3
    assert report["unreadable"] == 2 and report["checked"] == 10 and report["excluded"] == 3
    assert records[0].file in report["unreadable_examples"][0]
    assert records[1].file in report["unreadable_examples"][1]


def test_progress_goes_to_stderr(world, tmp_path, capsys):
    run(world, tmp_path, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "FaceXBench images" in err and "UTKFace images" in err
    assert "comparing" not in err  # one slice: no bar for the comparison


def test_records_are_compared_in_slices(world, tmp_path, monkeypatch, capsys):
    whole = run(world, tmp_path)
    monkeypatch.setattr(overlap, "SLICE", 5)
    assert run(world, tmp_path, progress=True) == whole
    assert "comparing with FaceXBench: 100%" in capsys.readouterr().err


def test_summary_line(world, tmp_path):
    _, report = run(world, tmp_path)
    line = summary_line(report, "UTKFace")
    assert line == (
        "FaceXBench overlap: 3 of 12 UTKFace images left out as near-copies of benchmark images (19 "
        f"FaceXBench images of {world[2]} compared, pHash <= 24, dHash <= 28): celeba_single_mcq 1, "
        "utkface_multiple_mcq_race_test 1, utkface_single_mcq_age_test 1"
    )
    clean = {**report, "excluded": 0, "by_benchmark_file": {}, "unreadable": 1,
             "unreadable_examples": ["x.jpg: not an image"]}  # fmt: skip
    assert summary_line(clean, "UTKFace") == (
        f"FaceXBench overlap: none of 12 UTKFace images is a copy (19 FaceXBench images of {world[2]} "
        "compared, pHash <= 24, dHash <= 28); 1 unreadable, not checked (e.g. x.jpg: not an image)"
    )


# refusals: one line naming the path


def test_missing_benchmark_folder(world, tmp_path):
    image_root, records, _ = world
    absent = tmp_path / "no-benchmark"
    with pytest.raises(FaceLLMError) as error:
        exclude_overlap(records, image_root, "utkface", absent, tmp_path / "cache.jsonl", progress=False)
    assert one_line(error).startswith(f"{absent}: ")


def test_question_files_without_images(world, tmp_path):
    bench = world[2]
    shutil.rmtree(bench / "images")
    with pytest.raises(FaceLLMError) as error:
        run(world, tmp_path)
    text = one_line(error)
    assert text.startswith(f"{bench}: FaceXBench question files but none of their images")
    assert "images/<file>/question_<n>[_<k>].png" in text


def test_some_images_missing(world, tmp_path):
    bench = world[2]
    (bench / "images/celeba_single_mcq/question_2.png").unlink()
    with pytest.raises(FaceLLMError) as error:
        run(world, tmp_path)
    text = one_line(error)
    assert text.startswith(f"{bench}: the images of 1 of 13 questions are missing")
    assert "celeba_single_mcq.json: question 2: image images/celeba_single_mcq/question_2.png" in text


def test_unreadable_benchmark_image(world, tmp_path):
    broken = world[2] / "images/utkface_single_mcq_age_test/question_1.png"
    broken.write_bytes(b"\x89PNG broken")
    with pytest.raises(FaceLLMError) as error:
        run(world, tmp_path)
    assert str(broken) in one_line(error)


def test_unknown_source(world, tmp_path):
    image_root, records, bench = world
    with pytest.raises(FaceLLMError, match=re.escape("unknown source 'lfw'")):
        exclude_overlap(records, image_root, "lfw", bench, tmp_path / "cache.jsonl", progress=False)


@needs_shared
def test_real_question_files_without_images(world, tmp_path):
    image_root, records, _ = world
    with pytest.raises(FaceLLMError) as error:
        exclude_overlap(
            records, image_root, "utkface", SHARED_FACEXBENCH, tmp_path / "c.jsonl", progress=False
        )
    assert one_line(error).startswith(
        f"{SHARED_FACEXBENCH}: FaceXBench question files but none of their images"
    )


# through fairfacegpt.py


def test_the_command_leaves_benchmark_images_out_before_any_request(world, tmp_path, capsys, monkeypatch):
    from facellm.data import reports
    from facellm.data.generate import main
    from facellm.testing.local_endpoint import LocalEndpoint
    from tests.data.support import API_KEY, dataset, ledger_lines
    from tests.support import run_main

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setattr(reports, "_plot", lambda tables, path: None)
    image_root, records, bench = world
    out = tmp_path / "out"
    arguments = ["--source", "utkface", "--root", str(image_root), "--split", "all", "--out", str(out),
                 "--no-progress", "--items", "open,short", "--limit", "8"]  # fmt: skip
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        exclude = ["--base-url", endpoint.base_url, "--exclude-benchmark", str(bench)]
        result = run_main(main, [*arguments, *exclude], capsys)
        asked = len(endpoint.chat_requests())
    assert result.returncode == 0, result.stderr
    assert "FaceXBench overlap: 3 of 12 UTKFace images left out" in result.stdout
    copied = {records[index].file for index in COPIES}
    kept = [r.file for r in records if r.file not in copied][:8]  # --limit counts the images kept
    aspects = len(registry.get("utkface").prompts().aspects)
    assert asked == 8 * aspects  # no request about a benchmark image
    assert sorted({r["images"][0] for r in dataset(out)}) == sorted(kept)
    assert not copied & {line["image"] for line in ledger_lines(out)}
    report = json.loads((out / overlap.REPORT).read_text())
    assert report["excluded"] == 3 and sum(report["by_benchmark_file"].values()) == 3
    # resumed without the flag: refused, the excluded images would come back
    again = run_main(main, [*arguments, "--backend", "labels"], capsys)
    assert again.returncode == 2 and "exclude_benchmark" in again.stderr and "Traceback" not in again.stderr


def test_the_command_warns_without_the_benchmark_and_refuses_a_missing_one(tmp_path, capsys):
    from facellm.data.generate import main
    from tests.support import run_main

    root = label_sources.write_rafdb(tmp_path / "raf")
    base = [
        "--source",
        "rafdb",
        "--root",
        str(root),
        "--backend",
        "labels",
        "--items",
        "short",
        "--no-progress",
    ]
    result = run_main(main, [*base, "--split", "train", "--out", str(tmp_path / "a")], capsys)
    assert result.returncode == 0 and "warning: FaceXBench shows RAF-DB train images" in result.stderr
    result = run_main(main, [*base, "--split", "test", "--out", str(tmp_path / "b")], capsys)
    assert result.returncode == 0 and "FaceXBench" not in result.stderr
    missing = tmp_path / "nowhere"
    result = run_main(main, [*base, "--split", "train", "--out", str(tmp_path / "c"),
                             "--exclude-benchmark", str(missing)], capsys)  # fmt: skip
    assert result.returncode == 2 and str(missing) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "c" / "ledger.jsonl").exists()
