"""Probe qdrant-edge-py (the Qdrant engine in-process) against what spanrag's QdrantStore
(``indexing/store/qdrant.py``) uses from qdrant-client's local mode. See docs/qdrant_edge.md.

    pip install --target /tmp/qedge qdrant-edge-py==0.9.0
    PYTHONPATH=/tmp/qedge .venv/bin/python -m bench.qdrant_edge_probe

Prints one line per feature: ``feature: edge=<verdict> | local=<verdict> | detail``, where a
verdict is ``ok`` (works as spanrag needs it), ``differs`` (works, with an API or result
difference an adapter must absorb), ``no`` (not available) or ``n/a``. ``local`` is the same
probe on qdrant-client's local mode (``QdrantClient(path=...)``) where the probe runs it, or
``in use`` where it does not and spanrag's QdrantStore already relies on it in local mode.
Tiny data (a few points, dim 4), temporary folders; a few seconds on one core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np

DIM = 4


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def line(feature: str, edge: str, local: str, detail: str) -> None:
    print(f"{feature}: edge={edge} | local={local} | {detail}", flush=True)


def err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def main() -> int:
    try:
        import qdrant_edge as qe
    except ImportError as e:
        print(
            f"qdrant_edge is not importable ({e}). Install it outside the project venv and retry:\n"
            "  .venv/bin/python -m pip install --target /tmp/qedge qdrant-edge-py==0.9.0\n"
            "  PYTHONPATH=/tmp/qedge .venv/bin/python -m bench.qdrant_edge_probe"
        )
        return 0
    try:
        from qdrant_client import QdrantClient
        from qdrant_client import models as m
    except ImportError:  # the local-mode column is then n/a
        QdrantClient = m = None

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    line(
        "import",
        "ok",
        "ok" if m else "n/a",
        f"qdrant-edge-py {version('qdrant-edge-py')}, qdrant-client {version('qdrant-client')}",
    )
    root = Path(tempfile.mkdtemp(prefix="qedge-probe-"))
    used = "in use" if m else "n/a"  # spanrag's QdrantStore calls it in local mode today; not re-run here
    U, F, FC = qe.UpdateOperation, qe.Filter, qe.FieldCondition
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((6, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    tokens = {0: rng.standard_normal((3, DIM)), 1: rng.standard_normal((2, DIM))}
    qtok = rng.standard_normal((2, DIM))
    gran = ["document", "sentence", "sentence", "document", "sentence", "sentence"]
    payloads = [
        {
            "span_id": f"d{i // 3}#{i % 3}",
            "doc_id": f"d{i // 3}",
            "granularity": gran[i],
            "row": i,
            "parent_id": None,
            "heading_path": ["A", "b"],
            "metadata": {"k": [1, 2.5, "x"]},
        }
        for i in range(6)
    ]

    # -- collections ---------------------------------------------------------------------------
    def edge_config():
        return qe.EdgeConfig(
            vectors={
                "dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
                "tokens": qe.EdgeVectorParams(
                    size=DIM,
                    distance=qe.Distance.Dot,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                ),
            },
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    spath = str(root / "spans")
    shard = qe.EdgeShard.create(spath, edge_config())
    local = QdrantClient(path=str(root / "local")) if m else None
    if local:
        local.create_collection(
            "spans",
            vectors_config={
                "dense": m.VectorParams(size=DIM, distance=m.Distance.COSINE),
                "tokens": m.VectorParams(
                    size=DIM,
                    distance=m.Distance.DOT,
                    multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                ),
            },
            sparse_vectors_config={"bm25": m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
    line(
        "named dense (Cosine) + multivector tokens (Dot, MaxSim) + sparse (Idf) config",
        "ok",
        "ok" if local else "n/a",
        "EdgeConfig(vectors={...}, sparse_vectors={...}) -> EdgeShard.create(path, config)",
    )
    line(
        "collections (several per store: <prefix>__meta, <prefix>__<name>)",
        "differs",
        used,
        "edge has no collection concept: one EdgeShard per directory; no create/list/exists/delete "
        f"collection calls (EdgeShard methods: {', '.join(n for n in dir(qe.EdgeShard) if not n.startswith('_'))})",
    )
    try:
        qe.EdgeConfig(vectors={})
        vless = "ok", "EdgeConfig(vectors={}) accepted"
    except Exception as e:
        vless = "no", err(e)
    meta = qe.EdgeShard.create(
        str(root / "meta"), qe.EdgeConfig(vectors={"_": qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot)})
    )
    meta.update(U.upsert_points([qe.Point(pid(99), {}, {"kind": "collection"})]))
    got = meta.retrieve([pid(99)], with_payload=True, with_vector=True)
    if local:
        local.create_collection("meta", vectors_config={})
    line(
        "vector-less collection (the meta records)",
        vless[0],
        "ok" if local else "n/a",
        f"{vless[1]}; workaround verified: a shard with a 1-dim dummy vector stores points with vector={{}} "
        f"(retrieved {got[0].vector!r}, {got[0].payload!r})",
    )

    # -- writes ----------------------------------------------------------------------------------
    shard.update(U.upsert_points([qe.Point(pid(i), {"dense": dense[i].tolist()}, payloads[i]) for i in range(6)]))
    if local:
        local.upsert(
            "spans",
            [m.PointStruct(id=pid(i), vector={"dense": dense[i].tolist()}, payload=payloads[i]) for i in range(6)],
        )
    rec = shard.retrieve([pid(2)], with_payload=True, with_vector=["dense"])[0]
    same = rec.payload == payloads[2] and np.allclose(rec.vector["dense"], dense[2], atol=1e-6)
    line(
        "upsert (named dense only) + retrieve(with_payload, with_vector=['dense'])",
        "ok" if same else "differs",
        "ok" if local else "n/a",
        f"payload with None/list/nested dict round-trips: {rec.payload == payloads[2]}; vector equal: "
        f"{np.allclose(rec.vector['dense'], dense[2], atol=1e-6)}",
    )
    lid = type(local.retrieve("spans", [pid(2)])[0].id).__name__ if local else "n/a"
    line(
        "point ids (uuid5 strings)",
        "differs" if not isinstance(rec.id, str) else "ok",
        "ok" if local else "n/a",
        f"ids come back as {type(rec.id).__module__}.{type(rec.id).__name__} on edge, {lid} in local mode "
        "(str(id) in an adapter); UUID objects are accepted as input",
    )

    # payload indexes
    for key in ("span_id", "doc_id", "parent_id", "granularity"):
        shard.update(U.create_field_index(key, qe.PayloadSchemaType.Keyword))
    schema = {k: v.points for k, v in shard.info().payload_schema.items()}
    lwarn = "n/a"
    if local:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            local.create_payload_index("spans", "doc_id", m.PayloadSchemaType.KEYWORD)
        lwarn = "no-op" if any("no effect" in str(w.message) for w in caught) else "ok"
    line(
        "payload indexes (keyword on span_id, doc_id, parent_id, granularity)",
        "ok",
        lwarn,
        f"UpdateOperation.create_field_index -> info().payload_schema points per field {schema}; "
        "local mode warns 'Payload indexes have no effect in the local Qdrant'",
    )

    # -- filters, count, scroll ------------------------------------------------------------------
    n_sent = shard.count(qe.CountRequest(filter=F(must=[FC("granularity", match=qe.MatchValue("sentence"))])))
    n_any = shard.count(
        qe.CountRequest(
            filter=F(
                must=[
                    FC("doc_id", match=qe.MatchAny(["d1"])),
                    FC("granularity", match=qe.MatchAny(["sentence", "document"])),
                ]
            )
        )
    )
    ok = (n_sent, n_any) == (4, 3)
    line(
        "count with Filter(must=[MatchValue / MatchAny])",
        "ok" if ok else "differs",
        used,
        f"count(CountRequest(filter=...)) returns an int ({n_sent}, {n_any}; expected 4, 3); "
        "qdrant-client returns CountResult(.count)",
    )
    pages, offset, seen = 0, None, []
    while True:
        recs, offset = shard.scroll(
            qe.ScrollRequest(
                offset=offset,
                limit=3,
                with_payload=True,
                filter=F(must=[FC("granularity", match=qe.MatchValue("sentence"))]),
            )
        )
        pages += 1
        seen += [r.payload["span_id"] for r in recs]
        if offset is None:
            break
    line(
        "scroll with filter + offset pagination",
        "ok" if sorted(seen) == ["d0#1", "d0#2", "d1#1", "d1#2"] else "differs",
        used,
        f"{len(seen)} points in {pages} pages; scroll(ScrollRequest(...)) -> (records, next_offset); "
        "next_offset is a UUID, fed back as is",
    )

    # -- token vectors: multivector, set/delete payload, delete vectors, is_empty ---------------------
    shard.update(U.update_vectors([qe.PointVectors(pid(i), {"tokens": t.tolist()}) for i, t in tokens.items()]))
    for i in tokens:  # no batch of operations: one update() per SetPayload
        shard.update(U.set_payload([pid(i)], {"token_codec": "f32", "token_scales": None}))
    line(
        "batch of update operations (batch_update_points with SetPayloadOperation)",
        "differs",
        used,
        "EdgeShard.update takes one UpdateOperation; no batch call (only query_batch), so one update() per "
        f"point's set_payload: {shard.count(qe.CountRequest(filter=F(must=[FC('token_codec', match=qe.MatchValue('f32'))])))} points set",
    )
    hits = shard.query(qe.QueryRequest(limit=10, query=qe.Query.Nearest(qtok.tolist(), using="tokens")))
    want = {pid(i): float((qtok @ t.T).max(axis=1).sum()) for i, t in tokens.items()}
    got = {str(h.id): h.score for h in hits}
    ok = got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-4 for k in want)
    ldetail = ""
    if local:
        local.update_vectors(
            "spans", [m.PointVectors(id=pid(i), vector={"tokens": t.tolist()}) for i, t in tokens.items()]
        )
        lh = local.query_points("spans", query=qtok.tolist(), using="tokens", limit=10).points
        ldetail = f"; local mode scores {[round(h.score, 4) for h in lh]}"
    line(
        "multivector MaxSim query (update_vectors on existing points)",
        "ok" if ok else "differs",
        "ok" if local else "n/a",
        f"scores {[round(h.score, 4) for h in hits]} = numpy sum-of-max dot {[round(v, 4) for v in want.values()]}{ldetail}",
    )
    has = shard.count(qe.CountRequest(filter=F(must_not=[qe.IsEmptyCondition("token_codec")])))
    hasnt = shard.count(
        qe.CountRequest(
            filter=F(must=[qe.IsEmptyCondition("token_codec"), FC("granularity", match=qe.MatchAny(["sentence"]))])
        )
    )
    line(
        "filter must/must_not IsEmptyCondition (spans with/without token vectors)",
        "ok" if (has, hasnt) == (2, 3) else "differs",
        used,
        f"with tokens {has}, sentence spans without {hasnt} (expected 2, 3); edge's IsEmptyCondition(key) "
        "takes the key directly, qdrant-client's takes PayloadField(key=...)",
    )
    shard.update(U.delete_vectors([pid(0)], ["tokens"]))
    shard.update(U.delete_payload([pid(0)], ["token_codec", "token_scales"]))
    r0 = shard.retrieve([pid(0)], with_payload=True, with_vector=True)[0]
    ok = (
        "tokens" not in r0.vector
        and "token_codec" not in r0.payload
        and shard.count(qe.CountRequest(filter=F(must=[qe.HasVectorCondition("tokens")]))) == 1
    )
    line(
        "delete_vectors + delete_payload (delete_token_vectors)",
        "ok" if ok else "differs",
        used,
        f"point keeps dense={('dense' in r0.vector)}, tokens gone={'tokens' not in r0.vector}, payload keys gone="
        f"{'token_codec' not in r0.payload}",
    )

    # -- search ------------------------------------------------------------------------------------
    q = dense[1]
    flt = F(must=[FC("granularity", match=qe.MatchAny(["sentence"]))])
    hits = shard.query(
        qe.QueryRequest(
            limit=3, query=qe.Query.Nearest(q.tolist(), using="dense"), filter=flt, with_payload=["span_id"]
        )
    )
    want = sorted(
        ((float(dense[i] @ q), payloads[i]["span_id"]) for i in range(6) if gran[i] == "sentence"), reverse=True
    )[:3]
    ok = [h.payload["span_id"] for h in hits] == [s for _, s in want] and all(
        abs(h.score - s) < 1e-5 for h, (s, _) in zip(hits, want)
    )
    ldetail = ""
    if local:
        lh = local.query_points(
            "spans",
            query=q.tolist(),
            using="dense",
            limit=3,
            with_payload=["span_id"],
            query_filter=m.Filter(must=[m.FieldCondition(key="granularity", match=m.MatchAny(any=["sentence"]))]),
        ).points
        ldetail = f"; local mode {[(h.payload['span_id'], round(h.score, 4)) for h in lh]}"
    line(
        "dense query (Cosine) with filter, limit, with_payload=['span_id']",
        "ok" if ok else "differs",
        "ok" if local else "n/a",
        f"{[(h.payload['span_id'], round(h.score, 4)) for h in hits]} = numpy inner-product order{ldetail}",
    )
    sh = shard.search(qe.SearchRequest(query=qe.Query.Nearest(q.tolist(), using="dense"), limit=1, filter=flt))
    line(
        "search(SearchRequest) (deprecated form of query)",
        "ok" if str(sh[0].id) == pid(1) else "differs",
        used,
        f"top hit {sh[0].id} score {sh[0].score:.4f}",
    )

    # sparse vectors with the Idf modifier: index 1 in all four points, index 2 in one
    sparse = [[1], [1], [1, 2], [1]]
    shard.update(
        U.upsert_points(
            [
                qe.Point(pid(20 + i), {"bm25": qe.SparseVector(ix, [1.0] * len(ix))}, {"sp": i})
                for i, ix in enumerate(sparse)
            ]
        )
    )
    sq = qe.SparseVector([1, 2], [1.0, 1.0])
    hits = shard.query(qe.QueryRequest(limit=4, query=qe.Query.Nearest(sq, using="bm25")))
    idf = lambda n, N=4: np.log((N - n + 0.5) / (n + 0.5) + 1)  # noqa: E731 (Qdrant's IDF)
    want = [float(idf(4) + idf(1))] + [float(idf(4))] * 3
    ok = str(hits[0].id) == pid(22) and np.allclose([h.score for h in hits], want, atol=1e-4)
    ldetail = ""
    if local:
        local.upsert(
            "spans",
            [
                m.PointStruct(id=pid(20 + i), vector={"bm25": m.SparseVector(indices=ix, values=[1.0] * len(ix))})
                for i, ix in enumerate(sparse)
            ],
        )
        lh = local.query_points(
            "spans", query=m.SparseVector(indices=[1, 2], values=[1.0, 1.0]), using="bm25", limit=4
        ).points
        ldetail = f"; local mode {[round(h.score, 4) for h in lh]}"
    line(
        "sparse vectors with Modifier.Idf (engine-side BM25 weighting)",
        "ok" if ok else "differs",
        "ok" if local else "n/a",
        f"scores {[round(h.score, 4) for h in hits]} = ln((N-n+.5)/(n+.5)+1) sums {[round(w, 4) for w in want]} with "
        f"N=4, the points having that sparse vector (the shard holds {shard.count(qe.CountRequest())}){ldetail}",
    )
    bm = qe.Bm25()
    dv, qv = bm.embed_document("The iron and copper alloy"), bm.embed_query("the iron")
    line(
        "built-in Bm25 text -> sparse vector (edge only)",
        "ok",
        "n/a",
        f"Bm25().embed_document -> {len(dv.indices)} terms (stopwords dropped), embed_query -> {len(qv.indices)}; "
        "tokenizer/stemmer are Qdrant's, not bm25s's, so lexical scores would not match the FAISS store",
    )

    # -- deletes -----------------------------------------------------------------------------------
    before = shard.count(qe.CountRequest())
    shard.update(U.delete_points([pid(5)]))
    shard.update(U.delete_points_by_filter(F(must=[FC("doc_id", match=qe.MatchValue("d0"))])))
    after = shard.count(qe.CountRequest())
    line(
        "delete by ids / by filter",
        "ok" if before - after == 4 else "differs",
        used,
        f"{before} -> {after} points (1 by id, 3 by filter)",
    )

    # -- collection info ---------------------------------------------------------------------------
    info = shard.info()
    fields = [n for n in dir(info) if not n.startswith("_")]
    lfields = ""
    if local:
        li = local.get_collection("spans")
        lfields = f"; local get_collection: status={li.status}, optimizer={li.optimizer_status}, config.params.vectors present"
    line(
        "collection info (freshness: segments, status, optimizer, points, indexed vectors; config)",
        "differs",
        "ok" if local else "n/a",
        f"EdgeShard.info() has only {fields} (no status, optimizer status or vector config; "
        f"the vector config is only on disk, in <shard>/edge_config.json){lfields}",
    )

    # HNSW indexing happens only in optimize(): 3000 points, 1000 deleted
    big = qe.EdgeShard.create(
        str(root / "big"),
        qe.EdgeConfig(
            vectors={"dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        ),
    )
    pts = rng.random((3000, DIM))
    big.update(U.upsert_points([qe.Point(i + 1, {"dense": pts[i].tolist()}) for i in range(3000)]))
    big.update(U.delete_points(list(range(1, 1001))))
    b0 = big.info()
    changed = big.optimize()
    b1 = big.info()
    line(
        "index building / optimizer (a server optimizes in the background; local mode has no index)",
        "differs",
        "n/a",
        f"indexed vectors {b0.indexed_vectors_count}/{b0.points_count} until EdgeShard.optimize() (synchronous) -> "
        f"{changed}, then {b1.indexed_vectors_count}/{b1.points_count} in {b1.segments_count} segments; "
        "the store would call it after writes",
    )
    big.close()

    # -- errors ------------------------------------------------------------------------------------
    try:
        shard.query(qe.QueryRequest(limit=1, query=qe.Query.Nearest([1.0, 0.0], using="dense")))
        e_detail = "wrong-dim query accepted"
    except Exception as e:
        e_detail = f"wrong-dim query raises {err(e)}"
    l_detail = ""
    if local:
        try:
            local.query_points("spans", query=[1.0, 0.0], using="dense", limit=1)
        except Exception as e:
            l_detail = f"; local mode raises {type(e).__name__}"
    line(
        "error types",
        "differs",
        "ok" if local else "n/a",
        f"{e_detail} (a bare Exception; storage errors say 'Service runtime error: ...'){l_detail}",
    )

    # -- persistence, locking, crash ---------------------------------------------------------------
    shard.close()
    try:
        shard.count(qe.CountRequest())
        closed = "usable after close"
    except Exception as e:
        closed = f"after close: {err(e)}"
    reopened = qe.EdgeShard.load(spath)
    n, schema = reopened.count(qe.CountRequest()), sorted(reopened.info().payload_schema)
    line(
        "persistence across close/load",
        "ok" if n == after and len(schema) == 4 else "differs",
        used,
        f"{n} points and payload indexes {schema} after EdgeShard.load(path); {closed}",
    )
    try:
        qe.EdgeShard.create(spath, edge_config())
        c = "create on existing data accepted"
    except Exception as e:
        c = err(e)
    line("create on a folder with data", "differs", "n/a", f"{c} (use load; load(path, config) checks compatibility)")

    try:
        qe.EdgeShard.load(spath)
        same_proc = "second EdgeShard on the same folder opened"
        e_same = "ok"
    except Exception as e:
        same_proc, e_same = err(e), "no"
    code = f"import qdrant_edge as qe; qe.EdgeShard.load({spath!r}); print('opened')"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    other = "opened" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1][:160]
    lsame = "n/a"
    if local:
        try:
            QdrantClient(path=str(root / "local"))
            lsame = "ok"
        except RuntimeError as e:
            lsame = "no"
            other += f"; local mode, same process: {err(e)[:110]}"
    line(
        "two objects on one folder (same process / another process)",
        e_same,
        lsame,
        f"same process: {same_proc}; other process: {other}",
    )

    crash = str(root / "crash")
    code = (
        "import os, uuid, qdrant_edge as qe\n"
        f"s = qe.EdgeShard.create({crash!r}, qe.EdgeConfig(vectors={{'dense': qe.EdgeVectorParams(size={DIM}, distance=qe.Distance.Cosine)}}))\n"
        "s.update(qe.UpdateOperation.upsert_points([qe.Point(str(uuid.UUID(int=i + 1)), {'dense': [1.0, i, 0, 0]}) for i in range(5)]))\n"
        "os._exit(0)  # no flush, no close\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    try:
        n = qe.EdgeShard.load(crash).count(qe.CountRequest())
        c = f"{n}/5 points after the writer exited without flush/close (WAL replay); lock released with the process"
    except Exception as e:
        n, c = -1, err(e)
    line("durability after an unclean exit", "ok" if n == 5 else "differs", "n/a", c)

    # threads: one writer, one reader on one EdgeShard (small: 30 batches of 10 points)
    errors, done, reads = [], threading.Event(), [0]

    def writer():
        try:
            for b in range(30):
                reopened.update(
                    U.upsert_points(
                        [
                            qe.Point(
                                str(uuid.uuid4()), {"dense": rng.random(DIM).tolist()}, {"granularity": "sentence"}
                            )
                            for _ in range(10)
                        ]
                    )
                )
                if b % 10 == 0:
                    reopened.update(U.delete_points_by_filter(F(must=[FC("doc_id", match=qe.MatchValue("none"))])))
        except Exception as e:
            errors.append(err(e))
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                reopened.query(qe.QueryRequest(limit=5, query=qe.Query.Nearest(q.tolist(), using="dense")))
                reopened.scroll(qe.ScrollRequest(limit=50, with_payload=True))
                reads[0] += 1
        except Exception as e:
            errors.append(err(e))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    line(
        "one writer + one reader thread on one shard",
        "ok" if not errors else "no",
        "not run (spanrag serializes local mode: _OneCallAtATime)",
        f"errors: {errors or 'none'} over 30 write batches and {reads[0]} query+scroll rounds "
        "(observed, not a documented guarantee: the stubs say nothing about threads)",
    )
    reopened.close()
    meta.close()
    if local:
        local.close()
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
