"""Reliability over real processes: mixed load against one server, and SIGKILL in the middle
of writes (the HTTP server with uploads in flight, the ``spanrag ingest`` CLI on a folder).

* Load: ``bench.load.run_load`` for ``SPANRAG_LOAD_SECONDS`` (default 60) with 5 workers
  against a server with API keys (a write key for the collection; the rate limit is off so
  the server, not the limiter, sets the pace). No 5xx, no consistency violation, some of
  every kind of request answered 2xx; the report (requests/s, p50/p95 per kind) is printed
  (``pytest -s``) and written to ``load.json`` in the test's temporary directory.
* Crash, HTTP: uploads (JSON and multipart) from three threads, the server killed with
  SIGKILL (twice after a seeded random delay, once right after a write is committed in
  SQLite, before its 201), restarted on the same data directory; three rounds.
  After each restart, before any further write to the collection: every acknowledged (201)
  document reads back exactly as a fresh ingest of the same payload does (text, title,
  metadata, span count) and is retrieved by its marker; a document whose upload was cut off
  is either absent or just as complete; nothing else is there; every paragraph has its
  token vectors and the graph holds every document at its stored version.
* Crash, CLI: ``spanrag ingest`` of a generated folder (40 files) killed with SIGKILL at
  points found by watching the database (after 8 writes; during the token backfill; then,
  with five files changed and two deleted, during the graph sync), then rerun to completion:
  every file's document once with its current text only, spans, token vectors, graph,
  source records and search indexes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from app.keys import KeyStore
from app.server_process import SpanragServer
from bench.load import FILLER, KINDS, MARKER_RE, run_load, upload_samples
from indexing.graph import GraphIndex
from indexing.ingest import content_hash
from indexing.store.sqlite_faiss import SqliteFaissStore

LOAD_SECONDS = float(os.environ.get("SPANRAG_LOAD_SECONDS", "60"))
LOAD_WORKERS = 5
TOKEN_GRANULARITIES = ["paragraph", "row"]  # the server's default SPANRAG_TOKEN_GRANULARITIES
NO_RATE_LIMIT = {"SPANRAG_RATE_LIMIT_PER_MINUTE": "0"}


def marker(rng: random.Random) -> str:
    return "zq" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=10))


def note_markdown(title: str, mark: str, rng: random.Random) -> str:
    return (
        f"# {title}\n\nThe marker {mark} opens this note. {' '.join(rng.sample(FILLER, 2))}\n\n"
        f"## Details\n\nThe second paragraph names {mark} again. {' '.join(rng.sample(FILLER, 3))}\n"
    )


def store_problems(data_dir: Path, collection: str, indexes: bool) -> tuple[list[str], dict[str, str]]:
    """What is wrong with the stored collection as a whole, and ``{doc_id: text}``.

    Always (SQLite reads only, safe beside a running server): every document has spans,
    every paragraph/row span its token vectors and no token vector outlives its span
    (tests/test_token_vectors.py), the graph holds exactly the stored documents at their
    stored versions (``GraphIndex.stale_documents``/``orphan_documents``, as ``sync_graph``
    repairs them). With ``indexes`` (no other process may use the data dir): the FAISS index
    finds each document span by its own vector and BM25 finds it by each marker in its text
    (as tests/test_ingest.py checks the search indexes)."""
    store = SqliteFaissStore(data_dir)
    graph = GraphIndex(data_dir / "graph.sqlite3")
    try:
        problems: list[str] = []
        if not store.has_collection(collection):
            return [f"collection {collection!r} is missing"], {}
        hashes = store.document_hashes(collection)
        texts = {d: store.get_document(collection, d).text for d in hashes}
        empty = [d for d in hashes if store.count_spans(collection, d) == 0]
        if empty:
            problems.append(f"documents without spans: {empty}")
        missing = store.spans_missing_token_vectors(collection, TOKEN_GRANULARITIES)
        if missing:
            problems.append(
                f"{len(missing)} paragraph/row spans have no token vectors, in documents"
                f" {sorted({s.doc_id for s in missing})}"
            )
        orphans = store._query("SELECT COUNT(*) FROM token_vectors WHERE row_id NOT IN (SELECT row_id FROM spans)")[0][
            0
        ]
        if orphans:
            problems.append(f"{orphans} token vector rows without their span")
        stale = graph.stale_documents(collection, hashes)
        if stale:
            problems.append(f"graph lacks or holds another version of {len(stale)} documents: {stale}")
        orphaned = graph.orphan_documents(collection, set(hashes))
        if orphaned:
            problems.append(f"graph holds documents the store does not: {orphaned}")
        if indexes:
            for doc_id, text in texts.items():
                top = next((s for s in store.document_spans(collection, doc_id) if s.granularity == "document"), None)
                if top is None:
                    problems.append(f"{doc_id}: no document span")
                    continue
                vector = store.get_vectors(collection, [top.id])[0]
                hits = store.dense_search(collection, vector, 1, ["document"])
                if not hits or hits[0].span_id != top.id:
                    problems.append(f"{doc_id}: the dense index does not find its document span by its own vector")
                for mark in set(MARKER_RE.findall(text)):
                    if top.id not in {h.span_id for h in store.lexical_search(collection, mark, 5, "document")}:
                        problems.append(f"{doc_id}: BM25 does not find it by its marker {mark}")
        return problems, texts
    finally:
        store.close()
        graph.close()


def kill_hard(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


# -- load ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    keys = KeyStore(root / "data")
    write = keys.create("load", "write", name="load test")
    keys.create("*", "admin", name="unused admin")
    headers = {"Authorization": f"Bearer {write.secret}"}
    with SpanragServer(root / "data", env=NO_RATE_LIMIT, cwd=root, access_log=False) as server:
        upload_samples(server.base_url, "load", headers)
        yield server, headers, root


def test_mixed_load_has_no_server_error_and_no_consistency_violation(keyed_server):
    server, headers, root = keyed_server
    report = run_load(server.base_url, LOAD_SECONDS, LOAD_WORKERS, headers, collection="load", seed=11)
    out = root / "load.json"
    out.write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    print(f"\n{report.markdown()}\nreport: {out}")
    detail = (
        f"{json.dumps(report.error_samples[:5], indent=1)}\n{json.dumps(report.violation_samples[:10], indent=1)}\n"
        f"server log (tail):\n{server.output(6000)}"
    )
    assert report.server_errors == 0, detail
    assert report.transport_errors == 0, detail
    assert report.violations == 0, detail
    for kind in KINDS:
        assert report.kinds[kind]["ok"] > 0, f"no {kind} request succeeded: {report.kinds[kind]}"
    assert report.verification.get("retrieve_found", 0) > 0, report.verification
    assert report.verification.get("live", 0) > 0 and report.verification.get("deleted", 0) > 0, report.verification


# -- SIGKILL while uploads are in flight -------------------------------------------------------

C = "crash"


@dataclass
class Upload:
    doc_id: str
    mark: str
    text: str
    multipart: bool
    status: int | None = None  # None: no answer (the server died first) or not sent
    sent: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.status == 201

    def send(self, client: httpx.Client, collection: str) -> httpx.Response:
        path = f"/v1/collections/{collection}/documents"
        if self.multipart:
            return client.post(path, files={"file": ("note.md", self.text.encode())}, data={"doc_id": self.doc_id})
        return client.post(
            path,
            json={
                "id": self.doc_id,
                "text": self.text,
                "title": f"JSON {self.doc_id}",
                "format": "markdown",
                "metadata": {"marker": self.mark},
            },
        )


@dataclass
class CrashBook:
    uploads: dict[str, Upload] = field(default_factory=dict)
    reference: dict[str, dict] = field(default_factory=dict)  # doc id -> GET of a fresh ingest


def upload_until_dead(base_url: str, headers: dict, uploads: list[Upload]) -> None:
    """Send ``uploads`` one after another until the server stops answering."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=60, trust_env=False) as client:
        for upload in uploads:
            upload.sent = True
            try:
                response = upload.send(client, C)
            except httpx.HTTPError:
                return
            upload.status = response.status_code


def document(client: httpx.Client, collection: str, doc_id: str) -> httpx.Response:
    return client.get(f"/v1/collections/{collection}/documents/{quote(doc_id, safe='/')}")


def reference_of(client: httpx.Client, book: CrashBook, upload: Upload) -> dict:
    """The document as a fresh ingest of the same payload (into another collection) reads."""
    if upload.doc_id not in book.reference:
        response = upload.send(client, "reference")
        assert response.status_code == 201, response.text
        got = document(client, "reference", upload.doc_id)
        assert got.status_code == 200, got.text
        book.reference[upload.doc_id] = got.json()
    return book.reference[upload.doc_id]


def comparable(doc: dict) -> dict:
    return {k: doc.get(k) for k in ("id", "title", "text", "metadata", "n_spans", "source")}


def check_after_restart(server: SpanragServer, headers: dict, book: CrashBook) -> tuple[dict, list[str]]:
    """The checks of one restart (see module doc): counts for the round's summary, and the
    problems found (a 5xx fails at once)."""
    counts = {"acknowledged": 0, "cut_off_present": 0, "cut_off_absent": 0}  # of all uploads so far
    problems: list[str] = []
    # 1. the stored collection as a whole, before any further write
    structural, texts = store_problems(server.data_dir, C, indexes=False)
    problems += structural
    unknown = sorted(set(texts) - set(book.uploads))
    if unknown:
        problems.append(f"documents nobody uploaded: {unknown}")
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120, trust_env=False) as client:
        present = []
        for upload in book.uploads.values():
            if not upload.sent:
                continue
            got = document(client, C, upload.doc_id)
            assert got.status_code in (200, 404), (
                f"GET {upload.doc_id}: {got.status_code} {got.text}\n{server.output()}"
            )
            if got.status_code == 404:
                if upload.acknowledged:
                    problems.append(f"{upload.doc_id}: acknowledged (201) but gone after the restart")
                else:
                    counts["cut_off_absent"] += 1
                continue
            counts["acknowledged" if upload.acknowledged else "cut_off_present"] += 1
            present.append((upload, got.json()))
        # 2. each document that is there reads, and is retrieved, as a complete one
        for upload, _doc in present:
            response = client.post(
                f"/v1/collections/{C}/retrieve",
                json={"question": f"Which note names {upload.mark}?", "pipeline": "bm25"},
            )
            assert response.status_code == 200, f"{response.status_code} {response.text}\n{server.output()}"
            if upload.doc_id not in {s["doc_id"] for s in response.json()["spans"]}:
                problems.append(f"{upload.doc_id}: not retrieved by its marker {upload.mark}")
            response = client.post(
                f"/v1/collections/{C}/query", json={"question": f"What does the note on {upload.mark} say?"}
            )
            assert response.status_code == 200, f"{response.status_code} {response.text}\n{server.output()}"
        # 3. ... and exactly as a fresh ingest of its payload does (writes go to another collection)
        for upload, doc in present:
            expected = reference_of(client, book, upload)
            if comparable(doc) != comparable(expected):
                problems.append(
                    f"{upload.doc_id}: differs from a fresh ingest of its payload:"
                    f" {comparable(doc)} != {comparable(expected)}"
                )
    return counts, problems


def test_sigkill_during_uploads_loses_no_acknowledged_write_and_leaves_no_partial_document(tmp_path):
    rng = random.Random(20240607)
    keys = KeyStore(tmp_path / "data")
    headers = {"Authorization": f"Bearer {keys.create('*', 'write', name='crash test').secret}"}
    book = CrashBook()
    db = tmp_path / "data" / "spanrag.sqlite3"

    def commits() -> int:
        return read_int(db, "SELECT generation FROM collections WHERE name = ?", (C,))

    # when to kill: after a seeded random delay (twice), and right after a write is committed
    # (seen in SQLite), which lands between the commit and its 201: token vectors, index
    # refresh and graph sync still to do
    kill_points = [
        ("after_s", round(rng.uniform(2.0, 3.5), 2)),
        ("after_s", round(rng.uniform(3.5, 5.0), 2)),
        ("after_commits", rng.randint(2, 4)),
    ]
    server = SpanragServer(tmp_path / "data", env=NO_RATE_LIMIT, cwd=tmp_path, access_log=False).start()
    rounds = []
    try:
        for round_no, (kind, value) in enumerate(kill_points):
            lanes = []
            for lane in range(3):
                uploads = []
                for n in range(15):
                    mark = marker(rng)
                    doc_id = f"round{round_no}/lane{lane}/note-{n:02d}.md"
                    upload = Upload(doc_id, mark, note_markdown(f"Note {doc_id}", mark, rng), multipart=n % 2 == 1)
                    book.uploads[doc_id] = upload
                    uploads.append(upload)
                lanes.append(uploads)
            before = commits()
            began = time.monotonic()
            with ThreadPoolExecutor(len(lanes)) as pool:
                futures = [pool.submit(upload_until_dead, server.base_url, headers, lane) for lane in lanes]
                while time.monotonic() - began < 60:
                    if kind == "after_s" and time.monotonic() - began >= value:
                        break
                    if kind == "after_commits" and commits() >= before + value:
                        break
                    time.sleep(0.005)
                kill_hard(server._process)
                killed_at = time.monotonic() - began
                for future in futures:
                    future.result(timeout=120)
            log = server.output()
            server.stop()
            answered = {u.doc_id: u.status for lane in lanes for u in lane if u.status is not None}
            assert all(s == 201 for s in answered.values()), f"{answered}\n{log}"
            server = SpanragServer(tmp_path / "data", env=NO_RATE_LIMIT, cwd=tmp_path, access_log=False).start()
            counts, problems = check_after_restart(server, headers, book)
            rounds.append(
                {
                    "round": round_no,
                    "kill": f"{kind}={value}",
                    "killed_at_s": round(killed_at, 2),
                    "commits_before_kill": commits() - before,
                    **counts,
                    "problems": problems,
                }
            )
            print(f"\ncrash round {rounds[-1]}")
            if problems:
                print(f"-- log of the killed server (tail):\n{log[-2000:]}")
        # one more write: does it bring what the last restart left behind up to date?
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=120, trust_env=False) as client:
            mark = marker(rng)
            extra = Upload("after/next-write.md", mark, note_markdown("After the crashes", mark, rng), multipart=False)
            assert extra.send(client, C).status_code == 201
        after_next_write, _ = store_problems(tmp_path / "data", C, indexes=False)
        print(f"after one more write: {after_next_write or 'consistent'}")
    finally:
        server.stop()
    # the search indexes, with nothing else using the data directory
    final, _ = store_problems(tmp_path / "data", C, indexes=True)
    assert rounds[-1]["acknowledged"] > 0, rounds
    assert not any(r["problems"] for r in rounds) and not after_next_write and not final, (
        "\n".join(f"round {r['round']} ({r['kill']}): {p}" for r in rounds for p in r["problems"])
        + "".join(f"\nafter one more write: {p}" for p in after_next_write)
        + "".join(f"\nat the end: {p}" for p in final)
    )


# -- SIGKILL of `spanrag ingest` ---------------------------------------------------------------

CLI_C = "folder"
N_FILES = 40


def spanrag_executable() -> str:
    beside = Path(sys.executable).with_name("spanrag")
    found = str(beside) if beside.exists() else shutil.which("spanrag")
    assert found, "the spanrag console script is not installed"
    return found


def read_int(db: Path, sql: str, params: tuple = ()) -> int:
    """One number from a SQLite file read-only (0 while it or its table does not exist)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute(sql, params).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


class Watch:
    """Numbers of the data directory that an ingest moves, read while it runs."""

    def __init__(self, data: Path):
        self.db, self.graph = data / "spanrag.sqlite3", data / "graph.sqlite3"

    def generation(self) -> int:
        return read_int(self.db, "SELECT generation FROM collections WHERE name = ?", (CLI_C,))

    def token_rows(self) -> int:
        return read_int(self.db, "SELECT COUNT(*) FROM token_vectors")

    def graph_documents(self) -> int:
        return read_int(self.graph, "SELECT COUNT(*) FROM documents WHERE collection = ?", (CLI_C,))


def test_sigkilled_cli_ingest_completes_on_rerun_and_leaves_a_consistent_collection(tmp_path):
    rng = random.Random(4242)
    folder = tmp_path / "files"
    folder.mkdir()
    marks: dict[str, str] = {}
    old_marks: list[str] = []
    for n in range(N_FILES):
        name = f"files/note-{n:02d}.md"
        marks[name] = marker(rng)
        (tmp_path / name).write_text(note_markdown(f"Note {n}", marks[name], rng), encoding="utf-8")
    exe = spanrag_executable()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPANRAG_")}
    watch = Watch(tmp_path / "data")

    def run(kill_when=None, what: str = "") -> dict:
        """One ``spanrag ingest files``; ``kill_when(start)`` polled every 10 ms decides the SIGKILL."""
        with open(tmp_path / "cli.log", "w+") as log:
            proc = subprocess.Popen(
                [exe, "ingest", "files", "--collection", CLI_C, "--data-dir", "data", "--json"],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            began = time.monotonic()
            start = {
                "generation": watch.generation(),
                "token_rows": watch.token_rows(),
                "graph_documents": watch.graph_documents(),
            }
            deadline = time.monotonic() + 300
            killed = False
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    if kill_when is not None and kill_when(start):
                        time.sleep(rng.uniform(0, 0.05))
                        kill_hard(proc)
                        killed = True
                        break
                    time.sleep(0.01)
            finally:
                if proc.poll() is None:
                    kill_hard(proc)
            log.seek(0)
            output = log.read()
        result = {
            "what": what,
            "killed": killed,
            "returncode": proc.returncode,
            "seconds": round(time.monotonic() - began, 1),
            "generation": watch.generation(),
            "token_rows": watch.token_rows(),
            "graph_documents": watch.graph_documents(),
        }
        print(f"\ncli run: {result}")
        if kill_when is not None and not killed:
            print(f"(the kill point was not reached before the ingest finished)\n{output[-2000:]}")
        if not killed:
            assert proc.returncode == 0, output
            result["report"] = json.loads(output[output.index("{") :])
        # a killed ingest leaves a store that still opens and answers
        store = SqliteFaissStore(tmp_path / "data")
        try:
            if store.has_collection(CLI_C):
                store.collection_stats(CLI_C)
        finally:
            store.close()
        return result

    runs = [
        run(lambda s: watch.generation() >= s["generation"] + 8, "after 8 writes"),
        run(lambda s: watch.token_rows() > s["token_rows"], "during the token backfill"),
    ]
    for n in range(5):  # change five files, delete two: updates and removals on the next runs
        name = f"files/note-{n:02d}.md"
        old_marks.append(marks[name])
        marks[name] = marker(rng)
        (tmp_path / name).write_text(note_markdown(f"Note {n} revised", marks[name], rng), encoding="utf-8")
    for n in (20, 21):
        (tmp_path / f"files/note-{n:02d}.md").unlink()
        old_marks.append(marks.pop(f"files/note-{n:02d}.md"))
    runs.append(run(lambda s: watch.graph_documents() > s["graph_documents"], "during the graph sync, after updates"))
    final = run(what="to completion")
    assert sum(r["killed"] for r in runs) >= 2, runs
    report = final["report"]
    assert report["failed"] == [], report

    problems, texts = store_problems(tmp_path / "data", CLI_C, indexes=True)
    assert sorted(texts) == sorted(marks), "the collection's documents are not the folder's files"
    for name, mark in marks.items():
        found = set(MARKER_RE.findall(texts[name]))
        if found != {mark}:
            problems.append(f"{name}: markers {found} in its text, expected only {mark}")
    store = SqliteFaissStore(tmp_path / "data")
    try:
        sources = {r.path: r for r in store.list_sources(CLI_C)}
        for name in marks:
            record = sources.get(str((tmp_path / name).resolve()))
            if record is None or record.doc_ids != [name]:
                problems.append(f"{name}: source record {record}")
            elif record.content_hash != content_hash((tmp_path / name).read_bytes()):
                problems.append(f"{name}: the source record's hash is not the file's")
        if len(sources) != len(marks):
            problems.append(f"{len(sources)} source records for {len(marks)} files")
        for mark in old_marks:
            hits = store.lexical_search(CLI_C, mark, 5, "sentence")
            spans = store.get_spans(CLI_C, [h.span_id for h in hits])
            if any(mark in s.text for s in spans):
                problems.append(f"the old marker {mark} is still found")
    finally:
        store.close()
    assert not problems, "\n".join(problems) + f"\nruns: {runs + [final]}"
