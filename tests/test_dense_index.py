"""The dense index options (``SPANRAG_DENSE_INDEX``): flat stays exact and the default;
HNSW and IVF find nearly what flat finds, through the real store, and survive a restart
and deletes. Random unit vectors (dim 32), no embedding model involved."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.spans import Document, Span
from indexing.store.dense_index import ALL, DenseIndex, DenseIndexSpec, TorchFlatSearch
from indexing.store.sqlite_faiss import SqliteFaissStore
from service.settings import Settings

DIM = 32
C = "docs"
APPROXIMATE = ["hnsw", "ivf"]


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_corpus(n_docs: int, sentences_per_doc: int = 4, seed: int = 0):
    """Documents of one ``document`` span and a few ``sentence`` spans, random vectors."""
    vectors = unit_vectors(n_docs * (1 + sentences_per_doc), seed)
    items, row = [], 0
    for d in range(n_docs):
        doc_id = f"d{d}"
        words = [f"w{d}s{s}" for s in range(sentences_per_doc)]
        text = " ".join(words)
        doc = Document(doc_id, C, doc_id, f"/src/{doc_id}", f"h{d}", text)
        spans = [Span(f"{doc_id}#0", doc_id, None, "document", 0, len(text), text)]
        pos = 0
        for s, word in enumerate(words, start=1):
            start = text.index(word, pos)
            pos = start + len(word)
            spans.append(Span(f"{doc_id}#{s}", doc_id, f"{doc_id}#0", "sentence", start, pos, word, order=s))
        items.append((doc, spans, vectors[row : row + len(spans)]))
        row += len(spans)
    return items


def open_store(path, kind: str, items=None) -> SqliteFaissStore:
    store = SqliteFaissStore(path, dense_index=kind)
    if items is not None:
        store.create_collection(C, "test-model", DIM)
        for i in range(0, len(items), 100):
            store.replace_documents(C, items[i : i + 100])
    return store


def top_ids(store, queries, k=10, granularities=None) -> list[list[str]]:
    return [[h.span_id for h in store.dense_search(C, q, k, granularities)] for q in queries]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(600)  # 3,000 spans: 600 documents, 2,400 sentences


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory, corpus):
    store = open_store(tmp_path_factory.mktemp("flat"), "flat", corpus)
    yield store
    store.close()


QUERIES = unit_vectors(50, seed=99)


def test_flat_is_the_default_everywhere(tmp_path):
    assert Settings().dense_index == "flat"
    assert SqliteFaissStore(tmp_path).dense_spec == DenseIndexSpec("flat")


def test_the_setting_reads_spanrag_dense_index(monkeypatch):
    monkeypatch.setenv("SPANRAG_DENSE_INDEX", "hnsw")
    assert Settings().dense_index == "hnsw"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown dense index"):
        DenseIndexSpec("annoy")


def test_flat_returns_the_exact_nearest_spans_of_its_fp16_codes(flat_store, corpus):
    vectors = {s.id: v.astype(np.float16).astype(np.float32) for _, spans, vs in corpus for s, v in zip(spans, vs)}
    for query, found in zip(QUERIES[:5], top_ids(flat_store, QUERIES[:5])):
        assert found == sorted(vectors, key=lambda i: -float(vectors[i] @ query))[:10]


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_approximate_recall_at_10_against_flat_is_high(tmp_path, kind, corpus, flat_store):
    store = open_store(tmp_path, kind, corpus)
    assert recall(top_ids(store, QUERIES), top_ids(flat_store, QUERIES)) >= 0.9
    store.close()


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_approximate_search_honours_granularities_at_high_recall(tmp_path, kind, corpus, flat_store):
    store = open_store(tmp_path, kind, corpus)
    found = top_ids(store, QUERIES, granularities=["document"])
    assert all(i.endswith("#0") for ids in found for i in ids)
    assert recall(found, top_ids(flat_store, QUERIES, granularities=["document"])) >= 0.9
    store.close()


@pytest.mark.parametrize("kind", ["flat", *APPROXIMATE])
def test_a_batch_of_queries_is_answered_as_each_query_alone(tmp_path, kind, corpus):
    store = open_store(tmp_path, kind, corpus)
    for granularities in (None, ["sentence"]):
        batched = store.dense_search_many(C, np.stack(QUERIES), 10, granularities)
        alone = [store.dense_search(C, q, 10, granularities) for q in QUERIES]
        assert [[h.span_id for h in hits] for hits in batched] == [[h.span_id for h in hits] for hits in alone]
    store.close()


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_a_deep_search_returns_k_hits_best_first(tmp_path, kind, corpus):
    store = open_store(tmp_path, kind, corpus)
    hits = store.dense_search(C, QUERIES[0], 1000)
    assert len(hits) == 1000 and len({h.span_id for h in hits}) == 1000
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(store.dense_search(C, QUERIES[0], 5000)) == 3000  # k beyond the collection: all of it
    store.close()


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_a_restart_loads_the_saved_index_instead_of_rebuilding(tmp_path, kind, corpus):
    store = open_store(tmp_path, kind, corpus)
    before = top_ids(store, QUERIES)
    assert set(store.index_build_seconds(C)) == {"read", "dense", "bm25", "save"}
    store.close()
    reopened = open_store(tmp_path, kind)
    assert top_ids(reopened, QUERIES) == before
    assert reopened.index_build_seconds(C) == {}  # loaded from disk
    assert reopened.index_footprint(C)["dense"] > 0
    reopened.close()


def test_switching_the_kind_rebuilds_the_index_in_the_background_and_searches_the_old_one_meanwhile(
    tmp_path, corpus, flat_store
):
    flat = open_store(tmp_path, "flat", corpus)
    flat.refresh(C)
    flat.close()
    hnsw = open_store(tmp_path, "hnsw")
    assert top_ids(hnsw, QUERIES) == top_ids(flat_store, QUERIES)  # the saved flat index, searched at once
    hnsw.settle()
    # then HNSW was built from SQLite in the background (by the merge worker) and swapped in
    assert hnsw._indexes(C).base.dense_signature == hnsw.dense_spec.signature
    assert recall(top_ids(hnsw, QUERIES), top_ids(flat_store, QUERIES)) >= 0.9
    assert hnsw.collection_stats(C)["freshness"]["segments"] == 1
    hnsw.close()
    flat = open_store(tmp_path, "flat")
    assert recall(top_ids(flat, QUERIES), top_ids(flat_store, QUERIES)) >= 0.9  # HNSW until flat is built
    flat.settle()
    assert flat._indexes(C).base.dense_signature == flat.dense_spec.signature
    assert top_ids(flat, QUERIES) == top_ids(flat_store, QUERIES)
    flat.close()


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_deleted_and_replaced_documents_leave_the_index(tmp_path, kind, corpus):
    store = open_store(tmp_path, kind, corpus)
    query = corpus[7][2][2]  # the vector of d7's second sentence
    assert store.dense_search(C, query, 1)[0].span_id == "d7#2"
    store.delete_documents(C, ["d7"])
    (replaced,) = make_corpus(1, seed=5)  # a new version of d0 with other vectors
    store.replace_documents(C, [replaced])
    store.close()
    reopened = open_store(tmp_path, kind)
    hits = reopened.dense_search(C, query, 3000)
    assert len(hits) == 3000 - 5
    assert not any(h.span_id.startswith("d7#") for h in hits)
    assert reopened.dense_search(C, replaced[2][3], 1)[0].span_id == "d0#3"
    reopened.close()


def test_an_empty_collection_searches_to_nothing(tmp_path):
    for kind in APPROXIMATE:
        store = open_store(tmp_path / kind, kind, [])
        assert store.dense_search(C, QUERIES[0], 10) == []
        store.close()


def test_hnsw_and_ivf_keep_one_index_per_granularity():
    vectors = unit_vectors(200, seed=1)
    granularities = ["document"] * 50 + ["sentence"] * 150
    for kind in APPROXIMATE:
        index = DenseIndex.build(DenseIndexSpec(kind), DIM, np.arange(200), granularities, vectors)
        assert sorted(index.parts) == ["document", "sentence"] and index.ntotal == 200
    flat = DenseIndex.build(DenseIndexSpec("flat"), DIM, np.arange(200), granularities, vectors)
    assert list(flat.parts) == ["*"]


def test_the_gpu_flat_path_finds_what_faiss_flat_finds_with_and_without_a_filter():
    """TorchFlatSearch (the CUDA path of the flat index, run here on torch's CPU device)
    returns FAISS flat's hits: same rows, same scores, the granularity filter honoured."""
    vectors = unit_vectors(300, seed=5)
    row_ids = np.arange(1000, 1300)
    granularities = ["document" if i % 10 == 0 else "sentence" for i in range(300)]
    index = DenseIndex.build(DenseIndexSpec("flat"), vectors.shape[1], row_ids, granularities, vectors)
    on_torch = TorchFlatSearch.from_faiss(index.parts[ALL], "cpu")
    documents = row_ids[::10]
    for query in unit_vectors(5, seed=6):
        expected = index.search(query, 10)
        got = on_torch.search(query, 10)
        assert [r for r, _ in got] == [r for r, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
        filtered = index.search(query, 10, ["document"], {"document": documents})
        assert [r for r, _ in on_torch.search(query, 10, documents)] == [r for r, _ in filtered]
    assert on_torch.search(vectors[0], 5, np.zeros(0, np.int64)) == []
