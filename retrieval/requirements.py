"""What a pipeline needs from the store, checked when the pipeline is chosen.

A pipeline is a :class:`~retrieval.params.RetrievalParams`; :func:`needed_capabilities` reads
off it which store capabilities (:class:`~indexing.store.base.StoreCapability`) its query will
use, and :func:`require_pipeline` refuses a pipeline the store cannot run before any work
starts (the service calls it for every query), instead of failing in the middle of one.

    >>> sorted(c.value for c in needed_capabilities(PIPELINES["xtr"].params))
    ['dense_search', 'lexical_search', 'span_read', 'token_search', 'token_vectors']
"""

from __future__ import annotations

from typing import Any

from indexing.store.base import StoreCapability, UnsupportedCapability, missing_capabilities, require, store_name
from retrieval.params import RetrievalParams
from retrieval.pipeline import PIPELINES, UnknownPipeline, pipeline_params


class PipelineNotSupported(UnknownPipeline):
    """The chosen pipeline needs a capability the store does not have (e.g. ``xtr`` on Qdrant,
    which has no token index). A kind of :class:`UnknownPipeline`, so it is answered like one:
    HTTP 400 naming the reason, and the CLI prints it."""


def needed_capabilities(params: RetrievalParams) -> frozenset[StoreCapability]:
    """The store capabilities a query with ``params`` uses."""
    needs = {StoreCapability.SPAN_READ}  # candidates, pieces and their vectors are read back
    if params.dense_granularities:
        needs.add(StoreCapability.DENSE_SEARCH)
    if params.bm25_granularities:
        needs.add(StoreCapability.LEXICAL_SEARCH)
    if params.maxsim_depth or params.xtr_k or params.compression != "off":
        needs.add(StoreCapability.TOKEN_VECTORS)  # MaxSim and compression read token vectors
    if params.xtr_k:
        needs.add(StoreCapability.TOKEN_SEARCH)
    return frozenset(needs)


def supported_pipelines(store: Any) -> list[str]:
    """The names of the registered pipelines ``store`` can run."""
    return sorted(
        n for n, spec in PIPELINES.items() if not missing_capabilities(store, needed_capabilities(spec.params))
    )


def require_pipeline(store: Any, name: str, overrides: dict | None = None) -> RetrievalParams:
    """The parameters pipeline ``name`` runs with (``overrides`` applied by
    :func:`~retrieval.pipeline.pipeline_params`, as the retriever applies them); raises :class:`UnknownPipeline` for an unknown name and
    :class:`PipelineNotSupported` when ``store`` lacks a capability they need."""
    spec, params = pipeline_params(name, overrides)
    needed = needed_capabilities(params)
    what = f"pipeline {name!r}"
    if params is not spec.params and needed != needed_capabilities(spec.params):
        what += " with the options asked"
    try:
        require(store, needed, what)
    except UnsupportedCapability as exc:
        runs = ", ".join(supported_pipelines(store)) or "none"
        raise PipelineNotSupported(f"{exc}; pipelines the {store_name(store)} store runs: {runs}") from None
    return params


__all__ = ["PipelineNotSupported", "needed_capabilities", "require_pipeline", "supported_pipelines"]
