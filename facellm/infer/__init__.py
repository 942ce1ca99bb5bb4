"""Stage 5, inference: the InternVL3-hf model wrapper, batch answering, face cropping."""
