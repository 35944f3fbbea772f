"""Late pooling (``SPANRAG_LATE_POOLING``): a document runs through the encoder once, in
overlapping windows when it is long, and each span's vector is the mean of the hidden
states of the word pieces inside it; token vectors come from the same states. Rows, which
are embedded with their table's header, keep a pass of their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.embed import Encoder
from service.settings import Settings

C = "docs"
SCIFACT = Path(__file__).resolve().parent / "fixtures" / "scifact_5.jsonl"


def long_text(n_pieces: int, encoder: Encoder) -> str:
    """Real abstracts, joined and cut at a space after about ``n_pieces`` word pieces."""
    with SCIFACT.open() as lines:
        text = " ".join(json.loads(line)["text"] for line in lines)
    offsets = encoder._model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) > n_pieces + 20, "the fixture corpus is too short"
    return text[: text.index(" ", offsets[n_pieces][1])]


def own_pass_states(encoder: Encoder, ids: list[int]) -> np.ndarray:
    """Unnormalized last hidden states of ``ids`` (word pieces) run as one window."""
    import torch

    tokenizer = encoder._model.tokenizer
    with torch.inference_mode():
        [(_, hidden, _)] = list(encoder._hidden_states([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]]))
    return hidden[0, 1:-1].numpy()


def test_a_text_that_fits_one_window_gives_the_token_vectors_of_its_own_pass(encoder):
    text = "Green tea is best brewed at 70 degrees. Boiling water makes it bitter."

    [pooled] = encoder.encode_late([text], [[(0, len(text))]], [[0]])

    np.testing.assert_allclose(pooled.tokens[0], encoder.encode_tokens([text])[0], atol=1e-5)


def test_a_range_is_the_normalized_mean_of_the_states_of_its_pieces(encoder):
    text = "Green tea is best brewed at 70 degrees. Boiling water makes it bitter."
    second = text.index("Boiling")
    ids = encoder._model.tokenizer(text, add_special_tokens=False)["input_ids"]
    states = own_pass_states(encoder, ids)
    n_first = len(encoder._model.tokenizer(text[:second].strip(), add_special_tokens=False)["input_ids"])

    [pooled] = encoder.encode_late([text], [[(0, len(text)), (second, len(text))]])

    for row, part in ((0, states), (1, states[n_first:])):
        mean = part.mean(axis=0)
        np.testing.assert_allclose(pooled.vectors[row], mean / np.linalg.norm(mean), atol=1e-5)
    assert pooled.missing == []


def test_a_long_text_keeps_each_piece_from_the_window_where_it_sits_farther_from_the_edge(encoder):
    window, overlap = encoder.max_tokens - 2, Encoder.LATE_OVERLAP
    stride = window - overlap
    text = long_text(stride + window + 60, encoder)  # three windows
    ids = encoder._model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert stride + window < len(ids) <= 2 * stride + window

    [pooled] = encoder.encode_late([text], [[(0, len(text))]], [[0]])

    tokens = pooled.tokens[0]
    assert tokens.shape == (len(ids), encoder.dim)
    first_end, second_end = stride + overlap // 2, 2 * stride + overlap // 2
    kept = [
        (0, first_end, own_pass_states(encoder, ids[:window])[:first_end]),
        (first_end, second_end, own_pass_states(encoder, ids[stride : stride + window])[overlap // 2 :][:stride]),
        (second_end, len(ids), own_pass_states(encoder, ids[2 * stride :])[overlap // 2 :]),
    ]
    for start, end, states in kept:
        expected = states / np.linalg.norm(states, axis=1, keepdims=True)
        np.testing.assert_allclose(tokens[start:end], expected, atol=1e-5)


def test_a_range_without_a_whole_word_piece_is_left_to_its_own_pass(encoder):
    text = "Tea  and coffee."
    [pooled] = encoder.encode_late([text], [[(3, 5), (0, len(text))]])

    assert pooled.missing == [0]
    assert not pooled.vectors[0].any()
    assert np.linalg.norm(pooled.vectors[1]) == pytest.approx(1.0, abs=1e-5)


def test_token_vectors_are_given_only_where_the_range_tokenizes_like_its_own_text(encoder):
    text = "Unbelievable results. Tea is grown in Assam."
    mid_word = (2, text.index("."))  # "believable results": other pieces on its own
    sentence = (text.index("Tea"), len(text))

    [pooled] = encoder.encode_late([text], [[mid_word, sentence]], [[0, 1]])

    assert set(pooled.tokens) == {1}
    assert len(pooled.tokens[1]) == encoder.count_tokens([text[sentence[0] :]])[0]


def test_an_encoder_off_the_pretokenized_path_refuses_late_pooling(encoder):
    plain = Encoder(encoder._model, encoder.name, pretokenized=False)

    assert not plain.supports_late_pooling
    with pytest.raises(ValueError, match="late pooling"):
        plain.encode_late(["a"], [[(0, 1)]])


class CountingEncoder(Encoder):
    """The session's model; counts the word pieces that reach its forward pass and the
    texts that get a pass of their own."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder._model, encoder.name, encoder.batch_size)
        self.pieces = 0
        self.own_pass: list[str] = []

    def _hidden_states(self, ids):
        self.pieces += sum(len(i) - 2 for i in ids)
        return super()._hidden_states(ids)

    def encode_with_tokens(self, texts, token_rows):
        self.own_pass.extend(texts)
        return super().encode_with_tokens(texts, token_rows)


def ingest_counting(make_rag, data_dir: Path, samples_dir: Path, encoder: Encoder, late: bool):
    rag = make_rag(data_dir, late_pooling=late, token_codec="fp16")
    counting = CountingEncoder(encoder)
    rag.__dict__["encoder"] = counting  # before the ingestor (a cached property) is built
    report = rag.ingest_paths(C, [samples_dir])
    assert not report.failed
    return rag, counting, report


def test_late_pooled_ingest_runs_each_document_once_and_only_rows_on_their_own(
    make_rag, tmp_path, samples_dir, encoder
):
    late, late_encoder, late_report = ingest_counting(make_rag, tmp_path / "late", samples_dir, encoder, True)
    _, separate_encoder, report = ingest_counting(make_rag, tmp_path / "separate", samples_dir, encoder, False)

    spans = [s for d in late_report.doc_ids for s in late.store.document_spans(C, d)]
    assert late_report.spans == report.spans == len(spans)
    assert set(late_encoder.own_pass) == {s.context_text for s in spans if s.header}
    assert late_encoder.pieces < 0.6 * separate_encoder.pieces

    vectors = np.asarray(late.store.get_vectors(C, [s.id for s in spans]))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    rows = [i for i, s in enumerate(spans) if s.header]
    assert rows, "the samples hold a table"
    np.testing.assert_allclose(vectors[rows], encoder.encode([spans[i].context_text for i in rows]), atol=1e-6)


def test_late_pooled_token_vectors_line_up_with_the_offsets_sentences_are_scored_by(
    make_rag, tmp_path, samples_dir, encoder
):
    rag, _, report = ingest_counting(make_rag, tmp_path / "late", samples_dir, encoder, True)
    paragraphs = [
        s for d in report.doc_ids for s in rag.store.document_spans(C, d) if s.granularity in ("paragraph", "row")
    ]
    stored = rag.store.get_token_vectors(C, [s.id for s in paragraphs])

    assert report.token_spans == len(paragraphs) == len(stored)
    for span, offsets in zip(paragraphs, encoder.token_offsets([s.context_text for s in paragraphs]), strict=True):
        assert len(stored[span.id]) == len(offsets), span.id


def test_a_late_pooled_collection_answers_from_the_right_document(make_rag, tmp_path, samples_dir, encoder):
    rag, _, _ = ingest_counting(make_rag, tmp_path / "late", samples_dir, encoder, True)

    result = rag.retrieve(C, "How long should black tea steep?")

    assert result.context.spans[0].span.doc_id.endswith("tea-notes.txt")
    assert "three to five minutes" in " ".join(item.span.text for item in result.context.spans)


def test_each_vector_recipe_has_its_own_eval_collection():
    recipes = {
        Settings().vector_recipe(),
        Settings(late_pooling=True).vector_recipe(),
        Settings(encoder_backend="onnx-int8").vector_recipe(),
    }

    assert Settings().vector_recipe() == "all-MiniLM-L6-v2"  # the default's cached collections stay valid
    assert len(recipes) == 3
