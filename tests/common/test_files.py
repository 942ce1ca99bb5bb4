import json

import pytest

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json, write_json_atomic


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
