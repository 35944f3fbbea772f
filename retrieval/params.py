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
    selector: Literal["topk"] = "topk"
    top_k: int = Field(5, ge=1, le=200, description="most spans in the context")
    budget_tokens: int | None = Field(
        800, ge=1, description="most context tokens (model word pieces); None for no cap"
    )
    context_granularities: list[Granularity] | None = Field(
        None, description="granularities allowed into the context; None allows all"
    )
    candidate_pool: int = Field(100, ge=1, description="fused candidates loaded for selection")
