"""Does token-level MaxSim help, and what do compressed token codes cost? (issue 4 groundwork)

Takes the `hybrid` pipeline's top-N documents per query, scores each document by MaxSim
between the query's and the document's token vectors (the bundled model's own token
embeddings, all word pieces, windowed past 256), and reports nDCG@10 of: hybrid alone,
MaxSim alone (rerank), and RRF(hybrid, MaxSim), for fp16, int8 and binary token codes,
with bytes per token. Token vectors are computed here, not stored: this measures the
signal, not the store.

    python -m bench.maxsim_rerank --dataset beir:../shared/datasets/scifact --split train \\
        --limit 300 --depth 50 --data-dir .eval-data --out runs/bench/maxsim_rerank.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.results import write_result
from eval.datasets import load_dataset, parse_spec  # noqa: E402
from eval.metrics import ranking_metrics  # noqa: E402
from indexing.token_codecs import CODECS, bytes_per_token, decode_tokens, encode_tokens  # noqa: E402
from retrieval.scoring.maxsim import maxsim  # noqa: E402
from service.engine import RagService  # noqa: E402
from service.settings import Settings  # noqa: E402


def rrf(*rankings: list[str], k: int = 60) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda d: -scores[d])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beir:../shared/datasets/scifact")
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--depth", type=int, default=50, help="hybrid documents reranked per query")
    ap.add_argument("--data-dir", type=Path, default=Path(".eval-data"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench/maxsim_rerank.json"))
    args = ap.parse_args(argv)

    kind, path = parse_spec(args.dataset)
    dataset = load_dataset(kind, path, args.split).limited(args.limit)
    rag = RagService(Settings(data_dir=args.data_dir))
    collection, _ = dataset.ingest(rag)

    started = time.perf_counter()
    hybrid = {
        q.id: [d.doc_id for d in rag.retrieve(collection, q.text, "hybrid").ranked_documents[: args.depth]]
        for q in dataset.queries
    }
    doc_ids = sorted({d for ranking in hybrid.values() for d in ranking})
    texts = [rag.store.get_document(collection, d).text for d in doc_ids]
    doc_tokens = dict(zip(doc_ids, rag.encoder.encode_tokens(texts)))
    query_tokens = dict(
        zip([q.id for q in dataset.queries], rag.encoder.encode_tokens([q.text for q in dataset.queries]))
    )
    encode_s = time.perf_counter() - started

    dim = rag.encoder.dim
    runs: dict[str, dict[str, list[str]]] = {"hybrid": hybrid}
    codec_stats = {}
    for codec in CODECS:
        decoded = {d: decode_tokens(encode_tokens(v, codec)) for d, v in doc_tokens.items()}
        rerank, fused, score_ms = {}, {}, []
        for qid, ranking in hybrid.items():
            t = time.perf_counter()
            parts = [decoded[d] for d in ranking]
            offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
            scores = maxsim(query_tokens[qid], np.concatenate(parts), offsets)
            score_ms.append((time.perf_counter() - t) * 1000)
            rerank[qid] = [ranking[i] for i in np.argsort(-scores, kind="stable")]
            fused[qid] = rrf(ranking, rerank[qid])
        runs[f"maxsim[{codec}]"] = rerank
        runs[f"rrf(hybrid, maxsim[{codec}])"] = fused
        codec_stats[codec] = {
            "bytes_per_token": bytes_per_token(dim, codec),
            "score_ms_p50": round(float(np.percentile(score_ms, 50)), 2),
        }

    qrels = {q: r for q, r in dataset.qrels.items() if q in hybrid}
    metrics = {name: {k: round(v, 4) for k, v in ranking_metrics(run, qrels).items()} for name, run in runs.items()}
    n_tokens = sum(len(v) for v in doc_tokens.values())
    out = {
        "dataset": dataset.name,
        "split": args.split,
        "n_queries": len(hybrid),
        "depth": args.depth,
        "documents_encoded": len(doc_ids),
        "tokens": n_tokens,
        "encode_s": round(encode_s, 1),
        "codecs": codec_stats,
        "metrics": metrics,
    }
    write_result(out, args.out, echo=False)
    print("| run | nDCG@10 | R@10 | MRR@10 |\n|---|---:|---:|---:|")
    for name, m in metrics.items():
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} |")
    for codec, stats in codec_stats.items():
        print(
            f"{codec}: {stats['bytes_per_token']} bytes/token, "
            f"{stats['bytes_per_token'] * n_tokens / 2**20:.1f} MiB for {n_tokens} tokens, "
            f"MaxSim over {args.depth} docs p50 {stats['score_ms_p50']} ms"
        )
    return out


if __name__ == "__main__":
    main()
