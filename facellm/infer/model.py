"""Answering questions about face images with an InternVL3-hf model: a merged FaceLLM export, a hub id, or a
LoRA adapter folder (loaded on top of the base model it names).

One class, `FaceLLMModel`, used by `inference.py` and by the VLMEvalKit plug-in. It loads the model with
transformers' native InternVL classes (no remote code) and prompts it under one of the protocols of
`facellm.infer.protocol`: `training` (inference.py's: as LLaMA-Factory's `intern_vl` template trained it) or
`released` (the FaceLLM authors' evaluation). Several prompts are answered in one left-padded batch by
`generate_batch`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from facellm.common.cli import FaceLLMError, first_line
from facellm.common.files import read_json
from facellm.common.images import TRAINING_MAX_PIXELS, load_image
from facellm.common.options import DTYPES
from facellm.infer.protocol import Part, encode_released, encode_training, find_protocol, prompt_tokens

DEFAULT_MODEL = "Idiap/FaceLLM-1B"
TRAINING_TEMPLATE = "intern_vl"


# The default system prompt of LLaMA-Factory's intern_vl template, which it inserted into every training
# sample. Written here once so that inference starts without importing LLaMA-Factory (about 20 s); the tests
# compare it with LLaMA-Factory's own template, so an upgrade that changes it fails there, not silently.
TRAINING_SYSTEM_PROMPT = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"  # noqa: E501

MAX_NEW_TOKENS = 500  # the default answer length of inference.py and of FaceLLMModel


def training_system_prompt() -> str:
    """The system prompt the FaceLLM recipes trained with (LLaMA-Factory's intern_vl default)."""
    return TRAINING_SYSTEM_PROMPT


# What a hub id looks like (huggingface_hub's own rule): NAME or ORG/NAME of letters, digits, _ . -
_HUB_ID = re.compile(r"(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b")
EXPORT_HINT = "export one with ./export.sh (or pass a hub id ORG/NAME)"


def could_be_hub_id(name: str) -> bool:
    """False for a name that only a local path can be (a leading / . or ~, two slashes, a trailing slash):
    transformers would send it to the hub anyway and answer, after its imports, with a hub error."""
    return bool(_HUB_ID.fullmatch(name)) and "--" not in name and ".." not in name


def check_model_path(model: str, hint: str = EXPORT_HINT) -> None:
    """Refuse MODEL when it can only be a local folder and there is none, saying how to make one (HINT)."""
    if not Path(model).exists() and not could_be_hub_id(model):
        raise FaceLLMError(f"{model}: no such model folder; {hint}")


def locate_model(model: str, base: str | None = None, hint: str = EXPORT_HINT) -> tuple[str, str | None]:
    """(model to load, LoRA adapter folder or None) for MODEL: a merged model folder, an adapter folder
    (its base comes from adapter_config.json unless BASE is given), or a hub id. Reads file names and small
    JSON files only, so that a wrong path is refused before torch and transformers are imported."""
    check_model_path(model, hint)
    path = Path(model)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            _check_adapter_weights_exist(path)
            config = read_json(path / "adapter_config.json")
            named = config.get("base_model_name_or_path") if isinstance(config, dict) else None
            if not (base or named):
                raise FaceLLMError(f"{path}: adapter_config.json names no base model; pass --base")
            check_model_path(
                str(base or named),
                "--base takes a model folder or a hub id ORG/NAME"
                if base
                else f"it is the base model {path / 'adapter_config.json'} names; pass --base DIR|HUB_ID",
            )
            return str(base or named), str(path)
        if (path / "config.json").is_file():
            return str(path), None
        raise FaceLLMError(
            f"{path}: neither a model (no config.json) nor a LoRA adapter (no adapter_config.json)"
        )
    if path.exists():
        raise FaceLLMError(f"{path}: not a model folder")
    return model, None


def resolve_model(model: str, base: str | None = None) -> tuple[str, str | None]:
    """`locate_model`, with an adapter's weights opened and checked too."""
    weights, adapter = locate_model(model, base)
    if adapter:
        check_adapter_weights(Path(adapter))
    return weights, adapter


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _check_adapter_weights_exist(folder: Path) -> None:
    if not (folder / ADAPTER_WEIGHTS).is_file():
        pickled = (
            " (it holds adapter_model.bin: only safetensors are loaded)"
            if (folder / "adapter_model.bin").is_file()
            else ""
        )
        raise FaceLLMError(
            f"{folder}: LoRA adapter folder without its weights ({ADAPTER_WEIGHTS}){pickled}; "
            "train again, or use one of its checkpoint-N folders"
        )


def check_adapter_weights(folder: Path) -> None:
    """Refuse, in one line, an adapter folder whose weights are missing, pickled or damaged (a training run
    killed while saving, a copy cut short), before anything loads it."""
    _check_adapter_weights_exist(folder)
    weights = folder / ADAPTER_WEIGHTS
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("no tensors in it")
    except Exception as error:  # safetensors reports a cut or empty file with its own error type
        raise FaceLLMError(
            f"{weights}: damaged adapter weights ({first_line(error)}); train again, or use one of "
            "the run's checkpoint-N folders"
        ) from None


def processor_source(weights: str, adapter: str | None) -> str:
    """Where the processor is read from: an adapter folder written by LLaMA-Factory carries the processor it
    trained with; otherwise the model's own."""
    return adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else weights


class FaceLLMModel:
    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        system: str | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        base: str | None = None,
        max_pixels: int | None = TRAINING_MAX_PIXELS,
        protocol: str = "training",
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
        self.protocol = find_protocol(protocol)
        if system is not None and not self.protocol.system_prompt:
            raise FaceLLMError(f"the {self.protocol.name} protocol sends no system message; drop system=")
        dtype = dtype or self.protocol.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        if dtype not in DTYPES:
            raise FaceLLMError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        weights, adapter = resolve_model(model_path, base)
        try:
            self.processor = AutoProcessor.from_pretrained(
                processor_source(weights, adapter), trust_remote_code=False
            )
            self.model = AutoModelForImageTextToText.from_pretrained(
                weights, dtype=getattr(torch, dtype), trust_remote_code=False
            )
        except (OSError, ValueError) as error:
            raise FaceLLMError(f"{weights}: cannot load model ({first_line(error)})") from None
        if adapter:
            self.model = _merge_adapter(self.model, adapter, weights)
        try:
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as error:
            raise FaceLLMError(f"device {self.device!r} is not usable here ({first_line(error)})") from None
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.dtype = dtype
        self.system = (
            (training_system_prompt() if system is None else system) if self.protocol.system_prompt else None
        )
        self.max_new_tokens = max_new_tokens
        self.max_pixels = max_pixels

    def _image(self, value) -> Image.Image:
        from facellm.common.images import downscale, to_rgb

        if isinstance(value, Image.Image):
            return downscale(to_rgb(value), self.max_pixels)
        return load_image(value, self.max_pixels)

    def encode(self, parts: list[Part] | list[list[Part]]):
        """The model inputs (token ids, pixels) for one user turn of interleaved images and texts, or for a
        batch of such turns (left-padded)."""
        batch = parts if parts and isinstance(parts[0], list) else [parts]
        if self.protocol.name == "released":
            return encode_released(self.processor, batch)
        return encode_training(self.processor, self.system, batch, self._image)

    def prompt_tokens(self, parts: list[Part]) -> int:
        """The length in tokens of one user turn's model inputs, from its text and image sizes (no image is
        decoded): what batches are sized by."""
        return prompt_tokens(self.processor, self.protocol, parts, self.system, self.max_pixels)

    @property
    def context_length(self) -> int | None:
        """Positions the language model was built for (prompt and answer together), when it says."""
        config = self.model.config
        return getattr(getattr(config, "text_config", config), "max_position_embeddings", None)

    def _room(self, prompt_tokens: int) -> int:
        """New tokens left after a prompt of PROMPT_TOKENS; a prompt that leaves none is refused (past its
        context the model answers garbage)."""
        limit = self.context_length
        if limit is None:
            return 1 << 30
        if prompt_tokens >= limit:
            raise FaceLLMError(
                f"the prompt is {prompt_tokens} tokens (images included) and the model reads at most "
                f"{limit}; shorten it"
            )
        return limit - prompt_tokens

    def check_fits(self, parts: list[Part]) -> None:
        """Refuse (FaceLLMError) one user turn that does not fit the model's context."""
        self._room(self.encode(parts)["input_ids"].shape[1])

    def generate_batch(
        self,
        batch: list[list[Part]],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        streamer=None,
        **generate_options,
    ) -> list[tuple[str, int]]:
        """(answer, generated token count) for each user turn of BATCH, in one forward pass per token.
        Greedy unless TEMPERATURE > 0; GENERATE_OPTIONS go to transformers' `generate` as they are."""
        import torch

        inputs = self.encode(batch).to(self.device)
        room = self._room(inputs["input_ids"].shape[1])
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sampling = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=min(max_new_tokens or self.max_new_tokens, room),
                streamer=streamer,
                **sampling,
                **generate_options,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        stop = {
            self.model.generation_config.pad_token_id,
            *_as_list(self.model.generation_config.eos_token_id),
        }
        results = []
        for row in new_tokens.tolist():
            length = next((i + 1 for i, token in enumerate(row) if token in stop), len(row))
            results.append((self.processor.decode(row, skip_special_tokens=True).strip(), length))
        return results

    def generate(
        self,
        parts: list[Part],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        **generate_options,
    ) -> str:
        """The answer to one user turn made of interleaved images and texts (greedy by default)."""
        return self.generate_batch([parts], max_new_tokens, temperature, **generate_options)[0][0]

    def answer(self, image: str | os.PathLike | Image.Image, prompt: str, **options) -> str:
        return self.generate([Part("image", image), Part("text", prompt)], **options)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def apply_adapter(model, adapter: str, base: str):
    """MODEL (loaded from BASE) with the LoRA ADAPTER applied through PEFT, not merged."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError, AttributeError) as error:
        raise FaceLLMError(
            f"{adapter}: this adapter does not fit the base model {base} ({first_line(error)})"
        ) from None


def _merge_adapter(model, adapter: str, base: str):
    """BASE with the LoRA ADAPTER merged in (the same weights export.sh would write)."""
    return apply_adapter(model, adapter, base).merge_and_unload()
