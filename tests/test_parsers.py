"""Parsers: each format on a small real file, plus the ways a bad file is rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fpdf import FPDF

from indexing.parsers import SUPPORTED_SUFFIXES, ParseError, parse_bytes, parse_path, parse_text
from indexing.parsers.base import Block, ParsedDocument
from indexing.sentences import SentenceSplitter

FIXTURES = Path(__file__).parent / "fixtures"


def block_texts(doc: ParsedDocument, kind: str | None = None) -> list[str]:
    return [doc.text[b.start : b.end] for b in doc.blocks if kind is None or b.kind == kind]


def only_table(doc: ParsedDocument) -> Block:
    tables = [b for b in doc.blocks if b.kind == "table"]
    assert len(tables) == 1
    return tables[0]


def row_texts(doc: ParsedDocument, table: Block) -> list[str]:
    return [doc.text[r.start : r.end] for r in table.rows]


def assert_blocks_in_text(doc: ParsedDocument) -> None:
    for block in doc.blocks:
        assert 0 <= block.start <= block.end <= len(doc.text)
        for row in ([block.header] if block.header else []) + block.rows:
            assert block.start <= row.start <= row.end <= block.end


def make_pdf(path: Path, paragraphs: list[str], title: str = "") -> Path:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for paragraph in paragraphs:
        pdf.multi_cell(0, 8, paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
    pdf.output(str(path))
    return path


# --- Markdown -----------------------------------------------------------------------


def test_markdown_headings_paragraphs_lists_and_title():
    [doc] = parse_path(FIXTURES / "guide.md")
    assert doc.title == "Spanrag Guide"
    headings = [(b.level, doc.text[b.start : b.end]) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Spanrag Guide"),
        (2, "Installation"),
        (3, "Requirements"),
        (2, "Configuration"),
        (2, "Setext Heading"),
    ]
    paragraphs = block_texts(doc, "paragraph")
    assert "Install the package with pip. Then run the server." in paragraphs
    assert "- Python 3.11 or newer" in paragraphs  # each list item is a paragraph
    assert_blocks_in_text(doc)


def test_markdown_pipe_table_has_header_and_rows():
    [doc] = parse_path(FIXTURES / "guide.md")
    table = only_table(doc)
    assert doc.text[table.header.start : table.header.end] == "| Setting | Default | Meaning |"
    assert row_texts(doc, table) == [
        "| top_k | 8 | Spans returned per query |",
        "| granularity | sentence | Finest span level |",
    ]


def test_markdown_text_is_source_with_normalized_newlines():
    [doc] = parse_bytes(b"Intro\r\n\r\nBody text.\r\n", "notes.markdown")
    assert doc.text == "Intro\n\nBody text.\n"
    assert doc.title == "notes"  # no H1: the file stem
    assert block_texts(doc, "paragraph") == ["Intro", "Body text."]


# --- HTML ---------------------------------------------------------------------------


def test_html_drops_script_style_nav_and_keeps_structure():
    [doc] = parse_path(FIXTURES / "report.html")
    assert doc.title == "Quarterly Report"
    for junk in ("console.log", "font-family", "Home", "About"):
        assert junk not in doc.text
    assert [(b.level, doc.text[b.start : b.end]) for b in doc.blocks if b.kind == "heading"] == [
        (1, "Quarterly Report"),
        (2, "Regional results"),
        (2, "Outlook"),
    ]
    assert block_texts(doc, "paragraph") == [
        "Revenue grew in the third quarter. Costs stayed flat.",
        "Hire two engineers.",
        "Open a new office.",
        "code line 1\n  code line 2",
    ]
    assert_blocks_in_text(doc)


def test_html_table_rows_are_pipe_joined_with_th_header():
    [doc] = parse_path(FIXTURES / "report.html")
    table = only_table(doc)
    assert doc.text[table.header.start : table.header.end] == "Region | Revenue | Growth"
    assert row_texts(doc, table) == ["North | 120 | 5%", "South | 95 | -2%"]


def test_html_table_without_th_uses_first_row_as_header():
    doc = parse_text("<table><tr><td>a</td><td>b</td></tr><tr><td>1</td><td>2</td></tr></table>", fmt="html")
    table = only_table(doc)
    assert doc.text[table.header.start : table.header.end] == "a | b"
    assert row_texts(doc, table) == ["1 | 2"]


def test_html_title_falls_back_to_h1_then_stem():
    assert parse_bytes(b"<h1>Heading One</h1><p>x</p>", "page.htm")[0].title == "Heading One"
    assert parse_bytes(b"<p>No headings here.</p>", "page.htm")[0].title == "page"


# --- Plain text ---------------------------------------------------------------------


def test_text_paragraphs_and_short_standalone_lines_as_headings():
    [doc] = parse_path(FIXTURES / "article.txt")
    assert doc.title == "article"
    assert block_texts(doc, "heading") == ["Life", "Theoretical philosophy", "Logic"]
    paragraphs = block_texts(doc, "paragraph")
    assert paragraphs[0].startswith("Aristotle was an Ancient Greek philosopher")
    assert paragraphs[1].startswith("He was born in the city of Stagira")
    # ends with a colon and is last: a paragraph, not a heading
    assert paragraphs[-1] == "In Protrepticus, the character 'Aristotle' states:"


def test_text_decodes_utf8_bom_and_crlf():
    [doc] = parse_bytes("\ufeffCafé au lait.\r\n\r\nSecond paragraph.".encode("utf-8"), "a.txt")
    assert doc.text == "Café au lait.\n\nSecond paragraph."


def test_text_accepts_legacy_single_byte_text():
    [doc] = parse_bytes("Café crème, naïve façade.".encode("cp1252"), "old.txt")
    assert doc.text == "Café crème, naïve façade."


def test_text_rejects_binary_junk():
    with pytest.raises(ParseError, match="NUL"):
        parse_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "image.txt")
    with pytest.raises(ParseError, match="control characters"):
        parse_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 8]) * 20 + b"some text", "junk.txt")
    with pytest.raises(ParseError, match="UTF-8"):
        parse_bytes(bytes(range(0x80, 0x100)) * 4, "junk.txt")


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.csv", "empty.jsonl", "empty.html", "empty.pdf"])
def test_empty_or_whitespace_file_is_rejected(name):
    with pytest.raises(ParseError, match="empty file"):
        parse_bytes(b"  \n\t\n", name)


def test_wiki_article_headings():
    wiki = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wiki10" / "articles.json"
    if not wiki.exists():
        pytest.skip("wiki10 dataset not present")
    article = json.loads(wiki.read_text())[0]
    doc = parse_text(article["text"], title=article["title"])
    headings = block_texts(doc, "heading")
    assert headings[:4] == ["Life", "Theoretical philosophy", "Logic", "Organon"]


# --- PDF ----------------------------------------------------------------------------


def test_pdf_text_and_paragraphs(tmp_path):
    path = make_pdf(
        tmp_path / "memo.pdf",
        [
            "The first paragraph talks about spans. It has two sentences.",
            "The second paragraph is about tables and rows.",
        ],
        title="Span Memo",
    )
    [doc] = parse_path(path)
    assert doc.title == "Span Memo"
    assert block_texts(doc, "paragraph") == [
        "The first paragraph talks about spans. It has two sentences.",
        "The second paragraph is about tables and rows.",
    ]
    assert doc.metadata["pages"] == [(0, len(doc.text))]


def test_pdf_without_title_uses_stem(tmp_path):
    [doc] = parse_path(make_pdf(tmp_path / "scan-01.pdf", ["Hello there."]))
    assert doc.title == "scan-01"


def test_pdf_truncated_is_malformed(tmp_path):
    good = make_pdf(tmp_path / "good.pdf", ["Some content here."]).read_bytes()
    with pytest.raises(ParseError, match="malformed PDF"):
        parse_bytes(good[: len(good) // 3], "broken.pdf")
    with pytest.raises(ParseError, match="malformed PDF"):
        parse_bytes(b"\x00\x01 this is not a pdf at all", "fake.pdf")


def test_pdf_without_text_is_rejected(tmp_path):
    pdf = FPDF()
    pdf.add_page()  # a blank page: nothing to extract
    pdf.output(str(tmp_path / "blank.pdf"))
    with pytest.raises(ParseError, match="no extractable text"):
        parse_path(tmp_path / "blank.pdf")


def test_pdf_encrypted_is_rejected(tmp_path):
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, "Top secret.")
    pdf.output(str(tmp_path / "locked.pdf"))
    with pytest.raises(ParseError, match="encrypted"):
        parse_path(tmp_path / "locked.pdf")


# --- CSV ----------------------------------------------------------------------------


def test_csv_is_one_table_with_header_and_every_data_row():
    [doc] = parse_path(FIXTURES / "people.csv")
    assert doc.title == "people"
    assert doc.text == (
        "name | role | years\nAda Lovelace | Analyst | 1843\n"
        "Alan Turing | Mathematician, cryptanalyst | 1936\n"
        "Grace Hopper | Admiral | 1952"
    )
    table = only_table(doc)
    assert doc.text[table.header.start : table.header.end] == "name | role | years"
    assert len(table.rows) == 3  # the blank line is not a row


def test_csv_sniffs_semicolons_and_tsv_uses_tabs():
    [doc] = parse_bytes(b"a;b\n1;2\n", "semi.csv")
    assert doc.text == "a | b\n1 | 2"
    [doc] = parse_bytes(b"a\tb, c\n1\t2\n", "data.tsv")
    assert doc.text == "a | b, c\n1 | 2"


# --- JSONL --------------------------------------------------------------------------


def test_jsonl_one_document_per_record():
    path = FIXTURES / "scifact_5.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    docs = parse_path(path)
    assert [d.doc_id for d in docs] == [r["_id"] for r in records]
    for doc, record in zip(docs, records):
        assert doc.title == record["title"]
        assert doc.text == f"{record['title']}\n\n{record['text']}"
        heading = doc.blocks[0]
        assert (heading.kind, heading.level, doc.text[heading.start : heading.end]) == ("heading", 1, record["title"])
        assert block_texts(doc, "paragraph") == [record["text"]]


def test_jsonl_splits_body_paragraphs_and_keeps_metadata():
    data = json.dumps({"_id": "d1", "title": "", "text": "One.\n\nTwo.", "metadata": {"year": 2020}}).encode()
    [doc] = parse_bytes(data, "corpus.jsonl")
    assert doc.text == "One.\n\nTwo."  # no title: no heading, no blank prefix
    assert block_texts(doc) == ["One.", "Two."]
    assert doc.metadata == {"year": 2020}


def test_jsonl_malformed_line_names_its_number():
    data = b'{"_id": "1", "title": "A", "text": "ok"}\n\n{"_id": "2", "text": oops}\n'
    with pytest.raises(ParseError, match="line 3"):
        parse_bytes(data, "corpus.jsonl")
    with pytest.raises(ParseError, match='line 1: missing "_id"'):
        parse_bytes(b'{"title": "A", "text": "x"}', "corpus.jsonl")


# --- Registry -----------------------------------------------------------------------


def test_registry_suffixes_and_unsupported_type(tmp_path):
    assert set(SUPPORTED_SUFFIXES) >= {
        ".md",
        ".markdown",
        ".html",
        ".htm",
        ".txt",
        ".text",
        ".pdf",
        ".csv",
        ".tsv",
        ".jsonl",
    }
    with pytest.raises(ParseError, match=r"unsupported file type \.xyz"):
        parse_bytes(b"hello", "file.xyz")
    (tmp_path / "file.docx").write_bytes(b"PK")
    with pytest.raises(ParseError, match=r"unsupported file type \.docx"):
        parse_path(tmp_path / "file.docx")
    assert parse_bytes(b"# Upper\n\nx", "README.MD")[0].title == "Upper"


def test_parse_text_formats():
    assert parse_text("# T\n\nBody.", fmt="markdown").title == "T"
    assert parse_text("Body only.", title="memo").title == "memo"
    with pytest.raises(ParseError, match="unsupported format"):
        parse_text("x", fmt="docx")
    with pytest.raises(ParseError, match="empty file"):
        parse_text("   ")


# --- Sentences ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hello world. It is 3.5 degrees today (n = 17, p = 0.016)! Is it? Yes",
        "  leading space. Dr. Smith arrived at 5 p.m. yesterday.  ",
        "One line\nno punctuation\n\nnew paragraph here.",
        "- bullet one\n- bullet two.",
    ],
)
def test_sentence_offsets_are_trimmed_ordered_and_cover_the_text(text):
    spans = SentenceSplitter().split(text)
    assert spans
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end
        assert text[start:end] == text[start:end].strip()
        previous_end = end
    covered = "".join(text[s:e] for s, e in spans)
    assert "".join(covered.split()) == "".join(text.split())


def test_sentence_splitter_splits_sentences():
    text = "Alterations of white matter can affect development. A line scan (n = 17) was applied."
    assert [text[s:e] for s, e in SentenceSplitter().split(text)] == [
        "Alterations of white matter can affect development.",
        "A line scan (n = 17) was applied.",
    ]
    assert SentenceSplitter().split("   ") == []
