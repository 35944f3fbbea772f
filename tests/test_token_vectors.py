"""Token vectors for late interaction live and die with their spans (on both store
backends; the packed token matrix, XTR's token index and the footprint are the FAISS
store's own)."""

import numpy as np
import pytest

from indexing.token_codecs import decode_tokens

C = "docs"


@pytest.fixture(params=["sqlite_faiss", "qdrant"])
def token_rag(make_rag, tmp_path, request):
    return make_rag(tmp_path / "data", token_codec="binary", store=request.param)


def faiss_only(rag) -> None:
    if rag.settings.store != "sqlite_faiss":
        pytest.skip("the packed token matrix and XTR's token index are the FAISS store's")


def token_spans(rag):
    return [
        s
        for d in rag.store.list_sources(C)
        for doc in d.doc_ids
        for s in rag.store.document_spans(C, doc)
        if s.granularity in ("paragraph", "row")
    ]


def orphan_token_rows(rag) -> int:
    """Token vectors whose span is gone (Qdrant keeps them on the span's point, so none can be)."""
    if rag.settings.store != "sqlite_faiss":
        return 0
    return rag.store._query("SELECT COUNT(*) FROM token_vectors WHERE row_id NOT IN (SELECT row_id FROM spans)")[0][0]


def test_every_paragraph_and_row_gets_one_token_vector_per_word_piece(token_rag, samples_dir):
    report = token_rag.ingest_paths(C, [samples_dir])
    spans = token_spans(token_rag)
    assert report.token_spans == len(spans) > 0
    stored = token_rag.store.get_token_vectors(C, [s.id for s in spans])
    assert set(stored) == {s.id for s in spans}
    assert [len(stored[s.id]) for s in spans] == token_rag.encoder.count_tokens([s.context_text for s in spans])
    assert all(e.codec == "binary" for e in stored.values())
    stats = token_rag.store.token_vector_stats(C)["binary"]
    assert stats["bytes"] == stats["tokens"] * 384 // 8


def test_stored_codes_decode_to_the_signs_of_the_models_token_vectors(token_rag, samples_dir):
    token_rag.ingest_paths(C, [samples_dir])
    span = token_spans(token_rag)[0]
    fresh = token_rag.encoder.encode_tokens([span.context_text])[0]
    decoded = decode_tokens(token_rag.store.get_token_vectors(C, [span.id])[span.id])
    assert np.array_equal(decoded > 0, fresh > 0)


def test_reingesting_unchanged_files_computes_no_token_vectors(token_rag, samples_dir, monkeypatch):
    token_rag.ingest_paths(C, [samples_dir])
    for method in ("encode_tokens", "encode_with_tokens"):
        monkeypatch.setattr(token_rag.encoder, method, lambda *args: pytest.fail("re-encoded"))
    assert token_rag.ingest_paths(C, [samples_dir]).token_spans == 0


def test_a_changed_file_gets_new_token_vectors_and_leaves_no_stale_ones(token_rag, samples_dir):
    token_rag.ingest_paths(C, [samples_dir])
    notes = samples_dir / "tea-notes.txt"
    notes.write_text(notes.read_text() + "\n\nRooibos is not a tea at all and has no caffeine.\n")
    report = token_rag.ingest_paths(C, [samples_dir])
    assert report.updated == 1 and report.token_spans > 0
    assert orphan_token_rows(token_rag) == 0
    assert token_rag.store.spans_missing_token_vectors(C, ["paragraph", "row"]) == []


def test_deleting_a_document_removes_its_token_vectors(token_rag, samples_dir):
    report = token_rag.ingest_paths(C, [samples_dir])
    csv_id = next(d for d in report.doc_ids if d.endswith(".csv"))
    rows = [s.id for s in token_rag.store.document_spans(C, csv_id) if s.granularity == "row"]
    assert token_rag.store.get_token_vectors(C, rows)
    token_rag.delete_document(C, csv_id)
    assert token_rag.store.get_token_vectors(C, rows) == {}
    assert orphan_token_rows(token_rag) == 0


def test_an_existing_collection_gains_token_vectors_when_a_codec_is_configured(make_rag, tmp_path, samples_dir):
    plain = make_rag(tmp_path / "data", token_codec="off")
    plain.ingest_paths(C, [samples_dir])
    assert plain.store.token_vector_stats(C) == {}
    with_tokens = make_rag(tmp_path / "data", token_codec="int8")
    report = with_tokens.ingest_paths(C, [samples_dir])
    assert report.unchanged > 0 and report.token_spans > 0
    assert set(with_tokens.store.token_vector_stats(C)) == {"int8"}


def test_changing_the_codec_recomputes_every_token_vector_in_the_new_one(make_rag, tmp_path, samples_dir):
    make_rag(tmp_path / "data").ingest_paths(C, [samples_dir])  # the default: binary
    fp16 = make_rag(tmp_path / "data", token_codec="fp16")
    report = fp16.ingest_paths(C, [samples_dir])
    assert report.unchanged > 0 and report.token_spans == len(token_spans(fp16))
    assert set(fp16.store.token_vector_stats(C)) == {"fp16"}


def test_the_maxsim_pipeline_adds_a_token_level_document_signal(token_rag, samples_dir):
    token_rag.ingest_paths(C, [samples_dir])
    question = "How many days does Mercury take to orbit the Sun?"
    result = token_rag.retrieve(C, question, pipeline="maxsim")
    assert "maxsim_ms" in result.timings_ms
    hybrid = token_rag.retrieve(C, question, pipeline="hybrid")
    assert (
        result.ranked_documents[0].doc_id
        == hybrid.ranked_documents[0].doc_id
        == next(d.doc_id for d in hybrid.ranked_documents if d.doc_id.endswith("solar-system.html"))
    )
    # the document scores now carry the MaxSim list's reciprocal rank on top of hybrid's
    assert result.ranked_documents[0].score > hybrid.ranked_documents[0].score


def test_without_token_vectors_the_maxsim_pipeline_ranks_like_hybrid(make_rag, tmp_path, samples_dir):
    rag = make_rag(tmp_path / "data", token_codec="off")
    rag.ingest_paths(C, [samples_dir])
    question = "What is the price of Kenyan coffee?"
    maxsim_docs = [d.doc_id for d in rag.retrieve(C, question, pipeline="maxsim").ranked_documents]
    assert maxsim_docs == [d.doc_id for d in rag.retrieve(C, question, pipeline="hybrid").ranked_documents]


def all_doc_ids(rag):
    return [doc for d in rag.store.list_sources(C) for doc in d.doc_ids]


def test_the_packed_token_index_follows_updates_and_deletes(token_rag, samples_dir, tmp_path):
    faiss_only(token_rag)
    import shutil

    folder = tmp_path / "docs"
    shutil.copytree(samples_dir, folder)
    token_rag.ingest_paths(C, [folder])
    docs = all_doc_ids(token_rag)
    packed = token_rag.store.document_tokens(C, docs)
    assert sorted(packed.doc_ids) == sorted(docs)
    assert packed.offsets[-1] == token_rag.store.token_vector_stats(C)["binary"]["tokens"]

    victim = next(d for d in docs if d.endswith(".md"))
    token_rag.delete_document(C, victim)
    assert victim not in token_rag.store.document_tokens(C, docs).doc_ids
    hits = token_rag.store.token_search(C, token_rag.encoder.encode_query_tokens("volcanoes of Mars"), 50)
    assert victim not in hits.doc_ids

    text_file = next(folder.glob("*.txt"))
    text_file.write_text("Bananas are yellow berries that grow in tropical climates.\n")
    token_rag.ingest_paths(C, [folder])
    changed = next(d for d in all_doc_ids(token_rag) if d.endswith(".txt"))
    packed = token_rag.store.document_tokens(C, [changed])
    assert (
        len(packed.vectors)
        == token_rag.encoder.count_tokens(
            [s.context_text for s in token_rag.store.document_spans(C, changed) if s.granularity == "paragraph"]
        )[0]
    )


def test_the_xtr_pipelines_rank_by_retrieved_tokens(token_rag, samples_dir):
    faiss_only(token_rag)
    token_rag.ingest_paths(C, [samples_dir])
    question = "How many days does Mercury take to orbit the Sun?"
    alone = token_rag.retrieve(C, question, pipeline="xtr-only")
    assert alone.ranked_documents[0].doc_id.endswith("solar-system.html")
    assert alone.context.spans[0].span.doc_id == alone.ranked_documents[0].doc_id
    fused = token_rag.retrieve(C, question, pipeline="xtr")
    hybrid = token_rag.retrieve(C, question, pipeline="hybrid")
    assert fused.ranked_documents[0].score > hybrid.ranked_documents[0].score


def test_the_index_footprint_counts_token_vectors_only_where_they_are_stored(
    token_rag, make_rag, tmp_path, samples_dir
):
    faiss_only(token_rag)
    rag = make_rag(tmp_path / "plain", token_codec="off")
    rag.ingest_paths(C, [samples_dir])
    token_rag.ingest_paths(C, [samples_dir])
    plain, with_tokens = rag.store.index_footprint(C), token_rag.store.index_footprint(C)
    assert plain["dense"] > 0 and plain["bm25"] > 0 and "tokens" not in plain
    stats = token_rag.store.token_vector_stats(C)["binary"]
    assert with_tokens["tokens"] >= stats["bytes"]  # the codes, plus their span directory
    token_rag.retrieve(C, "Which planet has two moons?", pipeline="xtr")
    after_xtr = token_rag.store.index_footprint(C)
    assert after_xtr["token_index"] > 0 and after_xtr["tokens"] == with_tokens["tokens"]
