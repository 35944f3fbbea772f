"""Live updates in the embedded store: a write is searched through a small delta segment
and tombstones, never by rebuilding the base on the query path; merges run in the
background, swap in whole, and a process killed in the middle of one leaves a store that
opens and answers as one index over the committed rows would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from store_contract import DIM, MODEL, C, make_doc

from indexing.store.bm25 import Bm25Index, tokenize_words
from indexing.store.merge_policy import MergePolicy
from indexing.store.segments import DeltaBm25
from indexing.store.sqlite_faiss import SqliteFaissStore

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "scifact_5.jsonl"
NEVER = MergePolicy(min_rows=10**9, max_deltas=10**6)  # deltas only, no background work


def sentences() -> list[str]:
    out = []
    for line in FIXTURE.read_text().splitlines():
        out.extend(s.strip() + "." for s in json.loads(line)["text"].split(". ") if len(s.split()) > 3)
    return out


SENTENCES = sentences()


def corpus(n_docs: int, seed: int = 0, per_doc: int = 3) -> list:
    """Documents of real sentences (cycled, each made unique by a serial) with random vectors."""
    return [
        make_doc(
            f"d{seed}-{i}",
            [
                f"{SENTENCES[(seed * 7 + i * per_doc + j) % len(SENTENCES)]} Serial {seed}x{i}x{j}."
                for j in range(per_doc)
            ],
            seed=seed * 10_000 + i,
        )
        for i in range(n_docs)
    ]


def open_store(path: Path, policy: MergePolicy = NEVER) -> SqliteFaissStore:
    store = SqliteFaissStore(path, merge_policy=policy)
    if not store.has_collection(C):
        store.create_collection(C, MODEL, DIM)
    return store


def one_go(path: Path, docs: list) -> SqliteFaissStore:
    """The same documents written at once: one base, no deltas."""
    store = open_store(path)
    store.replace_documents(C, docs)
    store.refresh(C)
    return store


QUERIES = np.random.default_rng(99).standard_normal((12, DIM)).astype(np.float32)
WORDS = ["vitamin", "cells", "patients", "risk", "expression", "mice", "treatment", "protein"]


def dense_hits(store, k=15, granularities=None):
    return [
        [(h.span_id, round(h.score, 5)) for h in hits] for hits in store.dense_search_many(C, QUERIES, k, granularities)
    ]


def lexical_ids(store, k=10):
    return [[h.span_id for h in store.lexical_search(C, w, k, "sentence")] for w in WORDS]


@pytest.fixture
def written(tmp_path):
    """A base of 30 documents, then writes: 6 added, 5 replaced, 4 deleted (no merge)."""
    store = open_store(tmp_path / "live")
    base = corpus(30)
    store.replace_documents(C, base)
    store.refresh(C)
    added, replaced = corpus(6, seed=1), corpus(5, seed=2)
    replaced = [
        make_doc(f"d0-{i}", [s.text for s in spans[1:]], seed=500 + i) for i, (_, spans, _) in enumerate(replaced)
    ]
    for doc in added:
        store.replace_documents(C, [doc])
        store.refresh(C)
    for doc in replaced:
        store.replace_documents(C, [doc])
    store.delete_documents(C, ["d0-10", "d0-11", "d0-12", "d0-13"])
    final = {doc.id: (doc, spans, vectors) for doc, spans, vectors in base}
    for item in [*added, *replaced]:
        final[item[0].id] = item
    for gone in ("d0-10", "d0-11", "d0-12", "d0-13"):
        del final[gone]
    yield store, list(final.values())
    store.close()


def test_writes_are_searched_through_deltas_as_one_index_over_everything_would(written, tmp_path):
    store, final = written
    reference = one_go(tmp_path / "reference", final)

    assert dense_hits(store) == dense_hits(reference)
    assert dense_hits(store, granularities=["sentence"]) == dense_hits(reference, granularities=["sentence"])
    freshness = store.collection_stats(C)["freshness"]
    assert freshness["pending_deltas"] >= 2 and freshness["delta_spans"] > 0 and freshness["tombstones"] > 0
    reference.close()


def test_deleted_and_replaced_spans_are_never_returned(written):
    store, final = written
    live = {span.id for _, spans, _ in final for span in spans}
    everything = store.dense_search_many(C, QUERIES, 1000)
    assert all(h.span_id in live for hits in everything for h in hits)
    assert {h.span_id for h in everything[0]} == live  # and every live span is found
    assert all(h in live for hits in lexical_ids(store, k=1000) for h in hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_each_segment_filters_tombstones_itself_so_a_search_still_returns_k_live_hits(tmp_path, kind):
    store = SqliteFaissStore(tmp_path / kind, dense_index=kind, merge_policy=NEVER)
    store.create_collection(C, MODEL, DIM)
    docs = corpus(40)
    store.replace_documents(C, docs)
    store.refresh(C)
    store.replace_documents(C, corpus(4, seed=3))  # a delta too
    before = store.dense_search_many(C, QUERIES, 5)
    # delete every document that was anywhere in the first results: dozens of tombstones
    gone = sorted({h.span_id.split("#")[0] for hits in before for h in hits})
    assert 5 < len(gone) < 44
    store.delete_documents(C, gone)
    store.refresh(C)

    for hits in store.dense_search_many(C, QUERIES, 5):
        assert len(hits) == 5 and not any(h.span_id.split("#")[0] in gone for h in hits)
    for word in WORDS:
        hits = store.lexical_search(C, word, 3, "sentence")
        assert not any(h.span_id.split("#")[0] in gone for h in hits)
    assert sum(len(store.lexical_search(C, w, 3, "sentence")) for w in WORDS) > 0
    store.close()


def test_no_search_after_a_write_rebuilds_the_base(written, monkeypatch):
    store, _ = written

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a search rebuilt the base")

    monkeypatch.setattr(store, "_rebuild", no_rebuild)
    store.replace_documents(C, corpus(2, seed=7))
    store.delete_documents(C, ["d0-1"])

    hits = store.dense_search(C, QUERIES[0], 5)
    assert hits and all(not h.span_id.startswith("d0-1#") for h in hits)
    assert store.lexical_search(C, "vitamin", 5, "sentence") is not None


def test_a_delta_scores_bm25_with_the_statistics_of_its_base():
    texts = list(SENTENCES)
    index = Bm25Index.build(np.arange(len(texts)), texts)
    delta = DeltaBm25.build(np.arange(len(texts)), tokenize_words(texts), index.stats)

    for word in WORDS + ["vitamin d deficiency", "the cells of mice"]:
        words = index.query_words(word)
        expected, got = index.search_words(words, 20), delta.search(words, 20)
        assert [r for r, _ in got] == [r for r, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)


def test_bm25_rankings_of_a_written_collection_stay_close_to_a_full_rebuilds(written, tmp_path):
    """BM25 statistics are the base's until the next merge. With a fifth of the collection
    written since, every span a rebuild matches is matched and the top hits agree; a merge
    makes the scores exact again."""
    store, final = written
    reference = one_go(tmp_path / "reference", final)
    queries = [f"{a} {b}" for a, b in zip(WORDS, WORDS[1:] + WORDS[:1], strict=True)]

    def scores(s, query):
        return {h.span_id: h.score for h in s.lexical_search(C, query, 1000, "sentence")}

    overlaps = []
    for query in queries:
        mine, theirs = scores(store, query), scores(reference, query)
        assert set(mine) == set(theirs), query
        top = [sorted(found, key=lambda i: -found[i])[:5] for found in (mine, theirs)]
        overlaps.append(len(set(top[0]) & set(top[1])) / max(len(top[1]), 1))
    assert np.mean(overlaps) >= 0.9
    store.merge(C)
    for query in queries:
        assert scores(store, query) == pytest.approx(scores(reference, query), rel=1e-6)
    reference.close()


def test_a_background_merge_folds_deltas_and_tombstones_into_a_new_base(tmp_path):
    store = open_store(tmp_path / "live", MergePolicy(min_rows=20, fraction=0.1, max_deltas=100))
    store.replace_documents(C, corpus(30))
    store.refresh(C)
    before = dense_hits(store)
    for i, doc in enumerate(corpus(8, seed=3)):
        store.replace_documents(C, [doc])
        store.delete_documents(C, [f"d0-{i}"])
        store.refresh(C)
    store.settle()

    freshness = store.collection_stats(C)["freshness"]
    assert freshness["base_generation"] == store.collection_stats(C)["generation"]
    assert freshness["pending_deltas"] == freshness["delta_spans"] == freshness["tombstones"] == 0
    assert freshness["merging"] is False and freshness["last_merge_age_s"] < 60
    reference = one_go(tmp_path / "reference", [*corpus(30)[8:], *corpus(8, seed=3)])
    assert dense_hits(store) == dense_hits(reference) != before
    store.close()
    reference.close()


@pytest.mark.parametrize("in_process", [False, True])
def test_a_merge_builds_in_a_worker_process_and_answers_as_one_built_in_process(tmp_path, in_process):
    store = SqliteFaissStore(tmp_path / "live", merge_policy=NEVER, merge_in_process=in_process)
    store.create_collection(C, MODEL, DIM)
    rng = np.random.default_rng(9)
    _with_tokens(store, corpus(20), rng)
    store.refresh(C)
    _with_tokens(store, corpus(5, seed=6), rng)
    store.delete_documents(C, ["d0-3", "d6-1"])
    store.merge(C)

    # built and saved by the worker, the base is loaded from disk (no build seconds here)
    assert (store.index_build_seconds(C) == {}) is not in_process
    freshness = store.freshness(C)
    assert freshness["pending_deltas"] == freshness["tombstones"] == 0
    assert store._token_matrices[C].stamp == store._token_stamp(C)  # the worker's matrix, taken over
    final = [d for d in [*corpus(20), *corpus(5, seed=6)] if d[0].id not in ("d0-3", "d6-1")]
    reference = one_go(tmp_path / "reference", final)
    assert dense_hits(store) == dense_hits(reference)
    assert lexical_ids(store) == lexical_ids(reference)
    store.close()
    reference.close()


def test_many_small_writes_are_compacted_into_one_delta_in_the_background(tmp_path):
    store = open_store(tmp_path / "live", MergePolicy(min_rows=10**9, max_deltas=3))
    store.replace_documents(C, corpus(20))
    store.refresh(C)
    for doc in corpus(7, seed=4):
        store.replace_documents(C, [doc])
        store.refresh(C)
    store.settle()

    assert store.collection_stats(C)["freshness"]["pending_deltas"] <= 3
    reference = one_go(tmp_path / "reference", [*corpus(20), *corpus(7, seed=4)])
    assert dense_hits(store) == dense_hits(reference)
    store.close()
    reference.close()


def test_a_process_on_an_older_base_still_answers_after_another_merged_twice(tmp_path):
    reader = open_store(tmp_path / "data")
    reader.replace_documents(C, corpus(20))
    reader.refresh(C)
    writer = open_store(tmp_path / "data")
    for seed in (5, 6):
        writer.replace_documents(C, corpus(4, seed=seed))
        writer.delete_documents(C, [f"d0-{seed}"])
        writer.merge(C)  # removes tombstones the reader's base would need
    expected = dense_hits(writer)
    writer.close()

    assert dense_hits(reader) == expected
    reader.close()


def test_token_vectors_written_since_the_matrix_are_read_from_sqlite_until_a_merge_rebuilds_it(tmp_path):
    from indexing.token_codecs import encode_tokens

    store = open_store(tmp_path / "data")
    docs = corpus(5)
    store.replace_documents(C, docs)
    rng = np.random.default_rng(3)
    codes = {
        s.id: encode_tokens(rng.standard_normal((4, DIM)).astype(np.float32), "fp16")
        for _, spans, _ in docs
        for s in spans
    }
    store.put_token_vectors(C, list(codes.items()), MODEL)
    store.refresh(C)
    store.settle()
    new = corpus(1, seed=8)
    store.replace_documents(C, new)
    new_codes = {s.id: encode_tokens(rng.standard_normal((2, DIM)).astype(np.float32), "fp16") for s in new[0][1]}
    store.put_token_vectors(C, list(new_codes.items()), MODEL)

    packed = store.document_tokens(C, [new[0][0].id, "d0-1"])

    assert packed.doc_ids == [new[0][0].id, "d0-1"]
    assert packed.offsets[1] == 2 * len(new[0][1])
    store.settle()
    assert store._token_matrices[C].stamp != store._token_stamp(C)  # not rebuilt for one write
    store.merge(C)
    assert store._token_matrices[C].stamp == store._token_stamp(C)  # a merge rebuilds it
    assert store.document_tokens(C, [new[0][0].id]).offsets[1] == 2 * len(new[0][1])
    store.close()


def _with_tokens(store, docs, rng, n=3):
    from indexing.token_codecs import encode_tokens

    def unit(rows: np.ndarray) -> np.ndarray:
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    codes = {s.id: encode_tokens(unit(rng.standard_normal((n, DIM))), "fp16") for _, spans, _ in docs for s in spans}
    store.replace_documents(C, docs)
    store.put_token_vectors(C, list(codes.items()), MODEL)
    return codes


def _token_hits(hits) -> set:
    return {
        (hits.doc_ids[d], int(q), round(float(s), 4))
        for d, q, s in zip(hits.doc_index, hits.query_index, hits.similarity, strict=True)
    }


def test_xtr_searches_the_token_matrix_and_the_writes_since_without_rebuilding_it(tmp_path, monkeypatch):
    from indexing.store.token_matrix import TokenMatrix

    rng = np.random.default_rng(5)
    store = open_store(tmp_path / "live")
    codes = _with_tokens(store, corpus(12), rng)
    store.refresh(C)
    store.settle()
    built = store._token_matrices[C]
    codes |= _with_tokens(store, corpus(3, seed=4), rng)  # added
    codes |= _with_tokens(store, corpus(2)[:2], rng)  # d0-0 and d0-1 replaced
    store.delete_documents(C, ["d0-5", "d4-1"])  # one from the matrix, one written since
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    n_tokens = 3 * sum(len(s) for _, s, _ in corpus(12)) * 2  # every stored token is a candidate

    monkeypatch.setattr(SqliteFaissStore, "_token_matrix", lambda *a, **k: pytest.fail("rebuilt on the query path"))
    hits = store.token_search(C, queries, n_tokens)
    monkeypatch.undo()

    assert store._token_matrices[C] is built
    live = store.dense_search_many(C, queries[:1], 10_000)[0]
    rows = [(h.span_id, h.span_id.split("#")[0], codes[h.span_id]) for h in sorted(live, key=lambda h: h.span_id)]
    by_doc: dict[str, list] = {}
    for row in rows:
        by_doc.setdefault(row[1], []).append(row)
    fresh = TokenMatrix.build([r for doc in by_doc.values() for r in doc], (0, 0)).search(queries, n_tokens)
    assert _token_hits(hits) == _token_hits(fresh)
    assert {"d0-5", "d4-1"}.isdisjoint(hits.doc_ids) and "d4-0" in hits.doc_ids
    np.testing.assert_allclose(np.sort(hits.floor), np.sort(fresh.floor), atol=1e-4)
    store.close()


def test_maxsim_reads_the_token_matrix_and_the_writes_since_without_reading_span_rows(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    store = open_store(tmp_path / "live")
    _with_tokens(store, corpus(10), rng)
    store.refresh(C)
    store.settle()
    _with_tokens(store, corpus(2, seed=4), rng)  # added
    _with_tokens(store, corpus(1), rng)  # d0-0 replaced
    store.delete_documents(C, ["d0-3"])
    wanted = ["d4-1", "d0-0", "d0-3", "d0-5", "missing", "d4-0"]
    expected = store.document_token_vectors(C, wanted)  # from SQLite

    monkeypatch.setattr(SqliteFaissStore, "_token_rows", lambda *a, **k: pytest.fail("span rows read"))
    packed = store.document_tokens(C, wanted)

    assert packed.doc_ids == ["d4-1", "d0-0", "d0-5", "d4-0"]
    for i, doc in enumerate(packed.doc_ids):
        rows = np.concatenate([np.asarray(e.data) for _, e in expected[doc]])
        assert np.array_equal(np.asarray(packed.vectors.data[packed.offsets[i] : packed.offsets[i + 1]]), rows)
        assert packed.first_span_ids[i] == expected[doc][0][0]
    store.close()


def test_a_query_that_finds_no_token_matrix_waits_for_the_background_build_instead_of_racing_it(tmp_path, monkeypatch):
    """The race CI met: refresh starts a background build, XTR finds no matrix yet and built
    and swapped in the same folder beside it, so one build wrote into a folder the other
    had just moved away."""
    import threading

    from indexing.store.token_matrix import TokenMatrix

    rng = np.random.default_rng(8)
    store = open_store(tmp_path / "live")
    _with_tokens(store, corpus(4), rng)
    builds, started, original = [], threading.Event(), TokenMatrix.build

    def slow_build(*args, **kwargs):
        builds.append(threading.current_thread().name)
        started.set()
        time.sleep(0.3)  # long enough for the query below to arrive mid-build
        return original(*args, **kwargs)

    monkeypatch.setattr(TokenMatrix, "build", staticmethod(slow_build))
    store.refresh(C)  # the background build starts
    assert started.wait(5)
    hits = store.token_search(C, np.eye(1, DIM, dtype=np.float32), 3)
    store.settle()

    assert len(builds) == 1 and hits.doc_ids
    assert store._token_matrices[C].stamp == store._token_stamp(C)
    assert list((tmp_path / "live" / "indexes").glob("*.tokens/signs.*.faissbin"))
    store.close()


def test_xtr_keeps_its_index_in_memory_when_the_matrix_folder_was_swapped_out(tmp_path):
    from indexing.store.token_matrix import TokenMatrix

    rng = np.random.default_rng(9)
    store = open_store(tmp_path / "live")
    _with_tokens(store, corpus(4), rng)
    matrix = store._token_matrix(C)
    shutil.rmtree(matrix.directory)  # what a merge's swap or a backfill does under a reader

    hits = matrix.search(np.eye(1, DIM, dtype=np.float32), 3)

    assert hits.doc_ids and matrix._binary_index is not None
    assert not matrix.directory.exists() and TokenMatrix.load(matrix.directory, None) is None
    store.close()


def test_tokens_written_for_spans_the_matrix_covers_make_xtr_rebuild_it(tmp_path):
    from indexing.token_codecs import encode_tokens

    rng = np.random.default_rng(6)
    store = open_store(tmp_path / "live")
    _with_tokens(store, corpus(4), rng)
    store.refresh(C)
    store.settle()
    span = corpus(4)[2][1][0].id
    store.put_token_vectors(C, [(span, encode_tokens(np.eye(1, DIM, dtype=np.float32), "fp16"))], MODEL)
    assert C not in store._token_matrices  # dropped: a writes-since view would miss it
    hits = store.token_search(C, np.eye(1, DIM, dtype=np.float32), 1)
    assert hits.doc_ids == ["d0-2"] and hits.similarity[0] == pytest.approx(1.0, abs=1e-3)
    store.close()


KILLED_MERGER = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from test_segments import corpus, open_store, C
store = open_store(__import__("pathlib").Path({path!r}))
print("ready", flush=True)
seed = 100
while True:
    store.replace_documents(C, corpus(40, seed=seed))
    store.delete_documents(C, [f"d{{seed - 1}}-{{i}}" for i in range(20)])
    store.merge(C)
    seed += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.3, 0.9, 1.7])
def test_a_merge_killed_at_any_point_leaves_a_store_that_opens_and_answers_exactly(tmp_path, after_s):
    path = tmp_path / "data"
    seed_store = open_store(path)
    seed_store.replace_documents(C, corpus(600, per_doc=4))
    seed_store.refresh(C)
    seed_store.close()
    code = KILLED_MERGER.format(
        repo=str(Path(__file__).resolve().parent.parent), tests=str(Path(__file__).parent), path=str(path)
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    time.sleep(after_s)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    store = open_store(path)
    vectors = {}
    for doc_id in store.document_hashes(C):
        for span in store.document_spans(C, doc_id):
            vectors[span.id] = store.get_vectors(C, [span.id])[0]
    ids = list(vectors)
    matrix = np.stack([vectors[i] for i in ids]).astype(np.float16).astype(np.float32)  # the index's fp16 codes
    for query, hits in zip(QUERIES, store.dense_search_many(C, QUERIES, 10), strict=True):
        expected = [ids[i] for i in np.argsort(-(matrix @ query), kind="stable")[:10]]
        assert [h.span_id for h in hits] == expected
    assert all(h.span_id in vectors for w in WORDS for h in store.lexical_search(C, w, 50, "sentence"))
    store.close()
