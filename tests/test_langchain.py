"""The LangChain retriever, in-process and against a running HTTP service."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pydantic
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


def test_k_caps_the_documents_best_first_as_field_search_kwargs_or_per_call(rag):
    everything = SpanRAGRetriever(collection=C, service=rag).invoke(MERCURY)
    assert len(everything) > 3, "k=None returns the whole selected context"
    ids = [d.metadata["span_id"] for d in everything]
    assert [d.metadata["span_id"] for d in SpanRAGRetriever(collection=C, service=rag, k=3).invoke(MERCURY)] == ids[:3]
    from_kwargs = SpanRAGRetriever(collection=C, service=rag, search_kwargs={"k": 2})
    assert [d.metadata["span_id"] for d in from_kwargs.invoke(MERCURY)] == ids[:2]
    assert [d.metadata["span_id"] for d in from_kwargs.invoke(MERCURY, k=1)] == ids[:1]
    assert len(from_kwargs.invoke(MERCURY, k=None)) == len(ids), "None per call: no cap"
    assert len(from_kwargs.invoke(MERCURY, k=1000)) == len(ids), "k above the selection returns what it selected"


def test_per_call_options_override_the_retrievers_own(rag):
    retriever = SpanRAGRetriever(collection=C, service=rag, top_k=4, search_kwargs={"pipeline": "dense"})
    assert len(retriever.invoke(MERCURY)) == 4
    assert len(retriever.invoke(MERCURY, top_k=2)) == 2
    assert len(retriever.invoke(MERCURY, top_k=3, k=1)) == 1
    per_call = retriever.invoke(MERCURY, pipeline="default", top_k=None)
    assert per_call != retriever.invoke(MERCURY)
    assert [d.metadata["span_id"] for d in per_call] == [
        d.metadata["span_id"] for d in SpanRAGRetriever(collection=C, service=rag).invoke(MERCURY)
    ]
    assert len(retriever.invoke(MERCURY)) == 4, "a call's options do not stick"


def test_batch_and_ainvoke_honour_per_call_options(rag):
    import asyncio

    retriever = SpanRAGRetriever(collection=C, service=rag)
    assert [len(docs) for docs in retriever.batch([MERCURY, MERCURY], k=2)] == [2, 2]
    assert len(asyncio.run(retriever.ainvoke(MERCURY, k=1))) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"k": -3},
        {"k": 1.5},
        {"k": True},
        {"top_k": 0},
        {"top_k": 201},
        {"budget_tokens": -1},
        {"limit": 3},
        {"search_kwargs": {"k": 0}},
        {"search_kwargs": {"top_k": -3}},
        {"search_kwargs": {"compression": "zip"}},
        {"search_kwargs": {"n": 3}},
        {"k": 2, "search_kwargs": {"k": 3}},
        {"timeout_s": 0},
    ],
)
def test_unknown_or_invalid_constructor_arguments_are_refused(rag, bad):
    with pytest.raises(pydantic.ValidationError):
        SpanRAGRetriever(collection=C, service=rag, **bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"base_url": "http://127.0.0.1:9"},
        {"data_dir": "elsewhere"},
    ],
)
def test_one_mode_at_a_time(rag, bad):
    with pytest.raises(pydantic.ValidationError, match="not both"):
        SpanRAGRetriever(collection=C, service=rag, **bad)
    with pytest.raises(pydantic.ValidationError, match="api_key is for the remote mode"):
        SpanRAGRetriever(collection=C, service=rag, api_key="spk-x")


def test_unknown_or_invalid_per_call_kwargs_are_refused(rag):
    retriever = SpanRAGRetriever(collection=C, service=rag)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'limit'.*known search options: k, "):
        retriever.invoke(MERCURY, limit=1)
    for bad in ({"k": 0}, {"k": -3}, {"top_k": 0}, {"compress_ratio": 2.0}):
        with pytest.raises(pydantic.ValidationError):
            retriever.invoke(MERCURY, **bad)
    assert len(retriever.invoke(MERCURY, verbose=False, k=1)) == 1, "LangChain's own verbose is let through"


def test_data_dir_mode_opens_the_collection_itself(rag, monkeypatch):
    retriever = SpanRAGRetriever(collection=C, data_dir=rag.settings.data_dir, top_k=3)
    # reuse the already loaded model instead of loading another copy
    monkeypatch.setattr("app.langchain_retriever.RagService", lambda settings: _with_encoder(settings, rag))
    docs = retriever.invoke(MERCURY)
    assert [d.metadata["span_id"] for d in docs] == [
        d.metadata["span_id"] for d in SpanRAGRetriever(collection=C, service=rag, top_k=3).invoke(MERCURY)
    ]


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
    server = uvicorn.Server(uvicorn.Config(create_app(service=rag), host="127.0.0.1", port=port, log_level="warning"))
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


def test_remote_mode_honours_k_and_per_call_options(rag, server_url):
    remote = SpanRAGRetriever(collection=C, base_url=server_url, k=3)
    local = SpanRAGRetriever(collection=C, service=rag, k=3)
    assert [d.metadata["span_id"] for d in remote.invoke(MERCURY)] == [
        d.metadata["span_id"] for d in local.invoke(MERCURY)
    ]
    assert len(remote.invoke(MERCURY, k=1)) == 1
    dense = remote.invoke(MERCURY, pipeline="dense", top_k=1, k=None)
    assert [d.metadata["granularity"] for d in dense] == ["document"]
    with pytest.raises(TypeError, match="'limit'"):
        remote.invoke(MERCURY, limit=1)


def test_remote_mode_surfaces_http_errors(server_url):
    with pytest.raises(httpx.HTTPStatusError, match="404.*not found") as caught:
        SpanRAGRetriever(collection="ghost", base_url=server_url).invoke(MERCURY)
    assert caught.value.response.status_code == 404
