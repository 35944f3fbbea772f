"""The ``spanrag`` command line: ingest, delete, query, serve, collections, eval.

spanrag ingest samples/ --collection demo
spanrag query "What does the context bubble do?" --collection demo
spanrag serve --port 8000
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from eval.cli import eval_command
from eval.get_datasets import datasets_command

if TYPE_CHECKING:
    from app.keys import Scope

# Commands import what they use when they run: `spanrag collections`, `keys` and `--help`
# start without loading torch, FAISS or the retrieval stack.

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="spanrag: span-level RAG service")
console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="data directory (default: $SPANRAG_DATA_DIR or ./.spanrag)")
CollectionOpt = typer.Option(..., "--collection", "-c", help="collection name")


def settings_for(data_dir: Path | None, **overrides):
    """The settings, with ``overrides`` (CLI flags) on top; an invalid ``SPANRAG_*`` value
    (``SPANRAG_TOP_K=0``) is an error message and exit code 2, not a traceback."""
    from pydantic import ValidationError

    from service.settings import Settings, invalid_settings_message

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)
    except ValidationError as exc:
        fail(invalid_settings_message(exc), 2)


RETRIEVAL_FLAGS = {
    "top_k": "--top-k",
    "budget_tokens": "--budget-tokens",
    "compress_budget_tokens": "--compress-tokens",
}


def retrieval_overrides(**values) -> dict:
    """The retrieval flags given, validated by the one override model every path uses
    (``retrieval.params.RetrievalOverrides``); an out-of-range value exits with code 2."""
    from pydantic import ValidationError

    from retrieval.params import RetrievalOverrides

    try:
        return RetrievalOverrides(**{k: v for k, v in values.items() if v is not None}).overrides()
    except ValidationError as exc:
        problems = "; ".join(
            f"{RETRIEVAL_FLAGS.get(str(e['loc'][0]), e['loc'][0])} {e['input']!r}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid option {problems}", 2)


def make_service(data_dir: Path | None, **overrides):
    from service.engine import RagService

    return RagService(settings_for(data_dir, **overrides))


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


class RichIngestProgress:
    """Shows a bar for files, and one for documents inside a large file, each with its
    time left; the files bar also counts spans written and their rate."""

    COLUMNS = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )

    def __init__(self, progress: Progress, clock: Callable[[], float] = time.perf_counter):
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.file_task = progress.add_task("files", total=None, rate="")
        self.doc_task: TaskID | None = None

    def files(self, done: int, total: int) -> None:
        self.progress.update(self.file_task, completed=done, total=total)

    def spans(self, written: int) -> None:
        seconds = max(self.clock() - self.started, 1e-9)
        self.progress.update(self.file_task, rate=f"{written:,} spans · {written / seconds:,.0f} spans/s")

    def documents(self, done: int, total: int) -> None:
        if self.doc_task is None:
            self.doc_task = self.progress.add_task("documents", total=total, rate="")
        self.progress.update(self.doc_task, completed=done, total=total)
        if done >= total:
            self.progress.remove_task(self.doc_task)
            self.doc_task = None


@cli.command()
def ingest(
    paths: list[Path] = typer.Argument(
        ..., help="files or folders (Markdown, HTML, text, PDF, CSV, BEIR corpus.jsonl)"
    ),
    collection: str = CollectionOpt,
    data_dir: Path | None = DataDir,
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Ingest files and folders; unchanged files are skipped, changed ones replaced. A file's
    document id is its path relative to the working directory, or, outside it, relative to
    the parent of the path named here (``../notes`` gives ``notes/a.md``)."""
    from indexing.embed import ModelNotFound
    from indexing.store.base import InvalidCollectionName, StoreMismatch

    rag = make_service(data_dir)
    try:
        with Progress(*RichIngestProgress.COLUMNS, console=console, transient=True, disable=json_out) as progress:
            report = rag.ingest_paths(collection, paths, RichIngestProgress(progress))
    except (StoreMismatch, ModelNotFound, InvalidCollectionName) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(report.as_dict() | {"doc_ids": len(report.doc_ids)}, indent=2))
    else:
        table = Table(title=f"ingest into {collection!r}", show_header=False)
        for name in ("added", "updated", "unchanged", "removed"):
            table.add_row(name, str(getattr(report, name)))
        table.add_row("failed", str(len(report.failed)))
        table.add_row("spans written", str(report.spans))
        if report.token_spans:
            table.add_row("token vectors", f"{report.token_spans} spans")
        table.add_row("seconds", f"{report.seconds:.2f}")
        stdout_console().print(table)
        for failure in report.failed:
            console.print(f"[red]failed[/] {failure.source}: {failure.reason}")
    if report.failed:
        raise typer.Exit(2)


@cli.command()
def delete(
    doc_id: str = typer.Argument(..., help="document id (as shown by ingest or GET /documents)"),
    collection: str = CollectionOpt,
    data_dir: Path | None = DataDir,
) -> None:
    """Remove a document, its spans and vectors everywhere."""
    from indexing.store.base import CollectionNotFound

    rag = make_service(data_dir)
    try:
        removed = rag.delete_document(collection, doc_id)
    except CollectionNotFound:
        fail(f"collection {collection!r} does not exist")
    if not removed:
        fail(f"document {doc_id!r} not found in {collection!r}")
    stdout_console().print(f"deleted {doc_id}")


@cli.command()
def query(
    question: str = typer.Argument(..., help="the question"),
    collection: str = CollectionOpt,
    data_dir: Path | None = DataDir,
    pipeline: str | None = typer.Option(None, help="retrieval pipeline (default: the service's)"),
    top_k: int | None = typer.Option(None, "--top-k", help="most spans in the context (1 to 200)"),
    budget_tokens: int | None = typer.Option(None, "--budget-tokens", help="context token budget (1 to 100000)"),
    compress_tokens: int | None = typer.Option(
        None, "--compress-tokens", help="prune the selected context to this many tokens (sentence level; 1 to 100000)"
    ),
    trace: bool = typer.Option(False, help="show every candidate's scores and fate (a table, or in --json)"),
    json_out: bool = typer.Option(False, "--json", help="print the same object as the HTTP endpoint"),
) -> None:
    """Answer a question with numbered citations."""
    from indexing.store.base import CollectionNotFound
    from retrieval.pipeline import UnknownPipeline

    if not question.strip():
        fail("the question is empty")
    overrides = retrieval_overrides(
        top_k=top_k,
        budget_tokens=budget_tokens,
        compress_budget_tokens=compress_tokens,
        compression="sentence" if compress_tokens is not None else None,
    )
    rag = make_service(data_dir)
    try:
        rag.require_collection(collection)
        rag.encoder.dim  # noqa: B018  # load the model first, so timings_ms shows the query, not start-up
        out = rag.query(collection, question, pipeline, overrides, trace=trace)
    except CollectionNotFound:
        fail(f"collection {collection!r} does not exist; ingest into it first")
    except UnknownPipeline as exc:
        fail(exc.args[0])
    if json_out:  # the HTTP endpoint's answer object
        print(json.dumps(out.as_dict(), indent=2, ensure_ascii=False))
        return
    stdout = stdout_console()
    stdout.print(out.answer.text, markup=False, highlight=False)
    stdout.print()
    for c in out.answer.citations:
        where = " > ".join(c.heading_path) or c.doc_id
        stdout.print(f"[{c.id}] {c.doc_id} [{c.start}:{c.end}] {where}", markup=False, highlight=False)
    stdout.print(
        f"\n{out.sources.context_tokens} context tokens, {out.answer.timings_ms['total_ms']:.0f} ms",
        style="dim",
    )
    if trace:
        stdout.print(trace_table(out.sources.trace or []))


def stdout_console() -> Console:
    """Standard output: wrapped to the terminal on a terminal, and never wrapped when piped."""
    return Console(soft_wrap=not sys.stdout.isatty())


def trace_table(trace: list) -> Table:
    """The selection trace (``retrieval.types.TraceEntry``), one candidate a row, best first."""
    table = Table(title="trace")
    for column in ("rank", "span", "via", "tokens", "scores", "decision", "why"):
        table.add_column(column, overflow="fold")
    for entry in sorted(trace, key=lambda e: e.rank):
        scores = " ".join(f"{name}={value:.3f}" for name, value in entry.scores.items())
        table.add_row(
            str(entry.rank), entry.span_id, entry.source, str(entry.n_tokens), scores, entry.decision, entry.reason
        )
    return table


@cli.command()
def documents(
    collection: str = CollectionOpt,
    data_dir: Path | None = DataDir,
    json_out: bool = typer.Option(False, "--json", help="print the list as JSON"),
) -> None:
    """List a collection's documents: id, source kind, spans, title."""
    from indexing.ingest import source_kind

    rag = make_service(data_dir)
    if not rag.store.has_collection(collection):
        fail(f"collection {collection!r} does not exist")
    rows = []
    for doc_id in sorted(rag.store.document_hashes(collection)):
        doc = rag.store.get_document(collection, doc_id)
        if doc is not None:
            rows.append(
                {
                    "id": doc_id,
                    "source": source_kind(doc.source),
                    "title": doc.title,
                    "spans": rag.store.count_spans(collection, doc_id),
                }
            )
    if json_out:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("id", "source", "spans", "title", title=f"{len(rows)} documents in {collection!r}")
    for row in rows:
        table.add_row(row["id"], row["source"], str(row["spans"]), row["title"])
    stdout_console().print(table)


collections_cli = typer.Typer(
    no_args_is_help=False, invoke_without_command=True, help="List collections (no subcommand), or delete one."
)
cli.add_typer(collections_cli, name="collections")


@collections_cli.callback()
def collections(ctx: typer.Context, data_dir: Path | None = DataDir) -> None:
    """List collections with their document and span counts."""
    if ctx.invoked_subcommand is not None:
        return
    rag = make_service(data_dir)
    for name in rag.store.list_collections():
        stats = rag.store.collection_stats(name)
        stdout_console().print(
            f"{name}\t{stats['documents']} documents\t{stats['spans']} spans\t{stats['model']}"
            f"\t{describe_freshness(stats.get('freshness') or {})}",
            markup=False,
            highlight=False,
        )


def describe_freshness(freshness: dict) -> str:
    """One line of a collection's segments for ``spanrag collections``.

    >>> describe_freshness({"segments": 3, "pending_deltas": 2, "delta_spans": 40, "tombstones": 5,
    ...                     "last_merge_age_s": 75.2, "merging": False})
    'segments 3 (2 deltas, 40 spans), 5 tombstones, last merge 75s ago'
    """
    if not freshness:
        return ""
    if "pending_deltas" not in freshness:  # Qdrant: its own segments and optimizer
        keys = ("segments", "status", "optimizer", "points", "indexed_vectors")
        return ", ".join(f"{k.replace('_', ' ')} {freshness[k]}" for k in keys if k in freshness)
    if not freshness.get("segments"):
        return "no index built yet"
    text = (
        f"segments {freshness['segments']} ({freshness['pending_deltas']} deltas, {freshness['delta_spans']} spans),"
        f" {freshness['tombstones']} tombstones, last merge {freshness['last_merge_age_s']:.0f}s ago"
    )
    return text + (", merging" if freshness.get("merging") else "")


@collections_cli.command("delete")
def collections_delete(
    name: str = typer.Argument(..., help="the collection to delete, with all its documents"),
    data_dir: Path | None = DataDir,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
) -> None:
    """Delete a collection: documents, spans, vectors, indexes and graph."""
    rag = make_service(data_dir)
    if not rag.store.has_collection(name):
        fail(f"collection {name!r} does not exist")
    if not yes and not typer.confirm(f"delete collection {name!r} and everything in it?", err=True):
        fail("nothing deleted")
    rag.delete_collection(name)
    stdout_console().print(f"deleted collection {name}")


keys_cli = typer.Typer(no_args_is_help=True, help="API keys: who may read, write or administer which collection.")
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("create")
def keys_create(
    collection: str = typer.Option(..., "--collection", "-c", help="the collection the key opens, or '*' for all"),
    scope: str = typer.Option(..., "--scope", help="read | write | admin"),
    name: str = typer.Option("", "--name", help="a label for `keys list`"),
    data_dir: Path | None = DataDir,
    if_none: bool = typer.Option(False, "--if-none", help="only when no active key exists (container start-up)"),
    out: Path | None = typer.Option(None, "--out", help="write the key to this file (mode 600) instead of printing it"),
) -> None:
    """Make a key and print it once (only its hash is kept). The server needs keys from then on."""
    import os

    from app.keys import KeyRequestError, KeyStore
    from indexing.store.base import InvalidCollectionName

    keys = KeyStore(settings_for(data_dir).data_dir)
    if if_none and keys.has_active_keys():
        console.print("an active key exists: none made")
        return
    try:
        made = keys.create(collection, cast("Scope", scope), name)  # create() checks the scope
    except (KeyRequestError, InvalidCollectionName) as exc:
        fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(made.secret + "\n")
        console.print(f"key {made.key.key_id}: {made.key.scope} on {made.key.collection!r}, written to {out}")
        return
    console.print(f"key {made.key.key_id}: {made.key.scope} on {made.key.collection!r}; shown once, keep it now:")
    print(made.secret)


@keys_cli.command("list")
def keys_list(
    data_dir: Path | None = DataDir,
    all_keys: bool = typer.Option(False, "--all", help="include revoked keys"),
) -> None:
    """The keys (ids, collections, scopes; never the keys themselves)."""
    import datetime

    from app.keys import KeyStore

    table = Table("id", "collection", "scope", "name", "created", "revoked")
    for key in KeyStore(settings_for(data_dir).data_dir).list(include_revoked=all_keys):
        when = lambda t: "" if t is None else datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")  # noqa: E731
        table.add_row(key.key_id, key.collection, key.scope, key.name, when(key.created), when(key.revoked))
    stdout_console().print(table)


@keys_cli.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="the key's id (keys list) or the key itself"),
    data_dir: Path | None = DataDir,
) -> None:
    """Revoke a key; a running server refuses it from its next request on."""
    from app.keys import KeyRequestError, KeyStore

    try:
        key = KeyStore(settings_for(data_dir).data_dir).revoke(key_id)
    except KeyRequestError as exc:
        fail(str(exc))
    stdout_console().print(f"revoked {key.key_id} ({key.scope} on {key.collection!r})")


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default 8000)"),
    data_dir: Path | None = DataDir,
    allow_open: bool = typer.Option(
        False, "--allow-open", help="serve without API keys on a non-loopback address (anyone may read and write)"
    ),
) -> None:
    """Start the HTTP service (OpenAPI docs at /docs). Without API keys it serves loopback only."""
    import uvicorn

    from app.api import create_app
    from app.keys import KeyStore
    from app.observability import configure_logging
    from app.security import is_loopback
    from service.engine import UnknownGenerator

    rag = make_service(data_dir, host=host, port=port, allow_open=allow_open or None)
    settings = rag.settings
    n_keys = len(KeyStore(settings.data_dir).list()) if (settings.data_dir / KeyStore.FILE_NAME).exists() else 0
    if n_keys:
        console.print(f"{n_keys} API key(s): every request needs one (spanrag keys list)")
    elif is_loopback(settings.host):
        console.print("[yellow]no API keys: serving OPEN on loopback only[/] (spanrag keys create makes one)")
    elif settings.allow_open:
        console.print(
            f"[bold red]no API keys: serving OPEN on {settings.host}[/]: anyone who reaches the port"
            " may read, replace and delete documents"
        )
    else:
        fail(
            f"refusing to serve on {settings.host} without API keys: create one (spanrag keys create"
            " --collection '*' --scope admin) or pass --allow-open"
        )
    configure_logging(json_logs=settings.json_logs)
    try:
        app = create_app(service=rag)
    except UnknownGenerator as exc:
        fail(str(exc))
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


cli.command("eval")(eval_command)
cli.command("datasets")(datasets_command)


def main() -> None:  # console-script entry point
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
