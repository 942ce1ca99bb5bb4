#!/usr/bin/env bash
# Serve a FaceLLM model through an OpenAI-compatible API (LLaMA-Factory's `api`): chat completions with
# images as base64 data URLs, usable from curl or the `openai` client.
set -euo pipefail

usage() {
  cat <<USAGE
usage: ./serve.sh [--model DIR|HUB_ID] [--host HOST] [--port PORT] [--name NAME] [--template NAME]

  --model MODEL    merged model folder (export.sh) or hub id  (default: saves/export/FaceLLM-1B)
  --host HOST      address to bind; 0.0.0.0 exposes it to the network  (default: 127.0.0.1)
  --port PORT      (default: 8000)
  --name NAME      model name GET /v1/models reports          (default: the model folder's name)
  --template NAME  LLaMA-Factory chat template                (default: intern_vl)

The API lives at http://HOST:PORT/v1 (GET /v1/models, POST /v1/chat/completions).
For a web UI instead, run: llamafactory-cli webchat --model_name_or_path MODEL --template intern_vl
USAGE
}

model=saves/export/FaceLLM-1B
host=127.0.0.1
port=8000
name=
template=intern_vl

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=${2:?--model needs a value}; shift 2 ;;
    --host) host=${2:?--host needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --template) template=${2:?--template needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see ./serve.sh --help)" >&2; exit 2 ;;
  esac
done

# A path that is not there is a missing export, not a hub id (hub ids are ORG/NAME)
case "$model" in
  /*|./*|../*|*/*/*) [ -e "$model" ] || { echo "error: $model: no such model folder; merge one with ./export.sh first" >&2; exit 2; } ;;
esac
if [ -e "$model" ] && [ ! -f "$model/config.json" ]; then
  if [ -f "$model/adapter_config.json" ]; then
    echo "error: $model: a LoRA adapter; merge it first with ./export.sh, then serve the merged folder" >&2
  else
    echo "error: $model: not a model folder (no config.json)" >&2
  fi
  exit 2
fi
case "$port" in ''|*[!0-9]*) echo "error: --port $port is not a number" >&2; exit 2 ;; esac
command -v llamafactory-cli >/dev/null || { echo "error: llamafactory-cli not found; run 'make install' and use 'uv run ./serve.sh'" >&2; exit 2; }
[ "$host" = "127.0.0.1" ] || [ "$host" = "localhost" ] || echo "warning: binding $host exposes the model beyond this machine" >&2

# image_max_pixels: larger photos are shrunk to the 224 x 224 training size first, as inference.py does
echo "serving $model at http://$host:$port/v1" >&2
API_HOST=$host API_PORT=$port API_MODEL_NAME=${name:-$(basename "$model")} exec llamafactory-cli api \
  --model_name_or_path "$model" \
  --template "$template" \
  --infer_backend huggingface \
  --image_max_pixels 50176 \
  --trust_remote_code false
