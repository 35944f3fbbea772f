"""CPU against GPU in one run: embedding throughput, dense search QPS and MaxSim rerank
throughput, each path timed on the same data.

    python -m bench.gpu_paths --sentences 20000 --out runs/bench/gpu_paths.json

Data: SciFact abstract sentences (``metadata.sentences`` of ``corpus.jsonl``) for the
embedding throughput; their vectors, tiled with small deterministic noise up to
``--search-vectors`` rows, for dense search; random unit token vectors packed as documents
for MaxSim. Paths:

* embedding: sentence-transformers ``encode`` as shipped (fp32, batch 32) against spanrag's
  ``Encoder``: on the CPU with and without its pre-tokenized path; on CUDA in fp16 through
  sentence-transformers' ``encode`` (batch 256) and through the pre-tokenized path (batches
  of 256 and 1,024; the default on CUDA);
* dense search (top 10, ``--query-batch`` queries per call): FAISS flat inner product on the
  CPU, FAISS GPU flat when the ``faiss`` module sees GPUs, and a torch fp16 matmul + topk
  on the GPU;
* MaxSim: :func:`retrieval.scoring.maxsim.maxsim` (numpy) against
  :func:`retrieval.scoring.maxsim.maxsim_torch` on the GPU.

Without a GPU only the CPU paths run, and the JSON says so (``"cuda": false``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def scifact_sentences(corpus: Path, limit: int) -> list[str]:
    out: list[str] = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            for sentence in (json.loads(line).get("metadata") or {}).get("sentences") or []:
                if sentence.strip():
                    out.append(sentence.strip())
                    if len(out) >= limit:
                        return out
    return out


def timed(call, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def embedding_rates(texts: list[str], cuda: bool) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    from indexing.embed import Encoder, resolve_model

    out: dict[str, float] = {}
    plain = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    plain.encode(texts[:32])
    out["cpu_sentence_transformers"] = len(texts) / timed(lambda: plain.encode(texts, batch_size=32))
    cpu = Encoder.load("all-MiniLM-L6-v2", device="cpu", pretokenized=False)
    cpu.encode(texts[:32])  # loads the model, which Encoder.load defers
    out["cpu_spanrag_encode"] = len(texts) / timed(lambda: cpu.encode(texts))
    cpu_pretokenized = Encoder.load("all-MiniLM-L6-v2", device="cpu", pretokenized=True)
    cpu_pretokenized.encode(texts[:32])
    out["cpu_spanrag_pretokenized"] = len(texts) / timed(lambda: cpu_pretokenized.encode(texts))
    if cuda:
        plain_gpu = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cuda")
        plain_gpu.encode(texts[:256])
        out["gpu_sentence_transformers"] = len(texts) / timed(lambda: plain_gpu.encode(texts, batch_size=32))
        gpu_encode = Encoder.load("all-MiniLM-L6-v2", device="cuda", pretokenized=False)
        gpu_encode.encode(texts[:256])
        out["gpu_spanrag_fp16_encode"] = len(texts) / timed(lambda: gpu_encode.encode(texts))
        for batch in (256, 1024):
            gpu = Encoder.load("all-MiniLM-L6-v2", device="cuda", batch_size=batch)
            gpu.encode(texts[:256])
            out[f"gpu_spanrag_pretokenized_b{batch}"] = len(texts) / timed(lambda gpu=gpu: gpu.encode(texts), repeat=2)
    return {k: round(v, 1) for k, v in out.items()}


def search_rates(base: np.ndarray, n_vectors: int, batch: int, cuda: bool) -> dict[str, float]:
    import faiss

    rng = np.random.default_rng(0)
    tiles = -(-n_vectors // len(base))
    vectors = np.concatenate([base + 0.01 * rng.standard_normal(base.shape).astype(np.float32) for _ in range(tiles)])[
        :n_vectors
    ]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(len(vectors), batch, replace=False)] + 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out: dict[str, float] = {}
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out["cpu_faiss_flat_qps"] = batch / timed(lambda: index.search(queries, 10))
    if cuda and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
        gpu_index.search(queries, 10)
        out["gpu_faiss_flat_qps"] = batch / timed(lambda: gpu_index.search(queries, 10), repeat=3)
    if cuda:
        import torch

        matrix = torch.as_tensor(vectors, device="cuda").half()
        q = torch.as_tensor(queries, device="cuda").half()

        def torch_search():
            torch.topk(q @ matrix.T, 10, dim=1)
            torch.cuda.synchronize()

        torch_search()
        out["gpu_torch_fp16_qps"] = batch / timed(torch_search, repeat=3)
    return {k: round(v, 1) for k, v in out.items()}


def maxsim_rates(n_docs: int, tokens_per_doc: int, cuda: bool) -> dict[str, float]:
    from retrieval.scoring.maxsim import maxsim, maxsim_torch

    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((n_docs * tokens_per_doc, 384)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    query = tokens[:32].copy()
    offsets = np.arange(0, len(tokens) + 1, tokens_per_doc)
    out = {"cpu_numpy_docs_per_s": n_docs / timed(lambda: maxsim(query, tokens, offsets))}
    if cuda:
        maxsim_torch(query, tokens[: tokens_per_doc * 10], offsets[:11], "cuda")
        out["gpu_torch_docs_per_s"] = n_docs / timed(lambda: maxsim_torch(query, tokens, offsets, "cuda"))
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/datasets/scifact/corpus.jsonl"))
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--search-vectors", type=int, default=1_000_000)
    ap.add_argument("--query-batch", type=int, default=4096)
    ap.add_argument("--maxsim-docs", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/gpu_paths.json"))
    args = ap.parse_args()

    import torch

    from indexing.embed import Encoder

    cuda = torch.cuda.is_available()
    texts = scifact_sentences(args.corpus, args.sentences)
    result = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "sentences": len(texts),
        "embedding_spans_per_s": embedding_rates(texts, cuda),
    }
    base = Encoder.load("all-MiniLM-L6-v2", device="cuda" if cuda else "cpu").encode(texts[:20000])
    result["dense_search"] = {
        "vectors": args.search_vectors,
        "query_batch": args.query_batch,
        **search_rates(base, args.search_vectors, args.query_batch, cuda),
    }
    result["maxsim"] = {
        "documents": args.maxsim_docs,
        "tokens_per_document": 200,
        **maxsim_rates(args.maxsim_docs, 200, cuda),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
