"""HTML via selectolax (lexbor backend).

The parser builds its own normalized text: one block per line group, a blank line
between blocks, whitespace collapsed (kept in ``<pre>``), table rows as
``cell | cell | cell``. Script, style, nav and other non-content elements are dropped.

    >>> doc = parse_html("<title>T</title><h1>Intro</h1><p>Hello <b>world</b>.</p>", "page")
    >>> doc.title, doc.text
    ('T', 'Intro\\n\\nHello world.')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from indexing.parsers.base import Block, ParsedDocument, TableRow
from indexing.parsers.text import decode_text

_SKIP = {"script", "style", "nav", "noscript", "template", "head", "svg", "iframe",
         "object", "canvas", "select", "button", "-comment", "-doctype"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PARAGRAPHS = {"p", "li", "pre", "blockquote", "dt", "dd", "figcaption", "caption",
               "address", "summary"}
_CONTAINERS = {"html", "body", "div", "section", "article", "main", "header", "footer",
               "aside", "ul", "ol", "dl", "figure", "form", "fieldset", "details", "center",
               "hgroup", "menu", "br", "hr", "tr", "td", "th", "tbody", "thead"}


@dataclass
class _TextBuilder:
    """Appends blocks to the normalized text, recording each block's offsets."""

    parts: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    length: int = 0

    def _append(self, chunk: str) -> int:
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(chunk)
        self.length += len(chunk)
        return start

    def add(self, kind: str, text: str, level: int = 0) -> None:
        if text:
            start = self._append(text)
            self.blocks.append(Block(kind, start, start + len(text), level=level))  # type: ignore[arg-type]

    def add_table(self, rows: list[str], has_header: bool) -> None:
        start = self._append("\n".join(rows))
        offsets, pos = [], start
        for row in rows:
            offsets.append(TableRow(pos, pos + len(row)))
            pos += len(row) + 1
        header = offsets[0] if has_header else None
        body = offsets[1:] if has_header else offsets
        self.blocks.append(Block("table", start, offsets[-1].end, header=header, rows=body))

    @property
    def text(self) -> str:
        return "".join(self.parts)


def parse_html(html: str, fallback_title: str = "") -> ParsedDocument:
    """Parse an HTML page; title from ``<title>``, else the first ``<h1>``, else fallback."""
    tree = LexborHTMLParser(html)
    builder = _TextBuilder()
    root = tree.body or tree.root
    if root is not None:
        pending: list[str] = []
        _walk(root, builder, pending)
        builder.add("paragraph", _collapse("".join(pending)))
    title_node = tree.css_first("title")
    title = _collapse(title_node.text(deep=True)) if title_node else ""
    if not title:
        h1 = tree.css_first("h1")
        title = _collapse(_inline_text(h1)) if h1 else ""
    return ParsedDocument(text=builder.text, title=title or fallback_title,
                          blocks=builder.blocks)


def _walk(node: LexborNode, builder: _TextBuilder, pending: list[str]) -> None:
    """Emit blocks for ``node``'s children; loose inline text collects in ``pending``."""
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            pending.append(child.text_content or "")
        elif tag in _SKIP:
            continue
        elif tag in _HEADINGS or tag in _PARAGRAPHS or tag == "table":
            _flush(builder, pending)
            if tag in _HEADINGS:
                builder.add("heading", _collapse(_inline_text(child)), _HEADINGS[tag])
            elif tag == "pre":
                builder.add("paragraph", _preformatted(_inline_text(child)))
            elif tag == "table":
                _table(child, builder)
            else:
                builder.add("paragraph", _collapse(_inline_text(child)))
        elif tag in _CONTAINERS:
            _flush(builder, pending)
            _walk(child, builder, pending)
            _flush(builder, pending)
        else:  # inline element: its text joins the surrounding run
            _walk(child, builder, pending)


def _flush(builder: _TextBuilder, pending: list[str]) -> None:
    builder.add("paragraph", _collapse("".join(pending)))
    pending.clear()


def _inline_text(node: LexborNode) -> str:
    out: list[str] = []
    for child in node.iter(include_text=True):
        if child.tag == "-text":
            out.append(child.text_content or "")
        elif child.tag == "br":
            out.append("\n")
        elif child.tag not in _SKIP:
            text = _inline_text(child)
            out.append(f" {text} " if child.tag in _CONTAINERS or child.tag in _PARAGRAPHS
                       else text)
    return "".join(out)


def _table(table: LexborNode, builder: _TextBuilder) -> None:
    rows: list[list[str]] = []
    header_index = None
    for tr in table.css("tr"):
        if _enclosing_table(tr) != table:
            continue  # a nested table's row
        cells = [c for c in tr.iter() if c.tag in ("td", "th")]
        texts = [_collapse(_inline_text(c)).replace("|", "/") for c in cells]
        if not any(texts):
            continue
        if header_index is None and any(c.tag == "th" for c in cells):
            header_index = len(rows)
        rows.append(texts)
    if not rows:
        return
    # The header is the first <th> row, else the first row.
    rows.insert(0, rows.pop(header_index or 0))
    builder.add_table([" | ".join(r) for r in rows], has_header=len(rows) > 1)


def _enclosing_table(node: LexborNode) -> LexborNode | None:
    parent = node.parent
    while parent is not None and parent.tag != "table":
        parent = parent.parent
    return parent


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _preformatted(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()


def parse_html_bytes(data: bytes, title: str) -> list[ParsedDocument]:
    """Registry entry point: decode and parse an ``.html`` file."""
    return [parse_html(decode_text(data), title)]
