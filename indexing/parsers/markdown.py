"""Markdown via markdown-it-py (CommonMark + GFM pipe tables).

The normalized text is the source itself (newlines normalized, markup kept); block
offsets come from each token's ``map`` (its source line range). Heading blocks point at
the heading's own text, without ``#`` marks or setext underline, so the span tree can
use them as section titles.

    >>> doc = parse_markdown("# Guide\\n\\n## Setup\\n\\nRun it.\\n", "guide")
    >>> doc.title, [(b.kind, b.level, doc.text[b.start:b.end]) for b in doc.blocks]
    ('Guide', [('heading', 1, 'Guide'), ('heading', 2, 'Setup'), ('paragraph', 0, 'Run it.')])
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

from indexing.parsers.base import Block, ParsedDocument, TableRow
from indexing.parsers.limits import DocumentTooLarge, ParseLimits, check_chars, resolve
from indexing.parsers.text import decode_text, normalize_newlines

_PARAGRAPH_TOKENS = {"paragraph_open", "blockquote_open", "fence", "code_block", "html_block"}
_LIST_TOKENS = {"bullet_list_open", "ordered_list_open"}
# Only block structure is used: inline parsing (emphasis, links...) would build a token per
# inline element for nothing, so it is off. Block nesting is capped by markdown-it's own
# maxNesting.
_MARKDOWN = MarkdownIt("commonmark").enable("table").disable("inline")
# A GFM table's delimiter row: pipes, dashes, colons and spaces only (``|---|:--:|``).
_DELIMITER_ROW = re.compile(
    r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)+\|?[ \t]*$"
    r"|^[ \t]*\|[ \t]*:?-+:?[ \t]*\|?[ \t]*$",
    re.MULTILINE,
)
_BLANK_LINE = re.compile(r"\n[ \t]*(?:\n|$)")
_DASHES = re.compile("-+")


class _Lines:
    """Character offsets of source lines, so token line ranges become text offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def span(self, first: int, stop: int) -> tuple[int, int]:
        """Offsets of lines ``[first, stop)``, trimmed of surrounding whitespace."""
        start = self.starts[min(first, len(self.starts) - 1)]
        end = self.starts[stop] if stop < len(self.starts) else len(self.text)
        segment = self.text[start:end]
        start += len(segment) - len(segment.lstrip())
        return start, start + len(segment.strip())


def parse_markdown(text: str, fallback_title: str = "", limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse Markdown source; title is the first H1, else ``fallback_title``."""
    text = normalize_newlines(text)
    limits = resolve(limits)
    check_chars(text, limits)
    _check_tables(text, limits)
    tokens = _MARKDOWN.parse(text)
    lines = _Lines(text)
    blocks: list[Block] = []
    title = ""
    for i, token in enumerate(tokens):
        if token.map is None:
            continue
        if token.type == "heading_open" and token.level == 0:
            block = _heading(token, tokens[i + 1], lines)
            blocks.append(block)
            if not title and block.level == 1:
                title = text[block.start : block.end]
        elif token.type in _PARAGRAPH_TOKENS and token.level == 0:
            blocks.append(Block("paragraph", *lines.span(*token.map)))
        elif token.type == "list_item_open" and token.level == 1:
            blocks.append(Block("paragraph", *lines.span(*token.map)))
        elif token.type == "table_open" and token.level == 0:
            blocks.append(_table(token, tokens[i + 1 :], lines))
    return ParsedDocument(text=text, title=title or fallback_title, blocks=blocks)


def _check_tables(text: str, limits: ParseLimits) -> None:
    """Refuse a pipe table over the column or cell limit before markdown-it builds a token
    per cell. Its delimiter row gives the column count; its body runs at most to the next
    blank line, which bounds its rows."""
    for match in _DELIMITER_ROW.finditer(text):
        row = match.group()
        if "|" not in row:
            continue
        columns = len(_DASHES.findall(row))
        if columns > limits.max_table_columns:
            raise DocumentTooLarge(
                "max_table_columns", limits.max_table_columns, f"table has {columns} columns", columns
            )
        blank = _BLANK_LINE.search(text, match.end())
        rows = text.count("\n", match.end(), blank.start() if blank else len(text)) + 1
        if columns * rows > limits.max_table_cells:
            raise DocumentTooLarge(
                "max_table_cells",
                limits.max_table_cells,
                f"table has up to {columns * rows} cells ({columns} columns, {rows} rows)",
                columns * rows,
            )


def _heading(token: Token, inline: Token, lines: _Lines) -> Block:
    level = int(token.tag[1])
    first, stop = token.map or (0, 0)
    start, end = lines.span(first, first + 1)  # setext headings: text is the first line
    at = lines.text.find(inline.content, start, end) if inline.content else -1
    if at != -1:
        start, end = at, at + len(inline.content)
    return Block("heading", start, end, level=level)


def _table(token: Token, rest: list[Token], lines: _Lines) -> Block:
    start, end = lines.span(*(token.map or (0, 0)))
    header: TableRow | None = None
    rows: list[TableRow] = []
    in_head = False
    for t in rest:
        if t.type == "table_close":
            break
        if t.type in ("thead_open", "thead_close"):
            in_head = t.type == "thead_open"
        elif t.type == "tr_open" and t.map:
            row = TableRow(*lines.span(*t.map))
            if in_head and header is None:
                header = row
            else:
                rows.append(row)
    return Block("table", start, end, header=header, rows=rows)


def parse_markdown_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point: decode and parse a ``.md`` file."""
    return [parse_markdown(decode_text(data), title, limits)]
