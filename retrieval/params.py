"""One object carries every retrieval and budget knob (a pipeline is one of these).

The knobs are grouped by the stage that reads them, and each stage receives only its own
group: ``first_stage`` (signals and fusion, ``retrieval/first_stage.py``), ``selection``
(which selector, and the limits every selector keeps), one group per selector that has knobs
of its own (``adaptive_k``, ``clustered``, ``bubble``: the selector's name) and ``compress``
(``compression/``). One :class:`RetrievalParams` still describes a whole pipeline.

The flat names users pass (HTTP ``options``, CLI flags, ``SPANRAG_*`` settings, pipeline
definitions, LangChain) keep working: ``bubble_graph_docs`` is ``bubble.graph_docs``,
``compress_ratio`` is ``compress.ratio``, ``compression`` is ``compress.method``,
``first_stage_k`` is ``first_stage.k`` (:data:`FLAT_NAMES` lists them all). They are
accepted when building the object and for reading it, and every override is validated:

    >>> RetrievalParams(top_k=3).with_overrides({"budget_tokens": 200}).selection.budget_tokens
    200
    >>> RetrievalParams(bubble_graph_docs=0).bubble.graph_docs
    0
    >>> RetrievalParams().with_overrides({"top_k": -3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pydantic_core._pydantic_core.ValidationError: 1 validation error for RetrievalParams
    ...

The five knobs a request, a CLI flag or a setting may override are declared once, as the
annotated types below, shared by :class:`RetrievalParams` and :class:`RetrievalOverrides`
(which ``app.options.RetrievalOptions`` and ``service.settings.Settings`` build on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from indexing.spans import GRANULARITIES, Granularity

# -- the override knobs, declared once -------------------------------------------------------

TopK = Annotated[int, Field(ge=1, le=200, description="most spans in the context")]
BudgetTokens = Annotated[
    int, Field(ge=1, le=100_000, description="most context tokens (model word pieces) selection keeps")
]
CompressionMethod = Literal["off", "sentence", "sentence+token"]
CompressBudgetTokens = Annotated[
    int, Field(ge=1, le=100_000, description="compression target in tokens (with compress_ratio, the tighter one)")
]
CompressRatio = Annotated[
    float, Field(gt=0, lt=1, description="compression target as a share of the selected context's tokens")
]

OVERRIDE_NAMES: tuple[str, ...] = ("top_k", "budget_tokens", "compression", "compress_budget_tokens", "compress_ratio")
"""The knobs a request, a CLI flag or a ``SPANRAG_*`` setting may override."""


class RetrievalOverrides(BaseModel):
    """The override knobs, all optional (None: the pipeline's value). The HTTP request
    models, the OpenAI ``extra_body``, the LangChain retriever's options, the CLI flags and
    the settings all validate through these declarations."""

    model_config = ConfigDict(allow_inf_nan=False)  # JSON's NaN and Infinity are refused, not run

    top_k: TopK | None = Field(None, description="most spans in the context")
    budget_tokens: BudgetTokens | None = Field(None, description="selection budget in tokens")
    compression: CompressionMethod | None = Field(
        None, description="prune the selected context before the generator (off, sentence, sentence+token)"
    )
    compress_budget_tokens: CompressBudgetTokens | None = Field(None, description="compression target in tokens")
    compress_ratio: CompressRatio | None = Field(
        None, description="compression target as a share of the selected tokens"
    )

    def overrides(self) -> dict[str, Any]:
        """The knobs that are set, by their flat names (what ``RetrievalParams.with_overrides`` takes)."""
        return {name: getattr(self, name) for name in OVERRIDE_NAMES if getattr(self, name) is not None}


# -- the groups ------------------------------------------------------------------------------

_GROUP_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_BM25_GRANULARITIES: tuple[Granularity, ...] = ("document", "paragraph", "sentence", "row")


class FirstStageParams(BaseModel):
    """Signals, fusion and the candidate pool (``retrieval/first_stage.py``)."""

    model_config = _GROUP_CONFIG

    dense_granularities: list[Granularity] = Field(
        default_factory=lambda: list(GRANULARITIES),
        description="span granularities searched densely; empty turns dense search off",
    )
    bm25_granularities: list[Granularity] = Field(
        default_factory=lambda: list(_BM25_GRANULARITIES),
        description="one BM25 list per granularity; empty turns BM25 off",
    )
    k: int = Field(1000, ge=1, description="spans fetched per first-stage signal (deep, for document recall@100)")
    span_fusion_depth: int = Field(200, ge=1, description="hits per list that enter span-level fusion")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank-fusion constant")
    dense_weight: float = Field(1.0, ge=0, description="weight of the dense list in RRF")
    bm25_weight: float = Field(1.0, ge=0, description="weight of BM25 in RRF, shared by its per-granularity lists")
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
    candidate_pool: int = Field(100, ge=1, description="fused candidates loaded for selection")

    @property
    def late_interaction(self) -> bool:
        """MaxSim or XTR runs: the query needs token vectors."""
        return bool(self.maxsim_depth or self.xtr_k)


class SelectionParams(BaseModel):
    """Which selector chooses the context, and the limits every selector keeps."""

    model_config = _GROUP_CONFIG

    selector: Literal["topk", "adaptive_k", "clustered", "bubble"] = Field(
        "topk", description="how the context is chosen from the fused candidates (retrieval/selection/)"
    )
    top_k: TopK = Field(5, description="most spans in the context")
    budget_tokens: BudgetTokens | None = Field(
        800, description="most context tokens (model word pieces); None for no cap"
    )
    context_granularities: list[Granularity] | None = Field(
        None, description="granularities allowed into the context; None allows all"
    )


class AdaptiveKParams(BaseModel):
    """The ``adaptive_k`` selector's own knobs (flat names ``adaptive_*``)."""

    model_config = _GROUP_CONFIG

    head_fraction: float = Field(
        0.0, ge=0, le=1, description="adaptive-k: ignore gaps inside this leading fraction of the list"
    )
    ignore_below_median: bool = Field(True, description="adaptive-k: ignore gaps in the tail below the median")
    buffer: int = Field(0, ge=0, description="adaptive-k: spans added after the cut")


class ClusteredParams(BaseModel):
    """The ``clustered`` selector's own knobs (flat names ``cluster_*``)."""

    model_config = _GROUP_CONFIG

    similarity: float = Field(
        0.9, gt=0, le=1, description="clustered: cosine at or above which candidates share a cluster"
    )
    keep: int = Field(1, ge=1, description="clustered: representatives kept per cluster")


class BubbleParams(BaseModel):
    """The context bubble's own knobs (flat names ``bubble_*``)."""

    model_config = _GROUP_CONFIG

    anchor_docs: int = Field(4, ge=1, description="bubble: documents whose best span anchors the bubble")
    graph_docs: int = Field(3, ge=0, description="bubble: documents added through the graph index")
    bridge_anchors: int = Field(
        2, ge=1, description="bubble: anchors whose pieces' entities may bring in the documents they name"
    )
    bridge_decay: float = Field(
        0.8, ge=0, le=1, description="bubble: a bridged document's prior, as a share of its anchor's"
    )
    region_units: int = Field(
        40, ge=1, description="bubble: a document with more pieces contributes only the anchor's section or table"
    )
    doc_weight: float = Field(0.5, ge=0, description="bubble: weight of the document's rank prior")
    doc_rank_scale: float = Field(
        2.5, gt=0, description="bubble: document prior exp(−(rank − 1) / scale) by fused document rank"
    )
    span_weight: float = Field(0.4, ge=0, description="bubble: weight of the piece's own first-stage score")
    coverage_weight: float = Field(0.2, ge=0, description="bubble: weight of newly covered question terms")
    redundancy_weight: float = Field(
        1.0, ge=0, description="bubble: penalty per unit of similarity above the threshold"
    )
    redundancy_threshold: float = Field(0.7, ge=-1, le=1, description="bubble: similarity where the penalty starts")
    duplicate_similarity: float = Field(
        0.95, ge=-1, le=1, description="bubble: at or above this a piece is dropped as redundant"
    )
    section_cap: int = Field(4, ge=1, description="bubble: most pieces from one section, table or paragraph group")
    doc_cap: int = Field(6, ge=1, description="bubble: most pieces from one document")
    min_gain: float = Field(0.2, description="bubble: stop growing below this gain")
    relative_min_gain: float = Field(
        0.0, ge=0, le=1, description="bubble: also stop below this share of the first piece's gain"
    )
    cost_weight: float = Field(0.0, ge=0, description="bubble: gain lost per 100 tokens a piece costs")
    rows_as_alternatives: bool = Field(
        True,
        description="bubble: table rows are redundant only with a row of the same text (other rows are alternatives)",
    )
    table_columns: bool = Field(
        True, description="bubble: show a table row with only its label and the columns of the years asked about"
    )


class CompressionParams(BaseModel):
    """The compression stage's knobs (flat names ``compression`` for ``method``, ``compress_*``)."""

    model_config = _GROUP_CONFIG

    method: CompressionMethod = Field(
        "off",
        description="prune the selected context before the generator (compression/): whole"
        " sentences and rows, optionally then words; runs only when the context exceeds the target",
    )
    budget_tokens: CompressBudgetTokens | None = Field(
        None, description="compression target in tokens (with ratio, the tighter one)"
    )
    ratio: CompressRatio | None = Field(
        None, description="compression target as a share of the selected context's tokens"
    )
    relevance_weight: float = Field(1.0, ge=0, description="compression: weight of a piece's cosine with the question")
    prior_weight: float = Field(
        2.5, ge=0, description="compression: weight of the selector's score of the piece's span"
    )
    coverage_weight: float = Field(
        6.0, ge=0, description="compression: weight of the question tokens a piece newly covers (MaxSim terms)"
    )
    lead_weight: float = Field(0.3, ge=0, description="compression: bonus for the first sentence of a paragraph")
    bridge_weight: float = Field(
        0.3,
        ge=0,
        description="compression: extra bonus for the first piece of a document the selector reached through the graph",
    )
    token_drop: float = Field(0.2, ge=0, lt=1, description="sentence+token: share of the target left to word dropping")

    @property
    def on(self) -> bool:
        return self.method != "off"


GROUPS: dict[str, type[BaseModel]] = {
    "first_stage": FirstStageParams,
    "selection": SelectionParams,
    "adaptive_k": AdaptiveKParams,
    "clustered": ClusteredParams,
    "bubble": BubbleParams,
    "compress": CompressionParams,
}
_PREFIXES = {
    "first_stage": "",
    "selection": "",
    "adaptive_k": "adaptive_",
    "clustered": "cluster_",
    "bubble": "bubble_",
    "compress": "compress_",
}
_RENAMED = {("first_stage", "k"): "first_stage_k", ("compress", "method"): "compression"}

FLAT_NAMES: dict[str, tuple[str, str]] = {
    _RENAMED.get((group, name), _PREFIXES[group] + name): (group, name)
    for group, model in GROUPS.items()
    for name in model.model_fields
}
"""Every flat knob name (the names before grouping) → its (group, field)."""


class RetrievalParams(BaseModel):
    """Knobs of the retrieval stack, one group per stage; flat names map into the groups.

    >>> p = RetrievalParams(selector="bubble", bubble_anchor_docs=2, compression="sentence")
    >>> p.selection.selector, p.bubble.anchor_docs, p.compress.method, p.top_k
    ('bubble', 2, 'sentence', 5)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_stage: FirstStageParams = Field(default_factory=FirstStageParams)
    selection: SelectionParams = Field(default_factory=SelectionParams)
    adaptive_k: AdaptiveKParams = Field(default_factory=AdaptiveKParams)
    clustered: ClusteredParams = Field(default_factory=ClusteredParams)
    bubble: BubbleParams = Field(default_factory=BubbleParams)
    compress: CompressionParams = Field(default_factory=CompressionParams)

    if TYPE_CHECKING:
        # Flat names (``top_k=3``) are accepted next to the groups (see _flat_names_into_groups),
        # which the pydantic plugin's generated __init__ would refuse; the model still validates.
        def __init__(self, **data: Any) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _flat_names_into_groups(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(name in FLAT_NAMES for name in data):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in GROUPS and isinstance(value, BaseModel):
                value = value.model_dump()
            if key in GROUPS and isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            elif key not in FLAT_NAMES:
                out[key] = value  # unknown names stay, and extra="forbid" refuses them
        for key, value in data.items():  # a flat name wins over its group's entry
            if key in FLAT_NAMES and key not in GROUPS:
                group, name = FLAT_NAMES[key]
                out.setdefault(group, {})
                if not isinstance(out[group], dict):
                    raise ValueError(f"{key} given next to a {group} that is not an object")
                out[group][name] = value
        return out

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> RetrievalParams:
        """These parameters with ``overrides`` (flat names, or ``{group: {name: value}}``)
        applied, validated like the pipeline definitions: an unknown name or an out-of-range
        value raises pydantic's ``ValidationError`` (a ``ValueError``)."""
        if not overrides:
            return self
        merged: dict[str, Any] = self.model_dump()
        for key, value in overrides.items():
            if key in GROUPS and isinstance(value, (dict, BaseModel)):
                value = value.model_dump() if isinstance(value, BaseModel) else value
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return type(self).model_validate(merged)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> RetrievalParams:
        """``model_copy(update=...)`` validates here (it is :meth:`with_overrides`): pydantic's
        own would set an unchecked value (``top_k=-3``) or an unknown name."""
        if update:
            return self.with_overrides(update)
        return super().model_copy(deep=deep)

    def flat(self) -> dict[str, Any]:
        """Every knob by its flat name (what a run record or a log line may show)."""
        return {flat: getattr(getattr(self, group), name) for flat, (group, name) in FLAT_NAMES.items()}

    def __getattr__(self, name: str) -> Any:
        # flat names stay readable (``params.top_k``, ``params.compression``) for callers
        # written before the grouping; stages read their own group
        where = FLAT_NAMES.get(name)
        if where is not None:
            return getattr(getattr(self, where[0]), where[1])
        return super().__getattr__(name)  # type: ignore[misc]


__all__ = [
    "AdaptiveKParams",
    "BubbleParams",
    "BudgetTokens",
    "ClusteredParams",
    "CompressBudgetTokens",
    "CompressRatio",
    "CompressionMethod",
    "CompressionParams",
    "FLAT_NAMES",
    "FirstStageParams",
    "GROUPS",
    "OVERRIDE_NAMES",
    "RetrievalOverrides",
    "RetrievalParams",
    "SelectionParams",
    "TopK",
]
