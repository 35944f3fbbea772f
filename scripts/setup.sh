#!/usr/bin/env bash
# Create ./.venv and install spanrag into it (idempotent: a second run only checks).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build from local disk here.
# llama-cpp-python (test extra) compiles llama.cpp: ggml's native build enables AMX kernels that
# segfault on some CPUs, so it is built portable.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
.venv/bin/python -m pip install --quiet -e ".[test]"
