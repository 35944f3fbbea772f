"""Search segments of the embedded store: a large **base** built from one committed state
of SQLite, small **deltas** holding the spans written since, and **tombstones** for the
base's (and deltas') spans deleted or replaced since. A search asks every segment and
drops tombstoned rows, so a write is searchable as soon as its delta is built (a few
rows), and no query waits for the base to be rebuilt: that **merge** runs in the
background and swaps in whole (``SqliteFaissStore``).

Span row ids grow with every insert (SQLite ``AUTOINCREMENT``), so the rows written since
a base was built are exactly those above its ``max_row``, and a replaced span is a new
row (its old row is a tombstone).

Dense scores are exact: deltas are flat fp16 indexes like the flat base, so the hits of
base + deltas are those of one index over the whole collection. BM25 scores of a delta's
spans use the **base's** statistics (document count, document frequencies, average
length), as the base's own scores do; they drift from a full rebuild's by the share of the
collection written since the last merge, which the merge policy bounds
(``MergePolicy``; ``tests/test_segments.py`` measures the drift).

When to merge is :class:`~indexing.store.merge_policy.MergePolicy`'s call.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from indexing.spans import GRANULARITIES, Granularity
from indexing.store.bm25 import Bm25Index, Bm25Stats, best_k, tokenize_words
from indexing.store.dense_index import DenseIndex, DenseIndexSpec

FLAT = DenseIndexSpec("flat")


@dataclass
class DeltaBm25:
    """BM25 over a delta's spans of one granularity, scored with a base's statistics, so
    its scores and the base's are on one scale.

        >>> base = Bm25Index.build(np.array([1, 2]), ["red apples", "green pears"])
        >>> delta = DeltaBm25.build(np.array([3]), [["red", "pear"]], base.stats)
        >>> delta.search(["red"], 5)[0][0]
        3
    """

    row_ids: np.ndarray
    stats: Bm25Stats
    _columns: dict[str, int] = field(default_factory=dict, repr=False)
    _matrix: object = field(default=None, repr=False)  # scipy CSC [n_docs, n_terms] of scores

    @classmethod
    def build(cls, row_ids: np.ndarray, words: list[list[str]], stats: Bm25Stats) -> DeltaBm25:
        import scipy.sparse

        delta = cls(np.asarray(row_ids, dtype=np.int64), stats)
        lengths = np.array([len(w) for w in words], dtype=np.float64)
        avgdl = stats.avgdl if stats.n_docs else float(lengths.mean()) if len(lengths) else 1.0
        rows, cols, tfs, idfs = [], [], [], []
        norms = stats.k1 * (1 - stats.b + stats.b * lengths / max(avgdl, 1e-9))
        idf_of: dict[str, float] = {}
        for d, doc in enumerate(words):
            for word, tf in Counter(doc).items():
                col = delta._columns.get(word)
                if col is None:
                    col = delta._columns[word] = len(delta._columns)
                    idf_of[word] = stats.idf(word)
                rows.append(d)
                cols.append(col)
                tfs.append(tf)
                idfs.append(idf_of[word])
        tf = np.asarray(tfs, dtype=np.float64)
        scores = np.asarray(idfs) * tf / (tf + norms[np.asarray(rows, dtype=np.int64)]) if rows else np.zeros(0)
        delta._matrix = scipy.sparse.csc_matrix(
            (np.asarray(scores, dtype=np.float32), (rows, cols)), shape=(len(words), max(len(delta._columns), 1))
        )
        return delta

    def search(self, words: list[str], k: int, excluded: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Like :meth:`Bm25Index.search_words`: the sum of each query word's scores (a word
        asked twice counts twice), best first, never a row of ``excluded``."""
        cols = [self._columns[w] for w in words if w in self._columns]
        if not cols or k <= 0 or len(self.row_ids) == 0:
            return []
        scores = np.asarray(self._matrix[:, cols].sum(axis=1)).ravel()  # type: ignore[index]
        return best_k(scores, self.row_ids, k, excluded)


@dataclass
class DeltaSegment:
    """The spans of some consecutive writes: a flat fp16 dense index and a BM25 per
    granularity, with what rebuilding them needs (vectors, words) so deltas can be
    compacted without reading SQLite or stemming again."""

    row_ids: np.ndarray  # ascending
    span_ids: list[str]
    granularities: list[str]
    vectors: np.ndarray  # float32 [n, dim]
    words: list[list[str]]
    dense: DenseIndex
    bm25: dict[str, DeltaBm25]
    rows_by_granularity: dict[str, np.ndarray]
    span_id_of_row: dict[int, str]

    @classmethod
    def build(
        cls,
        row_ids: np.ndarray,
        span_ids: list[str],
        granularities: list[str],
        vectors: np.ndarray,
        words: list[list[str]],
        stats: dict[str, Bm25Stats],
    ) -> DeltaSegment:
        row_ids = np.asarray(row_ids, dtype=np.int64)
        labels = np.asarray(granularities)
        dense = DenseIndex.build(FLAT, vectors.shape[1], row_ids, granularities, vectors)
        by_granularity: dict[str, np.ndarray] = {g: row_ids[labels == g] for g in GRANULARITIES}
        bm25: dict[str, DeltaBm25] = {}
        for g in GRANULARITIES:
            picked = np.flatnonzero(labels == g)
            if len(picked):
                bm25[g] = DeltaBm25.build(row_ids[picked], [words[i] for i in picked], stats[g])
        return cls(
            row_ids,
            span_ids,
            list(granularities),
            vectors,
            words,
            dense,
            bm25,
            by_granularity,
            dict(zip(row_ids.tolist(), span_ids, strict=True)),
        )

    @classmethod
    def from_texts(
        cls,
        row_ids: np.ndarray,
        span_ids: list[str],
        granularities: list[str],
        vectors: np.ndarray,
        texts: list[str],
        stats: dict[str, Bm25Stats],
    ) -> DeltaSegment:
        return cls.build(row_ids, span_ids, granularities, vectors, tokenize_words(texts), stats)

    @classmethod
    def compact(cls, deltas: list[DeltaSegment], stats: dict[str, Bm25Stats]) -> DeltaSegment:
        """One delta holding the spans of ``deltas``, in row order."""
        row_ids = np.concatenate([d.row_ids for d in deltas])
        order = np.argsort(row_ids, kind="stable")
        span_ids = [s for d in deltas for s in d.span_ids]
        granularities = [g for d in deltas for g in d.granularities]
        words = [w for d in deltas for w in d.words]
        return cls.build(
            row_ids[order],
            [span_ids[i] for i in order],
            [granularities[i] for i in order],
            np.concatenate([d.vectors for d in deltas])[order],
            [words[i] for i in order],
            stats,
        )

    def __len__(self) -> int:
        return len(self.row_ids)


@dataclass
class BaseSegment:
    """The derived indexes of one committed state (``generation``), over span rows up to
    ``max_row``; saved under ``indexes/<collection>``."""

    generation: int
    max_row: int
    dense: DenseIndex
    span_id_of_row: dict[int, str]
    rows_by_granularity: dict[str, np.ndarray]
    bm25: dict[str, Bm25Index]
    built_at: float  # wall-clock time the build started (time.time())
    build_seconds: dict[str, float] = field(default_factory=dict)  # empty when loaded from disk
    dense_signature: str = ""  # what kind of dense index it holds (DenseIndexSpec.signature)

    @property
    def n_rows(self) -> int:
        return len(self.span_id_of_row)

    @cached_property
    def stats(self) -> dict[str, Bm25Stats]:
        """The BM25 statistics every delta over this base scores with (read once)."""
        return {g: self.bm25[g].stats for g in GRANULARITIES}


@dataclass
class SegmentSet:
    """What one committed ``generation`` of a collection searches: the base, the deltas
    written since it, and the tombstoned rows (of either). Immutable: a write makes a new
    set that shares the base and the older deltas."""

    generation: int
    base: BaseSegment
    deltas: tuple[DeltaSegment, ...] = ()
    tombstones: frozenset[int] = frozenset()
    max_row: int = 0  # highest span row held by any segment
    tombstone_generation: int = 0  # tombstones up to this generation are read

    def __post_init__(self) -> None:
        self.max_row = max(self.max_row, self.base.max_row, *(int(d.row_ids[-1]) for d in self.deltas if len(d)))

    @property
    def delta_rows(self) -> int:
        return sum(len(d) for d in self.deltas)

    def span_id(self, row: int) -> str:
        found = self.base.span_id_of_row.get(row)
        if found is not None:
            return found
        for delta in self.deltas:
            found = delta.span_id_of_row.get(row)
            if found is not None:
                return found
        raise KeyError(row)

    @cached_property
    def tombstone_rows(self) -> np.ndarray:
        """The tombstones, ascending: every segment's search filters them out itself, so a
        search asks each segment for ``k`` hits however many rows were deleted."""
        return np.sort(np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones)))

    def dense_search_many(
        self, queries: np.ndarray, k: int, granularities: list[Granularity] | None
    ) -> list[list[tuple[int, float]]]:
        dead = self.tombstone_rows
        found = self.base.dense.search_many(queries, k, granularities, self.base.rows_by_granularity, dead)
        for delta in self.deltas:
            more = delta.dense.search_many(queries, k, granularities, delta.rows_by_granularity, dead)
            found = [a + b for a, b in zip(found, more, strict=True)]
        return [self._best(hits, k) for hits in found]

    def lexical_search(self, query: str, k: int, granularity: Granularity) -> list[tuple[int, float]]:
        base = self.base.bm25[granularity]
        words = base.query_words(query)
        if not words:
            return []
        dead = self.tombstone_rows
        hits = base.search_words(words, k, dead)
        for delta in self.deltas:
            part = delta.bm25.get(granularity)
            if part is not None:
                hits += part.search(words, k, dead)
        return self._best(hits, k)

    def _best(self, hits: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
        if self.deltas:
            hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits[:k]

    def describe(self, merging: bool) -> dict:
        """What ``collections`` listings show of the segments (README: Live updates)."""
        return {
            "segments": 1 + len(self.deltas),
            "base_spans": self.base.n_rows,
            "base_generation": self.base.generation,
            "pending_deltas": len(self.deltas),
            "delta_spans": self.delta_rows,
            "tombstones": len(self.tombstones),
            "last_merge_age_s": round(max(time.time() - self.base.built_at, 0.0), 1),
            "merging": merging,
        }
