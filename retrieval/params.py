"""One object carries every retrieval and budget knob (a pipeline is one of these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from indexing.spans import GRANULARITIES, Granularity


class RetrievalParams(BaseModel):
    """Knobs of the retrieval stack.

        >>> RetrievalParams(top_k=3).model_copy(update={"budget_tokens": 200}).budget_tokens
        200
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dense_granularities: list[Granularity] = Field(
        default_factory=lambda: list(GRANULARITIES),
        description="span granularities searched densely; empty turns dense search off",
    )
    bm25_granularities: list[Granularity] = Field(
        default_factory=lambda: ["document", "paragraph", "sentence", "row"],
        description="one BM25 list per granularity; empty turns BM25 off",
    )
    first_stage_k: int = Field(
        1000, ge=1, description="spans fetched per first-stage signal (deep, for document recall@100)"
    )
    span_fusion_depth: int = Field(200, ge=1, description="hits per list that enter span-level fusion")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank-fusion constant")
    dense_weight: float = Field(1.0, ge=0, description="weight of the dense list in RRF")
    bm25_weight: float = Field(
        1.0, ge=0, description="weight of BM25 in RRF, shared by its per-granularity lists"
    )
    maxsim_depth: int = Field(
        0, ge=0, description="top documents rescored by token-level MaxSim (0: off; needs token vectors)"
    )
    maxsim_weight: float = Field(1.0, ge=0, description="weight of the MaxSim list in document RRF")
    xtr_k: int = Field(
        0, ge=0, description="stored tokens retrieved per query token for XTR scoring (0: off; needs token vectors)"
    )
    xtr_weight: float = Field(1.0, ge=0, description="weight of the XTR list in document RRF")
    document_signals: list[str] = Field(
        default_factory=lambda: ["dense", "bm25:document", "maxsim", "xtr"],
        description="signals whose per-document ranks are fused into the document ranking",
    )
    doc_prior_weight: float = Field(
        1.0, ge=0, description="weight of a span's document score in the span's fused score"
    )
    selector: Literal["topk", "adaptive_k", "clustered", "bubble"] = Field(
        "topk", description="how the context is chosen from the fused candidates (retrieval/selection/)"
    )
    top_k: int = Field(5, ge=1, le=200, description="most spans in the context")
    budget_tokens: int | None = Field(
        800, ge=1, description="most context tokens (model word pieces); None for no cap"
    )
    context_granularities: list[Granularity] | None = Field(
        None, description="granularities allowed into the context; None allows all"
    )
    candidate_pool: int = Field(100, ge=1, description="fused candidates loaded for selection")
    adaptive_head_fraction: float = Field(
        0.0, ge=0, le=1, description="adaptive-k: ignore gaps inside this leading fraction of the list"
    )
    adaptive_ignore_below_median: bool = Field(True, description="adaptive-k: ignore gaps in the tail below the median")
    adaptive_buffer: int = Field(0, ge=0, description="adaptive-k: spans added after the cut")
    cluster_similarity: float = Field(
        0.9, gt=0, le=1, description="clustered: cosine at or above which candidates share a cluster"
    )
    cluster_keep: int = Field(1, ge=1, description="clustered: representatives kept per cluster")
    bubble_anchor_docs: int = Field(4, ge=1, description="bubble: documents whose best span anchors the bubble")
    bubble_graph_docs: int = Field(3, ge=0, description="bubble: documents added through the graph index")
    bubble_bridge_anchors: int = Field(
        2, ge=1, description="bubble: anchors whose pieces' entities may bring in the documents they name"
    )
    bubble_bridge_decay: float = Field(
        0.8, ge=0, le=1, description="bubble: a bridged document's prior, as a share of its anchor's"
    )
    bubble_region_units: int = Field(
        40, ge=1, description="bubble: a document with more pieces contributes only the anchor's section or table"
    )
    bubble_doc_weight: float = Field(0.5, ge=0, description="bubble: weight of the document's rank prior")
    bubble_doc_rank_scale: float = Field(
        2.5, gt=0, description="bubble: document prior exp(−(rank − 1) / scale) by fused document rank"
    )
    bubble_span_weight: float = Field(0.4, ge=0, description="bubble: weight of the piece's own first-stage score")
    bubble_coverage_weight: float = Field(0.2, ge=0, description="bubble: weight of newly covered question terms")
    bubble_redundancy_weight: float = Field(1.0, ge=0, description="bubble: penalty per unit of similarity above the threshold")
    bubble_redundancy_threshold: float = Field(0.7, ge=-1, le=1, description="bubble: similarity where the penalty starts")
    bubble_duplicate_similarity: float = Field(0.95, ge=-1, le=1, description="bubble: at or above this a piece is dropped as redundant")
    bubble_section_cap: int = Field(4, ge=1, description="bubble: most pieces from one section, table or paragraph group")
    bubble_doc_cap: int = Field(6, ge=1, description="bubble: most pieces from one document")
    bubble_min_gain: float = Field(0.2, description="bubble: stop growing below this gain")
    bubble_relative_min_gain: float = Field(
        0.0, ge=0, le=1, description="bubble: also stop below this share of the first piece's gain"
    )
    compression: Literal["off", "sentence", "sentence+token"] = Field(
        "off", description="prune the selected context before the generator (compression/): whole"
        " sentences and rows, optionally then words; runs only when the context exceeds the target",
    )
    compress_budget_tokens: int | None = Field(
        None, ge=1, description="compression target in tokens (with compress_ratio, the tighter one)"
    )
    compress_ratio: float | None = Field(
        None, gt=0, lt=1, description="compression target as a share of the selected context's tokens"
    )
    compress_relevance_weight: float = Field(1.0, ge=0, description="compression: weight of a piece's cosine with the question")
    compress_prior_weight: float = Field(2.5, ge=0, description="compression: weight of the selector's score of the piece's span")
    compress_coverage_weight: float = Field(
        6.0, ge=0, description="compression: weight of the question tokens a piece newly covers (MaxSim terms)"
    )
    compress_lead_weight: float = Field(0.3, ge=0, description="compression: bonus for the first sentence of a paragraph")
    compress_bridge_weight: float = Field(
        0.3, ge=0, description="compression: extra bonus for the first piece of a document the selector reached through the graph"
    )
    compress_token_drop: float = Field(
        0.2, ge=0, lt=1, description="sentence+token: share of the target left to word dropping"
    )
