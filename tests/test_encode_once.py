"""Ingest runs one forward pass per distinct encoder input of a batch: spans that share their
text (a document and its only section, a paragraph and its only sentence, repeated table
rows) share its vector, which is the vector the span would get encoded on its own."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexing.embed import Encoder

C = "docs"


class RecordingEncoder(Encoder):
    """The session's real model; records what ingest asks it to encode (``calls``) and
    every text that reaches the model's forward pass (``forwarded``, dense and token)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder._model, encoder.name, encoder.batch_size)
        self.calls: list[list[str]] = []
        self.forwarded: list[str] = []
        self.token_calls: list[list[str]] = []

    def encode_with_tokens(self, texts, token_rows):
        self.calls.append(list(texts))
        return super().encode_with_tokens(texts, token_rows)

    def _encode_pretokenized(self, texts, token_rows=()):
        self.forwarded.extend(texts)
        return super()._encode_pretokenized(texts, token_rows)

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        self.token_calls.append(list(texts))
        return super().encode_tokens(texts)


def recording_rag(make_rag, data_dir: Path, encoder: Encoder, **settings):
    rag = make_rag(data_dir, **settings)
    recorder = RecordingEncoder(encoder)
    rag.__dict__["encoder"] = recorder  # before the ingestor (a cached property) is built
    return rag, recorder


def all_spans_of(rag, record):
    return [s for d in record.doc_ids for s in rag.store.document_spans(C, d)]


def all_spans(rag):
    return [s for record in rag.store.list_sources(C) for s in all_spans_of(rag, record)]


@pytest.fixture
def shared_texts_dir(samples_dir: Path) -> Path:
    """The samples plus one JSONL file (one ingest batch) whose documents repeat each
    other's paragraphs and whose one-paragraph, one-sentence abstracts make a paragraph's
    text its sentence's, and a CSV with a repeated row (the same header and row text)."""
    boilerplate = "All rights reserved by the publisher."
    records = [
        {"_id": "a", "title": "", "text": f"Tea is grown in Assam.\n\n{boilerplate}"},
        {"_id": "b", "title": "", "text": f"Coffee is grown in Brazil.\n\n{boilerplate}"},
        {"_id": "c", "title": "", "text": "Tea is grown in Assam."},
    ]
    (samples_dir / "abstracts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (samples_dir / "repeated.csv").write_text("city,country\nParis,France\nLyon,France\nParis,France\n")
    return samples_dir


def test_identical_texts_of_a_batch_reach_the_model_once_and_share_its_vector(
    make_rag, tmp_path, shared_texts_dir, encoder
):
    rag, recorder = recording_rag(make_rag, tmp_path / "data", encoder, token_codec=None)
    report = rag.ingest_paths(C, [shared_texts_dir])
    assert not report.failed

    spans = all_spans(rag)
    texts = [s.context_text for s in spans]
    assert report.spans == len(spans) > len(set(texts))  # the corpus does repeat texts
    # one call per ingest batch; each distinct text of a call reaches the model once
    assert Counter(recorder.forwarded) == Counter(t for call in recorder.calls for t in set(call))
    assert set(recorder.forwarded) == set(texts)
    # every file here is one batch, so each distinct text of a file is encoded exactly once
    per_file = sum(len({s.context_text for s in all_spans_of(rag, r)}) for r in rag.store.list_sources(C))
    assert len(recorder.forwarded) == per_file < len(spans)

    by_text: dict[str, np.ndarray] = {}
    for span, vector in zip(spans, rag.store.get_vectors(C, [s.id for s in spans]), strict=True):
        first = by_text.setdefault(span.context_text, vector)
        assert np.array_equal(vector, first), f"{span.id} and another span with its text got different vectors"


def test_stored_vectors_are_those_of_each_span_encoded_on_its_own(make_rag, tmp_path, shared_texts_dir, encoder):
    rag, _ = recording_rag(make_rag, tmp_path / "data", encoder, token_codec=None)
    rag.ingest_paths(C, [shared_texts_dir])
    spans = all_spans(rag)
    stored = np.asarray(rag.store.get_vectors(C, [s.id for s in spans]), dtype=np.float32)
    alone = np.stack([encoder.encode([s.context_text])[0] for s in spans])

    np.testing.assert_allclose(stored, alone, rtol=0, atol=1e-6)


def test_an_unchanged_reingest_encodes_nothing(make_rag, tmp_path, shared_texts_dir, encoder):
    rag, recorder = recording_rag(make_rag, tmp_path / "data", encoder, token_codec="binary")
    first = rag.ingest_paths(C, [shared_texts_dir])
    assert recorder.forwarded and first.token_spans > 0
    for recorded in (recorder.calls, recorder.forwarded, recorder.token_calls):
        recorded.clear()

    report = rag.ingest_paths(C, [shared_texts_dir])

    assert report.spans == report.token_spans == 0 and report.unchanged > 0
    assert recorder.calls == recorder.forwarded == recorder.token_calls == []


def test_token_vectors_come_from_the_dense_pass_once_per_distinct_text(make_rag, tmp_path, shared_texts_dir, encoder):
    rag, recorder = recording_rag(make_rag, tmp_path / "data", encoder, token_codec="fp16")
    report = rag.ingest_paths(C, [shared_texts_dir])

    token_spans = [s for s in all_spans(rag) if s.granularity in ("paragraph", "row")]
    texts = [s.context_text for s in token_spans]
    assert report.token_spans == len(token_spans) > len(set(texts))
    # no second, token-only forward pass: the samples' paragraphs all fit one window
    assert recorder.token_calls == []
    assert Counter(recorder.forwarded) == Counter(t for call in recorder.calls for t in set(call))

    stored = rag.store.get_token_vectors(C, [s.id for s in token_spans])
    for span in token_spans:
        (alone,) = encoder.encode_tokens([span.context_text])
        decoded = stored[span.id].data.astype(np.float32)
        np.testing.assert_allclose(decoded, alone, rtol=0, atol=1e-3)  # fp16 codes


def test_shared_pass_token_vectors_equal_the_separate_pass_for_short_and_windowed_texts(encoder):
    long_text = " ".join(f"Tea number {i} is grown in Assam and shipped to Calcutta." for i in range(60))
    texts = ["Tea is grown in Assam.", long_text, "  Coffee  is grown in Brazil. ", "Tea is grown in Assam."]
    assert encoder.count_tokens([long_text])[0] > encoder.max_tokens  # needs the windowed pass

    vectors, tokens = encoder.encode_with_tokens(texts, [0, 1, 2, 3])

    np.testing.assert_allclose(vectors, encoder.encode(texts), rtol=0, atol=1e-6)
    separate = encoder.encode_tokens(texts)
    assert sorted(tokens) == [0, 1, 2, 3]
    for row, alone in enumerate(separate):
        assert tokens[row].shape == alone.shape
        np.testing.assert_allclose(tokens[row], alone, rtol=0, atol=1e-5)


def test_a_collection_that_gains_token_vectors_later_is_backfilled(make_rag, tmp_path, shared_texts_dir, encoder):
    rag, _ = recording_rag(make_rag, tmp_path / "data", encoder, token_codec=None)
    rag.ingest_paths(C, [shared_texts_dir])
    assert not rag.store.token_vector_stats(C)

    later, recorder = recording_rag(make_rag, tmp_path / "data", encoder, token_codec="fp16")
    report = later.ingest_paths(C, [shared_texts_dir])

    token_spans = [s for s in all_spans(later) if s.granularity in ("paragraph", "row")]
    assert report.unchanged > 0 and report.spans == 0
    assert report.token_spans == len(token_spans) and recorder.token_calls  # the backfill's own pass
    assert set(later.store.get_token_vectors(C, [s.id for s in token_spans])) == {s.id for s in token_spans}
