"""Parsing is bounded: every input a parser takes is held to ParseLimits, refused early and
cheaply with DocumentTooLarge (which names the limit, its value, what was seen and the
setting that raises it), hostile input never escapes as RecursionError or
UnicodeDecodeError, and in a batch of files one bad file is reported while the others are
stored -- all of a file's documents or none of them."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from pathlib import Path

import pytest

from indexing.ingest import Ingestor
from indexing.parsers import (
    DocumentTooLarge,
    ParseError,
    ParseLimits,
    check_metadata,
    check_text,
    parse_bytes,
    parse_path,
    parse_text,
)
from indexing.parsers.base import ParsedDocument
from indexing.sentences import SentenceSplitter
from indexing.span_tree import build_span_tree

C = "docs"
ENV_NAMES = {
    "max_bytes": "SPANRAG_MAX_DOCUMENT_BYTES",
    "max_chars": "SPANRAG_MAX_DOCUMENT_CHARS",
    "max_spans": "SPANRAG_MAX_DOCUMENT_SPANS",
    "max_table_cells": "SPANRAG_MAX_TABLE_CELLS",
    "max_table_columns": "SPANRAG_MAX_TABLE_COLUMNS",
    "max_nesting_depth": "SPANRAG_MAX_NESTING_DEPTH",
    "max_metadata_bytes": "SPANRAG_MAX_METADATA_BYTES",
    "max_metadata_depth": "SPANRAG_MAX_METADATA_DEPTH",
}
GOOD_MD = b"# Bees\n\nBees make honey. They live in hives.\n"
GOOD_TXT = b"Tea notes\n\nGreen tea is brewed at 80 degrees.\n"


def nested_html(depth: int, tag: str = "div") -> bytes:
    return (f"<{tag}>" * depth + "deep text" + f"</{tag}>" * depth).encode()


def nested_dict(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def refused(excinfo, limit_name: str) -> DocumentTooLarge:
    """The DocumentTooLarge in ``excinfo``, checked to name ``limit_name`` and its setting."""
    exc = excinfo.value
    assert isinstance(exc, DocumentTooLarge), repr(exc)
    assert exc.limit_name == limit_name
    assert ENV_NAMES[limit_name] in str(exc) and f"the limit is {exc.limit}" in str(exc)
    return exc


# -- the limits themselves --------------------------------------------------------------------


def test_limits_have_documented_defaults_and_refuse_non_positive_values():
    limits = ParseLimits()
    assert (limits.max_bytes, limits.max_chars, limits.max_spans) == (50_000_000, 5_000_000, 200_000)
    assert (limits.max_table_cells, limits.max_table_columns) == (1_000_000, 1_000)
    assert (limits.max_nesting_depth, limits.max_metadata_bytes, limits.max_metadata_depth) == (256, 65_536, 16)
    for name, env in ENV_NAMES.items():
        for bad in (0, -1, 2.5, True, "10"):
            with pytest.raises(ValueError, match=env):
                ParseLimits(**{name: bad})


def test_document_too_large_is_a_parse_error_naming_limit_value_and_setting():
    exc = DocumentTooLarge("max_table_columns", 1000, "table has 1000000 columns", 1_000_000)
    assert isinstance(exc, ParseError)
    assert str(exc) == "table has 1000000 columns; the limit is 1000 (SPANRAG_MAX_TABLE_COLUMNS)"
    assert (exc.limit, exc.observed, exc.env) == (1000, 1_000_000, "SPANRAG_MAX_TABLE_COLUMNS")


# -- bytes and characters ---------------------------------------------------------------------


def test_bytes_over_the_limit_are_refused_before_parsing(monkeypatch):
    def no_parsing(*args, **kwargs):
        raise AssertionError("an oversized file must not reach its parser")

    monkeypatch.setattr("indexing.parsers.text.decode_text", no_parsing)
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(b"word " * 30, "notes.txt", ParseLimits(max_bytes=100))
    assert refused(excinfo, "max_bytes").observed == 150


def test_a_file_over_the_limit_is_refused_without_reading_it(tmp_path, monkeypatch):
    big = tmp_path / "huge.txt"
    with big.open("wb") as f:  # sparse: 60 MB on paper, nothing on disk
        f.truncate(60_000_000)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(ParseError) as excinfo:
        parse_path(big)  # the default limit: 50 MB
    assert "60000000 bytes" in str(refused(excinfo, "max_bytes"))


@pytest.mark.parametrize(
    "name, data",
    [
        ("a.txt", b"Plenty of words here. " * 20),
        ("a.md", b"# Title\n\n" + b"Plenty of words here. " * 20),
        ("a.html", b"<p>" + b"Plenty of words here. " * 20 + b"</p>"),
        ("a.csv", b"a,b\n" + b"plenty,words\n" * 40),
        ("a.jsonl", json.dumps({"_id": "1", "text": "Plenty of words here. " * 20}).encode()),
    ],
)
def test_text_over_max_chars_is_refused_in_every_format(name, data):
    parse_bytes(data, name, ParseLimits(max_chars=10_000))  # fits a larger limit
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(data, name, ParseLimits(max_chars=200))
    assert refused(excinfo, "max_chars").observed > 200


def test_parse_text_holds_text_to_max_chars():
    with pytest.raises(ParseError) as excinfo:
        parse_text("Plenty of words here. " * 20, fmt="markdown", limits=ParseLimits(max_chars=100))
    refused(excinfo, "max_chars")


# -- tables -----------------------------------------------------------------------------------


def test_a_csv_with_a_million_columns_is_refused_fast_in_bounded_memory(tmp_path):
    header = ",".join(f"c{i}" for i in range(1_000_000))
    path = tmp_path / "wide.csv"
    path.write_text(header + "\n" + header.replace("c", "v") + "\n")
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ParseError) as excinfo:
            parse_path(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    exc = refused(excinfo, "max_table_columns")
    assert str(exc).startswith("table has 1000000 columns; the limit is 1000")
    assert elapsed < 2.0
    # the file's bytes and its decoded text, not a million-cell row (~60 MB of objects)
    assert peak < 4 * path.stat().st_size, peak


def test_a_wide_row_after_the_header_is_refused_with_its_row_number():
    data = ("a,b,c\n1,2,3\n" + ",".join("x" * 2000) + "\n").encode()
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(data, "rows.csv")
    assert "table row 3 has 2000 columns" in str(refused(excinfo, "max_table_columns"))


def test_quoted_delimiters_do_not_count_as_columns():
    cell = '"' + ", ".join(["x"] * 2000) + '"'
    [doc] = parse_bytes(f"name,list\nfirst,{cell}\n".encode(), "quoted.csv")
    assert doc.text.splitlines()[1].startswith("first | x, x, x")


def test_a_quoted_record_over_many_lines_is_counted_as_one_row():
    record = ",".join(f'"line {i}\nmore"' for i in range(30))
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(("h\n" + record + "\n").encode(), "multi.csv", ParseLimits(max_table_columns=20))
    refused(excinfo, "max_table_columns")
    [doc] = parse_bytes(("h\n" + record + "\n").encode(), "multi.csv", ParseLimits(max_table_columns=30))
    assert doc.text.count("|") == 29


def test_table_cells_are_limited_in_csv_tsv_and_html():
    limits = ParseLimits(max_table_cells=10)
    rows = "a\tb\tc\n" + "1\t2\t3\n" * 3
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(rows.replace("\t", ",").encode(), "t.csv", limits)
    refused(excinfo, "max_table_cells")
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(rows.encode(), "t.tsv", limits)
    refused(excinfo, "max_table_cells")
    table = "<table>" + "<tr><td>1</td><td>2</td><td>3</td></tr>" * 4 + "</table>"
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(table.encode(), "t.html", limits)
    refused(excinfo, "max_table_cells")
    assert parse_bytes(rows.encode(), "t.tsv", ParseLimits(max_table_cells=12))


def test_html_and_markdown_tables_are_limited_in_columns():
    row = "".join(f"<td>{i}</td>" for i in range(1500))
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(f"<table><tr>{row}</tr></table>".encode(), "wide.html")
    refused(excinfo, "max_table_columns")
    header = "|" + "|".join(f"c{i}" for i in range(5000)) + "|"
    delimiter = "|" + "|".join(["-"] * 5000) + "|"
    started = time.perf_counter()
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(f"# Wide\n\n{header}\n{delimiter}\n{header}\n".encode(), "wide.md")
    assert "table has 5000 columns" in str(refused(excinfo, "max_table_columns"))
    assert time.perf_counter() - started < 1.0


# -- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("tag", ["div", "span", "ul"])
def test_deeply_nested_html_is_refused_fast_without_recursion_error(depth, tag):
    data = nested_html(depth, tag)
    started = time.perf_counter()
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(data, "deep.html")
    elapsed = time.perf_counter() - started
    exc = refused(excinfo, "max_nesting_depth")
    assert "HTML is nested more than 256 levels deep" in str(exc)
    assert not isinstance(exc.__cause__, RecursionError)
    assert elapsed < 2.0, f"{elapsed:.1f} s"


def test_nesting_the_quick_estimate_misses_is_caught_in_the_parsed_tree():
    # each level is table > tbody > tr > td, of which the estimate counts only the table
    data = ("<table><tr><td>" * 100 + "cell" + "</td></tr></table>" * 100).encode()
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(data, "tables.html")
    refused(excinfo, "max_nesting_depth")


def test_sloppy_but_ordinary_html_is_not_refused():
    # thousands of unclosed <p>, <li>, <td>, <option> and formatting elements: a flat page
    page = (
        "<table>"
        + "<tr><td>a<td>b" * 2000
        + "</table>"
        + "<ul>"
        + "<li>item <b>bold" * 2000
        + "</ul>"
        + "<select>"
        + "<option>o" * 2000
        + "</select>"
        + "<a href=1>one<a href=2>two" * 1000
        + "<p>para <i>x" * 2000
    )
    [doc] = parse_bytes(page.encode(), "sloppy.html")
    assert "item bold" in doc.text and "a | b" in doc.text


def test_html_nested_within_a_raised_limit_parses_without_recursion():
    data = nested_html(3_000, "div")
    [doc] = parse_bytes(data, "deep.html", ParseLimits(max_nesting_depth=4_000))
    assert doc.text == "deep text"
    data = nested_html(3_000, "span").replace(b"deep text", b"<h2>Deep</h2>")
    [doc] = parse_bytes(b"<h1>Top</h1>" + data, "deep.html", ParseLimits(max_nesting_depth=4_000))
    assert doc.text == "Top\n\nDeep"


@pytest.mark.parametrize("depth", [300, 2_000, 100_000])
def test_a_deeply_nested_jsonl_record_is_refused(depth):
    metadata = "[" * depth + "]" * depth
    line = f'{{"_id": "1", "text": "Body.", "metadata": {{"m": {metadata}}}}}'
    started = time.perf_counter()
    with pytest.raises(ParseError) as excinfo:
        parse_bytes(line.encode(), "corpus.jsonl")
    refused(excinfo, "max_nesting_depth")
    assert time.perf_counter() - started < 2.0


# -- metadata and text that cannot be stored ----------------------------------------------------


@pytest.mark.parametrize("depth", [300, 2_000])
def test_metadata_nested_too_deep_is_refused(depth):
    with pytest.raises(ParseError) as excinfo:
        check_metadata(nested_dict(depth), ParseLimits())
    refused(excinfo, "max_metadata_depth")
    check_metadata(nested_dict(depth), ParseLimits(max_metadata_depth=depth, max_metadata_bytes=100_000))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_metadata_with_non_finite_numbers_is_refused(value):
    with pytest.raises(ParseError, match=r'metadata\["scores"\]\[1\] is NaN or infinite'):
        check_metadata({"scores": [1.0, value]}, ParseLimits())


def test_metadata_must_be_json_with_string_keys_and_encodable_strings():
    check_metadata({"year": 2024, "tags": ["a", "b"], "ok": None, "x": {"y": 1.5, "z": True}}, ParseLimits())
    with pytest.raises(ParseError, match="non-string key 1"):
        check_metadata({1: "one"}, ParseLimits())
    with pytest.raises(ParseError, match="unpaired surrogate"):
        check_metadata({"title": "bad \ud800 text"}, ParseLimits())
    with pytest.raises(ParseError, match="unpaired surrogate"):
        check_metadata({"bad \udfff key": 1}, ParseLimits())
    with pytest.raises(ParseError, match="set"):
        check_metadata({"tags": {"a", "b"}}, ParseLimits())
    with pytest.raises(ParseError, match="JSON object"):
        check_metadata(["not", "a", "dict"], ParseLimits())  # type: ignore[arg-type]


def test_metadata_larger_than_its_byte_limit_is_refused():
    with pytest.raises(ParseError) as excinfo:
        check_metadata({"blob": "é" * 40_000}, ParseLimits())  # 80 kB as UTF-8
    assert refused(excinfo, "max_metadata_bytes").observed > 80_000


def test_jsonl_records_with_bad_metadata_or_unpaired_surrogates_are_refused():
    with pytest.raises(ParseError, match="line 2: metadata.*NaN"):
        parse_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "x", "metadata": {"v": NaN}}', "c.jsonl")
    for field in ("_id", "title", "text"):
        record = {"_id": "1", "title": "T", "text": "Body."}
        record[field] = "bad \ud800"
        with pytest.raises(ParseError, match=f'line 1: "{field}" contains an unpaired surrogate'):
            parse_bytes(json.dumps(record).encode(), "c.jsonl")


def test_parse_text_refuses_unpaired_surrogates_in_text_and_title():
    with pytest.raises(ParseError, match="text contains an unpaired surrogate"):
        parse_text("Some text \ud83d here.")
    with pytest.raises(ParseError, match="title contains an unpaired surrogate"):
        parse_text("Some text.", title="\udc00")
    check_text("paired: \U0001f600", "question")  # a real astral character is fine


# -- undecodable bytes and unexpected errors ----------------------------------------------------


@pytest.mark.parametrize("name", ["a.md", "a.txt", "a.html", "a.csv", "a.jsonl"])
def test_undecodable_bytes_are_a_parse_error_with_a_reason(name):
    with pytest.raises(ParseError, match="not UTF-8 text: undecodable byte at offset 0"):
        parse_bytes(bytes(range(0x80, 0x100)) * 8, name)
    # mostly ASCII, but a byte neither UTF-8 nor Windows-1252 can decode
    with pytest.raises(ParseError, match="not UTF-8 text: undecodable byte at offset 6"):
        parse_bytes(b"hello \x81 world, plain text otherwise", name)
    with pytest.raises(ParseError, match="invalid UTF-16"):
        parse_bytes(b"\xff\xfe" + "text".encode("utf-16-le") + b"\x00\xd8", name)


@pytest.mark.parametrize(
    "error", [RecursionError("maximum recursion depth exceeded"), ValueError("a library's complaint"), MemoryError()]
)
def test_any_other_error_inside_a_parser_becomes_a_parse_error(monkeypatch, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("indexing.parsers.markdown._MARKDOWN.parse", broken)
    with pytest.raises(ParseError, match="cannot parse notes.md") as excinfo:
        parse_bytes(GOOD_MD, "notes.md")
    assert excinfo.value.__cause__ is error
    with pytest.raises(ParseError, match="cannot parse markdown text"):
        parse_text("# Notes\n\nText.", fmt="markdown")


# -- spans ------------------------------------------------------------------------------------


def test_a_span_tree_over_max_spans_is_refused_while_it_is_built():
    parsed = parse_text("One. Two. Three. Four. Five. Six. Seven. Eight.")  # 1 + 1 + 8 spans
    counted: list[list[str]] = []

    def count_tokens(texts):
        counted.append(texts)
        return [1] * len(texts)

    assert len(build_span_tree("d", parsed, count_tokens, SentenceSplitter(), max_spans=10)) == 10
    with pytest.raises(ParseError) as excinfo:
        build_span_tree("d", parsed, count_tokens, SentenceSplitter(), max_spans=9)
    assert "document 'd' has more than 9 spans" in str(refused(excinfo, "max_spans"))
    assert len(counted) == 1  # tokens were never counted for the refused tree


# -- ingest ---------------------------------------------------------------------------------------


class CountingEncoder:
    """Wraps the session's encoder, recording every text it was asked to embed."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.encoded: list[str] = []

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, texts):
        self.encoded.extend(texts)
        return self._encoder.encode(texts)

    def encode_with_tokens(self, texts, token_rows):
        self.encoded.extend(texts)
        return self._encoder.encode_with_tokens(texts, token_rows)


@pytest.fixture
def ingestor(make_rag, tmp_path):
    """An Ingestor on a fresh store; ``ingestor(**limits)`` sets its ParseLimits."""
    rag = make_rag(tmp_path / "data")

    def make(batch_docs: int = 32, **limits) -> Ingestor:
        made = Ingestor(
            rag.store, CountingEncoder(rag.encoder), SentenceSplitter(), batch_docs, limits=ParseLimits(**limits)
        )
        made.rag = rag  # type: ignore[attr-defined]
        return made

    return make


def stored_names(ingestor: Ingestor) -> list[str]:
    docs = ingestor.store.document_hashes(C)
    return sorted(Path(d).name for d in docs)


def failure(report, name: str) -> str:
    reasons = [f.reason for f in report.failed if Path(f.source).name == name]
    assert len(reasons) == 1, report.failed
    return reasons[0]


def test_a_batch_stores_the_good_files_and_reports_the_deeply_nested_one(ingestor, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a-bees.md").write_bytes(GOOD_MD)
    (folder / "b-deep.html").write_bytes(nested_html(100_000))
    (folder / "c-tea.txt").write_bytes(GOOD_TXT)
    ing = ingestor()
    report = ing.ingest_paths(C, [folder])
    assert [Path(f.source).name for f in report.failed] == ["b-deep.html"]
    assert "HTML is nested more than 256 levels deep" in failure(report, "b-deep.html")
    assert report.added == 2
    assert stored_names(ing) == ["a-bees.md", "c-tea.txt"]


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth exceeded"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        MemoryError(),
        KeyError("surprise"),
    ],
)
def test_any_error_parsing_one_file_of_a_batch_is_reported_and_the_batch_goes_on(
    ingestor, tmp_path, monkeypatch, error
):
    import indexing.ingest

    real_parse_path = indexing.ingest.parse_path

    def parse_path(path, limits=None):
        if path.name == "b-broken.md":
            raise error
        return real_parse_path(path, limits)

    monkeypatch.setattr(indexing.ingest, "parse_path", parse_path)
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a-bees.md", "b-broken.md", "c-more.md"):
        (folder / name).write_bytes(GOOD_MD.replace(b"Bees", name.encode()))
    ing = ingestor()
    report = ing.ingest_paths(C, [folder])
    assert [Path(f.source).name for f in report.failed] == ["b-broken.md"]
    assert failure(report, "b-broken.md").strip()
    assert stored_names(ing) == ["a-bees.md", "c-more.md"]


def test_a_file_is_all_or_nothing_when_one_of_its_documents_is_over_a_limit(ingestor, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    records = [{"_id": f"r{i}", "title": f"Record {i}", "text": "Short body."} for i in range(4)]
    records[3]["text"] = " ".join(f"Sentence number {i}." for i in range(40))
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (folder / "tea.txt").write_bytes(GOOD_TXT)
    ing = ingestor(batch_docs=1, max_spans=20)  # the good records would be written one by one
    report = ing.ingest_paths(C, [folder])
    reason = failure(report, "corpus.jsonl")
    assert "document 'r3' has more than 20 spans" in reason and "SPANRAG_MAX_DOCUMENT_SPANS" in reason
    assert stored_names(ing) == ["tea.txt"]  # none of the corpus's records
    assert not any("Record" in text for text in ing.encoder.encoded)  # nothing of it embedded
    assert ing.store.get_source(C, str((folder / "corpus.jsonl").resolve())) is None


def test_an_error_building_one_files_spans_fails_that_file_only(ingestor, tmp_path, monkeypatch):
    import indexing.ingest

    real_build = indexing.ingest.build_span_tree

    def build(doc_id, parsed, *args, **kwargs):
        if doc_id == "r2":
            raise RecursionError("maximum recursion depth exceeded")
        return real_build(doc_id, parsed, *args, **kwargs)

    monkeypatch.setattr(indexing.ingest, "build_span_tree", build)
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"r{i}", "text": f"Body {i}."}) for i in range(4))
    )
    (folder / "tea.txt").write_bytes(GOOD_TXT)
    ing = ingestor(batch_docs=1)
    report = ing.ingest_paths(C, [folder])
    assert "cannot build the spans of document 'r2'" in failure(report, "corpus.jsonl")
    assert stored_names(ing) == ["tea.txt"]


def test_a_file_over_max_bytes_is_reported_without_being_read(ingestor, tmp_path, monkeypatch):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "big.txt").write_bytes(GOOD_TXT * 10)
    (folder / "small.txt").write_bytes(GOOD_TXT)
    real_read = Path.read_bytes
    monkeypatch.setattr(
        Path, "read_bytes", lambda self: pytest.fail("read") if self.name == "big.txt" else real_read(self)
    )
    ing = ingestor(max_bytes=200)
    report = ing.ingest_paths(C, [folder])
    assert "SPANRAG_MAX_DOCUMENT_BYTES" in failure(report, "big.txt")
    assert stored_names(ing) == ["small.txt"]


def test_an_upload_over_a_limit_raises_and_writes_nothing(ingestor):
    ing = ingestor(max_table_columns=3)
    with pytest.raises(DocumentTooLarge, match="SPANRAG_MAX_TABLE_COLUMNS"):
        ing.ingest_upload(C, b"a,b,c,d\n1,2,3,4\n", "wide.csv")
    assert ing.store.document_hashes(C) == {}
    ing = ingestor(max_spans=3)
    with pytest.raises(DocumentTooLarge, match="SPANRAG_MAX_DOCUMENT_SPANS"):
        ing.ingest_upload(C, b"One. Two. Three. Four.", "notes.txt")
    assert ing.store.document_hashes(C) == {} and ing.encoder.encoded == []


def test_ingest_parsed_checks_ids_titles_and_metadata(ingestor):
    ing = ingestor()
    doc = ParsedDocument(
        text="Body.", title="T", blocks=parse_text("Body.").blocks, doc_id="d", metadata={"score": math.nan}
    )
    with pytest.raises(ParseError, match="NaN"):
        ing.ingest_parsed(C, "api:d", [doc])
    doc.metadata, doc.title = {}, "bad \ud800"
    with pytest.raises(ParseError, match="unpaired surrogate"):
        ing.ingest_parsed(C, "api:d", [doc])
    doc.title = "T"
    assert ing.ingest_parsed(C, "api:d", [doc]).added == 1


def test_checking_every_tree_first_splits_each_paragraph_once_and_stores_the_same_spans(ingestor, tmp_path):
    records = [
        {
            "_id": f"r{i}",
            "title": f"Record {i}",
            "text": f"First sentence {i}. Second one here.\n\nAnother paragraph {i}. Done.",
        }
        for i in range(5)
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    calls: list[str] = []

    class CountingSplitter(SentenceSplitter):
        def split(self, text):
            calls.append(text)
            return super().split(text)

    ing = ingestor(batch_docs=2)  # three batches: trees of the last two are rebuilt
    ing.splitter = CountingSplitter()
    report = ing.ingest_paths(C, [path])
    assert report.failed == [] and report.added == 5
    assert len(calls) == len(set(calls)) == 10  # two paragraphs a record, each split once
    for parsed in parse_path(path):
        expected = build_span_tree(parsed.doc_id, parsed, ing.encoder.count_tokens, SentenceSplitter())
        stored = ing.store.document_spans(C, parsed.doc_id)
        assert [(s.id, s.granularity, s.start, s.end, s.n_tokens) for s in stored] == [
            (s.id, s.granularity, s.start, s.end, s.n_tokens) for s in expected
        ]
