"""Ingest throughput: spanrag's write path before and after issue 17, each step on its own,
and the peers' default indexing of the same corpus, in one run.

    .venv/bin/python -m bench.ingest_throughput --limit 1000 --baseline-rev 75d84c2 \\
        --peers-python .venv-bench/bin/python --out docs/results/ingest_throughput.json

Every configuration runs in its own process (its own peak RSS, its own thread pools), one
after another, on the first ``--limit`` records of the corpus:

* ``before``: the code at ``--baseline-rev`` (checked out into a temporary git worktree):
  a separate forward pass for token vectors, one neighbour search per span for the graph,
  the libraries' default thread pools.
* ``after``: this checkout's defaults; then each step taken away alone (``-shared-pass``,
  ``-batched-graph``, ``-thread-plan``), and the options added: the int8 ONNX encoder
  (``+onnx-int8``), late pooling (``+late-pooling``) and both.
* ``langchain`` and ``llamaindex``: ``bench.ingest_peers`` in the bench extra's venv.

Each spanrag run times its stages exclusively (a stage's time excludes the stages it
calls): parse, spans (sentence splits, token counts), encode (pooled vectors, and token
vectors from the same pass), token vectors (a separate pass), store write, index build,
graph. The model is loaded before the clock starts. Encoder tokens are the token ids that
reached the transformer (special tokens and padding excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent

# configuration -> (tree, settings, ablation); tree "base" is the baseline worktree
CONFIGS: dict[str, tuple[str, dict, str | None]] = {
    "before": ("base", {}, None),
    "after": ("head", {}, None),
    "after -shared-pass": ("head", {}, "no_shared_pass"),
    "after -batched-graph": ("head", {}, "per_span_graph_search"),
    "after -thread-plan": ("head", {"thread_plan": False}, None),
    "after +onnx-int8": ("head", {"encoder_backend": "onnx-int8"}, None),
    "after +late-pooling": ("head", {"late_pooling": True}, None),
    "after +late-pooling +onnx-int8": ("head", {"late_pooling": True, "encoder_backend": "onnx-int8"}, None),
}
STAGES = ("parse", "spans", "encode", "token vectors", "store write", "index build", "graph")


# -- one configuration, in its own process ------------------------------------------------------


class StageClock:
    """Exclusive wall time per stage: a wrapped call's time goes to its stage, minus the
    time of wrapped calls it makes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [started, time of nested stages]

    def wrap(self, owner, name: str, stage: str) -> None:
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            clock._stack.append([time.perf_counter(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                started, nested = clock._stack.pop()
                spent = time.perf_counter() - started
                clock.seconds[stage] += spent - nested
                if clock._stack:
                    clock._stack[-1][1] += spent

        setattr(owner, name, timed)


def timed_write_path() -> StageClock:
    """A clock on every stage of the write path (works on the code before issue 17 too,
    which has no ``encode_with_tokens``)."""
    import indexing.embed as embed
    import indexing.ingest as ingest
    from indexing.store import sqlite_faiss

    clock = StageClock()
    clock.wrap(ingest, "parse_path", "parse")
    clock.wrap(ingest.Ingestor, "_span_tree", "spans")
    for method in ("encode", "encode_with_tokens", "encode_late"):
        if hasattr(embed.Encoder, method):
            clock.wrap(embed.Encoder, method, "encode")
    clock.wrap(embed.Encoder, "encode_tokens", "token vectors")
    clock.wrap(ingest.Ingestor, "backfill_token_vectors", "token vectors")
    for method in ("replace_documents", "put_token_vectors"):
        clock.wrap(sqlite_faiss.SqliteFaissStore, method, "store write")
    clock.wrap(sqlite_faiss.SqliteFaissStore, "refresh", "index build")
    clock.wrap(ingest.Ingestor, "sync_graph", "graph")
    return clock


def run_one(config: str, corpus: Path, data_dir: Path) -> dict:
    """Ingest ``corpus`` into a fresh ``data_dir`` with ``config``; runs inside the tree
    being measured (its modules come first on ``sys.path``)."""
    import indexing.embed as embed
    import indexing.ingest as ingest
    from service.engine import RagService
    from service.settings import Settings

    _, settings, ablation = CONFIGS[config]
    clock = timed_write_path()
    tokens = [0]
    hidden_states = embed.Encoder._hidden_states

    def counting(self, ids):
        tokens[0] += sum(len(i) for i in ids)
        return hidden_states(self, ids)

    embed.Encoder._hidden_states = counting  # type: ignore[method-assign]
    if ablation == "no_shared_pass":
        ingest.Ingestor._shared_pass_codec = lambda self, collection: None  # type: ignore[method-assign]
    elif ablation == "per_span_graph_search":
        from indexing.store.dense_index import DenseIndex

        batched = DenseIndex.search_many

        def one_by_one(self, queries, k, granularities=None, rows_by_granularity=None):
            return [batched(self, q.reshape(1, -1), k, granularities, rows_by_granularity)[0] for q in queries]

        DenseIndex.search_many = one_by_one  # type: ignore[method-assign]

    rag = RagService(Settings(data_dir=data_dir, **settings))
    rag.encoder.encode(["load the model before the clock starts"])
    tokens[0] = 0
    clock.seconds.clear()
    started = time.perf_counter()
    report = rag.ingest_paths("bench", [corpus])
    seconds = time.perf_counter() - started
    rag.close()
    stages = {s: round(clock.seconds.get(s, 0.0), 2) for s in STAGES}
    stages["other"] = round(max(seconds - sum(clock.seconds.values()), 0.0), 2)
    return {
        "config": config,
        "code": str(Path(ingest.__file__).resolve().parent.parent),
        "docs": report.added,
        "spans": report.spans,
        "token_spans": report.token_spans,
        "seconds": round(seconds, 2),
        "spans_per_s": round(report.spans / seconds, 1),
        "encoder_tokens": tokens[0],
        "tokens_per_s": round(tokens[0] / max(stages["encode"] + stages["token vectors"], 1e-9), 1),
        "stages": stages,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "index_bytes": sum(
            f.stat().st_size
            for f in data_dir.rglob("*")
            if f.is_file() and "models" not in f.relative_to(data_dir).parts
        ),
    }


# -- the whole run ------------------------------------------------------------------------------


def slice_corpus(corpus: Path, limit: int, out: Path) -> Path:
    with corpus.open(encoding="utf-8") as f:
        lines = [line for _, line in zip(range(limit), (x for x in f if x.strip()))]
    out.write_text("".join(lines), encoding="utf-8")
    return out


def baseline_worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev], check=True)
    return where


def in_process(python: str, tree: Path, args: list[str], env_extra: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
        env.pop("OMP_NUM_THREADS", None)  # as a user runs it
        subprocess.run([python, str(HERE), *args, "--result", out.name], cwd=tree, env=env, check=True)
        return json.loads(Path(out.name).read_text())


def peer(python: str, name: str, corpus: Path, limit: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("OMP_NUM_THREADS", None)
        cmd = [python, "-m", "bench.ingest_peers", "--corpus", str(corpus), "--limit", str(limit)]
        subprocess.run([*cmd, "--peer", name, "--out", out.name], cwd=REPO, env=env, check=True)
        return json.loads(Path(out.name).read_text())


def ratios(results: dict[str, dict]) -> None:
    before = results.get("before")
    peers = {k: v for k, v in results.items() if k in ("langchain", "llamaindex")}
    for result in results.values():
        if before:
            result["speedup_vs_before"] = round(before["seconds"] / result["seconds"], 2)
        for name, p in peers.items():
            result[f"speedup_vs_{name}"] = round(p["seconds"] / result["seconds"], 2)


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "| configuration | seconds | spans/s | encoder tokens/s | vs before | vs LangChain | vs LlamaIndex | peak RSS MB | index MB | stages (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r.get("stages", {}).items() if v >= 0.05)
        rate = r.get("spans_per_s") or r.get("chunks_per_s")
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {rate:,.0f} | {r.get('tokens_per_s', 0):,.0f} "
            f"| {r.get('speedup_vs_before', float('nan')):.2f}x | {r.get('speedup_vs_langchain', float('nan')):.2f}x "
            f"| {r.get('speedup_vs_llamaindex', float('nan')):.2f}x | {r['peak_rss_mb']:.0f} "
            f"| {r['index_bytes'] / 1e6:.1f} | {stages} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 1.5))
    left = [0.0] * len(names)
    for stage in (*STAGES, "other"):
        widths = [results[n].get("stages", {}).get(stage, 0.0) for n in names]
        ax.barh(names, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    peers = [n for n in names if "stages" not in results[n]]  # wall time only
    for n in peers:
        ax.barh([n], [results[n]["seconds"]], color="grey", label="peer (total)" if n == peers[0] else None)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (ingest of the same corpus slice)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/datasets/scifact/corpus.jsonl")
    ap.add_argument("--limit", type=int, default=1000, help="corpus records ingested")
    ap.add_argument("--config", action="append", help=f"spanrag configurations (default: all of {list(CONFIGS)})")
    ap.add_argument("--baseline-rev", default="75d84c2", help="git revision measured as 'before'")
    ap.add_argument("--peers-python", default=None, help="python of a venv with the bench extra (skip peers if unset)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/ingest_throughput.json"))
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.run_one:  # inside a child process
        result = run_one(args.run_one, args.corpus, args.data_dir)
        args.result.write_text(json.dumps(result))
        return result

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="spanrag-ingest-bench-") as tmp:
        tmp_path = Path(tmp)
        corpus = slice_corpus(args.corpus.resolve(), args.limit, tmp_path / "corpus.jsonl")
        configs = args.config or list(CONFIGS)
        base = baseline_worktree(args.baseline_rev, tmp_path / "base") if "before" in configs else None
        try:
            for name in configs:
                tree = base if CONFIGS[name][0] == "base" else REPO
                assert tree is not None
                data_dir = tmp_path / f"data-{len(results)}"
                run_args = ["--run-one", name, "--corpus", str(corpus), "--data-dir", str(data_dir)]
                results[name] = in_process(sys.executable, tree, run_args)
                shutil.rmtree(data_dir, ignore_errors=True)
                print(json.dumps(results[name]), flush=True)
            if args.peers_python:
                for name in ("langchain", "llamaindex"):
                    results[name] = peer(args.peers_python, name, args.corpus.resolve(), args.limit)
                    print(json.dumps(results[name]), flush=True)
        finally:
            if base is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    ratios(results)
    out = {
        "corpus": str(args.corpus),
        "docs": args.limit,
        "baseline_rev": args.baseline_rev,
        "cores": len(os.sched_getaffinity(0)),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    args.out.with_suffix(".md").write_text(markdown(results) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(markdown(results))
    return out


if __name__ == "__main__":
    if "--run-one" in sys.argv:
        sys.path.insert(0, os.getcwd())  # the tree being measured, not this file's checkout
    main()
