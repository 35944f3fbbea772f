"""HTML via selectolax (lexbor backend).

The parser builds its own normalized text: one block per line group, a blank line
between blocks, whitespace collapsed (kept in ``<pre>``), table rows as
``cell | cell | cell``. Script, style, nav and other non-content elements are dropped.

    >>> doc = parse_html("<title>T</title><h1>Intro</h1><p>Hello <b>world</b>.</p>", "page")
    >>> doc.title, doc.text
    ('T', 'Intro\\n\\nHello world.')

Nesting is bounded by ``max_nesting_depth`` twice. Before parsing, a quick scan of the
tags estimates the depth the tree will have -- the HTML tree builder spends time in
proportion to the depth for every tag, so a page nested 100,000 levels deep would take
minutes to parse. The estimate leans low (it ignores elements whose end tag is optional,
such as ``<p>`` and ``<li>``, so it never refuses an ordinary page); after parsing, the
real depth is measured exactly. Both walk without recursion, as does the text walk.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from indexing.parsers.base import Block, ParsedDocument, TableRow
from indexing.parsers.limits import DocumentTooLarge, ParseLimits, resolve, too_deep
from indexing.parsers.text import decode_text

_SKIP = {
    "script",
    "style",
    "nav",
    "noscript",
    "template",
    "head",
    "svg",
    "iframe",
    "object",
    "canvas",
    "select",
    "button",
    "-comment",
    "-doctype",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PARAGRAPHS = {"p", "li", "pre", "blockquote", "dt", "dd", "figcaption", "caption", "address", "summary"}
_CONTAINERS = {
    "html",
    "body",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "ul",
    "ol",
    "dl",
    "figure",
    "form",
    "fieldset",
    "details",
    "center",
    "hgroup",
    "menu",
    "br",
    "hr",
    "tr",
    "td",
    "th",
    "tbody",
    "thead",
}


@dataclass
class _TextBuilder:
    """Appends blocks to the normalized text, recording each block's offsets."""

    parts: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    length: int = 0
    limits: ParseLimits = field(default_factory=ParseLimits)

    def _append(self, chunk: str) -> int:
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(chunk)
        self.length += len(chunk)
        if self.length > self.limits.max_chars:
            raise DocumentTooLarge(
                "max_chars",
                self.limits.max_chars,
                f"document has more than {self.limits.max_chars} characters of text",
                self.length,
            )
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


def parse_html(html: str, fallback_title: str = "", limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse an HTML page; title from ``<title>``, else the first ``<h1>``, else fallback."""
    limits = resolve(limits)
    if html.count("<") > limits.max_nesting_depth:  # else too few tags to nest that deep
        estimate = estimated_depth(html, limits.max_nesting_depth)
        if estimate > limits.max_nesting_depth:
            raise too_deep(estimate, limits, "HTML")
    tree = LexborHTMLParser(html)
    _check_depth(tree.root, limits)
    builder = _TextBuilder(limits=limits)
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
    return ParsedDocument(text=builder.text, title=title or fallback_title, blocks=builder.blocks)


def _walk(node: LexborNode, builder: _TextBuilder, pending: list[str]) -> None:
    """Emit blocks for ``node``'s descendants; loose inline text collects in ``pending``.

    Iterative: the stack holds each open element's child iterator and whether its end
    flushes the pending text (block containers do, inline elements do not)."""
    stack = [(node.iter(include_text=True), False)]
    while stack:
        children, flush_at_end = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if flush_at_end:
                _flush(builder, pending)
            continue
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
            stack.append((child.iter(include_text=True), True))
        else:  # inline element: its text joins the surrounding run
            stack.append((child.iter(include_text=True), False))


def _flush(builder: _TextBuilder, pending: list[str]) -> None:
    builder.add("paragraph", _collapse("".join(pending)))
    pending.clear()


def _inline_text(node: LexborNode) -> str:
    """All text under ``node``; block-level descendants are set off by spaces."""
    out: list[str] = []
    stack = [(node.iter(include_text=True), "")]  # (children, text to add at the end)
    while stack:
        children, closing = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            out.append(closing)
            continue
        if child.tag == "-text":
            out.append(child.text_content or "")
        elif child.tag == "br":
            out.append("\n")
        elif child.tag not in _SKIP:
            spaced = child.tag in _CONTAINERS or child.tag in _PARAGRAPHS
            out.append(" " if spaced else "")
            stack.append((child.iter(include_text=True), " " if spaced else ""))
    return "".join(out)


def _table(table: LexborNode, builder: _TextBuilder) -> None:
    rows: list[list[str]] = []
    header_index = None
    limits = builder.limits
    n_cells = 0
    for tr in table.css("tr"):
        if _enclosing_table(tr) != table:
            continue  # a nested table's row
        cells = []
        for c in tr.iter():
            if c.tag in ("td", "th"):
                cells.append(c)
                if len(cells) > limits.max_table_columns:
                    raise DocumentTooLarge(
                        "max_table_columns",
                        limits.max_table_columns,
                        f"table row {len(rows) + 1} has more than {limits.max_table_columns} columns",
                        len(cells),
                    )
        n_cells += len(cells)
        if n_cells > limits.max_table_cells:
            raise DocumentTooLarge(
                "max_table_cells", limits.max_table_cells, f"table has at least {n_cells} cells", n_cells
            )
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


def _check_depth(root: LexborNode | None, limits: ParseLimits) -> None:
    """Refuse a parsed tree deeper than ``max_nesting_depth`` (the ``<html>`` element is at
    depth 1), walking it without recursion and stopping at the first node too deep."""
    node, depth = root, 1
    while node is not None:
        child = node.child
        if child is not None:
            node, depth = child, depth + 1
            if depth > limits.max_nesting_depth:
                raise too_deep(depth, limits, "HTML")
            continue
        while node is not None and node.next is None:
            node, depth = node.parent, depth - 1
            if depth < 1:
                return
        if node is not None:
            node = node.next


# -- the depth estimate before parsing ----------------------------------------------------------

# Comments, doctypes, then tags: (end-tag slash, name, attributes). Quoted attribute values
# may hold ``<`` and ``>``; an unquoted ``<`` ends an attempt, so the scan stays linear on
# text full of stray ``<``.
_TOKENS = re.compile(
    r"<!--.*?(?:-->|$)|<[!?][^<>]*>"
    r"|<(/?)([A-Za-z][^\t\n\f\r /<>]*)((?:\"[^\"]*\"|'[^']*'|[^'\"<>])*)>",
    re.DOTALL,
)
_VOID = {
    "area",
    "base",
    "basefont",
    "bgsound",
    "br",
    "col",
    "embed",
    "frame",
    "hr",
    "image",
    "img",
    "input",
    "keygen",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}
# Their content is text up to their own end tag.
_RAW_TEXT = {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript"}
# Elements whose end tag may be left out: kept on the stack, so that the elements that
# close them implicitly can pop them (and whatever is still open inside them), but not
# counted, so the estimate runs low rather than high.
_IMPLIED_END = {
    "html",
    "head",
    "body",
    "p",
    "li",
    "dt",
    "dd",
    "option",
    "tr",
    "td",
    "th",
    "thead",
    "tbody",
    "tfoot",
    "colgroup",
    "caption",
}
# Table parts mean something only inside a table: elsewhere the tree builder drops them.
_TABLE_PARTS = {"tr", "td", "th", "thead", "tbody", "tfoot", "colgroup", "caption"}
_CLOSES_P = {
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "li",
    "listing",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "search",
    "section",
    "summary",
    "table",
    "ul",
    "dd",
    "dt",
    *_HEADINGS,
}
# The HTML spec's "special" elements but address, div and p: where the search for an open
# <li> or <dd> to close stops.
_SPECIAL = {
    "applet",
    "area",
    "article",
    "aside",
    "base",
    "basefont",
    "bgsound",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "details",
    "dir",
    "dl",
    "embed",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "img",
    "input",
    "keygen",
    "link",
    "listing",
    "main",
    "marquee",
    "menu",
    "meta",
    "nav",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "ol",
    "param",
    "plaintext",
    "pre",
    "script",
    "search",
    "section",
    "select",
    "source",
    "style",
    "summary",
    "table",
    "tbody",
    "td",
    "template",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "track",
    "ul",
    "wbr",
    "xmp",
    *_HEADINGS,
}
_RUBY_PARTS = {"rb", "rt", "rp", "rtc"}
# Opening the key pops the nearest open element named in the first set, searching down the
# stack no further than an element of the second.
_IMPLIED_CLOSE: dict[str, tuple[set[str], set[str]]] = {
    "li": ({"li"}, _SPECIAL - {"li"}),
    "dt": ({"dt", "dd"}, _SPECIAL - {"dt", "dd"}),
    "dd": ({"dt", "dd"}, _SPECIAL - {"dt", "dd"}),
    "tr": ({"tr", "td", "th"}, {"table", "tbody", "thead", "tfoot"}),
    "td": ({"td", "th"}, {"tr", "table"}),
    "th": ({"td", "th"}, {"tr", "table"}),
    "tbody": ({"tbody", "thead", "tfoot", "tr", "td", "th"}, {"table"}),
    "thead": ({"tbody", "thead", "tfoot", "tr", "td", "th"}, {"table"}),
    "tfoot": ({"tbody", "thead", "tfoot", "tr", "td", "th"}, {"table"}),
    # an open <a> with a block inside it is not closed: the tree builder nests on
    "a": ({"a"}, _SPECIAL | {"address", "div", "p", "li", "dd", "dt"}),
    "nobr": ({"nobr"}, _SPECIAL | {"address", "div", "p", "li", "dd", "dt"}),
    "button": ({"button"}, {"table", "td", "th", "caption"}),
}
_NOTHING: set[str] = set()
_P_SCOPE = {"button", "table", "td", "th", "caption", "html", "marquee", "object", "applet", "template", "select"}
# How many of these are open, so that most searches are skipped.
_TRACKED = {
    "svg",
    "math",
    "table",
    "select",
    "ruby",
    "form",
    "p",
    "li",
    "dt",
    "dd",
    "a",
    "nobr",
    "button",
    "option",
    "optgroup",
    "tr",
    "td",
    "th",
    "tbody",
    "thead",
    "tfoot",
    "rb",
    "rt",
    "rp",
    "rtc",
    *_HEADINGS,
}


class _OpenElements:
    """The tree builder's stack of open elements, roughly; ``depth`` counts the entries
    that are not in ``_IMPLIED_END``."""

    def __init__(self, window: int) -> None:
        self.names: list[str] = []
        self.depth = 0
        self.window = window  # how far down a search looks: each tag costs O(window)
        self.open = dict.fromkeys(_TRACKED, 0)

    def push(self, name: str) -> None:
        if name in ("html", "head", "body") and name in self.names[:3]:
            return  # repeats are merged into the first
        self.names.append(sys.intern(name))
        self.depth += name not in _IMPLIED_END
        if name in _TRACKED:
            self.open[name] += 1

    def pop_to(self, targets: set[str], stop: set[str]) -> None:
        """Pop down to and including the nearest open element in ``targets``, if one is
        open above the nearest element in ``stop``. ``targets`` are all in ``_TRACKED``."""
        if any(self.open[t] for t in targets):
            self.pop_to_any(targets, stop)

    def pop_to_any(self, targets: Collection[str], stop: set[str]) -> None:
        names = self.names
        if names and names[-1] in targets:
            i = len(names) - 1
            self.depth -= names[i] not in _IMPLIED_END
            if names[i] in _TRACKED:
                self.open[names[i]] -= 1
            del names[i]
            return
        for i in range(len(names) - 1, max(-1, len(names) - 1 - self.window), -1):
            if names[i] in targets:
                for name in names[i:]:
                    self.depth -= name not in _IMPLIED_END
                    if name in _TRACKED:
                        self.open[name] -= 1
                del names[i:]
                return
            if names[i] in stop:
                return


def estimated_depth(html: str, limit: int) -> int:
    """Roughly the element depth of ``html`` once parsed, from its tags alone: a simulated
    stack of open elements, stopping as soon as it passes ``limit``. Void elements and
    self-closed foreign (SVG, MathML) ones are not pushed; an end tag pops to the nearest
    open element of its name (none: ignored); the usual implied end tags (``<p>`` closed by
    a block, ``<li>`` by ``<li>``, table cells and rows...) are applied. Elements with
    optional end tags are not counted, so the estimate errs low. Linear in ``len(html)``
    (each stack search looks at most ``limit + 256`` entries down)."""
    stack = _OpenElements(limit + 256)
    pos, deepest = 0, 0
    while True:
        match = _TOKENS.search(html, pos)
        if match is None:
            return deepest
        pos = match.end()
        name = match.group(2)
        if name is None:
            continue  # comment, doctype, processing instruction
        name = name.lower()
        if name in _TABLE_PARTS and not stack.open["table"]:
            continue
        if match.group(1):  # an end tag
            stack.pop_to_any((name,), _NOTHING)
            continue
        if name in _RAW_TEXT:
            end = re.compile(rf"</{name}\b", re.IGNORECASE).search(html, pos)
            pos = end.start() if end else len(html)
        elif name == "plaintext":
            return deepest  # the rest of the page is text
        if name in _VOID:
            continue
        if match.group(3).rstrip().endswith("/") and (stack.open["svg"] or stack.open["math"]):
            continue
        if name == "form" and stack.open["form"]:
            continue  # a form inside a form is dropped
        if name in _CLOSES_P:
            stack.pop_to({"p"}, _P_SCOPE)
        if name in _HEADINGS and stack.names and stack.names[-1] in _HEADINGS:
            stack.pop_to_any(_HEADINGS, _NOTHING)  # <h2> right inside an unclosed <h1>
        if name in _IMPLIED_CLOSE:
            stack.pop_to(*_IMPLIED_CLOSE[name])
        elif name in ("option", "optgroup"):
            if stack.open["select"]:
                stack.pop_to(
                    {"option", "optgroup"} if name == "optgroup" else {"option"},
                    {"select", "optgroup"} if name == "option" else {"select"},
                )
            elif stack.names and stack.names[-1] == "option":
                stack.pop_to_any(("option",), _NOTHING)
        elif name in _RUBY_PARTS and stack.open["ruby"]:
            stack.pop_to(_RUBY_PARTS, {"ruby"})
        stack.push(name)
        deepest = max(deepest, stack.depth)
        if deepest > limit:
            return deepest


def parse_html_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point: decode and parse an ``.html`` file."""
    return [parse_html(decode_text(data), title, limits)]
