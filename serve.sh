#!/usr/bin/env bash
# Serve a FaceLLM model through an OpenAI-compatible API (LLaMA-Factory's `api`): chat completions with
# images as base64 data URLs, usable from curl or the `openai` client.
set -euo pipefail

usage() {
  cat <<USAGE
usage: ./serve.sh [--model DIR|HUB_ID] [--host HOST] [--port PORT] [--name NAME] [--template NAME]
                  [--log FILE] [--verbose]

  --model MODEL    merged model folder (export.sh) or hub id  (default: saves/export/FaceLLM-1B)
  --host HOST      address to bind; 0.0.0.0 exposes it to the network  (default: 127.0.0.1)
                   any host but 127.x.x.x, localhost or ::1 needs API_KEY set (see below)
  --port PORT      1-65535, free on HOST                      (default: 8000)
  --name NAME      model name GET /v1/models reports          (default: the model folder's name)
  --template NAME  LLaMA-Factory chat template                (default: intern_vl)
  --log FILE       the server's whole output, appended        (default: saves/logs/serve-PORT.log)
  --verbose        show that output here too (by default only: loading, ready, stopped)

The API lives at http://HOST:PORT/v1 (GET /v1/models, POST /v1/chat/completions).
With API_KEY set in its environment the server answers only requests that carry it as a bearer key
(header "Authorization: Bearer KEY", or OPENAI_API_KEY / api_key= for the openai client); off loopback
it refuses to start without one:  API_KEY=\$(openssl rand -hex 16) ./serve.sh --host 0.0.0.0
Request bodies (base64 images) are never written to the log.
For a web UI instead, run: llamafactory-cli webchat --model_name_or_path MODEL --template intern_vl
USAGE
}

model=saves/export/FaceLLM-1B
host=127.0.0.1
port=8000
name=
template=intern_vl
log=
verbose=

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=${2:?--model needs a value}; shift 2 ;;
    --host) host=${2:?--host needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --template) template=${2:?--template needs a value}; shift 2 ;;
    --log) log=${2:?--log needs a value}; shift 2 ;;
    --verbose) verbose=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see ./serve.sh --help)" >&2; exit 2 ;;
  esac
done

# Checks on the arguments alone come first: loading the model takes a while
case "$port" in ''|*[!0-9]*) echo "error: --port $port is not a number" >&2; exit 2 ;; esac
if [ "${#port}" -gt 5 ] || [ $((10#$port)) -lt 1 ] || [ $((10#$port)) -gt 65535 ]; then
  echo "error: --port $port is out of range (1-65535)" >&2
  exit 2
fi
port=$((10#$port))

# Anything off loopback is reachable by others: LLaMA-Factory checks API_KEY (a bearer key) when it is set
if [ "$host" != localhost ] && [ "$host" != ::1 ] && [[ ! "$host" =~ ^127(\.[0-9]{1,3}){3}$ ]]; then
  if [ -z "${API_KEY:-}" ]; then
    echo "error: --host $host exposes the model beyond this machine; set a key first, e.g. API_KEY=\$(openssl rand -hex 16) ./serve.sh --host $host (clients send it as the bearer key, e.g. OPENAI_API_KEY)" >&2
    exit 2
  fi
  echo "warning: binding $host exposes the model beyond this machine; requests must carry API_KEY as their bearer key" >&2
fi

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
# shellcheck source=facellm/common/environment.sh
source "$(dirname "${BASH_SOURCE[0]}")/facellm/common/environment.sh"

# A port already taken (or a host that is not this machine's) fails now, not after loading the model.
# uvicorn binds every address HOST resolves to, with SO_REUSEADDR; so does this probe.
if command -v python3 >/dev/null; then
  python3 - "$host" "$port" <<'PROBE' || exit 2
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
try:
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
except OSError as error:
    sys.exit(f"error: cannot listen on {host} port {port}: {error.strerror or error}")
PROBE
fi

log=${log:-$facellm_repo/saves/logs/serve-$port.log}
mkdir -p "$(dirname "$log")"
printf '\n===== %s: serve.sh --model %s --host %s --port %s\n' "$(date '+%F %T')" "$model" "$host" "$port" >>"$log"
name=${name:-$(basename "$model")}
echo "serve: loading $model (full log: $log${verbose:-; --verbose shows it})" >&2

# image_max_pixels: larger photos are shrunk to the 224 x 224 training size first, as inference.py does.
# API_VERBOSE=0: LLaMA-Factory would otherwise log every request whole, base64 images included.
serve() {
  API_HOST=$host API_PORT=$port API_MODEL_NAME=$name API_VERBOSE=0 exec llamafactory-cli api \
    --model_name_or_path "$model" \
    --template "$template" \
    --infer_backend huggingface \
    --image_max_pixels 50176 \
    --trust_remote_code false
}
if [ -n "$verbose" ]; then
  serve > >(tee -a "$log") 2>&1 &
else
  serve >>"$log" 2>&1 &
fi
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' TERM INT HUP

# Say when the API answers (a 401 without the key counts: the server is up), or nothing if it died first
"$python" - "$host" "$port" "$server" "$name" <<'READY' &
import os, sys, time, urllib.error, urllib.request

host, port, server, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
url = f"http://{'[' + local + ']' if ':' in local else local}:{port}/v1/models"
while True:
    try:
        os.kill(server, 0)
    except OSError:
        sys.exit(0)
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        pass
    except OSError:
        time.sleep(1)
        continue
    shown = "[" + host + "]" if ":" in host else host
    print(f"serve: ready at http://{shown}:{port}/v1 (model name {name}); Ctrl-C stops it", file=sys.stderr)
    sys.exit(0)
READY

set +e
wait "$server"
code=$?
while kill -0 "$server" 2>/dev/null; do  # a trapped signal ended the wait: wait for the server itself
  wait "$server"
  code=$?
done
if [ "$code" -ne 0 ] && [ "$code" -ne 143 ] && [ "$code" -ne 130 ]; then
  failed=$(grep -E '(Error|Exception)(:|$)' "$log" | tail -n 1)
  echo "error: the server stopped (exit $code)${failed:+: $failed}; full log: $log" >&2
fi
exit "$code"
