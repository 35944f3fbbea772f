"""The write path: files → parsed documents → span trees → vectors → store.

Incremental by content hash at two levels: a source file whose bytes are unchanged is
skipped before parsing; inside a changed multi-document file (JSONL) only the documents
whose content changed are re-embedded. Documents from a source that disappeared (a file
deleted from an ingested folder, a record removed from a JSONL file) are removed.

Every parse is held to the ingestor's :class:`ParseLimits`. In a batch of files
(:meth:`Ingestor.ingest_paths`) a file that cannot be parsed -- over a limit, malformed,
or any error while parsing it or building its span trees -- is reported in
``report.failed`` with the reason, and the batch goes on. A file is all or nothing: every
one of its documents' span trees is built and checked before the first is written.

    >>> ingestor = Ingestor(store, encoder, SentenceSplitter())          # doctest: +SKIP
    >>> report = ingestor.ingest_paths("docs", [Path("samples/")])       # doctest: +SKIP
    >>> report.added, report.unchanged, report.failed                     # doctest: +SKIP
    (3, 0, [])
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from indexing.embed import Encoder, TokenEncoder, distinct_texts
from indexing.graph import GraphIndex
from indexing.parsers import SUPPORTED_SUFFIXES, parse_bytes, parse_path
from indexing.parsers.base import ParsedDocument, ParseError, as_parse_error
from indexing.parsers.limits import ParseLimits, check_bytes, check_chars, check_metadata, check_text
from indexing.sentences import SentenceSplitter
from indexing.span_tree import Splitter, build_span_tree
from indexing.spans import Document, Granularity, Span, doc_id_of
from indexing.store.base import SourceRecord, SpanStore, StoreCapability
from indexing.token_codecs import Codec, EncodedTokens, encode_tokens

# Bump when parsing or span building changes, so that re-ingest rebuilds old documents.
INGEST_VERSION = "1"


class IngestProgress(Protocol):
    """What a progress bar gets told: files done of all files, inside a file with many
    documents (JSONL) documents written of those that needed work, and spans written so
    far (for a rate)."""

    def files(self, done: int, total: int) -> None: ...

    def documents(self, done: int, total: int) -> None: ...

    def spans(self, written: int) -> None: ...


@dataclass
class FailedSource:
    source: str
    reason: str


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    spans: int = 0
    token_spans: int = 0  # spans whose token vectors were computed
    seconds: float = 0.0
    failed: list[FailedSource] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    # what later steps (token vectors, graph) look at, so their work grows with the change
    written_ids: list[str] = field(default_factory=list, repr=False)
    removed_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def changed_ids(self) -> list[str]:
        """Documents written or removed by this ingest."""
        return [*self.written_ids, *self.removed_ids]

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [f.__dict__ for f in self.failed],
            "spans": self.spans,
            "token_spans": self.token_spans,
            "seconds": round(self.seconds, 3),
            "doc_ids": self.doc_ids,
        }


def content_hash(data: bytes) -> str:
    return hashlib.sha256(INGEST_VERSION.encode() + b"\0" + data).hexdigest()


def document_hash(parsed: ParsedDocument) -> str:
    return content_hash(f"{parsed.title}\0{parsed.text}".encode())


def default_doc_id(path: Path, root: Path | None = None) -> str:
    """A file's document id: its path as the user named it, made relative.

    Inside the working directory, the path relative to it (``spanrag ingest docs`` gives
    ``docs/a.md``); elsewhere, relative to the parent of ``root``, the file or folder named on
    the command line (``spanrag ingest ../notes`` or ``/srv/notes`` give ``notes/a.md``). An
    id never holds a server path the user did not type.

        >>> default_doc_id(Path("/srv/notes/a/b.md"), Path("/srv/notes"))
        'notes/a/b.md'
    """
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        pass
    base = (root or path).resolve().parent
    try:
        return resolved.relative_to(base).as_posix()
    except ValueError:
        return resolved.name


HTTP_SOURCE_PREFIXES = ("api:", "upload:")  # documents written over HTTP (JSON, multipart)


def source_kind(source: str) -> str:
    """What a client is told of a document's source: ``api``, ``upload``, ``file`` (a path
    ``spanrag ingest`` read), or the prefix a caller chose (``beir:`` ...); never a path."""
    kind, sep, _ = source.partition(":")
    return kind if sep and not source.startswith("/") else "file"


def may_replace(source: str, owner: str) -> bool:
    """May a write from ``source`` replace a document that ``owner`` wrote? Its own, and
    HTTP writes each other's; a file's documents belong to that file, or the next ingest of
    its folder would see it unchanged and keep the other text."""
    return source == owner or (source.startswith(HTTP_SOURCE_PREFIXES) and owner.startswith(HTTP_SOURCE_PREFIXES))


def ids_owned_elsewhere(store: SpanStore, collection: str, source: str, doc_ids: list[str]) -> list[str]:
    """Of ``doc_ids``, those held by a document that ``source`` may not replace. Ids the
    source already owns (its record) are not looked up again, so re-ingesting a large JSONL
    file reads only its new ids."""
    if not doc_ids or not store.has_collection(collection):
        return []
    record = store.get_source(collection, source)
    owned = set(record.doc_ids) if record is not None else set()
    others = [d for d in doc_ids if d not in owned]
    existing = store.document_hashes(collection, others) if others else {}
    taken = []
    for doc_id in existing:
        doc = store.get_document(collection, doc_id)
        if doc is not None and not may_replace(source, doc.source):
            taken.append(doc_id)
    return taken


def delete_document(store: SpanStore, collection: str, doc_id: str) -> bool:
    """Remove one document everywhere (no model needed); True when it existed."""
    removed = store.delete_documents(collection, [doc_id]) > 0
    for record in store.list_sources(collection):
        if doc_id in record.doc_ids:
            remaining = [d for d in record.doc_ids if d != doc_id]
            if remaining:
                # The file still holds other documents: forget its hash so a re-ingest
                # of the same bytes brings the deleted document back.
                store.put_source(collection, SourceRecord(record.path, "", remaining))
            else:
                store.delete_source(collection, record.path)
    return removed


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if (
                child.is_file()
                and child.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in child.relative_to(path).parts)
            ):
                yield child
    else:
        yield path


class Ingestor:
    def __init__(
        self,
        store: SpanStore,
        encoder: Encoder,
        splitter: SentenceSplitter,
        batch_docs: int = 32,
        token_encoder: TokenEncoder | None = None,
        limits: ParseLimits | None = None,
        token_codec: Codec | None = None,
        token_granularities: tuple[Granularity, ...] | list[Granularity] = ("paragraph", "row"),
        late_pooling: bool = False,
    ):
        """With a ``token_codec``, spans of ``token_granularities`` get their token vectors
        from the forward pass that encodes them (when the token encoder is the dense
        encoder); :meth:`backfill_token_vectors` fills in whatever that leaves out.

        ``late_pooling``: a document runs through the encoder once and its spans' vectors
        are pooled from its hidden states (:meth:`Encoder.encode_late`); table rows, which
        are embedded with their header, and models that cannot, keep a pass of their own."""
        self.store = store
        self.encoder = encoder
        self.splitter = splitter
        self.batch_docs = batch_docs
        self.token_encoder: TokenEncoder = token_encoder or encoder
        self.limits = limits or ParseLimits()
        self.token_codec = token_codec
        self.token_granularities = tuple(token_granularities)
        self.late_pooling = late_pooling
        # per ingest call: whether its token vectors come from the dense pass (the answer
        # reads the stored codecs, so it is looked up once per call, not once per file)
        self._shared_codecs: dict[str, Codec | None] = {}

    def ensure_collection(self, collection: str) -> None:
        if self.store.has_collection(collection) and self.store.collection_model(collection) == self.encoder.name:
            return  # known and compatible: no need to load the model for its dimension
        self.store.create_collection(collection, self.encoder.name, self.encoder.dim)

    # -- entry points -------------------------------------------------------------------
    def ingest_paths(self, collection: str, paths: list[Path], progress: IngestProgress | None = None) -> IngestReport:
        started = time.perf_counter()
        self._shared_codecs.clear()
        self.ensure_collection(collection)
        report = IngestReport()
        files: list[tuple[Path, Path]] = []  # (file, the path named that holds it)
        for path in paths:
            if not path.exists():
                report.failed.append(FailedSource(str(path), "no such file or directory"))
            else:
                files.extend((file, path) for file in iter_files(path))
        seen_sources = {str(f.resolve()) for f, _ in files}
        for done, (file, root) in enumerate(files, start=1):
            self._ingest_file(collection, file, report, progress, root)
            if progress:
                progress.files(done, len(files))
        for folder in (p for p in paths if p.is_dir()):
            for record in self.store.list_sources(collection, under=str(folder.resolve())):
                if record.path not in seen_sources:
                    report.removed += self.store.delete_documents(collection, record.doc_ids)
                    report.removed_ids.extend(record.doc_ids)
                    self.store.delete_source(collection, record.path)
        report.seconds = time.perf_counter() - started
        return report

    def ingest_upload(self, collection: str, data: bytes, filename: str, doc_id: str | None = None) -> IngestReport:
        """One uploaded file (HTTP multipart); raises ParseError (DocumentTooLarge over a
        limit) for a bad file, with nothing written."""
        started = time.perf_counter()
        self._shared_codecs.clear()
        self.ensure_collection(collection)
        report = IngestReport()
        parsed_docs = parse_bytes(data, filename, self.limits)
        if len(parsed_docs) == 1 and (doc_id is not None or parsed_docs[0].doc_id is None):
            parsed_docs[0].doc_id = doc_id or filename
        # One source per uploaded document: two uploads that share a file name but not an id
        # must not replace each other.
        source = f"upload:{parsed_docs[0].doc_id}" if len(parsed_docs) == 1 else f"upload:{filename}"
        self._ingest_parsed(collection, source, parsed_docs, report)
        report.seconds = time.perf_counter() - started
        return report

    def ingest_parsed(self, collection: str, source: str, parsed_docs: list[ParsedDocument]) -> IngestReport:
        """Documents already parsed (JSON uploads, evaluation corpora), ids set by the caller.
        Their ids, titles and metadata are checked here (the parsers check the text)."""
        started = time.perf_counter()
        self._shared_codecs.clear()
        for parsed in parsed_docs:
            where = f"document {parsed.doc_id!r}" if isinstance(parsed.doc_id, str) else "document"
            if isinstance(parsed.doc_id, str):
                check_text(parsed.doc_id, "document id")
            check_text(parsed.title, f"{where} title")
            check_metadata(parsed.metadata, self.limits, f"{where} metadata")
        self.ensure_collection(collection)
        report = IngestReport()
        self._ingest_parsed(collection, source, parsed_docs, report)
        report.seconds = time.perf_counter() - started
        return report

    def backfill_token_vectors(
        self,
        collection: str,
        codec: Codec,
        granularities: list[Granularity],
        progress: IngestProgress | None = None,
        batch_spans: int = 64,
    ) -> int:
        """Compute and store token vectors for every span of ``granularities`` that lacks them.

        Runs after each ingest: new and replaced spans get theirs, unchanged spans keep
        theirs, and an existing collection gains them the first time a codec is configured.
        Token vectors from another token model or codec are all recomputed. Returns how many
        spans were filled.
        """
        stored_model = self.store.token_model(collection)
        stored_codecs = self.store.token_codecs(collection)
        if stored_model not in (None, self.token_encoder.name) or stored_codecs - {codec}:
            self.store.delete_token_vectors(collection)  # another model or codec: start over
        missing = self.store.spans_missing_token_vectors(collection, granularities)
        for i in range(0, len(missing), batch_spans):
            batch = missing[i : i + batch_spans]
            # spans of a batch that share their text (a repeated row or paragraph) share its vectors
            unique, rows = distinct_texts([s.context_text for s in batch])
            codes = [encode_tokens(v, codec) for v in self.token_encoder.encode_tokens(unique)]
            self.store.put_token_vectors(
                collection,
                [(s.id, codes[row]) for s, row in zip(batch, rows, strict=True)],
                self.token_encoder.name,
            )
            if progress and len(missing) > batch_spans:
                progress.documents(min(i + batch_spans, len(missing)), len(missing))
        return len(missing)

    def sync_graph(
        self,
        collection: str,
        graph: GraphIndex,
        similar_k: int = 3,
        similar_min: float = 0.6,
        progress: IngestProgress | None = None,
        doc_ids: Iterable[str] | None = None,
        batch_docs: int = 256,
    ) -> int:
        """Bring the graph index in line with the store, touching only documents that
        changed: a document the graph lacks or holds at another version is re-indexed (its
        own nodes and edges), a document gone from the store is removed. Returns documents
        re-indexed.

        ``doc_ids``: the documents an ingest wrote or removed; only they are looked at, so
        the work grows with the change, not with the collection. None compares every
        document (at start-up, to repair a graph left behind by a crash).

        Semantic-neighbour edges link each paragraph or row to its ``similar_k`` nearest
        spans of the same granularity in other documents with cosine ≥ ``similar_min``;
        the neighbours of ``batch_docs`` documents are searched in one batched call."""
        if doc_ids is None:
            live = self.store.document_hashes(collection)
            gone = graph.orphan_documents(collection, set(live))
        else:
            wanted = sorted(set(doc_ids))
            live = self.store.document_hashes(collection, wanted)
            gone = [d for d in wanted if d not in live and graph.has_document(collection, d)]
        for doc_id in gone:
            graph.delete_document(collection, doc_id)
        stale = graph.stale_documents(collection, live)
        docs = [d for d in (self.store.get_document(collection, doc_id) for doc_id in stale) if d is not None]

        def neighbours(batch: list[Document]) -> Iterator[tuple[Document, list[Span], dict]]:
            spans_of = {doc.id: self.store.document_spans(collection, doc.id) for doc in batch}
            linked = [s for doc in batch for s in spans_of[doc.id] if s.granularity in ("paragraph", "row")]
            similar: dict[str, list[tuple[str, float]]] = {}
            for granularity in ("paragraph", "row"):
                of_kind = [s for s in linked if s.granularity == granularity]
                if not of_kind:
                    continue
                vectors = np.asarray(self.store.get_vectors(collection, [s.id for s in of_kind]), dtype=np.float32)
                found = self.store.dense_search_many(collection, vectors, similar_k + 8, [granularity])
                for span, hits in zip(of_kind, found, strict=True):
                    similar[span.id] = [
                        (h.span_id, h.score)
                        for h in hits
                        if h.score >= similar_min and doc_id_of(h.span_id) != span.doc_id
                    ][:similar_k]
            for doc in batch:
                yield doc, spans_of[doc.id], {s.id: similar[s.id] for s in spans_of[doc.id] if s.id in similar}

        def items() -> Iterator[tuple[Document, list[Span], dict[str, list[tuple[str, float]]]]]:
            for start in range(0, len(docs), batch_docs):
                yield from neighbours(docs[start : start + batch_docs])
                if progress and len(docs) > batch_docs:
                    progress.documents(min(start + batch_docs, len(docs)), len(docs))

        graph.update_documents(collection, items(), known_titles=[d.title for d in docs])
        if doc_ids is not None and graph.document_count(collection) != self.store.document_count(collection):
            # the graph drifted from the store before this write (a crash between the two)
            return len(stale) + self.sync_graph(collection, graph, similar_k, similar_min, progress, None, batch_docs)
        return len(stale)

    # -- internals ------------------------------------------------------------------------
    def _ingest_file(
        self,
        collection: str,
        file: Path,
        report: IngestReport,
        progress: IngestProgress | None,
        root: Path | None = None,
    ) -> None:
        """One file of a batch: any failure to read, parse or build the spans of this file
        is reported in ``report.failed`` and the batch goes on. Store and encoder errors
        are not the file's fault and propagate."""
        source = str(file.resolve())
        try:
            check_bytes(file.stat().st_size, self.limits)  # before reading it into memory
            data = file.read_bytes()
        except OSError as exc:
            report.failed.append(FailedSource(str(file), f"cannot read: {exc.strerror or exc}"))
            return
        except ParseError as exc:
            report.failed.append(FailedSource(str(file), str(exc)))
            return
        digest = content_hash(data)
        previous = self.store.get_source(collection, source)
        if previous is not None and previous.content_hash == digest:
            report.unchanged += len(previous.doc_ids)
            return
        try:
            parsed_docs = parse_path(file, self.limits)
        except Exception as exc:  # parse_path wraps parser errors in ParseError; this is the backstop
            report.failed.append(FailedSource(str(file), str(as_parse_error(file.name, exc))))
            return
        if len(parsed_docs) == 1 and parsed_docs[0].doc_id is None:
            parsed_docs[0].doc_id = default_doc_id(file, root)
        taken = ids_owned_elsewhere(self.store, collection, source, [p.doc_id for p in parsed_docs if p.doc_id])
        if taken:
            report.failed.append(
                FailedSource(
                    str(file),
                    f"document id {taken[0]!r} belongs to another source; ingest it from one place, or delete it first",
                )
            )
            return
        try:
            self._ingest_parsed(collection, source, parsed_docs, report, digest, progress)
        except ParseError as exc:  # e.g. duplicate ids, a document over a limit: skip the file
            report.failed.append(FailedSource(str(file), str(exc)))

    def _ingest_parsed(
        self,
        collection: str,
        source: str,
        parsed_docs: list[ParsedDocument],
        report: IngestReport,
        source_hash: str = "",
        progress: IngestProgress | None = None,
    ) -> None:
        """Write ``parsed_docs`` as the documents of ``source``. Every ParseError (a
        document over a limit included) is raised before anything is written."""
        ids: list[str] = []
        for parsed in parsed_docs:
            if not parsed.doc_id:
                raise ParseError("a document has no id")
            ids.append(parsed.doc_id)
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ParseError(f"duplicate document ids: {', '.join(duplicates[:5])}")
        stored = self.store.document_hashes(collection, ids)
        pending: list[tuple[ParsedDocument, str, bool]] = []
        for parsed, doc_id in zip(parsed_docs, ids, strict=True):
            digest = document_hash(parsed)
            if stored.get(doc_id) == digest:
                report.unchanged += 1
            else:
                pending.append((parsed, digest, doc_id in stored))
        token_codec = None
        if pending:
            if collection not in self._shared_codecs:
                self._shared_codecs[collection] = self._shared_pass_codec(collection)
            token_codec = self._shared_codecs[collection]
        # Every tree is built (and checked) before the first write. Only the first batch's
        # trees are kept; later batches' are rebuilt when written, so that memory holds one
        # batch of trees, replaying the sentence splits recorded here (the costly part).
        first_trees: list[list[Span]] = []
        splits: list[list[list[tuple[int, int]]] | None] = []
        for n, (parsed, _, _) in enumerate(pending):
            if n < self.batch_docs:
                first_trees.append(self._span_tree(parsed, self.splitter))
            else:
                recorder = _RecordingSplitter(self.splitter)
                self._span_tree(parsed, recorder, count_tokens=False)
                splits.append(recorder.results)
        for i in range(0, len(pending), self.batch_docs):
            batch = pending[i : i + self.batch_docs]
            if i == 0:
                trees = first_trees
            else:
                trees = []
                for n, (parsed, _, _) in enumerate(batch, start=i - self.batch_docs):
                    trees.append(self._span_tree(parsed, _ReplayedSplitter(splits[n] or [])))
                    splits[n] = None
            self._write_batch(collection, source, batch, trees, report, token_codec)
            if progress:
                progress.spans(report.spans)
            if progress and len(pending) > self.batch_docs:
                progress.documents(min(i + self.batch_docs, len(pending)), len(pending))
        previous = self.store.get_source(collection, source)
        if previous is not None:
            gone = [d for d in previous.doc_ids if d not in set(ids)]
            if gone:
                report.removed += self.store.delete_documents(collection, gone)
                report.removed_ids.extend(gone)
        self.store.put_source(collection, SourceRecord(source, source_hash, ids))
        report.doc_ids.extend(ids)

    def _span_tree(self, parsed: ParsedDocument, splitter: Splitter, count_tokens: bool = True) -> list[Span]:
        """``parsed``'s span tree, within the limits; any error building it is a ParseError.
        Without ``count_tokens`` the tree is only being checked: token counts are left 0."""
        counter = self.encoder.count_tokens if count_tokens else _no_token_counts
        doc_id = parsed.doc_id
        assert doc_id is not None  # _ingest_parsed refuses a document without an id
        try:
            check_chars(parsed.text, self.limits, f"document {parsed.doc_id!r}")
            return build_span_tree(doc_id, parsed, counter, splitter, self.limits.max_spans)
        except Exception as exc:  # RecursionError, MemoryError, a library's error...
            error = as_parse_error(f"the spans of document {parsed.doc_id!r}", exc, doing="build")
            if error is exc:
                raise
            raise error from exc

    def _shared_pass_codec(self, collection: str) -> Codec | None:
        """The codec of token vectors to write with the spans, when they can come from the
        dense encoder's own forward pass: the token encoder is the dense encoder, and the
        collection holds no token vectors of another model or codec (those are recomputed
        as a whole by :meth:`backfill_token_vectors`)."""
        codec = self.token_codec
        if codec is None or self.token_encoder is not self.encoder:
            return None
        if StoreCapability.TOKEN_VECTORS not in self.store.capabilities:
            return None
        if self.store.token_model(collection) not in (None, self.encoder.name):
            return None
        if self.store.token_codecs(collection) - {codec}:
            return None
        return codec

    def _write_batch(
        self,
        collection: str,
        source: str,
        batch: list[tuple[ParsedDocument, str, bool]],
        trees: list[list[Span]],
        report: IngestReport,
        token_codec: Codec | None = None,
    ) -> None:
        # One forward pass per distinct text of the batch (a document and its only section,
        # a paragraph and its only sentence share it); its hidden states also give the token
        # vectors of the spans that keep them.
        spans_of_batch = [s for spans in trees for s in spans]
        token_rows = (
            [i for i, s in enumerate(spans_of_batch) if s.granularity in self.token_granularities]
            if token_codec
            else []
        )
        if self.late_pooling and self.encoder.supports_late_pooling:
            vectors, tokens = self._encode_late(batch, trees, token_rows)
        else:
            vectors, tokens = self.encoder.encode_with_tokens([s.context_text for s in spans_of_batch], token_rows)
        items, offset = [], 0
        for (parsed, digest, existed), spans in zip(batch, trees, strict=True):
            assert parsed.doc_id is not None  # _ingest_parsed refuses a document without an id
            doc = Document(
                id=parsed.doc_id,
                collection=collection,
                title=parsed.title,
                source=source,
                content_hash=digest,
                text=parsed.text,
                metadata=parsed.metadata,
            )
            items.append((doc, spans, vectors[offset : offset + len(spans)]))
            offset += len(spans)
            report.spans += len(spans)
            report.written_ids.append(doc.id)
            if existed:
                report.updated += 1
            else:
                report.added += 1
        self.store.replace_documents(collection, items)
        if token_codec and token_rows:
            # after the spans' own commit; a crash in between leaves them to the backfill
            codes: dict[int, EncodedTokens] = {}
            written = [
                (spans_of_batch[i].id, codes.setdefault(id(tokens[i]), encode_tokens(tokens[i], token_codec)))
                for i in token_rows
            ]
            self.store.put_token_vectors(collection, written, self.encoder.name)
            report.token_spans += len(written)

    def _encode_late(
        self, batch: list[tuple[ParsedDocument, str, bool]], trees: list[list[Span]], token_rows: list[int]
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """:meth:`Encoder.encode_with_tokens`' result for the batch's spans, by late pooling:
        one pass per document; the spans it cannot pool (rows, embedded with their header;
        ranges without a whole word piece) and token vectors whose pieces differ from the
        span's own tokenization come from passes of their own."""
        spans_of_batch = [s for spans in trees for s in spans]
        wants_tokens = set(token_rows)
        ranges: list[list[tuple[int, int]]] = []
        token_positions: list[list[int]] = []
        rows_of: list[list[int]] = []  # row in spans_of_batch of each range
        row = 0
        for spans in trees:
            ranges.append([])
            token_positions.append([])
            rows_of.append([])
            for span in spans:
                if not span.header:
                    if row in wants_tokens:
                        token_positions[-1].append(len(ranges[-1]))
                    ranges[-1].append((span.start, span.end))
                    rows_of[-1].append(row)
                row += 1
        pooled = self.encoder.encode_late([parsed.text for parsed, _, _ in batch], ranges, token_positions)
        vectors: np.ndarray = np.zeros((len(spans_of_batch), self.encoder.dim), dtype=np.float32)
        tokens: dict[int, np.ndarray] = {}
        done: set[int] = set()
        for result, rows in zip(pooled, rows_of, strict=True):
            missing = set(result.missing)
            for position, r in enumerate(rows):
                if position not in missing:
                    vectors[r] = result.vectors[position]
                    done.add(r)
            tokens.update({rows[position]: states for position, states in result.tokens.items()})
        rest = [r for r in range(len(spans_of_batch)) if r not in done]
        if rest:
            own, own_tokens = self.encoder.encode_with_tokens(
                [spans_of_batch[r].context_text for r in rest],
                [k for k, r in enumerate(rest) if r in wants_tokens],
            )
            vectors[rest] = own
            tokens.update({rest[k]: states for k, states in own_tokens.items()})
        unpaired = [r for r in token_rows if r not in tokens]
        if unpaired:
            states = self.encoder.encode_tokens([spans_of_batch[r].context_text for r in unpaired])
            tokens.update(zip(unpaired, states, strict=True))
        return vectors, tokens


class _RecordingSplitter:
    """Splits with ``splitter`` and keeps every result, in call order."""

    def __init__(self, splitter: SentenceSplitter) -> None:
        self.splitter = splitter
        self.results: list[list[tuple[int, int]]] = []

    def split(self, text: str) -> list[tuple[int, int]]:
        result = self.splitter.split(text)
        self.results.append(result)
        return result


class _ReplayedSplitter:
    """Hands back recorded splits: building the same tree again asks for them in order."""

    def __init__(self, results: list[list[tuple[int, int]]]) -> None:
        self._results = iter(results)

    def split(self, text: str) -> list[tuple[int, int]]:
        return next(self._results)


def _no_token_counts(texts: list[str]) -> list[int]:
    return [0] * len(texts)
