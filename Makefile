# The two commands of the README: `make demo` and `make test`. Both bootstrap uv when it is missing
# (from PyPI) and install the locked environment first, compiled to bytecode once: every process that imports
# transformers and LLaMA-Factory would otherwise compile some 4,700 modules again (13 s each on 2 cores) where
# Python may not write its cache (PYTHONDONTWRITEBYTECODE).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: install demo test lint clean flash-attn deepspeed

install:
	@if [ ! -x "$(UV)" ]; then \
		echo "uv not found: installing it from PyPI"; \
		python3 -m pip install --user --quiet uv 2>/dev/null \
			|| python3 -m pip install --user --quiet --break-system-packages uv; \
	fi
	@start=$$(date +%s.%N); \
	"$(UV)" sync --frozen --inexact --compile-bytecode && \
	awk -v s="$$start" -v e="$$(date +%s.%N)" 'BEGIN { printf "install: %.1f s\n", e - s }'

demo: install
	"$(UV)" run --frozen python -m facellm.testing.demo

test: install
	"$(UV)" run --frozen pytest

# Optional, on a CUDA machine: they compile against the local CUDA, so they are not in the default install
flash-attn: install
	"$(UV)" sync --frozen --inexact --extra flash-attn

deepspeed: install
	"$(UV)" pip install deepspeed

lint: install
	"$(UV)" run --frozen ruff check .
	"$(UV)" run --frozen ruff format --check .

clean:
	rm -rf saves/demo
