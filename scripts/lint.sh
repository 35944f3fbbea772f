#!/usr/bin/env bash
# Lint, format check and type check (seconds): ruff and mypy, configured in pyproject.toml.
# Needs the test extra in ./.venv (bash scripts/setup.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
