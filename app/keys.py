"""API keys scoped to collections, stored hashed in the data directory.

A key is shown once, when it is made (``spanrag keys create``); the store keeps its public id,
a SHA-256 of its secret, the collection it opens (or ``*`` for all) and its scope:

    read    query, retrieve, chat, read documents, see the collection listed
    write   read, plus add, replace and delete documents (and create the collection)
    admin   write, plus delete the collection; an admin key for ``*`` also reads /metrics

    >>> keys = KeyStore(Path("/tmp/spanrag-keys-doc"))              # doctest: +SKIP
    >>> made = keys.create("docs", "read")                          # doctest: +SKIP
    >>> keys.authenticate(made.secret).allows("docs", "read")       # doctest: +SKIP
    True

The secret is 32 random bytes, so a plain SHA-256 is enough to make a stolen key table useless
(a slow password hash protects guessable secrets; these are not guessable). Revocation takes
effect on the next request: every request reads its key's row (one indexed SQLite lookup).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
ALL_COLLECTIONS = "*"
KEY_PREFIX = "sk-spanrag-"


class KeyRequestError(ValueError):
    """A key that cannot be made or found (the message says why)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    collection: str  # a collection name, or "*" for every collection
    scope: Scope
    name: str
    created: float
    revoked: float | None = None

    def allows(self, collection: str, scope: Scope) -> bool:
        """May this key do ``scope`` on ``collection``?"""
        return self.sees(collection) and SCOPES.index(self.scope) >= SCOPES.index(scope)

    def sees(self, collection: str) -> bool:
        """Is ``collection`` visible to this key at all (listed, answered with more than 404)?"""
        return self.collection in (ALL_COLLECTIONS, collection)

    @property
    def is_global_admin(self) -> bool:
        return self.collection == ALL_COLLECTIONS and self.scope == "admin"


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the whole key to hand to the client; shown once, never stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The keys of one data directory (``keys.sqlite3``)."""

    FILE_NAME = "keys.sqlite3"

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / self.FILE_NAME
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():  # hashes only, yet nobody else needs to read them
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, digest TEXT NOT NULL,"
                " collection TEXT NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
                " created REAL NOT NULL, revoked REAL)"
            )
            conn.commit()
            self._local.conn = conn
        return conn

    def create(self, collection: str, scope: Scope, name: str = "") -> CreatedKey:
        if scope not in SCOPES:
            raise KeyRequestError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
        if collection != ALL_COLLECTIONS:
            from indexing.store.base import check_collection_name

            check_collection_name(collection)
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, collection, scope, name, time.time())
        conn = self._connection()
        with conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, digest, collection, scope, name, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, _digest(secret), collection, scope, name, key.created),
            )
        return CreatedKey(key, secret)

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        rows = (
            self._connection()
            .execute("SELECT key_id, collection, scope, name, created, revoked FROM api_keys ORDER BY created")
            .fetchall()
        )
        keys = [ApiKey(*row) for row in rows]
        return keys if include_revoked else [k for k in keys if k.revoked is None]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by id (as ``keys list`` shows it) or by the whole key."""
        if key_id.startswith(KEY_PREFIX):
            key_id = key_id[len(KEY_PREFIX) :].split("-", 1)[0]
        conn = self._connection()
        with conn:
            changed = conn.execute(
                "UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (time.time(), key_id)
            ).rowcount
        if not changed:
            raise KeyRequestError(f"no active key {key_id!r} (spanrag keys list shows them)")
        (key,) = [k for k in self.list(include_revoked=True) if k.key_id == key_id]
        return key

    def has_active_keys(self) -> bool:
        if not self.path.exists():
            return False
        row = self._connection().execute("SELECT 1 FROM api_keys WHERE revoked IS NULL LIMIT 1").fetchone()
        return row is not None

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, else None (unknown, revoked or malformed)."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200 or not self.path.exists():
            return None
        key_id = secret[len(KEY_PREFIX) :].split("-", 1)[0]
        row = (
            self._connection()
            .execute(
                "SELECT digest, key_id, collection, scope, name, created, revoked FROM api_keys WHERE key_id = ?",
                (key_id,),
            )
            .fetchone()
        )
        if row is None or not hmac.compare_digest(row[0], _digest(secret)):
            return None
        key = ApiKey(*row[1:])
        return None if key.revoked is not None else key

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
