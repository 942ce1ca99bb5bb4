"""Preflight: each planted defect of a dataset is reported with its record index, before any model loads."""

import json
import re
import shutil
from pathlib import Path

import pytest

from facellm.common.cli import FaceLLMError
from facellm.common.sharegpt import dataset_info_entry
from facellm.train import preflight
from facellm.train.preflight import check_dataset, run_preflight
from tests.support import REPO, SAMPLE_FACES, assert_one_line_error, run_main

IMAGES = SAMPLE_FACES / "fairface-img-margin025-trainval"


def turn(who, text):
    return {"from": who, "value": text}


def sample(question="<image>\nHow old is this person?", answer="About thirty.", images=("val/1.jpg",)):
    return {"conversations": [turn("human", question), turn("assistant", answer)], "images": list(images)}


PLANTED = [
    (sample(), None),
    (sample(images=["val/no_such.jpg"]), "missing image"),
    (sample(images=["../outside.jpg"]), "image path"),
    (sample(images=["val/corrupt.jpg"]), "bad image"),
    (sample(question="<image><image>\nCompare."), "image tags"),
    (
        {"conversations": [turn("human", "<image>\nHi"), turn("human", "again")], "images": ["val/1.jpg"]},
        "roles",
    ),
    (sample(answer="   "), "empty turn"),
    ({"conversations": [turn("human", "<image>\nHi")], "images": ["val/1.jpg"]}, "roles"),
    (sample(answer="word " * 600), None),  # too long for cutoff_len 512: reported as truncated, not an error
]


@pytest.fixture
def dataset(tmp_path):
    media = tmp_path / "media"
    shutil.copytree(IMAGES, media)
    (media / "val" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps([record for record, _ in PLANTED]))
    (data / "dataset_info.json").write_text(json.dumps({"faces": dataset_info_entry("dataset.json")}))
    return {"dataset_dir": str(data), "dataset": "faces", "media_dir": str(media), "cutoff_len": 512}


def test_each_planted_defect_is_reported_at_its_record(dataset, tiny_model):
    report = check_dataset({**dataset, "model_name_or_path": str(tiny_model)}, progress=False)
    found = {(p.index, p.kind) for p in report.problems}
    expected = {(index, kind) for index, (_, kind) in enumerate(PLANTED) if kind}
    assert found == expected
    assert report.records == len(PLANTED)
    # the over-long record is the one that would be truncated; the rest fit
    assert report.truncated == 1 and max(report.lengths) > 512 > sorted(report.lengths)[-2]


def test_a_clean_dataset_passes_and_counts_tokens(dataset, tiny_model):
    data = dataset["dataset_dir"]
    records = [sample(images=[f"val/{n}.jpg"]) for n in (1, 10, 11)]
    (tmp := Path(data) / "dataset.json").write_text(json.dumps(records))
    report = check_dataset({**dataset, "model_name_or_path": str(tiny_model)}, progress=False)
    assert tmp.is_file() and report.problems == [] and report.images == 3
    assert len(report.lengths) == 3 and report.truncated == 0


def test_standalone_command_lists_problems_and_fails(dataset, tiny_model, tmp_path, capsys):
    overrides = [f"{key}={value}" for key, value in dataset.items()] + [f"model_name_or_path={tiny_model}"]
    recipe = str(REPO / "configs" / "tiny_cpu_lora_sft.yaml")
    argv = [recipe, *overrides, "--report", str(tmp_path / "preflight.json")]
    result = run_main(preflight.main, argv, capsys)  # `python -m facellm.train.preflight`, in this process
    assert_one_line_error(result, "configs/tiny_cpu_lora_sft.yaml", "dataset check failed")
    assert "faces record 1: image val/no_such.jpg not found" in result.stderr
    assert "faces record 2: image '../outside.jpg' escapes media_dir" in result.stderr
    assert re.search(r"cutoff_len 512: 1 of \d+ samples would be truncated", result.stderr)
    saved = json.loads((tmp_path / "preflight.json").read_text())
    assert len(saved["problem_list"]) == sum(1 for _, kind in PLANTED if kind)


def test_train_stops_before_loading_the_model(dataset, tiny_model, tmp_path, capsys):
    from facellm.train.launch import main

    overrides = [f"{key}={value}" for key, value in dataset.items()]
    recipe = str(REPO / "configs" / "tiny_cpu_lora_sft.yaml")
    argv = [recipe, *overrides, f"model_name_or_path={tiny_model}", f"output_dir={tmp_path / 'out'}"]
    result = run_main(main, argv, capsys)  # train.sh's launcher, in this process
    assert_one_line_error(result, "dataset check failed")
    assert "llamafactory" not in result.stderr.lower()  # LLaMA-Factory was never started
    assert not (tmp_path / "out" / "facellm_resolved_config.yaml").exists()


def test_unknown_dataset_name(dataset):
    from facellm.common.cli import FaceLLMError

    with pytest.raises(FaceLLMError, match="no dataset named 'other'"):
        check_dataset({**dataset, "dataset": "other"}, progress=False)


def test_an_empty_dataset_is_refused(dataset):
    (tmp := Path(dataset["dataset_dir"]) / "dataset.json").write_text("[]")
    with pytest.raises(FaceLLMError, match=f"{tmp}: dataset 'faces' holds no records"):
        check_dataset({**dataset, "cutoff_len": None}, progress=False)


def test_a_record_far_beyond_cutoff_len_is_listed_without_being_tokenised(dataset, tiny_model, monkeypatch):
    # 1 MB of answer: far more characters than cutoff_len 512 tokens can hold, whatever the tokenizer
    records = [sample(), sample(answer="word " * 200_000), sample(images=["val/10.jpg"])]
    (Path(dataset["dataset_dir"]) / "dataset.json").write_text(json.dumps(records))
    tokenised = []
    batches = preflight._batches

    def spy(texts):
        for batch in batches(texts):
            tokenised.extend(batch)
            yield batch

    monkeypatch.setattr(preflight, "_batches", spy)
    report = run_preflight({**dataset, "model_name_or_path": str(tiny_model)}, "recipe", progress=False)
    assert report.overlong == [("faces", 1, pytest.approx(1_000_000, rel=0.01))]
    assert report.truncated == 1 and len(report.lengths) == 2 and max(report.lengths) < 512
    assert len(tokenised) == 2 and max(map(len, tokenised)) < 10_000  # the long text never reached it
    assert re.search(r"faces record 1: over-long: 1,000,\d{3} characters of text, far beyond cutoff_len 512",
                     report.text())  # fmt: skip
    assert "1 of 3 samples would be truncated" in report.text()


def _tool_chat(tags=("human", "function_call", "observation", "gpt"), keys=("from", "value")):
    texts = ["<image>\nWho is it?", '{"name": "face_id", "arguments": {}}', '{"id": 7}', "Person 7."]
    return [{keys[0]: tag, keys[1]: text} for tag, text in zip(tags, texts, strict=True)]


def _accepted(kind: str, data: Path) -> tuple[dict, int]:
    """A dataset of KIND that LLaMA-Factory trains on as it is, written into DATA: (its entry, records).
    An entry with "columns" or "tags" sets the ones it leaves out to none, so these entries name them all."""
    columns = {"messages": "conversations", "images": "images"}
    sharegpt = {"file_name": "d.json", "formatting": "sharegpt", "columns": columns}
    alpaca = {"prompt": "instruction", "query": "input", "response": "output", "images": "images"}
    if kind == "single string image":
        (data / "d.json").write_text(json.dumps([{**sample(), "images": "val/1.jpg"}]))
        return dataset_info_entry("d.json"), 1
    if kind == "absolute image path":
        (data / "d.json").write_text(json.dumps([sample(images=[str(IMAGES / "val" / "2.jpg")])]))
        return dataset_info_entry("d.json"), 1
    if kind == "observation and function_call turns":
        (data / "d.json").write_text(json.dumps([{"conversations": _tool_chat(), "images": ["val/1.jpg"]}]))
        return sharegpt, 1
    if kind == "folder of json files":
        (data / "parts").mkdir()
        (data / "parts" / "a.json").write_text(json.dumps([sample(), sample(images=["val/2.jpg"])]))
        (data / "parts" / "b.json").write_text(json.dumps([sample(images=["val/3.jpg"])]))
        return dataset_info_entry("parts"), 3
    if kind == "csv":
        (data / "d.csv").write_text("instruction,input,output,images\n<image>How old?,,Thirty.,val/4.jpg\n")
        return {"file_name": "d.csv", "columns": alpaca}, 1
    if kind == "parquet":
        pytest.importorskip("pandas").DataFrame([sample(images=["val/5.jpg"])]).to_parquet(data / "d.parquet")
        return dataset_info_entry("d.parquet"), 1
    if kind == "alpaca with images":
        row = {"instruction": "<image>\nDescribe.", "input": "", "output": "A face.", "images": ["val/6.jpg"]}
        (data / "d.json").write_text(json.dumps([row, {**row, "images": ["val/7.jpg"]}]))
        return {"file_name": "d.json", "columns": alpaca}, 2
    assert kind == "custom column and tag names"
    turns = [
        {"role": "sys", "content": "Be brief."},
        *_tool_chat(("user", "call", "tool", "bot"), ("role", "content")),
    ]
    (data / "d.jsonl").write_text(json.dumps({"chat": turns, "pictures": ["val/8.jpg"]}) + "\n")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "bot",
            "observation_tag": "tool", "function_tag": "call", "system_tag": "sys"}  # fmt: skip
    columns = {"messages": "chat", "images": "pictures"}
    return {"file_name": "d.jsonl", "formatting": "sharegpt", "columns": columns, "tags": tags}, 1


ACCEPTED = [
    "single string image", "absolute image path", "observation and function_call turns",
    "folder of json files", "csv", "parquet", "alpaca with images", "custom column and tag names",
]  # fmt: skip


@pytest.mark.parametrize("kind", ACCEPTED)
def test_what_llamafactory_accepts_passes_and_is_counted(kind, tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    entry, records = _accepted(kind, data)
    (data / "dataset_info.json").write_text(json.dumps({"faces": entry}))
    config = {"dataset_dir": str(data), "dataset": "faces", "media_dir": str(IMAGES), "cutoff_len": 512}
    report = check_dataset({**config, "model_name_or_path": str(tiny_model)}, progress=False)
    assert report.problems == [] and report.records == records
    assert report.images == records  # one image each, all different
    assert len(report.lengths) == records and report.truncated == 0 and min(report.lengths) > 0


def test_an_entry_llamafactory_cannot_convert_is_a_problem(dataset):
    # "columns" without "messages": LLaMA-Factory sets it to none and its converter fails on every record
    entry = {**dataset_info_entry("dataset.json"), "columns": {"images": "images"}}
    (Path(dataset["dataset_dir"]) / "dataset_info.json").write_text(json.dumps({"faces": entry}))
    report = check_dataset({**dataset, "cutoff_len": None}, progress=False)
    assert {p.kind for p in report.problems} == {"conversation"} and len(report.problems) == len(PLANTED)
    assert "faces record 0: LLaMA-Factory's converter fails on it (KeyError: None" in report.text()
