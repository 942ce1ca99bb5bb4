"""Stage 1, data generation: FairFace labels, prompts, the openai/batch/labels backends, reports."""
