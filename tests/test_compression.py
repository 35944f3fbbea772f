"""Compression between selection and generation: the gate, the budget, whole citable
pieces with their offsets, table headers, the trace, and token-level pruning."""

import numpy as np
import pytest

from compression.pruning import compression_target
from retrieval.params import RetrievalParams

C = "docs"
PLANETS = "How many moons does Mars have and how long is its orbital period?"
COFFEE = "Which coffee origin has the highest price per kg, and how is it roasted?"
WIDE = {"budget_tokens": 400, "top_k": 40}


@pytest.fixture
def corpus(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    return rag


def test_the_target_is_the_tighter_of_budget_and_ratio():
    assert compression_target(RetrievalParams(compress_budget_tokens=120).compress, 400) == 120
    assert compression_target(RetrievalParams(compress_ratio=0.5).compress, 400) == 200
    assert compression_target(RetrievalParams(compress_budget_tokens=300, compress_ratio=0.5).compress, 400) == 200
    assert compression_target(RetrievalParams().compress, 400) is None


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_a_ratio_outside_zero_to_one_is_refused(ratio):
    with pytest.raises(ValueError):
        RetrievalParams(compress_ratio=ratio)


def test_a_context_within_the_target_is_not_compressed(corpus):
    selected = corpus.retrieve(C, PLANETS, "default", WIDE)
    result = corpus.retrieve(
        C,
        PLANETS,
        "default",
        {**WIDE, "compression": "sentence", "compress_budget_tokens": selected.context.n_tokens + 50},
    )
    report = result.compression
    assert report is not None and not report.applied
    assert report.tokens_after == report.tokens_before == selected.context.n_tokens
    assert [i.span.id for i in result.context.spans] == [i.span.id for i in selected.context.spans]


def test_pipelines_without_compression_report_none(corpus):
    assert corpus.retrieve(C, PLANETS, "default").compression is None


@pytest.mark.parametrize("question", [PLANETS, COFFEE])
def test_compression_fits_the_target_with_whole_pieces_that_point_into_their_documents(corpus, question):
    selected = corpus.retrieve(C, question, "default", WIDE)
    target = selected.context.n_tokens // 2
    result = corpus.retrieve(
        C, question, "default", {**WIDE, "compression": "sentence", "compress_budget_tokens": target}
    )
    report = result.compression
    assert report.applied and report.target_tokens == target
    assert report.tokens_before == selected.context.n_tokens
    assert 0 < result.context.n_tokens <= target == report.target_tokens
    assert report.tokens_after == result.context.n_tokens
    assert report.pieces_after == len(result.context.spans) < report.pieces_before
    selected_pieces = {p.id for item in selected.context.spans for p in item.pieces}
    for item in result.context.spans:
        span = item.span
        assert span.granularity in ("sentence", "row") and span.id in selected_pieces
        document = corpus.store.get_document(C, span.doc_id)
        assert document.text[span.start : span.end] == span.text  # a citation keeps its offsets
        assert [p.id for p in item.pieces] == [span.id] and item.piece_vectors.shape[0] == 1


def test_kept_pieces_stay_in_the_selected_reading_order(corpus):
    selected = corpus.retrieve(C, PLANETS, "default", WIDE)
    order = [p.id for item in selected.context.spans for p in item.pieces]
    result = corpus.retrieve(C, PLANETS, "default", {**WIDE, "compression": "sentence", "compress_ratio": 0.5})
    kept = [item.span.id for item in result.context.spans]
    assert kept == sorted(kept, key=order.index)


def test_every_piece_gets_a_compression_trace_entry(corpus):
    result = corpus.retrieve(C, COFFEE, "default", {**WIDE, "compression": "sentence", "compress_ratio": 0.5})
    entries = [t for t in result.context.trace if t.source == "compression"]
    assert len(entries) == result.compression.pieces_before
    taken = {t.span_id for t in entries if t.decision == "taken"}
    assert taken == {item.span.id for item in result.context.spans}
    assert {t.reason for t in entries if t.decision == "dropped"} <= {"compressed_out"}
    assert all({"relevance", "gain"} <= set(t.scores) for t in entries)


def test_the_first_kept_row_of_a_table_shows_its_header_and_later_rows_do_not(corpus):
    result = corpus.retrieve(C, COFFEE, "default", {**WIDE, "compression": "sentence", "compress_ratio": 0.6})
    rows = [item for item in result.context.spans if item.span.granularity == "row"]
    assert rows, "the coffee question keeps table rows"
    seen = set()
    for item in rows:
        first = item.span.parent_id not in seen
        seen.add(item.span.parent_id)
        assert item.show_header == first
        assert item.text.startswith(item.span.header) == first


def test_a_sentence_is_scored_with_its_own_slice_of_its_paragraphs_stored_tokens(corpus):
    """With the paragraph's stored token vectors as the "question", each sentence of the
    paragraph matches exactly (similarity 1) the tokens that are its own word pieces."""
    from compression.pruning import CompressionInputs, ContextCompressor, Piece
    from indexing.token_codecs import decode_tokens

    rag = corpus
    result = rag.retrieve(C, "What does spanrag store for each span?", "default", WIDE)
    sentences = [p for item in result.context.spans for p in item.pieces if p.granularity == "sentence"]
    by_parent: dict[str, list] = {}
    for sentence in sentences:
        by_parent.setdefault(sentence.parent_id, []).append(sentence)
    parent_id, siblings = max(by_parent.items(), key=lambda kv: len(kv[1]))
    assert len(siblings) >= 2
    paragraph_tokens = decode_tokens(rag.store.get_token_vectors(C, [parent_id])[parent_id])
    inputs = CompressionInputs(
        C, "", result.query_vector, rag.store, rag.encoder.count_tokens, paragraph_tokens, rag.token_encoder
    )
    vector = np.zeros_like(result.query_vector)
    coverage = ContextCompressor._token_coverage([Piece(s, vector, 1.0, k) for k, s in enumerate(siblings)], inputs)
    for sentence in siblings:
        own = coverage[sentence.id] > 0.999
        assert own.sum() == rag.encoder.count_tokens([sentence.text])[0], sentence.text


def test_token_offsets_line_up_with_the_token_vectors(encoder):
    texts = ["Mars has two moons, Phobos and Deimos.", "word " * 600]  # the second is windowed
    for text, vectors, offsets in zip(texts, encoder.encode_tokens(texts), encoder.token_offsets(texts)):
        assert len(offsets) == len(vectors)
        assert all(text[a:b].strip() for a, b in offsets)
    offsets = encoder.token_offsets(texts[:1])[0]
    assert "".join(texts[0][a:b] for a, b in offsets).lower() == texts[0].replace(" ", "").lower()


def test_token_level_pruning_drops_words_but_keeps_numbers_and_citable_text(corpus):
    result = corpus.retrieve(C, COFFEE, "default", {**WIDE, "compression": "sentence+token", "compress_ratio": 0.5})
    assert result.compression.applied and result.compression.method == "sentence+token"
    pruned = [item for item in result.context.spans if item.display_text is not None]
    assert pruned, "some piece lost words"
    for item in pruned:
        shown, original = item.display_text, item.span.context_text if item.show_header else item.span.text
        assert len(shown) < len(original)
        numbers = [w for w in item.span.text.split(" ") if any(ch.isdigit() for ch in w)]
        assert all(n in shown for n in numbers)
        assert item.n_tokens == corpus.encoder.count_tokens([shown])[0]
    answer, _ = corpus.answer(result)
    for citation in answer.citations:  # citations quote the stored span, not the pruned text
        document = corpus.store.get_document(C, citation.doc_id)
        assert document.text[citation.start : citation.end] == citation.text


def test_citations_survive_compression_end_to_end(corpus):
    out = corpus.query(C, PLANETS, "default-compressed", {"budget_tokens": 400}).as_dict()
    usage = out["usage"]["compression"]
    assert usage["method"] == "sentence" and usage["applied"]
    assert usage["tokens_after"] <= int(0.6 * usage["tokens_before"])
    assert out["usage"]["context_tokens"] == usage["tokens_after"]
    context_ids = {c["span_id"] for c in out["context"]}
    assert out["citations"]
    for citation in out["citations"]:
        assert citation["span_id"] in context_ids
        document = corpus.store.get_document(C, citation["doc_id"])
        assert document.text[citation["start"] : citation["end"]] == citation["text"]


def test_a_row_the_selector_cut_to_some_columns_stays_cut_and_costs_what_it_shows(rag, tmp_path):
    from test_selection import SALES_BY_CONTRACT

    (tmp_path / "sales.md").write_text(SALES_BY_CONTRACT)
    rag.ingest_paths(C, [tmp_path / "sales.md"])
    question = "What were the sales of Other contracts and the total sales in 2018?"
    selected = rag.retrieve(C, question, "default", WIDE).context
    result = rag.retrieve(
        C, question, "default", {**WIDE, "compression": "sentence", "compress_budget_tokens": selected.n_tokens - 10}
    )
    assert result.compression is not None and result.compression.applied
    rows = [item for item in result.context.spans if item.span.granularity == "row"]
    assert rows and all(item.projection is not None and "2019" not in item.text for item in rows)
    assert rag.encoder.count_tokens([i.text for i in result.context.spans]) == [
        i.n_tokens for i in result.context.spans
    ]
