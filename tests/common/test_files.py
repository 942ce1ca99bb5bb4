import json

import pytest

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json, resolve_inside, write_json_atomic


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    write_json_atomic(tmp_path / "x.json", {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"a": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_written_files_are_readable_by_others_under_the_usual_umask(tmp_path):
    write_json_atomic(tmp_path / "x.json", {})
    assert (tmp_path / "x.json").stat().st_mode & 0o044


def test_corrupt_json_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{torn")
    with pytest.raises(FaceLLMError, match=r"x\.json: corrupt JSON"):
        read_json(tmp_path / "x.json")


def test_absolute_paths_inside_the_root_are_accepted(tmp_path):
    """A list made by `find $PWD ...` holds absolute paths; inside the root they are the relative ones."""
    root = tmp_path / "root"
    (root / "val").mkdir(parents=True)
    expected = root.absolute() / "val" / "1.jpg"
    assert resolve_inside(root, str(expected), "x") == expected
    assert resolve_inside(root, f"{root.absolute()}/val/../val/./1.jpg", "x") == expected
    assert resolve_inside(root, str(root.absolute()), "x") == root.absolute()


@pytest.mark.parametrize(
    "written", ["{tmp}/other.jpg", "{root}/../other.jpg", "{root}kit/1.jpg", "/etc/passwd"]
)
def test_absolute_paths_outside_the_root_are_refused_naming_path_and_root(tmp_path, written):
    root = tmp_path / "root"
    root.mkdir()
    written = written.format(tmp=tmp_path, root=root)
    with pytest.raises(FaceLLMError) as error:
        resolve_inside(root, written, "list.txt:3")
    assert str(error.value) == f"list.txt:3: path {written!r} escapes its root folder {root.absolute()}"


def test_absolute_paths_through_symlinked_folders(tmp_path):
    """A root spelt through a symlinked folder ($PWD beside os.getcwd()) is still the root; a symlinked
    folder outside the root that does not lead into it is caught, as are `..` steps through a symlink."""
    root = tmp_path / "faces"
    (root / "val").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "away").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert resolve_inside(root, f"{tmp_path}/alias/val/1.jpg", "x") == root.absolute() / "val" / "1.jpg"
    for outside in (
        f"{tmp_path}/away/1.jpg",
        f"{tmp_path}/alias/../1.jpg",
        f"{tmp_path}/alias/../away/1.jpg",
    ):
        with pytest.raises(FaceLLMError, match="escapes its root folder"):
            resolve_inside(root, outside, "x")
    with pytest.raises(FaceLLMError, match="escapes its root folder"):  # relative paths: as before
        resolve_inside(root, "val/../../faces/../1.jpg", "x")
