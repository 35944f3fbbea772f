#!/usr/bin/env bash
# The main job on the embedded default: ingest the bundled samples, answer a question with citations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
DATA_DIR="${SPANRAG_DATA_DIR:-.spanrag}"
.venv/bin/spanrag ingest samples --collection demo --data-dir "$DATA_DIR"
.venv/bin/spanrag query "${1:-How many days does Mercury take to orbit the Sun?}" --collection demo --data-dir "$DATA_DIR"
