#!/usr/bin/env bash
# LoRA SFT of InternVL3 with LLaMA-Factory from a recipe in configs/.
#
#   ./train.sh RECIPE [key=value ...] [--dry-run] [--no-preflight] [--fresh]
#
# The recipe and its overrides are checked (argument names, DeepSpeed, the whole dataset) before any model
# is loaded; a run resumes from the newest complete checkpoint in its output_dir. ./train.sh --help for more.
set -euo pipefail

# shellcheck source=facellm/common/environment.sh
source "$(dirname "${BASH_SOURCE[0]}")/facellm/common/environment.sh"
exec "$python" -m facellm.train.launch "$@"
