#!/usr/bin/env bash
# Cited-evidence precision and recall of the LLM generator (issue 19, item 4): the default
# pipeline on HotpotQA dev, answered by Gemma 3 270M (Q4_K_M, from PyPI) behind
# llama-cpp-python's OpenAI-compatible server, started as the tests start it
# (tests/llm_server.py). Needs the test extra in ./.venv (bash scripts/setup.sh test).
# It took 22 minutes here, beside a CI run on the same 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PYTHONPATH=tests .venv/bin/python - <<'PY'
import os
import subprocess

from llm_server import LlamaServer, gemma_model_path

with LlamaServer(gemma_model_path(), n_ctx=2048) as server:
    env = {
        **os.environ,
        "SPANRAG_GENERATOR": "openai",
        "SPANRAG_LLM_BASE_URL": server.base_url,
        "SPANRAG_LLM_MODEL": server.model,
        "SPANRAG_LLM_SYSTEM_ROLE": "false",  # Gemma's chat format has no system role
    }
    subprocess.run(
        [".venv/bin/spanrag", "eval", "--dataset", "hotpotqa:../shared/datasets/hotpotqa/dev50.json",
         "-p", "default", "--data-dir", ".eval-data", "--out", "runs/hotpotqa-dev-llm-citations", "--no-progress"],
        env=env,
        check=True,
    )
PY
