"""Hybrid first stage: dense over span vectors of every granularity plus BM25 per
granularity, fused by weighted reciprocal-rank fusion.

RRF uses ranks only, so dense cosines and BM25 scores never need a common scale; BM25's
weight is shared among its per-granularity lists so that adding a granularity does not
tilt the balance toward lexical matching.
"""

from __future__ import annotations

from indexing.store.base import ScoredSpanId, SpanStore
from retrieval.params import RetrievalParams
from retrieval.types import Candidate, RankedDocument

import numpy as np


def fetch_signals(
    store: SpanStore, collection: str, question: str, query_vector: np.ndarray, params: RetrievalParams
) -> dict[str, list[ScoredSpanId]]:
    signals: dict[str, list[ScoredSpanId]] = {}
    if params.dense_granularities:
        signals["dense"] = store.dense_search(
            collection, query_vector, params.first_stage_k, params.dense_granularities
        )
    for granularity in params.bm25_granularities:
        signals[f"bm25:{granularity}"] = store.lexical_search(
            collection, question, params.first_stage_k, granularity
        )
    return signals


def fuse(signals: dict[str, list[ScoredSpanId]], params: RetrievalParams) -> list[Candidate]:
    """Weighted RRF: fused = Σ_lists weight / (rrf_k + rank). Ties keep first-seen order."""
    n_bm25 = sum(1 for name in signals if name.startswith("bm25:"))
    candidates: dict[str, Candidate] = {}
    for name, hits in signals.items():
        weight = params.dense_weight if name == "dense" else params.bm25_weight / max(n_bm25, 1)
        for rank, hit in enumerate(hits, start=1):
            candidate = candidates.setdefault(hit.span_id, Candidate(hit.span_id))
            candidate.scores[name] = hit.score
            candidate.ranks[name] = rank
            candidate.scores["fused"] = candidate.scores.get("fused", 0.0) + weight / (
                params.rrf_k + rank
            )
    return sorted(candidates.values(), key=lambda c: -c.fused)


def rank_documents(candidates: list[Candidate]) -> list[RankedDocument]:
    """A document scores as its best span (max, not mean: a long document's one matching
    paragraph must not be diluted by the rest of it)."""
    best: dict[str, RankedDocument] = {}
    for candidate in candidates:  # already in fused order: the first seen is the best
        if candidate.doc_id not in best:
            best[candidate.doc_id] = RankedDocument(candidate.doc_id, candidate.fused, candidate.span_id)
    return list(best.values())
