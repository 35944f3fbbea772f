"""Selectors turn fused candidates into a budgeted context with a trace."""

from retrieval.selection.adaptive_k import AdaptiveKSelector, adaptive_cut
from retrieval.selection.base import SelectionInputs, Selector
from retrieval.selection.bubble import ContextBubble
from retrieval.selection.clustered import ClusteredSelector
from retrieval.selection.topk import TopKSelector

SELECTORS: dict[str, type] = {
    "topk": TopKSelector,
    "adaptive_k": AdaptiveKSelector,
    "clustered": ClusteredSelector,
    "bubble": ContextBubble,
}

__all__ = [
    "SELECTORS",
    "AdaptiveKSelector",
    "ClusteredSelector",
    "ContextBubble",
    "SelectionInputs",
    "Selector",
    "TopKSelector",
    "adaptive_cut",
]
