"""What ``RagService.query`` and ``RagService.query_stream`` return: typed results, and the
one place they become the documented JSON (``as_dict``).

Each surface converts a result once, at its edge: the native HTTP API and ``spanrag query
--json`` send ``QueryResult.as_dict()`` as is (the "answer object"), the OpenAI-compatible
API reshapes the same result into a ``chat.completion``, and a stream sends each event's
``as_dict()``.

    >>> out = rag.query("docs", "What does spanrag store?")         # doctest: +SKIP
    >>> out.answer.text, out.answer.citations[0].span_id             # doctest: +SKIP
    >>> out.sources.context_tokens, out.sources.pipeline             # doctest: +SKIP
    >>> out.as_dict()["answer"] == out.answer.text                   # doctest: +SKIP
    True

The answer object's keys, in order: ``answer``, ``citations``, ``abstained``,
``timings_ms``, ``generator`` (the answer half, ``QueryAnswer``), then ``context``,
``usage``, ``pipeline``, ``retrieval_question`` (a chat follow-up only) and ``trace`` (when
asked) (the retrieval half, ``QuerySources``). A stream sends the halves on their own:
``("context", QuerySources)``, ``("delta", AnswerDelta)`` for each piece of the answer, then
``("answer", QueryAnswer)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # kept light: `spanrag --help` imports the service without numpy or models
    from generation.types import Answer, Citation
    from retrieval.types import CompressionReport, ContextSpan, RetrievalResult, TraceEntry


@dataclass(frozen=True)
class QueryAnswer:
    """The answer half: text with ``[n]`` markers, what each marker cites, whether the
    generator declined (``abstained``: the context does not support an answer; the text says
    so and cites nothing), the timings and the generator's name."""

    text: str
    citations: list[Citation]
    abstained: bool
    timings_ms: dict[str, float]
    generator: str

    @classmethod
    def of(cls, answer: Answer, timings_ms: dict[str, float]) -> QueryAnswer:
        return cls(answer.text, list(answer.citations), answer.abstained, timings_ms, answer.generator)

    def as_dict(self) -> dict:
        return {
            "answer": self.text,
            "citations": self.citation_dicts(),
            "abstained": self.abstained,
            "timings_ms": self.timings_ms,
            "generator": self.generator,
        }

    def citation_dicts(self) -> list[dict]:
        return [asdict(c) for c in self.citations]


@dataclass(frozen=True)
class QuerySources:
    """The retrieval half: the context the answer is written from (reading order), its token
    count and what compression did (``compression`` None: the pipeline has none), the
    pipeline, what was searched when it was not the question (a chat follow-up), and every
    candidate's trace when asked (None: not asked)."""

    context: list[ContextSpan]
    context_tokens: int
    compression: CompressionReport | None
    pipeline: str
    retrieval_question: str | None = None
    trace: list[TraceEntry] | None = None

    @classmethod
    def of(cls, result: RetrievalResult, trace: bool = False) -> QuerySources:
        return cls(
            context=list(result.context.spans),
            context_tokens=result.context.n_tokens,
            compression=result.compression,
            pipeline=result.pipeline,
            retrieval_question=result.retrieval_question,
            trace=list(result.context.trace) if trace else None,
        )

    def usage(self) -> dict:
        return usage_dict(self.context_tokens, self.compression)

    def as_dict(self) -> dict:
        out = {
            "context": [span_payload(item) for item in self.context],
            "usage": self.usage(),
            "pipeline": self.pipeline,
        }
        if self.retrieval_question is not None:
            out["retrieval_question"] = self.retrieval_question
        if self.trace is not None:
            out["trace"] = [asdict(t) for t in self.trace]
        return out


@dataclass(frozen=True)
class AnswerDelta:
    """The next piece of a streamed answer."""

    text: str

    def as_dict(self) -> dict:
        return {"text": self.text}


@dataclass(frozen=True)
class QueryResult:
    """``RagService.query``'s answer: ``as_dict()`` is the answer object of ``/query`` and
    ``spanrag query --json``."""

    answer: QueryAnswer
    sources: QuerySources

    def as_dict(self) -> dict:
        return {**self.answer.as_dict(), **self.sources.as_dict()}


QueryEvent = (
    tuple[Literal["context"], QuerySources]
    | tuple[Literal["delta"], AnswerDelta]
    | tuple[Literal["answer"], QueryAnswer]
)
"""One event of ``RagService.query_stream``: ``(kind, payload)``; ``payload.as_dict()`` is
what a stream sends."""


# -- JSON pieces, shared with /retrieve and the LangChain retriever -----------------------------


def span_payload(item: ContextSpan, standalone: bool = False) -> dict:
    """``text`` is what the context shows; ``standalone`` pieces (returned one by one, best
    first) always carry their table header."""
    span = item.span
    return {
        "span_id": span.id,
        "doc_id": span.doc_id,
        "text": span.context_text if standalone else item.text,
        "score": item.score,
        "granularity": span.granularity,
        "start": span.start,
        "end": span.end,
        "heading_path": span.heading_path,
    }


def usage_dict(context_tokens: int, report: CompressionReport | None) -> dict:
    """Context tokens sent to the generator, and what compression did to get there
    (``compression`` is None when the pipeline has no compression stage)."""
    return {
        "context_tokens": context_tokens,
        "compression": None if report is None else {**asdict(report), "removed_share": round(report.removed_share, 4)},
    }


def usage_payload(result: RetrievalResult) -> dict:
    """``usage_dict`` of a retrieval result."""
    return usage_dict(result.context.n_tokens, result.compression)


def context_payload(result: RetrievalResult) -> list[dict]:
    """The selected context in reading order."""
    return [span_payload(item) for item in result.context.spans]


def trace_payload(result: RetrievalResult) -> list[dict]:
    """Every candidate's score parts and why it was taken or dropped."""
    return [asdict(t) for t in result.context.trace]


def ranked_payload(result: RetrievalResult) -> list[dict]:
    """The selected context best first: what ``/retrieve`` and the LangChain retriever return."""
    return [span_payload(item, standalone=True) for item in sorted(result.context.spans, key=lambda c: -c.score)]
