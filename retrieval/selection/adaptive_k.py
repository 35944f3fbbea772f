"""Adaptive-k: cut the sorted relevance scores at their largest gap.

After "Efficient Context Selection for Long-Context QA: No Tuning, No Iteration, Just
Adaptive-k": sort the candidates' similarities to the question, find the largest drop
between neighbours, and keep everything above it; one pass, no model calls. Options:
skip the first ``head_fraction`` of the list when looking for the gap (a big drop right
after the first hit would otherwise leave one span), ignore gaps below the median score
(the tail of a long list is noise), and add ``buffer`` spans after the cut.

    >>> adaptive_cut([0.9, 0.88, 0.86, 0.5, 0.48, 0.47])
    3
    >>> adaptive_cut([0.9, 0.6, 0.58, 0.57, 0.2], head_fraction=0.25, ignore_below_median=False)
    4
"""

from __future__ import annotations

import numpy as np

from retrieval.params import AdaptiveKParams, SelectionParams
from retrieval.selection.base import SelectionInputs, allowed_candidates, pack_in_order, split_vanished
from retrieval.types import Candidate, Context


def adaptive_cut(
    scores: list[float] | np.ndarray,
    head_fraction: float = 0.0,
    ignore_below_median: bool = True,
    buffer: int = 0,
    min_k: int = 1,
) -> int:
    """How many of ``scores`` (sorted best first) to keep: up to the largest gap.

    The gap between positions ``i`` and ``i + 1`` is considered when ``i + 1`` is past the
    head (``i + 1 > head_fraction × n``) and, with ``ignore_below_median``, when the score
    before the gap is at or above the median. Ties between equal gaps go to the earlier one.
    """
    values = np.asarray(scores, dtype=np.float64)
    n = len(values)
    if n <= 1:
        return n
    if np.any(np.diff(values) > 1e-12):
        raise ValueError("scores must be sorted best first")
    gaps = values[:-1] - values[1:]  # gaps[i]: drop after keeping i + 1 items
    keep_counts = np.arange(1, n)
    allowed = keep_counts >= max(min_k, int(np.ceil(head_fraction * n)))
    if ignore_below_median:
        allowed &= values[:-1] >= np.median(values)
    if not allowed.any():
        return min(n, max(min_k, 1) + buffer)
    best = int(np.argmax(np.where(allowed, gaps, -np.inf)))
    return min(n, int(keep_counts[best]) + buffer)


class AdaptiveKSelector:
    """Candidates ranked by their relevance to the question (cosine of span and question
    vectors), cut at the largest gap, then packed under the token budget in that order."""

    group = "adaptive_k"  # reads RetrievalParams.adaptive_k

    def select(
        self, candidates: list[Candidate], limits: SelectionParams, inputs: SelectionInputs, options: AdaptiveKParams
    ) -> Context:
        live, vanished = split_vanished(allowed_candidates(candidates, limits), inputs)
        relevance = inputs.relevance([c.span_id for c in live])
        for c, r in zip(live, relevance):
            c.scores["relevance"] = float(r)
        ordered = sorted(live, key=lambda c: (-c.scores["relevance"], c.span_id))
        k = adaptive_cut(
            [c.scores["relevance"] for c in ordered],
            options.head_fraction,
            options.ignore_below_median,
            options.buffer,
        )
        gone = [c for c in candidates if c.span_id in vanished]
        return pack_in_order(
            ordered + gone,
            limits,
            limit=min(k, limits.top_k),
            cut_reason="below_cut",
            cut_note=f"adaptive-k cut after {k} of {len(ordered)}",
            pre_dropped=vanished,
        )
