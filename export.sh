#!/usr/bin/env bash
# Merge a LoRA adapter from train.sh into its base model (LLaMA-Factory export, sharded safetensors) into
# saves/export/FaceLLM-<size>, verify the merged logits against base+adapter on a probe image, and write a
# model card. ./export.sh --help for the options.
set -euo pipefail

if ! command -v llamafactory-cli >/dev/null 2>&1; then
  echo "error: llamafactory-cli not found: run 'make install' or use 'uv run ./export.sh ...'" >&2
  exit 2
fi
python=$(dirname "$(command -v llamafactory-cli)")/python
exec "$python" -m facellm.train.export "$@"
