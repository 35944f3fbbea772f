"""Retrieval and answering over the ingested sample corpus: the right spans come back,
citations point at exact characters, the token budget and top_k hold, selected spans
never overlap, and each pipeline uses only its own signals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from generation.extractive import NO_ANSWER
from indexing.store.base import CollectionNotFound
from retrieval.pipeline import PIPELINES, UnknownPipeline
from service.engine import context_payload

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "samples"
MERCURY = "How many days does Mercury take to orbit the Sun?"
QUESTIONS = [
    MERCURY,
    "Which planet has the hottest surface?",
    "What water temperature is best for green tea?",
    "How much does Kenyan AA coffee cost per kilogram?",
    "How does spanrag store span vectors?",
    "What happens to spans that overlap spans already taken?",
]


@pytest.fixture(scope="module")
def rag(make_rag, tmp_path_factory):
    service = make_rag(tmp_path_factory.mktemp("retrieval") / "data")
    report = service.ingest_paths(C, [SAMPLES])
    assert report.added == 4 and report.failed == []
    service.doc_ids = {Path(d).name: d for d in report.doc_ids}
    return service


def spans_overlap(a, b) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


# -- the right spans -------------------------------------------------------------------------


def test_mercury_orbit_question_retrieves_the_orbit_sentence_and_table_row(rag):
    solar = rag.doc_ids["solar-system.html"]
    context = rag.retrieve(C, MERCURY).context.spans
    from_solar = [item.span for item in context if item.span.doc_id == solar]
    assert any("Mercury orbits the Sun in 88 days" in s.text for s in from_solar)
    rows = [s for s in from_solar if s.granularity == "row"]
    assert any(s.text.startswith("Mercury | 88") for s in rows)
    assert all(item.span.granularity != "document" for item in context), "spans, not whole documents"


def test_mercury_answer_cites_the_orbit_sentence(rag):
    solar = rag.doc_ids["solar-system.html"]
    out = rag.query(C, MERCURY).as_dict()
    assert "88 days" in out["answer"]
    assert "[1]" in out["answer"]
    cited = out["citations"][0]
    assert cited["id"] == 1 and cited["doc_id"] == solar
    assert cited["text"].startswith("Mercury orbits the Sun in 88 days")
    assert cited["heading_path"] == ["The inner planets", "Orbits"]


def test_citations_are_numbered_in_answer_order_and_come_from_the_context(rag):
    for question in QUESTIONS:
        out = rag.query(C, question).as_dict()
        ids = [c["id"] for c in out["citations"]]
        assert ids == list(range(1, len(ids) + 1))
        positions = [out["answer"].index(f"[{n}]") for n in ids]
        assert positions == sorted(positions)
        context = [(c["doc_id"], c["start"], c["end"]) for c in out["context"]]
        for c in out["citations"]:
            assert any(d == c["doc_id"] and s <= c["start"] and c["end"] <= e for d, s, e in context)


def test_cited_spans_point_at_the_exact_characters_of_their_document(rag):
    for question in QUESTIONS:
        for c in rag.query(C, question).as_dict()["citations"]:
            doc = rag.store.get_document(C, c["doc_id"])
            (span,) = rag.store.get_spans(C, [c["span_id"]])
            assert (span.start, span.end) == (c["start"], c["end"])
            assert doc.text[c["start"] : c["end"]] == span.text


def test_sentence_citation_text_equals_the_cited_characters(rag):
    out = rag.query(C, MERCURY).as_dict()
    assert out["citations"]
    for c in out["citations"]:
        doc = rag.store.get_document(C, c["doc_id"])
        assert doc.text[c["start"] : c["end"]] == c["text"]


def test_table_row_citation_text_equals_the_cited_characters(rag):
    out = rag.query(C, "What is the orbital period of Venus?").as_dict()
    rows = [c for c in out["citations"] if "Venus | 225" in c["text"]]
    assert rows
    for c in out["citations"]:
        doc = rag.store.get_document(C, c["doc_id"])
        assert doc.text[c["start"] : c["end"]] == c["text"]


def test_a_csv_row_in_the_context_comes_with_its_header(rag):
    coffee = rag.doc_ids["coffee-prices.csv"]
    result = rag.retrieve(C, "How much does Kenyan AA coffee cost per kilogram?")
    rows = [item.span for item in result.context.spans if item.span.doc_id == coffee and item.span.granularity == "row"]
    kenya = [s for s in rows if s.text.startswith("Kenya")]
    assert kenya, [item.span.text for item in result.context.spans]
    assert kenya[0].header == "origin | variety | price_per_kg_usd | roast"
    shown = [p for p in context_payload(result) if p["doc_id"] == coffee]
    # the table's first row in reading order shows the header line once; later rows share it
    assert shown[0]["text"].startswith("origin | variety | price_per_kg_usd | roast\n")
    assert any(p["text"].endswith("Kenya | AA | 21.00 | light") for p in shown)
    assert sum(p["text"].count("price_per_kg_usd") for p in shown) == 1


# -- budget, overlap, top_k ------------------------------------------------------------------


@pytest.mark.parametrize("budget", [15, 40, 100, 300])
def test_the_token_budget_is_never_exceeded(rag, budget):
    for question in QUESTIONS:
        context = rag.retrieve(C, question, overrides={"budget_tokens": budget, "top_k": 50}).context
        assert context.n_tokens <= budget
        assert context.n_tokens == sum(item.n_tokens for item in context.spans)
        if budget >= 40:
            assert context.spans, f"nothing fits {budget} tokens for {question!r}"


def test_a_budget_smaller_than_every_span_gives_an_empty_context_and_no_answer(rag):
    out = rag.query(C, MERCURY, overrides={"budget_tokens": 1}).as_dict()
    assert out["context"] == [] and out["usage"]["context_tokens"] == 0
    assert out["answer"] == NO_ANSWER and out["citations"] == []


@pytest.mark.parametrize("budget", [None, 200])
def test_selected_spans_never_overlap(rag, budget):
    for question in QUESTIONS:
        result = rag.retrieve(C, question, "hybrid", overrides={"budget_tokens": budget, "top_k": 40})
        spans = [item.span for item in result.context.spans]
        assert len(spans) > 1
        for a, b in itertools.combinations(spans, 2):
            assert not spans_overlap(a, b), (a.id, b.id)
        dropped = [t for t in result.context.trace if t.reason == "overlap"]
        assert dropped, "the sample corpus always offers nested candidates"


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_top_k_caps_the_number_of_context_spans(rag, top_k):
    for question in QUESTIONS[:3]:
        result = rag.retrieve(C, question, "hybrid", overrides={"top_k": top_k, "budget_tokens": None})
        assert len(result.context.spans) == top_k
        for pipeline in ("default", "bubble", "adaptive-k", "clustered"):
            assert (
                len(rag.query(C, question, pipeline=pipeline, overrides={"top_k": top_k}).as_dict()["context"]) <= top_k
            )


def test_the_context_is_the_best_candidates_in_reading_order(rag):
    result = rag.retrieve(C, MERCURY, overrides={"top_k": 5, "budget_tokens": None})
    spans = [item.span for item in result.context.spans]
    taken = [t.span_id for t in result.context.trace if t.decision == "taken"]
    assert sorted(s.id for s in spans) == sorted(taken)
    by_doc = {}
    for s in spans:
        by_doc.setdefault(s.doc_id, []).append(s.start)
    assert all(starts == sorted(starts) for starts in by_doc.values())


# -- pipelines -------------------------------------------------------------------------------

FUSION_KEYS = {"fused", "rrf_span", "rrf_document"}  # derived from the signals, not signals


def signal_keys(result) -> set[str]:
    return {k for c in result.candidates for k in c.scores if k not in FUSION_KEYS}


def test_the_dense_pipeline_uses_only_dense_scores_of_document_spans(rag):
    result = rag.retrieve(C, MERCURY, pipeline="dense")
    assert result.pipeline == "dense" and result.candidates
    assert signal_keys(result) == {"dense"}
    assert all("dense" in c.scores for c in result.candidates)
    spans = rag.store.get_spans(C, [c.span_id for c in result.candidates])
    assert {s.granularity for s in spans} == {"document"}
    assert result.ranked_documents[0].doc_id == rag.doc_ids["solar-system.html"]


def test_the_bm25_pipeline_uses_only_bm25_scores_of_document_spans(rag):
    result = rag.retrieve(C, MERCURY, pipeline="bm25")
    assert result.pipeline == "bm25" and result.candidates
    assert signal_keys(result) == {"bm25:document"}
    spans = rag.store.get_spans(C, [c.span_id for c in result.candidates])
    assert {s.granularity for s in spans} == {"document"}
    assert result.ranked_documents[0].doc_id == rag.doc_ids["solar-system.html"]


def test_the_default_pipeline_fuses_dense_and_bm25_over_all_granularities(rag):
    result = rag.retrieve(C, MERCURY)
    assert result.pipeline == "default"
    keys = signal_keys(result)
    assert "dense" in keys and {"bm25:sentence", "bm25:row"} <= keys
    assert any("dense" in c.scores and any(k.startswith("bm25:") for k in c.scores) for c in result.candidates)
    fused = [c.fused for c in result.candidates]
    assert fused == sorted(fused, reverse=True)
    granularities = {s.granularity for s in rag.store.get_spans(C, [c.span_id for c in result.candidates])}
    assert {"document", "section", "paragraph", "sentence", "row"} <= granularities


def test_every_named_pipeline_answers(rag):
    for name, spec in PIPELINES.items():
        out = rag.query(C, MERCURY, pipeline=name).as_dict()
        assert out["pipeline"] == name
        # without stored token vectors, token retrieval alone has nothing to search
        assert out["citations"] or spec.params.dense_granularities == spec.params.bm25_granularities == []


def test_unknown_pipeline_and_unknown_collection_are_rejected(rag):
    with pytest.raises(UnknownPipeline):
        rag.retrieve(C, MERCURY, pipeline="no-such-pipeline")
    with pytest.raises(CollectionNotFound):
        rag.retrieve("no-such-collection", MERCURY)


# -- concurrent writers ----------------------------------------------------------------------


def test_a_document_deleted_by_another_writer_during_a_query_does_not_break_it(make_rag, tmp_path):
    from indexing.store.sqlite_faiss import SqliteFaissStore

    service = make_rag(tmp_path / "data")
    doc_ids = {Path(d).name: d for d in service.ingest_paths(C, [SAMPLES]).doc_ids}
    coffee = doc_ids["coffee-prices.csv"]
    real_get_spans = service.store.get_spans

    def get_spans_after_a_concurrent_delete(collection, span_ids):
        other = SqliteFaissStore(tmp_path / "data")  # e.g. `spanrag delete` while serving
        try:
            other.delete_documents(collection, [coffee])
        finally:
            other.close()
        return real_get_spans(collection, span_ids)

    service.store.get_spans = get_spans_after_a_concurrent_delete
    result = service.retrieve(C, MERCURY)
    del service.store.get_spans
    assert result.context.spans
    for candidate in result.candidates:
        assert candidate.span is None or candidate.span.id == candidate.span_id
    assert all(item.span.doc_id != coffee for item in result.context.spans)
