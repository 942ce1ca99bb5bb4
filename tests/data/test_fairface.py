import pytest

from facellm.common.cli import FaceLLMError
from facellm.data.fairface import (
    AGE_BINS,
    GENDERS,
    RACES,
    find_image_root,
    load_split,
    read_labels,
    resolve_inside,
)
from tests.support import SAMPLE_FACES


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_vocabularies_match_fairface():
    assert len(AGE_BINS) == 9 and AGE_BINS[-1] == "more than 70"
    assert GENDERS == ("Male", "Female")
    assert len(RACES) == 7 and "Latino_Hispanic" in RACES


def test_reads_the_bundled_sample():
    image_root, records = load_split(SAMPLE_FACES, "val")
    assert image_root.name == "fairface-img-margin025-trainval"
    assert len(records) == 16
    assert all((image_root / r.file).is_file() for r in records)


def test_accepts_the_alternative_image_folder_name(tmp_path):
    (tmp_path / "fairface_img_margin025").mkdir()
    assert find_image_root(tmp_path).name == "fairface_img_margin025"


def test_missing_csv_names_the_file(tmp_path):
    with pytest.raises(FaceLLMError, match=r"fairface_label_val\.csv: labels CSV not found"):
        read_labels(tmp_path / "fairface_label_val.csv")


def test_csv_without_fairface_columns(tmp_path):
    path = write_csv(tmp_path / "labels.csv", "name,label\na.jpg,x\n")
    with pytest.raises(
        FaceLLMError, match=r"labels.csv: not a FairFace labels CSV, missing column\(s\) file, age"
    ):
        read_labels(path)


def test_label_outside_vocabulary_names_the_line(tmp_path):
    path = write_csv(
        tmp_path / "labels.csv",
        "file,age,gender,race,service_test\nval/1.jpg,20-29,Male,White,True\nval/2.jpg,25,Male,White,True\n",
    )
    with pytest.raises(FaceLLMError, match=r"labels.csv:3: age '25' is not a FairFace label"):
        read_labels(path)


def test_empty_csv(tmp_path):
    path = write_csv(tmp_path / "labels.csv", "file,age,gender,race,service_test\n")
    with pytest.raises(FaceLLMError, match="has no rows"):
        read_labels(path)


def test_missing_root_and_missing_image_folder(tmp_path):
    with pytest.raises(FaceLLMError, match="FairFace root folder does not exist"):
        find_image_root(tmp_path / "nowhere")
    with pytest.raises(FaceLLMError, match="no image folder found"):
        find_image_root(tmp_path)


@pytest.mark.parametrize("bad", ["../secret.jpg", "val/../../secret.jpg", "/etc/passwd", "..", "val/\0.jpg"])
def test_paths_never_escape_their_root(tmp_path, bad):
    with pytest.raises(FaceLLMError, match=r"escapes its root|NUL byte"):
        resolve_inside(tmp_path, bad, "labels.csv")


def test_paths_inside_the_root_resolve(tmp_path):
    assert resolve_inside(tmp_path, "val/./1.jpg", "x") == tmp_path.absolute() / "val" / "1.jpg"


def test_symlinked_images_inside_the_root_are_accepted(tmp_path):
    """Symlink farms (DVC, git-annex, hub caches) point outside the root; the path as written is inside."""
    outside = tmp_path / "store" / "blob.jpg"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    (tmp_path / "root" / "val").mkdir(parents=True)
    (tmp_path / "root" / "val" / "1.jpg").symlink_to(outside)
    assert resolve_inside(tmp_path / "root", "val/1.jpg", "x").read_bytes() == b"x"


def test_csv_exported_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "\ufefffile,age,gender,race,service_test\nval/1.jpg,3-9,Female,Indian,True\n", encoding="utf-8"
    )
    assert read_labels(path)[0].race == "Indian"


def test_csv_with_escaping_path_is_refused(tmp_path):
    (tmp_path / "fairface-img-margin025-trainval").mkdir()
    write_csv(
        tmp_path / "fairface_label_val.csv",
        "file,age,gender,race,service_test\n../../x.jpg,20-29,Male,White,True\n",
    )
    with pytest.raises(FaceLLMError, match="escapes its root"):
        load_split(tmp_path, "val")
