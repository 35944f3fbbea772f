"""Metrics, request ids and structured logs for the HTTP service.

``install_observability(app, rag, access)`` (called by ``app.api.create_app``) gives an app:

* ``GET /metrics`` in the Prometheus text format, from a registry of the app's own (several
  apps in one process never share or clash):

  ====================================================  =====================================
  ``spanrag_http_requests_total{method,route,status}``  requests answered
  ``spanrag_http_request_duration_seconds{method,route}``  request in to last body byte out
  ``spanrag_errors_total{route,status}``                 4xx and 5xx answers
  ``spanrag_stage_duration_seconds{stage}``              retrieval stages (encode, first_stage,
                                                         maxsim, selection, compression, retrieval)
  ``spanrag_retrievals_total{pipeline}``                 retrievals run
  ``spanrag_ingest_documents_total{outcome}``            added, updated, unchanged, removed, failed
  ``spanrag_ingest_spans_total``                         spans written
  ``spanrag_ingest_duration_seconds``                    one ingest call (histogram)
  ``spanrag_ingest_spans_per_second``                    the last ingest's rate (gauge)
  ``spanrag_documents_deleted_total``                    documents deleted through the service
  ``spanrag_index_documents{collection}``                index sizes, read at scrape time, and
  ``spanrag_index_spans{collection}``                    only once the store is open
  ====================================================  =====================================

  ``route`` is the route's template (``/v1/collections/{collection}/query``), ``other`` for a
  path no route matches: HTTP series never carry a collection name or a document id.
  Scraping loads nothing: no model, and no store that is not open yet. Once API keys exist,
  ``/metrics`` needs an admin key for every collection (``*``).

* a request id: ``X-Request-ID`` from the request when it is a short safe token (at most
  64 of ``[A-Za-z0-9._-]``), else a new uuid4 hex; in ``request.state.request_id``, in
  ``request_id_var`` (so every log line written while the request runs carries it) and in
  the ``X-Request-ID`` header of every response: errors and streams included.

* one access log line per request on the ``spanrag.access`` logger (method, route, path
  without its query string, status, duration_ms, client). Request bodies, query strings and
  headers (``Authorization`` holds keys) are never logged.

Logging is left as it is until ``configure_logging()`` (``spanrag serve``) installs
``JsonLogFormatter``: one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.security import AccessControl, Principal
from service.engine import RagService

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "IndexSizeCollector",
    "JsonLogFormatter",
    "RequestObservabilityMiddleware",
    "ServiceMetrics",
    "configure_logging",
    "current_request_id",
    "install_observability",
    "request_id_var",
    "valid_request_id",
]

ACCESS_LOGGER = "spanrag.access"
REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_ROUTE = "other"

# The request being answered, for log lines written anywhere below the middleware (sync
# endpoints and streaming iterators run in worker threads with a copy of the context).
request_id_var: ContextVar[str | None] = ContextVar("spanrag_request_id", default=None)

log = logging.getLogger(__name__)


def current_request_id() -> str | None:
    """The id of the request being answered in this context, or None outside a request."""
    return request_id_var.get()


def valid_request_id(value: str | None) -> bool:
    """A client's id is kept only if it is a short token that is safe in logs and headers."""
    return value is not None and _SAFE_ID.fullmatch(value) is not None


# -- metrics ----------------------------------------------------------------------------------

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INGEST_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
INGEST_OUTCOMES = ("added", "updated", "unchanged", "removed", "failed")


class IndexSizeCollector(Collector):
    """Documents and spans per collection, read from the store at scrape time, and only when
    the service has already opened it (``RagService.store`` is a cached property: a scrape
    must not be what opens a store or loads anything)."""

    def __init__(self, rag: RagService):
        self.rag = rag

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the store either

    def collect(self) -> Iterator[Metric]:
        documents = GaugeMetricFamily("spanrag_index_documents", "Documents in each collection", labels=["collection"])
        spans = GaugeMetricFamily("spanrag_index_spans", "Spans in each collection", labels=["collection"])
        if "store" in self.rag.__dict__:
            store = self.rag.__dict__["store"]
            try:
                for name in store.list_collections():
                    stats = store.collection_stats(name)
                    documents.add_metric([name], stats["documents"])
                    spans.add_metric([name], stats["spans"])
            except Exception:  # a scrape reports what it can; the store's failure is logged
                log.exception("reading index sizes for /metrics failed")
        yield documents
        yield spans


class ServiceMetrics:
    """One app's metrics, on a registry of its own (``self.registry``)."""

    def __init__(self, rag: RagService, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "spanrag_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "spanrag_http_request_duration_seconds",
            "From request in to the last body byte out",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "spanrag_errors", "HTTP answers with a 4xx or 5xx status", ["route", "status"], registry=r
        )
        self.stage_duration = Histogram(
            "spanrag_stage_duration_seconds",
            "Time spent in each retrieval stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.retrievals = Counter("spanrag_retrievals", "Retrievals run", ["pipeline"], registry=r)
        self.ingest_documents = Counter(
            "spanrag_ingest_documents",
            "Documents seen by ingest calls, by outcome (failed: sources)",
            ["outcome"],
            registry=r,
        )
        for outcome in INGEST_OUTCOMES:
            self.ingest_documents.labels(outcome)  # every outcome is exported from the start, at 0
        self.ingest_spans = Counter("spanrag_ingest_spans", "Spans written by ingest calls", registry=r)
        self.ingest_duration = Histogram(
            "spanrag_ingest_duration_seconds", "Duration of one ingest call", buckets=_INGEST_BUCKETS, registry=r
        )
        self.ingest_rate = Gauge(
            "spanrag_ingest_spans_per_second", "Spans written per second by the last ingest that wrote any", registry=r
        )
        self.deleted = Counter("spanrag_documents_deleted", "Documents deleted", registry=r)
        r.register(IndexSizeCollector(rag))

    # the service's listener: ``rag.listeners.append(metrics.on_event)``
    def on_event(self, event: str, collection: str, data: dict) -> None:
        try:
            if event == "retrieve":
                self._retrieved(data)
            elif event == "ingest":
                self._ingested(data["report"])
            elif event == "delete":
                self.deleted.inc()
        except Exception:  # metrics never fail the request that fed them
            log.exception("recording metrics for a %r event failed", event)

    def _retrieved(self, data: dict) -> None:
        self.retrievals.labels(str(data.get("pipeline") or "unknown")).inc()
        for key, ms in (data.get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                stage = key[:-3] if key.endswith("_ms") else key
                self.stage_duration.labels(stage).observe(max(float(ms), 0.0) / 1000)

    def _ingested(self, report: Any) -> None:
        for outcome in INGEST_OUTCOMES:
            value: Any = getattr(report, outcome, 0)
            n = len(value) if outcome == "failed" else int(value or 0)
            if n:
                self.ingest_documents.labels(outcome).inc(n)
        spans = int(report.spans or 0)
        seconds = float(report.seconds or 0.0)
        self.ingest_spans.inc(spans)
        self.ingest_duration.observe(seconds)
        if spans and seconds > 0:
            self.ingest_rate.set(spans / seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- the request middleware --------------------------------------------------------------------


def _template(route: Any) -> str:
    return getattr(route, "path_format", None) or getattr(route, "path", None) or OTHER_ROUTE


def route_template(scope: Scope) -> str:
    """The template of the route that answered (or would answer, bar the method) ``scope``;
    ``other`` when none matches. Bounded by the app's routes, whatever the client sends."""
    route = scope.get("route")  # FastAPI's routes leave themselves in the scope
    if route is not None:
        return _template(route)
    router = getattr(scope.get("app"), "router", None)
    partial = None
    for candidate in getattr(router, "routes", ()):
        try:
            match, _ = candidate.matches(scope)
        except Exception:
            continue
        if match is Match.FULL:
            return _template(candidate)
        if match is Match.PARTIAL and partial is None:
            partial = candidate
    return _template(partial) if partial is not None else OTHER_ROUTE


class RequestObservabilityMiddleware:
    """Pure ASGI (a ``BaseHTTPMiddleware`` would buffer and break streamed answers): gives
    each HTTP request its id, echoes it in ``X-Request-ID``, and when the last body chunk is
    out (or the request failed) counts it, times it and writes the access log line."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, access_logger: str = ACCESS_LOGGER):
        self.app = app
        self.metrics = metrics
        self.access_log = logging.getLogger(access_logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        header = (_HEADER, request_id.encode("latin-1"))
        status: int | None = None
        finished: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                message = {**message, "headers": [*headers, header]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if status is None:
                status = 500
                if not getattr(scope.get("app"), "debug", False):
                    # answered here rather than by Starlette's outer ServerErrorMiddleware, so
                    # that the 500 carries the id too; the exception still goes up to be logged
                    await self._internal_error(send_wrapper)
            raise
        finally:
            try:
                self._record(scope, request_id, status, (finished or time.perf_counter()) - started)
            finally:
                request_id_var.reset(token)

    @staticmethod
    def _incoming_id(scope: Scope) -> str | None:
        for key, value in scope.get("headers", ()):
            if key.lower() == _HEADER:
                candidate = value.decode("latin-1")
                return candidate if valid_request_id(candidate) else None
        return None

    @staticmethod
    async def _internal_error(send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
                }
            )
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
        except Exception:  # the client is gone: nothing to answer
            pass

    def _record(self, scope: Scope, request_id: str, status: int | None, seconds: float) -> None:
        # no response at all and no exception: the client went away before it was answered
        code = status if status is not None else 499
        method = scope.get("method", "GET").upper()
        method = method if method in _METHODS else "other"
        route = route_template(scope)
        try:
            self.metrics.observe_request(method, route, code, seconds)
        except Exception:
            log.exception("recording request metrics failed")
        client = scope.get("client")
        self.access_log.info(
            "%s %s %s",
            method,
            scope.get("path", ""),
            code,
            extra={
                "request_id": request_id,
                "method": method,
                "route": route,
                "path": scope.get("path", ""),  # the ASGI path never holds the query string
                "status": code,
                "duration_ms": round(seconds * 1000, 3),
                "client": client[0] if client else None,
            },
        )


# -- logs -------------------------------------------------------------------------------------

# a record's own attributes (not ``extra`` fields), and uvicorn's terminal-coloured copy of its message
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``request_id`` (the record's, else the request being answered, else null), then any
    fields passed with ``extra=`` (the access log's method, route, path, status,
    duration_ms, client) and ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None,
        }
        request_id = getattr(record, "request_id", None)
        out["request_id"] = request_id if request_id not in (None, "-") else request_id_var.get()
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class _RequestIdFilter(logging.Filter):
    """Stamps the request id on records for the plain-text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(json_logs: bool = True, level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Sends every log record to ``stream`` (stderr) through one root handler: JSON lines
    (``JsonLogFormatter``), or plain text with the request id. Calling it again replaces the
    handler it installed before; other handlers are left alone. Returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_spanrag_observability", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._spanrag_observability = True  # type: ignore[attr-defined]
    if json_logs:
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(logging.Formatter(_PLAIN_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


# -- wiring -----------------------------------------------------------------------------------


def install_observability(app: FastAPI, rag: RagService, access: AccessControl | None = None) -> ServiceMetrics:
    """Adds ``/metrics``, request ids and the access log to ``app``, with metrics of its
    own (``app.state.metrics``) fed by ``rag``'s events. With ``access`` (the app's API-key
    dependency), ``/metrics`` needs an admin key for every collection once keys exist.
    Call it after the app's other middleware, so that its middleware is the outermost and
    sees every answer (a host, size or CORS refusal included); before the app serves."""
    metrics = ServiceMetrics(rag)
    rag.listeners.append(metrics.on_event)
    app.state.metrics = metrics

    def exposition() -> Response:
        return Response(content=metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def open_metrics() -> Response:
        return exposition()

    endpoint: Callable[..., Response] = open_metrics
    if access is not None:

        def admin_metrics(principal: Principal = Depends(access)) -> Response:
            principal.require_global_admin("/metrics")
            return exposition()

        endpoint = admin_metrics
    app.add_api_route("/metrics", endpoint, methods=["GET"], include_in_schema=False, name="prometheus_metrics")
    app.add_middleware(RequestObservabilityMiddleware, metrics=metrics)
    return metrics
