"""The graph index held in Qdrant, beside the spans, so a spanrag replica in front of a
Qdrant cluster keeps no graph file and sees every replica's writes.

    >>> graph = QdrantGraphIndex(store.client, prefix="spanrag")       # doctest: +SKIP
    >>> graph.update_document("docs", doc, spans)                      # doctest: +SKIP

Layout: the payload-only collection ``<prefix>__graph`` holds one point per document of
each collection (its title, content hash, the edges it owns as ``[src, dst, kind, weight,
dst_doc_id]`` lists in build order, the documents its edges point into, and ``seq``, the
write counter at its write), and one record per collection (``generation``, a fresh
``write_token`` per write, and ``pending`` for :meth:`begin_write`). A document's edges
are one point, so a write replaces them at once; edges other documents hold into a
document are dropped from their points when it is deleted or changes content.

Each process caches the built graph under the collection's ``(generation, write_token)``
and reads that pair (one point) whenever it uses the graph, so a write on another
replica is seen by the next query. Graph algorithms are :class:`~indexing.graph.GraphIndex`'s.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

from indexing.graph import GraphIndex
from indexing.graph_edges import Edge
from indexing.spans import Document
from indexing.store.qdrant import BATCH, point_id


class QdrantGraphIndex(GraphIndex):
    """:class:`~indexing.graph.GraphIndex` over a Qdrant client (the span store's)."""

    def __init__(self, client, prefix: str = "spanrag", max_entity_degree: int = 50, payload_indexes: bool = False):
        from qdrant_client import models

        self.client = client
        self.max_entity_degree = max_entity_degree
        self._models = models
        self._name = f"{prefix}__graph"
        self._init_caches()
        if not client.collection_exists(self._name):
            client.create_collection(self._name, vectors_config={})
            if payload_indexes:  # a server or edge (qdrant-client's local mode has none)
                for key in ("kind", "collection", "links_to"):
                    client.create_payload_index(self._name, key, models.PayloadSchemaType.KEYWORD)

    # -- plumbing ------------------------------------------------------------------------------
    def _filter(self, collection: str, **conditions):
        m = self._models
        must = [
            m.FieldCondition(key="kind", match=m.MatchValue(value="graph_doc")),
            m.FieldCondition(key="collection", match=m.MatchValue(value=collection)),
        ]
        for key, value in conditions.items():
            must.append(m.FieldCondition(key=key, match=m.MatchAny(any=list(value))))
        return m.Filter(must=must)

    def _documents(self, collection: str, **conditions) -> Iterator:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self._name, scroll_filter=self._filter(collection, **conditions), limit=BATCH, offset=offset
            )
            yield from points
            if offset is None:
                return

    def _record(self, collection: str) -> dict:
        found = self.client.retrieve(self._name, [point_id("graph", collection)], with_payload=True)
        return dict(found[0].payload) if found else {"kind": "graph", "collection": collection, "generation": 0}

    def _put_record(self, collection: str, record: dict) -> None:
        m = self._models
        self.client.upsert(
            self._name, [m.PointStruct(id=point_id("graph", collection), vector={}, payload=record)], wait=True
        )

    def _bump(self, collection: str) -> tuple[int, str]:
        record = self._record(collection)
        record["generation"] = record.get("generation", 0) + 1
        record["write_token"] = uuid.uuid4().hex  # two writers may both write generation g + 1
        self._put_record(collection, record)
        return record["generation"], record["write_token"]

    def generation(self, collection: str) -> tuple[int, str]:  # type: ignore[override]
        """The collection's write counter and the token of its last write."""
        record = self._record(collection)
        return record.get("generation", 0), record.get("write_token", "")

    # -- writes --------------------------------------------------------------------------------
    def _write(
        self, collection: str, doc_id: str, new: Document | None, edges: list[Edge], drop_incoming: bool | None
    ) -> None:
        m = self._models
        if any(not math.isfinite(e.weight) for e in edges):
            raise ValueError(f"document {doc_id!r}: an edge weight is not a finite number")
        with self._lock:
            before = self.generation(collection)
            own = point_id("graph-doc", collection, doc_id)
            found = self.client.retrieve(self._name, [own], with_payload=True)
            old = found[0].payload if found else None
            if drop_incoming is None:
                drop_incoming = old is not None and new is not None and old["content_hash"] != new.content_hash
            if drop_incoming:
                for point in list(self._documents(collection, links_to=[doc_id])):
                    kept = [e for e in point.payload["edges"] if e[4] != doc_id]
                    self.client.set_payload(
                        self._name,
                        {"edges": kept, "links_to": sorted({e[4] for e in kept if e[4]})},
                        points=[point.id],
                        wait=True,
                    )
            if new is None:
                if old is not None:
                    self.client.delete(self._name, m.PointIdsList(points=[own]), wait=True)
            else:
                rows = [[e.src, e.dst, e.kind, float(e.weight), e.dst_doc_id] for e in edges]
                payload = {
                    "kind": "graph_doc",
                    "collection": collection,
                    "doc_id": doc_id,
                    "title": new.title,
                    "content_hash": new.content_hash,
                    "edges": rows,
                    "links_to": sorted({e.dst_doc_id for e in edges if e.dst_doc_id}),
                    "seq": before[0] + 1,
                }
                self.client.upsert(self._name, [m.PointStruct(id=own, vector={}, payload=payload)], wait=True)
            after = self._bump(collection)
        self._titles_written(collection, before, after, None if old is None else old["title"], new)

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self.client.delete(self._name, self._filter(collection), wait=True)
            self._bump(collection)

    # -- repair ----------------------------------------------------------------------------------
    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        if doc_ids is None:
            points = list(self._documents(collection))
        else:
            points = []
            for start in range(0, len(doc_ids), BATCH):
                ids = [point_id("graph-doc", collection, d) for d in doc_ids[start : start + BATCH]]
                points.extend(self.client.retrieve(self._name, ids, with_payload=True))
        return dict(sorted((p.payload["doc_id"], p.payload["content_hash"]) for p in points))

    def document_count(self, collection: str) -> int:
        return self.client.count(self._name, count_filter=self._filter(collection), exact=True).count

    def begin_write(self, collection: str) -> bool:
        with self._lock:
            record = self._record(collection)
            earlier = bool(record.get("pending"))
            record["pending"] = True
            self._put_record(collection, record)
            return earlier

    def end_write(self, collection: str) -> None:
        with self._lock:
            record = self._record(collection)
            record["pending"] = False
            self._put_record(collection, record)

    # -- reads -----------------------------------------------------------------------------------
    def _stored_titles(self, collection: str) -> list[str]:
        return [
            title for _, title in sorted((p.payload["doc_id"], p.payload["title"]) for p in self._documents(collection))
        ]

    def graph(self, collection: str):
        return self._graph(collection)

    def _graph_rows(self, collection: str) -> tuple[list[str], list[tuple[str, str, str, float]]]:
        points = sorted((p.payload for p in self._documents(collection)), key=lambda p: (p["seq"], p["doc_id"]))
        doc_ids = sorted(p["doc_id"] for p in points)
        return doc_ids, [(e[0], e[1], e[2], e[3]) for p in points for e in p["edges"]]

    def close(self) -> None:
        """Nothing of its own to close: the client is the span store's."""
