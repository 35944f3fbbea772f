#!/usr/bin/env bash
# Create ./.venv and install spanrag into it (idempotent: a second run only checks).
#   bash scripts/setup.sh          what the main job needs (the demo)
#   bash scripts/setup.sh test     plus the test extra (a real llama.cpp server among it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
step() { printf '==> %s\n' "$*" >&2; }
# pip's own progress, without the noise of already-satisfied requirements; pip's status is kept
pip_install() {
  .venv/bin/python -m pip install --progress-bar on "$@" 2>&1 \
    | { grep -v -e "^WARNING: Location" -e "^Requirement already satisfied" >&2 || true; }
}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build from local disk here.
if [ "${1:-}" = "test" ]; then
  # llama-cpp-python (test extra) compiles llama.cpp: ggml's native build enables AMX kernels that
  # segfault on some CPUs, so it is built portable (pinned in pyproject.toml).
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
  if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    step "installing spanrag with the test extra (compiles llama.cpp once: about 20 minutes on 2 cores)"
  else
    step "installing spanrag with the test extra"
  fi
  pip_install -e ".[test]"
else
  step "installing spanrag (no extras)"
  pip_install -e .
fi
step "ready: .venv"
