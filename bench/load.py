"""Bounded mixed load against one spanrag server over real HTTP, with consistency checks.

    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --seconds 60 --out docs/results/load.json
    .venv/bin/python -m bench.load --seconds 30 --workers 4     # starts its own server (temp data dir)

* Load: ``--workers`` asyncio workers share one ``httpx.AsyncClient`` for ``--seconds`` and
  each loops over a weighted mix of requests on one collection (``--collection``):
  ``ingest`` (a new document, unique id, a unique marker word in its text), ``replace`` (the
  same id, new text with a new marker), ``delete``, ``get`` (GET the document), ``query``
  (POST /query) and ``retrieve`` (POST /retrieve) with questions naming markers: current
  ones, replaced ones and deleted ones (the last two must not come back).
* Writes and deletes of one document never overlap (a worker holds the document while its
  write is in flight); reads of it may overlap them.
* Bookkeeping: every write and delete with its send and acknowledgement times (client
  clock). A response to a request sent at ``t_send`` and received at ``t_recv`` may show a
  document in the state of the last write/delete acknowledged before ``t_send``, or of one
  started before ``t_recv`` (in flight, may have landed); anything else is a violation:
    - a GET that answers 404 for an acknowledged write, or old text after a replace was
      acknowledged, or the document after its delete was acknowledged;
    - a query/retrieve whose context shows a deleted document, or a replaced version's
      marker, after the delete/replace was acknowledged;
    - a write answered 2xx whose text does not read back (final pass).
  A request that got no answer (timeout, connection error, 5xx) leaves its document
  uncertain: it is not checked further (counted in ``uncertain_docs``).
* Final verification (after the load, not timed): GET every document ever written (latest
  acknowledged text, exact up to whitespace, or 404 when deleted) and ``/retrieve`` with the
  ``bm25`` pipeline for up to ``--verify-retrieve`` live documents by their marker (must be
  found) and for as many deleted and replaced markers (must not be found).
* Report: requests/s overall and per kind, p50/p95 latency per kind, every status counted,
  5xx and transport errors (with samples: path, status, body head, X-Request-ID, to find in
  the server log) and violations. ``ok`` is true when there was no 5xx and no violation.

Without ``--url`` the script starts its own server (``app.server_process.SpanragServer`` on
a temporary data dir, or ``--data-dir``, rate limit off, no access log), uploads ``samples/``
into the collection first (noise the queries must rank past), and stops it at the end.

Only loopback addresses are accepted unless ``--allow-remote``. As a function (tests):

    >>> report = run_load("http://127.0.0.1:8000", seconds=10, workers=4,      # doctest: +SKIP
    ...                   headers={"Authorization": "Bearer sk-spanrag-..."})
    >>> report.ok, report.rps, report.kinds["query"]["p95_ms"]                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from app.security import is_loopback
from eval.metrics import percentile

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = REPO_ROOT / "samples"

KINDS = ("ingest", "replace", "delete", "get", "query", "retrieve")
DEFAULT_WEIGHTS = {"ingest": 3, "replace": 2, "delete": 1, "get": 3, "query": 2, "retrieve": 3}
MARKER_RE = re.compile(r"\bzq[a-z]{10}\b")
MAX_SAMPLES = 50  # violations and errors kept verbatim in the report (all are counted)

FILLER = [
    "The river valley holds old orchards and stone bridges.",
    "Copper kettles hang above the long oak table.",
    "Migrating cranes rest on the marsh every autumn.",
    "The lighthouse keeper logs passing ships by hand.",
    "A narrow gauge railway climbs through pine forests.",
    "Winter storms reshape the dunes along the northern coast.",
    "The library keeps maps drawn before the canal was dug.",
    "Beekeepers move their hives to the heather in August.",
    "The observatory dome opens only on cloudless nights.",
    "Fishermen mend nets on the quay before dawn.",
]


def is_loopback_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


# -- bookkeeping -------------------------------------------------------------------------------


@dataclass
class Op:
    """One write or delete of a document, as the client saw it."""

    kind: str  # "write" or "delete"
    marker: str | None  # a write's marker; None for a delete
    text: str | None
    started: float
    done: float | None = None
    outcome: str = "pending"  # "ok" (2xx), "failed" (a 4xx: did not apply), "unknown" (no answer, 5xx)

    @property
    def state(self) -> str | None:
        """The document after this op: its marker, or None (absent)."""
        return self.marker if self.kind == "write" else None


@dataclass
class Doc:
    doc_id: str
    ops: list[Op] = field(default_factory=list)
    busy: bool = False  # a write or delete is in flight

    @property
    def uncertain(self) -> bool:
        return any(op.outcome == "unknown" for op in self.ops)

    def acknowledged_state(self) -> tuple[bool, str | None]:
        """(ever acknowledged, state after the last acknowledged op)."""
        done = [op for op in self.ops if op.outcome == "ok"]
        return (bool(done), done[-1].state if done else None)

    def allowed_states(self, t_send: float, t_recv: float) -> set[str | None]:
        """States a response to a request sent at ``t_send``, received at ``t_recv``, may show."""
        floor = -1
        for i, op in enumerate(self.ops):
            if op.outcome == "ok" and op.done is not None and op.done < t_send:
                floor = i
        allowed: set[str | None] = {self.ops[floor].state if floor >= 0 else None}
        for op in self.ops[floor + 1 :]:
            if op.outcome != "failed" and op.started < t_recv:
                allowed.add(op.state)
        return allowed


@dataclass
class KindStats:
    count: int = 0
    ok: int = 0  # 2xx
    transport_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self, elapsed_s: float) -> dict:
        return {
            "count": self.count,
            "ok": self.ok,
            "transport_errors": self.transport_errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "rps": round(self.count / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            "p50_ms": round(percentile(self.latencies_ms, 50), 1),
            "p95_ms": round(percentile(self.latencies_ms, 95), 1),
            "max_ms": round(max(self.latencies_ms, default=0.0), 1),
        }


@dataclass
class LoadReport:
    url: str
    collection: str
    seconds: float  # asked
    elapsed_s: float  # the load phase as run (final verification excluded)
    workers: int
    seed: int
    requests: int
    rps: float
    kinds: dict[str, dict]  # per kind: count, ok, statuses, rps, p50_ms, p95_ms, max_ms
    statuses: dict[str, int]
    server_errors: int  # 5xx, load and verification together
    transport_errors: int  # no answer at all (timeout, connection reset)
    violations: int
    violation_samples: list[dict]
    error_samples: list[dict]
    verification: dict
    docs: dict
    machine: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.server_errors == 0 and self.violations == 0 and self.transport_errors == 0

    def as_dict(self) -> dict:
        return {"ok": self.ok, **asdict(self)}

    def markdown(self) -> str:
        lines = ["| kind | requests | 2xx | req/s | p50 ms | p95 ms | statuses |", "|---|---:|---:|---:|---:|---:|---|"]
        for kind, s in self.kinds.items():
            statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
            lines.append(
                f"| {kind} | {s['count']} | {s['ok']} | {s['rps']:.2f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {statuses} |"
            )
        lines += [
            "",
            f"{self.requests} requests in {self.elapsed_s:.1f} s = {self.rps:.2f} req/s with {self.workers} workers;"
            f" 5xx: {self.server_errors}, transport errors: {self.transport_errors},"
            f" violations: {self.violations}",
            f"final verification: {json.dumps(self.verification)}",
        ]
        return "\n".join(lines)


class LoadRun:
    def __init__(self, client: httpx.AsyncClient, collection: str, seed: int, weights: dict[str, int]):
        self.client = client
        self.collection = collection
        self.rng = random.Random(seed)
        self.run_tag = "".join(self.rng.choices(string.ascii_lowercase, k=6))
        self.weights = weights
        self.docs: dict[str, Doc] = {}
        self.markers: dict[str, tuple[str, int]] = {}  # marker -> (doc id, op index)
        self.stats: dict[str, KindStats] = {k: KindStats() for k in KINDS}
        self.verify_stats: dict[str, KindStats] = {"verify_get": KindStats(), "verify_retrieve": KindStats()}
        self.violation_count = 0
        self.violation_samples: list[dict] = []
        self.server_errors = 0
        self.transport_errors = 0
        self.error_samples: list[dict] = []
        self.next_doc = 0
        self.started = time.perf_counter()

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> float:
        return time.perf_counter() - self.started

    def violation(self, kind: str, doc_id: str | None, detail: str, **extra: Any) -> None:
        self.violation_count += 1
        if len(self.violation_samples) < MAX_SAMPLES:
            self.violation_samples.append(
                {"kind": kind, "doc_id": doc_id, "detail": detail, "t_s": round(self.now(), 3), **extra}
            )

    def new_marker(self) -> str:
        while True:
            marker = "zq" + "".join(self.rng.choices(string.ascii_lowercase, k=10))
            if marker not in self.markers:
                return marker

    def doc_text(self, doc_id: str, marker: str) -> str:
        first = " ".join(self.rng.sample(FILLER, 2))
        second = " ".join(self.rng.sample(FILLER, 2))
        return (
            f"This note records the marker {marker} for {doc_id}. {first}\n\n"
            f"Again, the marker {marker} is named here. {second}\n"
        )

    def doc_path(self, doc_id: str) -> str:
        return f"/v1/collections/{quote(self.collection, safe='')}/documents/{quote(doc_id, safe='/')}"

    async def request(
        self, stats: KindStats, kind: str, method: str, path: str, json_body: dict | None = None
    ) -> tuple[httpx.Response | None, float, float]:
        """(response or None when no answer came, t_send, t_recv); counts it in ``stats``."""
        t_send = self.now()
        try:
            response = await self.client.request(method, path, json=json_body)
        except httpx.HTTPError as exc:
            t_recv = self.now()
            stats.count += 1
            stats.transport_errors += 1
            stats.statuses["transport_error"] += 1
            self.transport_errors += 1
            if len(self.error_samples) < MAX_SAMPLES:
                self.error_samples.append(
                    {"kind": kind, "method": method, "path": path, "error": f"{type(exc).__name__}: {exc}"[:300]}
                )
            return None, t_send, t_recv
        t_recv = self.now()
        stats.count += 1
        stats.statuses[response.status_code] += 1
        stats.latencies_ms.append((t_recv - t_send) * 1000)
        if 200 <= response.status_code < 300:
            stats.ok += 1
        if response.status_code >= 500:
            self.server_errors += 1
            if len(self.error_samples) < MAX_SAMPLES:
                self.error_samples.append(
                    {
                        "kind": kind,
                        "method": method,
                        "path": path,
                        "status": response.status_code,
                        "body": response.text[:500],
                        "request_id": response.headers.get("x-request-id"),
                        "t_s": round(t_send, 3),
                    }
                )
        return response, t_send, t_recv

    @staticmethod
    def outcome(response: httpx.Response | None) -> str:
        if response is None or response.status_code >= 500:
            return "unknown"
        return "ok" if 200 <= response.status_code < 300 else "failed"

    def idle_docs(self, live: bool = True) -> list[Doc]:
        out = []
        for doc in self.docs.values():
            if doc.busy or doc.uncertain:
                continue
            ever, state = doc.acknowledged_state()
            if ever and (state is not None) == live:
                out.append(doc)
        return out

    def check_observation(self, kind: str, doc: Doc, seen: str | None, t_send: float, t_recv: float, what: str) -> None:
        """``seen``: the marker the response shows for ``doc`` (None: absent)."""
        if doc.uncertain:
            return
        allowed = doc.allowed_states(t_send, t_recv)
        if seen not in allowed:
            self.violation(
                kind,
                doc.doc_id,
                what,
                seen=seen,
                allowed=sorted(map(str, allowed)),
                t_send=round(t_send, 3),
                t_recv=round(t_recv, 3),
            )

    # -- operations ------------------------------------------------------------------------
    async def write(self, kind: str, doc: Doc) -> None:
        marker = self.new_marker()
        text = self.doc_text(doc.doc_id, marker)
        op = Op("write", marker, text, self.now())
        doc.ops.append(op)
        self.markers[marker] = (doc.doc_id, len(doc.ops) - 1)
        doc.busy = True
        try:
            response, _, t_recv = await self.request(
                self.stats[kind],
                kind,
                "POST",
                f"/v1/collections/{quote(self.collection, safe='')}/documents",
                {
                    "id": doc.doc_id,
                    "text": text,
                    "title": f"Load note {doc.doc_id}",
                    "metadata": {"marker": marker, "run": self.run_tag},
                },
            )
            op.done, op.outcome = t_recv, self.outcome(response)
            if op.outcome == "ok" and doc.doc_id not in (response.json().get("doc_ids") or []):
                self.violation(
                    kind, doc.doc_id, "a 2xx ingest report does not name the document", body=response.text[:300]
                )
        finally:
            doc.busy = False

    async def ingest(self) -> None:
        self.next_doc += 1
        doc = Doc(f"load-{self.run_tag}/doc-{self.next_doc:05d}")
        self.docs[doc.doc_id] = doc
        await self.write("ingest", doc)

    async def delete(self, doc: Doc) -> None:
        op = Op("delete", None, None, self.now())
        doc.ops.append(op)
        doc.busy = True
        try:
            response, _, t_recv = await self.request(
                self.stats["delete"], "delete", "DELETE", self.doc_path(doc.doc_id)
            )
            op.done, op.outcome = t_recv, self.outcome(response)
            if response is not None and response.status_code == 404:
                self.violation("delete", doc.doc_id, "DELETE of an acknowledged document answered 404 (lost write)")
        finally:
            doc.busy = False

    async def get(self, doc: Doc) -> None:
        response, t_send, t_recv = await self.request(self.stats["get"], "get", "GET", self.doc_path(doc.doc_id))
        if response is None or response.status_code not in (200, 404):
            return
        self.check_read(doc, response, t_send, t_recv, "get")

    def check_read(self, doc: Doc, response: httpx.Response, t_send: float, t_recv: float, kind: str) -> None:
        if response.status_code == 404:
            self.check_observation(kind, doc, None, t_send, t_recv, "GET answered 404")
            return
        body = response.json()
        found = MARKER_RE.findall(body.get("text", ""))
        seen = found[0] if found else "<no marker>"
        if len(set(found)) > 1:
            self.violation(kind, doc.doc_id, "a document's text mixes two versions", markers=sorted(set(found)))
        self.check_observation(kind, doc, seen, t_send, t_recv, "GET showed a version it may not show")
        if seen in self.markers and not doc.uncertain:
            owner, index = self.markers[seen]
            expected = self.docs[owner].ops[index].text or ""
            if owner != doc.doc_id:
                self.violation(kind, doc.doc_id, "GET showed another document's text", marker=seen, owner=owner)
            elif " ".join(body.get("text", "").split()) != " ".join(expected.split()):
                self.violation(
                    kind,
                    doc.doc_id,
                    "GET text differs from the text written",
                    got=body.get("text", "")[:300],
                    expected=expected[:300],
                )
            if not body.get("n_spans"):
                self.violation(
                    kind, doc.doc_id, "GET of a written document reports no spans", n_spans=body.get("n_spans")
                )

    def pick_question_marker(self) -> str | None:
        roll = self.rng.random()
        if roll < 0.5:
            live = self.idle_docs(live=True)
            if live:
                return self.rng.choice(live).acknowledged_state()[1]
        if roll < 0.8:  # a replaced version's marker
            old = [
                m
                for m, (d, i) in self.markers.items()
                if i + 1 < len(self.docs[d].ops) and self.docs[d].ops[i].outcome == "ok"
            ]
            if old:
                return self.rng.choice(old)
        deleted = self.idle_docs(live=False)
        if deleted:
            doc = self.rng.choice(deleted)
            written = [op.marker for op in doc.ops if op.kind == "write" and op.outcome == "ok"]
            if written:
                return written[-1]
        return None

    async def search(self, kind: str) -> None:
        marker = self.pick_question_marker()
        question = f"Which note records the marker {marker}?" if marker else "What does spanrag store?"
        path = f"/v1/collections/{quote(self.collection, safe='')}/{kind}"
        response, t_send, t_recv = await self.request(self.stats[kind], kind, "POST", path, {"question": question})
        if response is None or response.status_code != 200:
            return
        self.check_search(kind, response.json(), t_send, t_recv)

    def check_search(self, kind: str, body: dict, t_send: float, t_recv: float) -> set[str]:
        """Check every span of a query/retrieve answer; returns the doc ids it showed."""
        items = [*body.get("context", []), *body.get("citations", []), *body.get("spans", [])]
        shown: dict[str, set[str]] = {}
        for item in items:
            doc_id = item.get("doc_id")
            if doc_id not in self.docs:
                continue  # samples and documents of other runs
            markers = set(MARKER_RE.findall(item.get("text", "")))
            shown.setdefault(doc_id, set()).update(markers)
            for marker in markers:
                if self.markers.get(marker, (None,))[0] != doc_id:
                    self.violation(kind, doc_id, "a span shows another document's marker", marker=marker)
        for doc_id, markers in shown.items():
            doc = self.docs[doc_id]
            if doc.uncertain:
                continue
            allowed = doc.allowed_states(t_send, t_recv)
            if not markers:
                if allowed == {None}:
                    self.violation(
                        kind,
                        doc_id,
                        "a deleted document is in the context",
                        t_send=round(t_send, 3),
                        t_recv=round(t_recv, 3),
                    )
            for marker in markers:
                self.check_observation(
                    kind, doc, marker, t_send, t_recv, "the context shows a deleted document or a replaced version"
                )
        return set(shown)

    async def worker(self, deadline: float, max_requests: int | None) -> None:
        kinds = list(self.weights)
        weights = [self.weights[k] for k in kinds]
        while self.now() < deadline:
            if max_requests is not None and sum(s.count for s in self.stats.values()) >= max_requests:
                return
            kind = self.rng.choices(kinds, weights)[0]
            if kind in ("replace", "delete", "get"):
                pool = self.idle_docs(live=True)
                if kind == "get" and self.rng.random() < 0.3:
                    pool = [d for d in self.docs.values() if not d.uncertain] or pool
                if len(pool) < 2:
                    kind = "ingest"
                else:
                    doc = self.rng.choice(pool)
            if kind == "ingest":
                await self.ingest()
            elif kind == "replace":
                await self.write("replace", doc)
            elif kind == "delete":
                await self.delete(doc)
            elif kind == "get":
                await self.get(doc)
            else:
                await self.search(kind)

    # -- final verification ------------------------------------------------------------------
    async def verify(self, retrieve_max: int, concurrency: int) -> dict:
        out = Counter()
        semaphore = asyncio.Semaphore(concurrency)

        async def check_doc(doc: Doc) -> None:
            async with semaphore:
                ever, state = doc.acknowledged_state()
                if doc.uncertain:
                    out["uncertain"] += 1
                    return
                if not ever:
                    out["never_acknowledged"] += 1  # every write of it failed with a 4xx
                stats = self.verify_stats["verify_get"]
                response, t_send, t_recv = await self.request(stats, "verify_get", "GET", self.doc_path(doc.doc_id))
                if response is None or response.status_code not in (200, 404):
                    out["get_errors"] += 1
                    return
                out["live" if state is not None else "deleted"] += 1
                if (response.status_code == 200) != (state is not None):
                    self.violation(
                        "verify_get",
                        doc.doc_id,
                        "an acknowledged write is not readable"
                        if state is not None
                        else "an acknowledged delete did not hold",
                        status=response.status_code,
                    )
                    return
                if response.status_code == 200:
                    self.check_read(doc, response, t_send, t_recv, "verify_get")

        await asyncio.gather(*(check_doc(d) for d in list(self.docs.values())))

        # retrieval by marker: live documents must be found, deleted and replaced versions not
        certain = [d for d in self.docs.values() if not d.uncertain]
        live = [d for d in certain if d.acknowledged_state()[1] is not None]
        dead = [d for d in certain if d.acknowledged_state() == (True, None)]
        old = [
            m
            for m, (d, i) in self.markers.items()
            if not self.docs[d].uncertain
            and self.docs[d].ops[i].outcome == "ok"
            and self.docs[d].acknowledged_state()[1] != m
        ]
        rng = random.Random(len(self.markers))
        live = rng.sample(live, min(retrieve_max, len(live)))
        gone = rng.sample(old, min(retrieve_max, len(old)))

        async def retrieve(marker: str, doc: Doc, must_find: bool) -> None:
            async with semaphore:
                stats = self.verify_stats["verify_retrieve"]
                path = f"/v1/collections/{quote(self.collection, safe='')}/retrieve"
                response, t_send, t_recv = await self.request(
                    stats,
                    "verify_retrieve",
                    "POST",
                    path,
                    {"question": f"Which note records the marker {marker}?", "pipeline": "bm25"},
                )
                if response is None or response.status_code != 200:
                    out["retrieve_errors"] += 1
                    return
                shown = self.check_search("verify_retrieve", response.json(), t_send, t_recv)
                out["retrieve_checked"] += 1
                if must_find and doc.doc_id not in shown:
                    self.violation(
                        "verify_retrieve", doc.doc_id, "a live document is not retrieved by its marker", marker=marker
                    )
                if must_find and doc.doc_id in shown:
                    out["retrieve_found"] += 1

        await asyncio.gather(
            *(retrieve(d.acknowledged_state()[1], d, True) for d in live),
            *(retrieve(m, self.docs[self.markers[m][0]], False) for m in gone),
            *(
                retrieve(
                    next(op.marker for op in reversed(d.ops) if op.kind == "write" and op.outcome == "ok"), d, False
                )
                for d in dead[:retrieve_max]
            ),
        )
        return dict(sorted(out.items()))


async def run_load_async(
    base_url: str,
    seconds: float = 60.0,
    workers: int = 4,
    headers: dict[str, str] | None = None,
    collection: str = "load",
    seed: int = 0,
    timeout_s: float = 120.0,
    verify_retrieve: int = 100,
    weights: dict[str, int] | None = None,
    max_requests: int | None = None,
) -> LoadReport:
    limits = httpx.Limits(max_connections=workers + 4, max_keepalive_connections=workers + 4)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers or {}, timeout=timeout_s, limits=limits, trust_env=False
    ) as client:
        run = LoadRun(client, collection, seed, {**DEFAULT_WEIGHTS, **(weights or {})})
        await asyncio.gather(*(run.worker(seconds, max_requests) for _ in range(workers)))
        elapsed = run.now()
        verification = await run.verify(verify_retrieve, max(1, min(workers, 4)))
    statuses: Counter = Counter()
    for s in run.stats.values():
        statuses.update(s.statuses)
    requests = sum(s.count for s in run.stats.values())
    docs_written = len(run.docs)
    return LoadReport(
        url=base_url,
        collection=collection,
        seconds=seconds,
        elapsed_s=round(elapsed, 3),
        workers=workers,
        seed=seed,
        requests=requests,
        rps=round(requests / elapsed, 2) if elapsed else 0.0,
        kinds={k: s.summary(elapsed) for k, s in {**run.stats, **run.verify_stats}.items()},
        statuses={str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        server_errors=run.server_errors,
        transport_errors=run.transport_errors,
        violations=run.violation_count,
        violation_samples=run.violation_samples,
        error_samples=run.error_samples,
        verification=verification,
        docs={
            "written": docs_written,
            "markers": len(run.markers),
            "uncertain": sum(d.uncertain for d in run.docs.values()),
            "live_at_end": sum(d.acknowledged_state()[1] is not None for d in run.docs.values()),
        },
        machine={"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    )


def run_load(
    base_url: str, seconds: float = 60.0, workers: int = 4, headers: dict[str, str] | None = None, **options: Any
) -> LoadReport:
    """Run the load (see module doc) and return its report; ``options`` as ``run_load_async``."""
    return asyncio.run(run_load_async(base_url, seconds, workers, headers, **options))


# -- a server of its own -----------------------------------------------------------------------


def upload_samples(base_url: str, collection: str, headers: dict[str, str] | None = None) -> list[str]:
    """Upload every file of ``samples/`` as a multipart upload; returns the doc ids."""
    doc_ids = []
    upload_headers = {"X-Requested-With": "spanrag-bench", **(headers or {})}
    with httpx.Client(base_url=base_url, headers=upload_headers, timeout=300, trust_env=False) as client:
        for path in sorted(SAMPLES.iterdir()):
            if not path.is_file():
                continue
            response = client.post(
                f"/v1/collections/{quote(collection, safe='')}/documents",
                files={"file": (path.name, path.read_bytes())},
                data={"doc_id": f"samples/{path.name}"},
            )
            response.raise_for_status()
            doc_ids += response.json().get("doc_ids", [])
    return doc_ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000 (default: start one)")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the load phase")
    ap.add_argument("--workers", type=int, default=4, help="concurrent workers")
    ap.add_argument("--collection", default="load")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("SPANRAG_API_KEY"),
        help="sent as 'Authorization: Bearer KEY' (a write key); default $SPANRAG_API_KEY",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, seconds")
    ap.add_argument(
        "--verify-retrieve",
        type=int,
        default=100,
        help="live (and as many deleted/replaced) markers retrieved in the final pass",
    )
    ap.add_argument("--max-requests", type=int, default=None, help="stop after this many load requests")
    ap.add_argument("--data-dir", type=Path, default=None, help="data dir of the server this starts (default: temp)")
    ap.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/load.json"))
    args = ap.parse_args(argv)

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = None
    tmp = None
    try:
        if args.url:
            if not is_loopback_url(args.url) and not args.allow_remote:
                ap.error(f"{args.url} is not a loopback address (pass --allow-remote to load it anyway)")
            url = args.url.rstrip("/")
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from app.server_process import SpanragServer

            data_dir = args.data_dir
            if data_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="spanrag-load-")
                data_dir = Path(tmp.name) / "data"
            server = SpanragServer(
                data_dir, env={"SPANRAG_RATE_LIMIT_PER_MINUTE": "0"}, access_log=False, cwd=REPO_ROOT
            ).start()
            url = server.base_url
            print(f"started {url} on {data_dir}; uploading samples/ ...", file=sys.stderr)
            upload_samples(url, args.collection, headers)
        report = run_load(
            url,
            args.seconds,
            args.workers,
            headers,
            collection=args.collection,
            seed=args.seed,
            timeout_s=args.timeout,
            verify_retrieve=args.verify_retrieve,
            max_requests=args.max_requests,
        )
        out = report.as_dict()
        if server is not None:
            out["server"] = {"started_by": "bench.load", "log_tail": server.output(8000) if not report.ok else ""}
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(report.markdown())
    for sample in report.violation_samples[:10]:
        print("violation:", json.dumps(sample), file=sys.stderr)
    for sample in report.error_samples[:10]:
        print("error:", json.dumps(sample), file=sys.stderr)
    print(f"\nwrote {args.out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
