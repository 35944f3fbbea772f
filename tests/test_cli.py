"""The real ``spanrag`` console script, run as a subprocess.

Every command that needs the embedding model pays a few seconds of start-up, so the
module shares one workspace: the first ingest (samples plus one bad file) is run once
and several tests read its result.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexing.store.sqlite_faiss import SqliteFaissStore

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "demo"
MERCURY = "How many days does Mercury take to orbit the Sun?"
SAMPLE_IDS = [
    "samples/coffee-prices.csv",
    "samples/solar-system.html",
    "samples/spanrag-guide.md",
    "samples/tea-notes.txt",
]
HTTP_QUERY_KEYS = {"answer", "abstained", "citations", "context", "usage", "timings_ms", "pipeline", "generator"}


def spanrag_executable() -> str:
    beside = Path(sys.executable).with_name("spanrag")
    found = str(beside) if beside.exists() else shutil.which("spanrag")
    assert found, "the spanrag console script is not installed"
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory holding a copy of samples/ (so doc ids are 'samples/<file>')
    and one binary junk file next to it."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(SAMPLES, root / "samples")
    (root / "junk.txt").write_bytes(random.Random(7).randbytes(3000))
    return root


@pytest.fixture(scope="module")
def spanrag(workspace):
    """``spanrag(*args)`` starts the console script in the workspace; ``.result()`` waits."""
    exe = spanrag_executable()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPANRAG_")}
    env["COLUMNS"] = "200"  # keep rich's tables and messages on one line each

    class Run:
        def __init__(self, args: tuple[str, ...]):
            self.args = [exe, *args]
            self.proc = subprocess.Popen(
                self.args, cwd=workspace, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            self._done: subprocess.CompletedProcess | None = None

        def result(self) -> subprocess.CompletedProcess:
            if self._done is None:
                try:
                    out, err = self.proc.communicate(timeout=300)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    raise
                self._done = subprocess.CompletedProcess(self.args, self.proc.returncode, out, err)
            return self._done

    return lambda *args: Run(args)


@pytest.fixture(scope="module")
def first_ingest(spanrag):
    return spanrag("ingest", "samples", "junk.txt", "--collection", C, "--data-dir", "data").result()


@pytest.fixture(scope="module")
def read_only_runs(first_ingest, spanrag):
    """Commands that only read the collection, started together: each spends most of its
    time importing the model libraries, which overlaps well."""
    data = ("--collection", C, "--data-dir", "data")
    runs = {
        "reingest": spanrag("ingest", "samples", *data),
        "query-json": spanrag("query", MERCURY, *data, "--json"),
        "query": spanrag("query", MERCURY, *data, "--top-k", "3"),
        "query-trace": spanrag("query", MERCURY, *data, "--trace"),
        "documents": spanrag("documents", *data, "--json"),
        "collections": spanrag("collections", "--data-dir", "data"),
    }
    return {name: run.result() for name, run in runs.items()}


def summary_count(output: str, row: str) -> int:
    match = re.search(rf"\b{row}\b\W+(\d+)", output)
    assert match, f"no {row!r} row in:\n{output}"
    return int(match.group(1))


def assert_clean_failure(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr


# -- ingest ----------------------------------------------------------------------------------


def test_ingest_summary_shows_added_documents_and_spans(first_ingest):
    out = first_ingest.stdout
    assert summary_count(out, "added") == 4
    assert summary_count(out, "updated") == 0
    assert summary_count(out, "unchanged") == 0
    assert summary_count(out, "failed") == 1
    assert summary_count(out, "spans written") > 0
    assert re.search(r"seconds\W+\d+\.\d+", out)


def test_a_bad_file_exits_2_and_is_named_with_its_reason(first_ingest):
    assert first_ingest.returncode == 2, first_ingest.stderr
    assert re.search(r"junk\.txt: binary", first_ingest.stderr), first_ingest.stderr
    assert "Traceback" not in first_ingest.stderr


def test_the_rest_of_a_batch_with_a_bad_file_is_ingested(first_ingest, workspace):
    store = SqliteFaissStore(workspace / "data")
    try:
        assert store.collection_stats(C)["documents"] == 4
        for doc_id in SAMPLE_IDS:
            assert store.count_spans(C, doc_id) > 0
    finally:
        store.close()


def test_reingesting_unchanged_files_reports_them_unchanged(read_only_runs):
    result = read_only_runs["reingest"]
    assert result.returncode == 0, result.stderr
    assert summary_count(result.stdout, "unchanged") == 4
    assert summary_count(result.stdout, "added") == 0
    assert summary_count(result.stdout, "spans written") == 0


# -- query -----------------------------------------------------------------------------------


def test_query_json_prints_the_same_object_as_the_service(read_only_runs, make_rag, workspace):
    result = read_only_runs["query-json"]
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == HTTP_QUERY_KEYS
    assert "88 days" in out["answer"]
    assert out["citations"][0]["doc_id"] == "samples/solar-system.html"
    # the HTTP endpoint returns RagService.query verbatim: compare with it in-process
    expected = make_rag(workspace / "data").query(C, MERCURY).as_dict()
    assert set(out) == set(expected)
    assert out["answer"] == expected["answer"]
    assert out["citations"] == expected["citations"]
    assert [c["span_id"] for c in out["context"]] == [c["span_id"] for c in expected["context"]]
    assert [set(c) for c in out["context"]] == [set(c) for c in expected["context"]]
    assert out["usage"] == expected["usage"]
    assert set(out["timings_ms"]) == set(expected["timings_ms"])


def test_plain_query_prints_the_answer_with_numbered_citations(read_only_runs):
    result = read_only_runs["query"]
    assert result.returncode == 0, result.stderr
    assert "88 days" in result.stdout and "[1]" in result.stdout
    assert re.search(
        r"^\[1\] samples/solar-system\.html \[\d+:\d+\] The inner planets > Orbits", result.stdout, re.MULTILINE
    ), result.stdout
    assert "context tokens" in result.stdout


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_the_document(read_only_runs, spanrag, workspace):
    result = spanrag("delete", "samples/tea-notes.txt", "--collection", C, "--data-dir", "data").result()
    assert result.returncode == 0, result.stderr
    assert "deleted samples/tea-notes.txt" in result.stdout
    store = SqliteFaissStore(workspace / "data")
    try:
        assert store.get_document(C, "samples/tea-notes.txt") is None
        assert store.count_spans(C, "samples/tea-notes.txt") == 0
        assert store.collection_stats(C)["documents"] == 3
    finally:
        store.close()


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["query", "What is a span?"],
        ["delete", "samples/tea-notes.txt"],
    ],
    ids=["query", "delete"],
)
def test_unknown_collection_fails_with_a_clear_message(spanrag, command):
    result = spanrag(*command, "--collection", "ghost", "--data-dir", "data").result()
    assert_clean_failure(result)
    assert "collection 'ghost' does not exist" in result.stderr


def test_an_unsafe_collection_name_is_refused_before_anything_is_written(spanrag, workspace):
    result = spanrag("ingest", "samples", "--collection", "../escape", "--data-dir", "data").result()
    assert_clean_failure(result)
    assert "invalid collection name" in result.stderr
    assert not (workspace / "data" / "escape").exists()


def test_an_empty_question_fails_with_a_clear_message(spanrag):
    result = spanrag("query", "  ", "--collection", C, "--data-dir", "data").result()
    assert_clean_failure(result)
    assert "question is empty" in result.stderr


def test_help_lists_the_commands(spanrag):
    result = spanrag("--help").result()
    assert result.returncode == 0
    for command in ("ingest", "query", "delete", "serve", "documents", "collections", "keys"):
        assert command in result.stdout


def test_documents_lists_the_ids_with_their_source_and_spans(read_only_runs):
    result = read_only_runs["documents"]
    assert result.returncode == 0, result.stderr
    listed = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(SAMPLE_IDS) <= set(listed)
    assert all(row["source"] == "file" and row["spans"] > 0 for row in listed.values())


def test_collections_lists_each_collection_with_its_segments(read_only_runs):
    result = read_only_runs["collections"]
    assert result.returncode == 0, result.stderr
    [line] = [row for row in result.stdout.splitlines() if row.split()[:1] == [C]]  # the console expands tabs
    assert re.search(
        r"\d+ documents\s+\d+ spans\s+.*\s+segments \d+ \(\d+ deltas, \d+ spans\), \d+ tombstones, last merge \d+s ago",
        line,
    ), line


def test_trace_prints_a_table_without_json_and_piped_output_is_not_wrapped(read_only_runs):
    result = read_only_runs["query-trace"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "trace" in out and "taken" in out and "dropped" in out
    answer = out.split("\n\n", 1)[0]
    assert "\n" not in answer.strip() or len(max(answer.splitlines(), key=len)) > 80


def test_files_outside_the_working_directory_get_ids_relative_to_the_named_path(spanrag, workspace, tmp_path):
    outside = tmp_path / "elsewhere" / "notes"
    outside.mkdir(parents=True)
    (outside / "kites.md").write_text("# Kites\n\nThe red kite nests in tall oaks.\n")
    data = ("--collection", "outside", "--data-dir", "data")
    ingested = spanrag("ingest", str(outside), *data, "--json").result()
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["added"] == 1
    listed = json.loads(spanrag("documents", *data, "--json").result().stdout)
    assert [row["id"] for row in listed] == ["notes/kites.md"]
    assert spanrag("delete", "notes/kites.md", *data).result().returncode == 0


def test_commands_without_a_model_start_fast(spanrag):
    import time

    for args in (("--help",), ("keys", "list", "--data-dir", "data"), ("collections", "--data-dir", "data")):
        started = time.monotonic()
        result = spanrag(*args).result()
        assert result.returncode == 0, result.stderr
        # generous: the machine runs other tests too; loading the model takes several seconds
        assert time.monotonic() - started < 4, args
