"""``report.md`` (one table row per pipeline) and ``plots/`` (matplotlib, Agg backend):

* ``plots/quality_vs_tokens.png``: nDCG@10 (or answer_in_context where the dataset has no
  qrels) against mean context tokens, one point per pipeline;
* ``plots/latency.png``: per-query latency (retrieval to final context) as a box plot per
  pipeline;
* ``plots/context_tokens.png``: per-query context tokens as a box plot per pipeline (how
  much context each question got, not only the mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

COLUMNS = (
    ("ndcg@10", "nDCG@10", "{:.3f}"),
    ("recall@10", "R@10", "{:.3f}"),
    ("recall@100", "R@100", "{:.3f}"),
    ("mrr@10", "MRR@10", "{:.3f}"),
    ("evidence_recall", "evidence recall", "{:.3f}"),
    ("sentence_evidence_recall", "evidence sentences", "{:.3f}"),
    ("cited_precision", "cited precision", "{:.3f}"),
    ("cited_recall", "cited recall", "{:.3f}"),
    ("answer_in_context", "answer in context", "{:.3f}"),
    ("answered_in_context", "answered in context", "{:.3f}"),
    ("answer_em", "EM", "{:.3f}"),
    ("answer_f1", "F1", "{:.3f}"),
    ("context_tokens_mean", "ctx tokens mean", "{:.0f}"),
    ("context_tokens_p50", "ctx tokens p50", "{:.0f}"),
    ("context_tokens_p95", "ctx tokens p95", "{:.0f}"),
    ("latency_ms_p50", "latency p50 ms", "{:.1f}"),
    ("latency_ms_p95", "latency p95 ms", "{:.1f}"),
    ("latency_p95_vs_dense", "p95 / dense", "{:.2f}x"),
    ("index_mb", "index MB", "{:.1f}"),
    ("abstain_precision", "abstain precision", "{:.3f}"),
    ("abstain_recall", "abstain recall", "{:.3f}"),
    ("abstained_answerable", "answerable abstained", "{:.3f}"),
    ("n_queries", "queries", "{:d}"),
    ("n_unanswerable", "unanswerable", "{:d}"),
)


def markdown_table(pipelines: Mapping[str, Mapping[str, float]]) -> str:
    present = [c for c in COLUMNS if any(c[0] in m for m in pipelines.values())]
    lines = ["| pipeline | " + " | ".join(label for _, label, _ in present) + " |", "|---|" + "---:|" * len(present)]
    for name, m in pipelines.items():
        cells = [fmt.format(m[key]) if key in m else "–" for key, _, fmt in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quality_metric(pipelines: Mapping[str, Mapping[str, float]]) -> str:
    first = next(iter(pipelines.values()), {})
    # what selection changes: the answer, else the evidence, in the context; ranking last
    for key in ("answer_in_context", "evidence_recall", "ndcg@10"):
        if key in first:
            return key
    return "context_tokens_mean"


def plot_quality(pipelines: Mapping[str, Mapping[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = quality_metric(pipelines)
    fig, ax = plt.subplots(figsize=(6, 4))
    points: dict[tuple[float, float], list[str]] = {}
    for name, m in pipelines.items():  # pipelines with the same config share one labelled point
        points.setdefault((m.get("context_tokens_mean", 0.0), m.get(metric, 0.0)), []).append(name)
    for n, ((x, y), names) in enumerate(sorted(points.items())):
        ax.scatter([x], [y], s=50)
        # alternate label sides so neighbouring points stay readable
        ax.annotate(
            " = ".join(names), (x, y), textcoords="offset points", xytext=(5, 6 if n % 2 == 0 else -12), fontsize=8
        )
    ax.set_xlabel("context tokens (mean)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(latencies: Mapping[str, Sequence[float]], path: Path, title: str) -> None:
    plot_distribution(latencies, path, title, "latency ms (retrieval to final context)")


def plot_distribution(values: Mapping[str, Sequence[float]], path: Path, title: str, ylabel: str) -> None:
    """One box per name (per-query values: latency, context tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names) + 2), 4))
    ax.boxplot([list(values[n]) or [0.0] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    out_dir: Path,
    results: Mapping,
    latencies: Mapping[str, Sequence[float]],
    command: str | None = None,
    collection: str | None = None,
    extra: Mapping | None = None,
    context_tokens: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    title = f"{results['dataset']} ({results['split']}, {results['n_queries']} queries)"
    plot_quality(results["pipelines"], plots / "quality_vs_tokens.png", title)
    plot_latency(latencies, plots / "latency.png", title)
    if context_tokens:
        plot_distribution(context_tokens, plots / "context_tokens.png", title, "context tokens per question")
    lines = [f"# Evaluation: {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    costs = results.get("costs", {})
    lines += [markdown_table({n: {**m, **costs.get(n, {})} for n, m in results["pipelines"].items()}), ""]
    if collection:
        lines.append(f"Collection `{collection}`.")
    extra = dict(extra or {})
    if extra.get("ingest_seconds") is not None:
        lines.append(f"Ingest (or the check that nothing changed): {extra['ingest_seconds']} s.")
    if extra.get("wall_seconds"):
        lines.append(
            "Wall time per pipeline (s): " + ", ".join(f"{k} {v}" for k, v in extra["wall_seconds"].items()) + "."
        )
    other = results.get("unanswerable_from")
    if other:
        lines.append(
            f"Unanswerable: {other['n_queries']} questions of {other['dataset']} ({other['split']}) asked "
            "of this collection too; abstention columns count them, every other column only this "
            "dataset's questions."
        )
    for note in extra.get("notes") or []:
        lines.append(f"Note: {note}.")
    lines += [
        "",
        "Ranking metrics by ir-measures over the ranked documents (each signal ranks a document by its best span; the signals are fused by RRF); "
        "evidence recall, answer in context and context tokens over the final context; latency is "
        "retrieval to final context; EM/F1 of the generated answer (SQuAD normalization).",
        "",
        "![quality vs context tokens](plots/quality_vs_tokens.png) ![latency](plots/latency.png)"
        + (" ![context tokens](plots/context_tokens.png)" if context_tokens else ""),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = ["markdown_table", "plot_distribution", "plot_latency", "plot_quality", "write_report"]


def rerender(out_dir: Path) -> Path:
    """Rebuild ``report.md`` and ``plots/`` of an eval folder from its ``results.json`` and
    ``run.*.json`` files (no retrieval runs): ``python -m eval.report runs/scifact-train``."""
    import json

    out_dir = Path(out_dir)
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    latencies, tokens = {}, {}
    for name in results["pipelines"]:
        run = json.loads((out_dir / f"run.{name}.json").read_text(encoding="utf-8"))
        latencies[name] = [q["timings_ms"]["retrieval_ms"] for q in run["queries"]]
        tokens[name] = [q["context_tokens"] for q in run["queries"]]
    old = (out_dir / "report.md").read_text(encoding="utf-8") if (out_dir / "report.md").exists() else ""
    command = old.split("```\n", 2)[1].strip() if old.count("```") >= 2 else None
    return write_report(out_dir, results, latencies, command=command, context_tokens=tokens)


if __name__ == "__main__":
    import sys

    for folder in sys.argv[1:]:
        print(rerender(Path(folder)))
