#!/usr/bin/env bash
# Every evaluation table in the README, in one go (about 60 minutes on 2 cores before issue
# 19, most of it the first ingest of SciFact; issue 19's runs add about 55: each sweep took 5 to 9
# minutes here; the three compression sweeps about 30 more: 13, 1 and 16 minutes here).
# Collections are cached in .eval-data; reports go to runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1  # no OMP_NUM_THREADS: spanrag sizes its own thread pools (README: Threads)
S=.venv/bin/spanrag
$S eval --dataset beir:../shared/datasets/scifact --split train \
    -p dense -p bm25 -p hybrid -p maxsim -p xtr -p xtr-only -p adaptive-k -p clustered -p bubble -p default -p default-full-budget \
    --data-dir .eval-data --out runs/scifact-train
$S eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json \
    -p dense -p bm25 -p hybrid -p maxsim -p adaptive-k -p clustered -p bubble -p default -p default-full-budget -p default-no-graph \
    --data-dir .eval-data --out runs/hotpotqa-dev
# TAT-QA's target is 300 context tokens: every pipeline gets that budget
SPANRAG_BUDGET_TOKENS=300 $S eval --dataset tatqa:../shared/datasets/tatqa/dev.json \
    -p dense -p bm25 -p hybrid -p maxsim -p adaptive-k -p clustered -p bubble -p default -p default-full-budget \
    --data-dir .eval-data --out runs/tatqa-dev-300
# compression (issue 6): the default with and without it, and selecting less (default-300)
$S eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json \
    -p default-full-budget -p default-compressed -p default-compressed-tokens -p default-300 \
    --data-dir .eval-data --out runs/compression-hotpotqa
$S eval --dataset beir:../shared/datasets/scifact --split train \
    -p default-full-budget -p default-compressed -p default-300 \
    --data-dir .eval-data --out runs/compression-scifact
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json \
    -p default-full-budget -p default-compressed -p default-compressed-tokens -p default-300 \
    --data-dir .eval-data --out runs/compression-tatqa
# issue 19: a calibrated stopping rule against the bubble's relative floor, replayed on the
# budget-filling runs above (README: Tuned knobs)
.venv/bin/python -m eval.stop_rules runs/compression-tatqa/run.default-full-budget.json \
    runs/compression-hotpotqa/run.default-full-budget.json | tee runs/stop_rules.md
# issue 19: the default on TAT-QA, and its table rules and stop swept out of fold (README: Tuned knobs)
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default -p default-no-tables \
    --data-dir .eval-data --out runs/tatqa-dev-tables
.venv/bin/python -m eval.answer_source runs/tatqa-dev-tables/run.default-no-tables.json \
    runs/tatqa-dev-tables/run.default.json runs/hotpotqa-dev/run.default.json
for knob in bubble_rows_as_alternatives bubble_table_columns; do
    $S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default --sweep "$knob=false,true" --folds 5 \
        --data-dir .eval-data --out "runs/sweep-tatqa-$knob"
done
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default --sweep bubble_relative_min_gain=0.55,0.6,0.65 \
    --folds 5 --max-context-tokens 300 --data-dir .eval-data --out runs/sweep-tatqa-adaptive-alternatives
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default --sweep bubble_anchor_docs=3,4,6 --folds 5 \
    --data-dir .eval-data --out runs/sweep-tatqa-bubble_anchor_docs-alternatives
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default --sweep bubble_cost_weight=0,0.1,0.2 --folds 5 \
    --max-context-tokens 300 --data-dir .eval-data --out runs/sweep-tatqa-bubble_cost_weight
$S eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json -p default --sweep bubble_cost_weight=0,0.1,0.2,0.4 \
    --folds 5 --max-context-tokens 400 --data-dir .eval-data --out runs/sweep-hotpotqa-bubble_cost_weight
$S eval --dataset beir:../shared/datasets/scifact --split train -p default --sweep maxsim_weight=1.0,1.5,2.0 \
    --sweep maxsim_depth=30,60 --folds 5 --objective ndcg@10 --data-dir .eval-data --out runs/sweep-scifact-maxsim
# compression's lead bonus and prior, swept out of fold on every dataset (README: Compression)
$S eval --dataset beir:../shared/datasets/scifact --split train -p default-compressed \
    --sweep compress_coverage_weight=2,6 --sweep compress_lead_weight=0,0.3 --sweep compress_prior_weight=2.5,5 \
    --folds 5 --objective sentence_evidence_recall --data-dir .eval-data --out runs/sweep-scifact-compress
$S eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json -p default-compressed \
    --sweep compress_lead_weight=0,0.3 --sweep compress_prior_weight=2.5,5,10 --folds 5 \
    --data-dir .eval-data --out runs/sweep-hotpotqa-compress
$S eval --dataset tatqa:../shared/datasets/tatqa/dev.json -p default-compressed \
    --sweep compress_lead_weight=0,0.3 --sweep compress_prior_weight=2.5,5 --folds 5 \
    --data-dir .eval-data --out runs/sweep-tatqa-compress
.venv/bin/python -m bench.chat_ttft --dataset beir:../shared/datasets/scifact --split train \
    --limit 300 --data-dir .eval-data --out runs/bench/chat_ttft.json
.venv/bin/python -m bench.query_latency --dataset beir:../shared/datasets/scifact --split train \
    --limit 300 --pipeline hybrid --pipeline maxsim --pipeline xtr --pipeline default \
    --data-dir .eval-data --out runs/bench/query_latency.json
.venv/bin/python -m bench.query_threads --limit 300 --data-dir .eval-data --out runs/bench/query_threads.json
# the peers need the bench extra in its own venv: python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
if [ -x .venv-bench/bin/python ]; then PEERS=(--peers-python .venv-bench/bin/python); else PEERS=(); fi
.venv/bin/python -m bench.ingest_throughput --limit 300 "${PEERS[@]}" --out runs/bench/ingest_throughput.json
