"""Reads race with writes (issue 14): queries take no lock and run while documents are
deleted, replaced and re-ingested. A query that races a delete or a replace sees the old
document or none of it: it never fails, and what it cites is always text its context holds.

The rule that makes this so (``indexing/store/base.py``): every read on the query path
returns what exists now, and retrieval drops the candidates, units and pieces that vanished.

* Deterministic: a store wrapper runs the write at one chosen read inside one query (after
  the candidates' spans are loaded, before the first vector read, ...), on both backends.
* Stress: one thread deletes, replaces and re-ingests documents through ``RagService`` while
  two threads query; no query may fail, and none may cite a document that was deleted before
  it started and stayed deleted until it ended.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from indexing.spans import Document, Span, doc_id_of
from indexing.store.base import SpanStore

STORES = ("sqlite_faiss", "qdrant")
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "race"
MERCURY = "How many days does Mercury take to orbit the Sun?"
NOTES = "mercury-notes"  # written over HTTP (a file's document cannot be replaced that way)
NOTES_V1 = """# Mercury notes

Mercury orbits the Sun in 88 days, the shortest year of any planet. Mercury has no moons.

## Orbit

| planet | orbital period (days) |
|---|---|
| Mercury | 88 |
| Venus | 225 |
"""
NOTES_V2 = """# Mercury notes

Mercury is the smallest planet. It takes Mercury 88 Earth days to orbit the Sun on an eccentric path.

## Orbit

| planet | orbital period (days) |
|---|---|
| Mercury | 87.97 |

A day on Mercury lasts 176 Earth days.
"""


# -- helpers -------------------------------------------------------------------------------------


class WriteDuringRead:
    """The service's store, except that the first call of one of ``methods`` runs ``write``
    just before it (``when="before"``) or just after it returns (``"after"``): a concurrent
    write landing at exactly that point of a query."""

    def __init__(self, store: SpanStore, methods: set[str], when: str, write):
        self._store, self._methods, self._when, self._write = store, methods, when, write
        self.fired = False

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if name not in self._methods or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.fired:
                return attr(*args, **kwargs)
            if self._when == "before":
                self.fired = True
                self._write()
                return attr(*args, **kwargs)
            result = attr(*args, **kwargs)
            self.fired = True
            self._write()
            return result

        return call


def check_answer(rag, result, answer) -> None:
    """A well-formed result: every context span has its pieces with one vector each, the
    token count adds up, and every citation is one of the context's pieces."""
    context = result.context
    assert context.n_tokens == sum(item.n_tokens for item in context.spans)
    pieces = {}
    for item in context.spans:
        assert item.pieces and len(item.piece_vectors) == len(item.pieces)
        for p in item.pieces:
            assert p.doc_id == item.span.doc_id and item.span.start <= p.start and p.end <= item.span.end
            assert item.span.text[p.start - item.span.start : p.end - item.span.start] == p.text
            pieces[p.id] = p
    assert [c.id for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    for c in answer.citations:
        assert c.span_id in pieces and pieces[c.span_id].text == c.text


def taken(result) -> set[str]:
    return {t.span_id for t in result.context.trace if t.decision == "taken" and t.source != "compression"}


# -- deterministic: one write at one point of one query ----------------------------------------------


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Three of the sample files (HTML with a table, CSV, text): small enough to embed fast."""
    target = tmp_path_factory.mktemp("corpus")
    for name in ("solar-system.html", "coffee-prices.csv", "tea-notes.txt"):
        shutil.copy(SAMPLES / name, target / name)
    return target


@pytest.fixture(scope="module", params=STORES)
def service(request, make_rag, tmp_path_factory, corpus_dir):
    rag = make_rag(tmp_path_factory.mktemp(f"reads-{request.param}") / "data", store=request.param)
    report = rag.ingest_paths(C, [corpus_dir])
    assert report.added == 3 and report.failed == []
    rag.corpus_dir = corpus_dir
    rag.solar = next(d for d in report.doc_ids if d.endswith("solar-system.html"))
    rag.ingest_text(C, NOTES, NOTES_V1, title="Mercury notes", fmt="markdown")
    rag.hashes = rag.store.document_hashes(C)
    return rag


@pytest.fixture
def rag(service):
    """The module's service with its corpus as first ingested (an earlier test may have
    deleted the solar-system document or replaced the notes: they are brought back)."""
    hashes = service.store.document_hashes(C)
    if hashes.get(service.solar) != service.hashes[service.solar]:
        assert service.ingest_paths(C, [service.corpus_dir]).failed == []
    if hashes.get(NOTES) != service.hashes[NOTES]:
        service.ingest_text(C, NOTES, NOTES_V1, title="Mercury notes", fmt="markdown")
    assert service.store.document_hashes(C) == service.hashes
    return service


def race(rag, monkeypatch, methods: set[str], when: str, write) -> WriteDuringRead:
    wrapper = WriteDuringRead(rag.store, methods, when, write)
    monkeypatch.setattr(rag.retriever, "store", wrapper)
    return wrapper


VECTORS = {"get_vectors", "find_vectors"}  # whichever the query path reads vectors with

DELETE_POINTS = [
    # (pipeline, read the delete lands at, before/after it): each point at which the first
    # stage's spans of the document exist and some later read of the query finds them gone
    ("default", {"get_spans"}, "after"),  # bubble: candidates loaded, units not yet read
    ("default", {"document_spans"}, "after"),  # bubble: the anchor document's spans read
    ("default", VECTORS, "before"),  # bubble: the units' vectors
    ("hybrid", {"get_spans"}, "after"),  # top-k: the context's pieces and their vectors
    ("hybrid", VECTORS, "before"),
    ("adaptive-k", {"get_spans"}, "after"),
    ("clustered", {"get_spans"}, "after"),
    ("default-compressed", {"get_spans"}, "after"),
]


@pytest.mark.parametrize(
    ("pipeline", "methods", "when"),
    DELETE_POINTS,
    ids=[f"{p}-{'vectors' if m is VECTORS else next(iter(m))}-{w}" for p, m, w in DELETE_POINTS],
)
def test_a_document_deleted_under_a_query_is_left_out_of_its_context(rag, monkeypatch, pipeline, methods, when):
    assert any(item.span.doc_id == rag.solar for item in rag.retrieve(C, MERCURY, pipeline).context.spans)
    hook = race(rag, monkeypatch, methods, when, lambda: rag.delete_document(C, rag.solar))

    result = rag.retrieve(C, MERCURY, pipeline)
    answer, _ = rag.answer(result)

    assert hook.fired and rag.store.get_document(C, rag.solar) is None
    check_answer(rag, result, answer)
    assert all(item.span.doc_id != rag.solar for item in result.context.spans)
    assert all(c.doc_id != rag.solar for c in answer.citations)
    assert not any(doc_id_of(s) == rag.solar for s in taken(result))
    if result.compression is None:
        assert taken(result) == {item.span.id for item in result.context.spans}


def test_a_delete_between_selection_and_compression_leaves_the_selected_context(rag, monkeypatch):
    """Compression reads token codes after selection: a document deleted by then is seen
    whole (the context already holds it), never half."""
    hook = race(rag, monkeypatch, {"get_token_vectors"}, "before", lambda: rag.delete_document(C, rag.solar))
    result = rag.retrieve(C, MERCURY, "default-compressed", overrides={"compress_ratio": 0.3})
    answer, _ = rag.answer(result)
    assert hook.fired and result.compression.applied
    check_answer(rag, result, answer)


@pytest.mark.parametrize(
    ("methods", "when"), [({"get_spans"}, "after"), (VECTORS, "before")], ids=["get_spans", "vectors"]
)
@pytest.mark.parametrize("pipeline", ["default", "hybrid"])
def test_a_document_replaced_under_a_query_is_cited_from_one_version(rag, monkeypatch, pipeline, methods, when):
    """A replace gives the span ids to the new version: whatever the query read of either
    version, each context span shows its own pieces and each citation is one version's text."""
    old = rag.store.get_document(C, NOTES).text
    assert any(item.span.doc_id == NOTES for item in rag.retrieve(C, MERCURY, pipeline).context.spans)
    hook = race(
        rag,
        monkeypatch,
        methods,
        when,
        lambda: rag.ingest_text(C, NOTES, NOTES_V2, title="Mercury notes", fmt="markdown"),
    )

    result = rag.retrieve(C, MERCURY, pipeline)
    answer, _ = rag.answer(result)

    new = rag.store.get_document(C, NOTES).text
    assert hook.fired and new != old
    check_answer(rag, result, answer)
    for c in answer.citations:
        if c.doc_id == NOTES:
            assert c.text in (old[c.start : c.end], new[c.start : c.end])
    for item in result.context.spans:
        if item.span.doc_id == NOTES:
            assert item.span.text in (old[item.span.start : item.span.end], new[item.span.start : item.span.end])


def test_find_vectors_returns_the_spans_that_exist_and_skips_the_rest(rag):
    """The store's side of the contract: unknown ids are skipped, not an error (the strict
    get_vectors still raises)."""
    ids = [s.id for s in rag.store.document_spans(C, rag.solar)][:3]
    found = rag.store.find_vectors(C, [ids[2], "gone#1", ids[0], ids[2]])
    assert list(found) == [ids[2], ids[0]]
    assert np.allclose(np.stack(list(found.values())), rag.store.get_vectors(C, [ids[2], ids[0]]))
    assert rag.store.find_vectors(C, []) == {}
    with pytest.raises(KeyError):
        rag.store.get_vectors(C, [ids[0], "gone#1"])


# -- stress: a writer against two readers ---------------------------------------------------------------


def _small_doc(doc_id: str, n: int, seed: int):
    """A document span and ``n`` sentence spans with random unit vectors (dim 8)."""
    sentences = [f"{doc_id} sentence {i} about topic {seed % 5}." for i in range(n)]
    text = " ".join(sentences)
    doc = Document(
        id=doc_id, collection=C, title=doc_id, source=f"/src/{doc_id}", content_hash=f"h{seed}", text=text, metadata={}
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
    for i, sentence in enumerate(sentences, start=1):
        start = text.index(sentence)
        spans.append(
            Span(
                id=f"{doc_id}#{i}",
                doc_id=doc_id,
                parent_id=f"{doc_id}#0",
                granularity="sentence",
                start=start,
                end=start + len(sentence),
                text=sentence,
                n_tokens=len(sentence.split()),
                order=i,
            )
        )
    vectors = np.random.default_rng(seed).standard_normal((len(spans), 8)).astype(np.float32)
    return doc, spans, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", STORES)
def test_store_reads_run_alongside_writes(tmp_path, backend):
    """The stores alone (no model): searches and reads while another thread writes new
    documents and deletes old ones. qdrant-client's local mode grows its arrays in place
    under a write, so the Qdrant store runs local-mode calls one at a time."""
    from indexing.store.qdrant import QdrantStore
    from indexing.store.sqlite_faiss import SqliteFaissStore

    store = QdrantStore(path=tmp_path / "qdrant") if backend == "qdrant" else SqliteFaissStore(tmp_path / "data")
    store.create_collection(C, "test-model", 8)
    store.replace_documents(C, [_small_doc(f"d{i}", 3, i) for i in range(4)])
    errors: list[str] = []
    stop = threading.Event()
    deadline = time.monotonic() + 2.0

    def writer() -> None:
        try:
            for i in range(4, 10):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                store.replace_documents(C, [_small_doc(f"d{i}", 1 + i % 6, i)])
                store.delete_documents(C, [f"d{i - 3}"])
        except Exception:
            errors.append("writer: " + traceback.format_exc())
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                query = rng.standard_normal(8).astype(np.float32)
                ids = [h.span_id for h in store.dense_search(C, query / np.linalg.norm(query), 20)]
                ids += [h.span_id for h in store.lexical_search(C, "sentence topic", 20, "sentence")]
                found = store.find_vectors(C, ids)
                assert set(found) <= set(ids)
                spans = store.get_spans(C, ids)
                for doc_id in {s.doc_id for s in spans}:
                    store.document_spans(C, doc_id)
                time.sleep(0.001)  # let the writer in between queries, as a server's gaps would
        except Exception:
            errors.append(f"reader {seed}: " + traceback.format_exc())
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    store.close()
    assert not errors, "\n".join(errors[:2])


def _doc(topic: str, version: str, sentences: list[str]) -> str:
    return f"# {topic}\n\n" + " ".join(sentences) + f"\n\n## Notes\n\nVersion {version} of the {topic.lower()} notes.\n"


CORPUS = {
    "volcanoes": [
        _doc(
            "Volcanoes",
            "A",
            [
                "Basaltic lava erupts at about 1,150 degrees Celsius.",
                "Shield volcanoes are built from fluid lava flows.",
                "Mauna Loa is the largest active volcano on Earth.",
            ],
        ),
        _doc(
            "Volcanoes",
            "B",
            [
                "Lava from a volcano is hotter than 1,000 degrees Celsius.",
                "Stratovolcanoes erupt explosively with viscous lava.",
                "Ash clouds from volcanoes disrupt air travel.",
            ],
        ),
    ],
    "honeybees": [
        _doc(
            "Honeybees",
            "A",
            [
                "Honeybees communicate the direction of flowers with a waggle dance.",
                "A colony has one queen and thousands of workers.",
            ],
        ),
        _doc(
            "Honeybees",
            "B",
            [
                "Worker bees dance to tell the hive where nectar is.",
                "Drones are male honeybees that do not gather food.",
            ],
        ),
    ],
    "lighthouses": [
        "# Lighthouses\n\nLighthouses use Fresnel lenses to focus their beam.\n\n"
        "| lighthouse | height (m) |\n|---|---|\n| Jeddah Light | 133 |\n| Ile Vierge | 83 |\n",
        "# Lighthouses\n\nA Fresnel lens lets a lighthouse beam reach sailors far away.\n\n"
        "| lighthouse | height (m) |\n|---|---|\n| Jeddah Light | 133 |\n| Hook Head | 35 |\n",
    ],
    "tides": [
        _doc(
            "Tides",
            "A",
            [
                "Ocean tides are caused by the gravity of the Moon and the Sun.",
                "Spring tides happen at new and full moon.",
            ],
        )
    ],
    "glaciers": [
        _doc(
            "Glaciers",
            "A",
            ["Most glaciers move a few centimetres to a few metres a day.", "Glaciers carve U-shaped valleys."],
        )
    ],
}
VICTIMS = ["volcanoes", "honeybees", "lighthouses"]
QUESTIONS = [
    "How hot is lava from a volcano?",
    "How do honeybees tell each other where flowers are?",
    "What lens does a lighthouse use?",
    "How tall is the Jeddah Light lighthouse?",
    "What causes ocean tides?",
    "How fast do glaciers move?",
]
PIPELINES = ["default", "hybrid", "adaptive-k", "clustered", "default-compressed", "bubble"]
SECONDS = 4.0  # per backend
MAX_WRITES, MAX_QUERIES = 150, 150  # per thread
MIN_WRITES, MIN_QUERIES = 4, 4  # per thread, even on a slow machine (past SECONDS if need be)


@pytest.mark.parametrize("backend", STORES)
def test_queries_under_concurrent_deletes_replaces_and_reingests_never_fail(make_rag, tmp_path, backend):
    rag = make_rag(tmp_path / "data", store=backend)
    for doc_id, versions in CORPUS.items():
        rag.ingest_text(C, doc_id, versions[0], title=doc_id, fmt="markdown")

    lock = threading.Lock()
    events: list[tuple[str, str]] = []  # ("deleted" when a delete returned | "ingest" when one starts, doc id)
    errors: list[str] = []
    checked: list[int] = []
    stop = threading.Event()
    deadline = time.monotonic() + SECONDS

    def log(kind: str, doc_id: str) -> None:
        with lock:
            events.append((kind, doc_id))

    def writer() -> None:
        rng = random.Random(14)
        present = set(VICTIMS)
        version = {d: 0 for d in VICTIMS}
        try:
            for n in range(MAX_WRITES):
                if errors or (time.monotonic() > deadline and n >= MIN_WRITES):
                    break
                doc_id = rng.choice(VICTIMS)
                if doc_id in present and rng.random() < 0.5:
                    rag.delete_document(C, doc_id)
                    present.discard(doc_id)
                    log("deleted", doc_id)
                else:  # re-ingest a deleted document, or replace one by its other version
                    version[doc_id] = 1 - version[doc_id]
                    log("ingest", doc_id)
                    rag.ingest_text(C, doc_id, CORPUS[doc_id][version[doc_id]], title=doc_id, fmt="markdown")
                    present.add(doc_id)
        except Exception:
            errors.append("writer: " + traceback.format_exc())
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(MAX_QUERIES):
            if errors or (stop.is_set() and n >= MIN_QUERIES):
                return
            question, pipeline = rng.choice(QUESTIONS), PIPELINES[(n + seed) % len(PIPELINES)]
            with lock:
                started = len(events)
            try:
                result = rag.retrieve(C, question, pipeline)
                answer, _ = rag.answer(result)
                check_answer(rag, result, answer)
            except Exception:
                errors.append(f"{pipeline} {question!r}: " + traceback.format_exc())
                return
            with lock:
                before, during = events[:started], events[started:]
            last = {doc_id: kind for kind, doc_id in before}
            gone = {d for d, kind in last.items() if kind == "deleted"} - {d for kind, d in during if kind == "ingest"}
            cited = {c.doc_id for c in answer.citations} | {item.span.doc_id for item in result.context.spans}
            if cited & gone:
                errors.append(f"{pipeline} {question!r} cites {sorted(cited & gone)}, deleted before it started")
            checked.append(1)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, "\n".join(errors[:3])
    writes = sum(1 for kind, _ in events if kind in ("deleted", "ingest"))
    assert writes >= MIN_WRITES and len(checked) >= 2 * MIN_QUERIES, (writes, len(checked))
