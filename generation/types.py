"""What a generator returns: the answer text and the spans its ``[n]`` markers cite."""

from __future__ import annotations

from dataclasses import dataclass, field


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
