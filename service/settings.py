"""One settings object for the whole service: ``SPANRAG_*`` environment variables, a
``.env`` file, and CLI flags on top (the CLI passes its flags as overrides).

    >>> Settings(data_dir="/tmp/x").data_dir.name
    'x'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexing.spans import Granularity
from indexing.store.merge_policy import MergePolicy
from retrieval.params import RetrievalOverrides

_TOKEN_GRANULARITIES: tuple[Granularity, ...] = ("paragraph", "row")


class Settings(BaseSettings, RetrievalOverrides):
    """Every ``SPANRAG_*`` setting; the retrieval override knobs (``top_k``, ``budget_tokens``,
    ``compression``, ``compress_budget_tokens``, ``compress_ratio``) come from
    :class:`~retrieval.params.RetrievalOverrides`, validated as a request's are."""

    model_config = SettingsConfigDict(env_prefix="SPANRAG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".spanrag"), description="where SQLite, FAISS and BM25 files live")
    dense_index: Literal["flat", "hnsw", "ivf"] = Field(
        "flat",
        description="FAISS index of the span vectors: 'flat' (exact), 'hnsw' or 'ivf' (approximate, one per granularity)",
    )
    merge_min_rows: int = Field(
        MergePolicy().min_rows,
        ge=0,
        description="embedded store: spans written or deleted since the last merge before the deltas are merged"
        " into a new base in the background (also at least merge_fraction of the base; README: Live updates)",
    )
    merge_fraction: float = Field(
        MergePolicy().fraction,
        gt=0,
        description="embedded store: share of the base written or deleted since the last merge that starts one",
    )
    merge_in_process: bool = Field(
        False,
        description="embedded store: build merges in the server's own process (a thread) instead of a worker"
        " process of their own (README: Live updates)",
    )
    max_deltas: int = Field(
        MergePolicy().max_deltas, ge=1, description="embedded store: delta segments before they are compacted into one"
    )
    store: Literal["sqlite_faiss", "qdrant"] = Field(
        "sqlite_faiss",
        description="span store: SQLite + FAISS in data_dir, or Qdrant (a server/cluster, or local mode)",
    )
    qdrant_url: str | None = Field(None, description="Qdrant server or cluster, e.g. http://qdrant-1:6333")
    qdrant_path: Path | None = Field(
        None, description="Qdrant local mode folder (default: data_dir/qdrant when no URL)"
    )
    qdrant_api_key: str | None = Field(None, description="Qdrant API key")
    qdrant_local_engine: Literal["client", "edge"] = Field(
        "client",
        description="Qdrant without a URL: 'client' (qdrant-client's local mode, brute force) or 'edge' (the Qdrant"
        " engine in-process, the edge extra; README: Scaling out)",
    )
    qdrant_shards: int = Field(1, ge=1, description="shards of each new collection (a cluster spreads them over nodes)")
    qdrant_replication: int = Field(1, ge=1, description="copies of each shard (2: a node may die without losing data)")
    embedding_model: str = Field(
        "all-MiniLM-L6-v2", description="sentence-transformers model: the bundled name, a path, or a cached name"
    )
    encoder_backend: Literal["torch", "onnx-int8"] = Field(
        "torch",
        description="runs the embedding model: 'torch', or 'onnx-int8' (int8 ONNX Runtime on the CPU, the onnx extra;"
        " exported into data_dir/models at first use; a collection answers only the backend that built it)",
    )
    late_pooling: bool = Field(
        False,
        description="ingest runs each document through the encoder once and pools its sections', paragraphs' and"
        " sentences' vectors from it (README: Late pooling); off: every span text has its own pass",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'")
    threads: int = Field(
        0,
        ge=0,
        description="threads of torch, FAISS and BLAS for ingest and index builds; 0: the cores this process may use",
    )
    query_threads: int = Field(
        1,
        ge=0,
        description="threads of torch, FAISS and BLAS while answering; 1: concurrent requests use the cores (README: Threads)",
    )
    thread_plan: bool = Field(
        True, description="false: leave the thread pools as the libraries and OMP_NUM_THREADS set them"
    )
    embed_batch_size: int = Field(16, ge=1, description="texts per encoder batch (small batches pad less on CPU)")
    ingest_batch_docs: int = Field(32, ge=1, description="documents per write transaction during ingest")
    token_codec: Literal["fp16", "int8", "binary"] | None = Field(
        "binary",
        description="codes of the token vectors stored for late interaction ('off': none; the"
        " default pipeline's MaxSim then has nothing to score and ranks like hybrid)",
    )
    token_model: str | None = Field(
        None,
        description="ColBERT checkpoint in PyLate format (a folder) for token vectors; None: the embedding model's own",
    )
    token_granularities: list[Granularity] = Field(
        default_factory=lambda: list(_TOKEN_GRANULARITIES), description="spans that get token vectors"
    )
    graph: bool = Field(
        True, description="keep the graph index (entities, structure, semantic neighbours) for the bubble"
    )
    pipeline: str = Field(
        "default", description="retrieval pipeline the service runs (see `spanrag eval --list-pipelines`)"
    )
    # top_k, budget_tokens, compression, compress_budget_tokens, compress_ratio: the override
    # knobs of retrieval.params.RetrievalOverrides (SPANRAG_TOP_K, ...), declared there once
    generator: str = Field(
        "extractive", description="answer generator: 'extractive' or 'openai' (any OpenAI-compatible endpoint)"
    )
    llm_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="OpenAI-compatible endpoint, up to and including /v1"
    )
    llm_model: str = Field("", description="model name the endpoint serves")
    llm_api_key: str | None = Field(None, description="API key (local servers ignore it)")
    llm_timeout_s: float = Field(60.0, gt=0, description="per attempt; a whole non-streamed answer must fit in it")
    llm_max_retries: int = Field(2, ge=0, description="further attempts after a connection error, timeout, 429 or 5xx")
    llm_max_tokens: int = Field(512, ge=1, description="most tokens the model may write per answer")
    llm_system_role: bool = Field(True, description="false for chat formats without a system role (Gemma on llama.cpp)")
    answer_sentences: int = Field(3, ge=1, description="sentences the extractive generator cites")
    chat_follow_up_turns: int = Field(
        2,
        ge=0,
        description="a chat follow-up ('how many moons does it have?') is searched with this many earlier user turns; 0: the last turn alone",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    # -- exposure: keys, browsers, limits (README: Security) --------------------------------
    allow_open: bool = Field(
        False,
        description="serve without API keys on a non-loopback address (anyone who reaches the port may read and write)",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header values accepted (DNS-rebinding guard); None: the loopback names when bound to loopback, any otherwise",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="web origins allowed to call the API from a browser (CORS); empty: none"
    )
    rate_limit_per_minute: int = Field(
        600, ge=0, description="requests a minute per API key; 0: no limit (an open server, without keys, has none)"
    )
    rate_limit_burst: int = Field(60, ge=1, description="requests a key may send at once before the rate applies")
    max_request_bytes: int = Field(1_000_000, ge=1024, description="largest request body, except document uploads")
    max_upload_bytes: int = Field(
        20_000_000, ge=1024, description="largest document upload (multipart file or JSON document)"
    )
    max_document_bytes: int = Field(50_000_000, ge=1, description="largest file a parser reads (CLI ingest included)")
    max_document_chars: int = Field(5_000_000, ge=1, description="most characters of a parsed document")
    max_document_spans: int = Field(200_000, ge=1, description="most spans of one document")
    max_table_cells: int = Field(1_000_000, ge=1, description="most cells of one table or CSV file")
    max_table_columns: int = Field(1_000, ge=1, description="most columns of one table or CSV file")
    max_nesting_depth: int = Field(256, ge=1, description="deepest element nesting of an HTML document")
    max_metadata_bytes: int = Field(65_536, ge=2, description="largest document metadata, as JSON")
    max_metadata_depth: int = Field(16, ge=1, description="deepest nesting of document metadata")
    max_question_chars: int = Field(4000, ge=1, description="longest question")
    max_chat_chars: int = Field(
        32_000, ge=1, description="most characters of all chat messages of one request together"
    )
    max_chat_messages: int = Field(64, ge=1, description="most messages of one chat request")
    json_logs: bool = Field(True, description="log one JSON object per line (with the request id) from `spanrag serve`")

    @field_validator("token_codec", mode="before")
    @classmethod
    def _off_means_none(cls, value):
        return None if isinstance(value, str) and value.lower() in ("", "off", "none") else value

    def vector_recipe(self) -> str:
        """What makes a collection's vectors: the model, and the backend and pooling when
        they are not the defaults (eval caches one collection per recipe).

            >>> Settings(late_pooling=True).vector_recipe()
            'all-MiniLM-L6-v2+late-pooling'
        """
        recipe = self.embedding_model
        if self.encoder_backend != "torch":
            recipe += f"+{self.encoder_backend}"
        return recipe + ("+late-pooling" if self.late_pooling else "")

    def retrieval_overrides(self) -> dict:
        """The override knobs set here, by flat name (applied under a request's own)."""
        return self.overrides()


def invalid_settings_message(exc: ValidationError) -> str:
    """One line per invalid setting, named as its environment variable (``SPANRAG_TOP_K``):
    what the CLI prints instead of a traceback."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        lines.append(f"{Settings.model_config['env_prefix']}{name.upper()} ({name}): {error['msg']}")
    return "invalid settings: " + "; ".join(lines)
