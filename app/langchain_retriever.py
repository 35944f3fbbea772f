"""A LangChain retriever over a spanrag collection, in-process or over HTTP.

    >>> from app.langchain_retriever import SpanRAGRetriever
    >>> retriever = SpanRAGRetriever(collection="docs", data_dir="./.spanrag", k=4)     # doctest: +SKIP
    >>> retriever = SpanRAGRetriever(collection="docs", base_url="http://127.0.0.1:8000",
    ...                              api_key="spk-...", search_kwargs={"pipeline": "dense"})  # doctest: +SKIP
    >>> retriever.invoke("What is a span?", k=1)[0].metadata["span_id"]             # doctest: +SKIP

It follows LangChain's retriever conventions:

* ``k`` is the most Documents returned (the best spans of the selected context, best first;
  None: the whole context the pipeline selects). The pipeline's ``top_k`` and
  ``budget_tokens`` bound what is selected, so ``k`` above them returns fewer.
* ``search_kwargs`` (as on ``VectorStoreRetriever``) holds the same search options as a dict:
  ``k``, ``pipeline``, ``top_k``, ``budget_tokens``, ``compression``,
  ``compress_budget_tokens``, ``compress_ratio``. An option is given either as a field or in
  ``search_kwargs``, not both.
* the same names are accepted per call, ``retriever.invoke(q, k=1, pipeline="dense")``, and
  override the retriever's own for that call (None: back to the pipeline's value, or, for
  ``k``, no cap).
* unknown constructor arguments, unknown ``search_kwargs`` or per-call keyword arguments
  (``TypeError``), and out-of-range values (``k=0``, ``top_k=-3``: pydantic's
  ``ValidationError``, a ``ValueError``) are refused, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from app.options import RetrievalOptions, Text
from retrieval.params import BudgetTokens, TopK
from service.engine import RagService, ranked_payload
from service.settings import Settings


class SearchOptions(RetrievalOptions):
    """The search options of one call: the retriever's fields, its ``search_kwargs``, then
    the call's keyword arguments, validated together (the server's limits, plus ``k``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    k: int | None = Field(None, ge=1, strict=True, description="most Documents returned; None: all selected")
    pipeline: Text | None = Field(None, min_length=1, max_length=100)


SEARCH_OPTIONS: tuple[str, ...] = ("k", "pipeline", *RetrievalOptions.model_fields)
"""Names accepted in ``search_kwargs`` and as per-call keyword arguments."""

_FIELD_OPTIONS = ("k", "pipeline", "top_k", "budget_tokens")  # also fields of the retriever
_LANGCHAIN_CALL_KWARGS = ("verbose",)  # read by BaseRetriever.invoke itself and passed on: ignored


def _unknown(names: set[str], where: str) -> str:
    return f"{where} {', '.join(repr(n) for n in sorted(names))}; known search options: {', '.join(SEARCH_OPTIONS)}"


class SpanRAGRetriever(BaseRetriever):
    """Returns the spans spanrag selects for a query, one LangChain Document per span (best
    first), with the span's ids, offsets, score and heading path as metadata.

    Give ``base_url`` (and ``api_key`` when the server has keys) to talk to a running
    ``spanrag serve``; otherwise the collection is opened in-process from ``data_dir`` (or a
    ready ``service``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    collection: str = Field(min_length=1)
    data_dir: str | Path | None = None
    base_url: str | None = None
    api_key: SecretStr | None = Field(None, description="sent as 'Authorization: Bearer KEY' (remote mode)")
    k: int | None = Field(None, ge=1, strict=True, description="most Documents returned; None: all selected")
    pipeline: str | None = Field(None, min_length=1, max_length=100)
    top_k: TopK | None = None  # declared once, in retrieval.params
    budget_tokens: BudgetTokens | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    service: RagService | None = None
    _rag: RagService | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> SpanRAGRetriever:
        if self.base_url and (self.service is not None or self.data_dir is not None):
            raise ValueError("give base_url (remote) or service/data_dir (in-process), not both")
        if self.service is not None and self.data_dir is not None:
            raise ValueError("give service or data_dir, not both")
        if self.api_key is not None and not self.base_url:
            raise ValueError("api_key is for the remote mode: give base_url too")
        unknown = set(self.search_kwargs) - set(SEARCH_OPTIONS)
        if unknown:
            raise ValueError(_unknown(unknown, "unknown search_kwargs"))
        twice = sorted(n for n in _FIELD_OPTIONS if n in self.search_kwargs and getattr(self, n) is not None)
        if twice:
            raise ValueError(f"{', '.join(twice)} given both as a field and in search_kwargs; give it once")
        self._options({})  # out-of-range search_kwargs fail here, not at the first call
        return self

    # -- options -----------------------------------------------------------------------------

    def _options(self, call_kwargs: dict[str, Any]) -> SearchOptions:
        call = {n: v for n, v in call_kwargs.items() if n not in _LANGCHAIN_CALL_KWARGS}
        unknown = set(call) - set(SEARCH_OPTIONS)
        if unknown:
            raise TypeError(_unknown(unknown, f"{type(self).__name__} got unexpected keyword argument(s)"))
        fields = {n: getattr(self, n) for n in _FIELD_OPTIONS if getattr(self, n) is not None}
        return SearchOptions.model_validate({**fields, **self.search_kwargs, **call})

    @staticmethod
    def _documents(spans: list[dict], k: int | None) -> list[LCDocument]:
        return [
            LCDocument(page_content=s["text"], metadata={n: v for n, v in s.items() if n != "text"}) for s in spans[:k]
        ]

    # -- in-process --------------------------------------------------------------------------

    def _local(self) -> RagService:
        if self._rag is None:
            if self.service is not None:
                self._rag = self.service
            else:
                settings = Settings(data_dir=self.data_dir) if self.data_dir else Settings()
                self._rag = RagService(settings)
        return self._rag

    def _search_local(self, query: str, options: SearchOptions) -> list[LCDocument]:
        result = self._local().retrieve(self.collection, query, options.pipeline, options.overrides())
        return self._documents(ranked_payload(result), options.k)

    # -- remote ------------------------------------------------------------------------------

    def _request(self, query: str, options: SearchOptions) -> dict[str, Any]:
        """``httpx`` arguments of the ``/retrieve`` call (``k`` is applied to its answer)."""
        assert self.base_url
        headers = {}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return {
            "url": f"{self.base_url.rstrip('/')}/v1/collections/{quote(self.collection, safe='')}/retrieve",
            "json": {"question": query, "pipeline": options.pipeline, **options.overrides()},
            "headers": headers,
        }

    @staticmethod
    def _spans(response: httpx.Response) -> list[dict]:
        """The answer's spans; an error status raises ``httpx.HTTPStatusError`` whose message
        carries the server's ``detail``."""
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:500]
            raise httpx.HTTPStatusError(
                f"spanrag answered {response.status_code} {response.reason_phrase} for"
                f" {response.request.method} {response.request.url}: {detail}",
                request=response.request,
                response=response,
            )
        return response.json()["spans"]

    # -- BaseRetriever -----------------------------------------------------------------------

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        options = self._options(kwargs)
        if not self.base_url:
            return self._search_local(query, options)
        response = httpx.post(**self._request(query, options), timeout=self.timeout_s)
        return self._documents(self._spans(response), options.k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        options = self._options(kwargs)
        if not self.base_url:
            return await run_in_executor(None, self._search_local, query, options)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.post(**self._request(query, options))
        return self._documents(self._spans(response), options.k)
