"""Fixed top-k selection under a token budget, skipping overlapping spans."""

from __future__ import annotations

from indexing.spans import Span
from retrieval.params import RetrievalParams
from retrieval.types import Candidate, Context, ContextSpan, TraceEntry


def overlaps(a: Span, b: Span) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


def reading_order(selected: list[ContextSpan]) -> list[ContextSpan]:
    """Group by document (documents in order of their best span), then by offset."""
    doc_rank: dict[str, int] = {}
    for item in selected:
        doc_rank.setdefault(item.span.doc_id, len(doc_rank))
    return sorted(selected, key=lambda c: (doc_rank[c.span.doc_id], c.span.start, -c.span.end))


class TopKSelector:
    """Take candidates in fused order until ``top_k`` spans or the budget is reached.

    A span that overlaps one already taken (a sentence inside a taken paragraph, or the
    paragraph around a taken sentence) is dropped as redundant; a span too large for the
    remaining budget is dropped, and smaller ones further down may still fit.
    """

    def select(self, candidates: list[Candidate], params: RetrievalParams) -> Context:
        taken: list[ContextSpan] = []
        trace: list[TraceEntry] = []
        total = 0
        for rank, candidate in enumerate(candidates, start=1):
            span = candidate.span
            assert span is not None, "selection needs loaded spans"
            if params.context_granularities and span.granularity not in params.context_granularities:
                continue
            reason = None
            if len(taken) >= params.top_k:
                reason = "k_reached"
            elif any(overlaps(span, t.span) for t in taken):
                reason = "overlap"
            elif params.budget_tokens is not None and total + span.n_tokens > params.budget_tokens:
                reason = "budget"
            trace.append(
                TraceEntry(
                    span_id=span.id, rank=rank, scores=dict(candidate.scores),
                    n_tokens=span.n_tokens, decision="dropped" if reason else "taken",
                    reason=reason or "within top_k and budget",
                )
            )
            if reason is None:
                taken.append(ContextSpan(span=span, score=candidate.fused))
                total += span.n_tokens
        return Context(spans=reading_order(taken), n_tokens=total, trace=trace)
