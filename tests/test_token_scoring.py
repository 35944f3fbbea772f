"""Late interaction: MaxSim and XTR on hand-made vectors, and the token codecs' error bounds."""

import faiss
import numpy as np
import pytest

from indexing.store.token_matrix import TokenHits, TokenMatrix
from indexing.token_codecs import CODECS, bytes_per_token, decode_tokens, encode_tokens, similarities
from retrieval.scoring.maxsim import maxsim, maxsim_torch
from retrieval.scoring.xtr import xtr_scores


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_maxsim_sums_each_query_tokens_best_match_in_each_candidate():
    query = unit([[1, 0, 0], [0, 1, 0]])
    tokens = unit(
        [
            [1, 0, 0],
            [0, 0, 1],  # candidate A: matches query token 1 only
            [0, 1, 0],
            [1, 1, 0],  # candidate B: 0.707 and 1.0
            [0, 0, 1],
        ]
    )  # candidate C: matches nothing
    scores = maxsim(query, tokens, np.array([0, 2, 4, 5]))
    assert scores == pytest.approx([1.0 + 0.0, 2**-0.5 + 1.0, 0.0], abs=1e-6)
    assert np.argmax(scores) == 1


def test_a_candidate_without_tokens_scores_zero_and_does_not_borrow_its_neighbours():
    query = unit([[1, 0]])
    tokens = unit([[1, 0], [0, 1]])
    scores = maxsim(query, tokens, np.array([0, 1, 1, 2]))  # the middle candidate is empty
    assert scores.tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_maxsim_matches_a_plain_loop_on_random_vectors():
    rng = np.random.default_rng(0)
    query = unit(rng.normal(size=(7, 16)))
    lengths = [5, 1, 12, 3]
    tokens = unit(rng.normal(size=(sum(lengths), 16)))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    expected = [(query @ tokens[a:b].T).max(axis=1).sum() for a, b in zip(offsets[:-1], offsets[1:])]
    assert maxsim(query, tokens, offsets) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("codec, max_error", [("fp16", 1e-3), ("int8", 1 / 127)])
def test_fp16_and_int8_round_trip_within_their_quantization_step(codec, max_error):
    vectors = unit(np.random.default_rng(1).normal(size=(50, 384)))
    decoded = decode_tokens(encode_tokens(vectors, codec))
    assert np.abs(decoded - vectors).max() <= max_error


def test_binary_codes_keep_signs_and_score_close_to_full_precision():
    rng = np.random.default_rng(2)
    vectors = unit(rng.normal(size=(200, 384)))
    encoded = encode_tokens(vectors, "binary")
    decoded = decode_tokens(encoded)
    assert np.array_equal(decoded > 0, vectors > 0)
    assert np.linalg.norm(decoded, axis=1) == pytest.approx(1.0)
    # each token is most similar to its own code among all codes
    assert (np.argmax(vectors @ decoded.T, axis=1) == np.arange(200)).all()


def test_binary_codes_take_at_least_eight_times_fewer_bytes_than_fp16():
    for dim in (128, 384):
        assert bytes_per_token(dim, "fp16") >= 8 * bytes_per_token(dim, "binary")
    encoded = encode_tokens(unit(np.ones((10, 384))), "binary")
    assert encoded.nbytes == 10 * bytes_per_token(384, "binary")


def test_an_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="unknown token codec"):
        encode_tokens(np.ones((1, 8), np.float32), "int4")
    assert set(CODECS) == {"fp16", "int8", "binary"}


# -- token vectors from the real model ------------------------------------------------------


def test_token_vectors_cover_every_word_piece_even_past_the_model_window(encoder):
    long_text = " ".join(f"term{i}" for i in range(200))  # several pieces per word
    texts = ["Mercury orbits the Sun in 88 days.", long_text, ""]
    vectors = encoder.encode_tokens(texts)
    assert [len(v) for v in vectors] == encoder.count_tokens(texts)
    assert len(vectors[1]) > encoder.max_tokens  # windowed, not truncated
    assert np.linalg.norm(vectors[1], axis=1) == pytest.approx(1.0, abs=1e-5)


def test_token_vectors_are_the_models_own_token_embeddings_without_special_tokens(encoder):
    text = "Tables keep their header rows."
    reference = encoder._model.encode([text], output_value="token_embeddings")[0].numpy()[1:-1]
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.abs(encoder.encode_tokens([text])[0] - reference).max() < 1e-4


def test_maxsim_with_real_token_vectors_prefers_the_relevant_passage(encoder):
    query = encoder.encode_tokens(["How long is a year on Mercury?"])[0]
    passages = ["Mercury orbits the Sun in 88 days.", "Green tea is brewed at 70 degrees."]
    tokens = encoder.encode_tokens(passages)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])])
    scores = maxsim(query, np.concatenate(tokens), offsets)
    assert scores[0] > scores[1]


@pytest.mark.parametrize("words", [8, 400])  # within the window, and past it
def test_one_pass_gives_the_query_vector_and_its_token_vectors(encoder, words):
    text = " ".join(f"orbit{i}" for i in range(words))
    vector, tokens = encoder.encode_query_with_tokens(text)
    assert np.abs(vector - encoder.encode_query(text)).max() < 1e-5
    assert np.abs(tokens - encoder.encode_tokens([text])[0]).max() < 1e-4


# -- token retrieval (XTR) --------------------------------------------------------------------


def test_xtr_scores_a_document_from_its_retrieved_tokens_and_imputes_the_rest():
    hits = TokenHits(
        ["a", "b"],
        doc_index=np.array([0, 0, 1]),
        query_index=np.array([0, 0, 1]),
        similarity=np.array([0.6, 0.9, 0.8]),
        floor=np.array([0.5, 0.3]),
    )
    # a: best of its two hits for q0 (0.9), q1 imputed (0.3); b: q0 imputed (0.5), q1 0.8
    np.testing.assert_allclose(xtr_scores(hits), [(0.9 + 0.3) / 2, (0.5 + 0.8) / 2])


def planted_matrix(codec="fp16"):
    rng = np.random.default_rng(3)
    docs = {f"d{i}": rng.normal(size=(5, 64)).astype(np.float32) for i in range(20)}
    docs = {d: v / np.linalg.norm(v, axis=1, keepdims=True) for d, v in docs.items()}
    rows = [(f"{d}#1", d, encode_tokens(v, codec)) for d, v in docs.items()]
    return docs, TokenMatrix.build(rows, stamp=(1, 1))


def test_token_search_returns_each_query_tokens_exact_nearest_stored_tokens():
    docs, matrix = planted_matrix()
    query = np.stack([docs["d7"][2], docs["d12"][0]])
    hits = matrix.search(query, k=3, oversample=100)  # oversampling past n: Hamming order cannot hide any
    everything = np.concatenate(list(docs.values()))
    for q in range(2):
        expected = np.sort(everything @ query[q])[::-1][:3]
        got = np.sort(hits.similarity[hits.query_index == q])[::-1]
        np.testing.assert_allclose(got, expected, atol=1e-3)  # fp16 codes
        assert hits.floor[q] == pytest.approx(expected[-1], abs=1e-3)
    best = {hits.doc_ids[hits.doc_index[j]] for j in range(len(hits.similarity)) if hits.similarity[j] > 0.99}
    assert best == {"d7", "d12"}


def test_packing_documents_gives_their_tokens_in_the_order_asked():
    docs, matrix = planted_matrix("int8")
    packed = matrix.pack(["d3", "nope", "d1"])
    assert packed.doc_ids == ["d3", "d1"] and packed.offsets.tolist() == [0, 5, 10]
    np.testing.assert_allclose(decode_tokens(packed.vectors)[5:], docs["d1"], atol=0.01)
    assert packed.first_span_ids == ["d3#1", "d1#1"]


def test_a_token_matrix_with_mixed_codecs_is_refused():
    vectors = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="codecs"):
        TokenMatrix.build(
            [("a#1", "a", encode_tokens(vectors, "fp16")), ("b#1", "b", encode_tokens(vectors, "binary"))], stamp=(1, 1)
        )


@pytest.mark.parametrize("codec", CODECS)
def test_similarities_on_stored_codes_equal_decoding_first(codec):
    rng = np.random.default_rng(5)
    tokens, query = unit(rng.normal(size=(50, 384))), unit(rng.normal(size=(7, 384)))
    encoded = encode_tokens(tokens, codec)
    np.testing.assert_allclose(similarities(query, encoded), query @ decode_tokens(encoded).T, atol=1e-5)


def test_large_token_sets_use_an_inverted_file_that_still_finds_exact_matches(tmp_path):
    docs, matrix = planted_matrix("binary")
    matrix.IVF_FROM_TOKENS, matrix.IVF_LISTS, matrix.IVF_PROBES = 50, 4, 1  # 100 tokens: IVF
    matrix.save(tmp_path / "tokens")
    loaded = TokenMatrix.load(tmp_path / "tokens", stamp=(1, 1))
    loaded.IVF_FROM_TOKENS, loaded.IVF_LISTS, loaded.IVF_PROBES = 50, 4, 1
    query = np.stack([docs["d4"][1], docs["d15"][3]])
    hits = loaded.search(query, k=2)
    assert isinstance(loaded.binary_index(), faiss.IndexBinaryIVF)
    assert list((tmp_path / "tokens").glob("signs.1.1.faissbin"))  # cached for the next process
    top = {
        q: hits.doc_ids[hits.doc_index[np.argmax(np.where(hits.query_index == q, hits.similarity, -9))]]
        for q in range(2)
    }
    assert top == {0: "d4", 1: "d15"}
    assert TokenMatrix.load(tmp_path / "tokens", stamp=(1, 2)) is None  # another stamp: rebuild


def test_the_torch_maxsim_path_gives_the_numpy_scores_including_empty_candidates():
    """The GPU path (run here on torch's CPU device) scores like the numpy path, for float
    vectors and for stored binary codes, and an empty candidate scores 0."""
    rng = np.random.default_rng(7)
    query = rng.standard_normal((6, 32)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    tokens = rng.standard_normal((40, 32)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    offsets = np.array([0, 5, 5, 17, 40])  # the second candidate has no tokens
    expected = maxsim(query, tokens, offsets)
    assert expected[1] == 0
    np.testing.assert_allclose(maxsim_torch(query, tokens, offsets, "cpu"), expected, rtol=1e-5, atol=1e-5)
    codes = encode_tokens(tokens, "binary")
    np.testing.assert_allclose(maxsim_torch(query, codes, offsets, "cpu"), maxsim(query, codes, offsets), atol=1e-4)
