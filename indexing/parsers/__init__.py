"""Parser registry: pick a parser by file suffix.

    >>> from pathlib import Path
    >>> docs = parse_bytes(b"# Notes\\n\\nSome text.", "notes.md")
    >>> docs[0].title, docs[0].text
    ('Notes', '# Notes\\n\\nSome text.')
    >>> parse_text("A plain paragraph.", title="memo").blocks[0].kind
    'paragraph'

File formats return one document (``doc_id`` None: ingest assigns it); ``.jsonl``
returns one per record with ``doc_id`` set. Every failure is a :class:`ParseError`
whose message is the reason to show the user.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath

from indexing.parsers.base import Block, ParsedDocument, ParseError, TableRow
from indexing.parsers.csv_table import parse_csv, parse_csv_bytes, parse_tsv_bytes
from indexing.parsers.html import parse_html, parse_html_bytes
from indexing.parsers.jsonl import parse_jsonl_bytes
from indexing.parsers.markdown import parse_markdown, parse_markdown_bytes
from indexing.parsers.pdf import parse_pdf_bytes
from indexing.parsers.text import parse_plain_text, parse_text_bytes

__all__ = ["SUPPORTED_SUFFIXES", "Block", "ParseError", "ParsedDocument", "TableRow",
           "parse_bytes", "parse_path", "parse_text"]

# Each takes the file's bytes and a fallback title (the file stem).
_PARSERS: dict[str, Callable[[bytes, str], list[ParsedDocument]]] = {
    ".md": parse_markdown_bytes,
    ".markdown": parse_markdown_bytes,
    ".html": parse_html_bytes,
    ".htm": parse_html_bytes,
    ".txt": parse_text_bytes,
    ".text": parse_text_bytes,
    ".pdf": parse_pdf_bytes,
    ".csv": parse_csv_bytes,
    ".tsv": parse_tsv_bytes,
    ".jsonl": parse_jsonl_bytes,
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_PARSERS)

_TEXT_FORMATS: dict[str, Callable[[str, str], ParsedDocument]] = {
    "text": parse_plain_text,
    "markdown": parse_markdown,
    "html": parse_html,
    "csv": parse_csv,
}


def parse_path(path: Path) -> list[ParsedDocument]:
    """Parse a file on disk, choosing the parser by its suffix."""
    path = Path(path)
    _parser_for(path.name)  # fail on the suffix before reading the file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from exc
    return parse_bytes(data, path.name)


def parse_bytes(data: bytes, filename: str) -> list[ParsedDocument]:
    """Parse uploaded bytes, choosing the parser by ``filename``'s suffix."""
    parser = _parser_for(filename)
    if not data.strip():
        raise ParseError("empty file")
    return parser(data, PurePath(filename).stem)


def parse_text(text: str, title: str = "", fmt: str = "text") -> ParsedDocument:
    """Parse an in-memory string; ``fmt`` is ``text``, ``markdown``, ``html`` or ``csv``."""
    if fmt not in _TEXT_FORMATS:
        raise ParseError(f"unsupported format {fmt!r}")
    if not text.strip():
        raise ParseError("empty file")
    return _TEXT_FORMATS[fmt](text, title)


def _parser_for(filename: str) -> Callable[[bytes, str], list[ParsedDocument]]:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in _PARSERS:
        raise ParseError(f"unsupported file type {suffix or '(no suffix)'}")
    return _PARSERS[suffix]
