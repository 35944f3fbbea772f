"""Turn a parser's blocks into the pre-order span tree of one document.

    >>> from indexing.parsers import parse_text
    >>> from indexing.sentences import SentenceSplitter
    >>> parsed = parse_text("# Intro\\n\\nHello world. Bye now.", fmt="markdown")
    >>> spans = build_span_tree("a.md", parsed, lambda ts: [len(t.split()) for t in ts],
    ...                         SentenceSplitter())
    >>> [(s.granularity, s.heading_path, s.text) for s in spans][1:3]
    [('section', ['Intro'], 'Intro\\n\\nHello world. Bye now.'), ('paragraph', ['Intro'], 'Hello world. Bye now.')]

Shape: one ``document`` span (heading_path ``[]``), then for every block in document
order: a heading opens a ``section`` (closing open sections of the same or deeper
level) that runs to the end of its last block; a paragraph gives a ``paragraph`` with
one ``sentence`` child per sentence; a table gives a ``table`` with one ``row`` child per
data row, each row carrying the table's header line. ``heading_path`` lists the titles
of the enclosing headings, outermost first. Span ``order`` is its index in the list.

With ``max_spans`` set, a document whose tree would have more spans raises
:class:`~indexing.parsers.limits.DocumentTooLarge` as soon as the count passes it, before
any tokens are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from indexing.parsers.base import Block, ParsedDocument
from indexing.parsers.limits import DocumentTooLarge
from indexing.spans import Granularity, Span, span_id


class Splitter(Protocol):
    """What splits a paragraph into sentences (:class:`SentenceSplitter`)."""

    def split(self, text: str) -> list[tuple[int, int]]: ...


@dataclass
class _OpenSection:
    level: int
    span: Span
    last_end: int


@dataclass
class _Builder:
    doc_id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    max_spans: int | None = None

    def add(
        self,
        granularity: Granularity,
        start: int,
        end: int,
        parent: Span | None,
        heading_path: list[str],
        header: str = "",
    ) -> Span:
        order = len(self.spans)
        if self.max_spans is not None and order >= self.max_spans:
            raise DocumentTooLarge(
                "max_spans", self.max_spans, f"document {self.doc_id!r} has more than {self.max_spans} spans", order + 1
            )
        span = Span(
            id=span_id(self.doc_id, order),
            doc_id=self.doc_id,
            parent_id=parent.id if parent else None,
            granularity=granularity,
            start=start,
            end=end,
            text=self.text[start:end],
            heading_path=list(heading_path),
            header=header,
            order=order,
        )
        self.spans.append(span)
        return span


def build_span_tree(
    doc_id: str,
    parsed: ParsedDocument,
    count_tokens: Callable[[list[str]], list[int]],
    splitter: Splitter,
    max_spans: int | None = None,
) -> list[Span]:
    """Build the span list of ``parsed`` in pre-order; ``count_tokens`` is called once."""
    text = parsed.text
    b = _Builder(doc_id, text, max_spans=max_spans)
    document = b.add("document", 0, len(text), None, [])
    stack: list[_OpenSection] = []

    def close(section: _OpenSection) -> None:
        section.span.end = section.last_end
        section.span.text = text[section.span.start : section.last_end]
        if stack:  # a closed subsection extends its parent
            stack[-1].last_end = max(stack[-1].last_end, section.last_end)

    for block in _clean_blocks(parsed.blocks, text):
        if block.kind == "heading":
            level = max(block.level, 1)
            while stack and stack[-1].level >= level:
                close(stack.pop())
            path = [s.span.heading_path[-1] for s in stack] + [_heading_title(text, block)]
            parent = stack[-1].span if stack else document
            span = b.add("section", block.start, block.end, parent, path)
            stack.append(_OpenSection(level, span, block.end))
            continue
        parent = stack[-1].span if stack else document
        path = parent.heading_path
        if block.kind == "table":
            _add_table(b, block, parent, path)
        else:
            paragraph = b.add("paragraph", block.start, block.end, parent, path)
            for start, end in splitter.split(paragraph.text):
                b.add("sentence", block.start + start, block.start + end, paragraph, path)
        if stack:
            stack[-1].last_end = max(stack[-1].last_end, block.end)
    while stack:
        close(stack.pop())

    counts = count_tokens([s.context_text for s in b.spans])
    for span, n in zip(b.spans, counts, strict=True):
        span.n_tokens = n
    return b.spans


def _add_table(b: _Builder, block: Block, parent: Span, path: list[str]) -> None:
    table = b.add("table", block.start, block.end, parent, path)
    header = ""
    if block.header is not None:
        header = b.text[block.header.start : block.header.end].strip()
    for row in block.rows:
        start, end = _trim(b.text, row.start, row.end)
        if start < end and block.start <= start and end <= block.end:
            b.add("row", start, end, table, path, header=header)


def _heading_title(text: str, block: Block) -> str:
    return " ".join(text[block.start : block.end].split())


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    segment = text[start:end]
    stripped = segment.lstrip()
    start += len(segment) - len(stripped)
    return start, start + len(stripped.rstrip())


def _clean_blocks(blocks: list[Block], text: str) -> list[Block]:
    """Blocks clipped to the text, trimmed of whitespace, empty ones dropped, in order."""
    cleaned = []
    for block in sorted(blocks, key=lambda bl: bl.start):
        start = max(0, min(block.start, len(text)))
        start, end = _trim(text, start, max(start, min(block.end, len(text))))
        if start < end:
            cleaned.append(
                Block(kind=block.kind, start=start, end=end, level=block.level, header=block.header, rows=block.rows)
            )
    return cleaned
