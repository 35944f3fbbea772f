"""What every parser returns: normalized text plus its structural blocks.

A parser never builds spans itself; :func:`indexing.span_tree.build_span_tree` turns the
blocks into the span tree, so every format gets the same granularities and offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class ParseError(ValueError):
    """A file or record that cannot be parsed; the message is the reason shown to the user."""


def as_parse_error(what: str, exc: BaseException, doing: str = "parse") -> ParseError:
    """``exc``, raised while working on one input, as the ParseError to show the user:
    a ParseError stays itself; anything else (a library's own error, a RecursionError, a
    MemoryError) is about that one input only.

        >>> str(as_parse_error("notes.md", RecursionError("depth")))
        'cannot parse notes.md: nested too deeply (depth)'
    """
    if isinstance(exc, ParseError):
        return exc
    if isinstance(exc, RecursionError):
        return ParseError(f"cannot {doing} {what}: nested too deeply ({exc})")
    if isinstance(exc, MemoryError):
        return ParseError(f"cannot {doing} {what}: out of memory")
    return ParseError(f"cannot {doing} {what}: {type(exc).__name__}: {exc}")


@dataclass
class TableRow:
    start: int  # offsets of the row's line in ParsedDocument.text
    end: int


@dataclass
class Block:
    """One structural unit of a parsed document, as offsets into ``ParsedDocument.text``.

    kind ``heading``: a section title with ``level`` (1 = top); the section runs until the
    next heading of the same or a higher level. kind ``paragraph``: running text.
    kind ``table``: ``header`` is the header row's line, ``rows`` the data rows' lines.
    """

    kind: Literal["heading", "paragraph", "table"]
    start: int
    end: int
    level: int = 0
    header: TableRow | None = None
    rows: list[TableRow] = field(default_factory=list)


@dataclass
class ParsedDocument:
    text: str  # normalized text; every offset below points into it
    title: str
    blocks: list[Block]
    doc_id: str | None = None  # set by record formats (JSONL); file formats get theirs from ingest
    metadata: dict[str, Any] = field(default_factory=dict)
