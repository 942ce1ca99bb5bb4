import json
import shutil

from facellm.fairfacegpt import generate
from tests.conftest import SAMPLE_FACES, assert_one_line_error, run_command


def test_labels_backend_writes_eight_pairs_per_image(tmp_path):
    dataset = generate(SAMPLE_FACES, "val", tmp_path / "out", limit=3, backend="labels")
    records = json.loads(dataset.read_text())
    assert len(records) == 3 * 8
    assert {r["images"][0] for r in records} == {"val/1.jpg", "val/2.jpg", "val/3.jpg"}
    assert (
        json.loads((tmp_path / "out" / "dataset_info.json").read_text())["fairfacegpt"]["file_name"]
        == "dataset.json"
    )


def test_missing_labels_csv(tmp_path):
    (tmp_path / "fairface-img-margin025-trainval").mkdir()
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "fairface_label_val.csv", "not found")


def test_image_folder_that_does_not_exist(tmp_path):
    shutil.copy(SAMPLE_FACES / "fairface_label_val.csv", tmp_path)
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, str(tmp_path), "no image folder")


def test_csv_without_the_fairface_columns(tmp_path):
    (tmp_path / "fairface-img-margin025-trainval").mkdir()
    (tmp_path / "fairface_label_val.csv").write_text("path,label\nx.jpg,1\n")
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "fairface_label_val.csv", "missing column")


def test_missing_image_fails_before_writing_and_keeps_previous_output(tmp_path):
    root = tmp_path / "ff"
    shutil.copytree(SAMPLE_FACES, root)
    out = tmp_path / "o"
    generate(root, "val", out, limit=None, backend="labels")
    before = (out / "dataset.json").read_text()
    (root / "fairface-img-margin025-trainval" / "val" / "5.jpg").unlink()
    result = run_command("python", "fairfacegpt.py", "--fairface-root", str(root), "--out", str(out))
    assert_one_line_error(result, "missing", "val/5.jpg")
    assert (out / "dataset.json").read_text() == before


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    result = run_command(
        "python", "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(tmp_path / "out")
    )
    assert_one_line_error(result, str(tmp_path / "out"))


def test_corrupt_registry_in_out_is_named_and_dataset_kept(tmp_path):
    out = tmp_path / "o"
    generate(SAMPLE_FACES, "val", out, limit=1, backend="labels")
    before = (out / "dataset.json").read_text()
    (out / "dataset_info.json").write_text("{torn")
    result = run_command("python", "fairfacegpt.py", "--fairface-root", str(SAMPLE_FACES), "--out", str(out))
    assert_one_line_error(result, "dataset_info.json", "corrupt JSON")
    assert (out / "dataset.json").read_text() == before
