"""Answering questions about face images with an InternVL3-hf model (a merged FaceLLM export or a base model).

One class, `FaceLLMModel`, used by `inference.py` and by the VLMEvalKit plug-in. It loads the model with
transformers' native InternVL classes (no remote code) and prompts it exactly as LLaMA-Factory's `intern_vl`
template did during training: same system prompt, one image placeholder per image, no image tiling.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from facellm.cli import FaceLLMError

DEFAULT_MODEL = "Idiap/FaceLLM-1B"
TRAINING_TEMPLATE = "intern_vl"


def training_system_prompt(template: str = TRAINING_TEMPLATE) -> str:
    """The system prompt LLaMA-Factory inserted during training (its template's default), read from
    LLaMA-Factory itself so that inference cannot drift from training."""
    from llamafactory.data.template import TEMPLATES

    return TEMPLATES[template].default_system or ""


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB image with its EXIF orientation applied; a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FaceLLMError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise FaceLLMError(f"{path}: not a readable image ({error.__class__.__name__})") from None


@dataclass
class Part:
    """One piece of an interleaved prompt: an image (path or PIL image) or a text."""

    kind: str  # "image" | "text"
    value: object


class FaceLLMModel:
    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        system: str | None = None,
        max_new_tokens: int = 500,
    ):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise FaceLLMError(
                f"device {self.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
            ) from None
        dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        try:
            self.processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=False)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model_path, dtype=getattr(torch, dtype), trust_remote_code=False
            )
        except (OSError, ValueError) as error:
            first_line = (
                str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
            )
            raise FaceLLMError(f"{model_path}: cannot load model ({first_line})") from None
        try:
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as error:
            raise FaceLLMError(
                f"device {self.device!r} is not usable here ({str(error).splitlines()[0]})"
            ) from None
        self.system = training_system_prompt() if system is None else system
        self.max_new_tokens = max_new_tokens

    def encode(self, parts: list[Part]):
        """The model inputs (token ids, pixels) for one user turn of interleaved images and texts."""
        content, images = [], []
        for part in parts:
            if part.kind == "image":
                image = part.value if isinstance(part.value, Image.Image) else load_image(part.value)
                images.append(image)
                content.append({"type": "image"})
            elif part.kind == "text":
                content.append({"type": "text", "text": str(part.value)})
            else:
                raise ValueError(f"unsupported prompt part {part.kind!r}")
        messages = [{"role": "user", "content": content}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        # LLaMA-Factory tiles images only as the image processor's own config says (InternVLProcessor
        # would always tile); following that config shows the model what it was trained on.
        tiling = {"crop_to_patches": bool(getattr(self.processor.image_processor, "crop_to_patches", False))}
        return self.processor(images=images or None, text=[text], return_tensors="pt", images_kwargs=tiling)

    def generate(self, parts: list[Part], max_new_tokens: int | None = None) -> str:
        """Greedy answer to one user turn made of interleaved images and texts."""
        import torch

        inputs = self.encode(parts).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.processor.decode(new_tokens, skip_special_tokens=True).strip()

    def answer(self, image: str | os.PathLike | Image.Image, prompt: str) -> str:
        return self.generate([Part("image", image), Part("text", prompt)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python inference.py",
        description="Ask a FaceLLM (or any InternVL3-hf) model a question about a face image.",
    )
    parser.add_argument("--path_image", required=True, help="face image file (JPEG, PNG, ...)")
    parser.add_argument("--prompt", default="Describe this face in detail.", help="question to ask")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="merged model folder written by export.sh, or a hub id (default: %(default)s)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=500, help="answer length limit (default: 500)")
    parser.add_argument(
        "--system",
        default=None,
        help="system prompt (default: the one LLaMA-Factory's intern_vl template used in training)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    if not args.prompt.strip():
        raise FaceLLMError("--prompt is empty")
    image = load_image(args.path_image)  # fail on a bad image before spending time loading the model
    model = FaceLLMModel(
        args.model, device=args.device, system=args.system, max_new_tokens=args.max_new_tokens
    )
    print(model.answer(image, args.prompt))
