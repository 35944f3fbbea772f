"""The store seam: the contract test class (``tests/store_contract.py``) run against both
backends (SQLite + FAISS, and Qdrant in qdrant-client's local mode), then the tests about one
backend's own machinery (FAISS's derived index files, the Qdrant layout), and the capability
machinery itself: a store class that breaks its declaration is refused when it is defined,
and a pipeline a store cannot run is refused with a 400 over HTTP and an error in the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from store_contract import ALPHA, BETA, DIM, MODEL, C, SpanStoreContract, generation, make_doc

from indexing.store.base import (
    ALL_CAPABILITIES,
    CAPABILITY_METHODS,
    SpanStore,
    StoreCapability,
    UnsupportedCapability,
    require,
)
from indexing.store.qdrant import QdrantStore
from indexing.store.sqlite_faiss import SqliteFaissStore

# -- the contract, on each backend ---------------------------------------------------------------


class TestSqliteFaissStore(SpanStoreContract):
    def make_store(self, tmp_path: Path) -> SpanStore:
        return SqliteFaissStore(tmp_path / "data")


@pytest.mark.slow
class TestQdrantStore(SpanStoreContract):
    def make_store(self, tmp_path: Path) -> SpanStore:
        return QdrantStore(path=tmp_path / "data" / "qdrant")  # local mode


@pytest.mark.slow
class TestQdrantEdgeStore(SpanStoreContract):
    """The same contract on the Qdrant engine in-process (qdrant-edge-py, the edge extra)."""

    def make_store(self, tmp_path: Path) -> SpanStore:
        pytest.importorskip("qdrant_edge", reason="the edge extra is not installed")
        return QdrantStore(path=tmp_path / "data" / "qdrant-edge", local_engine="edge")


# -- SQLite + FAISS: derived index files ------------------------------------------------------------


@pytest.fixture
def faiss_store(tmp_path) -> SqliteFaissStore:
    s = SqliteFaissStore(tmp_path / "data")
    s.create_collection(C, MODEL, DIM)
    s.replace_documents(C, [ALPHA, BETA])
    yield s
    s.close()


def test_missing_index_files_are_rebuilt_from_sqlite(faiss_store, tmp_path):
    data = tmp_path / "data"
    query = BETA[2][2]
    before = [h.span_id for h in faiss_store.dense_search(C, query, k=100)]
    assert (data / "indexes" / C).is_dir()
    faiss_store.close()
    shutil.rmtree(data / "indexes")
    reopened = SqliteFaissStore(data)
    try:
        assert [h.span_id for h in reopened.dense_search(C, query, k=100)] == before
        assert [h.span_id for h in reopened.lexical_search(C, "iron", 5, "sentence")] == ["beta#2"]
        assert (data / "indexes" / C).is_dir()
    finally:
        reopened.close()


def test_corrupt_index_files_are_rebuilt_from_sqlite(faiss_store, tmp_path):
    data = tmp_path / "data"
    faiss_store.refresh(C)
    faiss_store.close()
    (data / "indexes" / C / "dense.faiss").write_bytes(b"garbage")
    reopened = SqliteFaissStore(data)
    try:
        assert reopened.dense_search(C, ALPHA[2][2], k=1)[0].span_id == "alpha#2"
    finally:
        reopened.close()


def test_another_writers_changes_are_searched_through_a_delta_without_rebuilding_the_base(faiss_store, tmp_path):
    faiss_store.refresh(C)
    base_generation = generation(faiss_store)
    other = SqliteFaissStore(tmp_path / "data")  # e.g. the CLI writing while a server runs
    try:
        gamma = make_doc("gamma", ["Gamma rays are energetic."], seed=4)
        other.replace_documents(C, [gamma])
        other.delete_documents(C, ["beta"])
    finally:
        other.close()
    hits = {h.span_id for h in faiss_store.dense_search(C, gamma[2][1], k=100)}
    assert "gamma#1" in hits and not any(h.startswith("beta") for h in hits)
    assert [h.span_id for h in faiss_store.lexical_search(C, "gamma", 5, "sentence")] == ["gamma#1"]
    meta = json.loads((Path(tmp_path) / "data" / "indexes" / C / "meta.json").read_text())
    assert meta["generation"] == base_generation < generation(faiss_store)
    freshness = faiss_store.collection_stats(C)["freshness"]
    assert freshness["base_generation"] == base_generation
    assert freshness["delta_spans"] == len(gamma[1]) and freshness["tombstones"] == len(BETA[1])


# -- Qdrant: layout and replicas -------------------------------------------------------------------


def test_a_qdrant_collection_has_dense_and_maxsim_multivector_spaces(tmp_path):
    from qdrant_client import models

    store = QdrantStore(path=tmp_path / "qdrant")
    try:
        store.create_collection(C, MODEL, DIM)
        vectors = store.client.get_collection(f"spanrag__{C}").config.params.vectors
        assert vectors["dense"].size == DIM and vectors["dense"].distance == models.Distance.COSINE
        assert vectors["tokens"].multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
    finally:
        store.close()


def test_two_qdrant_writers_racing_still_invalidate_every_replicas_lexical_cache(tmp_path, monkeypatch):
    """Two spanrag processes in front of one Qdrant (simulated: three stores sharing one
    client). Writer A reads the collection record, writer B commits, then A commits from
    its stale read: the generation counter and the next row number are handed out twice,
    yet a replica that cached BM25 in between still sees A's document."""
    writer_a = QdrantStore(path=tmp_path / "qdrant")
    writer_b, replica = QdrantStore(path=tmp_path / "b"), QdrantStore(path=tmp_path / "r")
    writer_b.client = replica.client = writer_a.client
    try:
        writer_a.create_collection(C, MODEL, DIM)
        writer_a.replace_documents(C, [ALPHA])
        stale = writer_a._require(C)
        writer_b.replace_documents(C, [BETA])
        assert [h.span_id for h in replica.lexical_search(C, "copper", 10, "sentence")] == ["beta#1"]

        monkeypatch.setattr(writer_a, "_require", lambda collection: dict(stale))
        gamma = make_doc("gamma", ["Walruses have tusks."], seed=4)
        writer_a.replace_documents(C, [gamma])
        monkeypatch.undo()

        assert writer_a.collection_stats(C)["generation"] == stale["generation"] + 1  # the lost bump
        replica.refresh(C)
        assert [h.span_id for h in replica.lexical_search(C, "walruses", 10, "sentence")] == ["gamma#1"]
        assert [h.span_id for h in replica.lexical_search(C, "copper", 10, "sentence")] == ["beta#1"]
    finally:
        writer_a.close()


# -- capabilities: declarations, and pipelines refused when chosen ----------------------------------


class CoreOnly(SpanStore):
    """A store with the methods every store has and no capability."""

    def create_collection(self, name, model, dim): ...
    def has_collection(self, name):
        return name == C

    def list_collections(self):
        return [C]

    def collection_model(self, name):
        return MODEL

    def collection_stats(self, name):
        return {}

    def close(self): ...


def test_every_method_of_a_capability_the_store_lacks_raises_unsupported_capability():
    store = CoreOnly()
    assert store.capabilities == frozenset() and not store.supports(StoreCapability.SPAN_READ)
    for capability, names in CAPABILITY_METHODS.items():
        assert names
        for name in names:
            with pytest.raises(UnsupportedCapability, match=rf"{name}\(\) needs {capability.value} .* CoreOnly store"):
                getattr(store, name)(C, "x")
    store.refresh(C)  # what every store has works
    assert store.index_footprint(C) == {} and store.index_build_seconds(C) == {}
    with pytest.raises(UnsupportedCapability, match="pipeline 'dense' needs span_read"):
        require(store, {StoreCapability.SPAN_READ, StoreCapability.DENSE_SEARCH}, "pipeline 'dense'")


def test_a_store_must_implement_every_method_of_what_it_declares():
    with pytest.raises(TypeError, match="declares lexical_search but does not implement lexical_search"):
        type("Lexical", (CoreOnly,), {"capabilities": frozenset({StoreCapability.LEXICAL_SEARCH})})


def test_a_store_must_declare_the_capabilities_it_implements():
    with pytest.raises(TypeError, match="implements token_search but does not declare token_search"):
        type("NoXtr", (SqliteFaissStore,), {"capabilities": ALL_CAPABILITIES - {StoreCapability.TOKEN_SEARCH}})
    with pytest.raises(TypeError, match="frozenset of StoreCapability"):
        type("Loose", (CoreOnly,), {"capabilities": frozenset({"dense_search"})})


def test_the_backends_declare_what_they_can_do():
    assert SqliteFaissStore.capabilities == ALL_CAPABILITIES
    assert QdrantStore.capabilities == ALL_CAPABILITIES - {StoreCapability.TOKEN_SEARCH}


STORE_CALL = re.compile(r"\bstore\.([a-z_]+)\(")


def test_every_method_called_on_a_store_is_declared_by_span_store():
    """An audit of the code: each ``store.<method>(`` outside indexing/store/ names a method
    of the contract (so a new backend that passes the contract serves every caller)."""
    root = Path(__file__).resolve().parent.parent
    called: dict[str, str] = {}
    for folder in ("retrieval", "service", "app", "indexing", "eval", "bench", "compression", "generation"):
        for path in (root / folder).rglob("*.py"):
            if path.parent == root / "indexing" / "store":
                continue
            for name in STORE_CALL.findall(path.read_text(encoding="utf-8")):
                called.setdefault(name, str(path.relative_to(root)))
    assert {"refresh", "document_spans", "token_search", "dense_search"} <= set(called)
    undeclared = {name: where for name, where in called.items() if not hasattr(SpanStore, name)}
    assert not undeclared, f"called on a store but not declared by SpanStore: {undeclared}"


@pytest.fixture
def qdrant_service(tmp_path):
    """A service on a Qdrant store (local mode) holding collection ``C``; no model loaded."""
    from service.engine import RagService
    from service.settings import Settings

    rag = RagService(Settings(data_dir=tmp_path / "data", store="qdrant", allowed_hosts=["testserver"]))
    rag.store.create_collection(C, MODEL, DIM)
    rag.store.replace_documents(C, [ALPHA, BETA])
    yield rag
    rag.close()


def test_a_pipeline_the_store_cannot_run_is_a_400_over_http(qdrant_service):
    from fastapi.testclient import TestClient

    from app.api import create_app

    client = TestClient(create_app(service=qdrant_service), raise_server_exceptions=False)
    for route in ("query", "retrieve"):
        response = client.post(f"/v1/collections/{C}/{route}", json={"question": "giraffe?", "pipeline": "xtr"})
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert "pipeline 'xtr' needs token_search" in detail and "qdrant store" in detail
        assert "maxsim" in detail  # what it can run instead
    response = client.post(
        "/v1/chat/completions",
        json={"model": f"spanrag:{C}", "messages": [{"role": "user", "content": "giraffe?"}], "pipeline": "xtr-only"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "pipeline" and "pipeline 'xtr-only' needs token_search" in error["message"]


def test_a_pipeline_the_store_cannot_run_is_an_error_in_the_cli(qdrant_service, monkeypatch):
    from typer.testing import CliRunner

    import app.cli

    qdrant_service.__dict__["encoder"] = type("NoModel", (), {"dim": DIM})()  # refused before encoding
    monkeypatch.setattr(app.cli, "make_service", lambda *args, **kwargs: qdrant_service)
    result = CliRunner().invoke(app.cli.cli, ["query", "giraffe?", "--collection", C, "--pipeline", "xtr"])
    assert result.exit_code == 1, result.output
    assert "pipeline 'xtr' needs token_search" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
