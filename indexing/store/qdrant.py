"""The scale-out backend: every span, document and source record in Qdrant, behind the same
:class:`~indexing.store.base.SpanStore` seam as SQLite + FAISS.

    >>> store = QdrantStore(path=Path(".spanrag/qdrant"))              # local mode (embedded)  # doctest: +SKIP
    >>> store = QdrantStore(url="http://qdrant-1:6333", shards=6, replication=2)  # a cluster  # doctest: +SKIP

Layout (``prefix`` defaults to ``spanrag``):

* ``<prefix>__<collection>``: one point per span (id: ``uuid5`` of the span id), with the
  named vector ``dense`` (cosine; span vectors are unit length, so cosine is the inner
  product the FAISS store ranks by) and, for spans that have token vectors, the multivector
  ``tokens`` with the MaxSim comparator over dot products of the decoded codes (what
  spanrag's own MaxSim computes; a Qdrant-side late interaction query can use it). The payload holds the span fields, a ``row`` number in
  write order (BM25 breaks ties by it, as the FAISS store does by SQLite row id) and, for
  token-bearing spans, the stored codes themselves (``token_codec``, ``token_codes``, base64),
  so :meth:`get_token_vectors` returns exactly the ``EncodedTokens`` that were put. Payload
  indexes on ``span_id``, ``doc_id``, ``parent_id`` and ``granularity`` serve every filter.
  Sharding and replication are set when the collection is created (``shards``,
  ``replication``).
* ``<prefix>__meta``: collection, document and source records as vector-less points, so a
  spanrag service holds no state of its own and several replicas can share one cluster.

BM25 runs in Qdrant: each span has the sparse vector ``bm25_<granularity>`` of its words
(spanrag's own tokenizer, stop words and stemmer; a word's index is a 32-bit hash of it)
whose values are BM25's term-frequency part, ``tf / (tf + k1·(1 − b + b·len/avglen))``, and
the sparse space has Qdrant's IDF modifier, which multiplies in Lucene's IDF over the
spans of that granularity at query time, as bm25s does. So a replica keeps no BM25 state
and sees every replica's writes at once. The average length is the collection's at write
time (a running total in the collection record): a span's length normalization is that of
the moment it was written, which drifts from bm25s's rebuilt one as the collection grows.
A collection created before these sparse spaces existed keeps the old way (a bm25s index
built per process from the scrolled spans, cached per write generation) until re-created.

Writes are not transactional (Qdrant has no multi-point transactions): ``replace_documents``
validates every input before writing, removes the old version, writes the spans, and
writes the document record last, so after a crash a document either has its record (and
all its spans) or is missing from :meth:`document_hashes` and is rewritten by the next
ingest.

Capabilities: all but ``TOKEN_SEARCH`` (XTR's token index): ``token_search`` raises
:class:`~indexing.store.base.UnsupportedCapability`, and the ``xtr`` and ``xtr-only``
pipelines are refused when a query chooses them (``retrieval/requirements.py``).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexing.spans import GRANULARITIES, Document, Granularity, Span, context_text, doc_id_of
from indexing.store.base import (
    ALL_CAPABILITIES,
    CollectionNotFound,
    ScoredSpanId,
    SourceRecord,
    SpanStore,
    StoreCapability,
    StoreMismatch,
    check_collection_name,
)
from indexing.store.bm25 import K1, B, Bm25Index, tokenize_words
from indexing.token_codecs import EncodedTokens, decode_tokens, encoded_from_bytes

if TYPE_CHECKING:
    from qdrant_client import models

NAMESPACE = uuid.UUID("6f1c1f8e-2f4e-4f5e-9d1a-6a1b5c0e7d21")
SPAN_INDEXES = ("span_id", "doc_id", "parent_id", "granularity")
BATCH = 256


def point_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def sparse_name(granularity: str) -> str:
    return f"bm25_{granularity}"


def term_index(word: str) -> int:
    """A word's index in the sparse BM25 spaces (stable across processes and versions).

    >>> term_index("appl") == term_index("appl") != term_index("pear")
    True
    """
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")


def bm25_terms(words: list[str], avgdl: float) -> tuple[list[int], list[float]]:
    """The sparse vector of a span's words: BM25's term-frequency part per distinct word."""
    norm = K1 * (1 - B + B * len(words) / max(avgdl, 1e-9))
    counts = Counter(words)
    return [term_index(w) for w in counts], [tf / (tf + norm) for tf in counts.values()]


@dataclass
class _Lexical:
    version: tuple[int, str]  # the collection's (generation, write token) it was built at
    bm25: dict[str, Bm25Index]
    span_id_of_row: dict[int, str]


class _OneCallAtATime:
    """A local-mode client whose calls run one at a time. qdrant-client's local mode keeps a
    collection in Python lists and numpy arrays that a write grows in place, and takes no
    lock: a search or scroll running while an upsert appends can fail (arrays of different
    lengths, a dict changing size while iterated). A query waits for at most one call of a
    write (a batch of ``BATCH`` points), never for a whole ingest. A server needs none of this."""

    def __init__(self, client):
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return call


class QdrantStore(SpanStore):
    capabilities = ALL_CAPABILITIES - {StoreCapability.TOKEN_SEARCH}
    backend = "qdrant"

    def __init__(
        self,
        url: str | None = None,
        path: Path | None = None,
        api_key: str | None = None,
        shards: int = 1,
        replication: int = 1,
        prefix: str = "spanrag",
        local_engine: str = "client",
    ):
        """``local_engine`` (without a ``url``): ``client``, qdrant-client's local mode, or
        ``edge``, the Qdrant engine in-process (``indexing.store.qdrant_edge``)."""
        from qdrant_client import QdrantClient

        if url is None:
            if path is None:
                raise ValueError("QdrantStore needs a url (server or cluster) or a path (local mode)")
            if local_engine not in ("client", "edge"):
                raise ValueError(f"unknown local Qdrant engine {local_engine!r}; known: client, edge")
            Path(path).mkdir(parents=True, exist_ok=True)
        self.local = url is None  # in-process: one call at a time (neither engine documents threads)
        # local mode ignores payload indexes (brute force); a server and edge build them
        self.payload_indexes = url is not None or local_engine == "edge"
        if url:
            client = QdrantClient(url=url, api_key=api_key)
        elif local_engine == "edge":
            from indexing.store.qdrant_edge import EdgeClient

            client = EdgeClient(Path(str(path)))
        else:
            client = QdrantClient(path=str(path))
        self.client = _OneCallAtATime(client) if self.local else client
        self.shards, self.replication, self.prefix = shards, replication, prefix
        self._meta = f"{prefix}__meta"
        self._lock = threading.RLock()
        self._lexical: dict[str, _Lexical] = {}
        self._engine_bm25: dict[str, bool] = {}  # collection -> has the sparse BM25 spaces
        self._ensure_meta()

    # -- plumbing ------------------------------------------------------------------------
    @staticmethod
    def _models():
        from qdrant_client import models

        return models

    def _spans(self, collection: str) -> str:
        return f"{self.prefix}__{collection}"

    def _ensure_meta(self) -> None:
        if not self.client.collection_exists(self._meta):
            self.client.create_collection(self._meta, vectors_config={})
            self._index_payload(self._meta, ("kind", "collection", "key"))

    def _index_payload(self, name: str, keys: tuple[str, ...]) -> None:
        if not self.payload_indexes:
            return
        m = self._models()
        for key in keys:
            self.client.create_payload_index(name, key, m.PayloadSchemaType.KEYWORD)

    def _match(self, **conditions) -> models.Filter:
        m = self._models()
        must = []
        for key, value in conditions.items():
            if isinstance(value, (list, tuple)):
                must.append(m.FieldCondition(key=key, match=m.MatchAny(any=list(value))))
            else:
                must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
        return m.Filter(must=must)

    def _scroll(self, name: str, query_filter=None, with_vectors=False) -> Iterator:
        offset = None
        while True:
            points, offset = self.client.scroll(
                name,
                scroll_filter=query_filter,
                limit=BATCH,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
            yield from points
            if offset is None:
                return

    def _meta_record(self, kind: str, collection: str, key: str) -> dict | None:
        found = self.client.retrieve(self._meta, [point_id(kind, collection, key)], with_payload=True)
        return found[0].payload if found else None

    def _put_meta(self, kind: str, collection: str, key: str, payload: dict) -> None:
        m = self._models()
        self.client.upsert(
            self._meta,
            [
                m.PointStruct(
                    id=point_id(kind, collection, key),
                    vector={},
                    payload={"kind": kind, "collection": collection, "key": key, **payload},
                )
            ],
            wait=True,
        )

    def _delete_meta(self, kind: str, collection: str, keys: list[str]) -> None:
        m = self._models()
        if keys:
            self.client.delete(
                self._meta, m.PointIdsList(points=[point_id(kind, collection, k) for k in keys]), wait=True
            )

    def _require(self, collection: str) -> dict:
        record = self._meta_record("collection", collection, collection)
        if record is None:
            raise CollectionNotFound(collection)
        return record

    @staticmethod
    def _version(record: dict) -> tuple[int, str]:
        return record.get("generation", 0), record.get("write_token", "")

    def _put_collection_record(self, collection: str, record: dict) -> None:
        self._put_meta(
            "collection",
            collection,
            collection,
            {k: v for k, v in record.items() if k not in ("kind", "collection", "key")},
        )

    def _bump(self, collection: str, rows_used: int = 0, bm25_lengths: dict | None = None) -> None:
        record = self._require(collection)
        if bm25_lengths is not None:
            record["bm25_lengths"] = bm25_lengths
        record["generation"] = record.get("generation", 0) + 1
        # Two processes writing at once can both read generation g and both write g + 1; a
        # fresh token per write still tells every reader's cache that something changed.
        record["write_token"] = uuid.uuid4().hex
        record["next_row"] = record.get("next_row", 0) + rows_used
        self._put_collection_record(collection, record)

    # -- collections -----------------------------------------------------------------------
    def create_collection(self, name: str, model: str, dim: int) -> None:
        check_collection_name(name)
        m = self._models()
        with self._lock:
            record = self._meta_record("collection", name, name)
            if record is not None:
                if (record["model"], record["dim"]) != (model, dim):
                    raise StoreMismatch.for_model(name, (record["model"], record["dim"]), (model, dim))
                return
            spans = self._spans(name)
            if not self.client.collection_exists(spans):
                self.client.create_collection(
                    spans,
                    vectors_config={
                        "dense": m.VectorParams(size=dim, distance=m.Distance.COSINE),
                        "tokens": m.VectorParams(
                            size=dim,
                            distance=m.Distance.DOT,  # spanrag's MaxSim is a dot product of decoded codes
                            multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                        ),
                    },
                    sparse_vectors_config={
                        sparse_name(g): m.SparseVectorParams(modifier=m.Modifier.IDF) for g in GRANULARITIES
                    },
                    shard_number=self.shards,
                    replication_factor=self.replication,
                )
                self._index_payload(spans, SPAN_INDEXES)
            self._put_meta(
                "collection",
                name,
                name,
                {
                    "name": name,
                    "model": model,
                    "dim": dim,
                    "generation": 0,
                    "next_row": 0,
                    "token_model": None,
                },
            )

    def has_collection(self, name: str) -> bool:
        return self._meta_record("collection", name, name) is not None

    def list_collections(self) -> list[str]:
        return sorted(p.payload["name"] for p in self._scroll(self._meta, self._match(kind="collection")))

    def collection_model(self, name: str) -> str:
        return self._require(name)["model"]

    def document_count(self, collection: str) -> int:
        self._require(collection)
        return self.client.count(self._meta, count_filter=self._match(kind="document", collection=collection)).count

    def collection_stats(self, name: str) -> dict:
        record = self._require(name)
        n_docs = self.client.count(self._meta, count_filter=self._match(kind="document", collection=name)).count
        by_granularity = {}
        for g in GRANULARITIES:
            n = self.client.count(self._spans(name), count_filter=self._match(granularity=g)).count
            if n:
                by_granularity[g] = n
        return {
            "name": name,
            "model": record["model"],
            "dim": record["dim"],
            "generation": record["generation"],
            "documents": n_docs,
            "spans": sum(by_granularity.values()),
            "spans_by_granularity": by_granularity,
            "freshness": self.freshness(name),
        }

    def freshness(self, collection: str) -> dict:
        """Qdrant's own view: its segments, whether its optimizers are still merging
        (``status`` yellow), and how many points its vector index covers yet (a point not
        yet indexed is searched by a full scan of its segment, so it is found anyway)."""
        info = self.client.get_collection(self._spans(collection))
        optimizer = info.optimizer_status
        return {
            "segments": info.segments_count,
            "status": str(getattr(info.status, "value", info.status)),
            "optimizer": str(getattr(optimizer, "value", None) or getattr(optimizer, "error", optimizer)),
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
        }

    # -- writes ----------------------------------------------------------------------------------
    def replace_documents(self, collection: str, items: list[tuple[Document, list[Span], np.ndarray]]) -> None:
        m = self._models()
        with self._lock:
            record = self._require(collection)
            dim = record["dim"]
            for doc, spans, vectors in items:  # validate everything before writing anything
                if vectors.shape != (len(spans), dim):
                    raise ValueError(
                        f"document {doc.id!r}: {vectors.shape} vectors for {len(spans)} spans of dim {dim}"
                    )
            self._delete_in_order(collection, [doc.id for doc, _, _ in items])
            row = record.get("next_row", 0)
            points = []
            all_spans = [span for _, spans, _ in items for span in spans]
            words = (
                tokenize_words([span.context_text for span in all_spans]) if self._has_engine_bm25(collection) else []
            )
            lengths = self._bm25_lengths(record, all_spans, words)
            n = 0
            for _doc, spans, vectors in items:
                for span, vector in zip(spans, np.asarray(vectors, dtype=np.float32)):
                    named: dict = {"dense": vector.tolist()}
                    if words and words[n]:
                        totals = lengths[span.granularity]
                        indices, values = bm25_terms(words[n], totals[0] / max(totals[1], 1))
                        named[sparse_name(span.granularity)] = m.SparseVector(indices=indices, values=values)
                    points.append(
                        m.PointStruct(id=point_id(span.id), vector=named, payload={**_span_payload(span), "row": row})
                    )
                    row += 1
                    n += 1
            for start in range(0, len(points), BATCH):
                self.client.upsert(self._spans(collection), points[start : start + BATCH], wait=True)
            for doc, spans, _ in items:
                self._put_meta(
                    "document",
                    collection,
                    doc.id,
                    {
                        "doc_id": doc.id,
                        "title": doc.title,
                        "source": doc.source,
                        "content_hash": doc.content_hash,
                        "text": doc.text,
                        "metadata": doc.metadata,
                        "span_ids": [span.id for span in spans],  # per-document reads by point id, not by filter
                    },
                )
            self._bump(collection, row - record.get("next_row", 0), lengths)

    def _bm25_lengths(self, record: dict, spans: list[Span], words: list[list[str]]) -> dict[str, list[int]]:
        """Words and spans written so far per granularity, this write included: the
        average length BM25 normalizes by."""
        lengths: dict[str, list[int]] = {g: list(record.get("bm25_lengths", {}).get(g, (0, 0))) for g in GRANULARITIES}
        for span, span_words in zip(spans, words, strict=False):
            lengths[span.granularity][0] += len(span_words)
            lengths[span.granularity][1] += 1
        return lengths

    def _has_engine_bm25(self, collection: str) -> bool:
        known = self._engine_bm25.get(collection)
        if known is None:
            sparse = self.client.get_collection(self._spans(collection)).config.params.sparse_vectors or {}
            known = self._engine_bm25[collection] = all(sparse_name(g) in sparse for g in GRANULARITIES)
        return known

    def _document_records(self, collection: str, doc_ids: list[str]) -> dict[str, dict]:
        ids = [point_id("document", collection, d) for d in doc_ids]
        found = self.client.retrieve(self._meta, ids, with_payload=True) if ids else []
        return {p.payload["doc_id"]: p.payload for p in found}

    def _delete_in_order(self, collection: str, doc_ids: list[str]) -> int:
        """Document records first, then their spans (a crash leaves spans without a record,
        which the next ingest rewrites)."""
        m = self._models()
        records = self._document_records(collection, doc_ids)
        self._delete_meta("document", collection, list(records))
        span_points = [point_id(s) for r in records.values() for s in r.get("span_ids", [])]
        for start in range(0, len(span_points), BATCH):
            self.client.delete(
                self._spans(collection), m.PointIdsList(points=span_points[start : start + BATCH]), wait=True
            )
        return len(records)

    def delete_documents(self, collection: str, doc_ids: list[str]) -> int:
        with self._lock:
            self._require(collection)
            existed = self._delete_in_order(collection, list(dict.fromkeys(doc_ids)))
            if existed:
                self._bump(collection)
            return existed

    def get_source(self, collection: str, path: str) -> SourceRecord | None:
        record = self._meta_record("source", collection, path)
        return None if record is None else SourceRecord(record["path"], record["content_hash"], list(record["doc_ids"]))

    def put_source(self, collection: str, record: SourceRecord) -> None:
        self._put_meta(
            "source",
            collection,
            record.path,
            {
                "path": record.path,
                "content_hash": record.content_hash,
                "doc_ids": list(record.doc_ids),
            },
        )

    def delete_source(self, collection: str, path: str) -> None:
        self._delete_meta("source", collection, [path])

    def list_sources(self, collection: str, under: str | None = None) -> list[SourceRecord]:
        import os

        prefix = None if under is None else under.rstrip(os.sep) + os.sep
        out = []
        for p in self._scroll(self._meta, self._match(kind="source", collection=collection)):
            if prefix is None or p.payload["path"].startswith(prefix):
                out.append(SourceRecord(p.payload["path"], p.payload["content_hash"], list(p.payload["doc_ids"])))
        return out

    # -- reads -----------------------------------------------------------------------------------
    def get_document(self, collection: str, doc_id: str) -> Document | None:
        r = self._meta_record("document", collection, doc_id)
        if r is None:
            return None
        return Document(r["doc_id"], collection, r["title"], r["source"], r["content_hash"], r["text"], r["metadata"])

    def document_hashes(self, collection: str, doc_ids: list[str] | None = None) -> dict[str, str]:
        conditions: dict[str, str | list[str]] = {"kind": "document", "collection": collection}
        if doc_ids is not None:
            if not doc_ids:
                return {}
            conditions["key"] = list(doc_ids)
        found = {
            p.payload["doc_id"]: p.payload["content_hash"] for p in self._scroll(self._meta, self._match(**conditions))
        }
        return dict(sorted(found.items()))

    def count_spans(self, collection: str, doc_id: str) -> int:
        record = self._document_records(collection, [doc_id]).get(doc_id)
        return 0 if record is None else len(record.get("span_ids", []))

    def _span_points(self, collection: str, span_ids: list[str], vectors=False) -> dict[str, models.Record]:
        out = {}
        ids = list(dict.fromkeys(span_ids))
        for start in range(0, len(ids), BATCH):
            for p in self.client.retrieve(
                self._spans(collection),
                [point_id(s) for s in ids[start : start + BATCH]],
                with_payload=True,
                with_vectors=vectors,
            ):
                out[p.payload["span_id"]] = p
        return out

    def get_spans(self, collection: str, span_ids: list[str]) -> list[Span]:
        self._require(collection)
        found = self._span_points(collection, span_ids)
        return [_payload_span(found[s].payload) for s in span_ids if s in found]

    def document_spans(self, collection: str, doc_id: str) -> list[Span]:
        record = self._document_records(collection, [doc_id]).get(doc_id)
        if record is None:
            return []
        found = self._span_points(collection, record.get("span_ids", []))
        return sorted((_payload_span(p.payload) for p in found.values()), key=lambda s: s.order)

    def children(self, collection: str, span_id: str) -> list[Span]:
        doc_id = doc_id_of(span_id)
        return [s for s in self.document_spans(collection, doc_id) if s.parent_id == span_id]

    def descendants(self, collection: str, span_id: str, granularity: Granularity) -> list[Span]:
        found = self.get_spans(collection, [span_id])
        if not found:
            return []
        (parent,) = found
        return self.spans_within(collection, parent, [granularity])

    def spans_within(self, collection: str, span: Span, granularities: list[Granularity]) -> list[Span]:
        if not granularities:
            return []
        inside = [
            s
            for s in self.document_spans(collection, span.doc_id)
            if s.granularity in granularities and s.start >= span.start and s.end <= span.end
        ]
        return sorted(inside, key=lambda s: (s.start, s.order))

    def get_vectors(self, collection: str, span_ids: list[str]) -> np.ndarray:
        dim = self._require(collection)["dim"]
        found = self._span_points(collection, span_ids, vectors=["dense"])
        missing = [s for s in span_ids if s not in found]
        if missing:
            raise KeyError(f"no vectors for spans {missing[:3]}")
        if not span_ids:
            return np.zeros((0, dim), np.float32)
        return np.stack([np.asarray(found[s].vector["dense"], dtype=np.float32) for s in span_ids])

    def find_vectors(self, collection: str, span_ids: list[str]) -> dict[str, np.ndarray]:
        self._require(collection)
        found = self._span_points(collection, span_ids, vectors=["dense"])
        return {
            s: np.asarray(found[s].vector["dense"], dtype=np.float32) for s in dict.fromkeys(span_ids) if s in found
        }

    # -- token vectors -----------------------------------------------------------------------------
    def _token_filter(self, has_tokens: bool, **must) -> models.Filter:
        """Spans with (or without) token vectors, matching ``must`` as :meth:`_match` does."""
        m = self._models()
        no_tokens = m.IsEmptyCondition(is_empty=m.PayloadField(key="token_codec"))
        query = self._match(**must)
        if has_tokens:
            query.must_not = [no_tokens]
        else:
            query.must.append(no_tokens)
        return query

    def spans_missing_token_vectors(self, collection: str, granularities: list[Granularity]) -> list[Span]:
        self._require(collection)
        if not granularities:
            return []
        query = self._token_filter(False, granularity=list(granularities))
        points = sorted(self._scroll(self._spans(collection), query), key=lambda p: p.payload["row"])
        return [_payload_span(p.payload) for p in points]

    def put_token_vectors(self, collection: str, items: list[tuple[str, EncodedTokens]], model: str) -> int:
        m = self._models()
        with self._lock:
            record = self._require(collection)
            present = self._span_points(collection, [s for s, _ in items])
            kept = [(point_id(s), e) for s, e in items if s in present and len(e)]
            for start in range(0, len(kept), BATCH):
                batch = kept[start : start + BATCH]
                self.client.update_vectors(
                    self._spans(collection),
                    [m.PointVectors(id=pid, vector={"tokens": decode_tokens(e).tolist()}) for pid, e in batch],
                    wait=True,
                )
                self.client.batch_update_points(
                    self._spans(collection),
                    [
                        m.SetPayloadOperation(set_payload=m.SetPayload(payload=_token_payload(e), points=[pid]))
                        for pid, e in batch
                    ],
                    wait=True,
                )
            written = len(kept)
            if record.get("token_model") != model:  # token writes leave the span generation alone
                record["token_model"] = model
                self._put_collection_record(collection, record)
            return written

    def token_model(self, collection: str) -> str | None:
        return self._require(collection).get("token_model")

    def delete_token_vectors(self, collection: str) -> int:
        m = self._models()
        with self._lock:
            self._require(collection)
            ids = [p.id for p in self._scroll(self._spans(collection), self._token_filter(True))]
            if ids:
                self.client.delete_vectors(self._spans(collection), ["tokens"], m.PointIdsList(points=ids), wait=True)
                self.client.delete_payload(
                    self._spans(collection), list(_token_payload_keys()), m.PointIdsList(points=ids), wait=True
                )
            return len(ids)

    def get_token_vectors(self, collection: str, span_ids: list[str]) -> dict[str, EncodedTokens]:
        found = self._span_points(collection, span_ids)
        return {s: _payload_tokens(p.payload) for s, p in found.items() if p.payload.get("token_codec")}

    def document_token_vectors(self, collection: str, doc_ids: list[str]) -> dict[str, list[tuple[str, EncodedTokens]]]:
        if not doc_ids:
            return {}
        query = self._token_filter(True, doc_id=list(doc_ids))
        out: dict[str, list[tuple[int, str, EncodedTokens]]] = {}
        for p in self._scroll(self._spans(collection), query):
            out.setdefault(p.payload["doc_id"], []).append(
                (p.payload["order"], p.payload["span_id"], _payload_tokens(p.payload))
            )
        return {d: [(s, e) for _, s, e in sorted(rows, key=lambda r: r[0])] for d, rows in out.items()}

    def token_vector_stats(self, collection: str) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = {}
        for p in self._scroll(self._spans(collection), self._token_filter(True)):
            encoded = _payload_tokens(p.payload)
            entry = stats.setdefault(encoded.codec, {"tokens": 0, "bytes": 0, "spans": 0})
            entry["tokens"] += len(encoded)
            entry["bytes"] += encoded.nbytes
            entry["spans"] += 1
        return stats

    # -- search ------------------------------------------------------------------------------------
    def refresh(self, collection: str) -> None:
        """Drop this process's BM25 cache if another write happened since it was built
        (collections from before the engine's BM25 only)."""
        cached = self._lexical.get(collection)
        if cached is not None and cached.version != self._version(self._require(collection)):
            del self._lexical[collection]

    def _bm25(self, collection: str) -> _Lexical:
        version = self._version(self._require(collection))
        cached = self._lexical.get(collection)
        if cached is not None and cached.version == version:
            return cached
        # Spans in write order; the BM25 ids are positions in that order, not the stored row
        # numbers, which two concurrent writers could have handed out twice.
        payloads = sorted(
            (p.payload for p in self._scroll(self._spans(collection))), key=lambda pl: (pl["row"], pl["span_id"])
        )
        rows: dict[str, list[tuple[int, str]]] = {g: [] for g in GRANULARITIES}
        span_id_of_row = {}
        for position, pl in enumerate(payloads):
            rows[pl["granularity"]].append((position, context_text(pl["text"], pl.get("header") or "")))
            span_id_of_row[position] = pl["span_id"]
        bm25 = {}
        for g, part in rows.items():
            bm25[g] = Bm25Index.build(np.array([r for r, _ in part], dtype=np.int64), [t for _, t in part])
        cached = _Lexical(version, bm25, span_id_of_row)
        self._lexical[collection] = cached
        return cached

    def dense_search(
        self, collection: str, query: np.ndarray, k: int, granularities: list[Granularity] | None = None
    ) -> list[ScoredSpanId]:
        self._require(collection)
        if k <= 0 or (granularities is not None and not granularities):
            return []
        every = granularities is None or set(GRANULARITIES) <= set(granularities)
        query_filter = None if every or granularities is None else self._match(granularity=list(granularities))
        hits = self.client.query_points(
            self._spans(collection),
            query=np.asarray(query, dtype=np.float32).tolist(),
            using="dense",
            query_filter=query_filter,
            limit=k,
            with_payload=["span_id"],
        ).points
        return [ScoredSpanId(h.payload["span_id"], float(h.score)) for h in hits]

    def lexical_search(self, collection: str, query: str, k: int, granularity: Granularity) -> list[ScoredSpanId]:
        self._require(collection)
        if self._has_engine_bm25(collection):
            words = tokenize_words([query])[0]
            if not words or k <= 0:
                return []
            counts = Counter(term_index(w) for w in words)
            m = self._models()
            hits = self.client.query_points(
                self._spans(collection),
                query=m.SparseVector(indices=list(counts), values=[float(c) for c in counts.values()]),
                using=sparse_name(granularity),
                limit=k,
                with_payload=["span_id", "row"],
            ).points
            ranked = sorted(hits, key=lambda h: (-h.score, h.payload["row"]))
            return [ScoredSpanId(h.payload["span_id"], float(h.score)) for h in ranked if h.score > 0]
        lexical = self._bm25(collection)
        return [ScoredSpanId(lexical.span_id_of_row[r], s) for r, s in lexical.bm25[granularity].search(query, k)]

    def drop_collection(self, name: str) -> None:
        with self._lock:
            self._require(name)  # CollectionNotFound when there is none
            # the collection record goes first: from then on the name is unknown to readers
            self._delete_meta("collection", name, [name])
            if self.client.collection_exists(self._spans(name)):
                self.client.delete_collection(self._spans(name))
            self.client.delete(self._meta, self._match(collection=name), wait=True)
            self._lexical.pop(name, None)
            self._engine_bm25.pop(name, None)

    def close(self) -> None:
        self.client.close()


# -- payloads ---------------------------------------------------------------------------------------
def _span_payload(span: Span) -> dict:
    return {
        "span_id": span.id,
        "doc_id": span.doc_id,
        "parent_id": span.parent_id,
        "granularity": span.granularity,
        "start": span.start,
        "end": span.end,
        "text": span.text,
        "heading_path": list(span.heading_path),
        "n_tokens": span.n_tokens,
        "header": span.header,
        "order": span.order,
    }


def _payload_span(p: dict) -> Span:
    return Span(
        id=p["span_id"],
        doc_id=p["doc_id"],
        parent_id=p["parent_id"],
        granularity=p["granularity"],
        start=p["start"],
        end=p["end"],
        text=p["text"],
        heading_path=list(p["heading_path"]),
        n_tokens=p["n_tokens"],
        header=p["header"],
        order=p["order"],
    )


def _token_payload_keys() -> tuple[str, ...]:
    return ("token_codec", "token_dim", "token_n", "token_codes", "token_scales")


def _token_payload(encoded: EncodedTokens) -> dict:
    return {
        "token_codec": encoded.codec,
        "token_dim": encoded.dim,
        "token_n": len(encoded),
        "token_codes": base64.b64encode(np.ascontiguousarray(encoded.data).tobytes()).decode("ascii"),
        "token_scales": None
        if encoded.scales is None
        else base64.b64encode(np.ascontiguousarray(encoded.scales, dtype=np.float32).tobytes()).decode("ascii"),
    }


def _payload_tokens(p: dict) -> EncodedTokens:
    scales = p.get("token_scales")
    return encoded_from_bytes(
        p["token_codec"],
        p["token_dim"],
        p["token_n"],
        base64.b64decode(p["token_codes"]),
        None if scales is None else base64.b64decode(scales),
    )


__all__ = ["QdrantStore", "point_id"]
