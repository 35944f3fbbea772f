"""The Qdrant engine in-process (``qdrant-edge-py``, the ``edge`` extra) behind the part of
``qdrant_client.QdrantClient`` that :class:`~indexing.store.qdrant.QdrantStore` and
:class:`~indexing.graph_qdrant.QdrantGraphIndex` call, for ``SPANRAG_QDRANT_LOCAL_ENGINE=edge``.

    >>> client = EdgeClient(Path(".spanrag/qdrant-edge"))       # doctest: +SKIP
    >>> store = QdrantStore(path=..., local_engine="edge")       # doctest: +SKIP

qdrant-client's local mode (the default without a URL) is a Python emulation that searches
by brute force and ignores payload indexes; edge is Qdrant's own engine: real payload
indexes, its WAL, its sparse IDF and MaxSim. Edge has no collections, so each collection
is one shard folder under ``path``. What differs and how it is bridged (``docs/qdrant_edge.md``
has the probe behind each line):

* a shard needs a vector: payload-only collections (meta, graph) get a 1-dim dummy vector;
* requests and filters are edge's classes: ``qdrant_client.models`` filters, points and
  sparse vectors are translated; ids come back as ``str``, ``count`` as ``.count``;
* ``update`` takes one operation: batches are loops;
* shard info has no status, optimizer state or vector config: the config the store asked
  for is kept beside the shard (``client_vectors.json``) and the status is reported green;
* nothing is indexed until ``optimize()``; searches scan unindexed segments, so results are
  complete either way.

Like local mode, one folder is open in one process at a time (a second one is refused).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace


def _edge():
    try:
        import qdrant_edge
    except ImportError as exc:
        raise ImportError("SPANRAG_QDRANT_LOCAL_ENGINE=edge needs the edge extra: pip install 'spanrag[edge]'") from exc
    return qdrant_edge


class EdgeClient:
    """The ``QdrantClient`` calls spanrag makes, over one ``EdgeShard`` per collection."""

    def __init__(self, path: Path):
        self.qe = _edge()
        from qdrant_client import models

        self.m = models
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict = {}
        self._lock = threading.Lock()

    # -- translation ---------------------------------------------------------------------------
    def _filter(self, f):
        if f is None:
            return None
        qe, m = self.qe, self.m

        def condition(c):
            if isinstance(c, m.Filter):
                return self._filter(c)
            if isinstance(c, m.FieldCondition) and isinstance(c.match, m.MatchValue):
                return qe.FieldCondition(c.key, match=qe.MatchValue(c.match.value))
            if isinstance(c, m.FieldCondition) and isinstance(c.match, m.MatchAny):
                return qe.FieldCondition(c.key, match=qe.MatchAny(list(c.match.any)))
            if isinstance(c, m.IsEmptyCondition):
                return qe.IsEmptyCondition(c.is_empty.key)
            raise NotImplementedError(f"the edge client does not translate {c!r}")

        def conditions(cs):
            return None if not cs else [condition(c) for c in (cs if isinstance(cs, list) else [cs])]

        return qe.Filter(must=conditions(f.must), should=conditions(f.should), must_not=conditions(f.must_not))

    @staticmethod
    def _record(r):
        return SimpleNamespace(id=str(r.id), payload=r.payload, vector=r.vector, score=getattr(r, "score", None))

    def _vectors(self, named: dict | None) -> dict:
        qe, m = self.qe, self.m
        return {
            k: qe.SparseVector(v.indices, v.values) if isinstance(v, m.SparseVector) else v
            for k, v in (named or {}).items()
        }

    @staticmethod
    def _ids(selector) -> list[str]:
        return [str(i) for i in getattr(selector, "points", selector)]

    # -- shards ----------------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.root / name

    def _shard(self, name: str):
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                shard = self._shards[name] = self.qe.EdgeShard.load(str(self._folder(name)))
            return shard

    def collection_exists(self, name: str) -> bool:
        return (self._folder(name) / "edge_config.json").exists()

    def create_collection(self, name: str, vectors_config=None, sparse_vectors_config=None, **_) -> None:
        qe, m = self.qe, self.m
        distance = {m.Distance.COSINE: qe.Distance.Cosine, m.Distance.DOT: qe.Distance.Dot}
        vectors = {}
        for key, p in (vectors_config or {}).items():
            multi = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim) if p.multivector_config else None
            vectors[key] = qe.EdgeVectorParams(size=p.size, distance=distance[p.distance], multivector_config=multi)
        sparse = {
            key: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if p.modifier == m.Modifier.IDF else None)
            for key, p in (sparse_vectors_config or {}).items()
        }
        if not vectors and not sparse:  # edge refuses a shard without vectors
            vectors = {"_": qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot)}
        config = qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse or None)
        with self._lock:
            self._shards[name] = qe.EdgeShard.create(str(self._folder(name)), config)
        asked = {
            "vectors": {k: p.model_dump(mode="json") for k, p in (vectors_config or {}).items()},
            "sparse": {k: p.model_dump(mode="json") for k, p in (sparse_vectors_config or {}).items()},
        }
        (self._folder(name) / "client_vectors.json").write_text(json.dumps(asked))

    def delete_collection(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
        shutil.rmtree(self._folder(name), ignore_errors=True)

    def create_payload_index(self, name: str, key: str, schema=None, **_) -> None:
        qe = self.qe
        self._shard(name).update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))

    def get_collection(self, name: str):
        m = self.m
        info = self._shard(name).info()
        asked = json.loads((self._folder(name) / "client_vectors.json").read_text())
        params = SimpleNamespace(
            vectors={k: m.VectorParams(**v) for k, v in asked["vectors"].items()},
            sparse_vectors={k: m.SparseVectorParams(**v) for k, v in asked["sparse"].items()},
        )
        return SimpleNamespace(
            status="green",
            optimizer_status="ok",
            segments_count=info.segments_count,
            points_count=info.points_count,
            indexed_vectors_count=info.indexed_vectors_count,
            config=SimpleNamespace(params=params),
        )

    # -- points ----------------------------------------------------------------------------------
    def scroll(self, name, scroll_filter=None, limit=10, offset=None, with_payload=True, with_vectors=False):
        request = self.qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=self._filter(scroll_filter),
            with_payload=with_payload,
            with_vector=with_vectors,
        )
        records, following = self._shard(name).scroll(request)
        return [self._record(r) for r in records], None if following is None else str(following)

    def retrieve(self, name, ids, with_payload=True, with_vectors=False):
        found = self._shard(name).retrieve([str(i) for i in ids], with_payload=with_payload, with_vector=with_vectors)
        return [self._record(r) for r in found]

    def upsert(self, name, points, wait=True) -> None:
        qe = self.qe
        edge_points = [qe.Point(str(p.id), self._vectors(p.vector), p.payload) for p in points]
        self._shard(name).update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, name, points_selector, wait=True) -> None:
        operation = self.qe.UpdateOperation
        if isinstance(points_selector, self.m.PointIdsList):
            self._shard(name).update(operation.delete_points(self._ids(points_selector)))
        else:
            self._shard(name).update(operation.delete_points_by_filter(self._filter(points_selector)))

    def count(self, name, count_filter=None, exact=True):
        n = self._shard(name).count(self.qe.CountRequest(exact=exact, filter=self._filter(count_filter)))
        return SimpleNamespace(count=n)

    def query_points(self, name, query, using=None, query_filter=None, limit=10, with_payload=True):
        qe = self.qe
        if isinstance(query, self.m.SparseVector):
            query = qe.SparseVector(query.indices, query.values)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query, using=using),
            filter=self._filter(query_filter),
            with_payload=with_payload,
        )
        return SimpleNamespace(points=[self._record(h) for h in self._shard(name).query(request)])

    def update_vectors(self, name, points, wait=True) -> None:
        qe = self.qe
        self._shard(name).update(
            qe.UpdateOperation.update_vectors([qe.PointVectors(str(p.id), p.vector) for p in points])
        )

    def batch_update_points(self, name, update_operations, wait=True) -> None:
        shard = self._shard(name)
        for operation in update_operations:
            payload = operation.set_payload
            shard.update(self.qe.UpdateOperation.set_payload([str(i) for i in payload.points], payload.payload))

    def set_payload(self, name, payload, points, wait=True) -> None:
        self._shard(name).update(self.qe.UpdateOperation.set_payload([str(i) for i in points], payload))

    def delete_vectors(self, name, vectors, points, wait=True) -> None:
        self._shard(name).update(self.qe.UpdateOperation.delete_vectors(self._ids(points), list(vectors)))

    def delete_payload(self, name, keys, points, wait=True) -> None:
        self._shard(name).update(self.qe.UpdateOperation.delete_payload(self._ids(points), list(keys)))

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()
