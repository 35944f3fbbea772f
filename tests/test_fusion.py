"""Reciprocal-rank fusion at span and document level, on hand-made ranked lists."""

import pytest

from indexing.store.base import ScoredSpanId as Hit
from retrieval.first_stage import fuse, rank_documents, score_candidates
from retrieval.params import RetrievalParams

PARAMS = RetrievalParams(rrf_k=60).first_stage  # the first stage receives its own group


def hits(*span_ids):
    return [Hit(s, 1.0 / (i + 1)) for i, s in enumerate(span_ids)]


def test_a_document_ranks_where_its_best_span_ranks_in_each_signal():
    signals = {
        "dense": hits("a#3", "b#1", "a#0", "c#2"),  # doc ranks: a=1, b=2, c=3
        "bm25:document": hits("c#0", "a#0"),  # doc ranks: c=1, a=2
    }
    docs = rank_documents(signals, PARAMS)
    score = {d.doc_id: d.score for d in docs}
    assert score["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert score["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert score["b"] == pytest.approx(1 / 62)
    assert [d.doc_id for d in docs] == ["a", "c", "b"]
    assert docs[0].best_span_id == "a#3"


def test_signals_not_named_as_document_signals_do_not_rank_documents():
    signals = {"dense": hits("a#0"), "bm25:sentence": hits("b#4", "b#5")}
    assert [d.doc_id for d in rank_documents(signals, PARAMS)] == ["a"]


def test_bm25_weight_is_shared_by_its_per_granularity_lists():
    signals = {"dense": hits("x#1"), "bm25:sentence": hits("x#1"), "bm25:paragraph": hits("y#0")}
    by_id = {c.span_id: c for c in fuse(signals, PARAMS)}
    assert by_id["x#1"].scores["rrf_span"] == pytest.approx(1 / 61 + 0.5 / 61)
    assert by_id["y#0"].scores["rrf_span"] == pytest.approx(0.5 / 61)
    assert by_id["x#1"].ranks == {"dense": 1, "bm25:sentence": 1}


def test_only_the_top_of_each_list_enters_span_fusion():
    params = RetrievalParams(span_fusion_depth=2).first_stage
    spans = {c.span_id for c in fuse({"dense": hits("a#0", "b#0", "c#0")}, params)}
    assert spans == {"a#0", "b#0"}


def test_a_span_of_a_strong_document_outranks_an_equal_span_of_a_weak_one():
    signals = {"dense": hits("weak#1", "strong#1"), "bm25:document": hits("strong#0")}
    docs = rank_documents(signals, PARAMS)
    ranked = score_candidates(fuse(signals, PARAMS), docs, PARAMS)
    assert ranked[0].doc_id == "strong"
    assert all(c.fused == pytest.approx(c.scores["rrf_span"] + c.scores["rrf_document"]) for c in ranked)
    assert [c.fused for c in ranked] == sorted((c.fused for c in ranked), reverse=True)


def test_a_document_level_signal_ranks_documents_but_not_spans():
    signals = {"dense": hits("a#1", "b#1"), "maxsim": hits("b#0", "a#0")}
    params = RetrievalParams(maxsim_weight=2.0).first_stage
    docs = {d.doc_id: d.score for d in rank_documents(signals, params)}
    assert docs["b"] == pytest.approx(1 / 62 + 2 / 61)
    assert {c.span_id for c in fuse(signals, params)} == {"a#1", "b#1"}
