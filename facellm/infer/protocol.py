"""The two ways of putting a question to an InternVL3-hf model, and the prompt length each one gives.

`released` is the FaceLLM authors' VLMEvalKit plug-in: one user turn of images and text through
`processor.apply_chat_template(..., tokenize=True, return_dict=True)`, so no system message, every image tiled
by InternVLProcessor's defaults (up to `max_patches` tiles plus a thumbnail), bfloat16 weights and up to 2048
new tokens. The published FaceXBench numbers were made this way, so it is how FaceXBench is scored by default.

`training` is how LLaMA-Factory's `intern_vl` template showed the data to the model while it trained: its
system prompt first, each image tiled only as the image processor's own config says, and short answers. It is
the protocol of inference.py and the one that measures what a recipe taught.

Both build batches left-padded; each row equals the same turn encoded alone (the tests check both against
transformers' and LLaMA-Factory's own encodings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.common.images import named_image_errors


@dataclass(frozen=True)
class Part:
    """One piece of an interleaved prompt: an image (path or PIL image) or a text."""

    kind: str  # "image" | "text"
    value: object


@dataclass(frozen=True)
class Protocol:
    name: str
    system_prompt: bool  # LLaMA-Factory's training system prompt first
    tiling: str  # "processor": InternVLProcessor's default (tiles); "config": the image processor's config
    max_new_tokens: int  # the answer length of an evaluation under this protocol
    dtype: str | None  # weights' precision; None: bfloat16 on CUDA, float32 on CPU
    summary: str


PROTOCOLS = {
    "released": Protocol(
        "released", system_prompt=False, tiling="processor", max_new_tokens=2048, dtype="bfloat16",
        summary="the authors' plug-in: no system message, InternVLProcessor's tiling, bfloat16, 2048 new "
        "tokens",
    ),
    "training": Protocol(
        "training", system_prompt=True, tiling="config", max_new_tokens=64, dtype=None,
        summary="as LLaMA-Factory trained: its system prompt, tiling as the image processor's config says, "
        "64 new tokens",
    ),
}  # fmt: skip
DEFAULT_PROTOCOL = "released"


def find_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise FaceLLMError(f"unknown protocol {name!r}: one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _check(part: Part) -> None:
    if part.kind not in ("image", "text"):
        raise ValueError(f"unsupported prompt part {part.kind!r}")


def _tiles(processor, tiling: str) -> bool:
    # InternVLProcessor passes crop_to_patches=True unless told otherwise, over the image processor's own
    # setting; LLaMA-Factory calls the image processor with that setting (off in InternVL3's configs).
    if tiling == "processor":
        return True
    return bool(getattr(processor.image_processor, "crop_to_patches", False))


def encode_released(processor, batch: list[list[Part]]):
    """Model inputs for BATCH exactly as the authors' plug-in made them for one turn: transformers'
    `apply_chat_template`, images tiled by InternVLProcessor's defaults. Several turns are left-padded.

    An image path is opened by transformers' `load_image` (Pillow, EXIF orientation applied), as transformers
    opened the plug-in's paths when the published numbers were made. transformers 5 decodes a path with
    torchvision instead, whose libpng fails on every PNG ("bad parameters to zlib") once VLMEvalKit's OpenCV
    is loaded in the same process, and which leaves EXIF orientation unapplied."""
    from transformers.image_utils import load_image

    conversations = []
    for turn in batch:
        content = []
        for part in turn:
            _check(part)
            if part.kind == "image":
                value = part.value
                if not isinstance(value, Image.Image):
                    with named_image_errors(Path(value)):
                        value = load_image(str(value))
                content.append({"type": "image", "image": value})
            else:
                content.append({"type": "text", "text": str(part.value)})
        conversations.append([{"role": "user", "content": content}])
    return processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"padding": True},
    )  # fmt: skip


def encode_training(
    processor, system: str | None, batch: list[list[Part]], load_image: Callable[[object], Image.Image]
):
    """Model inputs for BATCH laid out as LLaMA-Factory's intern_vl template trained them: SYSTEM first when
    given, one image placeholder per image (each image through LOAD_IMAGE), tiling as the image processor's
    config says, left-padded."""
    texts, images = [], []
    for turn in batch:
        content = []
        for part in turn:
            _check(part)
            if part.kind == "image":
                images.append(load_image(part.value))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": str(part.value)})
        messages = [{"role": "user", "content": content}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
    tiling = {"crop_to_patches": _tiles(processor, "config")}
    return processor(
        images=images or None, text=texts, return_tensors="pt", padding=True, images_kwargs=tiling
    )


# EXIF orientations that swap width and height (transformers and Pillow turn the image upright on loading)
_TRANSPOSED = {5, 6, 7, 8}


def image_size(value, max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) of an image as the model receives it, read from the file's header (no decoding):
    turned upright by its EXIF orientation and, with MAX_PIXELS, downscaled as `downscale` does."""
    if isinstance(value, Image.Image):
        width, height = value.size
    else:
        with Image.open(value) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSED:
                width, height = height, width
    if max_pixels and width * height > max_pixels:
        from facellm.common.images import downscaled_size

        width, height = downscaled_size((width, height), max_pixels)
    return height, width


def image_tokens(processor, protocol: Protocol, image, max_pixels: int | None = None) -> int:
    """The tokens IMAGE takes in a prompt under PROTOCOL: `image_seq_length` per tile between its start and
    end tokens. Computed from its size, as the image processor tiles it."""
    height, width = image_size(image, None if protocol.tiling == "processor" else max_pixels)
    tiling = {"crop_to_patches": _tiles(processor, protocol.tiling)}
    tiles = processor.image_processor.get_number_of_image_patches(height, width, tiling)
    return 2 + processor.image_seq_length * tiles


def prompt_tokens(
    processor, protocol: Protocol, turn: list[Part], system: str | None = None, max_pixels: int | None = None
) -> int:
    """The length in tokens of TURN's model inputs under PROTOCOL, computed from the text and the image sizes
    (no image is decoded): the chat template's text, where each image's one placeholder token becomes its
    `image_tokens`. Equal to the encoded length (the tests check it)."""
    content = []
    images = 0
    for part in turn:
        _check(part)
        if part.kind == "image":
            content.append({"type": "image"})
            images += image_tokens(processor, protocol, part.value, max_pixels) - 1
        else:
            content.append({"type": "text", "text": str(part.value)})
    messages = [{"role": "user", "content": content}]
    if protocol.system_prompt and system:
        messages.insert(0, {"role": "system", "content": system})
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    # verbose=False: a prompt longer than the tokenizer's nominal maximum is measured, not warned about
    return len(processor.tokenizer(text, verbose=False)["input_ids"]) + images
