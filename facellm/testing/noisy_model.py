"""A copy of a model with its weight matrices redrawn at random, large enough that greedy answers depend on
every input token and every image.

The tiny test model answers every prompt with the same newlines, so "batched answers equal one-at-a-time
answers" or "resumed results equal uninterrupted ones" would hold for it even if images were dropped or
answers swapped between questions. Its noisy copy answers each question with its own gibberish, which makes
those checks mean something. Used by the evaluation tests and bench/eval_batching.py.

    python -m facellm.testing.noisy_model --model saves/tiny-internvl3 --out saves/tiny-internvl3-noisy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facellm.common.cli import FaceLLMError, run_cli
from facellm.testing.built import build_or_reuse

MARKER = "facellm_noisy.json"


def noisy_copy(model_dir: Path, out_dir: Path, seed: int = 0, gain: float = 2.0) -> Path:
    """Write OUT_DIR: MODEL_DIR's model and processor, every weight matrix drawn from N(0, gain^2 / fan_in).
    Reused when OUT_DIR was already made from the same inputs."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not (Path(model_dir) / "config.json").is_file():
        raise FaceLLMError(f"{model_dir}: not a model folder (no config.json)")

    def build(out: Path) -> None:
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, weight in sorted(model.named_parameters()):
                if weight.dim() >= 2:
                    weight.copy_(
                        torch.randn(weight.shape, generator=generator) * gain / weight.shape[-1] ** 0.5
                    )
        model.save_pretrained(out)
        AutoProcessor.from_pretrained(model_dir).save_pretrained(out)

    fingerprint = {"model": str(Path(model_dir).resolve()), "seed": seed, "gain": gain}
    return build_or_reuse(Path(out_dir), MARKER, fingerprint, build)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.noisy_model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder to copy")
    parser.add_argument("--out", type=Path, required=True, help="folder of the noisy copy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(noisy_copy(args.model, args.out, args.seed))


if __name__ == "__main__":
    run_cli(main)
