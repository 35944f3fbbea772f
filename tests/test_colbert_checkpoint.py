"""Bring your own ColBERT: a PyLate-format checkpoint given by path makes the token vectors.

The checkpoint is made here, in the layout PyLate saves (transformer at the root, a
``pylate.models.Dense.Dense`` projection in ``1_Dense``, ColBERT settings in
``config_sentence_transformers.json``), from a tiny random BERT that shares MiniLM's
tokenizer plus the ``[Q]``/``[D]`` marker tokens PyLate adds.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertModel

from indexing.colbert import ColbertTokenEncoder, NotAColbertCheckpoint, is_pylate_checkpoint
from indexing.embed import resolve_model
from indexing.store.base import StoreMismatch

C = "docs"
HIDDEN, OUT, QUERY_LENGTH = 32, 16, 24


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-colbert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    tokenizer.add_tokens(["[Q]", "[D]"])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
            ]
        )
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 127, "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "query_prefix": "[Q] ",
                "document_prefix": "[D] ",
                "query_length": QUERY_LENGTH,
                "document_length": 40,
                "attend_to_expansion_tokens": False,
                "do_query_expansion": True,
                "skiplist_words": [".", ","],
                "similarity_fn_name": "MaxSim",
            }
        )
    )
    (path / "1_Dense").mkdir()
    (path / "1_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": HIDDEN,
                "out_features": OUT,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    save_file({"linear.weight": torch.randn(OUT, HIDDEN)}, str(path / "1_Dense" / "model.safetensors"))
    return path


def by_hand(checkpoint, ids, attention):
    """What the checkpoint computes: BERT, then the projection, then unit length."""
    from safetensors.torch import load_file

    model = BertModel.from_pretrained(checkpoint).eval()
    weight = load_file(str(checkpoint / "1_Dense" / "model.safetensors"))["linear.weight"]
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden @ weight.T, dim=-1).numpy()


def test_a_pylate_folder_is_recognised_and_anything_else_is_refused(checkpoint, tmp_path):
    assert is_pylate_checkpoint(checkpoint)
    assert not is_pylate_checkpoint(resolve_model("all-MiniLM-L6-v2"))
    with pytest.raises(NotAColbertCheckpoint):
        ColbertTokenEncoder(resolve_model("all-MiniLM-L6-v2"))
    with pytest.raises(NotAColbertCheckpoint):
        ColbertTokenEncoder(tmp_path / "missing")


def test_document_tokens_are_the_projected_marked_text_without_skiplist_tokens(checkpoint):
    encoder = ColbertTokenEncoder(checkpoint)
    text = "Mercury orbits the Sun, fast."
    (vectors,) = encoder.encode_tokens([text])
    tok = encoder.tokenizer
    ids = [
        tok.cls_token_id,
        tok.convert_tokens_to_ids("[D]"),
        *tok(text, add_special_tokens=False)["input_ids"],
        tok.sep_token_id,
    ]
    expected = by_hand(checkpoint, ids, [1] * len(ids))
    keep = [i for i, t in enumerate(ids) if t not in {tok.convert_tokens_to_ids(","), tok.convert_tokens_to_ids(".")}]
    assert vectors.shape == (len(keep), OUT) == (len(ids) - 2, OUT)
    np.testing.assert_allclose(vectors, expected[keep], atol=1e-5)


def test_queries_are_expanded_with_mask_tokens_to_the_query_length(checkpoint):
    encoder = ColbertTokenEncoder(checkpoint)
    vectors = encoder.encode_query_tokens("orbit of Mercury")
    tok = encoder.tokenizer
    ids = [
        tok.cls_token_id,
        tok.convert_tokens_to_ids("[Q]"),
        *tok("orbit of Mercury", add_special_tokens=False)["input_ids"],
        tok.sep_token_id,
    ]
    attention = [1] * len(ids) + [0] * (QUERY_LENGTH - len(ids))
    ids += [tok.mask_token_id] * (QUERY_LENGTH - len(ids))
    assert vectors.shape == (QUERY_LENGTH, OUT)
    np.testing.assert_allclose(vectors, by_hand(checkpoint, ids, attention), atol=1e-5)


def test_long_documents_are_windowed_so_no_word_piece_is_lost(checkpoint):
    encoder = ColbertTokenEncoder(checkpoint)
    text = " ".join(f"word{i}" for i in range(60))
    (vectors,) = encoder.encode_tokens([text])
    n_pieces = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
    windows = -(-n_pieces // (40 - 3))
    assert len(vectors) == n_pieces + 3 * windows


def test_a_collection_ingested_with_the_checkpoint_uses_it_for_late_interaction(
    make_rag, tmp_path, samples_dir, checkpoint
):
    rag = make_rag(tmp_path / "data", token_codec="fp16", token_model=str(checkpoint))
    rag.ingest_paths(C, [samples_dir])
    stats = rag.store.token_vector_stats(C)["fp16"]
    assert stats["bytes"] == stats["tokens"] * OUT * 2  # the checkpoint's 16 dimensions, not MiniLM's 384
    assert rag.store.token_model(C) == rag.token_encoder.name
    result = rag.retrieve(C, "How long is a year on Mercury?", pipeline="maxsim")
    hybrid = rag.retrieve(C, "How long is a year on Mercury?", pipeline="hybrid")
    # the MaxSim list (scored with the checkpoint's query tokens) adds to every document's RRF
    assert result.ranked_documents[0].score > hybrid.ranked_documents[0].score
    assert result.context.spans


def test_switching_token_models_recomputes_the_token_vectors_and_queries_refuse_a_mismatch(
    make_rag, tmp_path, samples_dir, checkpoint
):
    colbert = make_rag(tmp_path / "data", token_codec="fp16", token_model=str(checkpoint))
    colbert.ingest_paths(C, [samples_dir])
    plain = make_rag(tmp_path / "data", token_codec="fp16")
    with pytest.raises(StoreMismatch):
        plain.retrieve(C, "How long is a year on Mercury?", pipeline="maxsim")
    plain.ingest_paths(C, [samples_dir])  # unchanged files, but the token model changed
    assert plain.store.token_model(C) == plain.encoder.name
    stats = plain.store.token_vector_stats(C)["fp16"]
    assert stats["bytes"] == stats["tokens"] * 384 * 2
    assert plain.retrieve(C, "How long is a year on Mercury?", pipeline="maxsim").context.spans
