#!/usr/bin/env bash
# Merge a LoRA adapter into its base model and save a standalone model folder (safetensors) with
# LLaMA-Factory's `export`. The merged folder is what inference.py, serving and evaluation load.
set -euo pipefail

usage() {
  cat <<USAGE
usage: ./export.sh [--base MODEL] [--adapter DIR] [--out DIR] [--template NAME] [--dtype DTYPE] [--shard-gb N]

  --base MODEL     base model: hub id or folder         (default: OpenGVLab/InternVL3-1B-hf)
  --adapter DIR    LoRA output folder of train.sh       (default: saves/lora/internvl3-1b)
  --out DIR        merged model folder to write         (default: saves/export/FaceLLM-1B)
  --template NAME  LLaMA-Factory chat template          (default: intern_vl)
  --dtype DTYPE    auto | bfloat16 | float16 | float32  (default: auto: bf16 where supported)
  --shard-gb N     maximum shard size in GB             (default: 5)
USAGE
}

base=OpenGVLab/InternVL3-1B-hf
adapter=saves/lora/internvl3-1b
out=saves/export/FaceLLM-1B
template=intern_vl
dtype=auto
shard_gb=5

while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --adapter) adapter=${2:?--adapter needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --template) template=${2:?--template needs a value}; shift 2 ;;
    --dtype) dtype=${2:?--dtype needs a value}; shift 2 ;;
    --shard-gb) shard_gb=${2:?--shard-gb needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see ./export.sh --help)" >&2; exit 2 ;;
  esac
done

if [ ! -f "$adapter/adapter_config.json" ]; then
  echo "error: $adapter: not a LoRA adapter folder (no adapter_config.json); run train.sh first" >&2
  exit 2
fi
case "$dtype" in auto|bfloat16|float16|float32) ;; *) echo "error: --dtype $dtype is not one of auto, bfloat16, float16, float32" >&2; exit 2 ;; esac

# Remote code stays off: the InternVL3 -hf checkpoints are native transformers models.
llamafactory-cli export \
  --model_name_or_path "$base" \
  --adapter_name_or_path "$adapter" \
  --finetuning_type lora \
  --template "$template" \
  --trust_remote_code false \
  --infer_dtype "$dtype" \
  --export_dir "$out" \
  --export_size "$shard_gb"

echo "merged model: $out"
