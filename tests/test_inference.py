import json
import shutil

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


@pytest.fixture(scope="module")
def tiling_model_dir(tiny_model, tmp_path_factory):
    """The tiny model with tiling switched on in its image processor config (as some checkpoints ship)."""
    folder = tmp_path_factory.mktemp("tiling") / "tiny-tiling"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"].update(crop_to_patches=True, max_patches=4)
    (folder / "processor_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("variant", ["as built", "tiling on"])
def test_inputs_match_llamafactory_training_encoding(variant, tiny_model, tiling_model_dir):
    """The ids and pixels inference feeds the model are those LLaMA-Factory trained it on, tiled or not."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    folder = tiny_model if variant == "as built" else tiling_model_dir
    loaded = load_tokenizer(ModelArguments(model_name_or_path=str(folder), image_max_pixels=512 * 512))
    tokenizer, processor = loaded["tokenizer"], loaded["processor"]
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="intern_vl"))
    image = load_image(FACE).resize((224, 112))  # not square: tiling gives 2 tiles + a thumbnail
    question = "Describe this face in detail."
    messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": ""}]
    messages = template.mm_plugin.process_messages(messages, [image], [], [], processor)
    train_ids, _ = template.encode_oneturn(tokenizer, messages, None, None)
    train_pixels = template.mm_plugin._get_mm_inputs([image], [], [], processor)["pixel_values"]

    inputs = FaceLLMModel(str(folder)).encode([Part("image", image), Part("text", question)])
    assert inputs["input_ids"][0].tolist() == list(train_ids)
    assert inputs["pixel_values"].shape == train_pixels.shape
    assert inputs["pixel_values"].shape[0] == (1 if variant == "as built" else 3)
    assert (inputs["pixel_values"] - train_pixels).abs().max() < 1e-5


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
    with pytest.raises(FaceLLMError, match="not an image"):
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


def test_cli_bad_flags():
    result = run_command("python", "inference.py", "--path_image", str(FACE), "--max-new-tokens", "0")
    assert result.returncode == 2 and "--max-new-tokens must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_device_is_a_clear_error(tiny_model):
    with pytest.raises(FaceLLMError, match="'bogus' is not a torch device"):
        FaceLLMModel(str(tiny_model), device="bogus")


def test_cli_bad_inputs(tmp_path):
    result = run_command(
        "python", "inference.py", "--model", str(tmp_path), "--path_image", str(tmp_path / "x.jpg")
    )
    assert_one_line_error(result, "x.jpg", "image not found")
    result = run_command("python", "inference.py", "--model", str(tmp_path), "--path_image", str(FACE))
    assert_one_line_error(result, str(tmp_path), "neither a model", "nor a LoRA adapter")
    result = run_command("python", "inference.py", "--path_image", str(FACE), "--prompt", "  ")
    assert_one_line_error(result, "--prompt is empty")
