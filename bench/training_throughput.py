"""LoRA training throughput (tokens/s per GPU) and MFU of the InternVL3-1B and -8B architectures.

The models are built from their configurations with random weights (nothing is downloaded) and trained the
way the recipes train them: bf16 weights, LoRA rank 16 / alpha 32 on every linear layer of the language
model, vision tower and projector frozen, gradient checkpointing on, AdamW on the LoRA weights. Each
sample is one 448 px image (256 image tokens) plus text, FairFaceGPT-sized by default (--text-tokens 300).
Every attention implementation available is measured in the same run: sdpa always, flash_attention_2
where flash-attn is installed.

MFU = model FLOPs per second / peak (--peak-tflops, default 989 = H100 SXM dense bf16). Model FLOPs per
step, stated as used (recomputation by gradient checkpointing is not counted):
  language model, per token:  4 N + 6 N_lora + 12 L d T
      N = parameters of the decoder's linear layers and the output layer (forward 2N; the backward still
      propagates activation gradients through the frozen weights, 2N, but computes no weight gradients),
      N_lora = LoRA parameters (forward, activation and weight gradients), L layers, width d, T tokens
      of the sequence (attention scores and values, forward and backward, PaLM's convention);
  vision tower + projector, per image, forward only (frozen, nothing upstream needs a gradient):
      2 N_vit P + 4 L_vit d_vit P^2 + 2 N_proj 256,  P = 1025 patch tokens of a 448 px tile.

    uv run python bench/training_throughput.py                  # CPU: the tiny model, a few steps
    uv run python bench/training_throughput.py --arch 1b 8b     # GPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import torch

VISION_300M = {
    "model_type": "internvl_vision", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "image_size": [448, 448], "patch_size": [14, 14],
}  # fmt: skip
TEXT = {
    "1b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
           "intermediate_size": 4864, "tie_word_embeddings": False},  # 0.94B in all, as published
    "8b": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "intermediate_size": 18944, "tie_word_embeddings": False},
}  # fmt: skip
VOCAB = 151674
IMAGE_TOKENS = 256


def build(arch: str, attention: str, device: str, dtype):
    from transformers import AutoModelForImageTextToText, InternVLConfig

    if arch == "tiny":
        from facellm.testing.tiny_model import build_tiny_model

        model = AutoModelForImageTextToText.from_pretrained(
            build_tiny_model(), dtype=dtype, attn_implementation=attention
        )
        return model.to(device)
    text = {"model_type": "qwen2", "vocab_size": VOCAB, "max_position_embeddings": 32768, **TEXT[arch]}
    config = InternVLConfig(
        vision_config=VISION_300M, text_config=text, image_token_id=VOCAB - 1, image_seq_length=IMAGE_TOKENS,
        downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    config._attn_implementation = attention
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attention)


def add_lora(model):
    from peft import LoraConfig, get_peft_model

    names = {
        name.split(".")[-1]
        for name, module in model.model.language_model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=sorted(names))
    # LoRA only on the language model, as LLaMA-Factory's `lora_target: all` does
    config.target_modules = f".*language_model.*\\.({'|'.join(sorted(names))})"
    model = get_peft_model(model, config)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # trainable weights in fp32, as LLaMA-Factory keeps them
    return model


def flops_per_step(model, batch: int, seq: int, images: int, patches: int) -> float:
    base = model.get_base_model()
    text = base.config.text_config
    vision = base.config.vision_config
    linear = sum(
        m.weight.numel()
        for n, m in base.model.language_model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lora_" not in n
    )
    linear += base.lm_head.weight.numel()
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    vit = sum(p.numel() for p in base.model.vision_tower.parameters())
    projector = sum(p.numel() for p in base.model.multi_modal_projector.parameters())
    per_token = 4 * linear + 6 * lora + 12 * text.num_hidden_layers * text.hidden_size * seq
    per_image = (
        2 * vit * patches
        + 4 * vision.num_hidden_layers * vision.hidden_size * patches**2
        + 2 * projector * base.config.image_seq_length
    )
    return batch * seq * per_token + images * per_image


def batch_inputs(model, batch: int, text_tokens: int, device: str, dtype):
    config = model.get_base_model().config
    size = config.vision_config.image_size[0]
    image_tokens = config.image_seq_length
    vocab = config.text_config.vocab_size
    ids = torch.randint(10, vocab - 10, (batch, image_tokens + text_tokens), device=device)
    ids[:, :image_tokens] = config.image_token_id
    text = ids[:, image_tokens:]
    text[text == config.image_token_id] = 11  # image tokens only in the leading block
    pixels = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    labels = ids.clone()
    labels[:, :image_tokens] = -100
    return {"input_ids": ids, "pixel_values": pixels, "labels": labels}


def measure(arch, attention, batch, text_tokens, steps, warmup, device, dtype) -> dict:
    torch.manual_seed(0)
    model = add_lora(build(arch, attention, device, dtype))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = batch_inputs(model, batch, text_tokens, device, dtype)
    seq = inputs["input_ids"].shape[1]
    vision = model.get_base_model().config.vision_config
    patches = (vision.image_size[0] // vision.patch_size[0]) ** 2 + 1

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    flops = flops_per_step(model, batch, seq, batch, patches)
    result = {
        "arch": arch, "attention": attention, "batch": batch, "seq": seq, "seconds_per_step": seconds,
        "tokens_per_s": batch * seq / seconds, "tflops_per_s": flops / seconds / 1e12,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cuda = torch.cuda.is_available()
    parser.add_argument(
        "--arch", nargs="+", choices=("tiny", "1b", "8b"), default=["1b", "8b"] if cuda else ["tiny"]
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="per GPU (default: 10, as the recipes; 4 on CPU)"
    )
    parser.add_argument("--text-tokens", type=int, default=300, help="text tokens per sample (default: 300)")
    parser.add_argument("--steps", type=int, default=10 if cuda else 3)
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    batch = args.batch_size or (10 if cuda else 4)
    attentions = ["sdpa"]
    if cuda and importlib.util.find_spec("flash_attn") is not None:
        attentions.append("flash_attention_2")
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"device: {name}; batch {batch}; image + {args.text_tokens} text tokens; {args.steps} timed steps")
    results = []
    for arch in args.arch:
        for attention in attentions:
            r = measure(arch, attention, batch, args.text_tokens, args.steps, args.warmup, device, dtype)
            if cuda:
                torch.cuda.empty_cache()  # the previous model is gone once measure() returns
            r["mfu"] = r["tflops_per_s"] / args.peak_tflops if cuda else None
            results.append(r)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (CPU)"
            memory = f"{r['peak_memory_gb']:.1f} GB" if r["peak_memory_gb"] else "-"
            print(
                f"{arch:>4} {attention:<18} seq {r['seq']:>4} {r['tokens_per_s']:>10.0f} tokens/s  "
                f"{r['tflops_per_s']:>8.3f} TFLOP/s  MFU {mfu:>10}  {r['seconds_per_step']:.3f} s/step  "
                f"peak {memory}"
            )
    if len(attentions) > 1:
        for arch in args.arch:
            by = {r["attention"]: r for r in results if r["arch"] == arch}
            ratio = by["flash_attention_2"]["tokens_per_s"] / by["sdpa"]["tokens_per_s"]
            print(f"{arch}: flash_attention_2 / sdpa = {ratio:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": name, "peak_tflops": args.peak_tflops, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
