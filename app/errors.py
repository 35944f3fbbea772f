"""One table from the exceptions a request may raise to what the HTTP answer says: the
status, the message, headers, and OpenAI's ``type``/``code``/``param``. Both surfaces read
it: the native API answers ``{"detail": message}`` (``native_response``), the OpenAI-compatible
API ``{"error": {"message", "type", "param", "code"}}`` (``app.openai_api.OpenAIError.of``);
the shapes differ, the status and the message do not.

    >>> error = service_error(UnknownPipeline("unknown pipeline 'x'"))
    >>> error.status, error.message, error.param
    (400, "unknown pipeline 'x'", 'pipeline')

Not in the table, because the framework raises them and each surface has its own convention:
request validation (native 422 with the list of reasons, OpenAI 400 ``invalid_request_error``)
and ``HTTPException`` (its own status on both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from app.security import AccessDenied, RateLimited
from generation.openai_compatible import GeneratorUnavailable
from indexing.parsers.base import ParseError
from indexing.parsers.limits import DocumentTooLarge
from indexing.store.base import CollectionNotFound, InvalidCollectionName, StoreMismatch
from retrieval.pipeline import UnknownPipeline
from service.engine import DocumentConflict


@dataclass(frozen=True)
class ServiceError:
    """What an error answer says, whatever its shape. ``error_type``, ``code`` and ``param``
    are OpenAI's ``type``, ``code`` and ``param`` (the native shape has no place for them)."""

    status: int
    message: str
    error_type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None


def _cannot_ingest(exc: ParseError) -> str:
    return f"cannot ingest: {str(exc)[:1000]}"


ERRORS: tuple[tuple[type[Exception], Callable[[Any], ServiceError]], ...] = (
    # (exception, its answer); the first that matches is used, so a subclass comes before its base
    (
        AccessDenied,
        lambda e: ServiceError(  # 401: no or bad key; 403: the key lacks the scope
            e.status,
            e.message,
            "authentication_error" if e.status == 401 else "permission_error",
            e.code,
            headers=e.headers,
        ),
    ),
    (RateLimited, lambda e: ServiceError(429, str(e), "rate_limit_error", "rate_limit_exceeded", headers=e.headers)),
    (
        CollectionNotFound,
        lambda e: ServiceError(  # a collection is a model on the OpenAI surface
            404, f"collection {str(e.args[0])[:200]!r} not found", code="model_not_found", param="model"
        ),
    ),
    (UnknownPipeline, lambda e: ServiceError(400, str(e.args[0]), param="pipeline")),
    (
        GeneratorUnavailable,
        lambda e: ServiceError(  # the request was fine; the model cannot answer now
            503, e.reason, "service_unavailable", "generator_unavailable", headers={"Retry-After": "5"}
        ),
    ),
    (StoreMismatch, lambda e: ServiceError(409, str(e), "conflict")),  # built with another model
    (DocumentConflict, lambda e: ServiceError(409, str(e), "conflict")),  # the document belongs to a file
    (DocumentTooLarge, lambda e: ServiceError(413, _cannot_ingest(e))),
    (ParseError, lambda e: ServiceError(422, _cannot_ingest(e))),
    (InvalidCollectionName, lambda e: ServiceError(422, str(e)[:500])),
)

ERROR_TYPES: tuple[type[Exception], ...] = tuple(kind for kind, _ in ERRORS)


def service_error(exc: BaseException) -> ServiceError | None:
    """The answer to ``exc`` from ``ERRORS``; None: not in the table (a bug, or the
    framework's own)."""
    for kind, answer in ERRORS:
        if isinstance(exc, kind):
            return answer(exc)
    return None


def native_response(error: ServiceError) -> JSONResponse:
    """The native API's shape: ``{"detail": message}``."""
    return JSONResponse(status_code=error.status, content={"detail": error.message}, headers=error.headers)
