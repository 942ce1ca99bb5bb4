"""The one dataset reader: what LLaMA-Factory accepts is read as its converter sees it, in any format."""

import json

import pytest

from facellm.common.cli import FaceLLMError
from facellm.common.datasets import open_datasets, registration
from facellm.common.sharegpt import dataset_info_entry
from tests.support import SAMPLE_FACES

MEDIA = SAMPLE_FACES / "fairface-img-margin025-trainval"


def chat(question="<image>\nHow old?", answer="About thirty.", images=("val/1.jpg",)):
    return {
        "conversations": [{"from": "human", "value": question}, {"from": "assistant", "value": answer}],
        "images": images if isinstance(images, str) else list(images),
    }


def registered(folder, entry, name="faces"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps({name: entry}))
    return folder


def read(folder, names="faces", media=MEDIA):
    return [(d.name, r) for d in open_datasets(folder, names, media) for r in d.records()]


def test_a_single_string_image_and_an_absolute_path_are_images(tmp_path):
    absolute = str(MEDIA / "val" / "2.jpg")
    (tmp_path / "d.json").write_text(json.dumps([chat(images="val/1.jpg"), chat(images="")]))
    (tmp_path / "e.json").write_text(json.dumps([chat(images=[absolute]), chat(images=["../x.jpg"])]))
    registered(tmp_path, dataset_info_entry("d.json"))
    (one, _), (empty, _) = [(r.images, r.image_tags) for _, r in read(tmp_path)]
    assert [(m.written, m.path) for m in one] == [("val/1.jpg", str(MEDIA / "val" / "1.jpg"))]
    assert [m.written for m in empty] == [""]  # LLaMA-Factory takes "" for one image, not for none
    registered(tmp_path, dataset_info_entry("e.json"))
    absolute_record, escaping = (r for _, r in read(tmp_path))
    assert absolute_record.images[0].path == absolute and not absolute_record.images[0].escapes
    assert escaping.images[0].escapes and escaping.images[0].path == "../x.jpg"  # not there: as written


def test_observation_and_function_call_turns_are_a_conversation(tmp_path):
    turns = [
        ("human", "<image>\nWho is it?"), ("function_call", '{"name": "face_id"}'),
        ("observation", '{"id": 7}'), ("gpt", "Person 7."),
    ]  # fmt: skip
    record = {"conversations": [{"from": f, "value": v} for f, v in turns], "images": ["val/1.jpg"]}
    (tmp_path / "d.json").write_text(json.dumps([record]))
    # LLaMA-Factory's default tags (an entry with "tags" sets those it leaves out to none, so does "columns")
    columns = {"messages": "conversations", "images": "images"}
    registered(tmp_path, {"file_name": "d.json", "formatting": "sharegpt", "columns": columns})
    [(_, read_back)] = read(tmp_path)
    assert read_back.skipped is None and read_back.failure is None
    assert [m["role"] for m in read_back.messages] == ["user", "function", "observation", "assistant"]
    assert read_back.image_tags == 1


def test_a_folder_of_json_files_is_one_dataset(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.json").write_text(json.dumps([chat(), chat(images=["val/2.jpg"])]))
    (tmp_path / "parts" / "b.json").write_text(json.dumps([chat(images=["val/3.jpg"])]))
    registered(tmp_path, dataset_info_entry("parts"))
    [dataset] = open_datasets(tmp_path, "faces", MEDIA)
    assert len(dataset) == 3 and dataset.path == tmp_path / "parts"
    records = list(dataset.records())
    assert [r.index for r in records] == [0, 1, 2]
    assert sorted(r.images[0].written for r in records) == ["val/1.jpg", "val/2.jpg", "val/3.jpg"]


def test_csv_and_parquet_files_are_datasets(tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    (tmp_path / "q.csv").write_text("instruction,output,images\n<image>How old?,Thirty.,val/4.jpg\n")
    pandas.DataFrame([chat(images=["val/5.jpg"])]).to_parquet(tmp_path / "c.parquet")
    alpaca = {
        "file_name": "q.csv",
        "columns": {"prompt": "instruction", "response": "output", "images": "images"},
    }
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"csv": alpaca, "parquet": {**dataset_info_entry("c.parquet")}})
    )
    (_, csv), (_, parquet) = read(tmp_path, "csv,parquet")
    assert csv.messages == [
        {"role": "user", "content": "<image>How old?"},
        {"role": "assistant", "content": "Thirty."},
    ]
    assert csv.images[0].path == str(MEDIA / "val" / "4.jpg") and csv.skipped is None
    assert (
        parquet.images[0].path == str(MEDIA / "val" / "5.jpg")
        and parquet.messages[1]["content"] == "About thirty."
    )


def test_alpaca_formatting_with_an_images_column(tmp_path):
    rows = [
        {
            "instruction": "<image>\nDescribe.",
            "input": "Briefly.",
            "output": "A face.",
            "images": ["val/6.jpg"],
        }
    ]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    # alpaca is the default formatting; an entry with "columns" sets those it leaves out to none
    columns = {"prompt": "instruction", "query": "input", "response": "output", "images": "images"}
    registered(tmp_path, {"file_name": "a.json", "columns": columns})
    [(_, record)] = read(tmp_path)
    assert record.messages == [
        {"role": "user", "content": "<image>\nDescribe.\nBriefly."},
        {"role": "assistant", "content": "A face."},
    ]
    assert record.image_tags == 1 and record.images[0].path == str(MEDIA / "val" / "6.jpg")


def test_custom_column_and_tag_names(tmp_path):
    rows = [
        {
            "chat": [
                {"role": "sys", "content": "Be brief."},
                {"role": "user", "content": "<image>\nAge?"},
                {"role": "assistant", "content": "Thirty."},
            ],
            "pictures": "val/7.jpg",
        }
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(map(json.dumps, rows)))
    entry = {
        "file_name": "c.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "chat", "images": "pictures"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "sys"},
    }  # fmt: skip
    registered(tmp_path, entry)
    [(_, record)] = read(tmp_path)
    assert record.converted["_system"] == "Be brief." and record.skipped is None
    assert [m["role"] for m in record.messages] == ["user", "assistant"]
    assert record.images[0].path == str(MEDIA / "val" / "7.jpg")


def test_records_llamafactory_would_skip_or_fail_on_say_why(tmp_path, capfd):
    rows = [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "a"}]},
        {"conversations": []},
        {"conversations": None},
    ]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    registered(tmp_path, {"file_name": "d.json", "formatting": "sharegpt"})
    records = [r for _, r in read(tmp_path)]
    assert records[0].skipped == "invalid role tag (turns: 'human', 'human')"
    assert records[1].skipped == "invalid message count (turns: 'human')"
    assert records[2].skipped == "no conversation"
    assert records[3].failure.startswith("TypeError")
    registered(tmp_path, {"file_name": "d.json", "formatting": "sharegpt", "columns": {"images": "images"}})
    assert read(tmp_path)[0][1].failure == "KeyError: None (a column or tag the entry leaves unset)"
    assert "llamafactory" not in capfd.readouterr().out.lower()  # its warnings are kept, not printed


def test_registry_and_file_errors_name_the_file(tmp_path, capfd):
    with pytest.raises(FaceLLMError, match=r"dataset_info\.json: dataset registry not found"):
        open_datasets(tmp_path, "faces")
    registered(tmp_path, {"file_name": "missing.json"})
    with pytest.raises(FaceLLMError, match=r"no dataset named 'other' \(known: 'faces'\)"):
        open_datasets(tmp_path, "other")
    with pytest.raises(FaceLLMError, match=r"missing\.json: data file of dataset 'faces' not found"):
        open_datasets(tmp_path, "faces")
    cases = {
        "d.yaml": "not a type of data file LLaMA-Factory reads",
        "bad.json": r"bad\.json: dataset 'faces' not readable as json",
        "empty.jsonl": r"empty\.jsonl: dataset 'faces' holds no records",
        "mixed": r"mixed: dataset 'faces' mixes file types \(csv, json\)",
    }
    (tmp_path / "d.yaml").write_text("a: 1\n")
    (tmp_path / "bad.json").write_text('[{"a": ')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.json").write_text("[]")
    (tmp_path / "mixed" / "b.csv").write_text("a\n1\n")
    for file_name, message in cases.items():
        registered(tmp_path, {"file_name": file_name})
        with pytest.raises(FaceLLMError, match=message) as error:
            open_datasets(tmp_path, "faces")
        assert "\n" not in str(error.value)
    assert capfd.readouterr().err == ""  # the loader's own error log is not printed besides


def test_a_hub_dataset_is_not_local(tmp_path):
    registered(tmp_path, {"hf_hub_url": "someone/faces"})
    [dataset] = open_datasets(tmp_path, "faces")
    assert not dataset.local and len(dataset) == 0


def test_registration_finds_the_entry_of_a_file_or_folder(tmp_path):
    (tmp_path / "sub" / "parts").mkdir(parents=True)
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"a": {"file_name": "sub/a.json"}, "p": {"file_name": "sub/parts"}, "x": "odd"})
    )
    assert registration(tmp_path / "sub" / "a.json") == (tmp_path.resolve(), "a")
    assert registration(tmp_path / "sub" / "parts") == (tmp_path.resolve(), "p")
    assert registration(tmp_path / "sub" / "b.json") is None
