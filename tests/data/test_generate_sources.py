"""fairfacegpt.py --source: short-answer and multiple-choice items from every label source, offline, with
FairFace's runs as they were."""

import json
import shutil

import pytest

from facellm.data import items, reports
from facellm.data.generate import main
from facellm.data.sources import registry
from facellm.testing import label_sources
from tests.data.support import dataset, ledger_lines
from tests.support import SAMPLE_FACES, assert_one_line_error, run_main

SOURCES = {  # name -> (writer, split, images in that split, images the reader leaves out)
    "utkface": (lambda root: label_sources.write_utkface(root, malformed=True), "all", 12, 3),
    "celeba": (label_sources.write_celeba, "val", 2, 0),
    "rafdb": (label_sources.write_rafdb, "test", 4, 0),
    "affectnet": (label_sources.write_affectnet, "train", 9, 3),
}


DRAWN = (
    "rafdb",
    "celeba",
)  # the figures of one and two groupings; FairFace's three are drawn in test_generate


@pytest.fixture(autouse=True)
def figures(request, monkeypatch):
    """fairness.png is most of a small run's time: drawn only for the sources in DRAWN."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("name") not in DRAWN:
        monkeypatch.setattr(reports, "_plot", lambda tables, path: None)


def argv(name, root, out, *extra):
    split = SOURCES[name][1]
    return [
        "--source",
        name,
        "--root",
        str(root),
        "--split",
        split,
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def turns(record):
    return [turn["value"] for turn in record["conversations"]]


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_gives_its_label_items_through_the_command(tmp_path, capsys, name):
    writer, split, images, left_out = SOURCES[name]
    source, root, out = registry.get(name), writer(tmp_path / name), tmp_path / "out"
    result = run_main(main, argv(name, root, out, "--backend", "labels", "--items", "short,mcq"), capsys)
    assert result.returncode == 0, result.stderr
    image_root, records, skipped = registry.load(source, root, split)
    per_image = 2 * len(source.questions)
    written = dataset(out)
    assert len(written) == images * per_image and len(records) == images
    for n, record in enumerate(records):
        mine = written[n * per_image : (n + 1) * per_image]
        expected = items.for_face(record, (), ("short", "mcq"), source.questions)
        assert [turns(r)[0] for r in mine] == [f"<image>\n{item.question}" for item in expected]
        assert [turns(r)[1] for r in mine] == [
            items.label_answer(record, i.key, source.questions) for i in expected
        ]
        assert {r["images"][0] for r in mine} == {record.file} and (image_root / record.file).is_file()
    assert f"image paths are relative to {image_root}" in result.stdout
    assert sum(len(files) for files in skipped.values()) == left_out
    for reason, files in skipped.items():
        assert f"{source.title}: {len(files)} image(s) left out, {reason} (e.g. {files[0]})" in result.stdout
    run = json.loads((out / "run.json").read_text())
    assert (run["source"], run["split"], run["items"]) == (name, split, "short,mcq")
    fairness = json.loads((out / "fairness.json").read_text())
    assert list(fairness) == [grouping.name for grouping in source.groupings]
    assert sum(row["images"] for row in fairness[source.groupings[0].name]) == images
    if name in DRAWN:
        assert (out / "fairness.png").read_bytes().startswith(b"\x89PNG")


def test_a_rerun_resumes_and_writes_the_same_file(tmp_path, capsys):
    root, out = label_sources.write_rafdb(tmp_path / "raf"), tmp_path / "out"
    arguments = argv("rafdb", root, out, "--backend", "labels", "--items", "short,mcq", "--limit", "3")
    assert run_main(main, arguments, capsys).returncode == 0
    first = (out / "dataset.json").read_bytes()
    ledger = out / "ledger.jsonl"
    ledger.write_text("".join(ledger.read_text().splitlines(keepends=True)[:-2]))  # killed before the end
    result = run_main(main, arguments, capsys)
    assert result.returncode == 0 and "2 done, 0 failed, 4 already done before" in result.stdout
    assert (out / "dataset.json").read_bytes() == first


def test_any_backend_asks_no_endpoint_for_label_items(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = label_sources.write_rafdb(tmp_path / "raf")
    result = run_main(main, argv("rafdb", root, tmp_path / "out", "--items", "mcq"), capsys)
    assert result.returncode == 0, result.stderr
    entries = ledger_lines(tmp_path / "out")
    assert len(entries) == 4 and {(e["backend"], e["aspect"]) for e in entries} == {
        ("labels", "mcq:expression")
    }


def test_an_unreadable_image_fails_alone(tmp_path, capsys):
    root = label_sources.write_rafdb(tmp_path / "raf")
    (root / "Image" / "aligned" / "test_0002_aligned.jpg").write_text("not an image")
    result = run_main(
        main, argv("rafdb", root, tmp_path / "out", "--backend", "labels", "--items", "short"), capsys
    )
    assert result.returncode == 1 and "failed: 1 x unreadable image" in result.stdout
    assert [r["images"][0] for r in dataset(tmp_path / "out")] == [
        "test_0001_aligned.jpg", "test_0003_aligned.jpg", "test_0004_aligned.jpg",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--items", "short", "--split", "val"], "--split val: UTKFace has no such split (one of all)"),
     # FairFace's prompts have no {years}; a UTKFace folder's may not use CelebA's {features}
     (["--split", "all", "--prompts-dir", "CELEBA_LIKE"],
      "per_question.txt: unknown field(s) features (allowed: age,")],
)  # fmt: skip
def test_what_a_source_cannot_give_is_refused_before_any_work(tmp_path, capsys, extra, needle):
    root = label_sources.write_utkface(tmp_path / "utk")
    if "CELEBA_LIKE" in extra:
        folder = tmp_path / "prompts"
        shutil.copytree(registry.get("utkface").prompts_dir, folder)
        (folder / "per_question.txt").write_text("The person has {features}.\n\n{question}\n")
        extra = [str(folder) if word == "CELEBA_LIKE" else word for word in extra]
    arguments = [
        "--source",
        "utkface",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--backend",
        "labels",
    ]
    assert_one_line_error(run_main(main, [*arguments, *extra], capsys), needle)
    assert not (tmp_path / "out").exists()


def test_unknown_source_and_missing_root(tmp_path, capsys):
    out = tmp_path / "out"
    result = run_main(main, ["--source", "ffhq", "--out", str(out)], capsys)
    assert result.returncode == 2 and "argument --source: invalid choice: 'ffhq'" in result.stderr
    result = run_main(
        main, ["--source", "celeba", "--out", str(out), "--items", "short", "--split", "val"], capsys
    )
    assert_one_line_error(
        result, "--source celeba needs --root, the folder holding Anno/list_attr_celeba.txt"
    )
    assert not out.exists()


def test_bad_input_names_file_and_line_and_loses_nothing(tmp_path, capsys):
    root, out = label_sources.write_celeba(tmp_path / "celeba"), tmp_path / "out"
    arguments = argv("celeba", root, out, "--backend", "labels", "--items", "short")
    assert run_main(main, arguments, capsys).returncode == 0
    kept = {name: (out / name).read_bytes() for name in ("dataset.json", "ledger.jsonl", "run.json")}
    attributes = root / "Anno" / "list_attr_celeba.txt"
    lines = attributes.read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 1)[0]  # one attribute short
    attributes.write_text("\n".join(lines) + "\n")
    result = run_main(main, arguments, capsys)
    assert_one_line_error(result, f"{attributes}:6: 39 attribute values, expected 40")
    assert {name: (out / name).read_bytes() for name in kept} == kept


def test_one_folder_holds_one_source(tmp_path, capsys):
    out = tmp_path / "out"
    fairface = [
        "--fairface-root",
        str(SAMPLE_FACES),
        "--out",
        str(out),
        "--backend",
        "labels",
        "--items",
        "short",
    ]
    assert run_main(main, [*fairface, "--limit", "2", "--no-progress"], capsys).returncode == 0
    assert "source" not in json.loads((out / "run.json").read_text())  # FairFace's run.json as before
    root = label_sources.write_rafdb(tmp_path / "raf")
    result = run_main(main, argv("rafdb", root, out, "--backend", "labels", "--items", "short"), capsys)
    assert_one_line_error(result, "run.json", "other settings", "source 'fairface' -> 'rafdb'")
    # --source fairface is the default spelled out, and --root stands for --fairface-root
    again = ["--source", "fairface", "--root", str(SAMPLE_FACES), "--out", str(out), "--backend", "labels"]
    result = run_main(main, [*again, "--items", "short", "--limit", "2", "--no-progress"], capsys)
    assert result.returncode == 0 and "0 done, 0 failed, 6 already done before" in result.stdout


def test_the_split_defaults_to_fairface_val_or_the_only_one_and_is_asked_for_otherwise(tmp_path, capsys):
    utk = label_sources.write_utkface(tmp_path / "utk")
    base = ["--backend", "labels", "--items", "short", "--no-progress"]
    result = run_main(
        main, ["--source", "utkface", "--root", str(utk), "--out", str(tmp_path / "a"), *base], capsys
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "a" / "run.json").read_text())["split"] == "all"
    raf = label_sources.write_rafdb(tmp_path / "raf")
    result = run_main(
        main, ["--source", "rafdb", "--root", str(raf), "--out", str(tmp_path / "b"), *base], capsys
    )
    assert_one_line_error(result, "--source rafdb needs --split (one of train, test)")
    assert not (tmp_path / "b").exists()
