"""Selectors turn fused candidates into a budgeted context with a trace."""

from retrieval.selection.topk import TopKSelector

__all__ = ["TopKSelector"]
