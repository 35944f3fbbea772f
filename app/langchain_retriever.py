"""A LangChain retriever over a spanrag collection, in-process or over HTTP.

    >>> from app.langchain_retriever import SpanRAGRetriever
    >>> retriever = SpanRAGRetriever(collection="docs", data_dir="./.spanrag")       # doctest: +SKIP
    >>> retriever = SpanRAGRetriever(collection="docs", base_url="http://127.0.0.1:8000")  # doctest: +SKIP
    >>> retriever.invoke("What is a span?")[0].metadata["span_id"]                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, PrivateAttr

from service.engine import RagService, ranked_payload
from service.settings import Settings


class SpanRAGRetriever(BaseRetriever):
    """Returns the spans spanrag selects for a query, one LangChain Document per span.

    Give ``base_url`` to talk to a running ``spanrag serve``; otherwise the collection is
    opened in-process from ``data_dir`` (or a ready ``service``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: str
    data_dir: str | Path | None = None
    base_url: str | None = None
    pipeline: str | None = None
    top_k: int | None = None
    budget_tokens: int | None = None
    timeout_s: float = 30.0
    service: RagService | None = None
    _rag: RagService | None = PrivateAttr(default=None)

    def _body(self, query: str) -> dict[str, Any]:
        body: dict[str, Any] = {"question": query, "pipeline": self.pipeline}
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.budget_tokens is not None:
            body["budget_tokens"] = self.budget_tokens
        return body

    def _local(self) -> RagService:
        if self._rag is None:
            if self.service is not None:
                self._rag = self.service
            else:
                settings = Settings(data_dir=self.data_dir) if self.data_dir else Settings()
                self._rag = RagService(settings)
        return self._rag

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LCDocument]:
        if self.base_url:
            response = httpx.post(
                f"{self.base_url.rstrip('/')}/v1/collections/{self.collection}/retrieve",
                json=self._body(query), timeout=self.timeout_s,
            )
            response.raise_for_status()
            spans = response.json()["spans"]
        else:
            body = self._body(query)
            overrides = {k: body[k] for k in ("top_k", "budget_tokens") if k in body}
            result = self._local().retrieve(self.collection, query, self.pipeline, overrides)
            spans = ranked_payload(result)
        return [
            LCDocument(page_content=s["text"], metadata={k: v for k, v in s.items() if k != "text"})
            for s in spans
        ]
