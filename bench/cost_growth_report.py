"""The reports of :mod:`bench.cost_growth`: its results as a Markdown table and a plot,
and the JSON files it writes (``--out`` after each size; a copy and the plot under
``--docs-dir``). Reads only the results dict, so ``--plot-only`` needs nothing else."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(results: dict, path: Path) -> None:
    """The results as indented JSON (the format of ``--out`` and ``docs/results/cost_growth.json``)."""
    path.write_text(json.dumps(results, indent=2))


def publish(results: dict, out: Path, docs_dir: Path | None) -> None:
    """Copy the JSON to ``docs_dir`` and draw the plot there (when given), then print the
    Markdown table and where the files went."""
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        write_json(results, docs_dir / "cost_growth.json")
        plot(results, docs_dir / "cost_growth.png")
    print(markdown(results))
    print(f"\nwrote {out}" + (f", {docs_dir}/cost_growth.json and .png" if docs_dir else ""))


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}" if n >= 2**20 * 10 else f"{n / 2**20:.1f}"


def _secs(s: float) -> str:
    return f"{s:.1f}" if s < 10 else f"{s:,.0f}"


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s < 3600 else f"{s / 3600:.1f} h"


def markdown(results: dict) -> str:
    sizes = sorted(results["sizes"], key=int)
    runs = [results["sizes"][s] for s in sizes]
    rows = [("spans (real embeddings)", [f"{r['spans']:,} ({r['real_spans']:,})" for r in runs])]
    rows += [
        ("store writes, s (measured)", [_secs(r["ingest_s"]["store_write"]) for r in runs]),
        (
            "index build, s (measured: FAISS flat + BM25 + token matrix)",
            [_secs(r["ingest_s"]["index_build"]) for r in runs],
        ),
        (
            "embedding + token vectors, s (extrapolated)",
            [
                _secs(r["ingest_s"]["embedding_extrapolated"] + r["ingest_s"]["token_vectors_extrapolated"])
                for r in runs
            ],
        ),
        ("ingest total (estimated)", [_duration(r["ingest_s"]["total_estimated"]) for r in runs]),
        ("SQLite, MiB", [_mib(r["bytes"]["sqlite"]) for r in runs]),
        ("dense flat (fp16), MiB", [_mib(r["bytes"]["dense"]) for r in runs]),
    ]
    kinds = list(runs[0]["approximate"])
    for kind in kinds:
        rows.append((f"dense {kind}, MiB", [_mib(r["approximate"][kind]["dense_bytes"]) for r in runs]))
    rows += [
        ("BM25, MiB", [_mib(r["bytes"]["bm25"]) for r in runs]),
        ("token codes (binary), MiB", [_mib(r["bytes"].get("tokens", 0)) for r in runs]),
        ("peak RSS build, GiB", [f"{r['peak_rss_bytes']['build'] / 2**30:.2f}" for r in runs]),
    ]
    for kind in ["flat", *kinds]:
        rows.append(
            (
                f"serving, {kind}: indexes loaded / heap after queries / peak RSS, GiB",
                [
                    f"{r['serve'][kind]['index_rss_bytes'] / 2**30:.2f} / "
                    f"{r['serve'][kind]['rss_checkpoints']['after_queries']['anon'] / 2**30:.2f} / "
                    f"{r['peak_rss_bytes'][f'serve_{kind}'] / 2**30:.2f}"
                    for r in runs
                ],
            )
        )
    for kind in ["flat", *kinds]:
        lat = [r["serve"][kind]["latency_ms"] for r in runs]
        rows.append(
            (
                f"dense top-10, {kind}: p50 / p95 ms",
                [f"{m['dense_store']['p50']:.1f} / {m['dense_store']['p95']:.1f}" for m in lat],
            )
        )
    lat = [r["serve"]["flat"]["latency_ms"] for r in runs]
    rows.append(
        (
            "BM25 top-10 (sentences): p50 / p95 ms",
            [f"{m['bm25_store']['p50']:.1f} / {m['bm25_store']['p95']:.1f}" for m in lat],
        )
    )
    for p in results["config"]["pipelines"]:
        for kind in ["flat", *kinds]:
            lat = [r["serve"][kind]["latency_ms"] for r in runs]
            rows.append(
                (f"{p} pipeline, {kind}: p50 / p95 ms", [f"{m[p]['p50']:.0f} / {m[p]['p95']:.0f}" for m in lat])
            )
    for kind in kinds:
        rec = [r["approximate"][kind]["recall_at_10"] for r in runs]
        rows.append(
            (
                f"{kind} recall@10 vs flat (all / documents / 1000-deep)",
                [f"{x['all']:.3f} / {x['documents']:.3f} / {x['deep']:.3f}" for x in rec],
            )
        )
        rows.append((f"{kind} dense build, s", [_secs(r["approximate"][kind]["dense_build_s"]) for r in runs]))
    head = "| | " + " | ".join(f"{int(s):,} spans" for s in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """One panel per measure against corpus size (log x): ingest time, disk, memory, store
    search latency, pipeline latency, recall@10 of the approximate indexes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [results["sizes"][s] for s in sorted(results["sizes"], key=int)]
    x = [r["spans"] for r in runs]
    kinds = ["flat", *runs[0]["approximate"]]
    color = {"flat": "C0", "hnsw": "C1", "ivf": "C2"}
    marker = {"dense": "o", "hybrid": "s", "default": "^"}
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))

    ax = axes[0][0]
    for key, label, style, c in (
        ("store_write", "store writes (measured)", "o-", "C4"),
        ("index_build", "index build: flat + BM25 + token matrix (measured)", "s-", "C0"),
        ("embedding_extrapolated", "embedding (extrapolated from measured spans/s)", "^--", "C3"),
        ("token_vectors_extrapolated", "token vectors (extrapolated)", "v--", "C5"),
        ("total_estimated", "total (estimated)", ".-", "k"),
    ):
        ax.plot(x, [r["ingest_s"][key] for r in runs], style, color=c, label=label)
    for kind in kinds[1:]:
        ax.plot(
            x,
            [r["approximate"][kind]["dense_build_s"] for r in runs],
            "x:",
            color=color[kind],
            label=f"{kind} dense index build (measured)",
        )
    ax.set(title="Ingest time (1 thread)", ylabel="seconds", yscale="log")

    ax = axes[0][1]
    for label, values, style, c in (
        ("SQLite (spans, vectors, token codes)", [r["bytes"]["sqlite"] for r in runs], ".-", "k"),
        *[
            (
                f"dense {k}",
                [r["bytes"]["dense"] if k == "flat" else r["approximate"][k]["dense_bytes"] for r in runs],
                "o-",
                color[k],
            )
            for k in kinds
        ],
        ("BM25 (6 granularities)", [r["bytes"]["bm25"] for r in runs], "s--", "C4"),
        ("token codes (1-bit, memory-mapped)", [r["bytes"].get("tokens", 0) for r in runs], "v--", "C5"),
    ):
        ax.plot(x, [v / 2**20 for v in values], style, color=c, label=label)
    ax.set(title="Disk size per structure", ylabel="MiB", yscale="log")

    ax = axes[0][2]
    ax.plot(x, [r["peak_rss_bytes"]["build"] / 2**30 for r in runs], "k.-", label="peak RSS: write + flat build")
    for k in kinds:
        if k != "flat":
            ax.plot(
                x,
                [r["approximate"][k]["peak_rss_bytes"] / 2**30 for r in runs],
                "x:",
                color=color[k],
                label=f"peak RSS: {k} rebuild",
            )
        ax.plot(
            x,
            [r["peak_rss_bytes"][f"serve_{k}"] / 2**30 for r in runs],
            "s-",
            color=color[k],
            label=f"peak RSS: serving, {k}",
        )
        ax.plot(
            x,
            [r["serve"][k]["index_rss_bytes"] / 2**30 for r in runs],
            "^--",
            color=color[k],
            label=f"indexes loaded, {k}",
        )
    ax.axhline(24, color="grey", lw=0.8, ls="--")
    ax.text(x[0], 24, " machine: 24 GiB", va="bottom", fontsize=7, color="grey")
    ax.set(title="Memory", ylabel="GiB", yscale="log")

    ax = axes[1][0]
    for k in kinds:
        for q, ls in (("p50", "-"), ("p95", ":")):
            ax.plot(
                x,
                [r["serve"][k]["latency_ms"]["dense_store"][q] for r in runs],
                "o" + ls,
                color=color[k],
                label=f"dense top-10, {k} {q}",
            )
    for q, ls in (("p50", "-"), ("p95", ":")):
        ax.plot(
            x,
            [r["serve"]["flat"]["latency_ms"]["bm25_store"][q] for r in runs],
            "x" + ls,
            color="C7",
            label=f"BM25 top-10 over sentences {q}",
        )
    ax.set(title="Store search latency", ylabel="ms", yscale="log")

    ax = axes[1][1]
    for p in results["config"]["pipelines"]:
        for k in kinds:
            ax.plot(
                x,
                [r["serve"][k]["latency_ms"][p]["p95"] for r in runs],
                marker.get(p, "d") + "-",
                color=color[k],
                label=f"{p} pipeline, {k}",
            )
    ax.set(title="Pipeline latency p95 (query vector in, context out)", ylabel="ms", yscale="log")

    ax = axes[1][2]
    for k in kinds[1:]:
        for scope, ls, label in (
            ("all", "-", "top 10 of all spans"),
            ("documents", "--", "document spans only"),
            ("deep", ":", "top 10 of a 1,000-deep search"),
        ):
            ax.plot(
                x,
                [r["approximate"][k]["recall_at_10"][scope] for r in runs],
                "o" + ls,
                color=color[k],
                label=f"{k}: {label}",
            )
    lowest = min(
        [r["approximate"][k]["recall_at_10"][s] for r in runs for k in kinds[1:] for s in ("all", "documents", "deep")],
        default=0.9,
    )
    ax.set(
        title="Recall@10 of the approximate index vs flat", ylabel="recall@10", ylim=(min(0.9, lowest - 0.02), 1.005)
    )

    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("spans in the collection")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    real = max(r["real_spans"] for r in runs)
    fig.suptitle(
        f"spanrag cost growth on a 2-core CPU machine: real MiniLM embeddings for the first {real:,} spans, "
        "perturbed copies beyond (see README)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
