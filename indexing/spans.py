"""Core ingestion types: a document and the span tree cut from it.

Every span points into its document's normalized text with character offsets, so
``document.text[span.start:span.end] == span.text`` always holds. A table row also
carries its table's header line in ``header``; ``span.context_text`` is what an
embedder or a generator should read (header first, then the row).

    >>> doc = Document(id="a.md", collection="docs", title="A", source="/tmp/a.md",
    ...                content_hash="x", text="# A\\n\\nHello world.")
    >>> span = Span(id="a.md#3", doc_id="a.md", parent_id="a.md#0", granularity="sentence",
    ...             start=5, end=17, text="Hello world.", heading_path=["A"], n_tokens=3)
    >>> doc.text[span.start:span.end] == span.text
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Granularity = Literal["document", "section", "paragraph", "sentence", "table", "row"]
GRANULARITIES: tuple[Granularity, ...] = ("document", "section", "paragraph", "sentence", "table", "row")


@dataclass
class Document:
    id: str
    collection: str
    title: str
    source: str
    content_hash: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Span:
    id: str
    doc_id: str
    parent_id: str | None
    granularity: Granularity
    start: int
    end: int
    text: str
    heading_path: list[str] = field(default_factory=list)
    n_tokens: int = 0
    header: str = ""  # a table row's column header line; empty elsewhere
    order: int = 0  # position of the span in its document's span list (pre-order)

    @property
    def context_text(self) -> str:
        """The text to embed, score or show: a row's header line comes with the row."""
        return context_text(self.text, self.header)


def context_text(text: str, header: str = "") -> str:
    """A span's text with its table header line first, if it has one (what is embedded and
    what BM25 indexes, from a :class:`Span` or from stored columns).

        >>> context_text("2019 | 4.1", "year | revenue")
        'year | revenue\\n2019 | 4.1'
    """
    return f"{header}\n{text}" if header else text


def span_id(doc_id: str, order: int) -> str:
    """Span ids are stable for a given document version: ``<doc_id>#<pre-order position>``.
    :func:`doc_id_of` and :func:`order_of` read them back (a doc id may itself contain ``#``).

        >>> span_id("notes#v2.md", 3), doc_id_of("notes#v2.md#3"), order_of("notes#v2.md#3")
        ('notes#v2.md#3', 'notes#v2.md', 3)
    """
    return f"{doc_id}#{order}"


def doc_id_of(span_id: str) -> str:
    """The document a span id belongs to: everything before its last ``#``. The one place
    that reads span ids; indexing, retrieval and the apps all use it."""
    return span_id.rsplit("#", 1)[0]


def order_of(span_id: str) -> int | None:
    """The span's position in its document's span list (the part after the last ``#``);
    None for an id that has none."""
    _, sep, order = span_id.rpartition("#")
    return int(order) if sep and order.isascii() and order.isdigit() else None
