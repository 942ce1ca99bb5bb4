import shutil

import pytest

from facellm.common.cli import FaceLLMError
from facellm.data.fairface import FaceRecord
from facellm.data.prompts import DEFAULT_PROMPTS_DIR, load_prompts


@pytest.fixture
def prompts_dir(tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR, folder)
    return folder


def test_default_prompts_have_eight_distinct_aspects():
    prompts = load_prompts()
    assert len(prompts.aspects) == 8
    assert len({a.key for a in prompts.aspects}) == len({a.question for a in prompts.aspects}) == 8
    assert "Latino/Hispanic" in prompts.system and "Middle Eastern" in prompts.system


def test_question_text_carries_the_labels_and_calls_a_child_a_girl():
    prompts = load_prompts()
    text = prompts.question_text(
        FaceRecord("val/1.jpg", "3-9", "Female", "Latino_Hispanic"), prompts.aspects[0]
    )
    assert "a girl" in text and "female" in text and "Latino or Hispanic" in text and "3-9 years old" in text
    assert text.endswith(prompts.aspects[0].question)


def test_per_image_text_lists_every_question_with_its_key():
    prompts = load_prompts()
    text = prompts.all_questions_text(
        FaceRecord("f", "more than 70", "Male", "Indian"), list(prompts.aspects)
    )
    assert "over 70 years old" in text and "JSON" in text
    for aspect in prompts.aspects:
        assert f'"{aspect.key}": {aspect.question}' in text


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I\u2019m unable to analyse this image.", True),
        ("  i cannot assist with identifying people", True),
        ("The person appears to be a man in his thirties.", False),
        ("Sorry lighting conditions make the skin look flat.", False),
    ],
)
def test_refusal_detection(answer, refused):
    assert load_prompts().is_refusal(answer) is refused


def test_digest_changes_with_any_prompt_file(prompts_dir):
    before = load_prompts(prompts_dir).digest
    (prompts_dir / "system.txt").write_text("You analyse faces.\n")
    assert load_prompts(prompts_dir).digest != before


def test_unknown_template_field_is_named(prompts_dir):
    (prompts_dir / "per_question.txt").write_text("{person} is {height}. {question}")
    with pytest.raises(FaceLLMError, match=r"per_question.txt: unknown field\(s\) height"):
        load_prompts(prompts_dir)


def test_template_without_the_question(prompts_dir):
    (prompts_dir / "per_image.txt").write_text("Describe {person}.")
    with pytest.raises(FaceLLMError, match=r"per_image.txt: the template must contain \{questions\}"):
        load_prompts(prompts_dir)


def test_duplicate_aspect_keys(prompts_dir):
    (prompts_dir / "aspects.json").write_text(
        '[{"key": "a", "question": "q1"}, {"key": "a", "question": "q2"}]'
    )
    with pytest.raises(FaceLLMError, match=r"aspects\.json: aspect keys must be unique"):
        load_prompts(prompts_dir)


def test_missing_prompt_file(prompts_dir):
    (prompts_dir / "system.txt").unlink()
    with pytest.raises(FaceLLMError, match=r"lacks system\.txt"):
        load_prompts(prompts_dir)


def test_a_folder_without_refusals_uses_the_shared_ones(prompts_dir):
    before = load_prompts(prompts_dir)
    (prompts_dir / "refusals.txt").unlink()
    assert load_prompts(prompts_dir) == before  # the same phrases, and the same digest
