#!/usr/bin/env bash
# LoRA SFT of InternVL3 with LLaMA-Factory from a recipe in configs/.
#
#   ./train.sh RECIPE [key=value ...]
#
# key=value pairs override the recipe (e.g. output_dir=saves/lora/run2 max_steps=100).
# One GPU: runs as is. All GPUs of a node: LLaMA-Factory starts torchrun by itself when it sees more than one
# GPU (FORCE_TORCHRUN=1 forces it). Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT on
# every node and run the same command.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  echo "recipes:"; ls "$(dirname "$0")"/configs/*.yaml | sed 's/^/  /'
  [ $# -lt 1 ] && exit 2 || exit 0
fi

recipe=$1; shift
if [ ! -f "$recipe" ]; then
  echo "error: $recipe: recipe not found (see configs/)" >&2
  exit 2
fi
for override in "$@"; do
  case "$override" in
    *=*) ;;
    *) echo "error: override '$override' is not key=value" >&2; exit 2 ;;
  esac
done
if ! command -v llamafactory-cli >/dev/null 2>&1; then
  echo "error: llamafactory-cli not found: run 'make install' or use 'uv run ./train.sh ...'" >&2
  exit 2
fi

exec llamafactory-cli train "$recipe" "$@"
