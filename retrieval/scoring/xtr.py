"""XTR document scores from retrieved tokens only, with imputation for the tokens not found.

XTR ("Rethinking the Role of Token Retrieval in Multi-Vector Retrieval") scores a document
without loading its token vectors: for each query token, the document's best similarity
among the tokens the search retrieved, or, where the search retrieved none of its tokens
for that query token, the lowest similarity retrieved for it (an upper bound on what was
missed). The score is the mean over query tokens.

    >>> import numpy as np
    >>> from indexing.store.token_matrix import TokenHits
    >>> hits = TokenHits(["a", "b"], doc_index=np.array([0, 1, 0]), query_index=np.array([0, 0, 1]),
    ...                  similarity=np.array([0.9, 0.5, 0.7]), floor=np.array([0.5, 0.7]))
    >>> [round(float(s), 2) for s in xtr_scores(hits)]  # a: (0.9 + 0.7) / 2, b: (0.5 + 0.7) / 2
    [0.8, 0.6]
"""

from __future__ import annotations

import numpy as np

from indexing.store.token_matrix import TokenHits


def xtr_scores(hits: TokenHits) -> np.ndarray:
    """One score per ``hits.doc_ids`` entry (vectorized; no loop over tokens)."""
    n_docs, n_q = len(hits.doc_ids), len(hits.floor)
    if n_docs == 0:
        return np.zeros(0, dtype=np.float32)
    best: np.ndarray = np.full((n_docs, n_q), -np.inf, dtype=np.float32)
    np.maximum.at(best, (hits.doc_index, hits.query_index), hits.similarity.astype(np.float32))
    best = np.where(np.isinf(best), hits.floor[None, :].astype(np.float32), best)
    return best.mean(axis=1)
