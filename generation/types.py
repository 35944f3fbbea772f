"""What a generator returns: the answer text and the spans its ``[n]`` markers cite; the
earlier conversation turns it may be given (``History``); and a request's sampling wishes
(``Sampling``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

History = Sequence[Mapping[str, str]]  # earlier {"role": "user" | "assistant", "content": str} turns


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters a request asks for (the OpenAI names). ``None`` keeps the
    generator's own setting; ``max_tokens`` can only lower the generator's cap, so a client
    cannot buy longer answers than the server allows. A generator without a model (the
    extractive one) ignores them."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass
class Citation:
    id: int  # the n in "[n]"
    span_id: str
    doc_id: str
    text: str
    start: int
    end: int
    heading_path: list[str] = field(default_factory=list)


@dataclass
class Answer:
    text: str
    citations: list[Citation]
    generator: str
    # True: the context does not support an answer; the text says so and cites nothing.
    # Not part of equality: it qualifies the text, which the comparison already covers.
    abstained: bool = field(default=False, compare=False)
