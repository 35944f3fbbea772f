"""Hybrid first stage: dense over span vectors of every granularity plus BM25 per
granularity, fused by weighted reciprocal-rank fusion at two levels.

Documents are ranked by RRF over document-level lists (each signal ranks a document by its
best span); spans are ranked by their own RRF plus their document's. RRF uses ranks only,
so dense cosines and BM25 scores never need a common scale; at span level BM25's weight is
shared among its per-granularity lists so that adding a granularity does not tilt the
balance toward lexical matching.
"""

from __future__ import annotations

import numpy as np

from indexing.store.base import ScoredSpanId, SpanStore
from retrieval.params import FirstStageParams
from retrieval.scoring.maxsim import maxsim, maxsim_torch
from retrieval.scoring.xtr import xtr_scores
from retrieval.types import Candidate, RankedDocument, doc_id_of


def fetch_signals(
    store: SpanStore, collection: str, question: str, query_vector: np.ndarray, params: FirstStageParams
) -> dict[str, list[ScoredSpanId]]:
    signals: dict[str, list[ScoredSpanId]] = {}
    if params.dense_granularities:
        signals["dense"] = store.dense_search(collection, query_vector, params.k, params.dense_granularities)
    for granularity in params.bm25_granularities:
        signals[f"bm25:{granularity}"] = store.lexical_search(collection, question, params.k, granularity)
    return signals


def fuse(signals: dict[str, list[ScoredSpanId]], params: FirstStageParams) -> list[Candidate]:
    """Span-level weighted RRF: ``rrf_span`` = Σ_lists weight / (rrf_k + rank), over the top
    ``span_fusion_depth`` hits of each list (deeper hits only matter for document recall)."""
    n_bm25 = sum(1 for name in signals if name.startswith("bm25:"))
    candidates: dict[str, Candidate] = {}
    for name, hits in signals.items():
        if name != "dense" and not name.startswith("bm25:"):
            continue  # document-level signals (maxsim, xtr) rank documents, not spans
        weight = params.dense_weight if name == "dense" else params.bm25_weight / max(n_bm25, 1)
        for rank, hit in enumerate(hits[: params.span_fusion_depth], start=1):
            candidate = candidates.get(hit.span_id)
            if candidate is None:
                candidate = candidates[hit.span_id] = Candidate(hit.span_id, {"rrf_span": 0.0}, {})
            candidate.scores[name] = hit.score
            candidate.ranks[name] = rank
            candidate.scores["rrf_span"] += weight / (params.rrf_k + rank)
    return list(candidates.values())


def maxsim_documents(
    store: SpanStore,
    collection: str,
    query_tokens: np.ndarray,
    documents: list[RankedDocument],
    depth: int,
    device: str = "cpu",
) -> list[ScoredSpanId]:
    """Late interaction on the top ``depth`` documents: for each query word piece, its best
    match among all of a document's stored token vectors, summed (one matrix product for all
    documents). Returned best first, as the document's first token-bearing span.
    ``device``: where the product runs (``cuda``: :func:`maxsim_torch`, the GPU path)."""
    packed = store.document_tokens(collection, [d.doc_id for d in documents[:depth]])
    if not packed.doc_ids:
        return []
    if device == "cpu":
        scores = maxsim(query_tokens, packed.vectors, packed.offsets)
    else:
        scores = maxsim_torch(query_tokens, packed.vectors, packed.offsets, device)
    order = np.argsort(-scores, kind="stable")
    return [ScoredSpanId(packed.first_span_ids[i], float(scores[i])) for i in order]


def xtr_documents(store: SpanStore, collection: str, query_tokens: np.ndarray, k: int) -> list[ScoredSpanId]:
    """Token retrieval as a first stage (XTR): the ``k`` nearest stored tokens of each query
    token, documents scored from those hits alone (see :mod:`retrieval.scoring.xtr`)."""
    hits = store.token_search(collection, query_tokens, k)
    scores = xtr_scores(hits)
    order = np.argsort(-scores, kind="stable")
    return [ScoredSpanId(hits.first_span_ids[i], float(scores[i])) for i in order]


def rank_documents(signals: dict[str, list[ScoredSpanId]], params: FirstStageParams) -> list[RankedDocument]:
    """Document-level RRF over ``params.document_signals``.

    In each signal's list a document ranks where its best span ranks (max, not mean: a long
    document's one matching paragraph must not be diluted by the rest of it); the ranks are
    then fused across signals. Fusing at document level keeps one signal's many near-equal
    spans of a document from crowding out the other signal's evidence.
    """
    scores: dict[str, float] = {}
    best_span: dict[str, str] = {}
    weights = {"dense": params.dense_weight, "maxsim": params.maxsim_weight, "xtr": params.xtr_weight}
    for name in params.document_signals:
        weight = weights.get(name, params.bm25_weight)
        seen: set[str] = set()
        for hit in signals.get(name, []):
            doc_id = doc_id_of(hit.span_id)
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (params.rrf_k + len(seen))
            best_span.setdefault(doc_id, hit.span_id)
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return [RankedDocument(doc_id, score, best_span[doc_id]) for doc_id, score in ranked]


def score_candidates(
    candidates: list[Candidate], documents: list[RankedDocument], params: FirstStageParams
) -> list[Candidate]:
    """``fused`` = ``rrf_span`` (the span's own RRF) + ``doc_prior_weight`` × its
    document's RRF (``rrf_document``); returned best first."""
    doc_score = {d.doc_id: d.score for d in documents}
    for candidate in candidates:
        candidate.scores["rrf_document"] = doc_score.get(candidate.doc_id, 0.0)
        candidate.scores["fused"] = (
            candidate.scores["rrf_span"] + params.doc_prior_weight * candidate.scores["rrf_document"]
        )
    return sorted(candidates, key=lambda c: -c.fused)
