"""FaceLLM as a VLMEvalKit model: InternVL3-hf through transformers' native classes (no remote code)."""

from vlmeval.vlm.base import BaseModel

from facellm.inference import DEFAULT_MODEL, FaceLLMModel, Part


class FaceLLM(BaseModel):
    INTERLEAVE = True  # FaceXBench has questions with several images between texts

    def __init__(self, model_path=DEFAULT_MODEL, max_new_tokens=64, system=None, device=None, **kwargs):
        super().__init__()
        self.model_path = model_path
        # Benchmark images reach the model at their own size, as in the released evaluation.
        self.engine = FaceLLMModel(
            model_path, device=device, system=system, max_new_tokens=max_new_tokens, max_pixels=None
        )

    def generate_inner(self, message, dataset=None):
        return self.engine.generate([Part(item["type"], item["value"]) for item in message])
