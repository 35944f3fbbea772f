"""The store seam: everything retrieval needs from storage, and nothing more.

Retrieval and the service talk only to :class:`SpanStore`; the embedded default is
:class:`indexing.store.sqlite_faiss.SqliteFaissStore` (SQLite for documents and spans,
FAISS for span vectors, bm25s for lexical search, all under one data directory).
A second backend (Qdrant) implements the same methods, less one capability.

**Capabilities.** Every store declares what it can do in ``capabilities`` (a frozenset of
:class:`StoreCapability`), so a caller knows before calling:

==================  ==============================================================================
``SPAN_READ``       documents, spans, the span tree, span vectors, source records (every query)
``WRITE``           replace/delete documents, drop collections, write source records (ingest)
``DENSE_SEARCH``    :meth:`~SpanStore.dense_search`, inner product over span vectors
``LEXICAL_SEARCH``  :meth:`~SpanStore.lexical_search`, BM25 per granularity
``TOKEN_VECTORS``   stored token vectors: MaxSim (``maxsim_depth``) and compression read them
``TOKEN_SEARCH``    :meth:`~SpanStore.token_search`, XTR's token index (``xtr_k``)
==================  ==============================================================================

=====================  ===========================================================
backend                capabilities
=====================  ===========================================================
``SqliteFaissStore``   all six
``QdrantStore``        all but ``TOKEN_SEARCH`` (no ``xtr`` / ``xtr-only`` pipeline)
=====================  ===========================================================

Each method of a capability is marked with it (:data:`CAPABILITY_METHODS` lists them): on a
store that lacks the capability it raises :class:`UnsupportedCapability` naming the store and
the capability, and a store that declares a capability must implement all of its methods
(checked when the class is defined). The rest (collections, :meth:`~SpanStore.refresh`,
:meth:`~SpanStore.index_footprint`, :meth:`~SpanStore.index_build_seconds`, ``close``) every
store has. A pipeline is checked when it is chosen, not when its query reaches the missing
method: :func:`require` refuses a set of needs the store lacks, and
``retrieval/requirements.py`` says what a pipeline needs (the service checks every query's
pipeline there; HTTP answers 400, the CLI prints the reason). ``tests/store_contract.py`` is
the contract test class every store passes.

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

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, TypeVar, cast

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
            f"invalid collection name {name!r}: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
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


class StoreCapability(str, Enum):
    """One thing a store can do; ``SpanStore.capabilities`` declares a backend's set."""

    SPAN_READ = "span_read"
    WRITE = "write"
    DENSE_SEARCH = "dense_search"
    LEXICAL_SEARCH = "lexical_search"
    TOKEN_VECTORS = "token_vectors"
    TOKEN_SEARCH = "token_search"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    StoreCapability.SPAN_READ: "reading documents, spans and span vectors",
    StoreCapability.WRITE: "writing documents, spans and source records",
    StoreCapability.DENSE_SEARCH: "dense search over span vectors",
    StoreCapability.LEXICAL_SEARCH: "BM25 search",
    StoreCapability.TOKEN_VECTORS: "stored token vectors, for MaxSim and compression",
    StoreCapability.TOKEN_SEARCH: "XTR's token index",
}


def store_name(store: Any) -> str:
    """How messages name a store: its ``backend`` (the ``SPANRAG_STORE`` value), else its class."""
    return getattr(store, "backend", None) or type(store).__name__


def _listed(capabilities: Iterable[StoreCapability]) -> str:
    chosen = set(capabilities)
    return ", ".join(f"{c.value} ({c.description})" for c in StoreCapability if c in chosen)


class UnsupportedCapability(NotImplementedError):
    """Something needs capabilities the store does not have: a method of a capability the
    store lacks was called, or :func:`require` refused a set of needs (a pipeline's)."""

    def __init__(self, store: str, missing: Iterable[StoreCapability], what: str):
        self.store, self.missing, self.what = store, frozenset(missing), what
        super().__init__(f"{what} needs {_listed(self.missing)}, which the {store} store does not have")


def missing_capabilities(store: Any, needed: Iterable[StoreCapability]) -> frozenset[StoreCapability]:
    """Those of ``needed`` that ``store`` does not declare."""
    return frozenset(needed) - frozenset(store.capabilities)


def require(store: Any, needed: Iterable[StoreCapability], what: str) -> None:
    """Refuse ``what`` (e.g. ``"pipeline 'xtr'"``) up front, with :class:`UnsupportedCapability`,
    when ``store`` lacks any of the capabilities it needs."""
    missing = missing_capabilities(store, needed)
    if missing:
        raise UnsupportedCapability(store_name(store), missing, what)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _capability(capability: StoreCapability, *, required: bool = True) -> Callable[[_Method], _Method]:
    """Marks a :class:`SpanStore` method as part of ``capability``. On a store without the
    capability it raises :class:`UnsupportedCapability`. ``required``: a store declaring the
    capability must implement the method (SpanStore's body is only its contract); otherwise
    SpanStore's body is a working default built on the capability's other methods."""

    def mark(method: _Method) -> _Method:
        @functools.wraps(method)
        def guarded(self: SpanStore, *args: Any, **kwargs: Any) -> Any:
            if capability not in self.capabilities:
                raise UnsupportedCapability(store_name(self), {capability}, f"{method.__name__}()")
            if required:  # unreachable: SpanStore.__init_subclass__ refuses such a class
                raise NotImplementedError(f"{type(self).__name__}.{method.__name__}")
            return method(self, *args, **kwargs)

        # markers read by CAPABILITY_METHODS and SpanStore.__init_subclass__
        guarded.__dict__.update(capability=capability, required=required)
        return cast(_Method, guarded)

    return mark


class SpanStore(ABC):
    """The contract every backend meets; see the module docstring for the capabilities.

    Methods marked with a capability raise :class:`UnsupportedCapability` on a store that
    does not declare it; the unmarked ones (collections, ``document_count``, ``refresh``,
    ``settle``, ``freshness``, ``index_footprint``, ``index_build_seconds``, ``close``) every
    store has.
    """

    capabilities: ClassVar[frozenset[StoreCapability]] = frozenset()
    """What this backend can do (see :class:`StoreCapability`)."""

    backend: ClassVar[str | None] = None
    """The backend's name in messages (the ``SPANRAG_STORE`` value); None: the class name."""

    def __init_subclass__(cls, **kwargs) -> None:
        """A store must implement every method of each capability it declares, and declare
        the capability of each capability method it implements."""
        super().__init_subclass__(**kwargs)
        unknown = [c for c in cls.capabilities if not isinstance(c, StoreCapability)]
        if unknown or not isinstance(cls.capabilities, frozenset):
            raise TypeError(f"{cls.__name__}.capabilities must be a frozenset of StoreCapability")
        for capability, names in CAPABILITY_METHODS.items():
            for name in names:
                contract = vars(SpanStore)[name]
                implemented = getattr(cls, name) is not contract
                if capability in cls.capabilities and contract.required and not implemented:
                    raise TypeError(f"{cls.__name__} declares {capability.value} but does not implement {name}")
                if capability not in cls.capabilities and implemented:
                    raise TypeError(f"{cls.__name__} implements {name} but does not declare {capability.value}")

    def supports(self, *capabilities: StoreCapability) -> bool:
        """Whether this store has every one of ``capabilities``."""
        return set(capabilities) <= self.capabilities

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

    # -- writes (WRITE; reading source records: SPAN_READ): each call is one transaction --
    @_capability(StoreCapability.WRITE)
    def replace_documents(self, collection: str, items: list[tuple[Document, list[Span], np.ndarray]]) -> None:
        """Write documents with their spans and span vectors (rows aligned with spans),
        replacing any earlier version of the same document ids, atomically."""
        raise NotImplementedError

    @_capability(StoreCapability.WRITE)
    def delete_documents(self, collection: str, doc_ids: list[str]) -> int:
        """Remove documents, their spans and vectors everywhere; returns how many existed."""
        raise NotImplementedError

    @_capability(StoreCapability.WRITE)
    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it (documents, spans, vectors, token
        vectors, file records, search indexes); ``CollectionNotFound`` when there is none."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def get_source(self, collection: str, path: str) -> SourceRecord | None:
        raise NotImplementedError

    @_capability(StoreCapability.WRITE)
    def put_source(self, collection: str, record: SourceRecord) -> None:
        raise NotImplementedError

    @_capability(StoreCapability.WRITE)
    def delete_source(self, collection: str, path: str) -> None:
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def list_sources(self, collection: str, under: str | None = None) -> list[SourceRecord]:
        raise NotImplementedError

    # -- reads (SPAN_READ) -----------------------------------------------------------------
    @_capability(StoreCapability.SPAN_READ)
    def get_document(self, collection: str, doc_id: str) -> Document | None:
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        """``{doc_id: content_hash}`` of these documents (None: of every document)."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def count_spans(self, collection: str, doc_id: str) -> int:
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def get_spans(self, collection: str, span_ids: list[str]) -> list[Span]:
        """Spans in the order asked for; unknown ids are skipped."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def document_spans(self, collection: str, doc_id: str) -> list[Span]:
        """Every span of one document in document order ([] for an unknown document)."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def children(self, collection: str, span_id: str) -> list[Span]:
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def descendants(self, collection: str, span_id: str, granularity: Granularity) -> list[Span]:
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def spans_within(self, collection: str, span: Span, granularities: list[Granularity]) -> list[Span]:
        """Spans of these granularities inside ``span`` (same document, within its offsets),
        in reading order."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def get_vectors(self, collection: str, span_ids: list[str]) -> np.ndarray:
        """Dense vectors of the given spans, rows in the order asked for; ``KeyError`` when
        one is missing. Strict: the query path reads with :meth:`find_vectors` instead."""
        raise NotImplementedError

    @_capability(StoreCapability.SPAN_READ)
    def find_vectors(self, collection: str, span_ids: list[str]) -> dict[str, np.ndarray]:
        """``{span_id: vector}`` of those of ``span_ids`` that exist now, in the order asked
        (each id once); spans deleted or replaced away since the caller saw them are left
        out, not an error. What every read of vectors on the query path uses."""
        raise NotImplementedError

    # -- token vectors (TOKEN_VECTORS; token_search: TOKEN_SEARCH) ------------------------
    @_capability(StoreCapability.TOKEN_VECTORS)
    def spans_missing_token_vectors(self, collection: str, granularities: list[Granularity]) -> list[Span]:
        """Spans of these granularities that have no token vectors yet (to backfill)."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def put_token_vectors(self, collection: str, items: list[tuple[str, EncodedTokens]], model: str) -> int:
        """Store token vectors by span id in one transaction; spans gone meanwhile are skipped.
        Token vectors live and die with their span: replacing or deleting a document removes
        them. ``model`` names the token encoder (see :meth:`token_model`)."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def token_model(self, collection: str) -> str | None:
        """The token encoder that made the stored token vectors (None: none stored, or
        stored before the model was recorded)."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def delete_token_vectors(self, collection: str) -> int:
        """Remove every token vector of the collection (a new token model or codec)."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def get_token_vectors(self, collection: str, span_ids: list[str]) -> dict[str, EncodedTokens]:
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def document_token_vectors(self, collection: str, doc_ids: list[str]) -> dict[str, list[tuple[str, EncodedTokens]]]:
        """Per document, its spans' token vectors in document order."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS)
    def token_vector_stats(self, collection: str) -> dict[str, dict[str, int]]:
        """Per codec: tokens, bytes and spans stored."""
        raise NotImplementedError

    @_capability(StoreCapability.TOKEN_VECTORS, required=False)
    def token_codecs(self, collection: str) -> set[str]:
        """The codecs of the token vectors stored (what an ingest checks before it adds
        more); a store may answer it without reading every vector."""
        return set(self.token_vector_stats(collection))

    @_capability(StoreCapability.TOKEN_VECTORS, required=False)
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

    @_capability(StoreCapability.TOKEN_SEARCH)
    def token_search(self, collection: str, query_tokens: np.ndarray, k: int) -> TokenHits:
        """XTR's first stage: the ``k`` stored tokens nearest each query token."""
        raise NotImplementedError

    # -- search (DENSE_SEARCH, LEXICAL_SEARCH) --------------------------------------------
    @_capability(StoreCapability.DENSE_SEARCH)
    def dense_search(
        self,
        collection: str,
        query: np.ndarray,
        k: int,
        granularities: list[Granularity] | None = None,
    ) -> list[ScoredSpanId]:
        """Inner-product search over span vectors, optionally only some granularities."""
        raise NotImplementedError

    @_capability(StoreCapability.DENSE_SEARCH, required=False)
    def dense_search_many(
        self,
        collection: str,
        queries: np.ndarray,
        k: int,
        granularities: list[Granularity] | None = None,
    ) -> list[list[ScoredSpanId]]:
        """:meth:`dense_search` for each row of ``queries`` (a store may batch them)."""
        return [self.dense_search(collection, query, k, granularities) for query in queries]

    @_capability(StoreCapability.LEXICAL_SEARCH)
    def lexical_search(self, collection: str, query: str, k: int, granularity: Granularity) -> list[ScoredSpanId]:
        """BM25 over the spans of one granularity (each granularity has its own statistics)."""
        raise NotImplementedError

    # -- every store -----------------------------------------------------------------------
    def index_footprint(self, collection: str) -> dict[str, int]:
        """Bytes of each search structure: ``dense``, ``bm25``, ``tokens`` (the token codes
        MaxSim reads) and ``token_index`` (XTR's token search index). Backends without
        separate structures return {}."""
        return {}

    def refresh(self, collection: str) -> None:
        """Bring this process's search structures up to the collection's last committed write
        (build, load or drop caches): the service calls it after each of its own writes so
        the next query pays nothing. Default: nothing to do (a store that caches nothing)."""

    def index_build_seconds(self, collection: str) -> dict[str, float]:
        """Seconds of each part of the last search-index build of ``collection`` in this
        process (for benchmarks); {} when nothing was built here (the default)."""
        return {}

    def document_count(self, collection: str) -> int:
        """Documents in ``collection`` (what a write's bookkeeping compares the graph with);
        the default reads :meth:`collection_stats`, which backends answer more cheaply."""
        return int(self.collection_stats(collection)["documents"])

    def settle(self, collection: str | None = None) -> None:
        """Wait until the index work this store runs in the background (merges, token
        matrix builds) is done: for tests, benchmarks and shutdown. Searches never need it.
        Default: nothing runs in the background."""

    def freshness(self, collection: str) -> dict:
        """How the collection's search structures stand: segments, writes not yet merged,
        tombstones, age of the last merge (``collection_stats`` includes it; README: Live
        updates). {} when a backend has nothing to say (the default)."""
        return {}

    @abstractmethod
    def close(self) -> None: ...


CAPABILITY_METHODS: dict[StoreCapability, tuple[str, ...]] = {
    capability: tuple(
        name for name, method in vars(SpanStore).items() if getattr(method, "capability", None) is capability
    )
    for capability in StoreCapability
}
"""The :class:`SpanStore` methods of each capability."""

ALL_CAPABILITIES: frozenset[StoreCapability] = frozenset(StoreCapability)
