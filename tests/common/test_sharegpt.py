import json

from facellm.common.sharegpt import dataset_info_entry, record, write_dataset
from tests.support import REPO


def test_record_is_a_single_turn_with_one_image_tag():
    item = record("What is shown?", "A face.", "val/7.jpg")
    human, assistant = item["conversations"]
    assert human == {"from": "human", "value": "<image>\nWhat is shown?"}
    assert assistant == {"from": "assistant", "value": "A face."}
    assert item["images"] == ["val/7.jpg"]


def test_written_dataset_registers_itself_and_keeps_other_entries(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "o.json"}}))
    dataset, info = write_dataset(tmp_path, [record("q", "a", "val/1.jpg")])
    registry = json.loads(info.read_text())
    assert set(registry) == {"other", "fairfacegpt"}
    assert registry["fairfacegpt"]["file_name"] == "dataset.json"
    assert json.loads(dataset.read_text())[0]["images"] == ["val/1.jpg"]


def test_committed_registration_matches_the_generated_one():
    committed = json.loads((REPO / "data" / "dataset_info.json").read_text())["fairfacegpt"]
    assert committed == dataset_info_entry("fairfacegpt/dataset.json")
