"""Time to first token (TTFT) through the OpenAI-compatible chat endpoint, over real HTTP.

    .venv/bin/python -m bench.chat_ttft --dataset beir:../shared/datasets/scifact --split train \\
        --data-dir .eval-data --limit 300

* Server: ``uvicorn app.api:create_app`` in a child process on a free loopback port
  (``app.server_process.SpanragServer``), on ``--data-dir`` with the cached eval collection
  (ingested first, a no-op when unchanged), ``OMP_NUM_THREADS=1``, the ``--generator``
  (default extractive) and the service's default pipeline unless ``--pipeline``; no access log.
* Client: the ``openai`` Python client, ``stream=True``, one request at a time. TTFT is the
  wall time from sending the request to the first chunk with non-empty ``delta.content``;
  total is the time to the end of the stream (``[DONE]``). The server's own view comes from
  the last chunk: ``first_delta_ms`` (question in, first delta out) and ``retrieval_ms``.
* Warm-up: the first ``--warmup`` questions are sent once, untimed (the first query loads
  the encoder, the indexes, the token matrix and the graph).

Prints a Markdown table and writes JSON (``--out``). Target: TTFT p95 <= 150 ms with the
extractive generator on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from app.server_process import SpanragServer  # noqa: E402
from eval.datasets import load_dataset, parse_spec  # noqa: E402
from eval.metrics import percentile  # noqa: E402
from service.engine import RagService  # noqa: E402
from service.settings import Settings  # noqa: E402

TARGET_P95_MS = 150.0


def timed_chat(client, model: str, question: str, extra_body: dict) -> dict:
    """One streamed chat completion: client-side TTFT and total, the server's timings."""
    started = time.perf_counter()
    ttft_ms, final = None, {}
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True, extra_body=extra_body
    )
    for chunk in stream:
        if ttft_ms is None and chunk.choices and chunk.choices[0].delta.content:
            ttft_ms = (time.perf_counter() - started) * 1000
        if chunk.choices and chunk.choices[0].finish_reason == "stop":
            final = (chunk.model_extra or {}).get("spanrag") or {}
    total_ms = (time.perf_counter() - started) * 1000
    timings = final.get("timings_ms", {})
    return {
        "ttft_ms": ttft_ms if ttft_ms is not None else total_ms,
        "total_ms": total_ms,
        "server_first_delta_ms": timings.get("first_delta_ms"),
        "retrieval_ms": timings.get("retrieval_ms"),
    }


def summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    return {
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "mean": round(sum(values) / len(values), 2) if values else 0.0,
        "max": round(max(values), 2) if values else 0.0,
        "n": len(values),
    }


def run(base_url: str, collection: str, questions: list[str], warmup: int, pipeline: str | None) -> dict:
    import openai

    extra_body = {"pipeline": pipeline} if pipeline else {}
    model = f"spanrag:{collection}"
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        for q in questions[:warmup]:
            timed_chat(client, model, q, extra_body)
        runs = [timed_chat(client, model, q, extra_body) for q in questions]
    return {key: summary([r[key] for r in runs]) for key in runs[0]} if runs else {}


def markdown(out: dict) -> str:
    lines = ["| measure | p50 ms | p95 ms | mean ms | max ms |", "|---|---:|---:|---:|---:|"]
    names = {
        "ttft_ms": "TTFT (client)",
        "total_ms": "total (client)",
        "server_first_delta_ms": "first delta (server)",
        "retrieval_ms": "retrieval (server)",
    }
    for key, name in names.items():
        m = out["timings"].get(key)
        if m:
            lines.append(f"| {name} | {m['p50']:.1f} | {m['p95']:.1f} | {m['mean']:.1f} | {m['max']:.1f} |")
    verdict = "meets" if out["meets_target"] else "misses"
    lines += [
        "",
        f"{out['n_queries']} queries, {out['generator']} generator, pipeline {out['pipeline']}: "
        f"TTFT p95 {out['timings']['ttft_ms']['p95']:.1f} ms {verdict} the {TARGET_P95_MS:.0f} ms target",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beir:../shared/datasets/scifact", help="KIND:PATH")
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=300, help="timed queries")
    ap.add_argument("--warmup", type=int, default=5, help="untimed queries sent first")
    ap.add_argument("--pipeline", default=None, help="retrieval pipeline (default: the service's)")
    ap.add_argument("--generator", default="extractive", help="SPANRAG_GENERATOR of the server")
    ap.add_argument(
        "--data-dir", type=Path, default=Path(".eval-data"), help="data dir with the cached eval collection"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench/chat_ttft.json"))
    args = ap.parse_args(argv)

    kind, path = parse_spec(args.dataset)
    dataset = load_dataset(
        kind, path, args.split or ("train" if kind == "beir" and not (path / "qrels" / "test.tsv").exists() else None)
    )
    rag = RagService(Settings(data_dir=args.data_dir))
    collection, _ = dataset.ingest(rag)  # cached by content hash: a no-op when unchanged
    pipeline = args.pipeline or rag.settings.pipeline
    rag.close()
    questions = [q.text for q in dataset.queries[: args.limit]]

    env = {"OMP_NUM_THREADS": "1", "SPANRAG_GENERATOR": args.generator}
    with SpanragServer(args.data_dir.resolve(), env=env, access_log=False) as server:
        timings = run(server.base_url, collection, questions, args.warmup, args.pipeline)
    out = {
        "dataset": dataset.name,
        "split": dataset.split,
        "collection": collection,
        "n_queries": len(questions),
        "warmup": args.warmup,
        "pipeline": pipeline,
        "generator": args.generator,
        "transport": "HTTP loopback, openai client, stream=True",
        "timings": timings,
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": bool(timings) and timings["ttft_ms"]["p95"] <= TARGET_P95_MS,
        "server_env": env,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(markdown(out))
    print(f"\nwrote {args.out}")
    return out


if __name__ == "__main__":
    main()
