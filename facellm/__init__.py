"""FaceLLM: face-understanding multimodal LLMs built on InternVL3."""
