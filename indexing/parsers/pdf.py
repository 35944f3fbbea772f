"""PDF via pypdf: extracted text per page, cut into paragraphs.

Paragraph breaks come from the layout: a vertical gap between lines clearly wider than
the page's typical line spacing (or a jump back up, as at a new column), a blank line,
or a line that ends a sentence and is clearly shorter than the page's typical line.
Lines within a paragraph are joined with spaces (a hyphen at a line end joins the word). Paragraphs never cross pages; ``metadata["pages"]`` holds each page's
``(start, end)`` offsets in the normalized text.

    >>> parse_pdf(b"not a pdf")
    Traceback (most recent call last):
    ...
    indexing.parsers.base.ParseError: malformed PDF: missing %PDF header
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pypdf loads when a PDF is parsed: commands that parse none start faster
    from pypdf import PageObject, PdfReader

from indexing.parsers.base import Block, ParsedDocument, ParseError
from indexing.parsers.limits import ParseLimits, check_bytes, check_chars, resolve

_SENTENCE_END = tuple('.!?:"”)')
_SHORT_LINE_RATIO = 0.75
_GAP_RATIO = 1.5


def parse_pdf(data: bytes, fallback_title: str = "", limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse PDF bytes; raises :class:`ParseError` if malformed, encrypted or textless,
    :class:`~indexing.parsers.limits.DocumentTooLarge` as soon as the text passes
    ``limits.max_chars``."""
    limits = resolve(limits)
    check_bytes(len(data), limits)
    reader = _open(data)
    pieces: list[str] = []
    blocks: list[Block] = []
    pages: list[tuple[int, int]] = []
    pos = 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            lines = _page_lines(page)
        except Exception as exc:  # pypdf raises many types on broken content streams
            raise ParseError(f"malformed PDF: cannot read page {number} ({exc})") from exc
        page_start = None
        for paragraph in _paragraphs(lines):
            if pieces:
                pieces.append("\n\n")
                pos += 2
            page_start = pos if page_start is None else page_start
            blocks.append(Block("paragraph", pos, pos + len(paragraph)))
            pieces.append(paragraph)
            pos += len(paragraph)
        check_chars(pos, limits)  # stop reading pages once the text is over the limit
        pages.append((pos if page_start is None else page_start, pos))
    text = "".join(pieces)
    if not text.strip():
        raise ParseError("PDF has no extractable text (scanned images?)")
    return ParsedDocument(text=text, title=_title(reader) or fallback_title, blocks=blocks, metadata={"pages": pages})


def _open(data: bytes) -> PdfReader:
    if not data.strip():
        raise ParseError("empty file")
    if b"%PDF-" not in data[:1024]:  # the spec allows junk before the header
        raise ParseError("malformed PDF: missing %PDF header")
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("encrypted PDF: a password is required")
        if len(reader.pages) == 0:
            raise ParseError("malformed PDF: no pages")
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"malformed PDF: {exc}") from exc
    return reader


def _title(reader: PdfReader) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return ""
    return " ".join(str(title).split()) if title else ""


@dataclass
class _Line:
    text: str
    y: float | None  # baseline height in user space; None when unknown
    size: float = 0.0


def _page_lines(page: PageObject) -> list[_Line]:
    """The page's text lines in reading order, with their vertical positions."""
    lines: list[_Line] = [_Line("", None)]

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        height = abs(size * tm[3] * cm[3]) or 1.0
        for i, piece in enumerate(text.split("\n")):
            current = lines[-1]
            moved = current.y is not None and abs(current.y - y) > height / 2
            if i > 0 or (piece.strip() and moved and current.text.strip()):
                lines.append(_Line("", None))
                current = lines[-1]
            if piece.strip() and current.y is None:
                current.y, current.size = y, height
            current.text += piece

    page.extract_text(visitor_text=visit)
    return [_Line(" ".join(line.text.split()), line.y, line.size) for line in lines]


def _paragraphs(lines: list[_Line]) -> list[str]:
    lengths = [len(line.text) for line in lines if line.text]
    if not lengths:
        return []
    typical = statistics.median(lengths)
    # The tightest ordinary step between consecutive lines is the line spacing; steps
    # smaller than most of a line height are sub/superscripts, not lines.
    steps = [
        a.y - b.y
        for a, b in zip(lines, lines[1:])
        if a.text and b.text and a.y is not None and b.y is not None and a.y - b.y >= 0.8 * b.size
    ]
    spacing = min(steps) if steps else None
    sizes = [line.size for line in lines if line.text and line.size]
    if sizes and (spacing is None or spacing > 2.5 * statistics.median(sizes)):
        spacing = 1.2 * statistics.median(sizes)  # no plain line step seen: assume 1.2 em
    paragraphs: list[list[str]] = [[]]
    previous: _Line | None = None
    for line in lines:
        if not line.text:
            paragraphs.append([])
            continue
        if previous is not None and _is_gap(previous, line, spacing):
            paragraphs.append([])
        paragraphs[-1].append(line.text)
        if line.text.endswith(_SENTENCE_END) and len(line.text) < _SHORT_LINE_RATIO * typical:
            paragraphs.append([])
        previous = line
    return [_join(p) for p in paragraphs if p]


def _is_gap(previous: _Line, line: _Line, spacing: float | None) -> bool:
    if previous.y is None or line.y is None or spacing is None:
        return False
    step = previous.y - line.y
    return step < -line.size or step > _GAP_RATIO * spacing


def _join(lines: list[str]) -> str:
    out = lines[0]
    for line in lines[1:]:
        if out.endswith("-") and out[-2:-1].isalpha() and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return out


def parse_pdf_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point for ``.pdf`` files."""
    return [parse_pdf(data, title, limits)]
