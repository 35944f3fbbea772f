"""Fixed top-k selection under a token budget, skipping overlapping spans."""

from __future__ import annotations

from retrieval.params import SelectionParams
from retrieval.selection.base import SelectionInputs, allowed_candidates, pack_in_order
from retrieval.types import Candidate, Context


class TopKSelector:
    """Take candidates in fused order until ``top_k`` spans or the budget is reached.

    A span that overlaps one already taken (a sentence inside a taken paragraph, or the
    paragraph around a taken sentence) is dropped as redundant; a span too large for the
    remaining budget is dropped, and smaller ones further down may still fit.
    """

    group = None  # no knobs of its own

    def select(
        self,
        candidates: list[Candidate],
        limits: SelectionParams,
        inputs: SelectionInputs | None = None,
        options: None = None,
    ) -> Context:
        return pack_in_order(allowed_candidates(candidates, limits), limits, limit=limits.top_k)
