"""python -m facellm.testing.label_sources: each source's official layout, written where asked and nowhere
else."""

import pytest

from facellm.data.sources import registry
from facellm.testing.label_sources import WRITERS, main
from tests.support import assert_one_line_error, run_main


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_copy_is_read_back_by_its_reader(tmp_path, capsys, name):
    result = run_main(main, [name, "--out", str(tmp_path / name)], capsys)
    assert result.returncode == 0 and f"{name}: written to" in result.stdout
    source = registry.get(name)
    for split in source.splits:
        image_root, records, _ = registry.load(source, tmp_path / name, split)
        assert records and all((image_root / record.file).is_file() for record in records)


def test_a_folder_that_holds_something_is_refused(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert_one_line_error(
        run_main(main, ["rafdb", "--out", str(tmp_path / "taken")], capsys), "not an empty folder"
    )
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
