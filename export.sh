#!/usr/bin/env bash
# Merge a LoRA adapter from train.sh into its base model (LLaMA-Factory export, sharded safetensors) into
# saves/export/FaceLLM-<size>, verify the merged logits against base+adapter on a probe image, and write a
# model card. ./export.sh --help for the options.
set -euo pipefail

# shellcheck source=facellm/common/environment.sh
source "$(dirname "${BASH_SOURCE[0]}")/facellm/common/environment.sh"
exec "$python" -m facellm.train.export "$@"
