"""The command line of inference.py: one image, or a folder or list of them (batch mode), one model load.

The model itself is `facellm.infer.model.FaceLLMModel`; batch answering is `facellm.infer.batch`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from facellm.common.cli import FaceLLMError, is_text
from facellm.common.images import TRAINING_MAX_PIXELS, load_image
from facellm.common.options import add_answer_length, add_device_options, add_progress_option
from facellm.infer.batch import compact, list_items, open_answers, pending, run_batch
from facellm.infer.model import DEFAULT_MODEL, MAX_NEW_TOKENS, FaceLLMModel, Part, locate_model


def _loader(max_pixels: int | None, crop: bool):
    """Path -> the image the model sees: decoded, upright, RGB, FairFace-cropped when asked, downscaled."""

    def load(path) -> Image.Image:
        return _prepare(load_image(path), path, max_pixels, crop)

    return load


def _prepare(image: Image.Image, path, max_pixels: int | None, crop: bool) -> Image.Image:
    from facellm.common.images import downscale

    if crop:
        from facellm.infer.face_crop import crop_face

        image, box = crop_face(image)
        if box is None:
            print(f"note: {path}: no face found, using the whole image", file=sys.stderr)
    return downscale(image, max_pixels)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python inference.py",
        description="Ask a FaceLLM (or any InternVL3-hf) model about a face image, or about every image of "
        "a folder or list (batch mode: one JSONL line per image, resumable).",
        allow_abbrev=False,  # --image must not quietly mean --images
    )
    # required, checked after parsing: a misspelt `--image face.jpg` is named as unrecognized, not as missing
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--path-image", "--path_image", dest="path_image",
        help="one face image (JPEG, PNG, WebP, TIFF, ...)",
    )  # fmt: skip
    source.add_argument("--images", type=Path, help="batch mode: a folder of images, a .txt or a .jsonl list")
    parser.add_argument("--prompt", default="Describe this face in detail.", help="question to ask")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="merged model folder (export.sh), LoRA adapter folder (train.sh output; loaded on its base "
        "model), or hub id (default: %(default)s)",
    )
    parser.add_argument("--base", default=None, help="base model of an adapter (default: the one it names)")
    add_answer_length(parser, MAX_NEW_TOKENS)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    parser.add_argument(
        "--system", default=None, help="system prompt (default: the intern_vl one used in training)"
    )
    add_device_options(parser)
    parser.add_argument(
        "--max-pixels", type=int, default=TRAINING_MAX_PIXELS,
        help="larger images are first downscaled to this many pixels, as in training "
        "(default: %(default)s; 0 keeps them)",
    )  # fmt: skip
    parser.add_argument(
        "--crop-face", action="store_true",
        help="crop the largest face with FairFace's margin (0.25) first; the whole image when none is found",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="batch mode: answers JSONL (required)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch mode: images per forward pass")
    add_progress_option(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.path_image is None and args.images is None:
        parser.error("one of the arguments --path-image/--path_image --images is required")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.temperature < 0:
        parser.error("--temperature must be 0 or more")
    if args.max_pixels < 0:
        parser.error("--max-pixels must be 0 (keep) or more")
    if not args.prompt.strip():
        raise FaceLLMError("--prompt is empty")
    if not is_text(args.prompt):
        raise FaceLLMError("--prompt is not valid UTF-8 text")
    options = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.images is not None:
        _batch(args, _loader(args.max_pixels or None, args.crop_face), options)
        return

    image = load_image(args.path_image)  # a bad image or model path fails in a second, before the imports
    locate_model(args.model, args.base)  # of torch and transformers (cropping imports torch too)
    image = _prepare(image, args.path_image, args.max_pixels or None, args.crop_face)
    model = _model(args)
    parts = [Part("image", image), Part("text", args.prompt)]
    if args.stream:
        from transformers import TextStreamer

        streamer = TextStreamer(model.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        model.generate_batch([parts], streamer=streamer, **options)
    else:
        print(model.generate(parts, **options))


def _batch(args, load, options: dict) -> None:
    if args.output is None:
        raise FaceLLMError("--images needs --output FILE.jsonl (answers go there; rerun to resume)")
    items = list_items(args.images, args.prompt)  # a bad list stops us before the model loads
    keep = ("model", "base", "system", "crop_face", "max_pixels")
    settings = {name: getattr(args, name) for name in keep} | options
    if not args.output.exists():  # a new run: a wrong model path is refused before OUT is created
        locate_model(args.model, args.base)
    with open_answers(args.output, settings) as answers:  # so does a file that is not ours
        todo = pending(items, answers)
        if not todo:  # a finished run's rerun costs no model load
            compact(answers)
            print(f"nothing to do: {len(items)} images already answered in {args.output}")
            return
        locate_model(args.model, args.base)  # a path that cannot be a model: before torch is imported
        try:
            # list lines that cannot be asked (a path outside the list's folder) are recorded without a model
            model = _model(args) if any(item.error is None for item in todo) else None
            done, failed, skipped = run_batch(
                model, items, answers, args.batch_size, load, settings, args.progress, **options
            )
        except KeyboardInterrupt:  # exit 130 through run_cli, with the way back
            saved = sum(answers.is_done(item.image, item.prompt) for item in items)
            raise KeyboardInterrupt(
                f"{saved} of {len(items)} images answered so far are saved in {args.output}; "
                "the same command resumes"
            ) from None
        compact(answers)  # one line per image: a retried image's old error line goes
    print(f"{done} answered, {failed} failed, {skipped} already in {args.output}")
    if failed:
        sys.exit(1)


def _model(args) -> FaceLLMModel:
    return FaceLLMModel(
        args.model, device=args.device, dtype=args.dtype, system=args.system,
        max_new_tokens=args.max_new_tokens, base=args.base, max_pixels=args.max_pixels or None,
    )  # fmt: skip
