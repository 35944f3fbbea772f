"""OpenAI-compatible API: any OpenAI client (SDKs, chat front ends, agent frameworks) can ask
a spanrag collection, streamed or not.

    >>> from openai import OpenAI                                                   # doctest: +SKIP
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")      # doctest: +SKIP
    >>> reply = client.chat.completions.create(model="spanrag:docs",                # doctest: +SKIP
    ...     messages=[{"role": "user", "content": "How long is a year on Mercury?"}])
    >>> reply.choices[0].message.content           # the answer, with [n] markers   # doctest: +SKIP
    >>> reply.model_extra["spanrag"]["citations"]  # what each [n] cites           # doctest: +SKIP

    >>> from langchain_openai import ChatOpenAI                                     # doctest: +SKIP
    >>> llm = ChatOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused", model="spanrag:docs")  # doctest: +SKIP
    >>> llm.invoke("How long is a year on Mercury?").response_metadata["logprobs"]["citations"]  # doctest: +SKIP

Endpoints:
    GET  /v1/models               every collection as a model ``spanrag:<collection>``
    POST /v1/chat/completions     chat completion (``stream: true``: server-sent chunks)

Request: ``model`` is ``spanrag:<collection>`` or the bare collection name. The last message
must be the user's and is the question that retrieval searches with; a follow-up ("how long
should it steep?") is searched together with the user's earlier turns
(``retrieval.conversation``; ``spanrag.retrieval_question`` says what was searched). Earlier
``user`` and ``assistant`` turns go to the generator as history (their ``[n]`` markers removed, see
``generation.prompt.history_messages``). ``system`` and ``developer`` messages are accepted and
ignored: the generator's own rules (``generation.prompt.SYSTEM_PROMPT``: sources are data, answer
only from them, cite them) stay the only instructions, so a client cannot loosen them. Content
is a string or a list of ``{"type": "text", "text"}`` parts. Sampling parameters
(``temperature``, ``top_p``, ``max_tokens`` or ``max_completion_tokens``, ``stop``, ``seed``,
``presence_penalty``, ``frequency_penalty``) go to an LLM generator (``SPANRAG_GENERATOR=openai``)
in place of the server's defaults, except that ``max_tokens`` can only lower
``SPANRAG_LLM_MAX_TOKENS``; the extractive generator ignores them. spanrag's own
options ride along in the body (``extra_body=`` with the openai client): ``pipeline``,
``top_k``, ``budget_tokens``, ``compression``, ``compress_budget_tokens``, ``compress_ratio``,
``trace`` (see ``app.options.RetrievalOptions``).

OpenAI features spanrag does not offer are refused with a 400 naming the parameter
(``UNSUPPORTED``), never answered in plain text as if honoured (a structured-output or
tool-calling client would then fail later, on its side, confusingly): ``tools`` and
``functions`` unless empty, ``tool_choice`` and ``function_call`` other than ``"none"``,
``response_format`` other than ``{"type": "text"}``, ``logprobs: true``, ``top_logprobs``
above 0, ``n`` above 1, ``logit_bias`` unless empty, ``audio``, ``modalities`` other than
``["text"]``, ``web_search_options``. ``code`` is ``unsupported_value`` where the parameter
has an accepted value, else ``unsupported_parameter``. What does not change the reply's form
is accepted and ignored: ``stream_options`` (its ``include_usage`` is honoured), ``user``,
``metadata``, ``store``, ``service_tier``, ``prediction``, ``reasoning_effort``,
``verbosity``, ``prompt_cache_key``, ``safety_identifier``, ``parallel_tool_calls`` (nothing
without tools). Fields that neither OpenAI nor spanrag defines are ignored as well, not
refused (``extra="ignore"``, deliberately): clients and gateways add their own (vLLM's
``chat_template_kwargs``, tracing ids), refusing them would break those clients for nothing,
and every OpenAI parameter that would change the reply is declared and checked.

Response: a ``chat.completion``; ``choices[0].message.content`` is the answer with its
``[n]`` markers, ``choices[0].message.citations`` what they cite, and a top-level ``spanrag``
object carries the citations, the context spans, the usage (with the compression report),
the pipeline, the generator and the timings, shaped as in ``/v1/collections/{c}/query``.
The citations are in ``choices[0].logprobs.citations`` too (``content`` and ``refusal`` None:
there are no token log probabilities): clients that keep only OpenAI's fields drop
``message.citations`` and ``spanrag``, but keep ``logprobs`` whole, streamed or not; with
LangChain's ``ChatOpenAI`` that is ``AIMessage.response_metadata["logprobs"]["citations"]``
(``invoke``, and the chunks of ``stream`` added up). No other field survives there both
ways: ``ChatOpenAI`` carries a message's or a delta's own extra fields nowhere, and response
headers (``include_response_headers``) are sent before a streamed answer exists.
``usage`` is an estimate in the embedding model's word pieces (the unit of ``context_tokens``),
not the generator's tokenizer: ``prompt_tokens`` = context tokens + question tokens (the
rules and history are not counted), ``completion_tokens`` = the answer's word pieces.

Streaming (``stream: true``): ``data: {chat.completion.chunk}`` events, then ``data: [DONE]``.
The first chunk has ``delta.role = "assistant"`` and ``spanrag`` = {context, usage, pipeline};
then one chunk per piece of the answer (``delta.content``); the last has ``finish_reason:
"stop"``, ``delta.citations``, ``logprobs.citations`` and ``spanrag`` = {answer (the deltas
joined), citations, timings_ms, generator, token_usage}; with ``stream_options.include_usage``
a chunk with empty ``choices`` and the ``usage`` follows it, as OpenAI does.

Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400
``invalid_request_error`` (not JSON, schema, roles, last message not from the user, blank
question, unknown pipeline, an unsupported feature: checked before the model is looked up),
404 ``model_not_found``, 409 (the collection was built with another model), 503
``service_unavailable`` (the generator cannot answer; checked before a stream starts). A
failure in mid-stream is sent as ``data: {"error": {...}}`` and the stream ends without
``[DONE]`` (the openai client raises ``APIError``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException

from app import sse
from app.errors import ServiceError, service_error
from app.options import RetrievalOptions, Text, encodable_text
from app.security import AccessControl, Principal
from generation.types import Sampling
from service.engine import RagService
from service.results import QueryEvent, QueryResult

log = logging.getLogger(__name__)
MODEL_PREFIX = "spanrag:"


# -- request ---------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        ..., description="'tool' and 'function' turns are refused: spanrag offers no tools"
    )
    content: Text | list[dict[str, Any]] | None = Field(
        None, description="a string or a list of {'type': 'text', 'text': ...} parts"
    )

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(
                "content must be a string or a list of {'type': 'text', 'text': '...'} parts,"
                f" got {type(value).__name__}"
            )
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(
                    f"only text content parts {{'type': 'text', 'text': '...'}} are supported, got {str(kind)[:50]!r}"
                )
            encodable_text(part["text"])
        return value

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part["text"] for part in self.content)
        return self.content or ""


@dataclass(frozen=True)
class ChatLimits:
    max_question_chars: int
    max_total_chars: int
    max_messages: int


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(RetrievalOptions):
    # fields no one declared are ignored (pydantic's default, stated here as the decision it
    # is; see the module doc): what would change the reply's form is declared and refused
    model_config = ConfigDict(extra="ignore")

    model: Text = Field(..., description="spanrag:<collection> (or the bare collection name)")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, description="must be 1: one answer per request")
    # sampling, for an LLM generator (see ``sampling``)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Text | list[Text] | None = Field(None, description="up to 4 stop sequences")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = Field(None, max_length=256)  # accepted for compatibility, ignored
    # OpenAI features spanrag does not offer: declared so that asking for one is a 400 naming
    # it (``unsupported``), never a plain-text answer as if it had been honoured
    tools: list[dict[str, Any]] | None = Field(None, description="refused unless empty: spanrag calls no tools")
    functions: list[dict[str, Any]] | None = Field(None, description="refused unless empty (the older tools)")
    tool_choice: str | dict[str, Any] | None = Field(None, description="only 'none'")
    function_call: str | dict[str, Any] | None = Field(None, description="only 'none'")
    response_format: dict[str, Any] | None = Field(None, description="only {'type': 'text'}")
    logprobs: bool | None = Field(None, description="only false: no token log probabilities")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="only 0")
    logit_bias: dict[str, float] | None = Field(None, description="refused unless empty")
    audio: dict[str, Any] | None = Field(None, description="refused: text only")
    modalities: list[str] | None = Field(None, description="only ['text']")
    web_search_options: dict[str, Any] | None = Field(None, description="refused: spanrag searches its collection")
    # spanrag's own options
    pipeline: Text | None = Field(None, description="retrieval pipeline (default: the server's)")
    trace: bool = Field(False, description="add every candidate's scores and fate to the spanrag object")

    @field_validator("stop")
    @classmethod
    def _at_most_four_stop_sequences(cls, stop: str | list[str] | None) -> str | list[str] | None:
        sequences = [stop] if isinstance(stop, str) else stop or []
        if len(sequences) > 4 or any(not s for s in sequences):
            raise ValueError("at most 4 non-empty stop sequences")
        return stop

    def unsupported(self) -> OpenAIError | None:
        """The 400 for the first OpenAI feature this request asks for that spanrag does not
        offer (see ``UNSUPPORTED``); None when it asks for none."""
        for name, accepted, code, reason in UNSUPPORTED:
            value = getattr(self, name)
            if value is not None and not accepted(value):
                if code == "unsupported_parameter":
                    message = f"Unsupported parameter: {name!r}: {reason}"
                else:
                    shown = {"type": value.get("type")} if name == "response_format" else value
                    message = f"Unsupported value: {name!r} = {json.dumps(shown)[:100]}: {reason}"
                return OpenAIError(400, message, param=name, code=code)
        return None

    def sampling(self) -> Sampling:
        """The request's sampling parameters for the generator (``max_completion_tokens``,
        OpenAI's newer name, wins over ``max_tokens``)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    def question_and_history(self, limits: ChatLimits) -> tuple[str, list[dict[str, str]]]:
        """The last (user) message's text, and the user/assistant turns before it; every turn
        counts towards ``limits`` (an earlier turn may be searched with the question)."""
        if len(self.messages) > limits.max_messages:
            raise OpenAIError(
                400,
                f"{len(self.messages)} messages; at most {limits.max_messages} (SPANRAG_MAX_CHAT_MESSAGES)",
                param="messages",
                code="too_many_messages",
            )
        total = sum(len(m.text) for m in self.messages)
        if total > limits.max_total_chars:
            raise OpenAIError(
                400,
                f"the messages have {total} characters together; at most"
                f" {limits.max_total_chars} (SPANRAG_MAX_CHAT_CHARS)",
                param="messages",
                code="context_length_exceeded",
            )
        *earlier, last = self.messages
        if last.role != "user":
            raise OpenAIError(
                400, f"the last message must be the user's question (role 'user'), got {last.role!r}", param="messages"
            )
        question = last.text
        if not question.strip():
            raise OpenAIError(400, "the last user message has no text", param="messages")
        if len(question) > limits.max_question_chars:
            raise OpenAIError(
                400,
                f"the last user message is the question: at most {limits.max_question_chars}"
                f" characters (SPANRAG_MAX_QUESTION_CHARS), got {len(question)}",
                param="messages",
                code="context_length_exceeded",
            )
        history = [{"role": m.role, "content": m.text} for m in earlier if m.role in ("user", "assistant")]
        return question, history


NO_TOOLS = "spanrag calls no tools: it answers from the collection's documents, citing them"
UNSUPPORTED: tuple[tuple[str, Callable[[Any], bool], str, str], ...] = (
    # (parameter, which values are accepted, code, why); checked in this order: the first refused
    # one is named, the tools before the choices that go with them
    ("tools", lambda v: not v, "unsupported_parameter", f"{NO_TOOLS}; send no tools"),
    ("functions", lambda v: not v, "unsupported_parameter", f"{NO_TOOLS}; send no functions"),
    ("tool_choice", lambda v: v == "none", "unsupported_value", f"{NO_TOOLS}; only 'none' is accepted"),
    ("function_call", lambda v: v == "none", "unsupported_value", f"{NO_TOOLS}; only 'none' is accepted"),
    (
        "response_format",
        lambda v: v == {"type": "text"},
        "unsupported_value",
        "spanrag answers in prose with [n] citation markers, never in JSON, so JSON mode and structured"
        " output cannot be served; only {'type': 'text'} is accepted",
    ),
    (
        "logprobs",
        lambda v: v is False,
        "unsupported_value",
        "spanrag returns no token log probabilities; only false is accepted",
    ),
    (
        "top_logprobs",
        lambda v: v == 0,
        "unsupported_value",
        "spanrag returns no token log probabilities; only 0 is accepted",
    ),
    ("n", lambda v: v == 1, "unsupported_value", "spanrag gives one answer per request; n must be 1"),
    (
        "logit_bias",
        lambda v: not v,
        "unsupported_parameter",
        "token ids mean nothing to spanrag's generator; send none or {}",
    ),
    ("audio", lambda v: False, "unsupported_parameter", "spanrag answers in text only"),
    (
        "modalities",
        lambda v: v == ["text"],
        "unsupported_value",
        "spanrag answers in text only; only ['text'] is accepted",
    ),
    ("web_search_options", lambda v: False, "unsupported_parameter", "spanrag searches its collection, not the web"),
)


# -- errors ----------------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.param, self.code, self.headers = param, code, headers

    @classmethod
    def of(cls, error: ServiceError) -> OpenAIError:
        """An entry of the error table (``app.errors``) in OpenAI's shape."""
        return cls(error.status, error.message, error.error_type, error.param, error.code, error.headers)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def as_openai_error(exc: Exception) -> OpenAIError | None:
    """The OpenAI-shaped error for what a chat request may raise; None: not ours to answer."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "")
            return OpenAIError(
                400, f"the request body is not valid JSON: {str(reason)[:200]}".rstrip(": "), code="json_invalid"
            )
        where = [str(part)[:100] for part in first.get("loc", ()) if part != "body"]
        reasons = "; ".join(
            f"{'.'.join(str(p)[:100] for p in e.get('loc', ()) if p != 'body') or 'body'}: {str(e.get('msg'))[:300]}"
            for e in errors[:3]
        )
        return OpenAIError(400, f"invalid request: {reasons}", param=".".join(where) or None, code=first.get("type"))
    if isinstance(exc, HTTPException):  # a body FastAPI cannot read (not UTF-8), the size guard's 413
        detail = "the request body is not valid UTF-8 JSON" if exc.status_code == 400 else str(exc.detail)[:500]
        return OpenAIError(exc.status_code, detail, headers=exc.headers)
    error = service_error(exc)  # the table the native API answers from too (app.errors)
    return None if error is None else OpenAIError.of(error)


class OpenAIErrorRoute(APIRoute):
    """A route whose errors, request validation included, are answered in OpenAI's shape
    (the app's own handlers answer ``{"detail"}`` for its other routes)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = as_openai_error(exc)
                if error is None:
                    raise
                return error.response()

        return route


# -- responses -------------------------------------------------------------------------------


def model_id(collection: str) -> str:
    return f"{MODEL_PREFIX}{collection}"


def collection_of(rag: RagService, model: str, principal: Principal) -> str:
    """The collection a model name stands for; 404 when there is none or the caller may not
    see it (the same answer, so that names do not leak)."""
    collection = model.removeprefix(MODEL_PREFIX)
    if not collection or not principal.sees(collection) or not rag.store.has_collection(collection):
        raise OpenAIError(
            404,
            f"model {model[:200]!r} not found: there is no collection {collection[:200]!r} (GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )
    principal.require(collection, "read")
    return collection


def token_usage(rag: RagService, question: str, answer: str, context_tokens: int) -> dict:
    """OpenAI's ``usage``, estimated in the embedding model's word pieces (see module doc)."""
    question_tokens, answer_tokens = rag.encoder.count_tokens([question, answer])
    prompt = context_tokens + question_tokens
    return {"prompt_tokens": prompt, "completion_tokens": answer_tokens, "total_tokens": prompt + answer_tokens}


def citing(citations: list[dict]) -> dict:
    """The choice's ``logprobs``, as the carrier of the citations: of a choice, clients that
    keep only OpenAI's fields (LangChain's ChatOpenAI: ``response_metadata["logprobs"]``, streamed
    or not) keep ``logprobs`` whole. ``content`` and ``refusal`` are None: no token log
    probabilities (see module doc)."""
    return {"content": None, "refusal": None, "citations": citations}


class Completion:
    """One reply's identity, shared by its chunks: ``chatcmpl-<hex>``, creation time, model."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def message(self, query: QueryResult, usage: dict) -> dict:
        """The ``chat.completion`` object for ``RagService.query``'s result: the answer text
        is the message, the rest of the answer object is ``spanrag``."""
        spanrag = {k: v for k, v in query.as_dict().items() if k != "answer"}
        citations = spanrag["citations"]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": citing(citations),
                    "message": {
                        "role": "assistant",
                        "content": query.answer.text,
                        "refusal": None,
                        "citations": citations,
                    },
                }
            ],
            "usage": usage,
            "spanrag": spanrag,
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}],
            **extra,
        }

    def chunks(
        self, rag: RagService, question: str, events: Iterator[QueryEvent], include_usage: bool
    ) -> Iterator[str]:
        """``RagService.query_stream``'s events as OpenAI chunks (see module doc)."""
        context_tokens = 0
        try:
            for event in events:
                if event[0] == "context":
                    sources = event[1]
                    context_tokens = sources.context_tokens
                    yield sse.data(self.chunk({"role": "assistant", "content": ""}, spanrag=sources.as_dict()))
                elif event[0] == "delta":
                    yield sse.data(self.chunk({"content": event[1].text}))
                else:  # the final answer
                    final = event[1]
                    usage = token_usage(rag, question, final.text, context_tokens)
                    answer = final.as_dict()
                    yield sse.data(
                        self.chunk(
                            {"citations": answer["citations"]},
                            "stop",
                            citing(answer["citations"]),
                            spanrag={**answer, "token_usage": usage},
                        )
                    )
                    if include_usage:
                        yield sse.data({**self.chunk({}), "choices": [], "usage": usage})
        except Exception as exc:  # the status line is out: the error goes into the stream
            error = as_openai_error(exc)
            if error is None:
                log.exception("chat stream failed")
                error = OpenAIError(500, f"internal error: {type(exc).__name__}", error_type="server_error")
            yield sse.data(error.body())
            return
        yield sse.data("[DONE]")


# -- routes ----------------------------------------------------------------------------------


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


def openai_error_responses(statuses: dict[int | str, dict]) -> dict[int | str, dict]:
    """The native routes' error answers, in OpenAI's shape, for the OpenAPI document."""
    return {status: {**answer, "model": OpenAIErrorBody} for status, answer in statuses.items()}


def openai_router(rag: RagService, access: AccessControl, responses: dict | None = None) -> APIRouter:
    """``/v1/models`` and ``/v1/chat/completions`` over ``rag`` (``create_app`` includes it);
    ``access`` names the caller (``app.security``); ``responses``: the error answers to declare
    (their bodies are declared in OpenAI's shape)."""
    router = APIRouter(
        route_class=OpenAIErrorRoute, tags=["OpenAI-compatible"], responses=openai_error_responses(responses or {})
    )
    limits = ChatLimits(rag.settings.max_question_chars, rag.settings.max_chat_chars, rag.settings.max_chat_messages)

    @router.get("/v1/models")
    def list_models(principal: Principal = Depends(access)) -> dict:
        """Every collection as a model (spanrag keeps no creation time: ``created`` is 0)."""
        return {
            "object": "list",
            "data": [
                {"id": model_id(c), "object": "model", "created": 0, "owned_by": "spanrag"}
                for c in rag.store.list_collections()
                if principal.sees(c)
            ],
        }

    @router.post(
        "/v1/chat/completions",
        response_model=None,
        responses={
            200: {
                "description": "a chat.completion; with stream: true, chat.completion.chunk events (see the module doc)",
                "content": {"application/json": {}, sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
            }
        },
    )
    def chat_completions(
        body: ChatCompletionRequest, principal: Principal = Depends(access)
    ) -> dict | StreamingResponse:
        if refused := body.unsupported():
            raise refused
        collection = collection_of(rag, body.model, principal)
        question, history = body.question_and_history(limits)
        reply = Completion(model_id(collection))
        if body.stream:
            # retrieval and the first delta happen here, so failures still get a status
            events = rag.query_stream(
                collection, question, body.pipeline, body.overrides(), body.trace, history, body.sampling()
            )
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                reply.chunks(rag, question, events, include_usage), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS
            )
        out = rag.query(collection, question, body.pipeline, body.overrides(), body.trace, history, body.sampling())
        return reply.message(out, token_usage(rag, question, out.answer.text, out.sources.context_tokens))

    return router
