"""The model card export.sh writes beside an export: base, method, data, hyperparameters, loss, check."""

from __future__ import annotations

import contextlib
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.datasets import open_datasets
from facellm.common.files import read_json
from facellm.infer.model import could_be_hub_id
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


# FairFace on the Hub (CC BY 4.0): the images FairFaceGPT's questions are about.
FAIRFACE_HUB = "HuggingFaceM4/FairFace"
FAIRFACEGPT = "fairfacegpt"  # the dataset name fairfacegpt.py registers


def base_name(base: str) -> tuple[str, bool]:
    """(what the card calls the base model, whether it is a local folder): a hub id as it is; a folder by its
    name only, never by a path of the machine that exported it."""
    if Path(base).exists() or not could_be_hub_id(base):
        return Path(base).name, True
    return base, False


def _public(value: object) -> str:
    """A recipe value as the card shows it: an absolute or home path by its last part (a local folder says
    nothing to a reader elsewhere, and names the exporting user's folders)."""
    text = str(value)
    return Path(text).name if text.startswith(("/", "~")) else text


def _front_matter(base: str, local: bool, datasets: list[str], full: bool) -> str:
    """The Hub's YAML metadata. license is this toolkit's; the weights also carry the base model's."""
    lines = [
        "---",
        "license: apache-2.0",
        f"base_model: {base}",
        *(["datasets:", *(f"- {name}" for name in datasets)] if datasets else []),
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags:",
        *(f"- {tag}" for tag in ("facellm", "face-understanding", "internvl3", "llama-factory")),
        f"- {'full-fine-tuning' if full else 'lora'}",
        *(["- local-base-model"] if local else []),
        "---",
    ]
    return "\n".join(lines)


def _rows(config: dict, full: bool, base: str, local: bool, samples: int | None, summary: dict) -> list:
    datasets = str(config.get("dataset", "?"))
    pixels = config.get("image_max_pixels", "?")
    rows = [
        ("base model", f"`{base}`" + (" (a local model folder)" if local else "")),
        ("method", "full fine-tuning (every weight)" if full else "LoRA, merged into the base weights"),
        ("dataset", f"`{datasets}`" + (f", {samples:,} samples" if samples else "")),
        ("images", f"`{_public(config.get('media_dir', '?'))}`, at most {pixels} pixels"),
    ]
    for key in (
        "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "freeze_vision_tower",
        "freeze_multi_modal_projector", "learning_rate", "lr_scheduler_type",
        "warmup_ratio", "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "cutoff_len", "bf16", "deepspeed", "template", "seed",
    ):  # fmt: skip
        if key in config:
            rows.append((key, f"`{_public(config[key])}`"))
    rows.append(("steps", str(summary.get("global_step", "?"))))
    for label, key in (("final training loss", "final_loss"), ("first logged loss", "first_loss")):
        rows.append((label, f"{summary[key]:.4f}" if summary.get(key) is not None else "?"))
    return rows


def model_card(name: str, base: str, adapter: Path, config: dict, verification: dict) -> str:
    full = config.get("finetuning_type") == "full"
    try:
        summary = training_summary(adapter)
    except FaceLLMError:
        summary = {}
    shown, local = base_name(base)
    names = [part.strip() for part in str(config.get("dataset", "")).split(",")]
    from_fairface = FAIRFACEGPT in names  # FairFaceGPT is about FairFace's images, whatever else is mixed in
    rows = _rows(config, full, shown, local, _dataset_size(config, adapter), summary)
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    how = "fully fine-tuned" if full else "fine-tuned with LoRA"
    then = "then saved as a standalone model" if full else "then merged into a standalone model"
    run = "Training run" if full else "Adapter"
    compared = "the weights as training left them" if full else "the base model with the adapter applied"
    effect = "the training's own effect" if full else "the adapter's own effect"
    data = (
        f"FairFaceGPT (question-answer pairs about the faces of FairFace, `{FAIRFACE_HUB}` on the Hub)"
        if from_fairface
        else f"the dataset `{config.get('dataset', '?')}`"
    )
    terms = (
        "; FairFace, whose faces the training data is about, is licensed under CC BY 4.0"
        if from_fairface
        else ""
    )
    v = verification
    return f"""{_front_matter(shown, local, [FAIRFACE_HUB] if from_fairface else [], full)}

# {name}

{name} is `{shown}` {how} on {data}
for face understanding, {then}. Produced by the FaceLLM toolkit (`export.sh`).

## Training

| | |
|---|---|
{table}

{run}: `{adapter.name}`.

## Merge verification

On a probe image (`{v["probe_image"]}`) and prompt ("{v["probe_prompt"]}"), {v["tokens"]} positions,
the exported model's logits differ from {compared} by at most
{v["max_abs_diff"]:.3g}; the tolerance is {v["tolerance"]:.3g} ({ATOL[v["dtype"]]:g} for {v["dtype"]}
plus {EFFECT_SHARE:g} x {effect}, {v["adapter_effect"]:.3g}). Top-1 tokens agree at
{100 * v["top1_agreement"]:.1f}% of positions. Passed.

## Use

```bash
python inference.py --model <this folder> --path-image face.jpg --prompt "Describe this face in detail."
```

## Licence

The FaceLLM toolkit that trained and exported this model is licensed under Apache-2.0 (the `license` above).
The weights derive from `{shown}` and also carry its licence (see the base model's card){terms}.
The model describes faces; do not use it to identify people or to make decisions about them.
"""
