"""Batched vs one-at-a-time generation with FaceLLMModel on CPU, over the same 64 images.

Checks first that both give identical greedy answers (and next-token logits within 1e-4, which a degenerate
tiny model's identical answers could not show on their own), then reports the speed ratio measured in this
one run. Target: >= 4x.

    uv run python bench/inference_batching.py [--model DIR] [--batch-size 16] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image, ImageEnhance, ImageOps

from facellm.infer.model import FaceLLMModel, Part
from facellm.testing.tiny_model import build_tiny_model

SAMPLE = (
    Path(__file__).resolve().parent.parent / "assets" / "fairface-sample" / "fairface-img-margin025-trainval"
)


def sixty_four_images() -> list[Image.Image]:
    """The 16 sample faces, each as is, mirrored, darker and brighter: 64 distinct images."""
    faces = [Image.open(path).convert("RGB") for path in sorted((SAMPLE / "val").glob("*.jpg"))]
    variants = [
        lambda im: im,
        ImageOps.mirror,
        lambda im: ImageEnhance.Brightness(im).enhance(0.7),
        lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    ]
    return [variant(face) for variant in variants for face in faces]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="model folder (default: the tiny model, built if needed)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--prompts",
        nargs="+",
        default=["Describe this face in detail.", "What can you tell about the apparent age and gender?"],
        help="asked in turn, so that batches mix prompt lengths and left padding is exercised",
    )
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model_dir = args.model or str(build_tiny_model(Path("saves/tiny-internvl3")))
    model = FaceLLMModel(model_dir, max_new_tokens=args.max_new_tokens)
    prompts = args.prompts
    images = sixty_four_images()
    turns = [
        [Part("image", image), Part("text", prompts[i % len(prompts)])] for i, image in enumerate(images)
    ]

    model.generate_batch(turns[:2])  # warm-up: first-call allocations are not part of either figure
    start = time.perf_counter()
    alone = [model.generate_batch([turn])[0] for turn in turns]
    one_at_a_time = time.perf_counter() - start
    start = time.perf_counter()
    batched = []
    for first in range(0, len(turns), args.batch_size):
        batched.extend(model.generate_batch(turns[first : first + args.batch_size]))
    in_batches = time.perf_counter() - start

    same = sum(a[0] == b[0] for a, b in zip(alone, batched, strict=True))
    with torch.inference_mode():
        chunk = turns[: args.batch_size]
        together = model.model(**model.encode(chunk)).logits[:, -1]
        single = torch.cat([model.model(**model.encode(turn)).logits[:, -1] for turn in chunk])
    drift = (together - single).abs().max().item()
    tokens = sum(count for _, count in batched)
    print(
        f"model: {model_dir}; {len(turns)} images, {args.max_new_tokens} new tokens max, {tokens} generated"
    )
    print(f"identical greedy answers: {same}/{len(turns)}; max next-token logit difference: {drift:.2e}")
    print(f"one at a time: {one_at_a_time:.2f} s ({len(turns) / one_at_a_time:.1f} images/s)")
    print(f"batches of {args.batch_size}: {in_batches:.2f} s ({len(turns) / in_batches:.1f} images/s)")
    ratio = one_at_a_time / in_batches
    verdict = "met" if ratio >= 4 and same == len(turns) and drift < 1e-4 else "NOT met"
    print(f"speed-up: {ratio:.1f}x (target >= 4x with identical answers: {verdict})")


if __name__ == "__main__":
    main()
