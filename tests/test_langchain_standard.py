"""LangChain's own standard retriever tests (``langchain-tests``) over ``SpanRAGRetriever``:
in-process over a ``RagService``, and remote over a real ``spanrag`` server process that
has API keys (so every call carries ``Authorization: Bearer KEY``).

The standard suite checks that ``k`` is a constructor parameter and a per-call keyword
argument (``invoke(q, k=1)`` returns one Document), and that ``invoke``/``ainvoke`` return
Documents. Its base class must not be edited or its tests overridden (it checks that itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from app.keys import KeyStore
from app.langchain_retriever import SpanRAGRetriever
from app.server_process import SpanragServer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "samples"
MERCURY = "How many days does Mercury take to orbit the Sun?"


@pytest.fixture(scope="module")
def local_service(make_rag, tmp_path_factory):
    service = make_rag(tmp_path_factory.mktemp("langchain-standard") / "data")
    assert service.ingest_paths(C, [SAMPLES]).added == 4
    return service


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A real server process whose data directory has keys: an admin key fills the
    collection over HTTP, and the retriever reads with a read-only key for ``samples``."""
    root = tmp_path_factory.mktemp("langchain-http")
    keys = KeyStore(root / "data")
    admin, reader = keys.create("*", "admin").secret, keys.create(C, "read").secret
    keys.close()
    with SpanragServer(root / "data", cwd=root) as server:
        with httpx.Client(
            base_url=server.base_url,
            timeout=120,
            headers={"Authorization": f"Bearer {admin}", "X-Requested-With": "spanrag-tests"},
        ) as client:
            for path in sorted(SAMPLES.iterdir()):
                with open(path, "rb") as f:
                    r = client.post(
                        f"/v1/collections/{C}/documents", files={"file": (path.name, f, "application/octet-stream")}
                    )
                assert r.status_code == 201, r.text
        yield server.base_url, reader


@pytest.mark.anyio  # the one async standard test (ainvoke); anyio leaves the sync ones alone
class TestInProcessStandard(RetrieversIntegrationTests):
    _service: Any = None

    @pytest.fixture(autouse=True)
    def _bind_service(self, request, local_service):
        request.cls._service = local_service

    @property
    def retriever_constructor(self) -> type[SpanRAGRetriever]:
        return SpanRAGRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"collection": C, "service": self._service}

    @property
    def retriever_query_example(self) -> str:
        return MERCURY


@pytest.mark.anyio  # the one async standard test (ainvoke); anyio leaves the sync ones alone
class TestRemoteStandard(RetrieversIntegrationTests):
    _server: tuple[str, str] | None = None

    @pytest.fixture(autouse=True)
    def _bind_server(self, request, keyed_server):
        request.cls._server = keyed_server

    @property
    def retriever_constructor(self) -> type[SpanRAGRetriever]:
        return SpanRAGRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        base_url, key = self._server
        return {"collection": C, "base_url": base_url, "api_key": key}

    @property
    def retriever_query_example(self) -> str:
        return MERCURY


# -- the key, and the per-call options, over real HTTP -------------------------------------


def test_remote_mode_needs_the_key_and_never_shows_it(keyed_server):
    base_url, key = keyed_server
    with pytest.raises(httpx.HTTPStatusError) as caught:
        SpanRAGRetriever(collection=C, base_url=base_url).invoke(MERCURY)
    assert caught.value.response.status_code == 401
    with pytest.raises(httpx.HTTPStatusError) as caught:
        SpanRAGRetriever(collection=C, base_url=base_url, api_key="spk-wrong").invoke(MERCURY)
    assert caught.value.response.status_code == 401
    retriever = SpanRAGRetriever(collection=C, base_url=base_url, api_key=key, k=2)
    assert key not in repr(retriever) and key not in str(retriever)
    assert len(retriever.invoke(MERCURY)) == 2


def test_remote_mode_passes_per_call_options_to_the_server(keyed_server):
    base_url, key = keyed_server
    retriever = SpanRAGRetriever(
        collection=C, base_url=base_url, api_key=key, search_kwargs={"pipeline": "dense", "top_k": 2}
    )
    assert len(retriever.invoke(MERCURY)) == 2
    assert len(retriever.invoke(MERCURY, top_k=1)) == 1
    assert [d.metadata["granularity"] for d in retriever.invoke(MERCURY, top_k=1)] == ["document"]
    with pytest.raises(httpx.HTTPStatusError, match="unknown pipeline") as caught:
        retriever.invoke(MERCURY, pipeline="no-such-pipeline")
    assert caught.value.response.status_code == 400
    with pytest.raises(TypeError, match="unexpected keyword argument.*'n'"):
        retriever.invoke(MERCURY, n=1)
