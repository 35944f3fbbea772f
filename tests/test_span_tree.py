"""The span tree: one pre-order list of document, section, paragraph, sentence, table
and row spans whose offsets always point back into the document text."""

from __future__ import annotations

from pathlib import Path

import pytest
from fpdf import FPDF

from indexing.parsers import parse_bytes, parse_path, parse_text
from indexing.parsers.base import Block, ParsedDocument, TableRow
from indexing.sentences import SentenceSplitter
from indexing.span_tree import build_span_tree
from indexing.spans import Span, span_id

FIXTURES = Path(__file__).parent / "fixtures"
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def count_tokens(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def build(parsed: ParsedDocument, doc_id: str = "doc") -> list[Span]:
    return build_span_tree(doc_id, parsed, count_tokens, SentenceSplitter())


def assert_tree_invariants(spans: list[Span], text: str) -> None:
    """Offsets round-trip, ids/orders are positions, children nest in earlier parents."""
    by_id = {}
    assert spans[0].granularity == "document" and spans[0].parent_id is None
    assert (spans[0].start, spans[0].end) == (0, len(text))
    for order, span in enumerate(spans):
        assert text[span.start : span.end] == span.text
        assert span.order == order and span.id == span_id(span.doc_id, order)
        assert span.n_tokens == len(span.context_text.split())
        if order:
            parent = by_id[span.parent_id]  # parents come first: pre-order
            assert parent.start <= span.start <= span.end <= parent.end
        by_id[span.id] = span


def of(spans: list[Span], granularity: str) -> list[Span]:
    return [s for s in spans if s.granularity == granularity]


def parent(spans: list[Span], span: Span) -> Span:
    return next(s for s in spans if s.id == span.parent_id)


def test_markdown_nested_sections_have_heading_paths():
    [parsed] = parse_path(FIXTURES / "guide.md")
    spans = build(parsed, "guide.md")
    assert_tree_invariants(spans, parsed.text)
    sections = [(s.heading_path, parent(spans, s).granularity) for s in of(spans, "section")]
    assert sections == [
        (["Spanrag Guide"], "document"),
        (["Spanrag Guide", "Installation"], "section"),
        (["Spanrag Guide", "Installation", "Requirements"], "section"),
        (["Spanrag Guide", "Configuration"], "section"),
        (["Spanrag Guide", "Setext Heading"], "section"),
    ]
    installation = of(spans, "section")[1]
    assert installation.text.startswith("Installation\n\nInstall the package")
    assert installation.text.endswith("- A GPU is optional")  # includes its subsection
    requirement = next(s for s in of(spans, "paragraph") if s.text == "- A GPU is optional")
    assert requirement.heading_path == ["Spanrag Guide", "Installation", "Requirements"]


def test_paragraphs_always_get_sentence_children():
    [parsed] = parse_path(FIXTURES / "guide.md")
    spans = build(parsed)
    for paragraph in of(spans, "paragraph"):
        children = [s for s in spans if s.parent_id == paragraph.id]
        assert children and all(c.granularity == "sentence" for c in children)
        assert all(c.heading_path == paragraph.heading_path for c in children)
    install = next(p for p in of(spans, "paragraph") if p.text.startswith("Install"))
    assert [s.text for s in spans if s.parent_id == install.id] == [
        "Install the package with pip.",
        "Then run the server.",
    ]
    single = next(p for p in of(spans, "paragraph") if p.text == "- Python 3.11 or newer")
    assert [s.text for s in spans if s.parent_id == single.id] == ["- Python 3.11 or newer"]


def test_table_rows_carry_the_header_line():
    [parsed] = parse_path(FIXTURES / "report.html")
    spans = build(parsed)
    assert_tree_invariants(spans, parsed.text)
    [table] = of(spans, "table")
    assert table.heading_path == ["Quarterly Report", "Regional results"]
    rows = of(spans, "row")
    assert all(r.parent_id == table.id and r.header == "Region | Revenue | Growth" for r in rows)
    assert [r.text for r in rows] == ["North | 120 | 5%", "South | 95 | -2%"]
    assert rows[0].context_text == "Region | Revenue | Growth\nNorth | 120 | 5%"
    assert rows[0].n_tokens == 10  # counted over header + row


def test_csv_table_under_the_document():
    [parsed] = parse_path(FIXTURES / "people.csv")
    spans = build(parsed)
    assert_tree_invariants(spans, parsed.text)
    assert [s.granularity for s in spans] == ["document", "table", "row", "row", "row"]
    assert {r.header for r in of(spans, "row")} == {"name | role | years"}


def test_plain_text_headings_become_flat_sections():
    [parsed] = parse_path(FIXTURES / "article.txt")
    spans = build(parsed)
    assert_tree_invariants(spans, parsed.text)
    assert [s.heading_path for s in of(spans, "section")] == [["Life"], ["Theoretical philosophy"], ["Logic"]]
    intro = of(spans, "paragraph")[0]
    assert intro.heading_path == [] and intro.parent_id == spans[0].id


def test_jsonl_title_is_the_heading_path_of_the_abstract():
    docs = parse_path(FIXTURES / "scifact_5.jsonl")
    for parsed in docs:
        spans = build(parsed, parsed.doc_id)
        assert_tree_invariants(spans, parsed.text)
        assert all(s.heading_path == [parsed.title] for s in spans[1:])
        assert len(of(spans, "sentence")) > 1


def test_pdf_spans_round_trip(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for text in ["First page text. Two sentences.", "Another paragraph here."]:
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Second page paragraph.")
    pdf.output(str(tmp_path / "two.pdf"))
    [parsed] = parse_path(tmp_path / "two.pdf")
    spans = build(parsed)
    assert_tree_invariants(spans, parsed.text)
    assert [p.text for p in of(spans, "paragraph")] == [
        "First page text. Two sentences.",
        "Another paragraph here.",
        "Second page paragraph.",
    ]
    first, second = parsed.metadata["pages"]
    assert parsed.text[second[0] : second[1]] == "Second page paragraph."


def test_sections_close_at_same_or_higher_level():
    parsed = parse_text("# A\n\n## B\n\nb text.\n\n# C\n\nc text.\n\n### D\n\nd text.", fmt="markdown")
    spans = build(parsed)
    assert_tree_invariants(spans, parsed.text)
    assert [(s.heading_path, s.text) for s in of(spans, "section")] == [
        (["A"], "A\n\n## B\n\nb text."),
        (["A", "B"], "B\n\nb text."),
        (["C"], "C\n\nc text.\n\n### D\n\nd text."),
        (["C", "D"], "D\n\nd text."),  # a skipped level still nests
    ]


def test_blocks_are_trimmed_and_empty_blocks_dropped():
    text = "  Heading  \n\n  Body text.  \n\n   "
    parsed = ParsedDocument(
        text=text,
        title="t",
        blocks=[
            Block("heading", 0, 11, level=1),
            Block("paragraph", 11, 28),
            Block("paragraph", 28, 33),
            Block("table", 30, 33, header=TableRow(30, 31), rows=[TableRow(31, 33)]),
        ],
    )
    spans = build(parsed)
    assert_tree_invariants(spans, text)
    assert [(s.granularity, s.text) for s in spans] == [
        ("document", text),
        ("section", "Heading  \n\n  Body text."),
        ("paragraph", "Body text."),
        ("sentence", "Body text."),
    ]


def test_count_tokens_is_called_once_with_every_span():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return [1] * len(texts)

    [parsed] = parse_bytes(b"# T\n\nOne. Two.\n", "t.md")
    spans = build_span_tree("t", parsed, counting, SentenceSplitter())
    assert calls == [[s.context_text for s in spans]]


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.exists(), reason="SciFact corpus not present")
def test_every_scifact_span_round_trips_to_its_document_text():
    docs = parse_path(SCIFACT)
    splitter = SentenceSplitter()
    n_spans = 0
    for parsed in docs:
        spans = build_span_tree(parsed.doc_id, parsed, count_tokens, splitter)
        n_spans += len(spans)
        assert all(parsed.text[s.start : s.end] == s.text for s in spans)
    assert len(docs) == 5183 and n_spans > 5 * len(docs)
