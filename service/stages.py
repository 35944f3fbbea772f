"""The query's stages in order: retrieval (first stage, selection), then compression.

Retrieval (``retrieval/``) and compression (``compression/``) do not know each other's
code: both read the shared types (``retrieval.types``, ``retrieval.context``) and parameters
(``retrieval.params``), and only this module, above both, runs one after the other. Every
stage receives its own parameter group: the first stage ``params.first_stage``, the selector
``params.selection`` and its own group (``params.bubble``, ...), compression
``params.compress``.

    >>> runner = PipelineRunner(store, encoder)                                # doctest: +SKIP
    >>> runner.retrieve("docs", "what is X?", "default-compressed").compression  # doctest: +SKIP
"""

from __future__ import annotations

import time

from compression.pruning import CompressionInputs, ContextCompressor
from indexing.embed import Encoder, TokenEncoder
from indexing.graph import GraphIndex
from indexing.store.base import SpanStore
from retrieval.params import RetrievalParams
from retrieval.pipeline import Retriever, pipeline_params
from retrieval.types import RetrievalResult, elapsed_ms


class PipelineRunner:
    """question → retrieval (first stage → selection) → compression (when the pipeline has
    it): one :class:`RetrievalResult` with the timings of every stage."""

    def __init__(
        self,
        store: SpanStore,
        encoder: Encoder,
        token_encoder: TokenEncoder | None = None,
        graph: GraphIndex | None = None,
        scoring_device: str = "cpu",
    ):
        self.retrieval = Retriever(store, encoder, token_encoder, graph, scoring_device)
        self.compressor = ContextCompressor()

    # the store, encoders and graph are the retrieval stage's (tests swap the store)
    @property
    def store(self) -> SpanStore:
        return self.retrieval.store

    @store.setter
    def store(self, store: SpanStore) -> None:
        self.retrieval.store = store

    @property
    def encoder(self) -> Encoder:
        return self.retrieval.encoder

    @property
    def token_encoder(self) -> TokenEncoder:
        return self.retrieval.token_encoder

    @property
    def graph(self) -> GraphIndex | None:
        return self.retrieval.graph

    def retrieve(
        self, collection: str, question: str, pipeline: str = "default", overrides: dict | None = None
    ) -> RetrievalResult:
        """Pipeline ``pipeline`` with ``overrides`` (flat names, validated: ``ValueError``)."""
        spec, params = pipeline_params(pipeline, overrides)
        return self.run(collection, question, spec.name, params)

    def run(self, collection: str, question: str, name: str, params: RetrievalParams) -> RetrievalResult:
        """Pipeline ``name`` with ready ``params`` (e.g. from ``require_pipeline``)."""
        started = time.perf_counter()
        compressing = params.compress.on
        result = self.retrieval.run(collection, question, name, params, query_tokens=compressing)
        if not compressing:
            return result
        t = time.perf_counter()
        result.context, result.compression = self.compressor.compress(
            result.context,
            params.compress,
            CompressionInputs(
                collection,
                question,
                result.query_vector,
                self.store,
                self.encoder.count_tokens,
                result.query_tokens,
                self.token_encoder,
            ),
        )
        timings = result.timings_ms
        timings.pop("retrieval_ms")  # the whole query's retrieval, compression included, comes last
        timings["compression_ms"] = elapsed_ms(t)
        timings["retrieval_ms"] = elapsed_ms(started)
        return result


__all__ = ["PipelineRunner"]
