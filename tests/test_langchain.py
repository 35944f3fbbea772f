"""The LangChain retriever, in-process and against a running HTTP service."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever

from app.api import create_app
from app.langchain_retriever import SpanRAGRetriever
from indexing.store.base import CollectionNotFound

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "samples"
MERCURY = "How many days does Mercury take to orbit the Sun?"
METADATA_KEYS = {"span_id", "doc_id", "score", "granularity", "start", "end", "heading_path"}


@pytest.fixture(scope="module")
def rag(make_rag, tmp_path_factory):
    service = make_rag(tmp_path_factory.mktemp("langchain") / "data")
    assert service.ingest_paths(C, [SAMPLES]).added == 4
    return service


def test_the_retriever_is_a_langchain_base_retriever(rag):
    assert isinstance(SpanRAGRetriever(collection=C, service=rag), BaseRetriever)


def test_invoke_returns_one_langchain_document_per_span_with_span_metadata(rag):
    docs = SpanRAGRetriever(collection=C, service=rag).invoke(MERCURY)
    assert docs and all(isinstance(d, LCDocument) for d in docs)
    for d in docs:
        assert set(d.metadata) >= METADATA_KEYS
        assert d.page_content
        (span,) = rag.store.get_spans(C, [d.metadata["span_id"]])
        assert d.page_content == span.context_text
        assert (d.metadata["start"], d.metadata["end"]) == (span.start, span.end)
        assert d.metadata["doc_id"] == span.doc_id and d.metadata["granularity"] == span.granularity
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True), "best span first"
    assert any("Mercury orbits the Sun in 88 days" in d.page_content for d in docs)


def test_top_k_and_pipeline_are_passed_through(rag):
    docs = SpanRAGRetriever(collection=C, service=rag, top_k=2, budget_tokens=None).invoke(MERCURY)
    assert len(docs) == 2
    dense = SpanRAGRetriever(collection=C, service=rag, pipeline="dense", top_k=1).invoke(MERCURY)
    assert [d.metadata["granularity"] for d in dense] == ["document"]


def test_data_dir_mode_opens_the_collection_itself(rag, monkeypatch):
    retriever = SpanRAGRetriever(collection=C, data_dir=rag.settings.data_dir, top_k=3)
    # reuse the already loaded model instead of loading another copy
    monkeypatch.setattr("app.langchain_retriever.RagService",
                        lambda settings: _with_encoder(settings, rag))
    docs = retriever.invoke(MERCURY)
    assert [d.metadata["span_id"] for d in docs] == [
        d.metadata["span_id"] for d in SpanRAGRetriever(collection=C, service=rag, top_k=3).invoke(MERCURY)]


def _with_encoder(settings, rag):
    from service.engine import RagService

    service = RagService(settings)
    service.__dict__["encoder"] = rag.encoder
    return service


def test_unknown_collection_raises(rag):
    with pytest.raises(CollectionNotFound):
        SpanRAGRetriever(collection="ghost", service=rag).invoke(MERCURY)


# -- remote mode -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_url(rag):
    """The real HTTP app on a loopback port, served by uvicorn in a thread over ``rag``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service=rag), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_remote_mode_returns_the_same_spans_as_in_process(rag, server_url):
    remote = SpanRAGRetriever(collection=C, base_url=server_url, top_k=4).invoke(MERCURY)
    local = SpanRAGRetriever(collection=C, service=rag, top_k=4).invoke(MERCURY)
    assert [d.metadata["span_id"] for d in remote] == [d.metadata["span_id"] for d in local]
    assert [d.page_content for d in remote] == [d.page_content for d in local]
    assert all(set(d.metadata) >= METADATA_KEYS for d in remote)


def test_remote_mode_surfaces_http_errors(server_url):
    with pytest.raises(httpx.HTTPStatusError) as caught:
        SpanRAGRetriever(collection="ghost", base_url=server_url).invoke(MERCURY)
    assert caught.value.response.status_code == 404
