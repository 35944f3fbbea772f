"""What a generator returns: the answer text and the spans its ``[n]`` markers cite; and
the earlier conversation turns it may be given (``History``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

History = Sequence[Mapping[str, str]]  # earlier {"role": "user" | "assistant", "content": str} turns


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
