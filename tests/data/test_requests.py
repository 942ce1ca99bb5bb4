import base64
import io

import pytest
from PIL import Image

from facellm.data.fairface import FaceRecord
from facellm.data.prompts import load_prompts
from facellm.data.requests import BadImage, Job, Settings, image_data_url, judge, request_body

PROMPTS = load_prompts()
FACE = FaceRecord("val/1.jpg", "20-29", "Male", "White")


def completion(content, finish="stop", refusal=None, usage=(100, 40)):
    return {
        "choices": [{"message": {"content": content, "refusal": refusal}, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


def one(aspect_index=0):
    return Job(FACE, (PROMPTS.aspects[aspect_index],))


@pytest.mark.parametrize(
    ("content", "finish", "refusal", "reason"),
    [
        ("A young man with short hair.", "stop", None, None),
        ("   ", "stop", None, "empty answer"),
        ("I'm sorry, I can't help with that.", "stop", None, "refusal"),
        ("Fine answer", "stop", "policy", "refusal"),
        ("A young man with sh", "length", None, "truncated (finish_reason length)"),
    ],
)
def test_per_question_verdicts(content, finish, refusal, reason):
    (answer,) = judge(one(), completion(content, finish, refusal), PROMPTS, "per-question")
    assert answer.reason == reason
    assert (answer.text is None) is (reason is not None)


def test_per_image_json_answers_map_to_their_aspects_and_usage_is_shared_exactly():
    job = Job(FACE, PROMPTS.aspects[:3])
    first, second = PROMPTS.aspects[0].key, PROMPTS.aspects[1].key
    content = f'```json\n{{"{first}": "one", "{second}": "I am sorry, no.", "extra": "x"}}\n```'
    answers = judge(job, completion(content, usage=(101, 40)), PROMPTS, "per-image")
    assert [(a.text, a.reason) for a in answers] == [("one", None), (None, "refusal"), (None, "empty answer")]
    assert sum(a.usage["prompt_tokens"] for a in answers) == 101
    assert sum(a.usage["completion_tokens"] for a in answers) == 40


def test_per_image_malformed_json_fails_every_aspect_for_a_retry():
    answers = judge(Job(FACE, PROMPTS.aspects[:2]), completion("{not json"), PROMPTS, "per-image")
    assert [a.reason for a in answers] == ["malformed JSON answer"] * 2


def test_request_body_per_question_and_per_image():
    settings = Settings("m", "per-question", 512, temperature=0.2)
    body = request_body(one(3), PROMPTS, settings, "data:image/jpeg;base64,AAAA")
    assert body["model"] == "m" and body["max_tokens"] == 512 and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": PROMPTS.system}
    image, text = body["messages"][1]["content"]
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert text["text"].endswith(PROMPTS.aspects[3].question) and "perceived gender male" in text["text"]
    assert "response_format" not in body
    body = request_body(Job(FACE, PROMPTS.aspects), PROMPTS, Settings("m", "per-image", 4096), "data:x")
    assert body["response_format"] == {"type": "json_object"} and "temperature" not in body


def test_jpeg_is_sent_as_is_and_other_formats_are_reencoded(tmp_path):
    jpeg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    Image.new("RGB", (32, 32), "red").save(jpeg)
    Image.new("RGBA", (32, 32), (0, 255, 0, 128)).save(png)
    assert base64.b64decode(image_data_url(jpeg).split(",", 1)[1]) == jpeg.read_bytes()
    decoded = Image.open(io.BytesIO(base64.b64decode(image_data_url(png).split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.mode == "RGB"


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(BadImage, match="missing image"):
        image_data_url(tmp_path / "nope.jpg")
    truncated = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), "blue").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BadImage, match="unreadable image"):
        image_data_url(truncated)
