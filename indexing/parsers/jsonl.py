"""BEIR-style ``corpus.jsonl``: one document per line.

Each line is ``{"_id": ..., "title": ..., "text": ..., "metadata": {...}?}``. The
normalized text is ``title + "\\n\\n" + text`` (just ``text`` when the title is empty);
the title is also a level-1 heading block, so every body span's heading path is
``[title]``. Body paragraphs are split on blank lines. Blank lines in the file are
skipped, as are records with neither title nor text; the first malformed line raises
:class:`ParseError` naming its line number. Each record is held to the
:class:`~indexing.parsers.limits.ParseLimits`: nesting depth, text length, metadata (see
:func:`~indexing.parsers.limits.check_metadata`); ids, titles and texts must be encodable
(a JSON ``\\ud800`` escape is refused).

    >>> docs = parse_jsonl('{"_id": "7", "title": "T", "text": "Body one.\\\\n\\\\nBody two."}')
    >>> docs[0].doc_id, docs[0].text
    ('7', 'T\\n\\nBody one.\\n\\nBody two.')
"""

from __future__ import annotations

import json
import re
from typing import Any

from indexing.parsers.base import Block, ParsedDocument, ParseError
from indexing.parsers.limits import (
    DocumentTooLarge,
    ParseLimits,
    check_chars,
    check_metadata,
    check_text,
    nesting_depth,
    resolve,
)
from indexing.parsers.text import decode_text, normalize_newlines

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


def parse_jsonl(text: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Parse every record of a JSONL corpus, in file order."""
    limits = resolve(limits)
    docs = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ParseError(f"line {line_no}: invalid JSON ({exc.msg})") from exc
        except RecursionError as exc:  # nested far deeper than any limit
            raise DocumentTooLarge(
                "max_nesting_depth", limits.max_nesting_depth, f"line {line_no}: JSON is nested too deeply to read"
            ) from exc
        doc = parse_record(record, line_no, limits)
        if doc is not None:
            docs.append(doc)
    if not docs:
        raise ParseError("no documents: every record is empty")
    return docs


def parse_record(record: Any, line_no: int = 0, limits: ParseLimits | None = None) -> ParsedDocument | None:
    """One corpus record as a document; ``None`` if it has no text at all."""
    limits = resolve(limits)
    where = f"line {line_no}: " if line_no else ""
    if not isinstance(record, dict):
        raise ParseError(f"{where}expected a JSON object")
    nesting_depth(record, limits, f"{where}record")
    doc_id = record.get("_id", record.get("id"))
    if doc_id is None or str(doc_id) == "":
        raise ParseError(f'{where}missing "_id"')
    if isinstance(doc_id, (dict, list)):
        raise ParseError(f'{where}"_id" must be a string or a number')
    title, body = record.get("title") or "", record.get("text") or ""
    if not isinstance(title, str) or not isinstance(body, str):
        raise ParseError(f'{where}"title" and "text" must be strings')
    check_text(str(doc_id), f'{where}"_id"')
    check_text(title, f'{where}"title"')
    check_text(body, f'{where}"text"')
    title = " ".join(title.split())
    body = normalize_newlines(body).strip()
    if not title and not body:
        return None
    check_chars(
        len(title) + 2 + len(body) if title and body else len(title or body),
        limits,
        f"{where}document {str(doc_id)[:100]!r}",
    )
    blocks: list[Block] = []
    offset = 0
    if title:
        blocks.append(Block("heading", 0, len(title), level=1))
        offset = len(title) + 2
    pos = 0
    for match in [*_BLANK_LINES.finditer(body), None]:
        stop = match.start() if match else len(body)
        if body[pos:stop].strip():
            blocks.append(Block("paragraph", offset + pos, offset + stop))
        if match:
            pos = match.end()
    text = f"{title}\n\n{body}" if title and body else title or body
    metadata = record.get("metadata")
    if isinstance(metadata, dict):
        check_metadata(metadata, limits, f"{where}metadata")
    return ParsedDocument(
        text=text,
        title=title,
        blocks=blocks,
        doc_id=str(doc_id),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )


def parse_jsonl_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point for ``.jsonl`` files (``title`` is unused: records carry theirs)."""
    return parse_jsonl(decode_text(data), limits)
