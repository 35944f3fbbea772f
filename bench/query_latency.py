"""Query latency per pipeline and ingest throughput, with each pipeline's ratio to ``dense``
measured in the same run.

    .venv/bin/python -m bench.query_latency --dataset beir:../shared/datasets/scifact --limit 200

* Query latency: every query goes through every pipeline, round-robin (query 1 through all
  pipelines, then query 2, ...), so load from other processes hits all pipelines alike;
  latency is the retriever's ``retrieval_ms`` (question in, final context out) and also the
  wall time of ``RagService.retrieve``. The corpus is the cached eval collection
  (``--data-dir``), ingested first if missing.
* Ingest throughput: the first ``--ingest-docs`` corpus records written to a fresh
  temporary data dir (model already loaded, so model load is excluded): spans/s and docs/s.

Prints a Markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eval.datasets import load_dataset, parse_spec  # noqa: E402
from eval.harness import freeze_long_lived_objects  # noqa: E402
from eval.metrics import percentile  # noqa: E402
from retrieval.pipeline import PIPELINES, get_pipeline  # noqa: E402
from service.engine import RagService  # noqa: E402
from service.settings import Settings  # noqa: E402


def ingest_throughput(rag: RagService, corpus: Path, n_docs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="spanrag-bench-") as tmp:
        tmp = Path(tmp)
        lines = []
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    lines.append(line)
                if len(lines) >= n_docs:
                    break
        (tmp / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
        fresh = RagService(Settings(data_dir=tmp / "data", embedding_model=rag.settings.embedding_model))
        fresh.__dict__["encoder"] = rag.encoder  # same loaded model: measure ingest, not model load
        started = time.perf_counter()
        report = fresh.ingest_paths("bench", [tmp / "corpus.jsonl"])
        seconds = time.perf_counter() - started
        fresh.close()
    return {
        "docs": report.added,
        "spans": report.spans,
        "seconds": round(seconds, 3),
        "docs_per_s": round(report.added / seconds, 2),
        "spans_per_s": round(report.spans / seconds, 1),
    }


def query_latency(
    rag: RagService, collection: str, questions: list[str], pipelines: list[str], warmup: int = 3
) -> dict:
    for q in questions[:warmup]:
        for p in pipelines:
            rag.retrieve(collection, q, p)
    freeze_long_lived_objects()
    retrieval = {p: [] for p in pipelines}
    wall = {p: [] for p in pipelines}
    stages: dict[str, dict[str, list[float]]] = {p: {} for p in pipelines}
    for q in questions:
        for p in pipelines:
            t = time.perf_counter()
            result = rag.retrieve(collection, q, p)
            wall[p].append((time.perf_counter() - t) * 1000)
            retrieval[p].append(result.timings_ms["retrieval_ms"])
            for stage, ms in result.timings_ms.items():
                stages[p].setdefault(stage, []).append(ms)
    out = {}
    for p in pipelines:
        out[p] = {
            "p50_ms": round(percentile(retrieval[p], 50), 2),
            "p95_ms": round(percentile(retrieval[p], 95), 2),
            "wall_p50_ms": round(percentile(wall[p], 50), 2),
            "wall_p95_ms": round(percentile(wall[p], 95), 2),
            "n": len(retrieval[p]),
            "stage_p50_ms": {k: round(percentile(v, 50), 2) for k, v in stages[p].items()},
        }
    base = out.get("dense")
    for p in pipelines:
        out[p]["p50_ratio_to_dense"] = round(out[p]["p50_ms"] / base["p50_ms"], 2)
        out[p]["p95_ratio_to_dense"] = round(out[p]["p95_ms"] / base["p95_ms"], 2)
    return out


def markdown(latency: dict, ingest: dict) -> str:
    lines = [
        "| pipeline | p50 ms | p95 ms | p50 / dense | p95 / dense | stages, p50 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p, m in latency.items():
        stages = ", ".join(
            f"{k.removesuffix('_ms')} {v:.1f}" for k, v in m["stage_p50_ms"].items() if k != "retrieval_ms"
        )
        lines.append(
            f"| {p} | {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['p50_ratio_to_dense']:.2f}x | {m['p95_ratio_to_dense']:.2f}x | {stages} |"
        )
    lines += [
        "",
        f"Ingest: {ingest['docs']} docs, {ingest['spans']} spans in {ingest['seconds']:.1f} s = "
        f"{ingest['docs_per_s']:.1f} docs/s, {ingest['spans_per_s']:.0f} spans/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dataset", default="beir:../shared/datasets/scifact", help="KIND:PATH (ingest throughput needs beir)"
    )
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=200, help="queries timed per pipeline")
    ap.add_argument("--pipeline", action="append", help="pipelines (default: all); dense is always included")
    ap.add_argument(
        "--ingest-docs", type=int, default=300, help="corpus records for the ingest throughput run (0: skip)"
    )
    ap.add_argument(
        "--data-dir", type=Path, default=Path(".eval-data"), help="data dir with the cached eval collection"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench/query_latency.json"))
    args = ap.parse_args(argv)

    kind, path = parse_spec(args.dataset)
    dataset = load_dataset(
        kind, path, args.split or ("train" if kind == "beir" and not (path / "qrels" / "test.tsv").exists() else None)
    )
    pipelines = list(dict.fromkeys(["dense", *(args.pipeline or list(PIPELINES))]))
    for p in pipelines:
        get_pipeline(p)
    rag = RagService(Settings(data_dir=args.data_dir))
    rag.encoder  # noqa: B018 (a cached property, built here for its side effect)
    collection, _ = dataset.ingest(rag)
    questions = [q.text for q in dataset.queries[: args.limit]]
    latency = query_latency(rag, collection, questions, pipelines)
    ingest = (
        ingest_throughput(rag, dataset.corpus_path, args.ingest_docs)
        if args.ingest_docs and dataset.corpus_path is not None
        else {}
    )
    rag.close()
    out = {
        "dataset": dataset.name,
        "split": dataset.split,
        "collection": collection,
        "n_queries": len(questions),
        "latency": latency,
        "ingest": ingest,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(markdown(latency, ingest or {"docs": 0, "spans": 0, "seconds": 0, "docs_per_s": 0, "spans_per_s": 0}))
    print(f"\nwrote {args.out}")
    return out


if __name__ == "__main__":
    main()
