"""BEIR-style ``corpus.jsonl``: one document per line.

Each line is ``{"_id": ..., "title": ..., "text": ..., "metadata": {...}?}``. The
normalized text is ``title + "\\n\\n" + text`` (just ``text`` when the title is empty);
the title is also a level-1 heading block, so every body span's heading path is
``[title]``. Body paragraphs are split on blank lines. Blank lines in the file are
skipped, as are records with neither title nor text; the first malformed line raises
:class:`ParseError` naming its line number.

    >>> docs = parse_jsonl('{"_id": "7", "title": "T", "text": "Body one.\\\\n\\\\nBody two."}')
    >>> docs[0].doc_id, docs[0].text
    ('7', 'T\\n\\nBody one.\\n\\nBody two.')
"""

from __future__ import annotations

import json
import re
from typing import Any

from indexing.parsers.base import Block, ParsedDocument, ParseError
from indexing.parsers.text import decode_text, normalize_newlines

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


def parse_jsonl(text: str) -> list[ParsedDocument]:
    """Parse every record of a JSONL corpus, in file order."""
    docs = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ParseError(f"line {line_no}: invalid JSON ({exc.msg})") from exc
        doc = parse_record(record, line_no)
        if doc is not None:
            docs.append(doc)
    if not docs:
        raise ParseError("no documents: every record is empty")
    return docs


def parse_record(record: Any, line_no: int = 0) -> ParsedDocument | None:
    """One corpus record as a document; ``None`` if it has no text at all."""
    where = f"line {line_no}: " if line_no else ""
    if not isinstance(record, dict):
        raise ParseError(f"{where}expected a JSON object")
    doc_id = record.get("_id", record.get("id"))
    if doc_id is None or str(doc_id) == "":
        raise ParseError(f"{where}missing \"_id\"")
    title, body = record.get("title") or "", record.get("text") or ""
    if not isinstance(title, str) or not isinstance(body, str):
        raise ParseError(f"{where}\"title\" and \"text\" must be strings")
    title = " ".join(title.split())
    body = normalize_newlines(body).strip()
    if not title and not body:
        return None
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
    return ParsedDocument(text=text, title=title, blocks=blocks, doc_id=str(doc_id),
                          metadata=dict(metadata) if isinstance(metadata, dict) else {})


def parse_jsonl_bytes(data: bytes, title: str) -> list[ParsedDocument]:
    """Registry entry point for ``.jsonl`` files (``title`` is unused: records carry theirs)."""
    return parse_jsonl(decode_text(data))
