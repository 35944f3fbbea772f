"""Live updates: query latency while a writer adds, replaces and deletes documents, the
time until a write is searchable, and whether a deleted or replaced span is ever returned.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.live_updates --sizes 100000 1000000 \\
        --real-spans 5000 --seconds 60 --out runs/bench/live_updates.json

For each size, in a process of its own:

* **Build**: the corpus of ``bench.cost_growth`` (real embedded documents, then perturbed
  copies, up to N spans; token vectors included) written into a fresh embedded store, then
  its base segment built (timed; this is the one full build), then ``os.sync()`` so that
  the build's writes are on disk before anything is timed.
* **Idle**: the default pipeline answers ``--queries`` SciFact claims (vectors computed up
  front, so latency is search, as in ``bench.cost_growth``): p50, p95, max. Thread pools
  are sized as a service answers (``ThreadPlan().use("query")``: one thread per library).
* **Writes**: for ``--seconds`` seconds a writer thread, once a second, adds one small
  document (a pool document with new vectors), replaces one it added earlier (new
  vectors, same span ids) and deletes one it added earlier, each as the service writes:
  the store write, its token vectors, then ``refresh``. Meanwhile the main thread asks
  the default pipeline its questions without pause. Reported: query p50/p95/max during
  the writes; write time (commit to refresh done); **freshness**, from a write's commit to
  a search that returns its span (a dense search for the span's own vector); the
  background merges and compactions with their durations.
* **Slow questions**: while a question runs past 500 ms, every thread's innermost frames
  are sampled every 50 ms (``slow_questions``: where it waited).
* **Checks**: after each delete, no span of the deleted document is returned; after each
  replace, the old vector's exact hit is gone; every added document span is found; the
  questions' results never hold a document whose delete had returned before the question
  was asked. The writer's probes search document spans only (a flat search filtered to
  them computes a tenth of the distances), so that checking costs the queries less CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.cost_growth import (  # noqa: E402
    COLLECTION,
    BenchConfig,
    Pool,
    PrecomputedQueries,
    _copy,
    _pct,
    _peak_rss,
    build_pool,
    corpus_batches,
    load_queries,
)
from indexing.store.merge_policy import MergePolicy  # noqa: E402
from indexing.token_codecs import EncodedTokens  # noqa: E402


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": _pct(values, 50), "p95": _pct(values, 95), "max": round(max(values), 2)}


@dataclasses.dataclass
class LiveConfig:
    base: BenchConfig
    seconds: float = 60.0
    merge_min_rows: int = MergePolicy().min_rows
    merge_fraction: float = MergePolicy().fraction


class Writer(threading.Thread):
    """Once a second: add a document, replace one added earlier, delete one added earlier."""

    def __init__(self, store, pool: Pool, seconds: float, seed: int, model: str) -> None:
        super().__init__(daemon=True)
        self.store, self.pool, self.seconds, self.model = store, pool, seconds, model
        self.rng = np.random.default_rng(seed)
        self.starts = np.concatenate([[0], np.cumsum([len(spans) for _, spans in pool.docs])])
        self.live: list[str] = []  # added documents not yet deleted, oldest first
        self.deleted_at: dict[str, float] = {}  # doc id -> when its delete returned
        self.write_ms: list[float] = []
        self.fresh_ms: list[float] = []
        self.failures: list[str] = []
        self.count = 0
        self.error: BaseException | None = None

    def document(self, n: int, doc_id: str):
        d = n % len(self.pool.docs)
        doc, spans = self.pool.docs[d]
        lo, hi = int(self.starts[d]), int(self.starts[d + 1])
        vectors = self.pool.vectors[lo:hi] + 0.5 * self.rng.standard_normal((hi - lo, self.pool.dim)).astype(
            np.float32
        ) / np.sqrt(self.pool.dim)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        doc, spans = _copy(doc, spans, 1)
        old = doc.id
        doc = dataclasses.replace(doc, id=doc_id, content_hash=f"live-{n}")
        spans = [
            dataclasses.replace(
                s,
                id=doc_id + s.id[len(old) :],
                doc_id=doc_id,
                parent_id=None if s.parent_id is None else doc_id + s.parent_id[len(old) :],
            )
            for s in spans
        ]
        tokens = []
        for i, span in zip(range(lo, hi), spans, strict=True):
            a, b = self.pool.token_offsets[i], self.pool.token_offsets[i + 1]
            if b > a:
                tokens.append((span.id, EncodedTokens("binary", self.pool.dim, self.pool.token_codes[a:b])))
        return doc, spans, vectors.astype(np.float32), tokens

    def write(self, doc, spans, vectors, tokens) -> float:
        self.store.replace_documents(COLLECTION, [(doc, spans, vectors)])
        committed = time.perf_counter()
        self.store.put_token_vectors(COLLECTION, tokens, self.model)
        self.store.refresh(COLLECTION)
        self.write_ms.append((time.perf_counter() - committed) * 1000)
        return committed

    def probe(self, vector: np.ndarray, granularity: str) -> tuple[str, float]:
        hit = self.store.dense_search(COLLECTION, vector, 1, [granularity])[0]
        return hit.span_id, hit.score

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the phase
            self.error = exc

    def _run(self) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < self.seconds:
            tick = time.perf_counter()
            n = self.count
            self.count += 1
            doc, spans, vectors, tokens = self.document(n, f"live-{n}")
            committed = self.write(doc, spans, vectors, tokens)
            while True:  # freshness: until a search returns the new document's span
                span_id, _ = self.probe(vectors[0], spans[0].granularity)
                if span_id == spans[0].id:
                    break
                if time.perf_counter() - committed > 30:
                    self.failures.append(f"added {spans[0].id} not found after 30 s")
                    break
            self.fresh_ms.append((time.perf_counter() - committed) * 1000)
            self.live.append(doc.id)
            if len(self.live) >= 3:
                target = self.live[len(self.live) // 2]
                old_vectors = self.store.get_vectors(COLLECTION, [f"{target}#0"])
                _, new_spans, new_vectors, new_tokens = self.document(n + 7, target)
                new_doc = dataclasses.replace(doc, id=target, content_hash=f"live-{n}-r")
                self.write(new_doc, new_spans, new_vectors, new_tokens)
                span_id, score = self.probe(old_vectors[0], new_spans[0].granularity)
                if span_id == f"{target}#0" and score > 0.999 and float(new_vectors[0] @ old_vectors[0]) < 0.999:
                    self.failures.append(f"replaced {target}#0 returned with its old vector")
                gone = self.live.pop(0)
                gone_vector = self.store.get_vectors(COLLECTION, [f"{gone}#0"])[0]
                self.store.delete_documents(COLLECTION, [gone])
                self.store.refresh(COLLECTION)
                self.deleted_at[gone] = time.perf_counter()
                hits = self.store.dense_search(COLLECTION, gone_vector, 10, ["document"])
                if any(h.span_id.startswith(f"{gone}#") for h in hits):
                    self.failures.append(f"deleted {gone} returned")
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))


class SlowQuestions(threading.Thread):
    """While a question runs past ``after_ms``, what every thread is doing, sampled every 50
    ms (the innermost frames of each stack, counted): the report says where a slow question
    waited, not only that it did."""

    def __init__(self, after_ms: float = 500.0) -> None:
        super().__init__(daemon=True)
        self.after_s = after_ms / 1000
        self.asker = threading.get_ident()
        self.started: float | None = None
        self.samples: dict[str, int] = {}
        self.slow: list[dict] = []
        self.stop = threading.Event()

    def begin(self) -> None:
        self.samples = {}
        self.started = time.perf_counter()

    def end(self, ms: float) -> None:
        self.started = None
        if ms >= self.after_s * 1000:
            top = sorted(self.samples.items(), key=lambda kv: -kv[1])[:6]
            self.slow.append({"ms": round(ms, 1), "stacks": [{"samples": n, "stack": k} for k, n in top]})

    def run(self) -> None:
        import traceback

        while not self.stop.wait(0.05):
            started = self.started
            if started is None or time.perf_counter() - started < self.after_s:
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                inner = traceback.extract_stack(frame)[-5:]
                key = f"{'asker' if ident == self.asker else names.get(ident, ident)}: " + " < ".join(
                    f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(inner)
                )
                self.samples[key] = self.samples.get(key, 0) + 1


def phase_live(cfg: LiveConfig, size: int) -> dict:
    from indexing.embed import Encoder
    from indexing.store.sqlite_faiss import SqliteFaissStore
    from retrieval.pipeline import Retriever
    from service.threads import ThreadPlan

    base = cfg.base
    pool = Pool.load(base.pool_dir)
    queries = load_queries(base, None, print)
    data_dir = base.data_dir(size)
    shutil.rmtree(data_dir, ignore_errors=True)
    policy = MergePolicy(min_rows=cfg.merge_min_rows, fraction=cfg.merge_fraction)
    store = SqliteFaissStore(data_dir, merge_policy=policy)
    store.create_collection(COLLECTION, base.model, pool.dim)
    spans = 0
    for batch in corpus_batches(pool, size, base.noise, base.seed, base.ingest_batch_docs):
        store.replace_documents(COLLECTION, batch.items)
        store.put_token_vectors(COLLECTION, batch.tokens, base.model)
        spans += sum(len(s) for _, s, _ in batch.items)
    started = time.perf_counter()
    store.refresh(COLLECTION)
    store.settle()
    build_s = time.perf_counter() - started
    # the build wrote gigabytes (1M spans: ~5 GB of SQLite): flush them before timing, or the
    # kernel's writeback of the build stalls the measured minute's commits and page faults
    started = time.perf_counter()
    os.sync()
    sync_s = time.perf_counter() - started

    merges: list[dict] = []
    for name in ("_merge", "_compact"):
        original = getattr(store, name)

        def timed(collection, *args, _original=original, _name=name, **kwargs):
            began = time.perf_counter()
            _original(collection, *args, **kwargs)
            merges.append(
                {
                    "kind": _name.strip("_"),
                    "at_s": round(began - t0, 1),
                    "seconds": round(time.perf_counter() - began, 2),
                }
            )

        setattr(store, name, timed)

    encoder = PrecomputedQueries(Encoder.load(base.model, device="cpu"), queries["table"])
    retriever = Retriever(store, encoder, encoder, graph=None)
    ThreadPlan().use("query")  # the pools a service answers with (SPANRAG_QUERY_THREADS=1)
    texts = queries["texts"]
    for text in texts[: base.warmup]:
        retriever.retrieve(COLLECTION, text, "default")

    watch = SlowQuestions()
    watch.start()

    def ask(text: str) -> tuple[float, list[str]]:
        watch.begin()
        began = time.perf_counter()
        result = retriever.retrieve(COLLECTION, text, "default")
        ms = (time.perf_counter() - began) * 1000
        watch.end(ms)
        return ms, [item.span.doc_id for item in result.context.spans]

    idle = [ask(text)[0] for text in texts[base.warmup :]]
    slow_idle, watch.slow = watch.slow, []
    t0 = time.perf_counter()
    writer = Writer(store, pool, cfg.seconds, base.seed, base.model)
    writer.start()
    during: list[float] = []
    stale: list[str] = []
    i = 0
    while writer.is_alive():
        asked = time.perf_counter()
        deleted_before = {d for d, at in list(writer.deleted_at.items()) if at < asked}
        ms, docs = ask(texts[base.warmup + i % (len(texts) - base.warmup)])
        during.append(ms)
        stale.extend(d for d in docs if d in deleted_before)
        i += 1
    writer.join()
    watch.stop.set()
    if writer.error is not None:
        raise writer.error
    store.settle()
    freshness_after = store.freshness(COLLECTION)
    store.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    idle_s, during_s = summary(idle), summary(during)
    return {
        "spans": spans,
        "merge_policy": dataclasses.asdict(policy),
        "base_build_s": round(build_s, 2),
        "sync_s": round(sync_s, 2),
        "idle_ms": idle_s,
        "during_writes_ms": during_s,
        "p95_during_over_idle": round(during_s["p95"] / idle_s["p95"], 2),
        "writes": writer.count,
        "write_ms": summary(writer.write_ms),
        "freshness_ms": summary(writer.fresh_ms),
        "stale_results": len(stale),
        "failed_checks": writer.failures,
        "background": merges,
        "slow_questions": {"idle": slow_idle, "during_writes": watch.slow},
        "freshness_after": freshness_after,
        "peak_rss_bytes": _peak_rss(),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--real-spans", type=int, default=5_000, help="spans of real documents embedded for the pool")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the writer runs")
    ap.add_argument("--merge-min-rows", type=int, default=MergePolicy().min_rows)
    ap.add_argument("--merge-fraction", type=float, default=MergePolicy().fraction)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/spanrag-live-updates"))
    ap.add_argument("--cache-dir", type=Path, default=BenchConfig.cache_dir)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/live_updates.json"))
    ap.add_argument("--phase-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    base = BenchConfig(
        sizes=tuple(args.sizes),
        real_spans=args.real_spans,
        queries=args.queries,
        work_dir=args.work_dir,
        cache_dir=args.cache_dir,
        docs_dir=None,
    )
    cfg = LiveConfig(base, args.seconds, args.merge_min_rows, args.merge_fraction)
    if args.phase_size:
        args.phase_out.write_text(json.dumps(phase_live(cfg, args.phase_size)))
        return {}

    base.cache_dir.mkdir(parents=True, exist_ok=True)
    from indexing.embed import Encoder

    encoder = Encoder.load(base.model, device="cpu")  # loads its weights only if something is embedded
    if Pool.load(base.pool_dir) is None:
        build_pool(base, encoder, print).save(base.pool_dir)
    load_queries(base, encoder, print)
    del encoder
    results: dict = {"benchmark": "live_updates", "cores": len(os.sched_getaffinity(0)), "sizes": {}}
    for size in args.sizes:
        out = base.cache_dir / f"live-{size}.json"
        cmd = [sys.executable, "-m", "bench.live_updates", *(argv or sys.argv[1:]), "--phase-size", str(size)]
        subprocess.run([*cmd, "--phase-out", str(out)], check=True)
        results["sizes"][str(size)] = json.loads(out.read_text())
        print(json.dumps({size: results["sizes"][str(size)]}, indent=1), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
