"""BM25 over the spans of one granularity, with bm25s (sparse, vectorized scoring)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

K1, B = 1.5, 0.75  # bm25s's defaults (Lucene variant)


def _bm25s():
    """bm25s (and scipy under it) load on first use: commands that search nothing start faster."""
    import bm25s

    return bm25s


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str], stemmer):
    return _bm25s().tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)


def tokenize_words(texts: list[str]) -> list[list[str]]:
    """Each text's stemmed words, stop words dropped: what the index holds of it.

    >>> tokenize_words(["The red apples"])
    [['red', 'appl']]
    """
    return _bm25s().tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


@dataclass(frozen=True)
class Bm25Stats:
    """The collection statistics a BM25 score depends on: documents, average length in
    words, and each word's document frequency (Lucene's IDF, as bm25s computes it)."""

    n_docs: int
    avgdl: float
    doc_freq: dict[str, int]
    k1: float = K1
    b: float = B

    def idf(self, word: str) -> float:
        df = self.doc_freq.get(word, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))


EMPTY_STATS = Bm25Stats(0, 0.0, {})


def positions_in(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Where each of ``ids`` stands in the ascending ``sorted_ids`` (those not in it left
    out): a binary search per id, not a pass over all of ``sorted_ids``.

    >>> positions_in(np.array([3, 5, 7, 9]), np.array([9, 4, 3])).tolist()
    [3, 0]
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids) or not len(sorted_ids):
        return np.zeros(0, dtype=np.int64)
    at = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return at[sorted_ids[at] == ids]


def best_k(
    scores: np.ndarray, row_ids: np.ndarray, k: int, excluded: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """The ``k`` best ``(row_id, score)`` with a score above 0, best first, ties by row id
    (``row_ids`` ascend, as every BM25 index here holds them), never a row of ``excluded``
    (tombstones; ``scores`` is overwritten there).

    >>> best_k(np.array([0.5, 0.0, 2.0, 0.5]), np.array([3, 5, 7, 9]), 3)
    [(7, 2.0), (3, 0.5), (9, 0.5)]
    >>> best_k(np.array([0.5, 0.0, 2.0, 0.5]), np.array([3, 5, 7, 9]), 3, excluded=np.array([7, 8]))
    [(3, 0.5), (9, 0.5)]
    """
    if excluded is not None:
        scores[positions_in(row_ids, excluded)] = 0.0
    k = min(k, int(np.count_nonzero(scores > 0)))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]
    return [(int(row_ids[d]), float(scores[d])) for d in top]


class Bm25Index:
    """A bm25s index whose documents are span row ids.

    >>> index = Bm25Index.build(np.array([7, 9]), ["red apples", "green pears"])
    >>> index.search("apple", k=1)[0][0]
    7
    """

    def __init__(self, retriever, row_ids: np.ndarray, avgdl: float = 0.0):  # retriever: a bm25s.BM25, or None
        self._retriever = retriever
        self.row_ids = row_ids
        self.avgdl = avgdl
        self._stemmer = _stemmer()

    @classmethod
    def build(cls, row_ids: np.ndarray, texts: list[str]) -> Bm25Index:
        if len(texts) == 0:
            return cls(None, np.zeros(0, dtype=np.int64))
        stemmer = _stemmer()
        tokens = _tokenize(texts, stemmer)
        if not tokens.vocab:  # no text has a searchable word ("0", "the of"): nothing can match
            return cls(None, np.asarray(row_ids, dtype=np.int64))
        retriever = _bm25s().BM25(k1=K1, b=B)  # Lucene variant
        retriever.index(tokens, show_progress=False)
        avgdl = float(np.mean([len(ids) for ids in tokens.ids]))
        return cls(retriever, np.asarray(row_ids, dtype=np.int64), avgdl)

    @cached_property
    def stats(self) -> Bm25Stats:
        """This index's statistics (the delta segments score with them; read once, as the
        index never changes)."""
        if self._retriever is None:
            return EMPTY_STATS
        indptr = np.asarray(self._retriever.scores["indptr"])
        counts = np.diff(indptr)
        doc_freq = {w: int(counts[i]) for w, i in self._retriever.vocab_dict.items() if w and i < len(counts)}
        return Bm25Stats(int(self._retriever.scores["num_docs"]), self.avgdl, doc_freq)

    def query_words(self, query: str) -> list[str]:
        """The query's stemmed words, stop words dropped (repeats kept)."""
        tokens = _tokenize([query], self._stemmer)
        if not tokens.vocab or all(len(ids) == 0 for ids in tokens.ids):
            return []
        words_by_id = {i: w for w, i in tokens.vocab.items()}
        return [words_by_id[i] for i in tokens.ids[0] if words_by_id[i]]

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_words(self.query_words(query), k)

    def search_words(self, words: list[str], k: int, excluded: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` best rows for ``words`` (stemmed), never a row of ``excluded``."""
        if self._retriever is None or k <= 0:
            return []
        known = self._retriever.vocab_dict
        words = [w for w in words if w in known]
        if not words:
            return []
        # get_scores + argpartition: bm25s's retrieve() spins up a thread pool per call
        return best_k(self._retriever.get_scores(words), self.row_ids, k, excluded)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "row_ids.npy", self.row_ids)
        if self._retriever is not None:
            self._retriever.save(str(directory), show_progress=False)
        (directory / "built.json").write_text(json.dumps({"empty": self._retriever is None, "avgdl": self.avgdl}))

    @classmethod
    def load(cls, directory: Path) -> Bm25Index:
        """The saved index; KeyError for one saved before its statistics were kept."""
        built = json.loads((directory / "built.json").read_text())
        row_ids = np.load(directory / "row_ids.npy")
        if built["empty"]:
            return cls(None, row_ids)
        return cls(_bm25s().BM25.load(str(directory), show_progress=False, verbosity=0), row_ids, built["avgdl"])
