"""The two prompting protocols against the reference paths: `released` against what the authors' plug-in
hands the model (transformers' `apply_chat_template(..., tokenize=True, return_dict=True)` on one user turn),
`training` against LLaMA-Factory's encoding (tests/infer/test_model.py), and the prompt length the runner
sizes batches by against the encoded length.

The tiny model's tiles are 56 px; for the tiling questions its processor is given InternVL3's 448-px tiles
and 256 tokens per tile (`with_internvl3_tiles`), with tiling off in the image processor's config and
InternVLProcessor's defaults on top, as in the released InternVL3-hf checkpoints."""

import numpy as np
import pytest
import torch
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.common.images import TRAINING_MAX_PIXELS, load_image
from facellm.infer.model import FaceLLMModel, training_system_prompt
from facellm.infer.protocol import PROTOCOLS, Part, encode_released, encode_training, prompt_tokens
from facellm.testing.tiny_model import with_internvl3_tiles
from tests.support import SAMPLE_FACES

FACES = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val"
QUESTION = "What is the perceived age of this person? A. 0-2 B. 3-9 C. 20-29 D. 70+"


@pytest.fixture(scope="module")
def internvl3_processor(tiny_model, tmp_path_factory):
    from transformers import AutoProcessor

    folder = with_internvl3_tiles(tiny_model, tmp_path_factory.mktemp("internvl3-tiles") / "processor")
    return AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def turns(tmp_path_factory) -> dict[str, list[Part]]:
    folder = tmp_path_factory.mktemp("protocol-images")
    noise = np.random.default_rng(0).integers(0, 256, (1344, 1792, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "crowd.png")  # a large crowd-counting-like image: many tiles
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.fromarray(noise[:300, :900]).save(folder / "rotated.jpg", exif=exif)
    return {
        "single image": [Part("image", FACES / "1.jpg"), Part("text", QUESTION)],
        "several images": [
            Part("image", FACES / "2.jpg"), Part("image", FACES / "3.jpg"), Part("image", FACES / "4.jpg"),
            Part("text", "How many of these images show a woman? A. 0 B. 1 C. 2 D. 3"),
        ],
        "large image": [Part("image", folder / "crowd.png"), Part("text", "How many people are there?")],
        "rotated image": [Part("image", folder / "rotated.jpg"), Part("text", QUESTION)],
    }  # fmt: skip


def authors_inputs(processor, turn: list[Part]):
    """What the authors' FaceLLM plug-in handed the model: one user turn of its images and text, each image
    opened by transformers' load_image (as their transformers opened the paths they gave)."""
    from transformers.image_utils import load_image

    content = [
        {"type": "image", "image": load_image(str(p.value))}
        if p.kind == "image"
        else {"type": "text", "text": p.value}
        for p in turn
    ]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def tiles(inputs) -> int:
    return inputs["pixel_values"].shape[0]


@pytest.mark.parametrize("case", ["single image", "several images", "large image", "rotated image"])
def test_released_inputs_are_the_authors_plugin_inputs(case, internvl3_processor, turns):
    reference = authors_inputs(internvl3_processor, turns[case])
    ours = encode_released(internvl3_processor, [turns[case]])
    assert set(ours) == set(reference)
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key
    expected_tiles = {"single image": 1, "several images": 3, "large image": 13, "rotated image": 4}
    assert tiles(ours) == expected_tiles[case]  # the 1792 x 1344 image: 4 x 3 tiles and a thumbnail
    assert training_system_prompt() not in internvl3_processor.decode(ours["input_ids"][0])


def test_released_batch_rows_are_each_turn_alone_left_padded(internvl3_processor, turns):
    cases = list(turns)
    batch = encode_released(internvl3_processor, [turns[case] for case in cases])
    alone = [authors_inputs(internvl3_processor, turns[case]) for case in cases]
    width = batch["input_ids"].shape[1]
    for row, single in enumerate(alone):
        length = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][row, width - length :], single["input_ids"][0])
        assert batch["attention_mask"][row, : width - length].sum() == 0  # padding on the left only
    assert torch.equal(batch["pixel_values"], torch.cat([single["pixel_values"] for single in alone]))


@pytest.mark.parametrize("name", ["released", "training"])
@pytest.mark.parametrize("max_pixels", [None, TRAINING_MAX_PIXELS])
def test_prompt_length_is_the_encoded_length(name, max_pixels, internvl3_processor, turns):
    protocol = PROTOCOLS[name]
    system = training_system_prompt()
    for case, turn in turns.items():
        if name == "released":
            encoded = encode_released(internvl3_processor, [turn])
        else:
            encoded = encode_training(
                internvl3_processor, system, [turn], lambda v: load_image(v, max_pixels)
            )
        counted = prompt_tokens(internvl3_processor, protocol, turn, system, max_pixels)
        assert counted == encoded["input_ids"].shape[1], case


def test_the_protocols_differ_only_where_they_say(internvl3_processor, turns):
    large = turns["large image"]
    released = encode_released(internvl3_processor, [large])
    training = encode_training(internvl3_processor, training_system_prompt(), [large], load_image)
    assert (tiles(released), tiles(training)) == (13, 1)  # InternVLProcessor tiles; the config does not
    assert training_system_prompt() in internvl3_processor.decode(training["input_ids"][0])
    assert PROTOCOLS["released"].max_new_tokens == 2048 and PROTOCOLS["released"].dtype == "bfloat16"
    assert PROTOCOLS["training"].max_new_tokens == 64 and PROTOCOLS["training"].dtype is None


def test_the_model_takes_the_protocol_s_prompt_and_dtype(tiny_model, turns):
    released = FaceLLMModel(str(tiny_model), device="cpu", protocol="released", max_pixels=None)
    assert (released.system, released.dtype, str(released.model.dtype)) == (
        None,
        "bfloat16",
        "torch.bfloat16",
    )
    turn = turns["large image"]
    reference = authors_inputs(released.processor, turn)
    ours = released.encode(turn)
    assert all(torch.equal(ours[key], reference[key]) for key in reference)
    assert tiles(ours) > 1  # the tiny model tiles too, in 56-px tiles
    assert released.prompt_tokens(turn) == ours["input_ids"].shape[1]

    training = FaceLLMModel(str(tiny_model), device="cpu")
    assert (training.system, training.dtype) == (training_system_prompt(), "float32")
    assert tiles(training.encode(turn)) == 1
    with pytest.raises(FaceLLMError, match="sends no system message"):
        FaceLLMModel(str(tiny_model), device="cpu", protocol="released", system="You are a face expert.")
