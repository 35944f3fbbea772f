"""CSV/TSV: the whole file is one table; the first row is its header.

The normalized text has one line per non-empty row, cells joined by `` | ``.

    >>> doc = parse_csv("name,age\\nAda,36\\nAlan,41\\n", "people")
    >>> doc.text
    'name | age\\nAda | 36\\nAlan | 41'
    >>> [doc.text[r.start:r.end] for r in doc.blocks[0].rows]
    ['Ada | 36', 'Alan | 41']

The table's shape is bounded before any row is built: the csv reader is fed one line at a
time, and a line is handed over only once the record it belongs to is known to stay
within ``max_table_columns`` -- a file whose header has a million columns is refused
after reading its first line, without building a million-cell row.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

from indexing.parsers.base import Block, ParsedDocument, ParseError, TableRow
from indexing.parsers.limits import DocumentTooLarge, ParseLimits, check_chars, resolve
from indexing.parsers.text import decode_text, normalize_newlines

_DELIMITERS = ",;\t|"
_QUOTE = '"'  # the csv module's default dialect: '"' quotes, doubled inside a quoted field


def parse_csv(
    text: str, title: str = "", delimiter: str | None = None, limits: ParseLimits | None = None
) -> ParsedDocument:
    """Parse delimited text; the delimiter is sniffed unless given."""
    limits = resolve(limits)
    text = normalize_newlines(text)
    delimiter = delimiter or _sniff(text)
    lines = _BoundedLines(text, delimiter, limits)
    rows: list[str] = []
    cells = length = 0
    try:
        for record in csv.reader(lines, delimiter=delimiter):
            lines.record_done()
            cells += len(record)
            if len(record) > limits.max_table_columns:  # _BoundedLines makes this unreachable
                raise _too_many_columns(len(record), len(rows) + 1, limits)
            if cells > limits.max_table_cells:
                raise DocumentTooLarge(
                    "max_table_cells", limits.max_table_cells, f"table has at least {cells} cells", cells
                )
            normalized = [" ".join(cell.split()) for cell in record]
            if any(normalized):
                line = " | ".join(normalized)
                rows.append(line)
                length += len(line) + 1
                if length - 1 > limits.max_chars:
                    check_chars(length - 1, limits)
    except csv.Error as exc:
        raise ParseError(f"malformed CSV: {exc}") from exc
    if not rows:
        raise ParseError("empty file")
    offsets, pos = [], 0
    for line in rows:
        offsets.append(TableRow(pos, pos + len(line)))
        pos += len(line) + 1
    normalized_text = "\n".join(rows)
    table = Block("table", 0, len(normalized_text), header=offsets[0], rows=offsets[1:])
    return ParsedDocument(text=normalized_text, title=title, blocks=[table])


class _BoundedLines:
    """The lines of ``text`` for ``csv.reader``, checked before each is handed over.

    A record's fields are at most its delimiters + 1. That bound is counted per line at C
    speed (``str.count``) over the lines of the current record; only a record whose bound
    passes the column limit has its fields counted exactly (quoted delimiters do not
    separate fields), by a scanner that stops at the first field over the limit.
    ``record_done`` is called each time the reader yields a record (it reads no further
    than the line that ends it)."""

    def __init__(self, text: str, delimiter: str, limits: ParseLimits) -> None:
        self.text, self.delimiter, self.limits = text, delimiter, limits
        self.record_start = 0  # where the current record starts in text
        self.pos = 0  # where the next line starts
        self.delimiters = 0  # delimiters in the current record's lines so far
        self.scanner: _FieldScanner | None = None  # exact count, once the bound is passed
        self.records = 0

    def record_done(self) -> None:
        self.record_start, self.delimiters, self.scanner = self.pos, 0, None
        self.records += 1

    def __iter__(self) -> Iterator[str]:
        text, limit = self.text, self.limits.max_table_columns
        while self.pos < len(text):
            start = self.pos
            end = text.find("\n", start)
            end = len(text) if end == -1 else end + 1
            self.delimiters += text.count(self.delimiter, start, end)
            if self.delimiters + 1 > limit:
                if self.scanner is None:
                    self.scanner = _FieldScanner(text, self.delimiter, self.record_start)
                fields = self.scanner.scan(end, limit)
                if fields > limit:
                    quoted = text.find(_QUOTE, self.record_start, end) != -1
                    exact = None if quoted else self.delimiters + 1
                    raise _too_many_columns(
                        exact or fields, self.records + 1, limits=self.limits, at_least=exact is None
                    )
            self.pos = end
            yield text[start:end]


class _FieldScanner:
    """Counts the fields of one record the way the csv module splits them (default dialect,
    non-strict), resumably, line by line."""

    def __init__(self, text: str, delimiter: str, start: int) -> None:
        self.text, self.quote, self.delimiter = text, _QUOTE, delimiter
        self.pattern = re.compile("[" + re.escape(delimiter + _QUOTE) + "\n]")
        self.pos = start
        self.fields, self.field_start, self.in_quotes, self.skip = 1, start, False, -1

    def scan(self, end: int, limit: int) -> int:
        """Fields of the record up to ``end`` (or up to the first past ``limit``)."""
        text = self.text
        for match in self.pattern.finditer(text, self.pos, end):
            i = match.start()
            if self.in_quotes:
                if match.group() != self.quote or i == self.skip:
                    continue  # a quoted delimiter or newline, or the second quote of ""
                if text.startswith(self.quote, i + 1):  # "" inside quotes: a literal quote
                    self.skip = i + 1
                else:
                    self.in_quotes = False
            elif match.group() == self.quote:
                self.in_quotes = i == self.field_start  # a quote mid-field is literal
            elif match.group() == self.delimiter:
                self.fields += 1
                self.field_start = i + 1
                if self.fields > limit:
                    self.pos = i + 1
                    return self.fields
            # an unquoted newline ends the record: the next line is the next record's
        self.pos = end
        return self.fields


def _too_many_columns(columns: int, row: int, limits: ParseLimits, at_least: bool = False) -> DocumentTooLarge:
    where = "table" if row == 1 else f"table row {row}"
    amount = f"more than {columns - 1}" if at_least else str(columns)
    return DocumentTooLarge("max_table_columns", limits.max_table_columns, f"{where} has {amount} columns", columns)


def _sniff(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:16384], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def parse_csv_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point for ``.csv`` files."""
    return [parse_csv(decode_text(data), title, limits=limits)]


def parse_tsv_bytes(data: bytes, title: str, limits: ParseLimits | None = None) -> list[ParsedDocument]:
    """Registry entry point for ``.tsv`` files."""
    return [parse_csv(decode_text(data), title, delimiter="\t", limits=limits)]
