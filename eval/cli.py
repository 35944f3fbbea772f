"""``spanrag eval``: compare pipelines on a benchmark with one command.

    spanrag eval --dataset beir:../shared/datasets/scifact --split train \\
        --pipeline dense --pipeline bm25 --out runs/scifact-train
    spanrag eval --list-pipelines

Registered in ``app/cli.py`` with ``cli.command("eval")(eval_command)``; also runnable as
``python -m eval.cli ...``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def eval_command(
    dataset: str | None = typer.Option(
        None, "--dataset", help="KIND:PATH with KIND beir (a BEIR folder), hotpotqa or tatqa (a JSON file)"
    ),
    split: str | None = typer.Option(None, "--split", help="split name (beir: qrels/<split>.tsv; default test)"),
    pipeline: list[str] | None = typer.Option(
        None, "--pipeline", "-p", help="pipeline to evaluate; repeat for several (see --list-pipelines)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="output folder for results.json, run.*.json, report.md, plots/"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="evaluate only the first N queries"),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="data directory holding the eval collections (default: $SPANRAG_DATA_DIR or ./.spanrag)",
    ),
    generator: str | None = typer.Option(None, "--generator", help="answer generator (default: the configured one)"),
    unanswerable_from: str | None = typer.Option(
        None,
        "--unanswerable-from",
        help="KIND:PATH[@SPLIT] of another dataset: its questions are asked too, as ones this collection "
        "cannot answer (abstention precision/recall)",
    ),
    sweep: list[str] | None = typer.Option(
        None,
        "--sweep",
        help="NAME=V1,V2,...: run the pipeline at each value of a parameter (repeat for a grid) and report "
        "the pick with out-of-fold numbers (sweep.json, sweep.md)",
    ),
    folds: int = typer.Option(5, "--folds", min=2, help="sweep: folds, by document"),
    objective: str | None = typer.Option(
        None, "--objective", help="sweep: the metric to maximize (default: answer_in_context, else ndcg@10)"
    ),
    max_context_tokens: float | None = typer.Option(
        None, "--max-context-tokens", min=1, help="sweep: only points whose mean context is at most this many tokens"
    ),
    list_pipelines: bool = typer.Option(False, "--list-pipelines", help="list the pipelines and exit"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """Evaluate retrieval pipelines on BEIR, HotpotQA or TAT-QA and write a report."""
    if list_pipelines:
        from retrieval.pipeline import PIPELINES

        for spec in PIPELINES.values():
            print(f"{spec.name}\t{spec.description}")
        return

    from eval.datasets import DatasetError, load_dataset, parse_spec
    from retrieval.pipeline import UnknownPipeline, get_pipeline

    if not dataset:
        _fail("--dataset KIND:PATH is required (KIND: beir, hotpotqa, tatqa)")
    if not pipeline:
        _fail("give at least one --pipeline (see --list-pipelines)")
    if out is None:
        _fail("--out DIR is required")
    pipelines = list(dict.fromkeys(pipeline))
    try:
        for name in pipelines:
            get_pipeline(name)
    except UnknownPipeline as exc:
        _fail(exc.args[0])
    grid = None
    if sweep:
        from eval.sweep import SweepError, SweepGrid

        if len(pipelines) != 1:
            _fail("a sweep runs one --pipeline")
        if unanswerable_from:
            _fail("--unanswerable-from is not part of a sweep")
        try:
            grid = SweepGrid.parse(sweep, pipelines[0])
        except SweepError as exc:
            _fail(str(exc))
    try:
        kind, path = parse_spec(dataset)
        ds = load_dataset(kind, path, split)
        other = None
        if unanswerable_from:
            other_spec, _, other_split = (
                unanswerable_from.rpartition("@") if "@" in unanswerable_from else (unanswerable_from, "", "")
            )
            other = load_dataset(*parse_spec(other_spec), other_split or None)
    except DatasetError as exc:
        _fail(str(exc))

    from eval.harness import run_eval
    from indexing.embed import ModelNotFound
    from indexing.store.base import StoreMismatch
    from service.engine import RagService, UnknownGenerator
    from service.settings import Settings

    values: dict[str, Any] = {}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if generator is not None:
        values["generator"] = generator
    from pydantic import ValidationError

    from service.settings import invalid_settings_message

    try:
        settings = Settings(**values)
    except ValidationError as exc:  # SPANRAG_TOP_K=0: a message, not a traceback
        _fail(invalid_settings_message(exc))
    rag = RagService(settings)
    try:
        rag.generator  # noqa: B018 (a cached property, built here for its side effect)
    except UnknownGenerator as exc:
        _fail(str(exc))
    command = "spanrag eval " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    if command and sys.argv[1:2] == ["eval"]:
        command = "spanrag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"{ds.name} ({ds.split}): {len(ds.queries)} queries; pipelines: {', '.join(pipelines)}")
    if grid is not None:
        _sweep(rag, ds, pipelines[0], grid, folds, objective, max_context_tokens, out, limit, not no_progress)
        return
    try:
        results = run_eval(
            rag,
            ds,
            pipelines,
            out,
            limit=limit,
            progress=not no_progress,
            command=command,
            log=lambda m: console.print(m, highlight=False),
            unanswerable=other,
        )
    except (DatasetError, StoreMismatch, ModelNotFound) as exc:
        _fail(str(exc))
    finally:
        rag.close()
    from eval.report import markdown_table

    print(markdown_table(results["pipelines"]), flush=True)
    console.print(f"wrote {out}/results.json, run.*.json, report.md, plots/")


def _sweep(rag, ds, pipeline, grid, folds, objective, max_context_tokens, out, limit, progress) -> None:
    from eval.datasets import DatasetError
    from eval.harness import METRIC_ORDER
    from eval.sweep import Objective, SweepError, run_sweep
    from indexing.embed import ModelNotFound
    from indexing.store.base import StoreMismatch

    metric = objective or ("answer_in_context" if any(q.context_answers for q in ds.queries) else "ndcg@10")
    if metric not in METRIC_ORDER or metric.startswith(("n_", "context_tokens", "latency")):
        _fail(f"--objective {metric}: not a quality metric ({', '.join(METRIC_ORDER[:12])})")
    try:
        result = run_sweep(
            rag,
            ds,
            pipeline,
            grid,
            Objective(metric, max_context_tokens),
            out,
            folds=folds,
            limit=limit,
            progress=progress,
            log=lambda m: console.print(m, highlight=False),
        )
    except (SweepError, DatasetError, StoreMismatch, ModelNotFound) as exc:
        _fail(str(exc))
    finally:
        rag.close()
    print((out / "sweep.md").read_text(), flush=True)
    chosen = ", ".join(f"{k}={v}" for k, v in result.in_sample["params"].items())
    console.print(f"would pick {chosen}; wrote {out}/sweep.json, sweep.md")


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(eval_command)
    app()


if __name__ == "__main__":
    main()
