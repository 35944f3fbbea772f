"""Parameter sweeps with out-of-fold numbers: which setting the harness would pick, and how
that pick does on questions it was not picked on.

    spanrag eval --dataset hotpotqa:../shared/datasets/hotpotqa/dev50.json -p default \\
        --sweep bubble_min_gain=0.2,0.4 --sweep bubble_doc_weight=0.3,0.5 \\
        --folds 5 --objective answer_in_context --max-context-tokens 400 --out runs/sweep

Every point of the grid (the cartesian product of the ``--sweep`` values, flat parameter
names as in pipeline definitions) runs every question once, as an override of the
pipeline. The questions are split into ``folds`` folds **by document**: questions that
share a gold document (qrels) are always in the same fold, so a fold's documents are
unseen by the other folds' pick. For each fold the :class:`Objective` picks the best point
on the *other* folds, and that point's records on the fold are kept; the kept records of
all folds, scored together, are the **out-of-fold** numbers. Beside them: the
**in-sample** best point (picked and scored on every question: the setting the sweep
recommends) and the pipeline as it is (no override).

Writes ``sweep.json`` (grid, every point's metrics, each fold's pick, in-sample and
out-of-fold metrics, the context tokens of each question), ``sweep.md`` and
``plots/context_tokens.png`` (their distribution: as is, the pick, out of fold).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eval.datasets import EvalDataset
from eval.harness import aggregate, golds_of, make_progress, prepare_collection, run_query
from retrieval.params import FLAT_NAMES
from retrieval.pipeline import get_pipeline


class SweepError(ValueError):
    """A sweep that cannot run as asked (an unknown parameter, a value it refuses)."""


@dataclass(frozen=True)
class SweepGrid:
    """Values per flat parameter name; :meth:`points` is their cartesian product.

    >>> grid = SweepGrid.parse(["bubble_min_gain=0.2,0.4", "top_k=8"], "default")
    >>> grid.points()
    [{'bubble_min_gain': 0.2, 'top_k': 8}, {'bubble_min_gain': 0.4, 'top_k': 8}]
    """

    axes: dict[str, tuple[Any, ...]]

    @classmethod
    def parse(cls, specs: Sequence[str], pipeline: str) -> SweepGrid:
        """``NAME=V1,V2,...`` each; every value is validated against ``pipeline``'s
        parameters (and converted to the parameter's type) before anything runs."""
        params = get_pipeline(pipeline).params
        axes: dict[str, tuple[Any, ...]] = {}
        for spec in specs:
            name, sep, values = spec.partition("=")
            name = name.strip()
            if not sep or not name or not values.strip():
                raise SweepError(f"--sweep {spec!r}: expected NAME=V1,V2,...")
            if name not in FLAT_NAMES:
                raise SweepError(f"--sweep {name}: not a retrieval parameter (see the pipeline definitions)")
            if name in axes:
                raise SweepError(f"--sweep {name}: given twice")
            converted = []
            for raw in values.split(","):
                try:
                    checked = params.with_overrides({name: raw.strip()})
                except ValidationError as exc:
                    raise SweepError(f"--sweep {name}={raw.strip()}: {exc.errors()[0]['msg']}") from None
                converted.append(getattr(checked, name))
            axes[name] = tuple(dict.fromkeys(converted))
        if not axes:
            raise SweepError("a sweep needs at least one --sweep NAME=V1,V2,...")
        return cls(axes)

    def points(self) -> list[dict[str, Any]]:
        names = list(self.axes)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.axes.values())]


@dataclass(frozen=True)
class Objective:
    """How a point is judged: the higher ``metric`` the better, among the points whose mean
    context stays within ``max_context_tokens`` (if set); ties go to fewer tokens. When no
    point fits the cap, the one with the fewest tokens wins.

    >>> Objective("answer_in_context", 400).key({"answer_in_context": 0.9, "context_tokens_mean": 350})
    (True, 0.9, -350.0)
    """

    metric: str
    max_context_tokens: float | None = None

    def key(self, metrics: Mapping[str, float]) -> tuple[bool, float, float]:
        tokens = float(metrics.get("context_tokens_mean", 0.0))
        fits = self.max_context_tokens is None or tokens <= self.max_context_tokens
        return (fits, float(metrics.get(self.metric, 0.0)) if fits else -tokens, -tokens)

    def describe(self) -> str:
        cap = f" with mean context ≤ {self.max_context_tokens:g} tokens" if self.max_context_tokens else ""
        return f"highest {self.metric}{cap}"


def document_folds(golds: Mapping[str, Mapping], k: int, seed: int = 0) -> dict[str, int]:
    """Each question's fold (0..k-1): questions sharing a gold document (qrels) form one
    group and stay together; groups are dealt largest first to the smallest fold, in an
    order fixed by a hash of their documents (deterministic, unrelated to the question
    order). A question without qrels is a group of its own.

    >>> golds = {"a": {"qrels": {"d1": 1}}, "b": {"qrels": {"d1": 1, "d2": 1}},
    ...          "c": {"qrels": {"d3": 1}}, "d": {"qrels": {}}}
    >>> folds = document_folds(golds, 2)
    >>> folds["a"] == folds["b"] != folds["c"]
    True
    """
    if k < 2:
        raise SweepError("--folds must be at least 2")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for qid, gold in golds.items():
        find("q:" + qid)
        for doc in gold.get("qrels") or {}:
            parent[find("q:" + qid)] = find("d:" + doc)
    groups: dict[str, list[str]] = {}
    for qid in golds:
        groups.setdefault(find("q:" + qid), []).append(qid)
    if len(groups) < k:
        raise SweepError(f"{len(groups)} groups of questions sharing documents: too few for {k} folds")

    def order(members: list[str]) -> tuple[int, str]:
        return (-len(members), hashlib.sha1(f"{seed}:{min(members)}".encode()).hexdigest())

    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for members in sorted(groups.values(), key=order):
        fold = min(range(k), key=lambda f: (sizes[f], f))
        sizes[fold] += len(members)
        fold_of.update(dict.fromkeys(members, fold))
    return fold_of


@dataclass
class SweepResult:
    """What :func:`run_sweep` writes to ``sweep.json``."""

    dataset: str
    split: str
    pipeline: str
    objective: str
    folds: int
    grid: dict[str, list[Any]]
    points: list[dict[str, Any]] = field(default_factory=list)  # {"params", "metrics"}
    fold_picks: list[dict[str, Any]] = field(default_factory=list)  # {"fold", "n_queries", "params", ...}
    out_of_fold: dict[str, float] = field(default_factory=dict)
    in_sample: dict[str, Any] = field(default_factory=dict)  # {"params", "metrics"}
    pipeline_as_is: dict[str, float] = field(default_factory=dict)
    context_tokens: dict[str, list[int]] = field(default_factory=dict)  # per query: picked, as is, out of fold

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def pick(objective: Objective, metrics_of: Sequence[Mapping[str, float]], current: Sequence[bool] | None = None) -> int:
    """Index of the best point. Equal on the metric (and the cap), the pipeline's current
    setting (``current[i]``) wins: a knob moves only for a measured gain, not for a few
    tokens; then fewer tokens, then grid order."""
    is_current = current or [False] * len(metrics_of)

    def key(i: int) -> tuple:
        fits, quality, tokens = objective.key(metrics_of[i])
        return (fits, quality, is_current[i], tokens, -i)

    return max(range(len(metrics_of)), key=key)


def run_sweep(
    rag,
    dataset: EvalDataset,
    pipeline: str,
    grid: SweepGrid,
    objective: Objective,
    out_dir: Path,
    folds: int = 5,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run the grid, pick in and out of fold, write ``sweep.json`` and ``sweep.md``."""
    get_pipeline(pipeline)
    dataset = dataset.limited(limit)
    golds = golds_of(dataset)
    fold_of = document_folds(golds, folds)
    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    collection, _ = prepare_collection(rag, dataset, pipeline, log)

    points = [{}, *grid.points()]  # the pipeline as it is first, for comparison
    records: list[list[dict]] = []
    started = time.perf_counter()
    with make_progress(progress) as bar:
        for n, overrides in enumerate(points):
            label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as is"
            task = bar.add_task(f"{n}/{len(points) - 1} {label}", total=len(dataset.queries), metrics="")
            point_records = []
            for i, query in enumerate(dataset.queries, start=1):
                point_records.append(_compact(run_query(rag, collection, pipeline, query, overrides=overrides)))
                bar.update(task, completed=i)
            records.append(point_records)
    log(f"{len(points)} runs of {len(dataset.queries)} questions in {time.perf_counter() - started:.0f} s")

    def scored(point: int, qids: set[str] | None = None) -> dict[str, float]:
        chosen = [r for r in records[point] if qids is None or r["qid"] in qids]
        return aggregate(chosen, golds)

    grid_points = list(range(1, len(points)))
    own = get_pipeline(pipeline).params
    current = [all(getattr(own, k) == v for k, v in points[i].items()) for i in grid_points]
    result = SweepResult(
        dataset=dataset.name,
        split=dataset.split,
        pipeline=pipeline,
        objective=objective.describe(),
        folds=folds,
        grid={k: list(v) for k, v in grid.axes.items()},
        points=[{"params": points[i], "metrics": scored(i)} for i in grid_points],
        pipeline_as_is=scored(0),
    )
    held_out: list[dict] = []
    for fold in range(folds):
        inside = {q for q, f in fold_of.items() if f == fold}
        training = set(fold_of) - inside
        best = grid_points[pick(objective, [scored(i, training) for i in grid_points], current)]
        kept = [r for r in records[best] if r["qid"] in inside]
        held_out.extend(kept)
        result.fold_picks.append(
            {
                "fold": fold,
                "n_queries": len(inside),
                "params": points[best],
                "training": scored(best, training),
                "held_out": aggregate(kept, golds) if kept else {},
            }
        )
    result.out_of_fold = aggregate(held_out, golds)
    best = grid_points[pick(objective, [p["metrics"] for p in result.points], current)]
    result.in_sample = {"params": points[best], "metrics": scored(best)}
    result.context_tokens = {
        "in_sample_pick": [r["context_tokens"] for r in records[best]],
        "as_is": [r["context_tokens"] for r in records[0]],
        "out_of_fold": [r["context_tokens"] for r in held_out],
    }
    from eval.report import plot_distribution

    (out_dir / "plots").mkdir(exist_ok=True)
    plot_distribution(
        {
            "as is": result.context_tokens["as_is"],
            "pick": result.context_tokens["in_sample_pick"],
            "out of fold": result.context_tokens["out_of_fold"],
        },
        out_dir / "plots" / "context_tokens.png",
        f"{dataset.name} ({dataset.split}): {pipeline}",
        "context tokens per question",
    )
    (out_dir / "sweep.json").write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    (out_dir / "sweep.md").write_text(sweep_markdown(result), encoding="utf-8")
    return result


def _compact(record: dict) -> dict:
    """What scoring needs of a record (the trace and support are large and unused here)."""
    return {k: v for k, v in record.items() if k not in ("trace", "support", "timings_ms")} | {
        "timings_ms": {"retrieval_ms": record["timings_ms"]["retrieval_ms"]}
    }


def sweep_markdown(result: SweepResult) -> str:
    from eval.report import markdown_table

    rows: dict[str, Mapping[str, float]] = {"as is": result.pipeline_as_is}
    for p in result.points:
        rows[", ".join(f"{k}={v}" for k, v in p["params"].items())] = p["metrics"]
    picks = "\n".join(
        f"| {f['fold']} | {f['n_queries']} | {', '.join(f'{k}={v}' for k, v in f['params'].items())} |"
        for f in result.fold_picks
    )
    chosen = ", ".join(f"{k}={v}" for k, v in result.in_sample["params"].items())
    return (
        f"# Sweep: {result.dataset} ({result.split}), pipeline {result.pipeline}\n\n"
        f"Objective: {result.objective}. {result.folds} folds by document.\n\n"
        "## Every point (in-sample)\n\n"
        f"{markdown_table(rows)}\n\n"
        "## Picked without seeing the fold\n\n| fold | questions | picked on the other folds |\n|---:|---:|---|\n"
        f"{picks}\n\n"
        "## In-sample against out-of-fold\n\n"
        + markdown_table(
            {
                "as is": result.pipeline_as_is,
                f"in-sample pick ({chosen})": result.in_sample["metrics"],
                "out-of-fold picks": result.out_of_fold,
            }
        )
        + f"\n\nThe sweep would pick **{chosen}** (best on every question).\n\n"
        "![context tokens per question](plots/context_tokens.png)\n"
    )


def summary_table(folders: Sequence[Path]) -> str:
    """One row per sweep folder: the knob, its current value's and the in-sample pick's
    objective metric, and the out-of-fold one (``python -m eval.sweep runs/sweep-*``)."""
    lines = [
        "| dataset | swept | as is | in-sample pick | in-sample | out-of-fold | picks per fold | tokens as is / out-of-fold |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for folder in folders:
        sweep = json.loads((Path(folder) / "sweep.json").read_text(encoding="utf-8"))
        metric = sweep["objective"].split()[1]
        chosen = ", ".join(f"{k}={v}" for k, v in sweep["in_sample"]["params"].items())
        picks: dict[str, int] = {}
        for f in sweep["fold_picks"]:
            label = ", ".join(str(v) for v in f["params"].values())
            picks[label] = picks.get(label, 0) + 1
        swept = ", ".join(f"{k} ∈ {{{', '.join(str(v) for v in vs)}}}" for k, vs in sweep["grid"].items())
        lines.append(
            f"| {sweep['dataset']} ({sweep['split']}) | {swept} | {sweep['pipeline_as_is'].get(metric, 0):.3f} "
            f"| {chosen} | {sweep['in_sample']['metrics'].get(metric, 0):.3f} "
            f"| {sweep['out_of_fold'].get(metric, 0):.3f} | {', '.join(f'{k} ×{n}' for k, n in picks.items())} "
            f"| {sweep['pipeline_as_is']['context_tokens_mean']:.0f} / {sweep['out_of_fold']['context_tokens_mean']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(summary_table([Path(p) for p in sys.argv[1:]]))


__all__ = [
    "Objective",
    "SweepError",
    "SweepGrid",
    "SweepResult",
    "document_folds",
    "pick",
    "run_sweep",
    "summary_table",
]
