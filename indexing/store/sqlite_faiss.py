"""The embedded store: SQLite holds documents, spans and their vectors; FAISS and bm25s
indexes are derived from it, as segments (``indexing.store.segments``).

Every write is one SQLite transaction that also bumps the collection's ``generation`` and
records the span rows it deleted or replaced as tombstones. Searches read a base segment
(on disk, built from one committed generation) plus delta segments of the rows written
since, minus the tombstones: after a write, only its own rows are indexed before the next
search, by this process or by any other one on the same data directory. Merging the
deltas into a new base, and building the token matrix, run in a background thread, write
new files and swap them in whole; searches use the old ones until then. A crash at any
point leaves SQLite as committed and a readable set of index files (or none: the first
search then builds the base).

    >>> store = SqliteFaissStore(Path("/tmp/spanrag-data"))   # doctest: +SKIP
    >>> store = SqliteFaissStore(Path("/tmp/spanrag-data"), dense_index="hnsw")  # doctest: +SKIP
    >>> store.create_collection("docs", model="all-MiniLM-L6-v2", dim=384)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from indexing.spans import GRANULARITIES, Document, Granularity, Span, context_text
from indexing.store.background import BackgroundJobs
from indexing.store.base import (
    ALL_CAPABILITIES,
    CollectionNotFound,
    ScoredSpanId,
    SourceRecord,
    SpanStore,
    StoreMismatch,
    check_collection_name,
)
from indexing.store.bm25 import Bm25Index
from indexing.store.dense_index import DenseIndex, DenseIndexKind, DenseIndexSpec
from indexing.store.files import readable_version, staging_for, swap_in
from indexing.store.merge_policy import MergePolicy
from indexing.store.segments import BaseSegment, DeltaSegment, SegmentSet
from indexing.store.token_matrix import PackedTokens, TokenDelta, TokenHits, TokenMatrix
from indexing.token_codecs import EncodedTokens, encoded_from_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, model TEXT NOT NULL, dim INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0, token_generation INTEGER NOT NULL DEFAULT 0,
    token_model TEXT);
CREATE TABLE IF NOT EXISTS sources (
    collection TEXT NOT NULL, path TEXT NOT NULL, content_hash TEXT NOT NULL,
    doc_ids TEXT NOT NULL, PRIMARY KEY (collection, path));
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL,
    content_hash TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (collection, id));
CREATE TABLE IF NOT EXISTS spans (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL, id TEXT NOT NULL, doc_id TEXT NOT NULL, parent_id TEXT,
    granularity TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    text TEXT NOT NULL, heading_path TEXT NOT NULL, n_tokens INTEGER NOT NULL,
    header TEXT NOT NULL, ord INTEGER NOT NULL, vector BLOB NOT NULL,
    UNIQUE (collection, id));
CREATE INDEX IF NOT EXISTS spans_by_doc ON spans (collection, doc_id, ord);
CREATE INDEX IF NOT EXISTS spans_by_parent ON spans (collection, parent_id);
CREATE INDEX IF NOT EXISTS spans_by_granularity ON spans (collection, granularity);
CREATE TABLE IF NOT EXISTS tombstones (  -- span rows deleted or replaced, by the generation that did it
    collection TEXT NOT NULL, row_id INTEGER NOT NULL, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_by_generation ON tombstones (collection, generation);
CREATE TABLE IF NOT EXISTS token_vectors (
    row_id INTEGER PRIMARY KEY,  -- the span's spans.row_id; removed with the span
    codec TEXT NOT NULL, dim INTEGER NOT NULL, n INTEGER NOT NULL,
    data BLOB NOT NULL, scales BLOB);
"""

SPAN_COLUMNS = 'id, doc_id, parent_id, granularity, start, "end", text, heading_path, n_tokens, header, ord'
_CHUNK = 900  # stay under SQLite's bound-parameter limit on old builds


def _chunks(items: list, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _directory(rows: list[tuple]) -> tuple[dict[int, str], dict[str, np.ndarray]]:
    """From (row_id, span_id, granularity) in row order: the span id of each row, and the
    rows of each granularity (what a base's dense filter and BM25 indexes are keyed by)."""
    span_id_of_row = {r: s for r, s, _ in rows}
    by_granularity: dict[str, list[int]] = {g: [] for g in GRANULARITIES}
    for r, _, g in rows:
        by_granularity[g].append(r)
    return span_id_of_row, {g: np.array(v, dtype=np.int64) for g, v in by_granularity.items()}


def _row_to_span(row: tuple) -> Span:
    return Span(
        id=row[0],
        doc_id=row[1],
        parent_id=row[2],
        granularity=row[3],
        start=row[4],
        end=row[5],
        text=row[6],
        heading_path=json.loads(row[7]),
        n_tokens=row[8],
        header=row[9],
        order=row[10],
    )


class SqliteFaissStore(SpanStore):
    """``dense_index``: ``flat`` (exact, the default), ``hnsw`` or ``ivf`` (approximate), or a
    :class:`DenseIndexSpec` with its knobs; an index saved as another kind is rebuilt.
    Has every capability, XTR's token index (``token_search``) included."""

    capabilities = ALL_CAPABILITIES
    backend = "sqlite_faiss"

    def __init__(
        self,
        data_dir: Path,
        dense_index: DenseIndexKind | DenseIndexSpec = "flat",
        merge_policy: MergePolicy | None = None,
        merge_in_process: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.dense_spec = dense_index if isinstance(dense_index, DenseIndexSpec) else DenseIndexSpec(dense_index)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.data_dir / "spanrag.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(collections)")}
        for column, kind in (
            ("token_generation", "INTEGER NOT NULL DEFAULT 0"),
            ("token_model", "TEXT"),
            # the newest merged base, and the generation up to which tombstones were removed
            ("base_generation", "INTEGER NOT NULL DEFAULT 0"),
            ("tombstone_floor", "INTEGER NOT NULL DEFAULT 0"),
        ):
            if column not in columns:  # data directories from before the token index
                self._db.execute(f"ALTER TABLE collections ADD COLUMN {column} {kind}")
        self._lock = threading.RLock()
        self.merge_policy = merge_policy or MergePolicy()
        # a merge's build runs in a process of its own (indexing/store/merge_worker.py) unless
        # asked here: that process, and stores whose index lives on a GPU, build in-process
        self.merge_in_process = merge_in_process or self.dense_spec.device.startswith("cuda")
        self._loaded: dict[str, SegmentSet] = {}
        self._merged: dict[str, BaseSegment] = {}  # the newest base a background merge built
        self._epochs: dict[str, int] = {}  # bumped when a collection is dropped: its merges are void
        self._token_matrices: dict[str, TokenMatrix] = {}
        self._token_deltas: dict[str, TokenDelta] = {}  # XTR: a matrix and the token rows written since
        self._background = BackgroundJobs()
        self._save_lock = threading.Lock()
        # one token-matrix build per collection at a time; taken before self._lock, never inside it
        self._token_build_locks: dict[str, threading.Lock] = {}

    # -- helpers -------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _read_transaction(self) -> Iterator[None]:
        """Several reads that must see one committed state: under the lock (so no write of
        this store commits in between) and in one SQLite read transaction (so neither does
        another process's). Re-entrant: inside a transaction it adds nothing."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    def _require(self, collection: str) -> tuple[str, int, int]:
        rows = self._query("SELECT model, dim, generation FROM collections WHERE name = ?", (collection,))
        if not rows:
            raise CollectionNotFound(collection)
        return rows[0]

    def _index_dir(self, collection: str) -> Path:
        return self.data_dir / "indexes" / collection

    def _tokens_dir(self, collection: str) -> Path:
        """Where the token matrix of ``collection`` is saved (beside its base)."""
        return self._index_dir(collection).with_name(collection + ".tokens")

    # -- collections ---------------------------------------------------------------------
    def create_collection(self, name: str, model: str, dim: int) -> None:
        check_collection_name(name)
        with self._lock:
            rows = self._query("SELECT model, dim FROM collections WHERE name = ?", (name,))
            if rows:
                if tuple(rows[0]) != (model, dim):
                    raise StoreMismatch.for_model(name, tuple(rows[0]), (model, dim))
                return
            self._db.execute("INSERT INTO collections (name, model, dim) VALUES (?, ?, ?)", (name, model, dim))

    def has_collection(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM collections WHERE name = ?", (name,)))

    def list_collections(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM collections ORDER BY name")]

    def collection_model(self, name: str) -> str:
        return self._require(name)[0]

    def document_count(self, collection: str) -> int:
        self._require(collection)
        return self._query("SELECT COUNT(*) FROM documents WHERE collection = ?", (collection,))[0][0]

    def collection_stats(self, name: str) -> dict:
        model, dim, generation = self._require(name)
        n_docs = self._query("SELECT COUNT(*) FROM documents WHERE collection = ?", (name,))[0][0]
        by_granularity = dict(
            self._query(
                "SELECT granularity, COUNT(*) FROM spans WHERE collection = ? GROUP BY granularity",
                (name,),
            )
        )
        return {
            "name": name,
            "model": model,
            "dim": dim,
            "generation": generation,
            "documents": n_docs,
            "spans": sum(by_granularity.values()),
            "spans_by_granularity": by_granularity,
            "freshness": self.freshness(name),
        }

    # -- writes ----------------------------------------------------------------------------
    def _delete_in_tx(self, collection: str, doc_ids: list[str]) -> int:
        existed = 0
        for chunk in _chunks(doc_ids):
            marks = ",".join("?" * len(chunk))
            self._db.execute(
                "INSERT INTO tombstones SELECT s.collection, s.row_id, c.generation + 1 FROM spans s "
                f"JOIN collections c ON c.name = s.collection WHERE s.collection = ? AND s.doc_id IN ({marks})",
                [collection, *chunk],
            )
            self._db.execute(
                "DELETE FROM token_vectors WHERE row_id IN (SELECT row_id FROM spans "
                f"WHERE collection = ? AND doc_id IN ({marks}))",
                [collection, *chunk],
            )
            self._db.execute(f"DELETE FROM spans WHERE collection = ? AND doc_id IN ({marks})", [collection, *chunk])
            existed += self._db.execute(
                f"DELETE FROM documents WHERE collection = ? AND id IN ({marks})", [collection, *chunk]
            ).rowcount
        return existed

    def _bump(self, collection: str) -> None:
        self._db.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?", (collection,))

    def replace_documents(self, collection: str, items: list[tuple[Document, list[Span], np.ndarray]]) -> None:
        _, dim, _ = self._require(collection)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._delete_in_tx(collection, [doc.id for doc, _, _ in items])
                for doc, spans, vectors in items:
                    if vectors.shape != (len(spans), dim):
                        raise ValueError(
                            f"document {doc.id!r}: {vectors.shape} vectors for {len(spans)} spans of dim {dim}"
                        )
                    self._db.execute(
                        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            collection,
                            doc.id,
                            doc.title,
                            doc.source,
                            doc.content_hash,
                            doc.text,
                            json.dumps(doc.metadata),
                        ),
                    )
                    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                    self._db.executemany(
                        f"INSERT INTO spans (collection, {SPAN_COLUMNS}, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                collection,
                                s.id,
                                s.doc_id,
                                s.parent_id,
                                s.granularity,
                                s.start,
                                s.end,
                                s.text,
                                json.dumps(s.heading_path),
                                s.n_tokens,
                                s.header,
                                s.order,
                                vectors[i].tobytes(),
                            )
                            for i, s in enumerate(spans)
                        ],
                    )
                self._bump(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete_documents(self, collection: str, doc_ids: list[str]) -> int:
        self._require(collection)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                existed = self._delete_in_tx(collection, doc_ids)
                if existed:
                    self._bump(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return existed

    def drop_collection(self, name: str) -> None:
        self._require(name)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM token_vectors WHERE row_id IN (SELECT row_id FROM spans WHERE collection = ?)", (name,)
                )
                for table in ("spans", "documents", "sources", "tombstones"):
                    self._db.execute(f"DELETE FROM {table} WHERE collection = ?", (name,))
                self._db.execute("DELETE FROM collections WHERE name = ?", (name,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._epochs[name] = self._epochs.get(name, 0) + 1
            self._loaded.pop(name, None)
            self._merged.pop(name, None)
            self._token_matrices.pop(name, None)
            self._token_deltas.pop(name, None)
            # derived files only: the rows above are gone whatever happens to them
            shutil.rmtree(self._index_dir(name), ignore_errors=True)

    def get_source(self, collection: str, path: str) -> SourceRecord | None:
        rows = self._query(
            "SELECT path, content_hash, doc_ids FROM sources WHERE collection = ? AND path = ?",
            (collection, path),
        )
        return SourceRecord(rows[0][0], rows[0][1], json.loads(rows[0][2])) if rows else None

    def put_source(self, collection: str, record: SourceRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?)",
                (collection, record.path, record.content_hash, json.dumps(record.doc_ids)),
            )

    def delete_source(self, collection: str, path: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sources WHERE collection = ? AND path = ?", (collection, path))

    def list_sources(self, collection: str, under: str | None = None) -> list[SourceRecord]:
        rows = self._query("SELECT path, content_hash, doc_ids FROM sources WHERE collection = ?", (collection,))
        prefix = None if under is None else under.rstrip(os.sep) + os.sep
        return [SourceRecord(p, h, json.loads(d)) for p, h, d in rows if prefix is None or p.startswith(prefix)]

    # -- reads -------------------------------------------------------------------------------
    def get_document(self, collection: str, doc_id: str) -> Document | None:
        rows = self._query(
            "SELECT id, title, source, content_hash, text, metadata FROM documents WHERE collection = ? AND id = ?",
            (collection, doc_id),
        )
        if not rows:
            return None
        r = rows[0]
        return Document(r[0], collection, r[1], r[2], r[3], r[4], json.loads(r[5]))

    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        if doc_ids is None:
            return dict(
                self._query("SELECT id, content_hash FROM documents WHERE collection = ? ORDER BY id", (collection,))
            )
        out: dict[str, str] = {}
        for chunk in _chunks(doc_ids):
            marks = ",".join("?" * len(chunk))
            out.update(
                self._query(
                    f"SELECT id, content_hash FROM documents WHERE collection = ? AND id IN ({marks})",
                    [collection, *chunk],
                )
            )
        return out

    def count_spans(self, collection: str, doc_id: str) -> int:
        return self._query("SELECT COUNT(*) FROM spans WHERE collection = ? AND doc_id = ?", (collection, doc_id))[0][0]

    def get_spans(self, collection: str, span_ids: list[str]) -> list[Span]:
        found: dict[str, Span] = {}
        for chunk in _chunks(span_ids):
            marks = ",".join("?" * len(chunk))
            for row in self._query(
                f"SELECT {SPAN_COLUMNS} FROM spans WHERE collection = ? AND id IN ({marks})",
                [collection, *chunk],
            ):
                found[row[0]] = _row_to_span(row)
        return [found[i] for i in span_ids if i in found]

    def document_spans(self, collection: str, doc_id: str) -> list[Span]:
        rows = self._query(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE collection = ? AND doc_id = ? ORDER BY ord",
            (collection, doc_id),
        )
        return [_row_to_span(r) for r in rows]

    def children(self, collection: str, span_id: str) -> list[Span]:
        rows = self._query(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE collection = ? AND parent_id = ? ORDER BY ord",
            (collection, span_id),
        )
        return [_row_to_span(r) for r in rows]

    def descendants(self, collection: str, span_id: str, granularity: Granularity) -> list[Span]:
        found = self.get_spans(collection, [span_id])
        if not found:
            return []
        (parent,) = found
        return self.spans_within(collection, parent, [granularity])

    def spans_within(self, collection: str, span: Span, granularities: list[Granularity]) -> list[Span]:
        marks = ",".join("?" * len(granularities))
        rows = self._query(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE collection = ? AND doc_id = ? "
            f'AND granularity IN ({marks}) AND start >= ? AND "end" <= ? ORDER BY start, ord',
            (collection, span.doc_id, *granularities, span.start, span.end),
        )
        return [_row_to_span(r) for r in rows]

    def _vector_rows(self, collection: str, span_ids: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(dict.fromkeys(span_ids))):
            marks = ",".join("?" * len(chunk))
            for sid, blob in self._query(
                f"SELECT id, vector FROM spans WHERE collection = ? AND id IN ({marks})",
                [collection, *chunk],
            ):
                found[sid] = np.frombuffer(blob, dtype=np.float32)
        return found

    def get_vectors(self, collection: str, span_ids: list[str]) -> np.ndarray:
        _, dim, _ = self._require(collection)
        found = self._vector_rows(collection, span_ids)
        missing = [s for s in span_ids if s not in found]
        if missing:
            raise KeyError(f"no vectors for spans {missing[:3]}")
        return np.stack([found[s] for s in span_ids]) if span_ids else np.zeros((0, dim), np.float32)

    def find_vectors(self, collection: str, span_ids: list[str]) -> dict[str, np.ndarray]:
        self._require(collection)
        found = self._vector_rows(collection, span_ids)
        return {s: found[s] for s in dict.fromkeys(span_ids) if s in found}

    # -- token vectors (late interaction) -------------------------------------------------------
    def spans_missing_token_vectors(self, collection: str, granularities: list[Granularity]) -> list[Span]:
        self._require(collection)
        if not granularities:
            return []
        marks = ",".join("?" * len(granularities))
        rows = self._query(
            f"SELECT {', '.join('s.' + c.strip() for c in SPAN_COLUMNS.split(','))} FROM spans s "
            "LEFT JOIN token_vectors t ON t.row_id = s.row_id "
            f"WHERE s.collection = ? AND s.granularity IN ({marks}) AND t.row_id IS NULL "
            "ORDER BY s.row_id",
            [collection, *granularities],
        )
        return [_row_to_span(r) for r in rows]

    def put_token_vectors(self, collection: str, items: list[tuple[str, EncodedTokens]], model: str) -> int:
        self._require(collection)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row_of = self._row_ids(collection, [span_id for span_id, _ in items])
                written = 0
                for span_id, encoded in items:
                    if span_id not in row_of:
                        continue  # the span was replaced or deleted meanwhile
                    self._db.execute(
                        "INSERT OR REPLACE INTO token_vectors VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            row_of[span_id],
                            encoded.codec,
                            encoded.dim,
                            len(encoded),
                            encoded.data.tobytes(),
                            None if encoded.scales is None else encoded.scales.tobytes(),
                        ),
                    )
                    written += 1
                self._db.execute(
                    "UPDATE collections SET token_generation = token_generation + 1, token_model = ? WHERE name = ?",
                    (model, collection),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            matrix = self._token_matrices.get(collection)
            if written and matrix is not None and matrix.max_row is not None:
                if min(row_of[span_id] for span_id, _ in items if span_id in row_of) <= matrix.max_row:
                    # tokens for spans the matrix already covers (a backfill): the writes-since
                    # view would miss them, so the matrix is rebuilt
                    self._forget_token_matrix(collection)
        return written

    def _forget_token_matrix(self, collection: str) -> None:
        """Drop the token matrix (in memory and on disk) after a change a writes-since view
        cannot follow: tokens of older spans written or removed."""
        with self._lock:
            self._token_matrices.pop(collection, None)
            self._token_deltas.pop(collection, None)
            with self._save_lock:
                shutil.rmtree(self._tokens_dir(collection), ignore_errors=True)

    def token_model(self, collection: str) -> str | None:
        self._require(collection)
        return self._query("SELECT token_model FROM collections WHERE name = ?", (collection,))[0][0]

    def delete_token_vectors(self, collection: str) -> int:
        self._require(collection)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute(
                    "DELETE FROM token_vectors WHERE row_id IN (SELECT row_id FROM spans WHERE collection = ?)",
                    (collection,),
                ).rowcount
                self._db.execute(
                    "UPDATE collections SET token_generation = token_generation + 1, token_model = NULL WHERE name = ?",
                    (collection,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._forget_token_matrix(collection)
        return removed

    def _token_rows(self, collection: str, column: str, keys: list[str]):
        """(doc_id, span_id, EncodedTokens) of spans whose ``column`` (id or doc_id) is in keys."""
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for doc_id, span_id, codec, dim, n, data, scales in self._query(
                "SELECT s.doc_id, s.id, t.codec, t.dim, t.n, t.data, t.scales FROM spans s "
                "JOIN token_vectors t ON t.row_id = s.row_id "
                f"WHERE s.collection = ? AND s.{column} IN ({marks}) ORDER BY s.row_id",
                [collection, *chunk],
            ):
                yield doc_id, span_id, encoded_from_bytes(codec, dim, n, data, scales)

    def get_token_vectors(self, collection: str, span_ids: list[str]) -> dict[str, EncodedTokens]:
        return {span_id: encoded for _, span_id, encoded in self._token_rows(collection, "id", span_ids)}

    def document_token_vectors(self, collection: str, doc_ids: list[str]) -> dict[str, list[tuple[str, EncodedTokens]]]:
        out: dict[str, list[tuple[str, EncodedTokens]]] = {}
        for doc_id, span_id, encoded in self._token_rows(collection, "doc_id", doc_ids):
            out.setdefault(doc_id, []).append((span_id, encoded))
        return out

    def token_codecs(self, collection: str) -> set[str]:
        rows = self._query(
            "SELECT DISTINCT t.codec FROM token_vectors t JOIN spans s ON s.row_id = t.row_id WHERE s.collection = ?",
            (collection,),
        )
        return {codec for (codec,) in rows}

    def token_vector_stats(self, collection: str) -> dict[str, dict[str, int]]:
        rows = self._query(
            "SELECT t.codec, SUM(t.n), SUM(LENGTH(t.data) + COALESCE(LENGTH(t.scales), 0)), COUNT(*) "
            "FROM token_vectors t JOIN spans s ON s.row_id = t.row_id WHERE s.collection = ? GROUP BY t.codec",
            (collection,),
        )
        return {codec: {"tokens": n, "bytes": b, "spans": c} for codec, n, b, c in rows}

    def _token_matrix(self, collection: str, db: sqlite3.Connection | None = None) -> TokenMatrix:
        """The current token matrix, loaded or built. ``db``: a connection of its own (a
        background build reads SQLite there, without holding this store's lock). One build
        per collection at a time: a query that finds none waits for the background build of the same
        stamp, then loads it, instead of building and swapping in the same folder beside it."""
        build_lock = self._token_build_locks.setdefault(collection, threading.Lock())  # atomic in CPython
        with build_lock, self._snapshot(db) as read:  # the rows read below are exactly the stamp's
            found = read("SELECT generation, token_generation FROM collections WHERE name = ?", (collection,))
            if not found:
                raise CollectionNotFound(collection)
            stamp = tuple(found[0])
            matrix = self._token_matrices.get(collection)
            if matrix is not None and matrix.stamp == stamp:
                return matrix
            directory = self._tokens_dir(collection)
            matrix = TokenMatrix.load(directory, stamp)
            if matrix is None:
                rows = read(
                    "SELECT s.row_id, s.id, s.doc_id, t.codec, t.dim, t.n, t.data, t.scales FROM spans s "
                    "JOIN token_vectors t ON t.row_id = s.row_id WHERE s.collection = ? "
                    "ORDER BY s.row_id",
                    (collection,),
                )
                matrix = TokenMatrix.build(
                    ((r[1], r[2], encoded_from_bytes(*r[3:])) for r in rows), stamp, (r[0] for r in rows)
                )
                with self._save_lock:
                    matrix.save(directory)
                matrix = TokenMatrix.load(directory, stamp) or matrix
        with self._lock:
            current = self._token_matrices.get(collection)
            if current is None or current.stamp < matrix.stamp:
                self._token_matrices[collection] = matrix
        return matrix

    def document_tokens(self, collection: str, doc_ids: list[str]) -> PackedTokens:
        """From the token matrix when it is current; after a write, until the next merge
        rebuilds the matrix in the background, from the matrix and the token rows written
        since (``TokenDelta.pack``); with no matrix to start from, from these documents' rows
        in SQLite (and a first matrix is built in the background)."""
        view = self._token_view(collection)
        if view is not None:
            return view.pack(doc_ids)
        with self._read_transaction():
            stamp = self._token_stamp(collection)
            rows = [
                (span_id, doc_id, encoded)
                for doc_id, span_id, encoded in self._token_rows(collection, "doc_id", doc_ids)
            ]
        if collection not in self._token_matrices:
            self._background.submit(("tokens", collection), lambda: self._token_matrix(collection, self._connect()))
        return TokenMatrix.build(rows, stamp).pack(doc_ids)

    def _token_stamp(self, collection: str) -> tuple[int, int]:
        rows = self._query("SELECT generation, token_generation FROM collections WHERE name = ?", (collection,))
        if not rows:
            raise CollectionNotFound(collection)
        return rows[0][0], rows[0][1]

    def index_footprint(self, collection: str) -> dict[str, int]:
        self.refresh(collection)
        if self._has_token_vectors(collection):
            self._token_matrix(collection)  # a report waits for the files it measures
        directory = self._index_dir(collection)

        def size(path: Path) -> int:
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            return sum(p.stat().st_size for p in files)

        dense = sum(size(p) for p in directory.glob("dense*.faiss"))
        footprint = {"dense": dense, "bm25": size(directory / "bm25")}
        tokens = self._tokens_dir(collection)
        if tokens.exists():
            signs = sum(p.stat().st_size for p in tokens.glob("signs.*.faissbin"))
            footprint["tokens"] = size(tokens) - signs
            if signs:
                footprint["token_index"] = signs  # XTR's binary index, built on first use
        return footprint

    def token_search(self, collection: str, query_tokens: np.ndarray, k: int) -> TokenHits:
        """XTR's token retrieval over the token matrix; after a write, over the matrix and the
        token rows written since (``TokenDelta``), so no search waits for the matrix to be
        rebuilt (each merge rebuilds it). Built here only when there is none to start from."""
        query = np.asarray(query_tokens, np.float32)
        view = self._token_view(collection)
        if view is None:
            return self._token_matrix(collection).search(query, k)
        return view.search(query, k)

    def _token_view(self, collection: str) -> TokenMatrix | TokenDelta | None:
        """The current matrix, or a matrix plus the writes since; None when neither can be had
        without a build (no matrix yet, one saved without its span rows, or one older than
        the tombstones kept)."""
        with self._read_transaction():
            stamp = self._token_stamp(collection)
            matrix = self._token_matrices.get(collection)
            if matrix is None:
                matrix = TokenMatrix.load(self._tokens_dir(collection), None)
                if matrix is None:
                    return None
                self._token_matrices[collection] = matrix
            if matrix.stamp == stamp:
                return matrix
            (floor,) = self._query("SELECT tombstone_floor FROM collections WHERE name = ?", (collection,))[0]
            if matrix.max_row is None or floor > matrix.stamp[0]:
                return None
            delta = self._token_deltas.get(collection)
            if delta is None or delta.base is not matrix:
                delta = TokenDelta.over(matrix)
            if delta.stamp != stamp:
                new_rows = [
                    (row, span_id, doc_id, encoded_from_bytes(*codes))
                    for row, span_id, doc_id, *codes in self._query(
                        "SELECT s.row_id, s.id, s.doc_id, t.codec, t.dim, t.n, t.data, t.scales FROM spans s "
                        "JOIN token_vectors t ON t.row_id = s.row_id WHERE +s.collection = ? AND s.row_id > ? "
                        "ORDER BY s.row_id",
                        (collection, delta.last_row),
                    )
                ]
                dead = self._query(
                    "SELECT row_id FROM tombstones WHERE collection = ? AND generation > ?",
                    (collection, matrix.stamp[0]),
                )
                delta = delta.advanced(stamp, new_rows, (r for (r,) in dead))
                self._token_deltas[collection] = delta
            return delta

    def _row_ids(self, collection: str, span_ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(span_ids):
            marks = ",".join("?" * len(chunk))
            out.update(
                self._db.execute(
                    f"SELECT id, row_id FROM spans WHERE collection = ? AND id IN ({marks})",
                    [collection, *chunk],
                ).fetchall()
            )
        return out

    # -- search indexes -----------------------------------------------------------------------
    def refresh(self, collection: str) -> None:
        """Bring the search segments up to the committed generation: index the rows written
        since (a delta), read the tombstones. The token matrix is built in the background
        when there is none, and rebuilt by each merge; in between, MaxSim reads the token
        vectors of the documents it scores from SQLite."""
        self._indexes(collection)
        if collection not in self._token_matrices and self._has_token_vectors(collection):
            self._background.submit(("tokens", collection), lambda: self._token_matrix(collection, self._connect()))

    def _has_token_vectors(self, collection: str) -> bool:
        return bool(
            self._query(
                "SELECT 1 FROM token_vectors t JOIN spans s ON s.row_id = t.row_id WHERE s.collection = ? LIMIT 1",
                (collection,),
            )
        )

    def settle(self, collection: str | None = None) -> None:
        """Wait for background merges and token-matrix builds (tests, benchmarks, shutdown)."""
        self._background.wait()

    def merge(self, collection: str) -> None:
        """Merge the deltas and tombstones of ``collection`` into a new base now, in the
        caller's thread (what the background merge does when the policy asks for it)."""
        self._merge(collection)

    def freshness(self, collection: str) -> dict:
        """Segments of ``collection`` as this process searches them: the base's spans and
        generation, pending deltas and their spans, tombstones, seconds since the base was
        built, and whether a merge is running (README: Live updates)."""
        with self._lock:
            current = self._loaded.get(collection)
            merging = self._background.running(("merge", collection))
            if current is not None:
                return current.describe(merging)
        meta = self._saved_meta(collection)
        if meta is None:
            return {"segments": 0, "merging": merging}
        delta_spans, tombstones = self._query(
            "SELECT (SELECT COUNT(*) FROM spans WHERE +collection = ? AND row_id > ?), "
            "(SELECT COUNT(*) FROM tombstones WHERE collection = ? AND generation > ?)",
            (collection, meta["max_row"], collection, meta["generation"]),
        )[0]
        return {
            "segments": 1 + bool(delta_spans),
            "base_generation": meta["generation"],
            "pending_deltas": int(bool(delta_spans)),
            "delta_spans": delta_spans,
            "tombstones": tombstones,
            "last_merge_age_s": round(max(time.time() - meta["built_at"], 0.0), 1),
            "merging": merging,
        }

    def _indexes(self, collection: str) -> SegmentSet:
        with self._read_transaction():
            # one committed state for the generation, the rows and the tombstones read below
            _, dim, generation = self._require(collection)
            current = self._loaded.get(collection)
            merged = self._merged.get(collection)
            if (
                current is not None
                and current.generation == generation
                and (merged is None or merged is current.base or merged.generation < current.base.generation)
            ):
                return current
            floor, newest_base = self._query(
                "SELECT tombstone_floor, base_generation FROM collections WHERE name = ?", (collection,)
            )[0]
            base = self._usable_base(collection, current, floor, generation)
            if base is None:
                # a saved base of another dense kind is searched until its replacement is built
                base = self._load_from_disk(collection, floor, generation, any_kind=True) or self._rebuild(
                    collection, dim, generation, self._db
                )
                current = None
                gc.collect()
            if current is not None and current.base is base:
                since_row, since_generation = current.max_row, current.tombstone_generation
                deltas, tombstones = current.deltas, set(current.tombstones)
            else:
                since_row, since_generation = base.max_row, base.generation
                deltas, tombstones = (), set()
            delta = self._delta(collection, dim, since_row, base)
            if delta is not None:
                deltas = (*deltas, delta)
            tombstones.update(
                r
                for (r,) in self._query(
                    "SELECT row_id FROM tombstones WHERE collection = ? AND generation > ?",
                    (collection, since_generation),
                )
            )
            segments = SegmentSet(generation, base, deltas, frozenset(tombstones), tombstone_generation=generation)
            self._loaded[collection] = segments
            if current is None or current.base is not base:
                # A base's span directory is hundreds of thousands of long-lived objects;
                # frozen, they are no longer rescanned by every full garbage collection a
                # query triggers (measured: ~220 ms pauses in p95 latency on SciFact).
                gc.freeze()
        self._plan_background_work(collection, segments, newest_base)
        return segments

    def _usable_base(
        self, collection: str, current: SegmentSet | None, floor: int, generation: int
    ) -> BaseSegment | None:
        """The newest base in memory that the tombstones still cover (a base older than
        the floor misses deletes whose tombstones a merge has removed)."""
        candidates = [b for b in (self._merged.get(collection), current.base if current else None) if b is not None]
        usable = [b for b in candidates if floor <= b.generation <= generation]
        return max(usable, key=lambda b: b.generation) if usable else None

    def _delta(self, collection: str, dim: int, since_row: int, base: BaseSegment) -> DeltaSegment | None:
        rows = self._query(
            "SELECT row_id, id, granularity, header, text, vector FROM spans "
            "WHERE +collection = ? AND row_id > ? ORDER BY row_id",  # '+': by row id, not a scan of the collection
            (collection, since_row),
        )
        if not rows:
            return None
        return DeltaSegment.from_texts(
            np.array([r[0] for r in rows], dtype=np.int64),
            [r[1] for r in rows],
            [r[2] for r in rows],
            np.frombuffer(b"".join(r[5] for r in rows), dtype=np.float32).reshape(-1, dim),
            [context_text(r[4], r[3]) for r in rows],
            base.stats,
        )

    def _plan_background_work(self, collection: str, segments: SegmentSet, newest_base: int) -> None:
        merged = self._merged.get(collection)
        if segments.base.dense_signature != self.dense_spec.signature:
            # SPANRAG_DENSE_INDEX changed: build the new kind in the background
            self._background.submit(("merge", collection), lambda: self._merge(collection))
        elif newest_base > segments.base.generation and (merged is None or merged.generation < newest_base):
            # another process merged: take its base from disk, off the query path
            self._background.submit(("merge", collection), lambda: self._adopt_saved_base(collection))
        elif self._wants_merge(segments):
            self._background.submit(("merge", collection), lambda: self._merge(collection, only_if_wanted=True))
        elif self.merge_policy.compaction([len(d) for d in segments.deltas]):
            self._background.submit(("merge", collection), lambda: self._compact(collection))

    def _wants_merge(self, segments: SegmentSet) -> bool:
        return self.merge_policy.wants_merge(
            segments.base.n_rows, segments.delta_rows, len(segments.tombstones), len(segments.deltas)
        )

    def _connect(self) -> sqlite3.Connection:
        """A connection of its own, for a long read in the background."""
        db = sqlite3.connect(self.data_dir / "spanrag.sqlite3", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextmanager
    def _snapshot(self, db: sqlite3.Connection | None):
        """A ``read(sql, params)`` that sees one committed state: this store's connection
        under its lock, or ``db`` (closed after) in a read transaction of its own."""
        if db is None:
            with self._read_transaction():
                yield self._query
            return
        db.execute("BEGIN")
        try:
            yield lambda sql, params=(): db.execute(sql, params).fetchall()
        finally:
            db.execute("COMMIT")
            db.close()

    def _merge(self, collection: str, only_if_wanted: bool = False) -> None:
        """Build a new base from the committed state, save and swap it in, then drop the
        tombstones no base in use needs (those before the previous base). With
        ``only_if_wanted``, nothing when the policy no longer asks for it (a merge queued
        behind another one that already took its writes in)."""
        if only_if_wanted:
            with self._lock:
                current = self._loaded.get(collection)
            if current is None or not self._wants_merge(current):
                return
        epoch = self._epochs.get(collection, 0)
        if self.merge_in_process:
            base = self._build_base(collection)
            if base is None or self._epochs.get(collection, 0) != epoch:
                return  # gone, or dropped meanwhile
            self._save(collection, base)
        else:
            from indexing.store.merge_worker import build_in_child

            built = build_in_child(self.data_dir, collection, self.dense_spec.signature)
            if built is None or self._epochs.get(collection, 0) != epoch:
                return
            with self._lock:
                found = self._query("SELECT tombstone_floor, generation FROM collections WHERE name = ?", (collection,))
            if not found:
                return
            base = self._load_from_disk(collection, found[0][0], found[0][1])
            if base is None or base.generation != built["generation"]:
                return  # another process saved a base meanwhile: the next search adopts it
        with self._lock:
            if self._epochs.get(collection, 0) != epoch:
                shutil.rmtree(self._index_dir(collection), ignore_errors=True)
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                previous = self._db.execute(
                    "SELECT base_generation FROM collections WHERE name = ?", (collection,)
                ).fetchone()
                if previous is not None and previous[0] < base.generation:
                    # a process may still search the previous base: keep the tombstones since it
                    self._db.execute(
                        "DELETE FROM tombstones WHERE collection = ? AND generation <= ?", (collection, previous[0])
                    )
                    self._db.execute(
                        "UPDATE collections SET base_generation = ?, tombstone_floor = MAX(tombstone_floor, ?) "
                        "WHERE name = ?",
                        (base.generation, previous[0], collection),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._merged[collection] = base
        self._indexes(collection)  # the deltas since the new base, built here and not by a query
        if not self._has_token_vectors(collection):
            return
        if self.merge_in_process:
            self._token_matrix(collection, self._connect())
            return
        matrix = TokenMatrix.load(self._tokens_dir(collection), None)
        with self._lock:  # the worker's matrix: current, or current up to the writes since
            held = self._token_matrices.get(collection)
            if matrix is not None and (held is None or held.stamp < matrix.stamp):
                self._token_matrices[collection] = matrix

    def _build_base(self, collection: str) -> BaseSegment | None:
        """A base of the committed state, read through a connection of its own (None: the
        collection is gone)."""
        db = self._connect()
        db.execute("BEGIN")
        try:
            found = db.execute("SELECT dim, generation FROM collections WHERE name = ?", (collection,)).fetchall()
            if not found:
                return None
            dim, generation = found[0]
            return self._rebuild(collection, dim, generation, db, save=False)
        finally:
            db.execute("COMMIT")
            db.close()

    def build_and_save_base(self, collection: str) -> dict | None:
        """What the merge worker does: build a base of the committed state and save it, and
        the token matrix; ``{"generation", "max_row"}`` of the base, or None."""
        base = self._build_base(collection)
        if base is None:
            return None
        self._save(collection, base)
        if self._has_token_vectors(collection):
            self._token_matrix(collection, self._connect())
        return {"generation": base.generation, "max_row": base.max_row}

    def _compact(self, collection: str) -> None:
        """Replace the deltas the merge policy picks by one (their rows and words are in
        memory: nothing is read or stemmed again)."""
        with self._lock:
            segments = self._loaded.get(collection)
        if segments is None:
            return
        picked = [segments.deltas[i] for i in self.merge_policy.compaction([len(d) for d in segments.deltas])]
        if len(picked) < 2:
            return
        compacted = DeltaSegment.compact(picked, segments.base.stats)
        with self._lock:
            current = self._loaded.get(collection)
            if current is None or current.base is not segments.base:
                return
            kept = [d for d in current.deltas if not any(d is p for p in picked)]
            if len(kept) != len(current.deltas) - len(picked):
                return  # the deltas changed meanwhile
            self._loaded[collection] = SegmentSet(
                current.generation,
                current.base,
                (*kept, compacted),
                current.tombstones,
                current.max_row,
                current.tombstone_generation,
            )

    def _adopt_saved_base(self, collection: str) -> None:
        with self._lock:
            floor, generation = self._query(
                "SELECT tombstone_floor, generation FROM collections WHERE name = ?", (collection,)
            )[0]
        base = self._load_from_disk(collection, floor, generation)
        if base is not None:
            with self._lock:
                known = self._merged.get(collection)
                if known is None or known.generation < base.generation:
                    self._merged[collection] = base
            self._indexes(collection)

    def _saved_meta(self, collection: str) -> dict | None:
        directory = readable_version(self._index_dir(collection))
        if directory is None:
            return None
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if not {"generation", "max_row", "built_at"} <= set(meta):
            return None  # saved before segments: rebuilt once
        return meta | {"directory": directory}

    @staticmethod
    def _saved_directory(
        directory: Path, bm25: dict[str, Bm25Index]
    ) -> tuple[dict[int, str] | None, dict[str, np.ndarray]]:
        """The span directory saved with a base (rows by granularity are the BM25 indexes'
        row ids). It may name rows deleted since the save: those are tombstones, never
        returned by a search, so never looked up."""
        try:
            rows = np.load(directory / "span_rows.npy")
            span_ids = json.loads((directory / "span_ids.json").read_text())
        except (OSError, ValueError):
            return None, {}
        if len(rows) != len(span_ids):
            return None, {}
        return dict(zip(rows.tolist(), span_ids, strict=True)), {g: bm25[g].row_ids for g in GRANULARITIES}

    def _span_directory(self, read, collection: str, max_row: int) -> tuple[dict[int, str], dict[str, np.ndarray]]:
        rows = read(
            "SELECT row_id, id, granularity FROM spans WHERE collection = ? AND row_id <= ? ORDER BY row_id",
            (collection, max_row),
        )
        return _directory(rows)

    def _load_from_disk(
        self, collection: str, floor: int, generation: int, any_kind: bool = False
    ) -> BaseSegment | None:
        """The saved base, if it was built as this store's spec says, at a generation the
        tombstones still cover. Its span directory holds the rows that still exist: a
        deleted one is a tombstone, dropped before its id is looked up."""
        meta = self._saved_meta(collection)
        if meta is None or not floor <= meta["generation"] <= generation:
            return None
        spec = self.dense_spec
        if meta.get("dense_codec") != spec.signature:
            if not any_kind:
                return None
            try:
                spec = DenseIndexSpec.from_signature(meta.get("dense_codec", ""), self.dense_spec.device)
            except ValueError:
                return None
        directory = meta["directory"]
        try:
            dense = DenseIndex.load(spec, directory)
            if dense is None:
                return None
            bm25: dict[str, Bm25Index] = {g: Bm25Index.load(directory / "bm25" / g) for g in GRANULARITIES}
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        span_id_of_row, by_granularity = self._saved_directory(directory, bm25)
        if span_id_of_row is None:  # saved before the directory was kept: from the span rows
            with self._read_transaction():
                span_id_of_row, by_granularity = self._span_directory(self._query, collection, meta["max_row"])
        return BaseSegment(
            meta["generation"],
            meta["max_row"],
            dense,
            span_id_of_row,
            by_granularity,
            bm25,
            meta["built_at"],
            dense_signature=spec.signature,
        )

    def _rebuild(
        self, collection: str, dim: int, generation: int, db: sqlite3.Connection, save: bool = True
    ) -> BaseSegment:
        """A base over every span row of the committed state ``db`` reads (in a transaction)."""
        built_at = time.time()
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        rows = db.execute(
            "SELECT row_id, granularity, header, text, vector, id FROM spans WHERE collection = ? ORDER BY row_id",
            (collection,),
        ).fetchall()
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(-1, dim)
        seconds["read"] = time.perf_counter() - started
        started = time.perf_counter()
        row_ids = np.array([r[0] for r in rows], dtype=np.int64)
        dense = DenseIndex.build(self.dense_spec, dim, row_ids, [r[1] for r in rows], vectors)
        del vectors
        seconds["dense"] = time.perf_counter() - started
        started = time.perf_counter()
        span_id_of_row, by_granularity = _directory([(r[0], r[5], r[1]) for r in rows])
        text_of = {r[0]: context_text(r[3], r[2]) for r in rows}
        bm25 = {g: Bm25Index.build(ids, [text_of[i] for i in ids.tolist()]) for g, ids in by_granularity.items()}
        seconds["bm25"] = time.perf_counter() - started
        max_row = int(row_ids[-1]) if len(row_ids) else 0
        del rows
        base = BaseSegment(
            generation,
            max_row,
            dense,
            span_id_of_row,
            by_granularity,
            bm25,
            built_at,
            seconds,
            dense_signature=self.dense_spec.signature,
        )
        if save:
            started = time.perf_counter()
            self._save(collection, base)
            seconds["save"] = time.perf_counter() - started
        return base

    def index_build_seconds(self, collection: str) -> dict[str, float]:
        """Seconds of each part of the build of the base ``collection`` searches, when this
        process built it (``read`` from SQLite, ``dense``, ``bm25``, ``save``); {} when loaded
        from disk."""
        return dict(self._indexes(collection).base.build_seconds)

    def _save(self, collection: str, base: BaseSegment) -> None:
        meta = {
            "generation": base.generation,
            "max_row": base.max_row,
            "built_at": base.built_at,
            "dense_codec": base.dense_signature,
        }
        with self._save_lock:  # a background merge and a first build may both save
            directory = self._index_dir(collection)
            staging = staging_for(directory)
            base.dense.save(staging)
            for g, index in base.bm25.items():
                index.save(staging / "bm25" / g)
            # the span directory, so that loading a base reads no span rows under the lock
            rows = np.fromiter(base.span_id_of_row, dtype=np.int64, count=base.n_rows)
            np.save(staging / "span_rows.npy", rows)
            (staging / "span_ids.json").write_text(json.dumps(list(base.span_id_of_row.values())))
            (staging / "meta.json").write_text(json.dumps(meta))
            swap_in(staging, directory)

    def dense_search(
        self,
        collection: str,
        query: np.ndarray,
        k: int,
        granularities: list[Granularity] | None = None,
    ) -> list[ScoredSpanId]:
        return self.dense_search_many(collection, np.asarray(query).reshape(1, -1), k, granularities)[0]

    def dense_search_many(
        self,
        collection: str,
        queries: np.ndarray,
        k: int,
        granularities: list[Granularity] | None = None,
    ) -> list[list[ScoredSpanId]]:
        segments = self._indexes(collection)
        found = segments.dense_search_many(queries, k, granularities)
        return [[ScoredSpanId(segments.span_id(r), s) for r, s in hits] for hits in found]

    def lexical_search(self, collection: str, query: str, k: int, granularity: Granularity) -> list[ScoredSpanId]:
        segments = self._indexes(collection)
        return [ScoredSpanId(segments.span_id(r), s) for r, s in segments.lexical_search(query, k, granularity)]

    def close(self) -> None:
        self._background.close()
        with self._lock:
            self._db.close()
