"""Tables as tables: show a selected row with only the columns the question asks about.

A table row in a context costs its cells (and, as the first row of its table, the header
lines). A question that names years ("... in 2019", "from 2017 to 2019") needs those years'
columns and the row's label, not the years beside them. The rule:

* the question's years: four-digit numbers from 1900 to 2099; two or more stand for the
  range between the first and the last ("2019 to 2017" asks for 2018 too);
* a column's label: its cells in the header lines that fill every column. A line with
  empty cells is a spanning line ("| Fiscal Year Ended |", "| 2019 | | 2018 | |"), and
  which columns such a label spans is not written down, so it labels none;
* the row is cut only when every year asked for labels some column and some column is
  labelled with a year not asked for. It keeps the label column (the first), the columns
  of the years asked for, and the columns without a year whose label shares a word with
  the question ("Change" for "what was the change ...", also from a spanning line over
  such columns). Anything else keeps the row whole.

The projection changes what the context shows and what it costs, never the span: its id,
offsets and citations stay the row's own. Markdown's outer pipes are set aside and put back.

    >>> header = " | 2019 | 2018 | 2017"
    >>> project_row(header, "Total sales | $1,496.5 | $1,202.9 | $1,107.7", "total sales in 2019?")
    RowProjection(header='| 2019', row='Total sales | $1,496.5', columns=(0, 1))
    >>> project_row(header, "Total sales | $1,496.5 | $1,202.9 | $1,107.7", "sales from 2017 to 2018").row
    'Total sales | $1,202.9 | $1,107.7'
    >>> project_row(header, "Total sales | $1,496.5 | $1,202.9 | $1,107.7", "largest total sales?") is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from indexing.spans import Span
from retrieval.context import terms
from retrieval.types import RowProjection

_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_MAX_RANGE = 10  # "1990 and 2019" is two years, not thirty


def question_years(question: str) -> set[str]:
    """The years a question asks about; two or more stand for the range between them.

    >>> sorted(question_years("change from 2017 to 2019 (in thousands, 31 December)"))
    ['2017', '2018', '2019']
    """
    years = sorted({int(y) for y in _YEAR.findall(question)})
    if len(years) >= 2 and years[-1] - years[0] <= _MAX_RANGE:
        years = list(range(years[0], years[-1] + 1))
    return {str(y) for y in years}


def column_labels(header_lines: list[str], n_columns: int) -> list[str] | None:
    """Each column's label from the header lines that fill every column (None: a line's
    cells do not line up with ``n_columns``)."""
    labels = [""] * n_columns
    for line in header_lines:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != n_columns:
            return None
        if all(cells[1:]):
            labels = [f"{label} {cell}".strip() for label, cell in zip(labels, cells, strict=True)]
    return labels


def _outer_pipes(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) > 1 and stripped.startswith("|") and stripped.endswith("|")


@dataclass(frozen=True)
class _Asked:
    """What of a question the rule reads, worked out once per question."""

    years: frozenset[str]
    words: frozenset[str]

    @classmethod
    def of(cls, question: str) -> _Asked:
        return cls(frozenset(question_years(question)), frozenset(terms(question)))


def project_row(header: str, row: str, question: str) -> RowProjection | None:
    """The row (and its header lines) cut to the columns of the years the question asks
    about, or None when the whole row should show (see the module's rule)."""
    return _project(header, row, _Asked.of(question), {})


def _project(
    header: str, row: str, asked: _Asked, kept_by_table: dict[tuple[str, int, bool], tuple[int, ...] | None]
) -> RowProjection | None:
    """:func:`project_row` for an already-read question; ``kept_by_table`` remembers the
    columns kept for each header (rows of one table share it)."""
    if not header or not asked.years:
        return None
    lines = [line for line in header.split("\n") if line.strip()]
    outer = _outer_pipes(row)
    if outer:
        if not all(_outer_pipes(line) for line in lines):
            return None
        row = row.strip()[1:-1]
        lines = [line.strip()[1:-1] for line in lines]
    cells = row.split("|")
    key = (header, len(cells), outer)
    if key not in kept_by_table:
        kept_by_table[key] = _kept_columns(lines, len(cells), asked)
    keep = kept_by_table[key]
    if keep is None:
        return None
    # a header line with nothing left in the kept columns ("|  | Change" cut to the label
    # and 2019) would show only pipes
    kept_lines = [line.split("|") for line in lines]
    projected_header = "\n".join(_join(line, keep, outer) for line in kept_lines if any(line[j].strip() for j in keep))
    return RowProjection(projected_header, _join(cells, keep, outer), keep)


def _kept_columns(header_lines: list[str], n_columns: int, asked: _Asked) -> tuple[int, ...] | None:
    """The columns a row of this header shows for ``asked`` (None: all of them)."""
    if n_columns < 3:  # a label and one value: nothing to drop
        return None
    labels = column_labels(header_lines, n_columns)
    if labels is None:
        return None
    years_of = [set(_YEAR.findall(label)) if j > 0 else set() for j, label in enumerate(labels)]
    labelled_years = set().union(*years_of)
    if not asked.years <= labelled_years or labelled_years <= asked.years:
        return None
    # a spanning line's word over a column without a year ("Change" over "$ | %") may name
    # any of those columns
    spanning = {
        word
        for cells in (line.split("|") for line in header_lines)
        if not all(cell.strip() for cell in cells[1:])
        for j, cell in enumerate(cells)
        if j > 0 and not years_of[j]
        for word in terms(cell)
    }
    named = bool(spanning & asked.words)
    return tuple(
        j
        for j in range(n_columns)
        if j == 0 or years_of[j] & asked.years or (not years_of[j] and (named or terms(labels[j]) & asked.words))
    )


def _join(cells: list[str], keep: tuple[int, ...], outer: bool) -> str:
    text = "|".join(cells[j] for j in keep).strip()
    return f"| {text} |" if outer else text


@dataclass(frozen=True)
class ShownRow:
    """How a table row shows in a context: cut to some columns (``projection``) or whole
    (None), and what it costs with its header lines and what those lines cost alone."""

    projection: RowProjection | None
    whole_tokens: int
    header_tokens: int


def shown_rows(
    spans: Iterable[Span], question: str | None, count_tokens: Callable[[list[str]], list[int]]
) -> dict[str, ShownRow]:
    """Each table row with a header among ``spans`` (by span id), cut to the columns the
    question asks about (``question`` None: whole), its token costs counted in one batch.

        >>> row = Span("t#2", "t", "t#1", "row", 0, 9, "a | 1 | 2", n_tokens=9, header=" | 2019 | 2018")
        >>> shown = shown_rows([row], "a in 2019", lambda texts: [len(t.split()) for t in texts])["t#2"]
        >>> shown.projection.row, shown.whole_tokens, shown.header_tokens
        ('a | 1', 5, 2)
    """
    rows = [s for s in spans if s.granularity == "row" and s.header]
    asked = _Asked.of(question) if question else None
    kept_by_table: dict[tuple[str, int, bool], tuple[int, ...] | None] = {}
    projections = {s.id: _project(s.header, s.text, asked, kept_by_table) if asked else None for s in rows}
    _same_cut_per_table(rows, projections)
    texts: dict[str, None] = {}  # to count, each once, in order
    for s in rows:
        projection = projections[s.id]
        for text in (s.header,) if projection is None else (projection.header, projection.context_text):
            texts.setdefault(text)
    counted = dict(zip(texts, count_tokens(list(texts)), strict=True))
    out: dict[str, ShownRow] = {}
    for s in rows:
        projection = projections[s.id]
        if projection is None:
            out[s.id] = ShownRow(None, s.n_tokens, counted[s.header])
        else:
            out[s.id] = ShownRow(projection, counted[projection.context_text], counted[projection.header])
    return out


def _same_cut_per_table(rows: list[Span], projections: dict[str, RowProjection | None]) -> None:
    """Only a table's first row in the context shows the header lines, so every row of a
    table must be cut the same way; a ragged table (a row whose cells do not line up stays
    whole) shows all its rows whole."""
    cuts: dict[str, set[tuple[int, ...] | None]] = {}
    for s in rows:
        projection = projections[s.id]
        cuts.setdefault(s.parent_id or s.doc_id, set()).add(None if projection is None else projection.columns)
    for s in rows:
        if len(cuts[s.parent_id or s.doc_id]) > 1:
            projections[s.id] = None


__all__ = ["ShownRow", "column_labels", "project_row", "question_years", "shown_rows"]
