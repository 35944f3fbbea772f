"""ColBERT-style MaxSim over packed token matrices, in one matrix product.

Many candidates' tokens are packed row-wise into one matrix with ``offsets`` marking where
each candidate starts (``offsets[i]:offsets[i + 1]``), so scoring a whole candidate list is
one ``query @ tokens.T`` and one segmented max, never a Python loop over tokens.

    >>> import numpy as np
    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> tokens = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    >>> [round(float(s), 2) for s in maxsim(q, tokens, np.array([0, 2, 3]))]  # 1 + 0.8, 0 + 1
    [1.8, 1.0]
"""

from __future__ import annotations

import numpy as np

from indexing.token_codecs import EncodedTokens, similarities


def maxsim(query_tokens: np.ndarray, tokens: np.ndarray | EncodedTokens, offsets: np.ndarray) -> np.ndarray:
    """Σ over query tokens of the best similarity among each candidate's tokens.

    ``tokens`` are float vectors or stored codes (scored without decoding them first, see
    :func:`indexing.token_codecs.similarities`). ``offsets`` has one entry per candidate
    plus the end; a candidate with no tokens scores 0.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n_candidates = len(offsets) - 1
    scores = np.zeros(n_candidates, dtype=np.float32)
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    if n_candidates == 0 or not nonempty.any() or len(query_tokens) == 0:
        return scores
    sims = similarities(query_tokens, tokens)  # [query tokens, all candidate tokens]
    # reduceat over the starts of non-empty segments only: an empty segment would otherwise
    # return the element at its start, which belongs to the next candidate.
    best = np.maximum.reduceat(sims, offsets[:-1][nonempty], axis=1)
    scores[nonempty] = best.sum(axis=0)
    return scores
