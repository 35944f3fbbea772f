"""What retrieval hands on: scored candidates, the selected context and its trace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from indexing.spans import Granularity, Span, doc_id_of  # noqa: F401  (doc_id_of: re-exported, its home is indexing.spans)

PIECE_GRANULARITIES: tuple[Granularity, ...] = ("sentence", "row")  # what a context shows and an answer cites


@dataclass
class Candidate:
    """A span with every score that ranked it, never a bare float.

    ``scores`` holds the raw signals (``dense``, ``bm25:<granularity>``), the fusion parts
    (``rrf_span``, ``rrf_document``) and ``fused``;
    ``ranks`` holds the 1-based rank of the span in each signal's list.
    """

    span_id: str
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    span: Span | None = None  # loaded only for candidates that reach selection

    @property
    def doc_id(self) -> str:
        return doc_id_of(self.span_id)

    @property
    def loaded_span(self) -> Span:
        """``span``, for the stages after it is loaded (selection: candidates arrive loaded)."""
        if self.span is None:
            raise ValueError(f"candidate {self.span_id!r} reached selection without its span")
        return self.span

    @property
    def fused(self) -> float:
        return self.scores.get("fused", 0.0)


@dataclass
class RankedDocument:
    doc_id: str
    score: float
    best_span_id: str


DropReason = Literal[
    "budget",
    "overlap",
    "k_reached",
    "below_cut",
    "cluster_duplicate",
    "redundant",
    "section_cap",
    "doc_cap",
    "low_gain",
    "vanished",  # deleted or replaced by a concurrent write after the first stage found it
]


@dataclass
class TraceEntry:
    span_id: str
    rank: int
    scores: dict[str, float]
    n_tokens: int
    decision: Literal["taken", "dropped"]
    reason: str  # why taken ("rank within k and budget") or the DropReason
    source: str = "first_stage"  # how it became a candidate: first_stage | anchor | structure | graph


@dataclass(frozen=True)
class RowProjection:
    """A table row shown with some of its columns (``retrieval.tables``): the header lines
    and the row cut to ``columns`` (indices into the row's ``|`` cells)."""

    header: str
    row: str
    columns: tuple[int, ...]

    @property
    def context_text(self) -> str:
        return f"{self.header}\n{self.row}" if self.header else self.row


@dataclass
class ContextSpan:
    """A selected span, with its citable pieces (sentences or table rows) inside it."""

    span: Span
    score: float
    pieces: list[Span] = field(default_factory=list)
    piece_vectors: np.ndarray | None = None
    show_header: bool = True  # False for a table row whose header an earlier row shows
    n_tokens: int = -1  # what it costs in the context; -1: the span's own count
    display_text: str | None = None  # set by token-level compression: the span with words dropped
    projection: RowProjection | None = None  # a table row cut to the columns the question asks about
    whole_tokens: int = -1  # what it costs with its header line shown; -1: the span's own count

    def __post_init__(self) -> None:
        if self.whole_tokens < 0:
            self.whole_tokens = self.span.n_tokens
        if self.n_tokens < 0:
            self.n_tokens = self.whole_tokens

    @property
    def text(self) -> str:
        """What the context shows for it (citations still carry the span's own text)."""
        if self.display_text is not None:
            return self.display_text
        if self.projection is not None:
            return self.projection.context_text if self.show_header else self.projection.row
        return self.span.context_text if self.show_header else self.span.text


@dataclass
class Context:
    spans: list[ContextSpan]
    n_tokens: int
    trace: list[TraceEntry] = field(default_factory=list)


@dataclass
class CompressionReport:
    """Whether the compression stage ran on the selected context, and what it removed.

    ``applied`` is False when the selected context already fit ``target_tokens`` (the gate)
    or compression is off (``method == "off"``); the counts then stay equal."""

    method: str  # off | sentence | sentence+token
    applied: bool
    target_tokens: int | None
    tokens_before: int
    tokens_after: int
    pieces_before: int
    pieces_after: int

    @property
    def removed_share(self) -> float:
        return 1 - self.tokens_after / self.tokens_before if self.tokens_before else 0.0


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` reading), as ``timings_ms`` keeps them."""
    return round((time.perf_counter() - since) * 1000, 3)


@dataclass
class RetrievalResult:
    question: str
    pipeline: str
    query_vector: np.ndarray
    candidates: list[Candidate]  # fused order, all first-stage spans
    ranked_documents: list[RankedDocument]
    context: Context
    timings_ms: dict[str, float]
    compression: CompressionReport | None = None  # None: the pipeline has no compression stage
    retrieval_question: str | None = None  # what was searched, when not ``question`` (a chat follow-up)
    query_tokens: np.ndarray | None = None  # the question's token vectors, when a stage needed them
