"""Named retrieval pipelines and the retriever that runs their retrieval stages.

A pipeline is a configuration (a :class:`RetrievalParams`), not code: the server, the CLI
and ``spanrag eval`` all run a name from :data:`PIPELINES` through the same stages. The
:class:`Retriever` here runs retrieval's own (first stage, then selection); the stage after
it, compression, sits in ``compression/``, and what runs them in order sits above both
(``service/stages.py``), so retrieval never imports compression.

    >>> {"default", "default-compressed", "bm25", "dense"} <= set(PIPELINES)
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from indexing.embed import Encoder, TokenEncoder
from indexing.graph import GraphIndex
from indexing.spans import Span
from indexing.store.base import SpanStore, StoreMismatch
from retrieval.context import share_table_headers
from retrieval.first_stage import (
    fetch_signals,
    fuse,
    maxsim_documents,
    rank_documents,
    score_candidates,
    xtr_documents,
)
from retrieval.params import RetrievalParams
from retrieval.selection import SELECTORS, SelectionInputs
from retrieval.types import PIECE_GRANULARITIES, Candidate, Context, ContextSpan, RetrievalResult, elapsed_ms


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    params: RetrievalParams

    @property
    def uses_token_vectors(self) -> bool:
        return self.params.first_stage.late_interaction

    @property
    def search_structures(self) -> list[str]:
        """The store's structures this pipeline reads (keys of ``index_footprint``)."""
        first = self.params.first_stage
        used = {
            "dense": bool(first.dense_granularities),
            "bm25": bool(first.bm25_granularities),
            "tokens": self.uses_token_vectors,
            "token_index": bool(first.xtr_k),
        }
        return [name for name, on in used.items() if on]


def _registry(*specs: PipelineSpec) -> dict[str, PipelineSpec]:
    return {s.name: s for s in specs}


HYBRID = RetrievalParams()
FULL_BUDGET = RetrievalParams(
    first_stage_k=300,
    bm25_granularities=["document", "sentence", "row"],
    maxsim_depth=30,
    selector="bubble",
    top_k=40,
    budget_tokens=500,
)
# The bubble stops below 0.55 of its first piece's gain (each anchor or bridged document
# still gets its best piece), so a question takes what it needs up to the 500 tokens.
# 0.55 is the value every fold of HotpotQA dev picks out of fold for the most answers in
# context at a mean of at most 400 tokens (README: Tuned knobs); TAT-QA and SciFact train
# were measured at it, not used to pick it.
DEFAULT = FULL_BUDGET.with_overrides({"bubble_relative_min_gain": 0.55})
PIPELINES: dict[str, PipelineSpec] = _registry(
    PipelineSpec(
        "dense",
        "dense top-k over document spans only (the classic single-vector baseline)",
        RetrievalParams(dense_granularities=["document"], bm25_granularities=[]),
    ),
    PipelineSpec(
        "bm25",
        "BM25 top-k over document spans only (the classic lexical baseline)",
        RetrievalParams(dense_granularities=[], bm25_granularities=["document"]),
    ),
    PipelineSpec(
        "hybrid",
        "dense over every granularity + BM25 per granularity; documents fused by RRF of their best"
        " spans, spans by their own RRF plus their document's; top-k spans under the budget",
        HYBRID,
    ),
    PipelineSpec(
        "maxsim",
        "hybrid, then token-level MaxSim over the top 50 documents' stored token vectors, fused"
        " into the document ranking by RRF (needs SPANRAG_TOKEN_CODEC at ingest)",
        RetrievalParams(maxsim_depth=50),
    ),
    PipelineSpec(
        "xtr",
        "hybrid plus token retrieval as a first stage (XTR): the 100 nearest stored tokens of each"
        " query token from a FAISS binary index, documents scored from those hits with imputation,"
        " fused into the document ranking by RRF (needs SPANRAG_TOKEN_CODEC at ingest)",
        RetrievalParams(xtr_k=100),
    ),
    PipelineSpec(
        "xtr-only",
        "token retrieval alone (XTR), documents scored from retrieved tokens with imputation",
        RetrievalParams(dense_granularities=[], bm25_granularities=[], xtr_k=100),
    ),
    PipelineSpec(
        "adaptive-k",
        "hybrid first stage; candidates ordered by cosine with the question and cut at the"
        " largest score gap (adaptive-k), then packed under the budget",
        RetrievalParams(selector="adaptive_k"),
    ),
    PipelineSpec(
        "clustered",
        "hybrid first stage; candidates clustered by embedding, the best of each cluster packed"
        " in fused order (near-duplicates dropped)",
        RetrievalParams(selector="clustered"),
    ),
    PipelineSpec(
        "bubble",
        "hybrid first stage; context bubble grown from the top documents' anchor spans through"
        " structure and the graph index, sentences and rows chosen greedily under the budget",
        RetrievalParams(selector="bubble", top_k=40),
    ),
    PipelineSpec(
        "default",
        "what the service runs by default: hybrid first stage (300 deep; BM25 over documents,"
        " sentences and rows) with MaxSim over the top 30 documents, then the context bubble"
        " under a 500-token budget, stopping below 0.55 of its first piece's gain; table rows"
        " are alternatives, not repeats, and show the columns of the years asked about",
        DEFAULT,
    ),
    PipelineSpec(
        "default-no-tables",
        "the default with table rows as plain pieces (ablation): rows alike by embedding, shown"
        " with every column (the default before issue 19's tables as tables)",
        DEFAULT.with_overrides({"bubble_rows_as_alternatives": False, "bubble_table_columns": False}),
    ),
    PipelineSpec(
        "default-full-budget",
        "the default without its adaptive stop: the bubble fills the 500 tokens (the default's"
        " budget before issue 19, and the base of the compression and ablation variants below)",
        FULL_BUDGET,
    ),
    PipelineSpec(
        "default-compressed",
        "the full-budget default, then sentence-level compression of its context to 60% of its tokens"
        " (pieces chosen by relevance, MaxSim coverage of the question's tokens and selector score)",
        FULL_BUDGET.with_overrides({"compression": "sentence", "compress_ratio": 0.6}),
    ),
    PipelineSpec(
        "default-compressed-tokens",
        "the default-compressed pipeline with token-level pruning: sentences to 1/0.8 of the target,"
        " then the words least similar to the question dropped down to it (numbers kept)",
        FULL_BUDGET.with_overrides({"compression": "sentence+token", "compress_ratio": 0.6}),
    ),
    PipelineSpec(
        "default-300",
        "the full-budget default with a 300-token budget: what selecting less gives, the baseline that"
        " compression to 60% of 500 tokens must beat",
        FULL_BUDGET.with_overrides({"budget_tokens": 300}),
    ),
    PipelineSpec(
        "default-no-graph",
        "the full-budget default without the graph step (ablation): the bubble grows from its anchors only",
        FULL_BUDGET.with_overrides({"bubble_graph_docs": 0}),
    ),
)


class UnknownPipeline(KeyError):
    pass


def get_pipeline(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise UnknownPipeline(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None


def pipeline_params(name: str, overrides: dict | None = None) -> tuple[PipelineSpec, RetrievalParams]:
    """Pipeline ``name`` and the parameters it runs with: its own, with ``overrides`` (flat
    names or groups) applied and validated (``ValidationError``, a ``ValueError``, for an
    unknown name or an out-of-range value; :class:`UnknownPipeline` for an unknown pipeline)."""
    spec = get_pipeline(name)
    return spec, spec.params.with_overrides(overrides)


class Retriever:
    """question → first stage → fused candidates → selection → context (with trace).

    Retrieval's stages only: a pipeline that compresses its context runs through
    ``service.stages.PipelineRunner``, which calls :meth:`run` and then compression.

        >>> retriever = Retriever(store, encoder)                        # doctest: +SKIP
        >>> result = retriever.retrieve("docs", "what is X?", "default") # doctest: +SKIP
        >>> [c.span.id for c in result.context.spans]                    # doctest: +SKIP
    """

    def __init__(
        self,
        store: SpanStore,
        encoder: Encoder,
        token_encoder: TokenEncoder | None = None,
        graph: GraphIndex | None = None,
        scoring_device: str = "cpu",
    ):
        self.store = store
        self.scoring_device = scoring_device  # "cuda": MaxSim runs on the GPU
        self.encoder = encoder
        self.graph = graph
        self.token_encoder: TokenEncoder = token_encoder or encoder
        self.selectors = {name: cls() for name, cls in SELECTORS.items()}

    def retrieve(
        self,
        collection: str,
        question: str,
        pipeline: str = "default",
        overrides: dict | None = None,
    ) -> RetrievalResult:
        spec, params = pipeline_params(pipeline, overrides)
        if params.compress.on:
            raise ValueError(
                f"pipeline {spec.name!r} compresses its context: run it through service.stages.PipelineRunner"
                " (retrieval does not import compression)"
            )
        return self.run(collection, question, spec.name, params)

    def run(
        self, collection: str, question: str, name: str, params: RetrievalParams, query_tokens: bool = False
    ) -> RetrievalResult:
        """Retrieval's stages with ready ``params`` (``name``: the pipeline's, for the result);
        ``query_tokens``: encode the question's token vectors even when the first stage does
        not use them (a later stage does; they come back in ``RetrievalResult.query_tokens``)."""
        first = params.first_stage
        timings: dict[str, float] = {}

        started = time.perf_counter()
        tokens_needed = first.late_interaction or query_tokens
        tokens = None
        if tokens_needed:
            self._check_token_model(collection)
        if tokens_needed and self.token_encoder is self.encoder:
            query_vector, tokens = self.encoder.encode_query_with_tokens(question)  # one pass
        else:
            query_vector = self.encoder.encode_query(question)
            if tokens_needed:
                tokens = self.token_encoder.encode_query_tokens(question)
        timings["encode_ms"] = elapsed_ms(started)

        t = time.perf_counter()
        signals = fetch_signals(self.store, collection, question, query_vector, first)
        if first.xtr_k:
            assert tokens is not None  # encoded above: late interaction needs the query's tokens
            signals["xtr"] = xtr_documents(self.store, collection, tokens, first.xtr_k)
        ranked_documents = rank_documents(signals, first)
        timings["first_stage_ms"] = elapsed_ms(t)
        if first.maxsim_depth:
            assert tokens is not None  # as for XTR
            t = time.perf_counter()
            signals["maxsim"] = maxsim_documents(
                self.store,
                collection,
                tokens,
                ranked_documents,
                first.maxsim_depth,
                self.scoring_device,
            )
            ranked_documents = rank_documents(signals, first)
            timings["maxsim_ms"] = elapsed_ms(t)
        candidates = score_candidates(fuse(signals, first), ranked_documents, first)
        if not candidates:  # only document-level signals (xtr-only): each document's best span
            candidates = score_candidates(
                [Candidate(d.best_span_id, {"rrf_span": 0.0}, {}) for d in ranked_documents],
                ranked_documents,
                first,
            )

        t = time.perf_counter()
        pool = candidates[: first.candidate_pool]
        loaded = {s.id: s for s in self.store.get_spans(collection, [c.span_id for c in pool])}
        for candidate in pool:
            candidate.span = loaded.get(candidate.span_id)
        pool = [c for c in pool if c.span is not None]  # gone if another writer deleted it
        inputs = SelectionInputs(collection, question, query_vector, self.store, self.encoder.count_tokens, self.graph)
        selector = self.selectors[params.selection.selector]
        options = getattr(params, selector.group) if selector.group else None  # its own group
        context = selector.select(pool, params.selection, inputs, options)
        self._attach_pieces(collection, context)
        timings["selection_ms"] = elapsed_ms(t)
        timings["retrieval_ms"] = elapsed_ms(started)
        return RetrievalResult(
            question=question,
            pipeline=name,
            query_vector=query_vector,
            candidates=candidates,
            ranked_documents=ranked_documents,
            context=context,
            timings_ms=timings,
            query_tokens=tokens,
        )

    def _check_token_model(self, collection: str) -> None:
        stored = self.store.token_model(collection)
        if stored is not None and stored != self.token_encoder.name:
            raise StoreMismatch(
                f"collection {collection!r} holds token vectors from {stored!r}, not from the"
                f" configured token model {self.token_encoder.name!r}; re-ingest to recompute them"
            )

    def _attach_pieces(self, collection: str, context: Context) -> None:
        """Give each selected span its citable pieces (its sentences and table rows) and
        their stored vectors, fetched in one call for the whole context.

        Queries run alongside writes (see ``indexing/store/base.py``): a piece whose vector
        is gone by now is left out, and a selected span left without pieces (its document
        was deleted or replaced since selection read it) leaves the context, traced as
        ``vanished``."""
        for item in context.spans:
            item.pieces = self._pieces(collection, item.span)
        found = self.store.find_vectors(collection, [p.id for item in context.spans for p in item.pieces])
        kept: list[ContextSpan] = []
        for item in context.spans:
            item.pieces = [p for p in item.pieces if p.id in found]
            if item.pieces:
                item.piece_vectors = np.stack([found[p.id] for p in item.pieces])
                kept.append(item)
        if len(kept) < len(context.spans):
            _drop_vanished(context, kept)

    def _pieces(self, collection: str, span: Span) -> list[Span]:
        """The span itself when it is a piece, else the pieces inside it; a piece whose text
        is not the span's own at its offsets belongs to another version of the document (a
        concurrent replace) and is left out."""
        if span.granularity in PIECE_GRANULARITIES:
            return [span]
        inside = self.store.spans_within(collection, span, list(PIECE_GRANULARITIES))
        if not inside:
            return [span]
        return [p for p in inside if _within_text(span, p)]


def _within_text(span: Span, piece: Span) -> bool:
    """``piece`` is the text of ``span`` at its offsets (offsets index the document's
    normalized text, so pieces of one version of a document always pass)."""
    return piece.doc_id == span.doc_id and span.text[piece.start - span.start : piece.end - span.start] == piece.text


def _drop_vanished(context: Context, kept: list[ContextSpan]) -> None:
    """Leave out the context's spans that are not in ``kept``: their trace entries say
    ``vanished``, a table's first remaining row shows the header again, and the token count
    follows."""
    gone = {item.span.id for item in context.spans} - {item.span.id for item in kept}
    for entry in context.trace:
        if entry.span_id in gone and entry.decision == "taken":
            entry.decision, entry.reason = "dropped", "vanished"
    rows = [item for item in kept if item.span.granularity == "row" and item.span.header]
    # what a row not showing its header saves is its header's tokens
    header_tokens = {
        item.span.parent_id or item.span.doc_id: item.span.n_tokens - item.n_tokens
        for item in rows
        if not item.show_header
    }
    share_table_headers(rows, header_tokens)
    context.spans = kept
    context.n_tokens = sum(item.n_tokens for item in kept)


__all__ = ["PIPELINES", "PipelineSpec", "Retriever", "get_pipeline", "pipeline_params", "UnknownPipeline"]
