"""Who may do what, and how much: API keys per collection, browser safety, request limits.

Three layers, each small:

- :class:`RequestGuard` (pure ASGI, outermost): the request body's size (413 before the
  body is read when ``Content-Length`` says so, and while it streams otherwise), and the
  browser rules: a write without a key must be JSON (or a multipart upload carrying
  ``X-Requested-With``), and a write from a page of another origin is refused. A cross-site
  HTML form can send neither a JSON content type, nor that header, nor a key, so it cannot
  write; DNS rebinding is stopped by Starlette's ``TrustedHostMiddleware`` (see ``create_app``).
- :class:`AccessControl` (a FastAPI dependency): the caller's :class:`Principal` from
  ``Authorization: Bearer KEY`` (401 without or with a wrong key once any key exists), and a
  per-key request rate (429 with ``Retry-After``; an open server has no keys to rate).
- :meth:`Principal.require` in each endpoint: 404 for a collection the key may not see
  (exactly as for one that does not exist, so names do not leak), 403 for one it sees
  without the scope.

With no key in the data directory the server is open, which ``spanrag serve`` allows on a
loopback address only unless told otherwise (``--allow-open``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from app.keys import ALL_COLLECTIONS, ApiKey, KeyStore, Scope
from indexing.store.base import CollectionNotFound

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UPLOAD_MARGIN_BYTES = 64 * 1024  # multipart boundaries and form fields around the file
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class AccessDenied(Exception):
    """401 (no or bad key) or 403 (the key lacks the scope), with the reason."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="spanrag"'} if self.status == 401 else {}


class RateLimited(Exception):
    def __init__(self, retry_after_s: float, limit_per_minute: int):
        super().__init__(
            f"more than {limit_per_minute} requests a minute for this key; retry in {math.ceil(retry_after_s)} s"
        )
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Principal:
    """The caller: a key, or anybody when the server runs open (no key exists)."""

    key: ApiKey | None  # None: open server

    @property
    def name(self) -> str:
        return "open" if self.key is None else self.key.key_id

    def sees(self, collection: str) -> bool:
        return self.key is None or self.key.sees(collection)

    def require(self, collection: str, scope: Scope) -> None:
        """Raise unless this caller may do ``scope`` on ``collection``: a collection the key
        cannot see is answered exactly like one that does not exist."""
        if self.key is None:
            return
        if not self.key.sees(collection):
            raise CollectionNotFound(collection)
        if not self.key.allows(collection, scope):
            raise AccessDenied(
                403,
                f"this key has the {self.key.scope!r} scope on {collection!r}; {scope!r} is needed",
                "insufficient_scope",
            )

    def require_global_admin(self, what: str) -> None:
        if self.key is not None and not self.key.is_global_admin:
            raise AccessDenied(403, f"{what} needs an admin key for every collection ('*')", "insufficient_scope")


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests a minute, bursts up to ``burst``."""

    def __init__(self, per_minute: int, burst: int):
        self.per_minute, self.burst = per_minute, max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                raise RateLimited((1.0 - tokens) / rate, self.per_minute)
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # forget idle callers rather than grow without end
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


class AccessControl:
    """The FastAPI dependency that names the caller (see module doc).

    >>> access = AccessControl(KeyStore(data_dir), RateLimiter(600, 60))   # doctest: +SKIP
    >>> @app.get("/x")                                                      # doctest: +SKIP
    ... def x(principal: Principal = Depends(access)): ...
    """

    def __init__(self, keys: KeyStore, limiter: RateLimiter):
        self.keys, self.limiter = keys, limiter

    def __call__(self, request: Request) -> Principal:
        if not self.keys.has_active_keys():
            # open: one user on their own machine (loopback) or an admin's --allow-open; the
            # rate is a per-key budget, and there are no keys to budget
            request.state.principal = Principal(None)
            return request.state.principal
        token = bearer_token(request)
        if token is None:
            raise AccessDenied(
                401,
                "an API key is needed: send 'Authorization: Bearer KEY' (spanrag keys create makes one)",
                "missing_api_key",
            )
        key = self.keys.authenticate(token)
        if key is None:
            raise AccessDenied(401, "the API key is not valid (unknown or revoked)", "invalid_api_key")
        self.limiter.take(key.key_id)
        request.state.principal = Principal(key)
        return request.state.principal


# -- the ASGI guard --------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardRules:
    max_request_bytes: int
    max_upload_bytes: int
    allowed_origins: tuple[str, ...] = ()  # CORS origins that may also write


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; an HTTPException so that
    FastAPI's body parsing lets it through as the 413 it is."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes here")


def error_body(path: str, status: int, message: str, code: str) -> dict:
    """An error in the shape of the route: OpenAI's for the OpenAI-compatible paths."""
    if path.startswith(OPENAI_PATHS):
        kind = {
            401: "authentication_error",
            403: "permission_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
        }.get(status, "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"detail": message}


class RequestGuard:
    """Body size and browser rules before any route runs (see module doc)."""

    def __init__(self, app, rules: GuardRules):
        self.app, self.rules = app, rules

    def _limit(self, method: str, path: str) -> int:
        if method in ("POST", "PUT") and path.rstrip("/").endswith("/documents"):
            return self.rules.max_upload_bytes + UPLOAD_MARGIN_BYTES
        return self.rules.max_request_bytes

    def _refusal(self, scope) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        limit = self._limit(method, path)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number", "bad_content_length"
            if int(length) > limit:
                return 413, f"the request body is {int(length)} bytes; the limit here is {limit}", "body_too_large"
        if method not in WRITE_METHODS or "authorization" in headers:
            return None
        origin = headers.get("origin")
        if (
            origin is not None
            and not self._same_origin(origin, headers.get("host", ""))
            and origin not in self.rules.allowed_origins
        ):
            return (
                403,
                f"a write from the web page of origin {origin[:100]!r} is refused (not in SPANRAG_CORS_ORIGINS)",
                "cross_origin_write",
            )
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        json_type = content_type == "application/json" or content_type.endswith("+json")
        if method == "DELETE" or json_type:
            return None
        if content_type == "multipart/form-data" and "x-requested-with" in headers:
            return None
        if method == "POST" and not content_type and length in (None, "0"):
            return None  # no body at all: nothing a form could smuggle
        return (
            415,
            (
                "without an API key a write must be JSON (Content-Type: application/json), or a multipart"
                " upload with an 'X-Requested-With' header: a cross-site web form can send neither"
            ),
            "unsupported_media_type",
        )

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        try:
            return bool(host) and urlsplit(origin).netloc.lower() == host.lower()
        except ValueError:
            return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._send_error(send, scope["path"], *refusal)
            return
        limit = self._limit(scope["method"], scope["path"])
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await self._send_error(send, scope["path"], 413, exc.detail, "body_too_large")

    @staticmethod
    async def _send_error(send, path: str, status: int, message: str, code: str) -> None:
        body = json.dumps(error_body(path, status, message, code)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def default_allowed_hosts(bind_host: str) -> list[str]:
    """The Host header values a server accepts when none are configured: the loopback names
    for a loopback bind (so a DNS-rebound name is refused), anything otherwise (keys guard it)."""
    return LOOPBACK_HOSTS if is_loopback(bind_host) else ["*"]


__all__ = [
    "ALL_COLLECTIONS",
    "AccessControl",
    "AccessDenied",
    "GuardRules",
    "KeyStore",
    "Principal",
    "RateLimited",
    "RateLimiter",
    "RequestGuard",
    "default_allowed_hosts",
    "error_body",
    "is_loopback",
]
