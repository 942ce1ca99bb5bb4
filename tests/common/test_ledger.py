import json

import pytest

from facellm.common.cli import FaceLLMError
from facellm.common.ledger import Ledger


def entry(image, aspect, status="done", answer="text"):
    return {"image": image, "aspect": aspect, "status": status, "answer": answer}


def test_entries_survive_reopening(tmp_path):
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        ledger.append(entry("val/1.jpg", "a"))
        ledger.append(entry("val/1.jpg", "b", "failed"))
    reopened = Ledger(path)
    assert reopened.is_done("val/1.jpg", "a") and reopened.status("val/1.jpg", "b") == "failed"
    assert reopened.get("val/2.jpg", "a") is None
    reopened.close()


def test_torn_last_line_is_dropped_and_appends_start_clean(tmp_path):
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        ledger.append(entry("val/1.jpg", "a"))
    with path.open("a") as handle:
        handle.write('{"image": "val/1.jpg", "aspect": "b", "sta')
    with Ledger(path) as ledger:
        assert ledger.torn_lines == 1 and ledger.status("val/1.jpg", "b") is None
        ledger.append(entry("val/1.jpg", "b"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["aspect"] for line in lines] == ["a", "b"]


def test_done_is_final_and_never_duplicated(tmp_path):
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        ledger.append(entry("val/1.jpg", "a", "failed"))
        ledger.append(entry("val/1.jpg", "a", "done", "first"))
        ledger.append(entry("val/1.jpg", "a", "done", "second"))
        ledger.append(entry("val/1.jpg", "a", "failed"))
    assert len(path.read_text().splitlines()) == 2
    with Ledger(path) as ledger:
        assert ledger.get("val/1.jpg", "a")["answer"] == "first"


def test_a_damaged_line_in_the_middle_is_named(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"image": "x", "aspect": "a", "status": "done"}\nnot json\n{"image": "y"}\n')
    with pytest.raises(FaceLLMError, match=r"ledger.jsonl:2: not a ledger line"):
        Ledger(path)


def test_a_file_that_is_not_a_ledger_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"image": "a.jpg"}\n{"image": "b.jpg"}')  # no trailing newline: looks torn
    before = path.read_bytes()
    with pytest.raises(FaceLLMError, match="not a ledger line"):
        Ledger(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b'{"important": "data"}', b"1.jpg", b"\n\n{", b'{"image": "a.jpg", "aspect": "x", "status": "done"}'],
    ids=["json-document", "one-line-list", "blank-lines-then-fragment", "lone-line-without-newline"],
)
def test_a_file_without_any_complete_ledger_line_is_refused_byte_for_byte(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(FaceLLMError, match=r"x.json:\d+: not a ledger line"):
        Ledger(path)
    assert path.read_bytes() == content
    Ledger(tmp_path / "other.jsonl").close()  # the refused file's lock was released with its handle
    with pytest.raises(FaceLLMError):
        Ledger(path)  # refusing twice: still nothing written
    assert path.read_bytes() == content
