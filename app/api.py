"""The HTTP service (FastAPI). Start it with ``spanrag serve`` or
``uvicorn app.api:create_app --factory``; OpenAPI docs are at ``/docs``.

Endpoints:
    POST   /v1/collections/{collection}/query          answer with citations (+ trace); "stream": true for SSE
    POST   /v1/collections/{collection}/retrieve       ranked spans only
    POST   /v1/collections/{collection}/documents      JSON {id, text, title?, metadata?} or multipart file
    GET    /v1/collections/{collection}/documents/{doc_id}
    DELETE /v1/collections/{collection}/documents/{doc_id}
    GET    /v1/collections                             collections with their sizes (those the key sees)
    DELETE /v1/collections/{collection}                the collection and everything in it (admin)
    GET    /healthz                                    liveness: the process answers
    GET    /readyz                                     readiness: models and indexes loaded (503 until then)
    GET    /metrics                                    Prometheus metrics (an admin key for '*' once keys exist)
    GET    /v1/models                                  OpenAI-compatible: each collection as "spanrag:<collection>"
    POST   /v1/chat/completions                        OpenAI-compatible chat, streamed or not (see app.openai_api)

Access (README: Security): once a key exists in the data directory every endpoint but
``/healthz`` and ``/readyz`` needs ``Authorization: Bearer KEY``; 401 without or with a wrong
key, 403 for a scope the key lacks, 404 for a collection it may not see. Limits answer 413
(body, upload, document size), 422 (invalid input; never echoed back) and 429 (rate, with
``Retry-After``). Every response carries ``X-Request-ID``.

Streaming a query: ``{"question": ..., "stream": true}`` answers ``text/event-stream``
(server-sent events, each ``event: NAME`` + ``data: JSON``), in this order:

    context   {"context": [...], "usage": {...}, "pipeline", "trace"?}   the spans the answer
              is written from, shaped as in the JSON response
    delta     {"text": "..."}                  the next piece of the answer (one or more events)
    answer    {"answer", "citations", "timings_ms", "generator"}   the whole answer and what it
              cites; timings add "first_delta_ms" (question in, first delta out)
    done      {}                               the stream is complete
    error     {"detail": "..."}                the generator failed in mid-answer; the stream
              ends here, without "answer" or "done"

Everything that can fail before the answer starts (invalid body, unknown collection or
pipeline, an unreachable generator: 503) is answered as JSON with a status, as without
``stream``: retrieval runs and the first delta is awaited before the stream opens.

    curl -N localhost:8000/v1/collections/docs/query -H 'content-type: application/json' \\
         -d '{"question": "How long is a year on Mercury?", "stream": true}'
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Match

from app import sse
from app.errors import ERROR_TYPES, native_response, service_error
from app.keys import KeyStore
from app.observability import install_observability
from app.openai_api import openai_router
from app.options import RetrievalOptions, Text, encodable_text
from app.security import (
    AccessControl,
    GuardRules,
    Principal,
    RateLimiter,
    RequestGuard,
    default_allowed_hosts,
)
from service.engine import RagService
from service.results import QueryEvent, ranked_payload, trace_payload, usage_payload
from service.settings import Settings

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why}
    for status, why in {
        400: "unknown pipeline, malformed request",
        401: "no API key, or not a valid one",
        403: "the key lacks the scope, or a cross-site write",
        404: "no such collection (or one the key may not see), or document",
        409: "the collection was built with another model, or the document belongs to a file",
        413: "request body, upload or parsed document over a limit",
        415: "unsupported content type",
        422: "invalid input (the reason, never the input itself)",
        429: "too many requests for this key (see Retry-After)",
        503: "the generator cannot answer now (see Retry-After)",
    }.items()
}


class QueryRequest(RetrievalOptions):
    question: Text = Field(
        ...,
        min_length=1,
        max_length=100_000,
        pattern=r"\S",
        description="not blank; at most SPANRAG_MAX_QUESTION_CHARS characters",
    )
    pipeline: Text | None = Field(None, max_length=100)
    trace: bool = False
    stream: bool = Field(False, description="/query answers as server-sent events; /retrieve ignores it")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value


def query_events_sse(events: Iterator[QueryEvent]) -> Iterator[str]:
    """``RagService.query_stream``'s events as SSE (each typed payload's ``as_dict()``), then
    ``done``; a failure in mid-answer becomes an ``error`` event that ends the stream."""
    try:
        for kind, payload in events:
            yield sse.event(kind, payload.as_dict())
    except Exception as exc:  # the status line is already sent, so say it in the stream
        error = service_error(exc)  # a generator that fails in mid-answer (app.errors)
        if error is None:  # a bug
            log.exception("query stream failed")
        yield sse.event("error", {"detail": error.message if error else f"internal error: {type(exc).__name__}"})
        return
    yield sse.event("done", {})


class DocumentIn(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    id: Text = Field(..., min_length=1, max_length=512)
    text: Text = Field(..., min_length=1)
    title: Text = Field("", max_length=2000)
    format: Literal["text", "markdown", "html"] = Field("text", description="how to parse `text`")
    metadata: dict[str, Any] = Field(default_factory=dict, description="JSON object; size and depth are limited")


def validation_errors(errors: Sequence[Mapping[str, Any]], limit: int = 10) -> list[dict]:
    """Validation errors without the input they refer to (a 20 MB field must not come back)
    and with reasons cut short."""
    out = []
    for error in errors[:limit]:
        loc = [part if isinstance(part, int) else str(part)[:100] for part in error.get("loc", ())][:20]
        out.append({"loc": loc, "msg": str(error.get("msg", ""))[:300], "type": str(error.get("type", ""))[:50]})
    return out


def reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN or Infinity; a ``ValueError`` says what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None


class Readiness:
    """Loads the service in a background thread at start; ``/readyz`` reports it."""

    def __init__(self, rag: RagService):
        self.rag = rag
        self.ready = threading.Event()
        self.error: str | None = None

    def load(self) -> None:
        started = time.perf_counter()
        try:
            self.rag.warm_up()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:500]
            log.exception("warm-up failed")
        else:
            self.ready.set()
            log.info(
                "ready: models and indexes loaded in %.1f s (GET /readyz is 200 from now on)",
                time.perf_counter() - started,
            )

    def start(self) -> None:
        threading.Thread(target=self.load, name="spanrag-warm-up", daemon=True).start()


def create_app(settings: Settings | None = None, service: RagService | None = None) -> FastAPI:
    rag = service or RagService(settings or Settings())
    settings = rag.settings
    rag.generator  # noqa: B018  # a generator that cannot be built stops the start with its reason
    readiness = Readiness(rag)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        readiness.start()
        yield

    app = FastAPI(
        title="spanrag", version="0.1.0", description="Span-level retrieval-augmented generation", lifespan=lifespan
    )
    app.state.rag = rag
    app.state.readiness = readiness
    access = AccessControl(
        KeyStore(settings.data_dir), RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    )
    app.include_router(openai_router(rag, access, ERROR_RESPONSES))

    # the middleware added last runs first: the host check, then CORS, then body and write rules
    app.add_middleware(
        RequestGuard,
        rules=GuardRules(settings.max_request_bytes, settings.max_upload_bytes, tuple(settings.cors_origins)),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Requested-With"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts or default_allowed_hosts(settings.host)
    )
    install_observability(app, rag, access)  # outermost: request ids and metrics cover every answer

    def error(status: int, detail: Any, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return error(422, validation_errors(list(exc.errors())))

    async def _service_error(_: Request, exc: Exception):
        answer = service_error(exc)  # app.errors: one table for both surfaces
        assert answer is not None  # registered for ERROR_TYPES only, each of which has an answer
        return native_response(answer)

    for kind in ERROR_TYPES:
        app.add_exception_handler(kind, _service_error)

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, exc: StarletteHTTPException):
        # Starlette names the methods of the first route that matched the path only; GET and
        # DELETE of a document are two routes, so the Allow header lists every route's methods.
        allowed: set[str] = set()
        for route in app.router.routes:
            if not isinstance(route, APIRoute):
                continue
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match != Match.NONE:
                allowed |= set(route.methods or ())
        allow = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
        return error(405, f"method {request.method} not allowed here; allowed: {allow}", {"Allow": allow})

    def checked_question(body: QueryRequest) -> str:
        if len(body.question) > settings.max_question_chars:
            raise HTTPException(
                422,
                f"the question has {len(body.question)} characters; the limit is"
                f" {settings.max_question_chars} (SPANRAG_MAX_QUESTION_CHARS)",
            )
        return body.question

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the process answers (models may still be loading: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody, "description": "still loading, or loading failed"}})
    def readyz() -> Response:
        """Readiness: the store, the models and the indexes are loaded; 503 until then."""
        if readiness.ready.is_set():
            return JSONResponse({"status": "ready"})
        if readiness.error is not None:
            return JSONResponse({"status": "failed", "detail": readiness.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})

    @app.get("/v1/collections", responses=ERROR_RESPONSES)
    def list_collections(principal: Principal = Depends(access)) -> dict:
        names = [c for c in rag.store.list_collections() if principal.sees(c)]
        return {"collections": [rag.store.collection_stats(c) for c in names]}

    @app.delete("/v1/collections/{collection}", responses=ERROR_RESPONSES)
    def delete_collection(collection: str, principal: Principal = Depends(access)) -> dict:
        """The collection, its documents, spans, vectors, indexes and graph (admin scope)."""
        principal.require(collection, "admin")
        rag.delete_collection(collection)
        return {"deleted": collection}

    @app.post(
        "/v1/collections/{collection}/query",
        response_model=None,
        responses={
            **ERROR_RESPONSES,
            200: {
                "description": 'the answer object, or server-sent events with "stream": true',
                "content": {
                    "application/json": {},
                    sse.MEDIA_TYPE: {
                        "schema": {
                            "type": "object",
                            "required": ["event", "data"],
                            "properties": {
                                "event": {"enum": ["context", "delta", "answer", "done", "error"]},
                                "data": {"type": "string", "description": "a JSON object"},
                            },
                        }
                    },
                },
            },
        },
    )
    def query(collection: str, body: QueryRequest, principal: Principal = Depends(access)) -> dict | StreamingResponse:
        principal.require(collection, "read")
        question = checked_question(body)
        if body.stream:
            events = rag.query_stream(collection, question, body.pipeline, body.overrides(), body.trace)
            return StreamingResponse(query_events_sse(events), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        return rag.query(collection, question, body.pipeline, body.overrides(), trace=body.trace).as_dict()

    @app.post("/v1/collections/{collection}/retrieve", responses=ERROR_RESPONSES)
    def retrieve(collection: str, body: QueryRequest, principal: Principal = Depends(access)) -> dict:
        principal.require(collection, "read")
        result = rag.retrieve(collection, checked_question(body), body.pipeline, body.overrides())
        out = {
            "spans": ranked_payload(result),
            "usage": usage_payload(result),
            "timings_ms": result.timings_ms,
            "pipeline": result.pipeline,
        }
        if body.trace:
            out["trace"] = trace_payload(result)
        return out

    @app.post("/v1/collections/{collection}/documents", status_code=201, responses=ERROR_RESPONSES)
    async def add_document(collection: str, request: Request, principal: Principal = Depends(access)) -> dict:
        """Add or replace a document: JSON ``{id, text, title?, format?, metadata?}`` or a
        multipart ``file`` (with an optional ``doc_id`` field). A document ingested from a
        file by ``spanrag ingest`` cannot be replaced this way (409)."""
        principal.require(collection, "write")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=10)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "multipart upload needs a 'file' field")
            data = await upload.read()
            if len(data) > settings.max_upload_bytes:
                raise HTTPException(
                    413,
                    f"the upload is {len(data)} bytes; the limit is {settings.max_upload_bytes}"
                    " (SPANRAG_MAX_UPLOAD_BYTES)",
                )
            doc_id = form.get("doc_id") or None
            if doc_id is not None and not isinstance(doc_id, str):
                raise HTTPException(422, "doc_id must be a text field, not a file")
            names = [upload.filename or "upload.txt", *([doc_id] if isinstance(doc_id, str) else [])]
            try:
                for name in names:
                    encodable_text(name)
            except ValueError as exc:
                raise HTTPException(422, f"file name or doc_id {exc}") from None
            if isinstance(doc_id, str) and len(doc_id) > 512:
                raise HTTPException(422, "doc_id: at most 512 characters")
            report = await run_in_threadpool(
                rag.ingest_upload, collection, data, upload.filename or "upload.txt", doc_id
            )
        elif content_type.split(";")[0].strip().lower() in ("application/json",) or content_type.endswith("+json"):
            try:
                doc = DocumentIn.model_validate(parse_json_body(await request.body()))
            except ValidationError as exc:
                raise HTTPException(
                    422, validation_errors(exc.errors(include_url=False, include_context=False))
                ) from None
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            report = await run_in_threadpool(
                rag.ingest_text, collection, doc.id, doc.text, doc.title, doc.metadata, doc.format
            )
        else:
            raise HTTPException(415, "send JSON {id, text, title?, metadata?} or a multipart 'file'")
        return report.as_dict()

    @app.get("/v1/collections/{collection}/documents/{doc_id:path}", responses=ERROR_RESPONSES)
    def get_document(collection: str, doc_id: str, principal: Principal = Depends(access)) -> Response:
        principal.require(collection, "read")
        doc = rag.get_document(collection, doc_id)
        if doc is None:
            raise HTTPException(404, f"document {doc_id[:200]!r} not found in {collection!r}")
        return JSONResponse(doc)

    @app.delete("/v1/collections/{collection}/documents/{doc_id:path}", responses=ERROR_RESPONSES)
    def delete_document(collection: str, doc_id: str, principal: Principal = Depends(access)) -> dict:
        principal.require(collection, "write")
        if not rag.delete_document(collection, doc_id):
            raise HTTPException(404, f"document {doc_id[:200]!r} not found in {collection!r}")
        return {"deleted": doc_id}

    return app
