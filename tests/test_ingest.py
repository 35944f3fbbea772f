"""Ingestion through RagService with the real embedding model: counts, incremental
re-ingest, deletes, JSONL corpora, bad files, and interrupted writes."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fpdf import FPDF

from indexing.spans import GRANULARITIES
from indexing.spans import doc_id_of as doc_of_span_id
from indexing.store.sqlite_faiss import SqliteFaissStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
C = "docs"
SAMPLE_FILES = ["coffee-prices.csv", "solar-system.html", "spanrag-guide.md", "tea-notes.txt"]


def doc_id_of(doc_ids: list[str], filename: str) -> str:
    matches = [d for d in doc_ids if d == filename or d.endswith("/" + filename)]
    assert len(matches) == 1, f"expected one document for {filename!r} in {doc_ids}"
    return matches[0]


def generation(rag) -> int:
    return rag.store.collection_stats(C)["generation"]


def span_texts(store, doc_id: str) -> list[str]:
    return [s.text for s in store.document_spans(C, doc_id)]


def all_dense_hits(store, encoder, question: str) -> list[str]:
    """Every span id in the dense index, best first."""
    return [h.span_id for h in store.dense_search(C, encoder.encode_query(question), k=10_000)]


def lexical_hits(store, question: str) -> list[str]:
    return [h.span_id for g in GRANULARITIES for h in store.lexical_search(C, question, 100, g)]


def of_doc(span_ids: list[str], doc_id: str) -> list[str]:
    return [s for s in span_ids if doc_of_span_id(s) == doc_id]


@pytest.fixture
def ingested(rag, samples_dir):
    report = rag.ingest_paths(C, [samples_dir])
    assert report.failed == []
    return report


# -- first ingest and incremental re-ingest --------------------------------------------------


def test_ingesting_the_samples_adds_every_file_with_spans(rag, ingested):
    assert (ingested.added, ingested.updated, ingested.unchanged, ingested.removed) == (4, 0, 0, 0)
    assert ingested.spans > 0
    assert sorted(Path(d).name for d in ingested.doc_ids) == SAMPLE_FILES
    stats = rag.store.collection_stats(C)
    assert stats["documents"] == 4 and stats["spans"] == ingested.spans
    assert stats["model"] == "all-MiniLM-L6-v2" and stats["dim"] == 384
    for doc_id in ingested.doc_ids:
        doc = rag.store.get_document(C, doc_id)
        spans = rag.store.document_spans(C, doc_id)
        assert spans and spans[0].granularity == "document"
        assert all(doc.text[s.start : s.end] == s.text for s in spans)


def test_reingesting_unchanged_files_does_no_work(rag, samples_dir, ingested):
    before = generation(rag)
    report = rag.ingest_paths(C, [samples_dir])
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 4, 0)
    assert report.spans == 0 and report.failed == []
    assert generation(rag) == before  # no write transaction happened


def test_unchanged_files_are_not_parsed_or_embedded_again(rag, samples_dir, ingested, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("unchanged files must not be re-embedded")

    for method in ("encode", "encode_with_tokens", "encode_tokens"):
        monkeypatch.setattr(rag.encoder, method, fail)
    monkeypatch.setattr("indexing.ingest.parse_path", fail)
    report = rag.ingest_paths(C, [samples_dir])
    assert report.unchanged == 4


def test_a_changed_file_replaces_its_old_spans(rag, samples_dir, ingested):
    tea = doc_id_of(ingested.doc_ids, "tea-notes.txt")
    assert any("Oolong" in t for t in span_texts(rag.store, tea))
    (samples_dir / "tea-notes.txt").write_text(
        "Tea brewing notes\n\nWhite tea is brewed at 80 degrees Celsius for four minutes.\n"
    )
    report = rag.ingest_paths(C, [samples_dir])
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 3, 0)
    texts = span_texts(rag.store, tea)
    assert any("White tea is brewed" in t for t in texts)
    assert not any("Oolong" in t or "Green tea" in t for t in texts)
    assert "Oolong" not in rag.store.get_document(C, tea).text
    assert of_doc(lexical_hits(rag.store, "oolong oxidation"), tea) == []
    # the dense index holds exactly the new spans of the document
    dense = of_doc(all_dense_hits(rag.store, rag.encoder, "white tea"), tea)
    assert sorted(dense) == sorted(s.id for s in rag.store.document_spans(C, tea))


def test_a_file_deleted_from_the_folder_is_removed_on_reingest(rag, samples_dir, ingested):
    coffee = doc_id_of(ingested.doc_ids, "coffee-prices.csv")
    assert of_doc(all_dense_hits(rag.store, rag.encoder, "coffee price"), coffee)
    (samples_dir / "coffee-prices.csv").unlink()
    report = rag.ingest_paths(C, [samples_dir])
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 3, 1)
    assert rag.store.get_document(C, coffee) is None
    assert rag.store.count_spans(C, coffee) == 0
    assert of_doc(all_dense_hits(rag.store, rag.encoder, "Kenya AA coffee price per kg"), coffee) == []
    assert of_doc(lexical_hits(rag.store, "Kenya coffee"), coffee) == []
    assert rag.store.collection_stats(C)["documents"] == 3


def test_delete_document_removes_it_everywhere(rag, ingested):
    tea = doc_id_of(ingested.doc_ids, "tea-notes.txt")
    assert of_doc(lexical_hits(rag.store, "oolong"), tea)
    span_ids = [s.id for s in rag.store.document_spans(C, tea)]

    assert rag.delete_document(C, tea) is True

    assert rag.get_document(C, tea) is None
    assert rag.store.count_spans(C, tea) == 0
    assert rag.store.get_spans(C, span_ids) == []
    with pytest.raises(KeyError):
        rag.store.get_vectors(C, span_ids[:1])
    assert of_doc(all_dense_hits(rag.store, rag.encoder, "green tea brewing"), tea) == []
    assert of_doc(lexical_hits(rag.store, "oolong green tea"), tea) == []
    result = rag.retrieve(C, "How long should black tea steep?")
    assert all(item.span.doc_id != tea for item in result.context.spans)
    assert rag.delete_document(C, tea) is False


def test_a_deleted_file_comes_back_when_its_folder_is_reingested(rag, samples_dir, ingested):
    tea = doc_id_of(ingested.doc_ids, "tea-notes.txt")
    rag.delete_document(C, tea)
    report = rag.ingest_paths(C, [samples_dir])
    assert (report.added, report.unchanged) == (1, 3)
    assert rag.store.get_document(C, tea) is not None


# -- JSONL corpora ---------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "scifact"
    folder.mkdir()
    shutil.copy(FIXTURES / "scifact_5.jsonl", folder / "corpus.jsonl")
    return folder / "corpus.jsonl"


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_records(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_jsonl_corpus_gives_one_document_per_record(rag, corpus):
    records = read_records(corpus)
    report = rag.ingest_paths(C, [corpus])
    assert report.added == len(records) == 5 and report.failed == []
    assert sorted(report.doc_ids) == sorted(r["_id"] for r in records)
    doc = rag.store.get_document(C, records[0]["_id"])
    assert doc.title == records[0]["title"]
    assert records[0]["text"][:100] in doc.text


def test_changing_one_jsonl_record_updates_only_that_document(rag, corpus):
    rag.ingest_paths(C, [corpus])
    records = read_records(corpus)
    changed = records[2]["_id"]
    others_spans = {r["_id"]: [s.id for s in rag.store.document_spans(C, r["_id"])] for r in records}
    records[2]["text"] = "Aspirin lowers the risk of a second heart attack in adults."
    write_records(corpus, records)
    before = generation(rag)

    report = rag.ingest_paths(C, [corpus])

    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 4, 0)
    assert generation(rag) == before + 1  # one write, for the one changed record
    assert any("Aspirin lowers the risk" in t for t in span_texts(rag.store, changed))
    for r in records:
        if r["_id"] != changed:
            assert [s.id for s in rag.store.document_spans(C, r["_id"])] == others_spans[r["_id"]]


def test_a_record_removed_from_a_jsonl_file_is_removed(rag, corpus):
    rag.ingest_paths(C, [corpus])
    records = read_records(corpus)
    gone = records.pop(0)["_id"]
    write_records(corpus, records)
    report = rag.ingest_paths(C, [corpus])
    assert (report.removed, report.unchanged, report.added) == (1, 4, 0)
    assert rag.store.get_document(C, gone) is None
    assert rag.store.count_spans(C, gone) == 0


def test_a_deleted_jsonl_record_comes_back_on_reingest_of_the_same_file(rag, corpus):
    rag.ingest_paths(C, [corpus])
    first = read_records(corpus)[0]["_id"]
    assert rag.delete_document(C, first)
    report = rag.ingest_paths(C, [corpus])
    assert (report.added, report.unchanged) == (1, 4)
    assert rag.store.get_document(C, first) is not None


# -- bad files -------------------------------------------------------------------------------


def pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


# name -> (content, pattern the reason must match)
BAD_FILES = {
    "junk.txt": (random.Random(0).randbytes(4096), r"binary"),
    "empty.md": (b"", r"empty"),
    "blank.md": (b"  \n\n \t\n", r"empty"),
    "truncated.pdf": (pdf_bytes("Saturn has rings made of ice. " * 20)[:300], r"(?i)malformed PDF"),
    "fake.pdf": (b"this is not a pdf at all", r"(?i)malformed PDF"),
    "bytes.txt": (bytes(range(256)) * 4, r"binary"),
    "undecodable.txt": (bytes(range(128, 256)) * 4, r"not UTF-8"),
}
UNSUPPORTED = "notes.docx"


@pytest.fixture(scope="module")
def bad_batch(make_rag, tmp_path_factory):
    """One ingest of a folder mixing good and bad files, plus explicit bad paths."""
    root = tmp_path_factory.mktemp("bad-batch")
    folder = root / "batch"
    folder.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "samples" / "tea-notes.txt", folder)
    (folder / "saturn.pdf").write_bytes(pdf_bytes("Saturn has rings made of ice and rock."))
    (folder / "latin1.txt").write_bytes("Café crème brûlée is a French dessert.".encode("cp1252"))
    for name, (data, _) in BAD_FILES.items():
        (folder / name).write_bytes(data)
    (root / UNSUPPORTED).write_bytes(b"PK\x03\x04 not really a docx")
    rag = make_rag(root / "data")
    report = rag.ingest_paths(C, [folder, root / UNSUPPORTED, root / "missing.md"])
    return rag, report


def failure_reason(report, name: str) -> str:
    reasons = [f.reason for f in report.failed if Path(f.source).name == name]
    assert len(reasons) == 1, f"{name} not reported once in {report.failed}"
    return reasons[0]


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_reported_by_name_with_a_reason(bad_batch, name):
    _, report = bad_batch
    assert_reason = BAD_FILES[name][1]
    reason = failure_reason(report, name)
    assert reason.strip()
    assert re.search(assert_reason, reason), reason


def test_an_unsupported_file_given_explicitly_is_reported(bad_batch):
    _, report = bad_batch
    assert "unsupported" in failure_reason(report, UNSUPPORTED)


def test_a_missing_path_is_reported(bad_batch):
    _, report = bad_batch
    assert "no such file" in failure_reason(report, "missing.md")


def test_bad_files_do_not_stop_the_good_files_of_the_batch(bad_batch):
    rag, report = bad_batch
    assert sorted(Path(f.source).name for f in report.failed) == sorted([*BAD_FILES, UNSUPPORTED, "missing.md"])
    assert report.added == 3  # tea-notes.txt, saturn.pdf, latin1.txt
    names = sorted(Path(d).name for d in report.doc_ids)
    assert names == ["latin1.txt", "saturn.pdf", "tea-notes.txt"]
    saturn = doc_id_of(report.doc_ids, "saturn.pdf")
    assert "Saturn has rings" in rag.store.get_document(C, saturn).text
    assert "Café crème" in rag.store.get_document(C, doc_id_of(report.doc_ids, "latin1.txt")).text
    assert rag.store.collection_stats(C)["documents"] == 3


def test_a_jsonl_file_with_duplicate_ids_is_reported_and_the_batch_goes_on(rag, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        '{"_id": "1", "title": "One", "text": "First record."}\n'
        '{"_id": "1", "title": "Again", "text": "Same id again."}\n'
    )
    (folder / "b.md").write_text("# Bees\n\nBees make honey.\n")
    report = rag.ingest_paths(C, [folder])
    assert "duplicate" in failure_reason(report, "a.jsonl")
    assert report.added == 1


# -- interrupted writes ----------------------------------------------------------------------


class PowerCut(Exception):
    pass


def crash_in_encoder(rag, monkeypatch):
    """The encoder hands back one vector too few: replace_documents fails inside its
    transaction, after the old spans were already deleted."""
    real = rag.encoder.encode_with_tokens

    def one_short(texts, token_rows):
        vectors, tokens = real(texts, token_rows)
        return vectors[:-1], tokens

    monkeypatch.setattr(rag.encoder, "encode_with_tokens", one_short)
    return ValueError


def crash_before_commit(rag, monkeypatch):
    """Everything is deleted and re-inserted, then the process 'dies' just before COMMIT."""

    def die(collection):
        raise PowerCut("power cut")

    monkeypatch.setattr(rag.store, "_bump", die)
    return PowerCut


@pytest.mark.parametrize("crash", [crash_in_encoder, crash_before_commit], ids=["mid-write", "before-commit"])
def test_an_interrupted_write_leaves_the_previous_version_readable(rag, samples_dir, ingested, monkeypatch, crash):
    if rag.settings.store == "qdrant":
        pytest.skip(
            "Qdrant has no multi-point transactions: its store validates before writing and"
            " writes the document record last instead (see indexing/store/qdrant.py)"
        )
    tea = doc_id_of(ingested.doc_ids, "tea-notes.txt")
    old_doc = rag.store.get_document(C, tea)
    old_spans = [(s.id, s.text) for s in rag.store.document_spans(C, tea)]
    old_vectors = rag.store.get_vectors(C, [sid for sid, _ in old_spans])
    before = generation(rag)
    (samples_dir / "tea-notes.txt").write_text("Rooibos\n\nRooibos is a herbal infusion, not a tea.\n")

    with monkeypatch.context() as patch:
        error = crash(rag, patch)
        with pytest.raises(error):
            rag.ingest_paths(C, [samples_dir])

    def assert_old_version(store):
        assert store.collection_stats(C)["generation"] == before
        assert store.get_document(C, tea).text == old_doc.text
        assert [(s.id, s.text) for s in store.document_spans(C, tea)] == old_spans
        assert np.allclose(store.get_vectors(C, [sid for sid, _ in old_spans]), old_vectors)
        assert not any("Rooibos" in t for _, t in old_spans)
        # the search indexes answer from the committed version
        best = store.dense_search(C, old_vectors[0], k=1)[0]
        assert best.span_id == old_spans[0][0]
        assert of_doc([h.span_id for h in store.lexical_search(C, "oolong", 10, "sentence")], tea)
        assert [h.span_id for h in store.lexical_search(C, "rooibos", 10, "sentence")] == []

    assert_old_version(rag.store)
    result = rag.retrieve(C, "What temperature is best for brewing green tea?")
    assert any(item.span.doc_id == tea and "Green tea" in item.span.text for item in result.context.spans)

    fresh = SqliteFaissStore(rag.settings.data_dir)  # as a restarted process would see it
    try:
        assert_old_version(fresh)
    finally:
        fresh.close()

    # once the fault is gone, the next ingest completes the update
    report = rag.ingest_paths(C, [samples_dir])
    assert (report.updated, report.unchanged) == (1, 3)
    assert any("Rooibos" in t for t in span_texts(rag.store, tea))
    assert generation(rag) == before + 1


def test_uploads_that_share_a_file_name_but_not_an_id_keep_both_documents(rag):
    rag.ingest_upload(C, b"# Notes\n\nThe first upload is about apples.", "notes.md", doc_id="a")
    rag.ingest_upload(C, b"# Notes\n\nThe second upload is about pears.", "notes.md", doc_id="b")
    assert "apples" in rag.store.get_document(C, "a").text
    assert "pears" in rag.store.get_document(C, "b").text


def test_an_upload_without_an_id_is_named_after_its_file(rag):
    report = rag.ingest_upload(C, b"Plain words about tea.", "tea.txt")
    assert report.doc_ids == ["tea.txt"] and rag.store.get_document(C, "tea.txt") is not None
