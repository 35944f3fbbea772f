"""The graph index: documents, spans and the entities they mention, as one persisted,
incrementally maintained graph per collection, for expanding retrieval from anchor spans
to structurally or semantically related spans (multi-hop questions).

    >>> graph = GraphIndex(Path("/tmp/spanrag-data/graph.sqlite3"))    # doctest: +SKIP
    >>> graph.update_document("docs", doc, spans, similar={"a#2": [("b#5", 0.83)]})  # doctest: +SKIP
    >>> graph.neighbours("docs", "a#2", {"mentions"}, hops=2)          # doctest: +SKIP
    {'b#3': 2, 'b#4': 2}

Nodes are strings: ``doc:<doc_id>``, ``span:<span_id>`` and ``ent:<normalized entity>``.
Edges have a ``kind``:

* ``parent``: span -> its parent span; the top span (no parent) and every section span
  also -> ``doc:<doc_id>``.
* ``next``: span -> the next span of the same granularity under the same parent.
* ``mentions``: paragraph, sentence and row spans -> every entity their text mentions
  (:func:`indexing.entities.extract_entities`), and ``doc:<doc_id>`` -> the entity of
  its own title.
* ``similar``: span -> a span of another document, weight = cosine; computed by the
  caller (a dense search per span) and passed to :meth:`GraphIndex.update_document`.

Every edge is owned by the document it was built from and is stored with the document
its destination belongs to when that is another one (``similar`` edges). A write replaces
exactly one document's rows in one SQLite transaction; two documents mentioning the same
entity meet at the shared ``ent:`` node, so nothing else needs storing or fixing up, and
an entity nobody mentions any more simply has no edges left. Edges other documents hold
into a document (``similar``) are dropped when it is deleted or re-indexed with another
``content_hash``; the graph is a cache keyed by a per-collection write counter.

Entities come from :mod:`indexing.entities` (its docstring states the rule); one
document's edges are built by :mod:`indexing.graph_edges`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import networkx as nx

from indexing.entities import TitleMatcher
from indexing.graph_edges import Edge, document_edges
from indexing.spans import Document, Span, doc_id_of

EDGE_KINDS = ("parent", "next", "mentions", "similar")

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pending_writes (collection TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, doc_id TEXT NOT NULL, title TEXT NOT NULL,
    content_hash TEXT NOT NULL, PRIMARY KEY (collection, doc_id));
CREATE TABLE IF NOT EXISTS edges (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL, doc_id TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL,
    kind TEXT NOT NULL, weight REAL NOT NULL, dst_doc_id TEXT);
CREATE INDEX IF NOT EXISTS edges_by_owner ON edges (collection, doc_id);
CREATE INDEX IF NOT EXISTS edges_by_dst_doc ON edges (collection, dst_doc_id)
    WHERE dst_doc_id IS NOT NULL;
"""


def _node_kind(node: str) -> str:
    return {"doc": "doc", "span": "span", "ent": "entity"}[node.split(":", 1)[0]]


_T = TypeVar("_T")


@dataclass
class _Cached(Generic[_T]):
    generation: int
    value: _T


class GraphIndex:
    """The graph of every collection, persisted in its own SQLite file; see the module
    docstring for nodes, edges and how writes stay local to one document.

    >>> index = GraphIndex(Path("/tmp/spanrag-data/graph.sqlite3"))  # doctest: +SKIP
    >>> index.update_document("docs", doc, spans)                     # doctest: +SKIP
    >>> index.personalized_pagerank("docs", {"a#2": 1.0}, top=5)       # doctest: +SKIP
    """

    def __init__(self, path: Path, max_entity_degree: int = 50):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entity_degree = max_entity_degree
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = threading.RLock()
        self._graphs: dict[str, _Cached[nx.MultiDiGraph]] = {}
        self._titles: dict[str, _Cached[TitleMatcher]] = {}
        self._titled_cache: dict[str, tuple[nx.MultiDiGraph, dict[str, list[str]]]] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def generation(self, collection: str) -> int:
        """The collection's write counter; every update or delete bumps it."""
        rows = self._query("SELECT generation FROM collections WHERE name = ?", (collection,))
        return rows[0][0] if rows else 0

    def _stored_titles(self, collection: str) -> list[str]:
        return [
            r[0] for r in self._query("SELECT title FROM documents WHERE collection = ? ORDER BY doc_id", (collection,))
        ]

    def _title_matcher(self, collection: str, generation) -> TitleMatcher:
        cached = self._titles.get(collection)
        if cached is None or cached.generation != generation:
            cached = self._titles[collection] = _Cached(
                generation, TitleMatcher.from_titles(self._stored_titles(collection))
            )
        return cached.value

    def _titles_written(self, collection: str, before, after, old_title: str | None, new: Document | None) -> None:
        """Keep the cached titles current without re-reading them, if nobody else wrote."""
        cached = self._titles.get(collection)
        if cached is not None and cached.generation == before:
            if old_title is not None:
                cached.value.remove(old_title)
            if new is not None:
                cached.value.add(new.title)
            cached.generation = after

    def _bump_generation(self, collection: str) -> None:
        """Count one more write of ``collection`` (inside the caller's transaction)."""
        self._db.execute(
            "INSERT INTO collections (name, generation) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET generation = generation + 1",
            (collection,),
        )

    def _write(
        self, collection: str, doc_id: str, new: Document | None, edges: list[Edge], drop_incoming: bool | None
    ) -> None:
        """One transaction: drop ``doc_id``'s rows (and, when asked, edges into it), insert
        ``new``'s; ``drop_incoming=None`` means "when the stored hash differs from new's"."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self.generation(collection)
                old = self._db.execute(
                    "SELECT title, content_hash FROM documents WHERE collection = ? AND doc_id = ?",
                    (collection, doc_id),
                ).fetchone()
                if drop_incoming is None:
                    # Same content means the same span ids and texts, so edges other documents
                    # hold into it are still right; with no old version there is nothing stale.
                    drop_incoming = old is not None and new is not None and old[1] != new.content_hash
                self._db.execute("DELETE FROM edges WHERE collection = ? AND doc_id = ?", (collection, doc_id))
                if drop_incoming:
                    self._db.execute("DELETE FROM edges WHERE collection = ? AND dst_doc_id = ?", (collection, doc_id))
                self._db.execute("DELETE FROM documents WHERE collection = ? AND doc_id = ?", (collection, doc_id))
                if new is not None:
                    self._db.execute(
                        "INSERT INTO documents VALUES (?, ?, ?, ?)", (collection, doc_id, new.title, new.content_hash)
                    )
                    self._db.executemany(
                        "INSERT INTO edges (collection, doc_id, src, dst, kind, weight, dst_doc_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(collection, doc_id, e.src, e.dst, e.kind, e.weight, e.dst_doc_id) for e in edges],
                    )
                self._bump_generation(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._titles_written(collection, before, before + 1, None if old is None else old[0], new)

    # -- writes --------------------------------------------------------------------------------
    def update_document(
        self,
        collection: str,
        doc: Document,
        spans: list[Span],
        similar: dict[str, list[tuple[str, float]]] | None = None,
        known_titles: Iterable[str] = (),
    ) -> None:
        """Replace ``doc``'s part of the graph in one transaction.

        ``similar`` maps a span id of ``doc`` to its nearest spans of other documents with
        their cosines (same-document neighbours are ignored). Entities are extracted with
        the titles of the collection's documents, ``doc.title`` and ``known_titles`` (pass
        the titles of a batch being ingested, so its documents see each other's titles).
        Edges other documents hold into ``doc`` are dropped when ``doc`` had an older
        version with another ``content_hash``.
        """
        with self._lock:
            matcher = self._title_matcher(collection, self.generation(collection))
            extra = list(dict.fromkeys([doc.title, *known_titles]))
            for title in extra:
                matcher.add(title)
            try:
                edges = document_edges(doc, spans, matcher, similar)
            finally:
                for title in extra:
                    matcher.remove(title)
            self._write(collection, doc.id, doc, edges, drop_incoming=None)

    def update_documents(
        self,
        collection: str,
        items: Iterable[tuple[Document, list[Span], dict[str, list[tuple[str, float]]] | None]],
        known_titles: Iterable[str] = (),
    ) -> int:
        """:meth:`update_document` for many documents (one transaction each), matching
        ``known_titles`` (e.g. the whole batch's titles) with one title matcher instead of
        rebuilding it per document. Returns the number of documents written."""
        written = 0
        with self._lock:
            matcher = self._title_matcher(collection, self.generation(collection))
            extra = list(dict.fromkeys(known_titles))
            for title in extra:
                matcher.add(title)
            try:
                for doc, spans, similar in items:
                    matcher.add(doc.title)
                    try:
                        edges = document_edges(doc, spans, matcher, similar)
                    finally:
                        matcher.remove(doc.title)
                    self._write(collection, doc.id, doc, edges, drop_incoming=None)
                    written += 1
            finally:
                for title in extra:
                    matcher.remove(title)
        return written

    def drop_collection(self, collection: str) -> None:
        """Remove every document and edge of ``collection`` in one transaction. The write
        counter goes on (not back to 0), so caches of the old contents never look current."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("edges", "documents"):
                    self._db.execute(f"DELETE FROM {table} WHERE collection = ?", (collection,))
                self._bump_generation(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete_document(self, collection: str, doc_id: str) -> None:
        """Remove ``doc_id``'s edges, every edge into its spans and its hash, in one transaction."""
        self._write(collection, doc_id, None, [], drop_incoming=True)

    # -- repair ----------------------------------------------------------------------------------
    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        """``{doc_id: content_hash}`` of every document in the graph, or of those of
        ``doc_ids`` it holds."""
        if doc_ids is None:
            return dict(
                self._query(
                    "SELECT doc_id, content_hash FROM documents WHERE collection = ? ORDER BY doc_id", (collection,)
                )
            )
        found: dict[str, str] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = doc_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._query(
                    f"SELECT doc_id, content_hash FROM documents WHERE collection = ? AND doc_id IN ({marks})",
                    (collection, *chunk),
                )
            )
        return found

    def document_count(self, collection: str) -> int:
        return self._query("SELECT COUNT(*) FROM documents WHERE collection = ?", (collection,))[0][0]

    def begin_write(self, collection: str) -> bool:
        """Record that the span store is about to change ``collection``; returns whether an
        earlier write never reached :meth:`end_write` (a crash: compare every document)."""
        with self._lock:
            earlier = bool(
                self._db.execute("SELECT 1 FROM pending_writes WHERE collection = ?", (collection,)).fetchall()
            )
            self._db.execute("INSERT OR IGNORE INTO pending_writes VALUES (?)", (collection,))
            self._db.commit()
            return earlier

    def end_write(self, collection: str) -> None:
        """The graph holds what the span store holds again (see :meth:`begin_write`)."""
        with self._lock:
            self._db.execute("DELETE FROM pending_writes WHERE collection = ?", (collection,))
            self._db.commit()

    def has_document(self, collection: str, doc_id: str) -> bool:
        return bool(self.document_hashes(collection, [doc_id]))

    def stale_documents(self, collection: str, hashes: dict[str, str]) -> list[str]:
        """Documents of ``hashes`` (``{doc_id: content_hash}``, e.g. from the span store) that
        the graph lacks or holds at another version, sorted; reads only those documents."""
        stored = self.document_hashes(collection, list(hashes))
        return sorted(d for d, h in hashes.items() if stored.get(d) != h)

    def orphan_documents(self, collection: str, live_doc_ids: set[str]) -> list[str]:
        """Documents in the graph that are not in ``live_doc_ids``, sorted."""
        return sorted(set(self.document_hashes(collection)) - set(live_doc_ids))

    # -- reads -----------------------------------------------------------------------------------
    def graph(self, collection: str) -> nx.MultiDiGraph:
        """The collection's graph (nodes carry ``kind``: doc/span/entity; edges ``kind`` and
        ``weight``), rebuilt from SQLite when its write counter moved. Shared: do not modify.

        Queries read it while writes go on: a built graph is never changed (a write makes
        the next call build a new one), and its counter, documents and edges are read in one
        read transaction, so it is one committed state even when another process writes.
        It may still name documents the span store has lost since; readers skip those."""
        with self._lock:
            if self._db.in_transaction:
                return self._graph(collection)
            self._db.execute("BEGIN")
            try:
                return self._graph(collection)
            finally:
                self._db.execute("COMMIT")

    def _graph(self, collection: str) -> nx.MultiDiGraph:
        with self._lock:
            generation = self.generation(collection)
            cached = self._graphs.get(collection)
            if cached is not None and cached.generation == generation:
                return cached.value
            doc_ids, rows = self._graph_rows(collection)
            g = nx.MultiDiGraph()
            for doc_id in doc_ids:
                g.add_node(f"doc:{doc_id}", kind="doc")
            for src, dst, kind, weight in rows:
                for node in (src, dst):
                    if node not in g:
                        g.add_node(node, kind=_node_kind(node))
                g.add_edge(src, dst, kind=kind, weight=weight)
            self._graphs[collection] = _Cached(generation, g)
            return g

    def _graph_rows(self, collection: str) -> tuple[list[str], list[tuple[str, str, str, float]]]:
        """The documents (sorted) and edges (in write order) the graph is built from."""
        doc_ids = [
            r[0]
            for r in self._query("SELECT doc_id FROM documents WHERE collection = ? ORDER BY doc_id", (collection,))
        ]
        rows = self._query(
            "SELECT src, dst, kind, weight FROM edges WHERE collection = ? ORDER BY row_id", (collection,)
        )
        return doc_ids, [(r[0], r[1], r[2], r[3]) for r in rows]

    def _is_hub(self, g: nx.MultiDiGraph, node: str) -> bool:
        return node.startswith("ent:") and g.in_degree(node) > self.max_entity_degree

    def _adjacent(self, g: nx.MultiDiGraph, node: str, kinds: set[str] | None) -> list[str]:
        """Neighbours over edges of ``kinds`` (all when None) in both directions, in a stable order."""
        out: dict[str, None] = {}
        for adjacency in (g.succ[node], g.pred[node]):
            for other, edges in adjacency.items():
                if kinds is None or any(e["kind"] in kinds for e in edges.values()):
                    out[other] = None
        return list(out)

    def _ball(self, g: nx.MultiDiGraph, starts: list[str], hops: int, kinds: set[str] | None) -> dict[str, int]:
        """Breadth-first hop distances from ``starts``; hub entities are reached, not passed."""
        dist = {s: 0 for s in starts}
        frontier = deque(starts)
        while frontier:
            node = frontier.popleft()
            if dist[node] >= hops or (dist[node] > 0 and self._is_hub(g, node)):
                continue
            for other in self._adjacent(g, node, kinds):
                if other not in dist:
                    dist[other] = dist[node] + 1
                    frontier.append(other)
        return dist

    def neighbours(self, collection: str, span_id: str, kinds: set[str], hops: int = 1) -> dict[str, int]:
        """Span ids within ``hops`` edges of ``kinds`` of ``span_id`` (either direction;
        ``doc:`` and ``ent:`` nodes are passed through but not returned; an entity with more
        than ``max_entity_degree`` mentions is not passed through), with their distance,
        nearest first then by id. The span itself is not included."""
        unknown = set(kinds) - set(EDGE_KINDS)
        if unknown:
            raise ValueError(f"unknown edge kinds {sorted(unknown)}; known: {EDGE_KINDS}")
        g = self.graph(collection)
        start = f"span:{span_id}"
        if start not in g:
            return {}
        dist = self._ball(g, [start], hops, set(kinds))
        found = [(d, n[5:]) for n, d in dist.items() if n.startswith("span:") and n != start]
        return {s: d for d, s in sorted(found)}

    def personalized_pagerank(
        self, collection: str, seeds: dict[str, float], alpha: float = 0.85, top: int = 50
    ) -> list[tuple[str, float]]:
        """Spans ranked by PageRank personalized on ``seeds`` (``{span_id: weight}``), over the
        undirected graph within 2 hops of the seeds (hub entities not passed through);
        ``[(span_id, score)]``, best first, seeds included."""
        g = self.graph(collection)
        present = {f"span:{s}": w for s, w in seeds.items() if f"span:{s}" in g and w > 0}
        if not present:
            return []
        nodes = sorted(self._ball(g, sorted(present), 2, None))
        sub = nx.MultiGraph()
        sub.add_nodes_from(nodes)
        keep = set(nodes)
        for u in nodes:
            for v, edges in g.succ[u].items():
                if v in keep:
                    for e in edges.values():
                        sub.add_edge(u, v, weight=max(float(e["weight"]), 0.0))
        scores = nx.pagerank(sub, alpha=alpha, personalization=present, weight="weight")
        ranked = sorted(((-score, n[5:]) for n, score in scores.items() if n.startswith("span:")))
        return [(s, -neg) for neg, s in ranked[:top]]

    def linked_documents(self, collection: str, span_ids: list[str]) -> list[tuple[str, str, str]]:
        """Documents named by what these spans mention: ``[(doc_id, entity, span_id)]`` for each entity
        a span mentions that is another document's title, in span then mention order, each
        document once. This is the bridge of a multi-hop question (a film's paragraph names
        its director; the director's own document holds the answer)."""
        g = self.graph(collection)
        titled = self._titled(collection, g)
        out: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for span_id in span_ids:
            node = f"span:{span_id}"
            if node not in g:
                continue
            own = doc_id_of(span_id)
            for entity, edges in g.succ[node].items():
                for doc_id in titled.get(entity, ()):
                    if doc_id != own and doc_id not in seen and any(e["kind"] == "mentions" for e in edges.values()):
                        seen.add(doc_id)
                        out.append((doc_id, entity[4:], span_id))
        return out

    def _titled(self, collection: str, g: nx.MultiDiGraph) -> dict[str, list[str]]:
        """``{entity node: [doc ids whose title it is]}`` for the graph ``g`` (cached with it)."""
        cached = self._titled_cache.get(collection)
        if cached is not None and cached[0] is g:
            return cached[1]
        titled: dict[str, list[str]] = {}
        for node in g:
            if node.startswith("doc:"):
                for entity, edges in g.succ[node].items():
                    if any(e["kind"] == "mentions" for e in edges.values()):
                        titled.setdefault(entity, []).append(node[4:])
        titled = {k: sorted(v) for k, v in titled.items()}
        self._titled_cache[collection] = (g, titled)
        return titled

    def entities_of(self, collection: str, span_id: str) -> list[str]:
        """The normalized entities ``span_id`` mentions, in order of first mention."""
        g = self.graph(collection)
        node = f"span:{span_id}"
        if node not in g:
            return []
        return [v[4:] for v, edges in g.succ[node].items() if any(e["kind"] == "mentions" for e in edges.values())]

    def stats(self, collection: str) -> dict:
        """Node counts by kind, edge counts by kind, documents and the write counter."""
        g = self.graph(collection)
        nodes: dict[str, int] = {}
        for _, kind in g.nodes(data="kind"):
            nodes[kind] = nodes.get(kind, 0) + 1
        edges: dict[str, int] = {}
        for _, _, kind in g.edges(data="kind"):
            edges[kind] = edges.get(kind, 0) + 1
        return {
            "documents": nodes.get("doc", 0),
            "nodes": dict(sorted(nodes.items())),
            "edges": dict(sorted(edges.items())),
            "generation": self._graphs[collection].generation,
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
