"""Plain text: byte decoding shared by all text formats, and the plain-text parser.

    >>> doc = parse_plain_text("Life\\nHe was born in Stagira.\\n\\nMore text here.", "Aristotle")
    >>> [(b.kind, doc.text[b.start:b.end]) for b in doc.blocks]
    [('heading', 'Life'), ('paragraph', 'He was born in Stagira.'), ('paragraph', 'More text here.')]

Paragraphs are separated by blank lines. A heading is a short standalone line (under 80
characters, no closing punctuation, starting with a letter or digit) that is followed by
more text -- the shape of section titles in Wikipedia plain-text dumps, where the title
sits either alone between blank lines or directly on the line above its first paragraph.
All headings are level 1: plain text carries no nesting.
"""

from __future__ import annotations

import re
import unicodedata

from indexing.parsers.base import Block, ParsedDocument, ParseError
from indexing.parsers.limits import ParseLimits, check_chars, resolve

MAX_HEADING_CHARS = 80
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_CLOSING_PUNCTUATION = tuple(".!?:;,")
_SNIFF_BYTES = 64 * 1024


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_text(data: bytes) -> str:
    """Decode a text file's bytes: UTF-8 (BOM allowed), UTF-16 with BOM, else cp1252 if
    it is clearly text. Raises :class:`ParseError` for binary or undecodable content;
    returns newline-normalized text."""
    if not data.strip():
        raise ParseError("empty file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"invalid UTF-16 text: {exc.reason} at byte {exc.start}") from exc
    else:
        if b"\x00" in data[:_SNIFF_BYTES]:
            raise ParseError("binary file: contains NUL bytes")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            text = _decode_legacy(data, exc)
    _reject_control_chars(text)
    text = normalize_newlines(text)
    if not text.strip():
        raise ParseError("empty file")
    return text


def _decode_legacy(data: bytes, utf8_error: UnicodeDecodeError) -> str:
    reason = f"not UTF-8 text: undecodable byte at offset {utf8_error.start}"
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise ParseError(reason) from exc
    # Legacy single-byte text is mostly ASCII; mostly-high bytes means binary data.
    high = sum(1 for byte in data[:_SNIFF_BYTES] if byte >= 0x80)
    if high / min(len(data), _SNIFF_BYTES) > 0.3:
        raise ParseError(reason)
    return text


def _reject_control_chars(text: str) -> None:
    sample = text[:_SNIFF_BYTES]
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    if controls / len(sample) > 0.02:
        raise ParseError(f"binary content: {controls / len(sample):.0%} control characters")


def parse_plain_text(text: str, title: str = "", limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse already-decoded plain text into heading and paragraph blocks."""
    text = normalize_newlines(text)
    check_chars(text, resolve(limits))
    chunks = _chunks(text)
    blocks: list[Block] = []
    for i, (start, end) in enumerate(chunks):
        first_line_end = text.find("\n", start, end)
        if first_line_end == -1:
            # A chunk that is one line is a heading only if more text follows it.
            if i + 1 < len(chunks) and _looks_like_heading(text[start:end]):
                blocks.append(Block("heading", start, end, level=1))
            else:
                blocks.append(Block("paragraph", start, end))
        elif _looks_like_heading(text[start:first_line_end]):
            blocks.append(Block("heading", start, first_line_end, level=1))
            body = first_line_end + 1
            body += len(text[body:end]) - len(text[body:end].lstrip())
            blocks.append(Block("paragraph", body, end))
        else:
            blocks.append(Block("paragraph", start, end))
    return ParsedDocument(text=text, title=title, blocks=_trimmed(text, blocks))


def _chunks(text: str) -> list[tuple[int, int]]:
    """(start, end) of each blank-line-separated chunk, trimmed of whitespace."""
    chunks = []
    pos = 0
    for match in [*_BLANK_LINES.finditer(text), None]:
        stop = match.start() if match else len(text)
        segment = text[pos:stop]
        if segment.strip():
            start = pos + len(segment) - len(segment.lstrip())
            chunks.append((start, start + len(segment.strip())))
        if match:
            pos = match.end()
    return chunks


def _looks_like_heading(line: str) -> bool:
    line = line.strip()
    return 0 < len(line) < MAX_HEADING_CHARS and line[0].isalnum() and not line.endswith(_CLOSING_PUNCTUATION)


def _trimmed(text: str, blocks: list[Block]) -> list[Block]:
    out = []
    for block in blocks:
        segment = text[block.start : block.end]
        start = block.start + len(segment) - len(segment.lstrip())
        end = start + len(segment.strip())
        if end > start:
            out.append(Block(block.kind, start, end, level=block.level))
    return out


def parse_text_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point: decode and parse a ``.txt`` file."""
    return [parse_plain_text(decode_text(data), title, limits)]
