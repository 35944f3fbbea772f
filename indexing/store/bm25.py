"""BM25 over the spans of one granularity, with bm25s (sparse, vectorized scoring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _bm25s():
    """bm25s (and scipy under it) load on first use: commands that search nothing start faster."""
    import bm25s

    return bm25s


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str], stemmer):
    return _bm25s().tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)


class Bm25Index:
    """A bm25s index whose documents are span row ids.

    >>> index = Bm25Index.build(np.array([7, 9]), ["red apples", "green pears"])
    >>> index.search("apple", k=1)[0][0]
    7
    """

    def __init__(self, retriever, row_ids: np.ndarray):  # retriever: a bm25s.BM25, None when empty
        self._retriever = retriever
        self.row_ids = row_ids
        self._stemmer = _stemmer()

    @classmethod
    def build(cls, row_ids: np.ndarray, texts: list[str]) -> Bm25Index:
        if len(texts) == 0:
            return cls(None, np.zeros(0, dtype=np.int64))
        stemmer = _stemmer()
        tokens = _tokenize(texts, stemmer)
        if not tokens.vocab:  # no text has a searchable word ("0", "the of"): nothing can match
            return cls(None, np.asarray(row_ids, dtype=np.int64))
        retriever = _bm25s().BM25()  # Lucene variant, k1=1.5, b=0.75
        retriever.index(tokens, show_progress=False)
        return cls(retriever, np.asarray(row_ids, dtype=np.int64))

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        if self._retriever is None or k <= 0:
            return []
        tokens = _tokenize([query], self._stemmer)
        if not tokens.vocab or all(len(ids) == 0 for ids in tokens.ids):
            return []
        words_by_id = {i: w for w, i in tokens.vocab.items()}
        known = self._retriever.vocab_dict
        words = [words_by_id[i] for i in tokens.ids[0] if words_by_id[i] in known]
        if not words:
            return []
        # get_scores + argpartition: bm25s's retrieve() spins up a thread pool per call
        scores = self._retriever.get_scores(words)
        k = min(k, int(np.count_nonzero(scores > 0)))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # best first; ties by position, deterministic
        return [(int(self.row_ids[d]), float(scores[d])) for d in top]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "row_ids.npy", self.row_ids)
        if self._retriever is not None:
            self._retriever.save(str(directory), show_progress=False)
        (directory / "built.json").write_text(json.dumps({"empty": self._retriever is None}))

    @classmethod
    def load(cls, directory: Path) -> Bm25Index:
        built = json.loads((directory / "built.json").read_text())
        row_ids = np.load(directory / "row_ids.npy")
        if built["empty"]:
            return cls(None, row_ids)
        return cls(_bm25s().BM25.load(str(directory), show_progress=False, verbosity=0), row_ids)
