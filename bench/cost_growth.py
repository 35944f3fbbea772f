"""Cost growth from 10k to 1M spans on this machine: ingest time, index sizes and memory,
query latency, and the approximate dense indexes' recall@10 against flat, per corpus size.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python -m bench.cost_growth \\
        --sizes 10000 100000 1000000 --out runs/bench/cost_growth.json

What is real and what is synthesized:

* **The pool** (``--real-spans``, default 50,000 spans): real documents from
  ``../shared/datasets`` (SciFact abstracts, HotpotQA paragraphs, TAT-QA tables with their
  paragraphs, Wikipedia articles), parsed and cut into span trees by the ingest code, in a
  fixed shuffled order. Every pool span is embedded with the bundled MiniLM through
  ``Encoder.encode`` in ingest's batches (32 documents), and every paragraph and row gets
  its token vectors (``encode_tokens``, 64 spans a batch, binary codes): both timed, which
  gives the measured embedding rates (spans/s). Cached under ``--cache-dir``.
* **A corpus of N spans** is the pool's documents in order, then copies of them until N
  spans: copy ``c`` of a document has the id ``<id>~c``, the same text and token codes, and
  span vectors ``normalize(v + 0.5·g)`` with ``g`` Gaussian of norm about 1 (cosine about
  0.89 with the source), seeded by (copy, document). Up to the pool size every vector is a
  real embedding; past it the copies are synthesized.
* **Ingest time** = store writes (``replace_documents`` and ``put_token_vectors``, one
  transaction per 32 documents, as ingest does) + index build (``refresh``: FAISS, BM25,
  token matrix), both measured, + embedding and token-vector time **extrapolated** from the
  measured rates (N / spans per second): embedding a million spans on 2 CPU cores would take
  hours. The graph index is not built (its build searches the dense index once per
  paragraph); the default pipeline runs without it.
* **Queries**: SciFact train claims, encoded once (their encoding time is reported apart),
  so latency is search only: the store's ``dense_search`` (top 10 over every span) and
  ``lexical_search`` (BM25 top 10 over sentences), and the ``Retriever`` running the
  ``dense``, ``hybrid`` and ``default`` pipelines (question vector in, context out).
* **Approximate dense indexes** (``--approx hnsw ivf``): the same store opened with
  ``dense_index=<kind>`` rebuilds its index from SQLite (timed); recall@10 is the share of
  flat's top 10 that the approximate index returns for the same query (top 10 over all
  spans; over document spans only; and the top 10 of a 1,000-deep search, as the hybrid
  first stage asks).

Every step of one size runs in its own process, so peak RSS (``ru_maxrss``) is that step's:
``build`` (write + flat index), ``index`` (an approximate index rebuilt), ``serve`` (indexes
loaded from disk, then the queries). Peak RSS counts file pages mapped in too (the
memory-mapped token codes, the model's weights), so serving also reports the resident memory
its index load added and its heap (``RssAnon``) after the queries. Writes JSON (``--out``) after each size, copies it to
``docs/results/cost_growth.json`` and draws ``docs/results/cost_growth.png``; prints a
Markdown table (all three in :mod:`bench.cost_growth_report`). ``--plot-only`` redraws from
``--out``; ``--merge`` keeps sizes already in ``--out`` that this run does not measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import inspect
import json
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.cost_growth_report import publish, write_json  # noqa: E402
from eval.metrics import percentile  # noqa: E402
from indexing.spans import Document, Span  # noqa: E402
from indexing.store.dense_index import DenseIndexSpec  # noqa: E402
from indexing.store.sqlite_faiss import SqliteFaissStore  # noqa: E402
from indexing.token_codecs import EncodedTokens  # noqa: E402

COLLECTION = "bench"
DATASETS = Path("../shared/datasets")


def service_default(name: str):
    """The default of a ``service.settings.Settings`` field, not the environment's value (a
    ``SPANRAG_*`` variable in the shell must not change what is measured). Imported only
    when called: the phase processes get these values from their parent's command line, so
    pydantic is not part of their peak RSS."""
    from service.settings import Settings

    return Settings.model_fields[name].get_default(call_default_factory=True)


def ingest_token_batch_spans() -> int:
    """Spans per token-vector batch during ingest (``Ingestor.backfill_token_vectors``)."""
    from indexing.ingest import Ingestor

    return inspect.signature(Ingestor.backfill_token_vectors).parameters["batch_spans"].default


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    real_spans: int = 50_000
    queries: int = 100
    warmup: int = 5
    noise: float = 0.5
    seed: int = 0
    approx: tuple[str, ...] = ("hnsw", "ivf")
    pipelines: tuple[str, ...] = ("dense", "hybrid", "default")
    datasets: Path = DATASETS
    work_dir: Path = Path("/tmp/spanrag-cost-growth")
    cache_dir: Path = Path("runs/bench/cost_growth")
    out: Path = Path("runs/bench/cost_growth.json")
    docs_dir: Path | None = Path("docs/results")  # None: no copy of the JSON, no plot
    keep_data: bool = False
    merge: bool = False
    # the service's defaults (Settings); no literal copies here
    model: str = field(default_factory=lambda: service_default("embedding_model"))
    ingest_batch_docs: int = field(default_factory=lambda: service_default("ingest_batch_docs"))

    @property
    def pool_dir(self) -> Path:
        key = hashlib.sha256(f"{self.real_spans}-{self.seed}-{self.model}-v1".encode()).hexdigest()[:8]
        return self.cache_dir / f"pool-{self.real_spans}-{key}"

    def data_dir(self, size: int) -> Path:
        return self.work_dir / f"n{size}"


# -- the real pool ------------------------------------------------------------------------------
@dataclass
class Pool:
    """Real documents with their span trees, span vectors and binary token codes, in a fixed
    shuffled order; ``rates`` holds the measured embedding throughput."""

    docs: list[tuple[Document, list[Span]]]
    vectors: np.ndarray  # float32 [n_spans, dim]: the spans of docs[0], then docs[1], ...
    token_codes: np.ndarray  # uint8 [n_tokens, dim / 8]
    token_offsets: np.ndarray  # int64 [n_spans + 1]: span i owns token rows offsets[i]:offsets[i+1]
    rates: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def n_spans(self) -> int:
        return len(self.vectors)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "docs.pkl").open("wb") as f:
            pickle.dump(self.docs, f, protocol=pickle.HIGHEST_PROTOCOL)
        np.save(directory / "vectors.npy", self.vectors)
        np.save(directory / "token_codes.npy", self.token_codes)
        np.save(directory / "token_offsets.npy", self.token_offsets)
        (directory / "rates.json").write_text(json.dumps(self.rates, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Pool | None:
        try:
            with (directory / "docs.pkl").open("rb") as f:
                docs = pickle.load(f)
            return cls(
                docs,
                np.load(directory / "vectors.npy"),
                np.load(directory / "token_codes.npy"),
                np.load(directory / "token_offsets.npy"),
                json.loads((directory / "rates.json").read_text()),
            )
        except FileNotFoundError:
            return None


def real_documents(datasets: Path):
    """(source, ParsedDocument) of every shared corpus, ids prefixed by their source."""
    from eval.datasets import load_hotpotqa, load_tatqa
    from indexing.parsers import parse_text
    from indexing.parsers.jsonl import parse_record

    with (datasets / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            parsed = parse_record(json.loads(line)) if line.strip() else None
            if parsed is not None:
                yield "scifact", parsed
    for source, loader, path in (
        ("hotpotqa", load_hotpotqa, datasets / "hotpotqa" / "dev50.json"),
        ("tatqa", load_tatqa, datasets / "tatqa" / "dev.json"),
    ):
        for parsed in loader(path).corpus_docs:
            yield source, parsed
    for article in json.loads((datasets / "wiki10" / "articles.json").read_text(encoding="utf-8")):
        parsed = parse_text(article["text"], title=article["title"], fmt="text")
        parsed.doc_id = str(article["id"])
        yield "wiki10", parsed


def build_pool(cfg: BenchConfig, encoder, log) -> Pool:
    """Parse, shuffle, cut to ``cfg.real_spans`` spans, embed (timed) and encode tokens (timed)."""
    from indexing.ingest import document_hash
    from indexing.sentences import SentenceSplitter
    from indexing.span_tree import build_span_tree
    from indexing.token_codecs import encode_tokens

    parsed_all = list(real_documents(cfg.datasets))
    order = np.random.default_rng(cfg.seed).permutation(len(parsed_all))
    splitter = SentenceSplitter()
    docs: list[tuple[Document, list[Span]]] = []
    n_spans = 0
    for i in order:
        if n_spans >= cfg.real_spans:
            break
        source, parsed = parsed_all[i]
        doc_id = f"{source}/{parsed.doc_id}"
        spans = build_span_tree(doc_id, parsed, encoder.count_tokens, splitter)
        docs.append(
            (
                Document(doc_id, COLLECTION, parsed.title, f"bench:{source}", document_hash(parsed), parsed.text, {}),
                spans,
            )
        )
        n_spans += len(spans)
    log(f"pool: {len(docs)} real documents, {n_spans} spans; embedding them")
    load_before = os.getloadavg()
    batch_docs = cfg.ingest_batch_docs
    token_granularities = service_default("token_granularities")
    token_batch_spans = ingest_token_batch_spans()

    vectors, embed_s = [], 0.0
    for b in range(0, len(docs), batch_docs):
        texts = [s.context_text for _, spans in docs[b : b + batch_docs] for s in spans]
        started = time.perf_counter()
        vectors.append(encoder.encode(texts))
        embed_s += time.perf_counter() - started
        if (b // batch_docs) % 50 == 0:
            log(f"  embedded {sum(len(v) for v in vectors)}/{n_spans} spans, {embed_s:.0f} s")
    flat_spans = [s for _, spans in docs for s in spans]
    token_spans = [i for i, s in enumerate(flat_spans) if s.granularity in token_granularities]
    codes: dict[int, np.ndarray] = {}
    token_s, n_tokens = 0.0, 0
    for b in range(0, len(token_spans), token_batch_spans):
        batch = token_spans[b : b + token_batch_spans]
        started = time.perf_counter()
        encoded = [
            encode_tokens(v, "binary") for v in encoder.encode_tokens([flat_spans[i].context_text for i in batch])
        ]
        token_s += time.perf_counter() - started
        for i, e in zip(batch, encoded):
            codes[i] = e.data
            n_tokens += len(e)
        if (b // token_batch_spans) % 20 == 0:
            log(
                f"  token vectors of {min(b + token_batch_spans, len(token_spans))}/{len(token_spans)} spans, {token_s:.0f} s"
            )
    all_threads = all_threads_rate(encoder, docs, log, batch_docs)
    dim = vectors[0].shape[1]
    empty = np.zeros((0, (dim + 7) // 8), np.uint8)
    per_span = [codes.get(i, empty) for i in range(len(flat_spans))]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in per_span])]).astype(np.int64)
    import torch

    rates = {
        "spans": n_spans,
        "embed_s": round(embed_s, 2),
        "embed_spans_per_s": round(n_spans / embed_s, 2),
        "token_spans": len(token_spans),
        "tokens": n_tokens,
        "token_s": round(token_s, 2),
        "token_spans_per_s": round(len(token_spans) / token_s, 2) if token_s else None,
        "token_spans_share": round(len(token_spans) / n_spans, 4),
        "batch_size": encoder.batch_size,
        "torch_threads": torch.get_num_threads(),
        "all_cores_sample": all_threads,
        "loadavg_1_5_15_before_after": [list(load_before), list(os.getloadavg())],
        "sources": {
            src: sum(1 for d, _ in docs if d.source == f"bench:{src}")
            for src in ("scifact", "hotpotqa", "tatqa", "wiki10")
        },
    }
    return Pool(docs, np.concatenate(vectors), np.concatenate(per_span), offsets, rates)


def all_threads_rate(
    encoder, docs: list[tuple[Document, list[Span]]], log, batch_docs: int, n_spans: int = 3000
) -> dict | None:
    """Embedding rate with one torch thread per core, on the pool's first ``n_spans`` spans
    (the main measurement uses the process's thread setting, OMP_NUM_THREADS=1 here)."""
    import torch

    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    if cores <= threads:
        return None
    torch.set_num_threads(cores)
    spans, seconds = 0, 0.0
    try:
        for b in range(0, len(docs), batch_docs):
            texts = [s.context_text for _, spans_ in docs[b : b + batch_docs] for s in spans_]
            started = time.perf_counter()
            encoder.encode(texts)
            seconds += time.perf_counter() - started
            spans += len(texts)
            if spans >= n_spans:
                break
    finally:
        torch.set_num_threads(threads)
    log(f"  {cores} threads: {spans / seconds:.1f} spans/s on {spans} spans")
    return {
        "torch_threads": cores,
        "spans": spans,
        "embed_s": round(seconds, 2),
        "embed_spans_per_s": round(spans / seconds, 2),
    }


def load_queries(cfg: BenchConfig, encoder, log) -> dict:
    """SciFact train claims, each encoded once (vector and token vectors, one pass), timed."""
    path = cfg.pool_dir / f"queries-{cfg.queries + cfg.warmup}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    texts = []
    with (cfg.datasets / "scifact" / "queries.train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip() and len(texts) < cfg.queries + cfg.warmup:
                texts.append(json.loads(line)["text"])
    encoder.encode_query_with_tokens(texts[0])  # load the model outside the timing
    table, ms = {}, []
    for text in texts:
        started = time.perf_counter()
        table[text] = encoder.encode_query_with_tokens(text)
        ms.append((time.perf_counter() - started) * 1000)
    queries = {"texts": texts, "table": table, "encode_ms": {"p50": _pct(ms, 50), "p95": _pct(ms, 95)}}
    path.write_bytes(pickle.dumps(queries))
    log(f"queries: {len(texts)} encoded, p50 {queries['encode_ms']['p50']} ms")
    return queries


# -- corpora of N spans ---------------------------------------------------------------------------
@dataclass
class Batch:
    items: list[tuple[Document, list[Span], np.ndarray]]
    tokens: list[tuple[str, EncodedTokens]]
    real_spans: int = 0


def _copy(doc: Document, spans: list[Span], c: int) -> tuple[Document, list[Span]]:
    if c == 0:
        return doc, spans
    new = f"{doc.id}~{c}"

    def renamed(span_id: str | None) -> str | None:
        return None if span_id is None else new + span_id[len(doc.id) :]

    return (
        dataclasses.replace(doc, id=new, content_hash=f"{doc.content_hash}~{c}"),
        [dataclasses.replace(s, id=renamed(s.id), doc_id=new, parent_id=renamed(s.parent_id)) for s in spans],
    )


def corpus_batches(pool: Pool, size: int, noise: float, seed: int, batch_docs: int) -> Iterator[Batch]:
    """The pool's documents, then perturbed copies, until ``size`` spans; ``batch_docs``
    documents a batch (ingest's write transaction)."""
    starts = np.concatenate([[0], np.cumsum([len(spans) for _, spans in pool.docs])])
    written, c = 0, 0
    batch = Batch([], [])
    while written < size:
        for d, (doc, spans) in enumerate(pool.docs):
            if written >= size:
                break
            lo, hi = int(starts[d]), int(starts[d + 1])
            vectors = pool.vectors[lo:hi]
            if c:
                g = np.random.default_rng((seed, c, d)).standard_normal(vectors.shape).astype(np.float32)
                vectors = vectors + noise * g / np.sqrt(pool.dim, dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            else:
                batch.real_spans += hi - lo
            doc, spans = _copy(doc, spans, c)
            batch.items.append((doc, spans, vectors))
            for i, span in zip(range(lo, hi), spans):
                a, b = pool.token_offsets[i], pool.token_offsets[i + 1]
                if b > a:
                    batch.tokens.append((span.id, EncodedTokens("binary", pool.dim, pool.token_codes[a:b])))
            written += hi - lo
            if len(batch.items) == batch_docs:
                yield batch
                batch = Batch([], [])
        c += 1
    if batch.items:
        yield batch


# -- measurements (each in its own process) --------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    return round(percentile(values, q), 2)


def _rss(field: str = "VmRSS") -> int:
    """Resident bytes now: ``VmRSS`` (all), ``RssAnon`` (heap) or ``RssFile`` (mapped files)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_parts() -> dict[str, int]:
    return {"rss": _rss(), "anon": _rss("RssAnon"), "file": _rss("RssFile")}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sqlite_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("spanrag.sqlite3*"))


def phase_build(cfg: BenchConfig, size: int) -> dict:
    """Write a corpus of ``size`` spans into a fresh store and build its (flat) indexes."""
    pool = Pool.load(cfg.pool_dir)
    data_dir = cfg.data_dir(size)
    shutil.rmtree(data_dir, ignore_errors=True)
    store = SqliteFaissStore(data_dir)
    store.create_collection(COLLECTION, cfg.model, pool.dim)
    spans = docs = real = token_spans = 0
    write_s = token_write_s = 0.0
    for batch in corpus_batches(pool, size, cfg.noise, cfg.seed, cfg.ingest_batch_docs):
        started = time.perf_counter()
        store.replace_documents(COLLECTION, batch.items)
        write_s += time.perf_counter() - started
        started = time.perf_counter()
        store.put_token_vectors(COLLECTION, batch.tokens, cfg.model)
        token_write_s += time.perf_counter() - started
        docs += len(batch.items)
        spans += sum(len(s) for _, s, _ in batch.items)
        real += batch.real_spans
        token_spans += len(batch.tokens)
    del pool
    gc.collect()
    started = time.perf_counter()
    store.refresh(COLLECTION)
    store.settle()  # the token matrix is built in the background
    refresh_s = time.perf_counter() - started
    parts = store.index_build_seconds(COLLECTION)
    footprint = store.index_footprint(COLLECTION)
    token_stats = store.token_vector_stats(COLLECTION).get("binary", {})
    store.close()
    return {
        "spans": spans,
        "documents": docs,
        "real_spans": real,
        "synthesized_spans": spans - real,
        "token_spans": token_spans,
        "tokens": token_stats.get("tokens", 0),
        "store_write_s": round(write_s, 2),
        "token_write_s": round(token_write_s, 2),
        "index_build_s": round(refresh_s, 2),
        "index_build_parts_s": {k: round(v, 2) for k, v in parts.items()}
        | {"tokens_and_directory": round(refresh_s - sum(parts.values()), 2)},
        "bytes": {"sqlite": _sqlite_bytes(data_dir), "token_codes_in_sqlite": token_stats.get("bytes", 0), **footprint},
        "peak_rss_bytes": _peak_rss(),
    }


def phase_index(cfg: BenchConfig, size: int, kind: str) -> dict:
    """Rebuild the store's indexes with an approximate dense index (from SQLite, as a
    service started with ``SPANRAG_DENSE_INDEX=<kind>`` on this data would: in the
    background, searching the saved flat index meanwhile; timed until it is done)."""
    store = SqliteFaissStore(cfg.data_dir(size), dense_index=kind)
    started = time.perf_counter()
    store.refresh(COLLECTION)
    store.settle()
    refresh_s = time.perf_counter() - started
    out = {
        "index_build_s": round(refresh_s, 2),
        "index_build_parts_s": {k: round(v, 2) for k, v in store.index_build_seconds(COLLECTION).items()},
        "bytes": store.index_footprint(COLLECTION),
        "peak_rss_bytes": _peak_rss(),
    }
    store.close()
    return out


class PrecomputedQueries:
    """The encoder the ``Retriever`` sees, answering the benchmark's questions from vectors
    computed up front (latency then measures search, not encoding); everything else, such as
    token counting, goes to the real encoder."""

    def __init__(self, encoder, table: dict[str, tuple[np.ndarray, np.ndarray]]):
        self._encoder = encoder
        self._table = table
        self.name = encoder.name
        # a service loads its model at start: the first table row's header count must not
        # load it inside a timed question (seen: one 11 s "idle" query at 1M spans)
        encoder.count_tokens(["warm-up"])

    def encode_query(self, text: str) -> np.ndarray:
        return self._table[text][0]

    def encode_query_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        return self._table[text]

    def encode_query_tokens(self, text: str) -> np.ndarray:
        return self._table[text][1]

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)


def phase_serve(cfg: BenchConfig, size: int, kind: str) -> dict:
    """Load the indexes from disk (time, resident memory), then time the queries round-robin."""
    from indexing.embed import Encoder
    from retrieval.pipeline import Retriever

    queries = pickle.loads((cfg.pool_dir / f"queries-{cfg.queries + cfg.warmup}.pkl").read_bytes())
    rss_before = _rss()
    started = time.perf_counter()
    store = SqliteFaissStore(cfg.data_dir(size), dense_index=kind)
    store.refresh(COLLECTION)
    store.settle()  # the token matrix loads in the background
    load_s = time.perf_counter() - started
    if store.index_build_seconds(COLLECTION):
        raise RuntimeError(f"{kind} index of n={size} was rebuilt, not loaded: run its index phase first")
    rss_loaded = _rss()
    encoder = PrecomputedQueries(Encoder.load(cfg.model, device="cpu"), queries["table"])
    retriever = Retriever(store, encoder, encoder, graph=None)
    texts = queries["texts"]
    table = queries["table"]
    checkpoints = {"loaded": _rss_parts()}
    for text in texts[: cfg.warmup]:
        store.dense_search(COLLECTION, table[text][0], 10)
        for p in cfg.pipelines:
            retriever.retrieve(COLLECTION, text, p)
    gc.collect()
    gc.freeze()
    checkpoints["warm"] = _rss_parts()  # the encoder's model is loaded by now (token counting)
    ms: dict[str, list[float]] = {"dense_store": [], "bm25_store": [], **{p: [] for p in cfg.pipelines}}
    stages: dict[str, dict[str, list[float]]] = {p: {} for p in cfg.pipelines}
    top10: dict[str, list[list[int]]] = {"all": [], "documents": [], "deep": []}
    for text in texts[cfg.warmup :]:
        vector = table[text][0]
        started = time.perf_counter()
        hits = store.dense_search(COLLECTION, vector, 10)
        ms["dense_store"].append((time.perf_counter() - started) * 1000)
        top10["all"].append([h.span_id for h in hits])
        started = time.perf_counter()
        store.lexical_search(COLLECTION, text, 10, "sentence")
        ms["bm25_store"].append((time.perf_counter() - started) * 1000)
        for p in cfg.pipelines:
            result = retriever.retrieve(COLLECTION, text, p)
            ms[p].append(result.timings_ms["retrieval_ms"] - result.timings_ms.get("encode_ms", 0.0))
            for stage, value in result.timings_ms.items():
                stages[p].setdefault(stage, []).append(value)
        top10["documents"].append([h.span_id for h in store.dense_search(COLLECTION, vector, 10, ["document"])])
        top10["deep"].append([h.span_id for h in store.dense_search(COLLECTION, vector, 1000)[:10]])
    checkpoints["after_queries"] = _rss_parts()
    store.close()
    return {
        "load_s": round(load_s, 2),
        "index_rss_bytes": rss_loaded - rss_before,
        "rss_after_queries_bytes": checkpoints["after_queries"]["rss"],
        "rss_checkpoints": checkpoints,
        "peak_rss_bytes": _peak_rss(),
        "n_queries": len(texts) - cfg.warmup,
        "latency_ms": {name: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for name, v in ms.items()},
        "stage_p50_ms": {
            p: {k: _pct(v, 50) for k, v in s.items() if k not in ("retrieval_ms", "encode_ms")}
            for p, s in stages.items()
        },
        "top10": top10,
    }


# -- orchestration --------------------------------------------------------------------------------
def _child(cfg: BenchConfig, phase: str, size: int, kind: str, argv: list[str]) -> dict:
    """Run one phase in a fresh process (its own peak RSS) and read back its JSON."""
    result = cfg.cache_dir / f"phase-{phase}-{kind}-{size}.json"
    result.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cost_growth",
            *argv,
            "--phase",
            phase,
            "--phase-size",
            str(size),
            "--phase-kind",
            kind,
            "--phase-out",
            str(result),
            "--phase-model",
            cfg.model,
            "--phase-batch-docs",
            str(cfg.ingest_batch_docs),
        ],
        check=True,
    )
    return json.loads(result.read_text()) | {
        "wall_s": round(time.perf_counter() - started, 1),
        "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
    }


def recall_at_10(found: list[list[str]], truth: list[list[str]]) -> float:
    """Mean share of the flat top 10 that the approximate index also returned."""
    shares = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth) if t]
    return round(float(np.mean(shares)), 4) if shares else 0.0


def measure_size(cfg: BenchConfig, size: int, rates: dict, argv: list[str], log) -> dict:
    log(f"n={size}: writing and building (flat)")
    build = _child(cfg, "build", size, "flat", argv)
    embed_s = build["spans"] / rates["embed_spans_per_s"]
    all_cores = (rates.get("all_cores_sample") or {}).get("embed_spans_per_s")
    token_s = build["token_spans"] / rates["token_spans_per_s"] if rates.get("token_spans_per_s") else 0.0
    out = {
        "spans": build["spans"],
        "documents": build["documents"],
        "real_spans": build["real_spans"],
        "synthesized_spans": build["synthesized_spans"],
        "token_spans": build["token_spans"],
        "tokens": build["tokens"],
        "ingest_s": {
            "store_write": round(build["store_write_s"] + build["token_write_s"], 2),
            "index_build": build["index_build_s"],
            "embedding_extrapolated": round(embed_s, 1),
            "embedding_extrapolated_all_cores": round(build["spans"] / all_cores, 1) if all_cores else None,
            "token_vectors_extrapolated": round(token_s, 1),
            "total_estimated": round(
                build["store_write_s"] + build["token_write_s"] + build["index_build_s"] + embed_s + token_s, 1
            ),
        },
        "ingest_parts_s": {
            "span_rows": build["store_write_s"],
            "token_rows": build["token_write_s"],
            **build["index_build_parts_s"],
        },
        "bytes": build["bytes"],
        "peak_rss_bytes": {"build": build["peak_rss_bytes"]},
        "loadavg_1min_before_after": {"build": build["loadavg_1min_before_after"]},
        "serve": {},
        "approximate": {},
    }
    log(f"n={size}: serving flat")
    serve = {"flat": _child(cfg, "serve", size, "flat", argv)}
    for kind in cfg.approx:
        log(f"n={size}: building {kind}")
        index = _child(cfg, "index", size, kind, argv)
        log(f"n={size}: serving {kind}")
        serve[kind] = _child(cfg, "serve", size, kind, argv)
        truth, found = serve["flat"]["top10"], serve[kind]["top10"]
        out["approximate"][kind] = {
            "dense_build_s": index["index_build_parts_s"].get("dense"),
            "index_build_parts_s": index["index_build_parts_s"],
            "dense_bytes": index["bytes"]["dense"],
            "peak_rss_bytes": index["peak_rss_bytes"],
            "loadavg_1min_before_after": index["loadavg_1min_before_after"],
            "recall_at_10": {scope: recall_at_10(found[scope], truth[scope]) for scope in truth},
        }
    for kind, s in serve.items():
        out["serve"][kind] = {k: v for k, v in s.items() if k != "top10"}
        out["peak_rss_bytes"][f"serve_{kind}"] = s["peak_rss_bytes"]
        out["loadavg_1min_before_after"][f"serve_{kind}"] = s["loadavg_1min_before_after"]
    if not cfg.keep_data:
        shutil.rmtree(cfg.data_dir(size), ignore_errors=True)
    return out


def parse_args(argv: list[str] | None):
    d = BenchConfig  # the defaults live there, once (read off the class: no settings import in a phase)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes), help="corpus sizes in spans")
    ap.add_argument(
        "--real-spans", type=int, default=d.real_spans, help="spans of real documents embedded for the pool"
    )
    ap.add_argument("--queries", type=int, default=d.queries, help="queries timed per size and index (after --warmup)")
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--noise", type=float, default=d.noise, help="perturbation of copied vectors (norm of the noise)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--approx",
        nargs="*",
        default=list(d.approx),
        choices=["hnsw", "ivf"],
        help="approximate dense indexes to measure",
    )
    ap.add_argument("--pipeline", action="append", help=f"pipelines to time (default: {', '.join(d.pipelines)})")
    ap.add_argument("--datasets", type=Path, default=d.datasets)
    ap.add_argument("--work-dir", type=Path, default=d.work_dir, help="data directories (removed after each size)")
    ap.add_argument("--cache-dir", type=Path, default=d.cache_dir, help="embedded pool, queries, phase results")
    ap.add_argument("--keep-data", action="store_true", help="keep each size's data directory")
    ap.add_argument("--out", type=Path, default=d.out)
    ap.add_argument(
        "--docs-dir", default=str(d.docs_dir), help="where the plot and a copy of the JSON go ('' for nowhere)"
    )
    ap.add_argument("--merge", action="store_true", help="keep sizes already in --out that this run does not measure")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot and table from --out")
    ap.add_argument(
        "--prepare-only", action="store_true", help="build (or load) the embedded pool and queries, then stop"
    )
    ap.add_argument("--phase", choices=["build", "index", "serve"], help=argparse.SUPPRESS)
    ap.add_argument("--phase-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--phase-kind", help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--phase-model", help=argparse.SUPPRESS)
    ap.add_argument("--phase-batch-docs", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # a phase process takes the service defaults from its parent rather than importing the settings
    service = {
        k: v for k, v in (("model", args.phase_model), ("ingest_batch_docs", args.phase_batch_docs)) if v is not None
    }
    cfg = BenchConfig(
        sizes=tuple(args.sizes),
        real_spans=args.real_spans,
        queries=args.queries,
        warmup=args.warmup,
        noise=args.noise,
        seed=args.seed,
        approx=tuple(args.approx),
        pipelines=tuple(args.pipeline or d.pipelines),
        datasets=args.datasets,
        work_dir=args.work_dir,
        cache_dir=args.cache_dir,
        out=args.out,
        docs_dir=Path(args.docs_dir) if args.docs_dir else None,
        keep_data=args.keep_data,
        merge=args.merge,
        **service,
    )
    return args, cfg


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, cfg = parse_args(argv)

    def log(message: str) -> None:
        print(f"[cost_growth {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.phase:
        runner = {
            "build": lambda: phase_build(cfg, args.phase_size),
            "index": lambda: phase_index(cfg, args.phase_size, args.phase_kind),
            "serve": lambda: phase_serve(cfg, args.phase_size, args.phase_kind),
        }[args.phase]
        args.phase_out.write_text(json.dumps(runner()))
        return {}
    if args.plot_only:
        results = json.loads(cfg.out.read_text())
    else:
        results = run(cfg, argv, log, args.prepare_only)
        if not results:
            return {}
    publish(results, cfg.out, cfg.docs_dir)
    return results


def run(cfg: BenchConfig, argv: list[str], log, prepare_only: bool = False) -> dict:
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    pool = Pool.load(cfg.pool_dir)
    from indexing.embed import Encoder

    encoder = Encoder.load(cfg.model, device="cpu")
    if pool is None:
        pool = build_pool(cfg, encoder, log)
        pool.save(cfg.pool_dir)
    queries = load_queries(cfg, encoder, log)
    del encoder
    if prepare_only:
        log(f"pool of {pool.n_spans:,} spans ready in {cfg.pool_dir}: {json.dumps(pool.rates)}")
        return {}
    rates = pool.rates
    if max(cfg.sizes) > pool.n_spans:
        log(f"sizes past {pool.n_spans:,} spans are completed with perturbed copies of the pool")
    del pool
    gc.collect()
    previous = json.loads(cfg.out.read_text()) if cfg.merge and cfg.out.exists() else {}
    import faiss
    import torch

    results = {
        "benchmark": "cost_growth",
        "config": {
            "sizes": list(cfg.sizes),
            "real_spans": cfg.real_spans,
            "queries": cfg.queries,
            "warmup": cfg.warmup,
            "noise": cfg.noise,
            "seed": cfg.seed,
            "approx": list(cfg.approx),
            "pipelines": list(cfg.pipelines),
            "dense_index_specs": {k: dataclasses.asdict(DenseIndexSpec(k)) for k in ("flat", *cfg.approx)},
        },
        "embedding": rates,
        "query_encode_ms": queries["encode_ms"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "faiss": faiss.__version__,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "sizes": dict(previous.get("sizes", {})),
    }
    for size in cfg.sizes:
        started = time.perf_counter()
        results["sizes"][str(size)] = measure_size(cfg, size, rates, argv, log)
        results["sizes"][str(size)]["wall_s"] = round(time.perf_counter() - started, 1)
        results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(results, cfg.out)
        log(f"n={size}: done in {results['sizes'][str(size)]['wall_s']:.0f} s; wrote {cfg.out}")
    return results


if __name__ == "__main__":
    main()
