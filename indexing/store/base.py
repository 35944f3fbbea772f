"""The store seam: everything retrieval needs from storage, and nothing more.

Retrieval and the service talk only to :class:`SpanStore`; the embedded default is
:class:`indexing.store.sqlite_faiss.SqliteFaissStore` (SQLite for documents and spans,
FAISS for span vectors, bm25s for lexical search, all under one data directory).
A second backend (Qdrant) implements the same methods.

**Reads race with writes, and vanished spans are dropped.** Queries take no lock: they run
in parallel with ingests and deletes (writes are serialized among themselves, not against
reads), and the store offers no snapshot across calls. Between a query's first stage and its
last read, a concurrent delete or replace may remove spans the first stage returned (or,
for a replace, give their ids to the new version's spans). So every read the query path
makes returns what exists *now* and leaves out what is gone: :meth:`SpanStore.get_spans`,
:meth:`~SpanStore.document_spans`, :meth:`~SpanStore.spans_within`,
:meth:`~SpanStore.find_vectors`, :meth:`~SpanStore.get_token_vectors`,
:meth:`~SpanStore.document_token_vectors` and :meth:`~SpanStore.document_tokens` skip unknown
ids and documents, and retrieval drops the candidates, units and pieces it can no longer read
(see ``retrieval/pipeline.py``). The strict :meth:`~SpanStore.get_vectors`, which raises
``KeyError`` for a missing span, is for callers that hold the write lock (ingest).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from indexing.spans import Document, Granularity, Span
from indexing.store.token_matrix import PackedTokens, TokenHits
from indexing.token_codecs import EncodedTokens, decode_tokens


class CollectionNotFound(KeyError):
    """Raised for a collection that was never created; the HTTP layer maps it to 404."""


class InvalidCollectionName(ValueError):
    """A collection name that is not safe as a file name or URL segment."""


COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name) or ".." in name:
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


class StoreMismatch(ValueError):
    """Raised when a collection was built with another embedding model than the one asked for."""

    @classmethod
    def for_model(cls, name: str, stored: tuple[str, int], asked: tuple[str, int]) -> StoreMismatch:
        return cls(
            f"collection {name!r} was built with model {stored[0]!r} (dim {stored[1]}), "
            f"not {asked[0]!r} (dim {asked[1]}); use another collection"
        )


@dataclass
class SourceRecord:
    """A file (or upload) that produced documents, with the hash that makes re-ingest a no-op."""

    path: str
    content_hash: str
    doc_ids: list[str]


@dataclass
class ScoredSpanId:
    span_id: str
    score: float


class SpanStore(ABC):
    # -- collections -------------------------------------------------------------------
    @abstractmethod
    def create_collection(self, name: str, model: str, dim: int) -> None:
        """Create ``name`` if missing; raise :class:`StoreMismatch` if it exists with another model."""

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def list_collections(self) -> list[str]: ...

    @abstractmethod
    def collection_model(self, name: str) -> str:
        """The embedding model a collection was built with."""

    @abstractmethod
    def collection_stats(self, name: str) -> dict: ...

    # -- writes: each call is one transaction ------------------------------------------
    @abstractmethod
    def replace_documents(
        self, collection: str, items: list[tuple[Document, list[Span], np.ndarray]]
    ) -> None:
        """Write documents with their spans and span vectors (rows aligned with spans),
        replacing any earlier version of the same document ids, atomically."""

    @abstractmethod
    def delete_documents(self, collection: str, doc_ids: list[str]) -> int:
        """Remove documents, their spans and vectors everywhere; returns how many existed."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it (documents, spans, vectors, token
        vectors, file records, search indexes); ``CollectionNotFound`` when there is none."""

    @abstractmethod
    def get_source(self, collection: str, path: str) -> SourceRecord | None: ...

    @abstractmethod
    def put_source(self, collection: str, record: SourceRecord) -> None: ...

    @abstractmethod
    def delete_source(self, collection: str, path: str) -> None: ...

    @abstractmethod
    def list_sources(self, collection: str, under: str | None = None) -> list[SourceRecord]: ...

    # -- reads ---------------------------------------------------------------------------
    @abstractmethod
    def get_document(self, collection: str, doc_id: str) -> Document | None: ...

    @abstractmethod
    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        """``{doc_id: content_hash}`` of these documents (None: of every document)."""

    @abstractmethod
    def count_spans(self, collection: str, doc_id: str) -> int: ...

    @abstractmethod
    def get_spans(self, collection: str, span_ids: list[str]) -> list[Span]:
        """Spans in the order asked for; unknown ids are skipped."""

    @abstractmethod
    def document_spans(self, collection: str, doc_id: str) -> list[Span]:
        """Every span of one document in document order ([] for an unknown document)."""

    @abstractmethod
    def children(self, collection: str, span_id: str) -> list[Span]: ...

    @abstractmethod
    def descendants(self, collection: str, span_id: str, granularity: Granularity) -> list[Span]: ...

    @abstractmethod
    def spans_within(self, collection: str, span: Span, granularities: list[Granularity]) -> list[Span]:
        """Spans of these granularities inside ``span`` (same document, within its offsets),
        in reading order."""

    @abstractmethod
    def get_vectors(self, collection: str, span_ids: list[str]) -> np.ndarray:
        """Dense vectors of the given spans, rows in the order asked for; ``KeyError`` when
        one is missing. Strict: the query path reads with :meth:`find_vectors` instead."""

    @abstractmethod
    def find_vectors(self, collection: str, span_ids: list[str]) -> dict[str, np.ndarray]:
        """``{span_id: vector}`` of those of ``span_ids`` that exist now, in the order asked
        (each id once); spans deleted or replaced away since the caller saw them are left
        out, not an error. What every read of vectors on the query path uses."""

    # -- token vectors (late interaction) --------------------------------------------------
    @abstractmethod
    def spans_missing_token_vectors(self, collection: str, granularities: list[Granularity]) -> list[Span]:
        """Spans of these granularities that have no token vectors yet (to backfill)."""

    @abstractmethod
    def put_token_vectors(
        self, collection: str, items: list[tuple[str, EncodedTokens]], model: str
    ) -> int:
        """Store token vectors by span id in one transaction; spans gone meanwhile are skipped.
        Token vectors live and die with their span: replacing or deleting a document removes
        them. ``model`` names the token encoder (see :meth:`token_model`)."""

    @abstractmethod
    def token_model(self, collection: str) -> str | None:
        """The token encoder that made the stored token vectors (None: none stored, or
        stored before the model was recorded)."""

    @abstractmethod
    def delete_token_vectors(self, collection: str) -> int:
        """Remove every token vector of the collection (a new token model or codec)."""

    @abstractmethod
    def get_token_vectors(self, collection: str, span_ids: list[str]) -> dict[str, EncodedTokens]: ...

    @abstractmethod
    def document_token_vectors(
        self, collection: str, doc_ids: list[str]
    ) -> dict[str, list[tuple[str, EncodedTokens]]]:
        """Per document, its spans' token vectors in document order."""

    @abstractmethod
    def token_vector_stats(self, collection: str) -> dict[str, dict[str, int]]:
        """Per codec: tokens, bytes and spans stored."""

    def document_tokens(self, collection: str, doc_ids: list[str]) -> PackedTokens:
        """Decoded token vectors of these documents packed for one MaxSim product (documents
        without token vectors are left out). Backends with a faster path override this."""
        stored = self.document_token_vectors(collection, doc_ids)
        found = [d for d in doc_ids if d in stored]
        parts = [np.concatenate([decode_tokens(e) for _, e in stored[d]]) for d in found]
        if not parts:
            return PackedTokens([], np.zeros((0, 0), np.float32), np.zeros(1, np.int64))
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        return PackedTokens(found, np.concatenate(parts), offsets, [stored[d][0][0] for d in found])

    def index_footprint(self, collection: str) -> dict[str, int]:
        """Bytes of each search structure: ``dense``, ``bm25``, ``tokens`` (the token codes
        MaxSim reads) and ``token_index`` (XTR's token search index). Backends without
        separate structures return {}."""
        return {}

    def token_search(self, collection: str, query_tokens: np.ndarray, k: int) -> TokenHits:
        """XTR's first stage: the ``k`` stored tokens nearest each query token."""
        raise NotImplementedError(f"{type(self).__name__} has no token index (needed by the xtr pipeline)")

    # -- search --------------------------------------------------------------------------
    @abstractmethod
    def dense_search(
        self,
        collection: str,
        query: np.ndarray,
        k: int,
        granularities: list[Granularity] | None = None,
    ) -> list[ScoredSpanId]:
        """Inner-product search over span vectors, optionally only some granularities."""

    @abstractmethod
    def lexical_search(
        self, collection: str, query: str, k: int, granularity: Granularity
    ) -> list[ScoredSpanId]:
        """BM25 over the spans of one granularity (each granularity has its own statistics)."""

    @abstractmethod
    def close(self) -> None: ...
