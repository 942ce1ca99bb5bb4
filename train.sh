#!/usr/bin/env bash
# LoRA SFT of InternVL3 with LLaMA-Factory from a recipe in configs/.
#
#   ./train.sh RECIPE [key=value ...] [--dry-run] [--no-preflight] [--fresh]
#
# The recipe and its overrides are checked (argument names, DeepSpeed, the whole dataset) before any model
# is loaded; a run resumes from the newest complete checkpoint in its output_dir. ./train.sh --help for more.
set -euo pipefail

if ! command -v llamafactory-cli >/dev/null 2>&1; then
  echo "error: llamafactory-cli not found: run 'make install' or use 'uv run ./train.sh ...'" >&2
  exit 2
fi
# the Python of the environment that holds LLaMA-Factory, whatever `python` is on PATH
python=$(dirname "$(command -v llamafactory-cli)")/python
exec "$python" -m facellm.train.launch "$@"
