"""The store contract: what every :class:`~indexing.store.base.SpanStore` must do, as one
reusable test class. A new backend passes it by subclassing with a ``make_store``::

    class TestMyStore(SpanStoreContract):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "data")   # the same tmp_path opens the same data again

Hand-made documents and spans with small random unit vectors (dim 8), no embedding model
involved. The capability tests hold a store to what it declares in ``capabilities``: each
declared capability's methods work, each other one's raise ``UnsupportedCapability``, and a
pipeline that needs a capability the store lacks is refused when it is chosen.
``tests/test_store.py`` runs the class against SQLite + FAISS and Qdrant (local mode), and
keeps the tests about one backend's own machinery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.spans import Document, Span
from indexing.store.base import (
    CAPABILITY_METHODS,
    CollectionNotFound,
    InvalidCollectionName,
    SourceRecord,
    SpanStore,
    StoreCapability,
    StoreMismatch,
    UnsupportedCapability,
    store_name,
)
from indexing.token_codecs import encode_tokens

DIM = 8
MODEL = "test-model"
C = "docs"


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_doc(doc_id: str, sentences: list[str], seed: int):
    """A document span plus one sentence span per sentence, offsets into the joined text."""
    text = " ".join(sentences)
    doc = Document(
        id=doc_id,
        collection=C,
        title=doc_id,
        source=f"/src/{doc_id}",
        content_hash=f"hash-{seed}",
        text=text,
        metadata={"seed": seed},
    )
    spans = [
        Span(
            id=f"{doc_id}#0",
            doc_id=doc_id,
            parent_id=None,
            granularity="document",
            start=0,
            end=len(text),
            text=text,
            n_tokens=len(text.split()),
            order=0,
        )
    ]
    pos = 0
    for i, sentence in enumerate(sentences, start=1):
        start = text.index(sentence, pos)
        pos = start + len(sentence)
        spans.append(
            Span(
                id=f"{doc_id}#{i}",
                doc_id=doc_id,
                parent_id=f"{doc_id}#0",
                granularity="sentence",
                start=start,
                end=pos,
                text=sentence,
                heading_path=[doc_id],
                n_tokens=len(sentence.split()),
                order=i,
            )
        )
    return doc, spans, unit_vectors(len(spans), seed)


ALPHA = make_doc(
    "alpha", ["The giraffe has a long neck.", "Zebras have stripes.", "Lions sleep most of the day."], seed=1
)
BETA = make_doc("beta", ["Copper conducts electricity well.", "Iron rusts in wet air."], seed=2)
ALPHA_V2 = make_doc("alpha", ["Penguins cannot fly."], seed=3)


def generation(store: SpanStore) -> int:
    return store.collection_stats(C)["generation"]


def all_vectors(*items) -> dict[str, np.ndarray]:
    return {span.id: vec for _, spans, vectors in items for span, vec in zip(spans, vectors)}


def brute_force(query: np.ndarray, vectors: dict[str, np.ndarray], ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: -float(vectors[i] @ query))


def _put_tokens(store: SpanStore) -> np.ndarray:
    tokens = unit_vectors(5, seed=9)
    store.put_token_vectors(C, [("alpha#1", encode_tokens(tokens, "fp16"))], "tok")
    return tokens


# What each capability's smoke check runs on the fixture's collection (alpha and beta).
def _probe_span_read(store: SpanStore) -> None:
    assert [s.id for s in store.get_spans(C, ["beta#1"])] == ["beta#1"]
    assert [s.id for s in store.document_spans(C, "beta")] == ["beta#0", "beta#1", "beta#2"]
    assert set(store.find_vectors(C, ["alpha#1", "gone#1"])) == {"alpha#1"}
    assert store.document_hashes(C) == {"alpha": "hash-1", "beta": "hash-2"}


def _probe_write(store: SpanStore) -> None:
    store.replace_documents(C, [ALPHA_V2])
    store.put_source(C, SourceRecord("/src/alpha", "h", ["alpha"]))
    assert store.delete_documents(C, ["beta"]) == 1
    assert store.document_hashes(C) == {"alpha": "hash-3"}


def _probe_dense(store: SpanStore) -> None:
    assert store.dense_search(C, ALPHA[2][1], k=1)[0].span_id == "alpha#1"


def _probe_lexical(store: SpanStore) -> None:
    assert [h.span_id for h in store.lexical_search(C, "copper", 5, "sentence")] == ["beta#1"]


def _probe_token_vectors(store: SpanStore) -> None:
    tokens = _put_tokens(store)
    assert store.token_model(C) == "tok"
    packed = store.document_tokens(C, ["alpha", "beta"])
    assert packed.doc_ids == ["alpha"] and packed.offsets[-1] == len(tokens)


def _probe_token_search(store: SpanStore) -> None:
    tokens = _put_tokens(store)
    store.refresh(C)
    hits = store.token_search(C, tokens[:2], 3)
    assert hits.doc_ids == ["alpha"] and set(hits.query_index.tolist()) == {0, 1}


PROBES = {
    StoreCapability.SPAN_READ: _probe_span_read,
    StoreCapability.WRITE: _probe_write,
    StoreCapability.DENSE_SEARCH: _probe_dense,
    StoreCapability.LEXICAL_SEARCH: _probe_lexical,
    StoreCapability.TOKEN_VECTORS: _probe_token_vectors,
    StoreCapability.TOKEN_SEARCH: _probe_token_search,
}


class SpanStoreContract:
    """Subclass as ``Test<Backend>`` and implement :meth:`make_store`."""

    def make_store(self, tmp_path: Path) -> SpanStore:
        """A store on data under ``tmp_path``; called again with the same path, it reopens it."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path) -> SpanStore:
        s = self.make_store(tmp_path)
        s.create_collection(C, MODEL, DIM)
        s.replace_documents(C, [ALPHA, BETA])
        yield s
        s.close()

    # -- capabilities ------------------------------------------------------------------------

    def test_capabilities_are_declared_on_the_class(self, store):
        assert isinstance(type(store).capabilities, frozenset)
        assert all(isinstance(c, StoreCapability) for c in store.capabilities)
        assert set(PROBES) == set(StoreCapability)  # a new capability needs a probe here

    @pytest.mark.parametrize("capability", list(StoreCapability), ids=lambda c: c.value)
    def test_a_capability_either_works_or_each_of_its_methods_refuses(self, store, capability):
        if store.supports(capability):
            PROBES[capability](store)
            return
        for name in CAPABILITY_METHODS[capability]:
            with pytest.raises(UnsupportedCapability) as refused:
                getattr(store, name)(C)  # refused before the arguments are looked at
            assert refused.value.missing == {capability}
            message = str(refused.value)
            assert f"{name}()" in message and capability.value in message and store_name(store) in message

    def test_a_pipeline_needing_a_missing_capability_is_refused_when_chosen(self, store, tmp_path):
        from retrieval.pipeline import PIPELINES
        from retrieval.requirements import (
            PipelineNotSupported,
            needed_capabilities,
            require_pipeline,
            supported_pipelines,
        )
        from service.engine import RagService
        from service.settings import Settings

        rag = RagService(Settings(data_dir=tmp_path / "unused"))
        rag.__dict__["store"] = store  # no model is loaded: refusal comes before any work
        runs = supported_pipelines(store)
        for name, spec in PIPELINES.items():
            lacking = needed_capabilities(spec.params) - store.capabilities
            if not lacking:
                assert name in runs
                require_pipeline(store, name)
                continue
            assert name not in runs
            for choose in (
                lambda name=name: require_pipeline(store, name),
                lambda name=name: rag.retrieve(C, "giraffe?", name),
            ):
                with pytest.raises(PipelineNotSupported) as refused:
                    choose()
                message = refused.value.args[0]
                assert f"pipeline {name!r}" in message and store_name(store) in message
                assert all(c.value in message for c in lacking)

    def test_the_default_pipeline_runs_on_every_store(self, store):
        from retrieval.requirements import supported_pipelines

        assert "default" in supported_pipelines(store)

    # -- writes ------------------------------------------------------------------------------

    def test_replace_writes_documents_spans_and_vectors(self, store):
        doc = store.get_document(C, "alpha")
        assert doc is not None and doc.text == ALPHA[0].text and doc.metadata == {"seed": 1}
        assert [s.text for s in store.document_spans(C, "alpha")] == [s.text for s in ALPHA[1]]
        assert store.count_spans(C, "alpha") == 4
        for span in store.document_spans(C, "alpha"):
            assert doc.text[span.start : span.end] == span.text
        assert np.allclose(store.get_vectors(C, ["alpha#2"]), ALPHA[2][2:3])
        stats = store.collection_stats(C)
        assert stats["documents"] == store.document_count(C) == 2 and stats["spans"] == 7
        assert stats["spans_by_granularity"] == {"document": 2, "sentence": 5}

    def test_replacing_a_document_removes_its_old_spans_and_vectors(self, store):
        store.replace_documents(C, [ALPHA_V2])
        assert store.get_document(C, "alpha").text == "Penguins cannot fly."
        assert [s.id for s in store.document_spans(C, "alpha")] == ["alpha#0", "alpha#1"]
        assert store.get_spans(C, ["alpha#2", "alpha#3"]) == []
        with pytest.raises(KeyError):
            store.get_vectors(C, ["alpha#3"])
        # the old vector of alpha#3 no longer leads to alpha#3
        hits = store.dense_search(C, ALPHA[2][3], k=100)
        assert "alpha#3" not in {h.span_id for h in hits}
        assert len(hits) == 2 + 3  # alpha v2 (2 spans) + beta (3 spans)
        assert store.lexical_search(C, "giraffe", 10, "sentence") == []
        assert [h.span_id for h in store.lexical_search(C, "penguins", 10, "sentence")] == ["alpha#1"]

    def test_each_write_bumps_the_generation_once(self, store):
        before = generation(store)
        store.replace_documents(C, [ALPHA_V2])
        assert generation(store) == before + 1
        store.delete_documents(C, ["beta"])
        assert generation(store) == before + 2

    def test_replace_is_atomic_a_failing_batch_changes_nothing(self, store):
        before = generation(store)
        gamma = make_doc("gamma", ["Gamma rays are energetic."], seed=4)
        doc, spans, vectors = ALPHA_V2
        broken = (doc, spans, vectors[:, :4])  # wrong vector width: fails mid-transaction
        with pytest.raises(ValueError):
            store.replace_documents(C, [gamma, broken])
        assert store.get_document(C, "gamma") is None
        assert store.count_spans(C, "gamma") == 0
        assert store.get_document(C, "alpha").text == ALPHA[0].text
        assert [s.id for s in store.document_spans(C, "alpha")] == [s.id for s in ALPHA[1]]
        assert generation(store) == before
        hits = {h.span_id for h in store.dense_search(C, ALPHA[2][3], k=100)}
        assert "alpha#3" in hits and not any(h.startswith("gamma") for h in hits)

    def test_delete_removes_document_spans_vectors_and_search_hits(self, store):
        assert store.delete_documents(C, ["beta", "no-such-doc"]) == 1
        assert store.get_document(C, "beta") is None
        assert store.count_spans(C, "beta") == 0
        with pytest.raises(KeyError):
            store.get_vectors(C, ["beta#1"])
        hits = store.dense_search(C, BETA[2][1], k=100)
        assert hits and not any(h.span_id.startswith("beta") for h in hits)
        assert store.lexical_search(C, "copper", 10, "sentence") == []
        assert store.lexical_search(C, "copper", 10, "document") == []
        assert store.get_document(C, "alpha") is not None

    def test_dropping_a_collection_removes_everything_in_it_and_no_other(self, store):
        other = "other"
        store.create_collection(other, MODEL, DIM)
        store.replace_documents(other, [ALPHA])
        store.lexical_search(C, "copper", 10, "sentence")  # search indexes are built and cached
        store.drop_collection(C)
        assert not store.has_collection(C) and C not in store.list_collections()
        with pytest.raises(CollectionNotFound):
            store.drop_collection(C)
        store.create_collection(C, MODEL, DIM)  # the name is free again, and empty
        assert store.document_count(C) == 0 and store.get_document(C, "alpha") is None
        assert store.dense_search(C, ALPHA[2][1], k=10) == [] and store.list_sources(C) == []
        assert store.get_document(other, "alpha") is not None
        assert {h.span_id for h in store.dense_search(other, ALPHA[2][1], k=100)} >= {"alpha#1"}

    def test_deleting_unknown_documents_is_a_no_op(self, store):
        before = generation(store)
        assert store.delete_documents(C, ["nope"]) == 0
        assert generation(store) == before

    # -- search ------------------------------------------------------------------------------

    def test_dense_search_ranks_every_span_by_inner_product(self, store):
        vectors = all_vectors(ALPHA, BETA)
        query = ALPHA[2][2]
        hits = store.dense_search(C, query, k=100)
        assert [h.span_id for h in hits] == brute_force(query, vectors, list(vectors))
        assert hits[0].span_id == "alpha#2" and hits[0].score == pytest.approx(1.0, abs=1e-3)  # fp16 codes in the index
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert [h.span_id for h in store.dense_search(C, query, k=3)] == [h.span_id for h in hits[:3]]

    def test_dense_search_with_granularity_filter_returns_only_those_spans(self, store):
        vectors = all_vectors(ALPHA, BETA)
        query = BETA[2][1]
        documents = store.dense_search(C, query, k=100, granularities=["document"])
        assert [h.span_id for h in documents] == brute_force(query, vectors, ["alpha#0", "beta#0"])
        sentences = store.dense_search(C, query, k=100, granularities=["sentence"])
        expected = brute_force(query, vectors, [i for i in vectors if not i.endswith("#0")])
        assert [h.span_id for h in sentences] == expected
        assert sentences[0].span_id == "beta#1"
        assert len(store.dense_search(C, query, k=2, granularities=["sentence"])) == 2
        assert store.dense_search(C, query, k=10, granularities=["table"]) == []

    def test_dense_search_many_answers_each_query_as_dense_search_does(self, store):
        vectors = all_vectors(ALPHA, BETA)
        queries = np.stack([vectors["alpha#2"], vectors["beta#1"], vectors["beta#0"]])
        for granularities in (None, ["sentence"], ["document"], ["table"]):
            batched = store.dense_search_many(C, queries, 3, granularities)
            alone = [store.dense_search(C, q, 3, granularities) for q in queries]
            assert [[h.span_id for h in hits] for hits in batched] == [[h.span_id for h in hits] for hits in alone]

    def test_lexical_search_is_bm25_per_granularity(self, store):
        sentence_hits = store.lexical_search(C, "giraffe neck", 10, "sentence")
        assert [h.span_id for h in sentence_hits] == ["alpha#1"]
        assert sentence_hits[0].score > 0
        assert [h.span_id for h in store.lexical_search(C, "giraffe", 10, "document")] == ["alpha#0"]
        assert [h.span_id for h in store.lexical_search(C, "rusts", 10, "document")] == ["beta#0"]
        assert store.lexical_search(C, "giraffe", 10, "paragraph") == []
        assert store.lexical_search(C, "spaceship", 10, "sentence") == []

    def test_get_vectors_returns_rows_in_the_order_asked(self, store):
        vectors = all_vectors(ALPHA, BETA)
        ids = ["beta#2", "alpha#0", "alpha#3", "beta#0"]
        got = store.get_vectors(C, ids)
        assert got.shape == (4, DIM)
        assert np.allclose(got, np.stack([vectors[i] for i in ids]))
        assert store.get_vectors(C, []).shape == (0, DIM)
        with pytest.raises(KeyError):
            store.get_vectors(C, ["alpha#0", "missing#9"])

    def test_find_vectors_leaves_out_what_is_gone(self, store):
        found = store.find_vectors(C, ["beta#2", "gone#1", "alpha#1", "beta#2"])
        assert list(found) == ["beta#2", "alpha#1"]
        assert np.allclose(found["alpha#1"], ALPHA[2][1])

    def test_get_spans_keeps_order_and_skips_unknown_ids(self, store):
        spans = store.get_spans(C, ["beta#2", "nope#1", "alpha#1"])
        assert [s.id for s in spans] == ["beta#2", "alpha#1"]
        assert spans[1].heading_path == ["alpha"] and spans[1].parent_id == "alpha#0"

    def test_children_descendants_and_spans_within_follow_the_span_tree(self, store):
        assert [s.id for s in store.children(C, "alpha#0")] == ["alpha#1", "alpha#2", "alpha#3"]
        assert [s.id for s in store.descendants(C, "beta#0", "sentence")] == ["beta#1", "beta#2"]
        assert store.descendants(C, "nope#0", "sentence") == []
        document = store.get_spans(C, ["alpha#0"])[0]
        assert [s.id for s in store.spans_within(C, document, ["sentence"])] == ["alpha#1", "alpha#2", "alpha#3"]
        assert store.document_spans(C, "nope") == []

    def test_refresh_and_the_index_reports_answer_on_every_store(self, store):
        store.refresh(C)
        assert isinstance(store.index_footprint(C), dict)
        assert isinstance(store.index_build_seconds(C), dict)

    # -- durability --------------------------------------------------------------------------

    def test_everything_persists_across_reopen(self, store, tmp_path):
        query = ALPHA[2][1]
        before = [(h.span_id, round(h.score, 5)) for h in store.dense_search(C, query, k=100)]
        lexical = store.lexical_search(C, "stripes", 5, "sentence")
        store.close()
        reopened = self.make_store(tmp_path)
        try:
            assert reopened.list_collections() == [C]
            assert reopened.get_document(C, "beta").text == BETA[0].text
            assert np.allclose(reopened.get_vectors(C, ["alpha#1"]), ALPHA[2][1:2])
            assert [(h.span_id, round(h.score, 5)) for h in reopened.dense_search(C, query, k=100)] == before
            assert reopened.lexical_search(C, "stripes", 5, "sentence") == lexical
        finally:
            reopened.close()

    # -- collections -------------------------------------------------------------------------

    def test_create_collection_is_idempotent_for_the_same_model(self, store):
        store.create_collection(C, MODEL, DIM)
        assert store.list_collections() == [C]
        assert store.collection_stats(C)["model"] == MODEL
        assert store.collection_model(C) == MODEL

    @pytest.mark.parametrize("model, dim", [("other-model", DIM), (MODEL, 16)])
    def test_opening_a_collection_with_another_model_raises_store_mismatch(self, store, model, dim):
        with pytest.raises(StoreMismatch, match="use another collection"):
            store.create_collection(C, model, dim)

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.collection_stats("ghost"),
            lambda s: s.dense_search("ghost", unit_vectors(1, 0)[0], k=3),
            lambda s: s.lexical_search("ghost", "giraffe", 3, "sentence"),
            lambda s: s.replace_documents("ghost", [ALPHA]),
            lambda s: s.delete_documents("ghost", ["alpha"]),
            lambda s: s.get_vectors("ghost", ["alpha#0"]),
        ],
        ids=["stats", "dense_search", "lexical_search", "replace", "delete", "get_vectors"],
    )
    def test_unknown_collection_raises_collection_not_found(self, store, call):
        assert not store.has_collection("ghost")
        with pytest.raises(CollectionNotFound):
            call(store)

    def test_empty_collection_searches_return_nothing(self, store):
        store.create_collection("empty", MODEL, DIM)
        assert store.dense_search("empty", unit_vectors(1, 0)[0], k=5) == []
        assert store.lexical_search("empty", "giraffe", 5, "sentence") == []

    @pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65, "a..b"])
    def test_a_collection_name_that_is_not_a_safe_file_name_is_refused(self, tmp_path, name):
        store = self.make_store(tmp_path)
        try:
            with pytest.raises(InvalidCollectionName):
                store.create_collection(name, "m", 8)
            assert store.list_collections() == []
            assert not (tmp_path / "escape").exists()
        finally:
            store.close()

    # -- source records ----------------------------------------------------------------------

    def test_source_records_round_trip_and_filter_by_folder(self, store):
        store.put_source(C, SourceRecord("/corpus/a.md", "h1", ["a"]))
        store.put_source(C, SourceRecord("/corpus/sub/b.md", "h2", ["b"]))
        store.put_source(C, SourceRecord("/corpus2/c.md", "h3", ["c"]))
        assert store.get_source(C, "/corpus/a.md") == SourceRecord("/corpus/a.md", "h1", ["a"])
        assert sorted(r.path for r in store.list_sources(C, under="/corpus")) == ["/corpus/a.md", "/corpus/sub/b.md"]
        store.put_source(C, SourceRecord("/corpus/a.md", "h9", ["a", "a2"]))
        assert store.get_source(C, "/corpus/a.md").doc_ids == ["a", "a2"]
        store.delete_source(C, "/corpus/a.md")
        assert store.get_source(C, "/corpus/a.md") is None
        assert len(store.list_sources(C)) == 2

    # -- token vectors -----------------------------------------------------------------------

    @pytest.mark.parametrize("codec", ["fp16", "int8", "binary"])
    def test_token_vectors_round_trip_exactly_and_die_with_their_span(self, store, codec):
        if not store.supports(StoreCapability.TOKEN_VECTORS):
            pytest.skip("no token vectors (the capability test checks they are refused)")
        tokens = unit_vectors(5, seed=9)
        assert (
            store.put_token_vectors(
                C, [("alpha#1", encode_tokens(tokens, codec)), ("ghost#1", encode_tokens(tokens, codec))], "tok"
            )
            == 1
        )
        (got,) = store.get_token_vectors(C, ["alpha#1"]).values()
        expected = encode_tokens(tokens, codec)
        assert got.codec == codec and np.array_equal(got.data, expected.data)
        assert (got.scales is None) == (expected.scales is None)
        assert store.token_model(C) == "tok"
        assert store.token_vector_stats(C)[codec]["spans"] == 1
        assert "alpha#1" not in {s.id for s in store.spans_missing_token_vectors(C, ["sentence"])}
        assert list(store.document_token_vectors(C, ["alpha"])) == ["alpha"]
        store.replace_documents(C, [ALPHA_V2])  # a new version of the document drops them
        assert store.get_token_vectors(C, ["alpha#1"]) == {}

    def test_deleting_token_vectors_leaves_the_spans(self, store):
        if not store.supports(StoreCapability.TOKEN_VECTORS):
            pytest.skip("no token vectors")
        _put_tokens(store)
        assert store.delete_token_vectors(C) == 1
        assert store.get_token_vectors(C, ["alpha#1"]) == {} and store.token_vector_stats(C) == {}
        assert store.count_spans(C, "alpha") == 4
