"""The HTTP service (FastAPI). Start it with ``spanrag serve`` or
``uvicorn app.api:create_app --factory``; OpenAPI docs are at ``/docs``.

Endpoints:
    POST   /v1/collections/{collection}/query          answer with citations (+ trace); "stream": true for SSE
    POST   /v1/collections/{collection}/retrieve       ranked spans only
    POST   /v1/collections/{collection}/documents      JSON {id, text, title?, metadata?} or multipart file
    GET    /v1/collections/{collection}/documents/{doc_id}
    DELETE /v1/collections/{collection}/documents/{doc_id}
    GET    /v1/collections                             collections with their sizes
    GET    /healthz
    GET    /v1/models                                  OpenAI-compatible: each collection as "spanrag:<collection>"
    POST   /v1/chat/completions                        OpenAI-compatible chat, streamed or not (see app.openai_api)

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
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from app import sse
from app.openai_api import openai_router
from generation.openai_compatible import GeneratorUnavailable
from indexing.parsers.base import ParseError
from indexing.store.base import (
    CollectionNotFound,
    InvalidCollectionName,
    StoreMismatch,
)
from app.options import RetrievalOptions
from retrieval.pipeline import UnknownPipeline
from service.engine import RagService, ranked_payload, trace_payload, usage_payload
from service.settings import Settings

log = logging.getLogger(__name__)


class QueryRequest(RetrievalOptions):
    question: str = Field(..., min_length=1, max_length=4000)
    pipeline: str | None = None
    trace: bool = False
    stream: bool = Field(False, description="/query answers as server-sent events; /retrieve ignores it")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value


def query_events_sse(events: Iterator[tuple[str, dict]]) -> Iterator[str]:
    """``RagService.query_stream``'s events as SSE, then ``done``; a failure in mid-answer
    becomes an ``error`` event that ends the stream."""
    try:
        for kind, payload in events:
            yield sse.event(kind, payload)
    except GeneratorUnavailable as exc:
        yield sse.event("error", {"detail": exc.reason})
        return
    except Exception as exc:  # a bug: the status line is already sent, so say it in the stream
        log.exception("query stream failed")
        yield sse.event("error", {"detail": f"internal error: {type(exc).__name__}"})
        return
    yield sse.event("done", {})


class DocumentIn(BaseModel):
    id: str = Field(..., min_length=1, max_length=512)
    text: str = Field(..., min_length=1)
    title: str = ""
    format: Literal["text", "markdown", "html"] = Field("text", description="how to parse `text`")
    metadata: dict[str, Any] = Field(default_factory=dict)


def create_app(settings: Settings | None = None, service: RagService | None = None) -> FastAPI:
    rag = service or RagService(settings or Settings())
    app = FastAPI(title="spanrag", version="0.1.0", description="Span-level retrieval-augmented generation")
    app.state.rag = rag
    app.include_router(openai_router(rag))

    @app.exception_handler(CollectionNotFound)
    async def _missing_collection(_: Request, exc: CollectionNotFound):
        return JSONResponse(status_code=404, content={"detail": f"collection {exc.args[0]!r} not found"})

    @app.exception_handler(UnknownPipeline)
    async def _unknown_pipeline(_: Request, exc: UnknownPipeline):
        return JSONResponse(status_code=400, content={"detail": exc.args[0]})

    @app.exception_handler(GeneratorUnavailable)
    async def _generator_down(_: Request, exc: GeneratorUnavailable):
        # the answer cannot be written now, the request itself was fine: try again later
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})

    @app.exception_handler(StoreMismatch)
    async def _mismatch(_: Request, exc: StoreMismatch):
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(ParseError)
    async def _parse_error(_: Request, exc: ParseError):
        return JSONResponse(status_code=422, content={"detail": f"cannot ingest: {exc}"})

    @app.exception_handler(InvalidCollectionName)
    async def _invalid_name(_: Request, exc: InvalidCollectionName):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/collections")
    def list_collections() -> dict:
        return {"collections": [rag.store.collection_stats(c) for c in rag.store.list_collections()]}

    @app.post("/v1/collections/{collection}/query", response_model=None)
    def query(collection: str, body: QueryRequest) -> dict | StreamingResponse:
        if body.stream:
            events = rag.query_stream(collection, body.question, body.pipeline, body.overrides(), body.trace)
            return StreamingResponse(query_events_sse(events), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        return rag.query(collection, body.question, body.pipeline, body.overrides(), trace=body.trace)

    @app.post("/v1/collections/{collection}/retrieve")
    def retrieve(collection: str, body: QueryRequest) -> dict:
        result = rag.retrieve(collection, body.question, body.pipeline, body.overrides())
        out = {
            "spans": ranked_payload(result),
            "usage": usage_payload(result),
            "timings_ms": result.timings_ms,
            "pipeline": result.pipeline,
        }
        if body.trace:
            out["trace"] = trace_payload(result)
        return out

    @app.post("/v1/collections/{collection}/documents", status_code=201)
    async def add_document(collection: str, request: Request) -> dict:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "multipart upload needs a 'file' field")
            data = await upload.read()
            doc_id = form.get("doc_id") or None
            report = await run_in_threadpool(
                rag.ingest_upload, collection, data, upload.filename or "upload.txt", doc_id
            )
        elif content_type.startswith("application/json"):
            try:
                doc = DocumentIn.model_validate(json.loads(await request.body()))
            except json.JSONDecodeError as exc:
                raise HTTPException(422, f"body is not valid JSON: {exc}") from None
            except ValidationError as exc:
                raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
            report = await run_in_threadpool(
                rag.ingest_text, collection, doc.id, doc.text, doc.title, doc.metadata, doc.format
            )
        else:
            raise HTTPException(415, "send JSON {id, text, title?, metadata?} or a multipart 'file'")
        return report.as_dict()

    @app.get("/v1/collections/{collection}/documents/{doc_id:path}")
    def get_document(collection: str, doc_id: str) -> dict:
        doc = rag.get_document(collection, doc_id)
        if doc is None:
            raise HTTPException(404, f"document {doc_id!r} not found in {collection!r}")
        return doc

    @app.delete("/v1/collections/{collection}/documents/{doc_id:path}")
    def delete_document(collection: str, doc_id: str) -> dict:
        if not rag.delete_document(collection, doc_id):
            raise HTTPException(404, f"document {doc_id!r} not found in {collection!r}")
        return {"deleted": doc_id}

    return app
