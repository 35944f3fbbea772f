#!/usr/bin/env bash
# Set up ./.venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
