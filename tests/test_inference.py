import pytest
from PIL import Image

from facellm.cli import FaceLLMError
from facellm.inference import FaceLLMModel, Part, load_image, training_system_prompt
from tests.conftest import SAMPLE_FACES, assert_one_line_error, run_command

FACE = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "1.jpg"
FACE2 = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "2.jpg"


@pytest.fixture(scope="module")
def model(tiny_model):
    return FaceLLMModel(str(tiny_model), max_new_tokens=8)


def test_prompt_matches_llamafactory_training_encoding(model, tiny_model):
    """The ids and pixels inference feeds the model are those LLaMA-Factory trained it on."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    loaded = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model), image_max_pixels=224 * 224))
    tokenizer, processor = loaded["tokenizer"], loaded["processor"]
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="intern_vl"))
    image = load_image(FACE)
    question = "Describe this face in detail."
    messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": ""}]
    messages = template.mm_plugin.process_messages(messages, [image], [], [], processor)
    train_ids, _ = template.encode_oneturn(tokenizer, messages, None, None)
    train_pixels = template.mm_plugin._get_mm_inputs([image], [], [], processor)["pixel_values"]

    text = model.processor.apply_chat_template(
        [
            {"role": "system", "content": model.system},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        ],
        add_generation_prompt=True,
    )
    inputs = model.processor(images=[image], text=[text], images_kwargs={"crop_to_patches": False})
    assert list(inputs["input_ids"][0]) == list(train_ids)
    assert abs(inputs["pixel_values"] - train_pixels.numpy()).max() < 1e-5


def test_default_system_prompt_is_the_training_one(model):
    from llamafactory.data.template import TEMPLATES

    assert model.system == training_system_prompt() == TEMPLATES["intern_vl"].default_system
    assert model.system


def test_greedy_answer_is_deterministic(model):
    first = model.answer(FACE, "Describe this face in detail.")
    assert isinstance(first, str)
    assert model.answer(str(FACE), "Describe this face in detail.") == first


def test_interleaved_images_and_texts(model):
    parts = [Part("text", "Compare"), Part("image", FACE), Part("text", "with"), Part("image", FACE2)]
    assert isinstance(model.generate(parts), str)


def test_unsupported_part_is_refused(model):
    with pytest.raises(ValueError, match="unsupported"):
        model.generate([Part("video", "clip.mp4")])


def test_image_loading_errors(tmp_path):
    with pytest.raises(FaceLLMError, match="image not found"):
        load_image(tmp_path / "none.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(FaceLLMError, match="not a readable image"):
        load_image(tmp_path / "text.jpg")


def test_image_loading_converts_to_rgb(tmp_path):
    Image.new("RGBA", (30, 20), (1, 2, 3, 4)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (30, 20)


def test_cli_prints_the_same_answer_as_the_library(model, tiny_model):
    result = run_command(
        "python",
        "inference.py",
        "--model",
        str(tiny_model),
        "--path_image",
        str(FACE),
        "--prompt",
        "How old is this person?",
        "--max-new-tokens",
        "6",
    )
    assert result.returncode == 0, result.stderr
    expected = model.generate(
        [Part("image", FACE), Part("text", "How old is this person?")], max_new_tokens=6
    )
    assert result.stdout.strip() == expected


def test_cli_bad_inputs(tmp_path):
    result = run_command(
        "python", "inference.py", "--model", str(tmp_path), "--path_image", str(tmp_path / "x.jpg")
    )
    assert_one_line_error(result, "x.jpg", "image not found")
    result = run_command("python", "inference.py", "--model", str(tmp_path), "--path_image", str(FACE))
    assert_one_line_error(result, str(tmp_path), "cannot load model")
    result = run_command("python", "inference.py", "--path_image", str(FACE), "--prompt", "  ")
    assert_one_line_error(result, "--prompt is empty")
