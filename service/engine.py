"""The assembled service: store, encoder, ingestion, retrieval and generation, wired in
one visible place. The HTTP app, the CLI and the evaluation harness all use this object.

    >>> rag = RagService(Settings(data_dir=Path("/tmp/demo")))       # doctest: +SKIP
    >>> rag.ingest_paths("docs", [Path("samples")])                  # doctest: +SKIP
    >>> rag.query("docs", "What does spanrag store?").answer.text    # doctest: +SKIP
    >>> for kind, payload in rag.query_stream("docs", "What does spanrag store?"):  # doctest: +SKIP
    ...     print(kind, payload.as_dict())  # context, then delta ..., then answer

``query`` returns a typed ``QueryResult`` (``service.results``); each surface (HTTP, the
OpenAI-compatible API, the CLI) turns it into its JSON once, with ``as_dict()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from generation.types import Answer, History, Sampling
from indexing.store.base import CollectionNotFound, SpanStore
from retrieval.types import elapsed_ms
from service.results import (  # re-exported: their home is service.results
    AnswerDelta,
    QueryAnswer,
    QueryEvent,
    QueryResult,
    QuerySources,
    context_payload,
    ranked_payload,
)
from service.settings import Settings
from service.threads import ThreadPlan

if TYPE_CHECKING:  # the heavy parts (torch, FAISS, networkx, the parsers) load on first use
    from generation.base import Generator
    from indexing.embed import Encoder, TokenEncoder
    from indexing.graph import GraphIndex
    from indexing.ingest import Ingestor, IngestProgress, IngestReport
    from indexing.parsers.limits import ParseLimits
    from retrieval.types import RetrievalResult
    from service.stages import PipelineRunner


__all__ = [
    "DocumentConflict",
    "QueryEvent",
    "QueryResult",
    "RagService",
    "ServiceListener",
    "UnknownGenerator",
    "context_payload",
    "ranked_payload",
]


class UnknownGenerator(ValueError):
    pass


class DocumentConflict(ValueError):
    """An HTTP write would replace a document that another source (a file of ``spanrag
    ingest``) owns: the next CLI ingest would not see the change, so it is refused."""


ServiceListener = Callable[[str, str, dict], None]
"""Told of what the service did: ``listener(event, collection, data)`` with event
``"retrieve"`` (data: ``{"timings_ms": {...}, "pipeline": name}``), ``"ingest"`` (data:
``{"report": IngestReport}``) or ``"delete"`` (data: ``{"doc_id": id}``). Metrics subscribe here."""


class RagService:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self._write_lock = threading.Lock()
        self.listeners: list[ServiceListener] = []
        self.threads = ThreadPlan(
            bulk=self.settings.threads, query=self.settings.query_threads, enabled=self.settings.thread_plan
        )

    def _tell(self, event: str, collection: str, data: dict) -> None:
        for listener in self.listeners:
            listener(event, collection, data)

    # Heavy parts load on first use, so `spanrag --help` and health checks stay instant.
    @cached_property
    def store(self) -> SpanStore:
        if self.settings.store == "qdrant":
            from indexing.store.qdrant import QdrantStore

            return QdrantStore(
                url=self.settings.qdrant_url,
                path=None
                if self.settings.qdrant_url
                else (self.settings.qdrant_path or self.settings.data_dir / "qdrant"),
                api_key=self.settings.qdrant_api_key,
                shards=self.settings.qdrant_shards,
                replication=self.settings.qdrant_replication,
                local_engine=self.settings.qdrant_local_engine,
            )
        from indexing.store.dense_index import DenseIndexSpec
        from indexing.store.merge_policy import MergePolicy
        from indexing.store.sqlite_faiss import SqliteFaissStore

        s = self.settings
        return SqliteFaissStore(
            s.data_dir,
            dense_index=DenseIndexSpec(s.dense_index, device=s.device),
            merge_policy=MergePolicy(s.merge_min_rows, s.merge_fraction, s.max_deltas),
            merge_in_process=s.merge_in_process,
        )

    @cached_property
    def encoder(self) -> Encoder:
        from indexing.embed import Encoder

        s = self.settings
        return Encoder.load(
            s.embedding_model,
            s.device,
            s.embed_batch_size,
            backend=s.encoder_backend,
            cache_dir=s.data_dir / "models",
            threads=self.threads.threads("bulk"),
        )

    @cached_property
    def token_encoder(self) -> TokenEncoder:
        if self.settings.token_model is None:
            return self.encoder
        from indexing.colbert import ColbertTokenEncoder

        return ColbertTokenEncoder(self.settings.token_model, self.settings.device, self.settings.embed_batch_size)

    @cached_property
    def parse_limits(self) -> ParseLimits:
        from indexing.parsers.limits import ParseLimits

        s = self.settings
        return ParseLimits(
            max_bytes=s.max_document_bytes,
            max_chars=s.max_document_chars,
            max_spans=s.max_document_spans,
            max_table_cells=s.max_table_cells,
            max_table_columns=s.max_table_columns,
            max_nesting_depth=s.max_nesting_depth,
            max_metadata_bytes=s.max_metadata_bytes,
            max_metadata_depth=s.max_metadata_depth,
        )

    @cached_property
    def ingestor(self) -> Ingestor:
        from indexing.ingest import Ingestor
        from indexing.sentences import SentenceSplitter

        return Ingestor(
            self.store,
            self.encoder,
            SentenceSplitter(),
            self.settings.ingest_batch_docs,
            token_encoder=self.token_encoder,
            limits=self.parse_limits,
            token_codec=self.settings.token_codec,
            token_granularities=self.settings.token_granularities,
            late_pooling=self.settings.late_pooling,
        )

    @cached_property
    def graph(self) -> GraphIndex | None:
        if not self.settings.graph:
            return None
        if self.settings.store == "qdrant":  # beside the spans: replicas keep no graph file
            from indexing.graph_qdrant import QdrantGraphIndex
            from indexing.store.qdrant import QdrantStore

            qdrant = self.store
            assert isinstance(qdrant, QdrantStore)
            return QdrantGraphIndex(qdrant.client, qdrant.prefix, payload_indexes=qdrant.payload_indexes)
        from indexing.graph import GraphIndex

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return GraphIndex(self.settings.data_dir / "graph.sqlite3")

    @cached_property
    def retriever(self) -> PipelineRunner:
        """Runs a pipeline's stages in order: retrieval (first stage, selection), compression."""
        from indexing.embed import pick_device
        from service.stages import PipelineRunner

        return PipelineRunner(
            self.store, self.encoder, self.token_encoder, self.graph, scoring_device=pick_device(self.settings.device)
        )

    @cached_property
    def generator(self) -> Generator:
        """The answer generator; raises ``UnknownGenerator`` with what to fix when it cannot
        be built (the HTTP app builds it at start, so a misconfiguration fails there)."""
        if self.settings.generator == "extractive":
            from generation.extractive import ExtractiveGenerator, ExtractiveOptions

            return ExtractiveGenerator(ExtractiveOptions(max_sentences=self.settings.answer_sentences))
        if self.settings.generator == "openai":
            from generation.openai_compatible import OpenAICompatibleGenerator, OpenAICompatibleOptions

            if not self.settings.llm_model:
                raise UnknownGenerator("the openai generator needs SPANRAG_LLM_MODEL (and SPANRAG_LLM_BASE_URL)")
            try:
                import openai  # noqa: F401  (the `llm` extra)
            except ImportError:
                raise UnknownGenerator(
                    "SPANRAG_GENERATOR=openai needs the openai package: pip install 'spanrag[llm]'"
                ) from None
            return OpenAICompatibleGenerator(
                OpenAICompatibleOptions(
                    base_url=self.settings.llm_base_url,
                    model=self.settings.llm_model,
                    api_key=self.settings.llm_api_key,
                    timeout_s=self.settings.llm_timeout_s,
                    max_retries=self.settings.llm_max_retries,
                    system_role=self.settings.llm_system_role,
                    max_tokens=self.settings.llm_max_tokens,
                )
            )
        raise UnknownGenerator(f"unknown generator {self.settings.generator!r}; known: extractive, openai")

    def warm_up(self) -> None:
        """Load everything a first query needs (store, models, indexes, generator), so that
        the first request does not pay for it, and finish what a crash interrupted (see
        ``repair``); ``/readyz`` turns green after this."""
        self.generator  # noqa: B018 (a cached property, built here for its side effect)
        self.encoder.encode(["warm-up"])
        if self.settings.token_model is not None:
            self.token_encoder  # noqa: B018 (a cached property, built here for its side effect)
        self.retriever  # noqa: B018 (a cached property, built here for its side effect)
        for collection in self.store.list_collections():
            self.repair(collection)

    def repair(self, collection: str) -> None:
        """Bring a collection's derived data up to its committed documents: token vectors
        and graph entries are written after a document's own commit, so a process killed in
        between leaves documents without them until this runs (at start, before ready). Both
        steps only do what is missing, so on an intact collection they cost a look-up."""
        from indexing.ingest import IngestReport

        with self._write_lock, self.threads.bulk_work():
            self._after_ingest(collection, IngestReport(), notify=False, whole_collection=True)

    # -- collections and documents ---------------------------------------------------------
    def require_collection(self, collection: str) -> None:
        if not self.store.has_collection(collection):
            raise CollectionNotFound(collection)

    def _after_ingest(
        self,
        collection: str,
        report: IngestReport,
        progress: IngestProgress | None = None,
        notify: bool = True,
        whole_collection: bool = False,
    ) -> IngestReport:
        """Bring token vectors and search indexes up to date after any write (every ingest
        entry point creates the collection first). The graph looks only at the documents
        the write changed, or at all of them with ``whole_collection`` (a repair)."""
        if self.settings.token_codec is not None:
            started = time.perf_counter()
            report.token_spans += self.ingestor.backfill_token_vectors(
                collection, self.settings.token_codec, self.settings.token_granularities, progress
            )
            report.seconds += time.perf_counter() - started
        self.store.refresh(collection)
        if self.graph is not None:
            started = time.perf_counter()
            self.ingestor.sync_graph(
                collection, self.graph, progress=progress, doc_ids=None if whole_collection else report.changed_ids
            )
            self.graph.end_write(collection)
            report.seconds += time.perf_counter() - started
        if notify:
            self._tell("ingest", collection, {"report": report})
        return report

    def _write(
        self, collection: str, write: Callable[[], IngestReport], progress: IngestProgress | None = None
    ) -> IngestReport:
        """Run an ingest (under the write lock) and bring derived data up to it; the graph
        remembers a write in progress, so one cut short is repaired by the next."""
        with self.threads.bulk_work():
            interrupted = self.graph is not None and self.graph.begin_write(collection)
            report = write()
            return self._after_ingest(collection, report, progress, whole_collection=interrupted)

    def ingest_paths(self, collection: str, paths: list[Path], progress: IngestProgress | None = None) -> IngestReport:
        with self._write_lock:
            return self._write(collection, lambda: self.ingestor.ingest_paths(collection, paths, progress), progress)

    def ingest_parsed(self, collection: str, source: str, parsed_docs: list) -> IngestReport:
        """Documents parsed by the caller (evaluation corpora), ids set."""
        with self._write_lock:
            return self._write(collection, lambda: self.ingestor.ingest_parsed(collection, source, parsed_docs))

    def ingest_upload(self, collection: str, data: bytes, filename: str, doc_id: str | None = None) -> IngestReport:
        """One uploaded file (HTTP multipart). It is parsed before anything is written, so a
        bad file (``ParseError``) leaves no trace, not even a new collection."""
        from indexing.parsers import parse_bytes

        parsed_docs = parse_bytes(data, filename, self.parse_limits)
        if len(parsed_docs) == 1 and (doc_id is not None or parsed_docs[0].doc_id is None):
            parsed_docs[0].doc_id = doc_id or filename
        # One source per uploaded document: two uploads that share a file name but not an id
        # must not replace each other.
        source = f"upload:{parsed_docs[0].doc_id}" if len(parsed_docs) == 1 else f"upload:{filename}"
        return self._ingest_http(collection, source, parsed_docs)

    def _ingest_http(self, collection: str, source: str, parsed_docs: list) -> IngestReport:
        with self._write_lock:
            self._refuse_replacing_files(collection, source, [p.doc_id for p in parsed_docs if p.doc_id])
            return self._write(collection, lambda: self.ingestor.ingest_parsed(collection, source, parsed_docs))

    def _refuse_replacing_files(self, collection: str, source: str, doc_ids: list[str]) -> None:
        from indexing.ingest import ids_owned_elsewhere

        taken = ids_owned_elsewhere(self.store, collection, source, doc_ids)
        if taken:
            raise DocumentConflict(
                f"document {taken[0]!r} was ingested from a file (spanrag ingest); an HTTP write cannot"
                " replace it, or the next ingest of that folder would keep the HTTP text. Delete it"
                " first or choose another id"
            )

    def ingest_text(
        self,
        collection: str,
        doc_id: str,
        text: str,
        title: str = "",
        metadata: dict | None = None,
        fmt: str = "text",
    ) -> IngestReport:
        from indexing.parsers import check_metadata, parse_text

        check_metadata(metadata or {}, self.parse_limits)
        parsed = parse_text(text, title=title, fmt=fmt, limits=self.parse_limits)
        parsed.doc_id = doc_id
        parsed.metadata = dict(metadata or {})
        return self._ingest_http(collection, f"api:{doc_id}", [parsed])

    def delete_document(self, collection: str, doc_id: str) -> bool:
        self.require_collection(collection)
        from indexing.ingest import delete_document

        with self._write_lock:
            removed = delete_document(self.store, collection, doc_id)
            self.store.refresh(collection)
            if self.graph is not None:
                self.graph.delete_document(collection, doc_id)
        if removed:
            self._tell("delete", collection, {"doc_id": doc_id})
        return removed

    def delete_collection(self, collection: str) -> None:
        """The collection and everything derived from it: documents, spans, vectors, token
        vectors, search indexes, file records and graph."""
        self.require_collection(collection)
        with self._write_lock:
            if self.graph is not None:
                self.graph.drop_collection(collection)
            self.store.drop_collection(collection)

    def get_document(self, collection: str, doc_id: str) -> dict | None:
        from indexing.ingest import source_kind

        self.require_collection(collection)
        doc = self.store.get_document(collection, doc_id)
        if doc is None:
            return None
        out = asdict(doc)
        out["source"] = source_kind(doc.source)
        out["n_spans"] = self.store.count_spans(collection, doc_id)
        return out

    # -- queries -------------------------------------------------------------------------------
    def retrieve(
        self, collection: str, question: str, pipeline: str | None = None, overrides: dict | None = None
    ) -> RetrievalResult:
        self.require_collection(collection)
        self.threads.use("query")
        merged = {**self.settings.retrieval_overrides(), **(overrides or {})}
        from retrieval.requirements import require_pipeline  # refuse what this store cannot run (400)

        name = pipeline or self.settings.pipeline
        params = require_pipeline(self.store, name, merged)  # the pipeline's params, resolved once
        result = self.retriever.run(collection, question, name, params)
        self._tell("retrieve", collection, {"timings_ms": result.timings_ms, "pipeline": result.pipeline})
        return result

    def answer(
        self, result: RetrievalResult, history: History | None = None, sampling: Sampling | None = None
    ) -> tuple[Answer, float]:
        """The generator's answer to the retrieved context, and the milliseconds it took.
        ``history``: the conversation's earlier ``{"role", "content"}`` turns; ``sampling``:
        the request's sampling parameters (model-backed generators only)."""
        started = time.perf_counter()
        answer = self.generator.generate(result.question, result.query_vector, result.context, history, sampling)
        return answer, elapsed_ms(started)

    def stream_answer(
        self, result: RetrievalResult, history: History | None = None, sampling: Sampling | None = None
    ) -> Iterator[str | Answer]:
        """The answer as the generator writes it: text deltas, then the final ``Answer``
        (whose ``text`` is the deltas joined).

        The first delta is awaited before this returns, so a generator that cannot answer
        (``GeneratorUnavailable``) raises here, before an HTTP response has started, and not
        from the iterator (which may still raise it if the model fails in mid-answer).

            >>> *deltas, answer = rag.stream_answer(rag.retrieve("docs", "Why spans?"))  # doctest: +SKIP
        """
        events = self.generator.stream(result.question, result.query_vector, result.context, history, sampling)
        first = next(events)

        def resumed() -> Iterator[str | Answer]:
            yield first
            yield from events

        return resumed()

    def query(
        self,
        collection: str,
        question: str,
        pipeline: str | None = None,
        overrides: dict | None = None,
        trace: bool = False,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> QueryResult:
        """The answer and the context it is written from; ``as_dict()`` is the answer object
        the HTTP endpoint and ``spanrag query --json`` return (see ``service.results``).

        With ``history`` (a chat), a follow-up question is searched together with the user's
        earlier turns (``retrieval.conversation``; ``retrieval_question`` in the object says
        what was searched), and the generator still answers the question as asked."""
        started = time.perf_counter()
        result = self.retrieve_turn(collection, question, history, pipeline, overrides)
        answer, generation_ms = self.answer(result, history, sampling)
        timings = {**result.timings_ms, "generation_ms": generation_ms, "total_ms": elapsed_ms(started)}
        return QueryResult(QueryAnswer.of(answer, timings), QuerySources.of(result, trace))

    def retrieve_turn(
        self,
        collection: str,
        question: str,
        history: History | None,
        pipeline: str | None = None,
        overrides: dict | None = None,
    ) -> RetrievalResult:
        """``retrieve`` for a chat turn: what it searches with may add earlier user turns
        (``retrieval_question``), and the result carries the question as asked."""
        from retrieval.conversation import retrieval_question

        searched = retrieval_question(question, history, self.settings.chat_follow_up_turns)
        if searched == question:
            return self.retrieve(collection, question, pipeline, overrides)
        result = self.retrieve(collection, searched, pipeline, overrides)
        return replace(result, question=question, retrieval_question=searched)

    def query_stream(
        self,
        collection: str,
        question: str,
        pipeline: str | None = None,
        overrides: dict | None = None,
        trace: bool = False,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[QueryEvent]:
        """``query`` as it happens: ``("context", QuerySources)``, then ``("delta",
        AnswerDelta)`` for each piece of the answer, then ``("answer", QueryAnswer)``, whose
        timings add ``first_delta_ms`` (question in, first delta out) to ``query``'s.

        Retrieval runs and the first delta is awaited before this returns (see
        ``stream_answer``): an unknown collection or pipeline, or a generator that cannot
        answer, raise here; only a failure in mid-answer comes from the iterator."""
        started = time.perf_counter()
        result = self.retrieve_turn(collection, question, history, pipeline, overrides)
        generation_started = time.perf_counter()
        answer_events = self.stream_answer(result, history, sampling)
        first_delta_ms = elapsed_ms(started)

        def events() -> Iterator[QueryEvent]:
            yield "context", QuerySources.of(result, trace)
            for event in answer_events:
                if isinstance(event, Answer):
                    timings = {
                        **result.timings_ms,
                        "first_delta_ms": first_delta_ms,
                        "generation_ms": elapsed_ms(generation_started),
                        "total_ms": elapsed_ms(started),
                    }
                    yield "answer", QueryAnswer.of(event, timings)
                else:
                    yield "delta", AnswerDelta(event)

        return events()

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        graph = self.__dict__.get("graph")  # the cached property, if it was ever read
        if graph is not None:
            graph.close()
