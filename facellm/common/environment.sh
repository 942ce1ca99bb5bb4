# Sourced by train.sh, export.sh and serve.sh: find the project's environment when the shell has none, so that
# `./train.sh ...` works right after `make install`, without `uv run` or an activated virtualenv. An
# environment already on PATH (activated, `uv run`, a cluster module) is used as it is. Sets $python.
facellm_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! command -v llamafactory-cli >/dev/null 2>&1 && [ -x "$facellm_repo/.venv/bin/llamafactory-cli" ]; then
  export PATH="$facellm_repo/.venv/bin:$PATH"
fi
if ! command -v llamafactory-cli >/dev/null 2>&1; then
  echo "error: the project's environment is not installed ($facellm_repo/.venv/bin/llamafactory-cli not" \
    "found): run 'make install' in $facellm_repo" >&2
  exit 2
fi
python=$(dirname "$(command -v llamafactory-cli)")/python
