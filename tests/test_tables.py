"""Tables as tables: a selected row shows its label and the columns of the years the
question asks about, and costs that much; anything the rule cannot read stays whole.

The headers below are real TAT-QA dev headers (``../shared/datasets/tatqa/dev.json``),
written as ``eval.datasets.tatqa_document`` lays them out."""

from __future__ import annotations

import pytest

from indexing.parsers import parse_csv, parse_html
from indexing.spans import Span
from retrieval.context import share_table_headers
from retrieval.tables import column_labels, project_row, question_years, shown_rows
from retrieval.types import ContextSpan

THREE_YEARS = " | 2019 | 2018 | 2017"
SALES = "Total sales | $1,496.5 | $1,202.9 | $1,107.7"
WITH_CHANGE = "|  | December 31, |  | Change\n | 2019 | 2018 | $ | %"
NET_SALES = "Net sales | $ 93,662 | $ 103,350 | $ (9,688) | (9.4%)"
SPANNING_ONLY = "|  | Fiscal Year Ended | \n | December 27, 2019 | December 28, 2018 | December 29, 2017"


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_a_question_about_one_year_shows_the_label_and_that_years_column():
    shown = project_row(THREE_YEARS, SALES, "What is the amount of total sales in 2019?")
    assert shown is not None
    assert shown.row == "Total sales | $1,496.5" and shown.header == "| 2019"


def test_years_named_as_a_range_keep_the_years_between_them():
    assert question_years("earnings per share for fiscal years 2019 to 2017") == {"2017", "2018", "2019"}
    assert question_years("from 1990 to 2019") == {"1990", "2019"}  # too far apart to be a range
    assert project_row(THREE_YEARS, SALES, "total sales from 2019 to 2017?") is None  # every column asked


def test_columns_without_a_year_stay_only_when_the_question_names_them():
    asked_change = project_row(WITH_CHANGE, NET_SALES, "What was the change in net sales in 2019?")
    asked_value = project_row(WITH_CHANGE, NET_SALES, "What is the net sales for year ended December 31, 2019?")
    assert asked_change is not None and asked_value is not None
    assert asked_value.row == "Net sales | $ 93,662"
    assert asked_value.header == "| 2019"  # the first header line has nothing over these columns
    assert asked_change.row == "Net sales | $ 93,662 | $ (9,688) | (9.4%)"


def test_a_spanning_header_line_labels_no_column():
    """ "Fiscal Year Ended" sits over the middle of three columns in the source: which of
    them it spans is not written down, so only the fully filled line labels columns."""
    assert column_labels(SPANNING_ONLY.split("\n"), 4) == [
        "",
        "December 27, 2019",
        "December 28, 2018",
        "December 29, 2017",
    ]
    shown = project_row(SPANNING_ONLY, "Non-cash charges | $47,625 | $38,186 | $28,725", "non-cash charges in 2018")
    assert shown is not None and shown.row == "Non-cash charges | $38,186"


@pytest.mark.parametrize(
    ("header", "row", "question", "why"),
    [
        (THREE_YEARS, SALES, "In which year is the amount of total sales the largest?", "no year asked"),
        (THREE_YEARS, SALES, "total sales in 2016?", "a year no column has"),
        (" | 2019 | 2 0 1 8", "Operating loss | 73,260 | 57,768", "loss in 2019 and 2018", "a year no column has"),
        (" | 2019 | 2018", "Revenue | 5 | 4 | 3", "revenue in 2019", "cells that do not line up"),
        ("Year | Revenue", "2019 | 4.1", "revenue in 2019", "years are rows, not columns"),
        ("", SALES, "total sales in 2019", "no header"),
    ],
)
def test_a_row_the_rule_cannot_read_stays_whole(header, row, question, why):
    assert project_row(header, row, question) is None, why


def test_markdown_outer_pipes_are_not_columns():
    shown = project_row("| Item | 2019 | 2018 |", "| Sales | 5 | 4 |", "sales in 2019")
    assert shown is not None and (shown.header, shown.row) == ("| Item | 2019 |", "| Sales | 5 |")


def test_a_cut_row_costs_what_it_shows_and_shares_its_cut_header():
    rows = [
        Span(f"t#{i}", "t", "t#1", "row", i * 50, i * 50 + len(text), text, n_tokens=20, header=THREE_YEARS)
        for i, text in enumerate([SALES, "Other | 44.1 | 56.7 | 70.8"], start=2)
    ]
    shown = shown_rows(rows, "total sales and other in 2019", words)
    items = [
        ContextSpan(r, 1.0, projection=shown[r.id].projection, whole_tokens=shown[r.id].whole_tokens) for r in rows
    ]
    share_table_headers(items, {"t#1": shown["t#2"].header_tokens})

    assert [i.text for i in items] == ["| 2019\nTotal sales | $1,496.5", "Other | 44.1"]
    assert [i.n_tokens for i in items] == [len(i.text.split()) for i in items]
    assert [i.span.text for i in items] == [SALES, "Other | 44.1 | 56.7 | 70.8"]  # citations keep the row


def test_rows_of_a_ragged_table_all_show_whole_so_the_one_header_shown_fits_each():
    """Only the table's first row in the context shows the header: a row cut to 2018 under
    the whole header would read as 2019's value."""
    ragged = "Other | 44.1 | 56.7"  # three cells under a four-column header: not cut
    rows = [
        Span(f"t#{i}", "t", "t#1", "row", i * 50, i * 50 + len(text), text, n_tokens=20, header=THREE_YEARS)
        for i, text in enumerate([ragged, SALES], start=2)
    ]
    shown = shown_rows(rows, "total sales in 2018", words)
    assert shown["t#2"].projection is None and shown["t#3"].projection is None

    other_table = Span("u#2", "u", "u#1", "row", 0, len(SALES), SALES, n_tokens=20, header=THREE_YEARS)
    assert shown_rows([*rows, other_table], "total sales in 2018", words)["u#2"].projection is not None


def test_without_a_question_rows_show_whole():
    row = Span("t#2", "t", "t#1", "row", 0, len(SALES), SALES, n_tokens=12, header=THREE_YEARS)
    shown = shown_rows([row], None, words)["t#2"]
    assert shown.projection is None and shown.whole_tokens == 12 and shown.header_tokens == len(THREE_YEARS.split())


@pytest.mark.parametrize(
    "parse",
    [
        lambda: parse_html(
            "<table><tr><th>Region</th><th>2019</th><th>2018</th></tr>"
            "<tr><td>Europe</td><td>1,200</td><td>1,100</td></tr></table>"
        ),
        lambda: parse_csv('Region,2019,2018\nEurope,"1,200","1,100"\n'),
    ],
    ids=["html", "csv"],
)
def test_html_and_csv_tables_are_cut_as_their_parsers_lay_them_out(parse):
    doc = parse()
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.header is not None
    header = doc.text[table.header.start : table.header.end].strip()
    row = doc.text[table.rows[0].start : table.rows[0].end].strip()
    shown = project_row(header, row, "Revenue in Europe in 2019?")
    assert shown is not None and (shown.header, shown.row) == ("Region | 2019", "Europe | 1,200")
