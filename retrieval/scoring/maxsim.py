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
    scores: np.ndarray = np.zeros(n_candidates, dtype=np.float32)
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


def maxsim_torch(
    query_tokens: np.ndarray, tokens: np.ndarray | EncodedTokens, offsets: np.ndarray, device: str = "cuda"
) -> np.ndarray:
    """:func:`maxsim` on a torch device (the GPU path): the same scores, computed as one
    fp16/fp32 product on ``device`` and a scatter-max per candidate. Worth it for large
    rerank batches (thousands of candidates); a 30-document query-time rerank stays on the
    CPU, where the transfer would cost more than the product.

        >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> tokens = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
        >>> [round(float(s), 2) for s in maxsim_torch(q, tokens, np.array([0, 2, 3]), "cpu")]
        [1.8, 1.0]
    """
    import torch

    from indexing.token_codecs import decode_tokens

    offsets = np.asarray(offsets, dtype=np.int64)
    n_candidates = len(offsets) - 1
    if n_candidates == 0 or len(query_tokens) == 0 or offsets[-1] == 0:
        return np.zeros(max(n_candidates, 0), dtype=np.float32)
    dense = tokens if isinstance(tokens, np.ndarray) else decode_tokens(tokens)
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    q = torch.as_tensor(np.asarray(query_tokens, dtype=np.float32), device=device).to(dtype)
    t = torch.as_tensor(dense, device=device).to(dtype)
    sims = (q @ t.T).float()  # [query tokens, all candidate tokens]
    owner = torch.as_tensor(np.repeat(np.arange(n_candidates), np.diff(offsets)), device=device)
    best = torch.full((len(q), n_candidates), float("-inf"), device=device)
    best.scatter_reduce_(1, owner.expand(len(q), -1), sims, reduce="amax", include_self=True)
    best = torch.where(torch.isinf(best), torch.zeros_like(best), best)  # empty candidates score 0
    return best.sum(dim=0).cpu().numpy().astype(np.float32)
