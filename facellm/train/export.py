"""The launcher behind export.sh: merge a LoRA adapter with LLaMA-Factory, prove the merge, describe it.

1. The base model with the adapter applied (not merged) and with the adapter switched off are run on a probe
   image and prompt. This is the reference, and it is also where an adapter that does not fit its base is
   caught, before anything is written.
2. LLaMA-Factory's export (`llamafactory-cli export`'s function, in this process) writes the merged model
   (safetensors, sharded at --shard-gb); a full fine-tuning run is written as it is, without a merge.
3. The merged folder is loaded on its own and run on the same probe. It passes when its logits match the
   reference within  atol(dtype) + 0.1 x (the adapter's own effect on the logits);  a merge that lost, doubled
   or damaged the adapter fails loudly (exit 1) and no model card is written.
4. README.md (a model card: base, data, hyperparameters, steps, final loss, verification) goes into the
   export folder, next to verification.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from facellm.common.cli import FaceLLMError, first_line, run_cli
from facellm.common.files import REPO, read_json, write_json_atomic, write_text_atomic
from facellm.common.options import add_options, from_args, option, positive
from facellm.common.transcript import transcript
from facellm.train.card import ATOL, EFFECT_SHARE, model_card
from facellm.train.recipes import RESOLVED_CONFIG, model_size, template_system_prompt

PROBE_IMAGE = REPO / "assets" / "fairface-sample" / "fairface-img-margin025-trainval" / "val" / "1.jpg"
PROBE_PROMPT = "Describe this face in detail."


def _resolved_config(adapter: Path) -> dict:
    """The training config saved by train.sh (in the adapter folder, or its parent for checkpoint-N)."""
    for folder in (adapter, adapter.parent):
        path = folder / RESOLVED_CONFIG
        if path.is_file():
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            return config if isinstance(config, dict) else {}
    return {}


def _probe_inputs(processor, image_path: Path, prompt: str, template: str):
    """The probe laid out exactly as inference.py asks it (system prompt of TEMPLATE, training image size)."""
    from facellm.common.images import TRAINING_MAX_PIXELS, load_image
    from facellm.infer.protocol import Part, encode_training

    probe = [[Part("image", image_path), Part("text", prompt)]]
    return encode_training(
        processor, template_system_prompt(template), probe, lambda path: load_image(path, TRAINING_MAX_PIXELS)
    )


def _logits(model, inputs):
    import torch

    batch = {k: v.to(model.device) for k, v in inputs.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        return model(**batch).logits.float().cpu()


def _load(path: str, dtype: str, device: str):
    import torch
    from transformers import AutoModelForImageTextToText

    # on GPUs the model is spread over all of them: a 38B model does not fit one 80 GB GPU in bf16
    placement = {"device_map": "auto"} if device == "cuda" else {}
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=False, **placement
    )
    return (model if placement else model.to(device)).eval()


def reference_logits(base: str, adapter: Path, dtype: str, device: str, inputs, full: bool = False):
    """(logits of the trained model, logits of the bare base): for an adapter, from one load of the base;
    for a full fine-tuning run, from the run's own weights (the bare base only when it can be loaded)."""
    from facellm.infer.model import apply_adapter

    if full:
        try:
            trained = _logits(_load(str(adapter), dtype, device), inputs)
        except (OSError, ValueError) as error:
            raise FaceLLMError(f"{adapter}: cannot load the trained model ({first_line(error)})") from None
        try:
            bare = _logits(_load(base, dtype, device), inputs)
        except (OSError, ValueError):  # the model it started from is gone: no effect to report
            bare = trained
        _release_memory()
        return trained, bare
    try:
        model = _load(base, dtype, device)
    except (OSError, ValueError) as error:
        raise FaceLLMError(f"{base}: cannot load the base model ({first_line(error)})") from None
    model = apply_adapter(model, str(adapter), base).eval()
    with_adapter = _logits(model, inputs)
    with model.disable_adapter():
        without = _logits(model, inputs)
    del model
    _release_memory()  # the merged model is loaded next, in the same memory
    return with_adapter, without


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare(merged, reference, base, dtype: str) -> dict:
    error = (merged - reference).abs().max().item()
    effect = (reference - base).abs().max().item()
    tolerance = ATOL[dtype] + EFFECT_SHARE * effect
    return {
        "max_abs_diff": error,
        "adapter_effect": effect,
        "tolerance": tolerance,
        "top1_agreement": (merged.argmax(-1) == reference.argmax(-1)).float().mean().item(),
        "passed": bool(error <= tolerance),
    }


def export_dtype(out: Path) -> str:
    config = read_json(out / "config.json")
    named = config.get("dtype") or config.get("torch_dtype") or "float32"
    return named if named in ATOL else "float32"


class Verifier:
    """The probe run through base+adapter (before the export), then through the merged folder (after)."""

    def __init__(
        self, base: str, adapter: Path, template: str, dtype: str, device: str, probe: Path, prompt: str,
        full: bool = False,
    ):  # fmt: skip
        from transformers import AutoProcessor

        from facellm.infer.model import processor_source

        source = str(adapter) if full else processor_source(base, str(adapter))
        try:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as error:
            raise FaceLLMError(f"{source}: cannot load the processor ({first_line(error)})") from None
        self.inputs = _probe_inputs(processor, probe, prompt, template)
        self.dtype, self.device = dtype, device
        self.probe, self.prompt = probe, prompt
        self.reference, self.bare = reference_logits(base, adapter, dtype, device, self.inputs, full)

    def check(self, out: Path) -> dict:
        try:
            merged = _logits(_load(str(out), self.dtype, self.device), self.inputs)
        except (OSError, ValueError) as error:
            raise FaceLLMError(f"{out}: cannot load the merged model ({first_line(error)})") from None
        if merged.shape != self.reference.shape:
            raise FaceLLMError(
                f"{out}: the merged model is not the adapter's base (logits {tuple(merged.shape)})"
            )
        saved = export_dtype(out)
        precision = saved if saved != "float32" else self.dtype  # the coarser of storage and compute
        result = compare(merged, self.reference, self.bare, precision)
        result.update(
            dtype=precision, saved_dtype=saved, compute_dtype=self.dtype, probe_image=self.probe.name,
            probe_prompt=self.prompt, tokens=int(self.reference.shape[1]),
        )  # fmt: skip
        write_json_atomic(out / "verification.json", result)
        return result


def _overlaps(a: Path, b: Path) -> bool:
    """Whether one folder is, or lies inside, the other (after symlinks and `..`)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _check_out(out: Path, adapter: Path, base: str, args: ExportConfig) -> None:
    """--out may neither be nor hold nor lie inside the inputs, and an existing export is only replaced when
    asked: a typo must not cost the base model or an earlier export."""
    for name, folder in (("--adapter", adapter), ("--base", Path(base))):
        if folder.exists() and _overlaps(out, folder):
            raise FaceLLMError(f"{out}: --out overlaps {name} {folder}; write the export to another folder")
    if args.verify_only:
        if not (out / "config.json").is_file():
            raise FaceLLMError(f"{out}: no merged model to verify (no config.json)")
        return
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / "config.json").is_file():
        raise FaceLLMError(f"{out}: exists, is not empty and is not a model folder; choose another --out")
    if not args.replace:
        raise FaceLLMError(
            f"{out}: holds an earlier export; pass --replace to overwrite it, or choose another --out"
        )


@dataclass
class ExportConfig:
    """Every setting of export.sh; each is also the command-line option of the same name."""

    adapter: Path = option(
        Path("saves/lora/internvl3-1b"), "output folder of train.sh: a LoRA adapter, or a full fine-tuning "
        "run (finetuning_type: full), which is exported as it is, without a merge", parse=Path,
    )  # fmt: skip
    base: str | None = option(
        None, "base model (default: the one adapter_config.json names, or the run's model_name_or_path)"
    )
    out: Path | None = option(None, "merged model folder (default: saves/export/FaceLLM-<size>)", parse=Path)
    template: str | None = option(None, "chat template (default: the training one, else intern_vl)")
    dtype: str = option("auto", "weights of the export (auto: bf16 where supported)", choices=("auto", *ATOL))
    shard_gb: int = option(5, "maximum shard size in GB", parse=positive(int))
    device: str | None = option(None, "device for the verification (default: cuda if present)")
    probe_image: Path = option(PROBE_IMAGE, "image of the verification probe", parse=Path)
    probe_prompt: str = option(PROBE_PROMPT, "prompt of the verification probe")
    verify_only: bool = option(False, "only verify an existing --out against the adapter")
    no_verify: bool = option(False, "skip the verification (e.g. too little memory)")
    replace: bool = option(
        False, "delete an existing export in --out first (its weights, card and verification); without it "
        "an existing export is refused",
    )  # fmt: skip
    verbose: bool = option(
        False, "show LLaMA-Factory's and transformers' whole output (always kept in the log)"
    )


def _merge(config: ExportConfig, base: str, template: str, out: Path, view, full: bool = False) -> None:
    """LLaMA-Factory's export (what `llamafactory-cli export` runs, called in this process, where transformers
    is already loaded) of the adapter onto BASE, or of a full run as it is, into OUT (an earlier export is
    replaced only now)."""
    model = {"model_name_or_path": str(config.adapter), "finetuning_type": "full"} if full else {
        "model_name_or_path": base, "adapter_name_or_path": str(config.adapter), "finetuning_type": "lora"
    }  # fmt: skip
    arguments = {
        **model, "template": template, "trust_remote_code": False, "infer_dtype": config.dtype,
        "export_dir": str(out), "export_size": config.shard_gb, "export_legacy_format": False,
    }  # fmt: skip
    if config.replace and out.exists():  # only now: a refused adapter above leaves the old export whole
        shutil.rmtree(out)
        print(f"replaced: the earlier export in {out} was deleted", file=view)
    print(f"export: {'writing' if full else 'merging'} the model into {out}", file=view, flush=True)
    from llamafactory.train.tuner import export_model

    try:
        export_model(arguments)
    except (Exception, SystemExit) as error:  # its argument checks exit
        raise FaceLLMError(
            f"{config.adapter}: LLaMA-Factory's export failed ({first_line(error, named=True)})"
        ) from None
    _release_memory()
    print(f"merged model: {out}", file=view)


def export(config: ExportConfig) -> None:
    adapter = config.adapter
    recipe = _resolved_config(adapter) if adapter.is_dir() else {}
    full = recipe.get("finetuning_type") == "full" and (adapter / "config.json").is_file()
    if not full and not (adapter / "adapter_config.json").is_file():
        raise FaceLLMError(
            f"{adapter}: neither a LoRA adapter folder (no adapter_config.json) nor a full fine-tuning run "
            "of train.sh; run train.sh first"
        )
    if full:
        base = config.base or str(recipe.get("model_name_or_path", adapter))  # what training started from
    else:
        from facellm.infer.model import resolve_model

        base, _ = resolve_model(str(adapter), config.base)  # the base adapter_config.json names, or --base
    if not config.probe_image.is_file():
        raise FaceLLMError(f"{config.probe_image}: probe image not found")
    template = config.template or str(recipe.get("template", "intern_vl"))
    out = config.out or Path("saves/export") / f"FaceLLM-{model_size(base)}"
    _check_out(out, adapter, base, config)
    # the run's folder (train.sh wrote it, and keeps train.log there); beside the export when it is read-only
    log = adapter / "export.log" if os.access(adapter, os.W_OK) else out.with_name(f"{out.name}.export.log")
    print(f"export: full log in {log}{'' if config.verbose else ' (--verbose shows it)'}", file=sys.stderr)
    with transcript(log, config.verbose) as view:
        result = _export_and_verify(config, base, template, out, full, view)
    if result is None:
        return
    line = (
        f"max |merged - reference| logit {result['max_abs_diff']:.3g} vs tolerance {result['tolerance']:.3g} "
        f"(adapter effect {result['adapter_effect']:.3g}, {result['dtype']}, top-1 agreement "
        f"{100 * result['top1_agreement']:.1f}%)"
    )
    if not result["passed"]:
        print(f"error: {out}: MERGE VERIFICATION FAILED: {line}", file=sys.stderr)
        sys.exit(1)
    print(f"verified: {line}")
    write_text_atomic(out / "README.md", model_card(out.name, base, adapter, recipe, result))
    print(f"model card: {out / 'README.md'}")


def _export_and_verify(
    config: ExportConfig, base: str, template: str, out: Path, full: bool, view
) -> dict | None:
    """The merge and its verification (the verification's result; None with --no-verify), LLaMA-Factory's
    and transformers' output going to the log."""
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    verifier = None
    if not config.no_verify:
        # the reference first: an adapter that does not fit its base fails here, before anything is written
        print(f"export: loading the reference ({base} + {config.adapter}) on {device}", file=view, flush=True)
        auto = "bfloat16" if device.startswith("cuda") else "float32"
        compute = config.dtype if config.dtype != "auto" else auto
        verifier = Verifier(
            base, config.adapter, template, compute, device, config.probe_image, config.probe_prompt, full
        )
    if not config.verify_only:
        _merge(config, base, template, out, view, full)
    if verifier is None:
        print("export: verification skipped (--no-verify); no model card written", file=view)
        return None
    print(f"export: verifying {out} against the reference", file=view, flush=True)
    return verifier.check(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="./export.sh",
        description="Merge a LoRA adapter from train.sh into its base model (safetensors, sharded), "
        "verify the merge against base+adapter on a probe image, and write a model card.",
    )
    add_options(parser, ExportConfig)
    export(from_args(ExportConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    run_cli(main)
