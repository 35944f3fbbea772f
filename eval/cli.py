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


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(eval_command)
    app()


if __name__ == "__main__":
    main()
