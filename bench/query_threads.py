"""Query latency as a user runs it: spanrag sizing its own thread pools, beside the
libraries' defaults with and without ``OMP_NUM_THREADS=1``, in one run.

    .venv/bin/python -m bench.query_threads --limit 300 --out docs/results/query_threads.json

Each variant is a fresh process running ``bench.query_latency`` (``default`` and ``dense``,
round-robin per query) on the cached eval collection in ``--data-dir`` (``spanrag eval``
builds it; this script ingests it first if missing, through the same harness):

* ``spanrag threads``: no ``OMP_NUM_THREADS`` or other thread variable set; spanrag's
  thread plan (``service/threads.py``) sizes the pools. What a user gets.
* ``library defaults``: ``SPANRAG_THREAD_PLAN=false``, no thread variable: what a user got
  before issue 17.
* ``OMP_NUM_THREADS=1``: the plan off and the variable set, as the README used to ask.

The variants run one after another, so a second process on the machine hits them unevenly;
run it on an idle machine and compare ratios to ``dense`` within a variant. ``--busy N``
measures each variant again while N other processes keep one core each busy (a server
that shares its machine with an ingest, a build or another service).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results import write_result

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SPANRAG_THREAD_PLAN")
VARIANTS: dict[str, dict[str, str]] = {
    "spanrag threads": {},
    "library defaults": {"SPANRAG_THREAD_PLAN": "false"},
    "OMP_NUM_THREADS=1": {"SPANRAG_THREAD_PLAN": "false", "OMP_NUM_THREADS": "1"},
}


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_variant(name: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(VARIANTS[name], HF_HUB_OFFLINE="1")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "bench.query_latency", "--dataset", args.dataset, "--limit", str(args.limit)]
        cmd += ["--pipeline", "default", "--ingest-docs", "0", "--data-dir", str(args.data_dir), "--out", out.name]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        latency = json.loads(Path(out.name).read_text())["latency"]
    return {
        pipeline: {k: latency[pipeline][k] for k in ("p50_ms", "p95_ms", "p50_ratio_to_dense", "p95_ratio_to_dense")}
        for pipeline in ("default", "dense")
    }


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "| threads | default p50 / p95 ms | dense p50 / p95 ms | default p95 / dense p95 |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        d, e = r["default"], r["dense"]
        lines.append(
            f"| {name} | {d['p50_ms']:.1f} / {d['p95_ms']:.1f} | {e['p50_ms']:.1f} / {e['p95_ms']:.1f} "
            f"| {d['p95_ratio_to_dense']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beir:../shared/datasets/scifact")
    ap.add_argument("--limit", type=int, default=300, help="queries per pipeline and variant")
    ap.add_argument("--data-dir", type=Path, default=Path(".eval-data"))
    ap.add_argument("--variant", action="append", help=f"variants (default: all of {list(VARIANTS)})")
    ap.add_argument("--busy", type=int, default=0, help="also measure with this many busy-looping processes")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/query_threads.json"))
    args = ap.parse_args(argv)
    results = {}
    for busy in sorted({0, args.busy}):
        for name in args.variant or list(VARIANTS):
            label = name if not busy else f"{name}, {busy} busy core(s)"
            hogs = busy_processes(busy)
            try:
                results[label] = run_variant(name, args)
            finally:
                for hog in hogs:
                    hog.kill()
            print(label, json.dumps(results[label]), flush=True)
    out = {"dataset": args.dataset, "queries": args.limit, "cores": len(os.sched_getaffinity(0)), "results": results}
    write_result(out, args.out, echo=False)
    args.out.with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return out


if __name__ == "__main__":
    main()
