"""Parser registry: pick a parser by file suffix.

    >>> from pathlib import Path
    >>> docs = parse_bytes(b"# Notes\\n\\nSome text.", "notes.md")
    >>> docs[0].title, docs[0].text
    ('Notes', '# Notes\\n\\nSome text.')
    >>> parse_text("A plain paragraph.", title="memo").blocks[0].kind
    'paragraph'

File formats return one document (``doc_id`` None: ingest assigns it); ``.jsonl``
returns one per record with ``doc_id`` set. Every failure is a :class:`ParseError`
whose message is the reason to show the user: a document over one of the
:class:`ParseLimits` raises its subclass :class:`DocumentTooLarge`, checked before the
work it protects, and any other error inside a parser (a library's own exception, a
``RecursionError``, a ``MemoryError``) becomes ``ParseError("cannot parse FILE: ...")``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath

from indexing.parsers.base import Block, ParsedDocument, ParseError, TableRow, as_parse_error
from indexing.parsers.csv_table import parse_csv, parse_csv_bytes, parse_tsv_bytes
from indexing.parsers.html import parse_html, parse_html_bytes
from indexing.parsers.jsonl import parse_jsonl_bytes
from indexing.parsers.limits import (
    DocumentTooLarge,
    ParseLimits,
    check_bytes,
    check_chars,
    check_metadata,
    check_text,
    resolve,
)
from indexing.parsers.markdown import parse_markdown, parse_markdown_bytes
from indexing.parsers.pdf import parse_pdf_bytes
from indexing.parsers.text import parse_plain_text, parse_text_bytes

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Block",
    "DocumentTooLarge",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "TableRow",
    "check_metadata",
    "check_text",
    "parse_bytes",
    "parse_path",
    "parse_text",
]

# Each takes the file's bytes, a fallback title (the file stem) and the limits.
_PARSERS: dict[str, Callable[[bytes, str, ParseLimits], list[ParsedDocument]]] = {
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

_TEXT_FORMATS: dict[str, Callable[[str, str, ParseLimits], ParsedDocument]] = {
    "text": parse_plain_text,
    "markdown": parse_markdown,
    "html": parse_html,
    "csv": lambda text, title, limits: parse_csv(text, title, limits=limits),
}


def parse_path(path: Path, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Parse a file on disk, choosing the parser by its suffix; a file over
    ``limits.max_bytes`` is refused before it is read."""
    path = Path(path)
    _parser_for(path.name)  # fail on the suffix before reading the file
    limits = resolve(limits)
    try:
        check_bytes(path.stat().st_size, limits)
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from exc
    return parse_bytes(data, path.name, limits)


def parse_bytes(data: bytes, filename: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Parse uploaded bytes, choosing the parser by ``filename``'s suffix."""
    parser = _parser_for(filename)
    limits = resolve(limits)
    check_bytes(len(data), limits)
    if not data.strip():
        raise ParseError("empty file")
    docs = _guarded(filename, lambda: parser(data, PurePath(filename).stem, limits))
    for doc in docs:  # every parser checks this early; this is the backstop
        check_chars(doc.text, limits, f"document {doc.doc_id!r}" if doc.doc_id else "document")
    return docs


def parse_text(text: str, title: str = "", fmt: str = "text", limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse an in-memory string; ``fmt`` is ``text``, ``markdown``, ``html`` or ``csv``.
    ``text`` and ``title`` must be encodable (no unpaired surrogates)."""
    if fmt not in _TEXT_FORMATS:
        raise ParseError(f"unsupported format {fmt!r}")
    limits = resolve(limits)
    check_text(title, "title")
    check_text(text, "text")
    if len(text) > limits.max_bytes // 4:  # a UTF-8 character is at most 4 bytes
        check_bytes(len(text.encode("utf-8")), limits, "text")
    if not text.strip():
        raise ParseError("empty file")
    doc = _guarded(f"{fmt} text", lambda: _TEXT_FORMATS[fmt](text, title, limits))
    check_chars(doc.text, limits)
    return doc


def _guarded(what: str, parse: Callable):
    """Run ``parse``; anything but a ParseError becomes one naming ``what``."""
    try:
        return parse()
    except Exception as exc:
        error = as_parse_error(what, exc)
        if error is exc:
            raise
        raise error from exc


def _parser_for(filename: str) -> Callable[[bytes, str, ParseLimits], list[ParsedDocument]]:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in _PARSERS:
        raise ParseError(f"unsupported file type {suffix or '(no suffix)'}")
    return _PARSERS[suffix]
