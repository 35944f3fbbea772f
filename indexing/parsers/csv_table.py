"""CSV/TSV: the whole file is one table; the first row is its header.

The normalized text has one line per non-empty row, cells joined by `` | ``.

    >>> doc = parse_csv("name,age\\nAda,36\\nAlan,41\\n", "people")
    >>> doc.text
    'name | age\\nAda | 36\\nAlan | 41'
    >>> [doc.text[r.start:r.end] for r in doc.blocks[0].rows]
    ['Ada | 36', 'Alan | 41']
"""

from __future__ import annotations

import csv
import io

from indexing.parsers.base import Block, ParsedDocument, ParseError, TableRow
from indexing.parsers.text import decode_text

_DELIMITERS = ",;\t|"


def parse_csv(text: str, title: str = "", delimiter: str | None = None) -> ParsedDocument:
    """Parse delimited text; the delimiter is sniffed unless given."""
    delimiter = delimiter or _sniff(text)
    try:
        records = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise ParseError(f"malformed CSV: {exc}") from exc
    lines = []
    for record in records:
        cells = [" ".join(cell.split()) for cell in record]
        if any(cells):
            lines.append(" | ".join(cells))
    if not lines:
        raise ParseError("empty file")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(TableRow(pos, pos + len(line)))
        pos += len(line) + 1
    normalized = "\n".join(lines)
    table = Block("table", 0, len(normalized), header=offsets[0], rows=offsets[1:])
    return ParsedDocument(text=normalized, title=title, blocks=[table])


def _sniff(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:16384], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def parse_csv_bytes(data: bytes, title: str) -> list[ParsedDocument]:
    """Registry entry point for ``.csv`` files."""
    return [parse_csv(decode_text(data), title)]


def parse_tsv_bytes(data: bytes, title: str) -> list[ParsedDocument]:
    """Registry entry point for ``.tsv`` files."""
    return [parse_csv(decode_text(data), title, delimiter="\t")]
