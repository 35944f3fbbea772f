"""What every selector shares: its inputs, and packing an ordered list under the budget.

A selector is one class with one method, ``select(candidates, limits, inputs, options) -> Context``
(``limits``: ``RetrievalParams.selection``; ``options``: the selector's own group, e.g.
``RetrievalParams.bubble``);
candidates arrive in fused order with their spans loaded, and every candidate a selector
sees gets one trace entry saying whether it was taken and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from indexing.spans import Span
from indexing.store.base import SpanStore
from retrieval.params import SelectionParams
from retrieval.types import Candidate, Context, ContextSpan, TraceEntry

if TYPE_CHECKING:
    from indexing.graph import GraphIndex


def overlaps(a: Span, b: Span) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


def reading_order(selected: list[ContextSpan]) -> list[ContextSpan]:
    """Group by document (documents in order of their best span), then by offset."""
    doc_rank: dict[str, int] = {}
    for item in sorted(selected, key=lambda c: -c.score):
        doc_rank.setdefault(item.span.doc_id, len(doc_rank))
    return sorted(selected, key=lambda c: (doc_rank[c.span.doc_id], c.span.start, -c.span.end))


@dataclass
class SelectionInputs:
    """Query-side facts a selector may need, loaded lazily and once per query.

    Spans can vanish under a running query (a concurrent delete or replace; see
    ``indexing/store/base.py``): :meth:`present` says which of some spans can still be read,
    and a selector scores only those, tracing the others as ``vanished``."""

    collection: str
    question: str
    query_vector: np.ndarray
    store: SpanStore
    count_tokens: Callable[[list[str]], list[int]]
    graph: GraphIndex | None = None  # when the collection has one
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _vanished: set[str] = field(default_factory=set, repr=False)

    def present(self, span_ids: list[str]) -> list[str]:
        """Those of ``span_ids`` whose vectors are stored, in the order given (one store call
        for the ones not yet seen); a span found gone stays gone for the rest of the query."""
        unseen = [s for s in dict.fromkeys(span_ids) if s not in self._vectors and s not in self._vanished]
        if unseen:
            found = self.store.find_vectors(self.collection, unseen)
            self._vectors.update(found)
            self._vanished.update(s for s in unseen if s not in found)
        return [s for s in span_ids if s in self._vectors]

    def vectors(self, span_ids: list[str]) -> np.ndarray:
        """Stored dense vectors of these spans (one store call for the ones not yet seen).
        ``KeyError`` for a span that vanished: ask :meth:`present` first."""
        self.present(span_ids)
        if not span_ids:
            return np.zeros((0, len(self.query_vector)), dtype=np.float32)
        gone = [s for s in span_ids if s not in self._vectors]
        if gone:
            raise KeyError(f"spans vanished under the query (filter with present()): {gone[:3]}")
        return np.stack([self._vectors[s] for s in span_ids])

    def relevance(self, span_ids: list[str]) -> np.ndarray:
        """Cosine of each span with the question (vectors are unit length)."""
        return self.vectors(span_ids) @ self.query_vector


class Selector(Protocol):
    """Chooses the context from the fused candidates. ``limits`` are the limits every selector
    keeps (``RetrievalParams.selection``); ``options`` is the selector's own parameter group,
    ``RetrievalParams.<group>`` (None for a selector without one)."""

    group: ClassVar[str | None]

    def select(
        self, candidates: list[Candidate], limits: SelectionParams, inputs: SelectionInputs, options: Any
    ) -> Context: ...


def trace_entry(candidate: Candidate, rank: int, reason: str | None, taken_note: str) -> TraceEntry:
    return TraceEntry(
        span_id=candidate.span_id,
        rank=rank,
        scores=dict(candidate.scores),
        n_tokens=candidate.loaded_span.n_tokens,
        decision="dropped" if reason else "taken",
        reason=reason or taken_note,
    )


def pack_in_order(
    ordered: list[Candidate],
    limits: SelectionParams,
    limit: int,
    cut_reason: str = "k_reached",
    cut_note: str = "within top_k and budget",
    pre_dropped: dict[str, str] | None = None,
) -> Context:
    """Take ``ordered`` candidates while fewer than ``limit`` are taken and the budget holds;
    a span overlapping one already taken is dropped (``overlap``); one too large for what is
    left of the budget is dropped (``budget``) and smaller ones further down may still fit.
    ``pre_dropped`` maps span ids a selector already rejected to their reason."""
    taken: list[ContextSpan] = []
    trace: list[TraceEntry] = []
    total = 0
    pre_dropped = pre_dropped or {}
    for rank, candidate in enumerate(ordered, start=1):
        span = candidate.loaded_span
        reason = pre_dropped.get(candidate.span_id)
        if reason is None:
            if len(taken) >= limit:
                reason = cut_reason
            elif any(overlaps(span, t.span) for t in taken):
                reason = "overlap"
            elif limits.budget_tokens is not None and total + span.n_tokens > limits.budget_tokens:
                reason = "budget"
        trace.append(trace_entry(candidate, rank, reason, cut_note))
        if reason is None:
            taken.append(ContextSpan(span=span, score=candidate.fused))
            total += span.n_tokens
    return Context(spans=reading_order(taken), n_tokens=total, trace=trace)


def split_vanished(candidates: list[Candidate], inputs: SelectionInputs) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates whose vectors can still be read, and ``{span_id: "vanished"}`` for
    the others (deleted or replaced since the first stage), for ``pack_in_order``."""
    present = set(inputs.present([c.span_id for c in candidates]))
    live = [c for c in candidates if c.span_id in present]
    return live, {c.span_id: "vanished" for c in candidates if c.span_id not in present}


def allowed_candidates(candidates: list[Candidate], limits: SelectionParams) -> list[Candidate]:
    if not limits.context_granularities:
        return list(candidates)
    return [c for c in candidates if c.loaded_span.granularity in limits.context_granularities]


__all__ = [
    "SelectionInputs",
    "Selector",
    "allowed_candidates",
    "overlaps",
    "pack_in_order",
    "reading_order",
    "split_vanished",
    "trace_entry",
]
