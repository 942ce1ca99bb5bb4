"""The model card export.sh writes beside an export: base, method, data, hyperparameters, loss, check."""

from __future__ import annotations

import contextlib
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.datasets import open_datasets
from facellm.common.files import read_json
from facellm.train.report import training_summary

# Largest acceptable |merged - reference| logit difference, on top of 10% of the adapter's own effect:
# float32 merges are exact up to summation order; half precision rounds every merged weight once.
ATOL = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.25}
EFFECT_SHARE = 0.1


def _dataset_size(config: dict, adapter: Path | None = None) -> int | None:
    """Records in the recipe's datasets, read as LLaMA-Factory reads them; None when that fails or none is
    local. The count train.sh's preflight saved beside the adapter is taken when there is one: it came from
    the same reader, and reading the datasets again costs a LLaMA-Factory import (about 13 s)."""
    for folder in (adapter, adapter.parent) if adapter else ():
        with contextlib.suppress(OSError, ValueError, FaceLLMError):
            saved = read_json(folder / "preflight.json")
            if isinstance(saved, dict) and isinstance(saved.get("records"), int):
                return saved["records"]
    try:
        dataset_dir = str(config.get("dataset_dir", "data"))
        found = open_datasets(dataset_dir, str(config["dataset"]), config.get("media_dir") or dataset_dir)
    except (FaceLLMError, KeyError, OSError):
        return None
    local = [len(dataset) for dataset in found if dataset.local]
    return sum(local) if local else None


def model_card(name: str, base: str, adapter: Path, config: dict, verification: dict) -> str:
    full = config.get("finetuning_type") == "full"
    try:
        summary = training_summary(adapter)
    except FaceLLMError:
        summary = {}
    samples = _dataset_size(config, adapter)
    rows = [
        ("base model", f"`{base}`"),
        ("method", "full fine-tuning (every weight)" if full else "LoRA, merged into the base weights"),
        ("dataset", f"`{config.get('dataset', '?')}`" + (f", {samples:,} samples" if samples else "")),
        ("images", f"`{config.get('media_dir', '?')}`, at most {config.get('image_max_pixels', '?')} pixels"),
    ]
    for key in (
        "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "freeze_vision_tower",
        "freeze_multi_modal_projector", "learning_rate", "lr_scheduler_type",
        "warmup_ratio", "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "cutoff_len", "bf16", "deepspeed", "template", "seed",
    ):  # fmt: skip
        if key in config:
            rows.append((key, f"`{config[key]}`"))
    rows += [
        ("steps", str(summary.get("global_step", "?"))),
        (
            "final training loss",
            f"{summary['final_loss']:.4f}" if summary.get("final_loss") is not None else "?",
        ),
        (
            "first logged loss",
            f"{summary['first_loss']:.4f}" if summary.get("first_loss") is not None else "?",
        ),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    how = "fully fine-tuned" if full else "fine-tuned with LoRA"
    then = "then saved as a standalone model" if full else "then merged into a standalone model"
    run = "Training run" if full else "Adapter"
    compared = "the weights as training left them" if full else "the base model with the adapter applied"
    effect = "the training's own effect" if full else "the adapter's own effect"
    v = verification
    return f"""---
base_model: {base}
library_name: transformers
pipeline_tag: image-text-to-text
tags: [facellm, face-understanding, internvl3, {"full-fine-tuning" if full else "lora"}, llama-factory]
---

# {name}

{name} is `{base}` {how} on FairFaceGPT (question-answer pairs about FairFace faces) for face
understanding, {then}. Produced by the FaceLLM toolkit (`export.sh`).

## Training

| | |
|---|---|
{table}

{run}: `{adapter}`.

## Merge verification

On a probe image (`{v["probe_image"]}`) and prompt ("{v["probe_prompt"]}"), {v["tokens"]} positions,
the exported model's logits differ from {compared} by at most
{v["max_abs_diff"]:.3g}; the tolerance is {v["tolerance"]:.3g} ({ATOL[v["dtype"]]:g} for {v["dtype"]}
plus {EFFECT_SHARE:g} x {effect}, {v["adapter_effect"]:.3g}). Top-1 tokens agree at
{100 * v["top1_agreement"]:.1f}% of positions. Passed.

## Use

```bash
python inference.py --model <this folder> --path_image face.jpg --prompt "Describe this face in detail."
```

The model inherits the licence of its base model and the terms of FairFace (CC BY 4.0). It describes faces;
do not use it to identify people or to make decisions about them.
"""
