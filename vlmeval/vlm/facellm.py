"""FaceLLM as a VLMEvalKit model: InternVL3-hf through transformers' native classes (no remote code)."""

import os
import warnings
from pathlib import Path

from vlmeval.smp import parse_file
from vlmeval.vlm.base import BaseModel

from facellm.common.cli import FaceLLMError
from facellm.common.images import IMAGE_SUFFIXES
from facellm.infer.model import DEFAULT_MODEL, FaceLLMModel, Part
from facellm.infer.protocol import DEFAULT_PROTOCOL, find_protocol


class FaceLLM(BaseModel):
    INTERLEAVE = True  # FaceXBench has questions with several images between texts

    def __init__(
        self, model_path=DEFAULT_MODEL, protocol=DEFAULT_PROTOCOL, max_new_tokens=None, system=None,
        device=None, dtype=None, **kwargs,
    ):  # fmt: skip
        super().__init__()
        if kwargs:  # VLMEvalKit passes its own options to every model; a typo should not pass unnoticed
            warnings.warn(f"FaceLLM ignores {', '.join(sorted(kwargs))}", stacklevel=2)
        self.model_path = model_path
        # The protocol (facellm.infer.protocol) sets the prompt layout, the answer length and the dtype; the
        # last two can be given. Benchmark images reach the model at their own size under both, as in the
        # released evaluation.
        chosen = find_protocol(protocol)
        self.engine = FaceLLMModel(
            model_path, device=device, dtype=dtype, system=system, max_pixels=None, protocol=chosen.name,
            max_new_tokens=max_new_tokens or chosen.max_new_tokens,
        )  # fmt: skip

    def prompt_tokens(self, message) -> int:
        """The length in tokens of a VLMEvalKit message's model inputs (how the runner sizes batches)."""
        return self.engine.prompt_tokens(_parts(message))

    def preproc_content(self, inputs):
        """VLMEvalKit's, with an error naming the file where VLMEvalKit would fail a bare assertion: an image
        item whose path is a folder or a file that is not an image by its name."""
        if isinstance(inputs, list):
            for item in inputs:
                if isinstance(item, dict) and item.get("type") == "image":
                    _check_image_file(item.get("value"))
        return super().preproc_content(inputs)

    def generate_inner(self, message, dataset=None):
        return self.engine.generate(_parts(message))

    def generate_batch(self, messages, dataset=None):
        """Answers to several messages in one left-padded batch, equal to the greedy answers `generate` gives
        one at a time. Each message is normalised and checked as `generate` does it."""
        batch = []
        for message in messages:
            kind = self.check_content(message)
            message = self.preproc_content(message) if kind != "unknown" else None
            if message is None or any(item["type"] not in self.allowed_types for item in message):
                raise ValueError(f"not a VLMEvalKit message: {message!r}")
            batch.append(_parts(message))
        return [answer for answer, _ in self.engine.generate_batch(batch)]


def _parts(message) -> list[Part]:
    parts = []
    for item in message:
        value = item["value"]
        # VLMEvalKit turns an image path that does not exist into a text item: refuse to answer a question
        # whose image the model would never see.
        if item["type"] == "text" and _looks_like_image_path(value):
            raise FaceLLMError(f"{value}: image not found (it would reach the model as text)")
        parts.append(Part(item["type"], value))
    return parts


def _looks_like_image_path(text) -> bool:
    text = str(text).strip()
    return bool(text) and len(text.split()) == 1 and Path(text).suffix.lower() in IMAGE_SUFFIXES


def _check_image_file(value) -> None:
    if not isinstance(value, str) or not os.path.exists(value):
        return  # a missing path is refused by _parts (VLMEvalKit makes it a text item)
    if not os.path.isfile(value):
        raise FaceLLMError(f"{value}: not an image (a folder)")
    mime, _ = parse_file(value)
    if mime in (None, "unknown"):
        raise FaceLLMError(f"{value}: not an image file (its name has no image suffix such as .png or .jpg)")
    if mime.split("/")[0] != "image":
        raise FaceLLMError(f"{value}: not an image file ({mime}, by its name)")
