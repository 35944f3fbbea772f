"""Shared fixtures: one real embedding model for the whole session, services on temporary
data directories that reuse it, and writable copies of the sample corpus.

The environment is pinned before anything imports torch or the Hugging Face libraries:
no hub look-ups (the bundled model is on disk), and one torch thread -- on a small shared
machine two contending intra-op threads make encode calls many times slower. Subprocesses
started by the tests (the CLI, uvicorn) inherit these settings.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = REPO_ROOT / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL_NAME = "all-MiniLM-L6-v2"

# `pytest -m "not slow"` is the quick loop: parsers, span tree, stores, indexes, metrics,
# error tables and doctests, without a service ingesting the samples. Slow (run by the full
# suite and CI): every test that builds a service (`rag`, `make_rag`) and ingests, the
# Qdrant (local mode) variants, and the modules whose tests start processes (spanrag
# servers, the CLI, llama.cpp), fuzz and load, or ingest afresh in nearly every test.
SLOW_MODULES = {
    "test_api",
    "test_chat_api",
    "test_cli",
    "test_compose",
    "test_datasets_fetch",
    "test_eval_harness",
    "test_fuzz",
    "test_langchain_standard",
    "test_openai_conventions",
    "test_openai_generator",
    "test_overrides",
    "test_reliability",
    "test_security",
    "test_ingest",
    "test_token_vectors",
    "test_read_consistency",
}

SERVICE_FIXTURES = {"rag", "make_rag"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_qdrant = callspec is not None and "qdrant" in callspec.params.values()
        module = getattr(item, "module", None)
        builds_a_service = not SERVICE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        if on_qdrant or builds_a_service or (module is not None and module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def encoder():
    """The real bundled all-MiniLM-L6-v2, loaded once per test session (CPU)."""
    from indexing.embed import Encoder

    return Encoder.load(MODEL_NAME, device="cpu")


def memoizing(encoder, cache: dict, token_cache: dict):
    """A copy of ``encoder`` (same model, name and dim) whose ``encode_with_tokens`` (and so
    ``encode``) remembers the vector of every text in ``cache`` and its token vectors in
    ``token_cache``: the same sample texts are ingested by many tests, and embedding them
    is nearly all of an ingest's time. Vectors are the model's own."""
    from indexing.embed import Encoder

    class MemoEncoder(Encoder):
        def encode_with_tokens(self, texts: list[str], token_rows: list[int]):
            need_tokens = {texts[i] for i in token_rows if texts[i] not in token_cache}
            missing = [t for t in dict.fromkeys(texts) if t not in cache or t in need_tokens]
            if missing:
                rows = [i for i, t in enumerate(missing) if t in need_tokens]
                vectors, tokens = Encoder.encode_with_tokens(self, missing, rows)
                cache.update(zip(missing, vectors))
                token_cache.update((missing[i], tokens[i]) for i in rows)
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32), {}
            return np.stack([cache[t] for t in texts]), {i: token_cache[texts[i]] for i in token_rows}

    return MemoEncoder(encoder._model, encoder.name, encoder.batch_size)


@pytest.fixture(scope="session")
def make_rag(encoder) -> Iterator[Callable[..., object]]:
    """Factory: ``make_rag(data_dir, **settings)`` returns a ``RagService`` on ``data_dir``
    that reuses the session's model instead of loading its own (through a per-service
    memoizing copy of ``encoder``, so tests may monkeypatch one service's encoder without
    touching the others). Services are closed at the end of the session."""
    from service.engine import RagService
    from service.settings import Settings

    made: list[RagService] = []
    cache: dict[str, np.ndarray] = {}
    token_cache: dict[str, np.ndarray] = {}

    def make(data_dir: Path, **settings) -> RagService:
        rag = RagService(Settings(data_dir=Path(data_dir), **settings))
        # `encoder` is a functools.cached_property: pre-filling it skips loading a model
        rag.__dict__["encoder"] = memoizing(encoder, cache, token_cache)
        made.append(rag)
        return rag

    yield make
    for rag in made:
        rag.close()


STORES = ("sqlite_faiss", "qdrant")


@pytest.fixture(params=STORES)
def rag(make_rag, tmp_path, request):
    """A fresh, empty service on its own data directory under ``tmp_path``, once on each
    store backend (SQLite + FAISS, and Qdrant in qdrant-client's local mode)."""
    service = make_rag(tmp_path / "data", store=request.param)
    yield service
    service.close()


@pytest.fixture
def samples_dir(tmp_path) -> Path:
    """A writable copy of the bundled sample corpus (Markdown, HTML with a table, CSV, text)."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    return target


@pytest.fixture(scope="session")
def llm_server_process():
    """One real llama.cpp server with Gemma 3 270M for the whole session (see llm_server.py)."""
    from llm_server import LlamaServer, gemma_model_path

    with LlamaServer(gemma_model_path(), n_ctx=2048) as server:
        yield server


@pytest.fixture
def llm_server(llm_server_process):
    """The session's llama.cpp server, shared by every test that needs a model behind the
    OpenAI-compatible generator; checked before and after each test, so a server that died
    fails loudly with its exit status and log tail instead of 'Connection refused'."""
    llm_server_process.check_alive()
    yield llm_server_process
    llm_server_process.check_alive()
