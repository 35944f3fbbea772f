"""The encoder's pre-tokenized, length-sorted path (its default) gives the vectors that
sentence-transformers' own ``encode`` gives."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.embed import Encoder

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of fractures.",
    "  leading and trailing spaces are stripped as sentence-transformers strips them  ",
    "x",
    "Ünïcode — dashes, “quotes” and numbers: 3.14 %",
    "a long text that is cut at the model's window " * 40,
    "Vitamin D deficiency is associated with an increased risk of fractures.",  # a repeat
]


@pytest.fixture(scope="module")
def pretokenized_encoder(encoder) -> Encoder:
    return Encoder(encoder._model, encoder.name, batch_size=2, pretokenized=True)


@pytest.fixture(scope="module")
def plain_encoder(encoder) -> Encoder:
    return Encoder(encoder._model, encoder.name, batch_size=2, pretokenized=False)


def test_the_pretokenized_path_reproduces_sentence_transformers_vectors(pretokenized_encoder, plain_encoder):
    plain = plain_encoder.encode(TEXTS)
    fast = pretokenized_encoder.encode(TEXTS)

    assert fast.shape == plain.shape == (len(TEXTS), plain_encoder.dim)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_the_pretokenized_path_keeps_input_order_across_length_sorted_batches(pretokenized_encoder):
    texts = TEXTS[:5]
    forward = pretokenized_encoder.encode(texts)
    backward = pretokenized_encoder.encode(texts[::-1])

    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)


def test_a_model_the_pretokenized_path_cannot_reproduce_falls_back_to_encode(encoder):
    from sentence_transformers import SentenceTransformer

    transformer, pooling = encoder._model[0], encoder._model[1]
    max_pooled = SentenceTransformer(modules=[transformer, type(pooling)(encoder.dim, pooling_mode="max")])
    fallback = Encoder(max_pooled, "max-pooled", pretokenized=True)

    expected = max_pooled.encode(TEXTS[:3], normalize_embeddings=True)
    np.testing.assert_allclose(fallback.encode(TEXTS[:3]), expected, atol=1e-6)
