"""A tiny InternVL3-architecture model, built offline and deterministically.

It is the same model family as `OpenGVLab/InternVL3-*-hf` (InternViT vision tower, pixel-shuffle projector,
Qwen2 language model, InternVLProcessor with GotOcr2 image processor), shrunk to ~1 MB so that every stage of
the pipeline (LLaMA-Factory training and export, transformers generation, the VLMEvalKit plug-in) can run for
real on a CPU with no download. It is the test fixture and the default model of `make demo`.

    python -m facellm.testing.tiny_model --out saves/tiny-internvl3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from facellm.common.cli import FaceLLMError, run_cli
from facellm.data.labels import corpus_for_tokenizer
from facellm.testing.built import build_or_reuse

DEFAULT_DIR = Path("saves/tiny-internvl3")
SEED = 0
MARKER = "facellm_tiny.json"
RECIPE_VERSION = 3  # bump when the architecture or the tokenizer recipe below changes
VOCAB_SIZE = 1200
IMAGE_SIZE = 56
PATCH_SIZE = 14
# (56 / 14)^2 patches, halved twice by the 0.5 pixel-shuffle: 4 tokens per image tile.
IMAGE_SEQ_LENGTH = 4

IMAGE_START, IMAGE_END, IMAGE_CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, rendering each image as the context token the processor expands (as the InternVL3-hf models do),
# followed by a newline so the text after an image matches the `<image>\n` layout of our training data.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif item['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _train_tokenizer():
    """Byte-level BPE in the Qwen2 layout, trained on the project's own face vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_for_tokenizer(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]

    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "start_image_token": IMAGE_START,
            "end_image_token": IMAGE_END,
            "context_image_token": IMAGE_CONTEXT,
            "video_token": VIDEO,
        },
        model_max_length=4096,
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": CHATML[1:]})
    return tokenizer


def _build_processor(tokenizer):
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    # InternVL3's own image-processor settings but the tile size: no tiling in its config (which
    # LLaMA-Factory follows), up to 12 tiles when a caller asks for tiling (as InternVLProcessor does).
    image_processor = GotOcr2ImageProcessor(
        size=size, crop_to_patches=False, min_patches=1, max_patches=12, image_mean=mean, image_std=std
    )
    video_processor = InternVLVideoProcessor(size=size, image_mean=mean, image_std=std)
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer, seed: int):
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    vision = {
        "model_type": "internvl_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "patch_size": [PATCH_SIZE, PATCH_SIZE],
    }
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        # InternVL3's Qwen2.5 context (rotary: no weights): FaceXBench's tool-use questions are ~6,500 tokens
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = text["eos_token_id"]
    model.generation_config.pad_token_id = text["pad_token_id"]
    return model


def weights_digest(model_dir: str | os.PathLike) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, independent of file layout."""
    import torch
    from safetensors import safe_open

    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FaceLLMError(f"{model_dir}: no .safetensors weights found")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[name] = handle.get_tensor(name)
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_fingerprint(seed: int) -> dict:
    """What a cached folder must have been built from to be reused: the seed, this recipe's version and the
    tokenizer corpus (which changes whenever the labels backend's wording does)."""
    corpus = hashlib.sha256("\n".join(corpus_for_tokenizer()).encode()).hexdigest()[:16]
    return {"seed": seed, "recipe": RECIPE_VERSION, "corpus": corpus}


def build_tiny_model(out_dir: str | os.PathLike = DEFAULT_DIR, seed: int = SEED, force: bool = False) -> Path:
    """Build (or reuse) the tiny model folder; returns its path.

    A folder is reused only when its marker says it was built from the same inputs (`build_fingerprint`).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FaceLLMError(f"{out}: exists and is not a folder")
    if force:
        (out / MARKER).unlink(missing_ok=True)

    def build(folder: Path) -> None:
        tokenizer = _train_tokenizer()
        _build_model(tokenizer, seed).save_pretrained(folder, safe_serialization=True)
        _build_processor(tokenizer).save_pretrained(folder)

    return build_or_reuse(out, MARKER, build_fingerprint(seed), build)


# InternVL3's own tiles: 448 px, (448 / 14)^2 patches halved twice by the pixel shuffle = 256 tokens each
INTERNVL3_TILE, INTERNVL3_TILE_TOKENS = 448, 256


def with_internvl3_tiles(model_dir: Path, out: Path) -> Path:
    """OUT: the processor of MODEL_DIR (the tiny model's tokenizer and chat template) with InternVL3's tile
    size and tokens per tile, for the questions where the tile size matters (how many tiles a large image
    makes, how long a prompt gets). Processor files only: the tiny model's weights see 56-px tiles."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    image_processor = processor.image_processor
    image_processor.size = {"height": INTERNVL3_TILE, "width": INTERNVL3_TILE}
    image_processor.crop_to_patches, image_processor.min_patches, image_processor.max_patches = False, 1, 12
    processor.image_seq_length = INTERNVL3_TILE_TOKENS
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.tiny_model",
        description="Build the tiny InternVL3-architecture model (offline, deterministic) used by the demo "
        "and the tests. Reuses an existing folder built with the same seed unless --force.",
    )
    parser.add_argument("--out", default=str(DEFAULT_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="weight initialisation seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args(argv)
    out = build_tiny_model(args.out, args.seed, args.force)
    print(f"tiny InternVL3 model: {out}  weights sha256 {weights_digest(out)[:16]}")


if __name__ == "__main__":
    run_cli(main)
