"""A generator backed by any OpenAI-compatible chat endpoint (OpenAI, llama.cpp, vLLM, Ollama...).

The model sees the context as numbered sources (see ``generation.prompt``) and cites them
with ``[n]``; the reply's markers are resolved back to the context spans they number. A
reply that is the prompt's fixed sentence for "the sources do not hold the answer"
(``NOT_IN_SOURCES``) is an abstention: ``Answer.abstained``, no citations.

    >>> gen = OpenAICompatibleGenerator(OpenAICompatibleOptions(
    ...     base_url="http://127.0.0.1:8080/v1", model="gemma-3-270m"))          # doctest: +SKIP
    >>> answer = gen.generate(question, query_vector, context)                   # doctest: +SKIP
    >>> answer.text, [c.span_id for c in answer.citations]                       # doctest: +SKIP

Streaming: ``stream(...)`` is an iterator of text deltas (``str``) whose last item is the
final ``Answer``; the deltas joined are exactly ``answer.text``:

    >>> for event in gen.stream(question, query_vector, context):              # doctest: +SKIP
    ...     if isinstance(event, Answer):
    ...         send_citations(event.citations)
    ...     else:
    ...         send_text(event)

Failures: connection errors, timeouts, 429 and 5xx are retried with exponential backoff
(``backoff_s``, ``2 * backoff_s``, ...) up to ``max_retries`` times; each attempt is bounded
by ``timeout_s``, so a call gives up after at most ``(max_retries + 1) * timeout_s`` plus the
backoff sleeps. What still fails, and every other error status, raises
``GeneratorUnavailable`` (an HTTP layer answers it with 503). A stream that breaks after
its first delta is not retried (the text is already out): it raises ``GeneratorUnavailable``.

Sampling: a request's ``Sampling`` (temperature, top_p, stop, seed, penalties) goes to the
endpoint in place of the options' defaults; its ``max_tokens`` is capped at the options'
``max_tokens``.

The ``openai`` client is imported only when a generator is built (the ``llm`` extra), so
``GeneratorUnavailable`` can be imported and handled without it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from generation.extractive import NO_ANSWER
from generation.prompt import Prompt, abstains, build_prompt, parse_citations
from generation.types import Answer, History, Sampling
from retrieval.types import Context

T = TypeVar("T")


class GeneratorUnavailable(RuntimeError):
    """The model endpoint cannot answer now: unreachable, timing out, or failing.

    ``reason`` is the whole message (it names the base URL); ``status_code`` is the
    endpoint's HTTP status when it answered with an error, else None."""

    def __init__(self, reason: str, base_url: str = "", status_code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.base_url = base_url
        self.status_code = status_code


@dataclass
class OpenAICompatibleOptions:
    base_url: str  # up to and including the API version, e.g. "http://127.0.0.1:8080/v1"
    model: str
    api_key: str | None = None  # None: a placeholder key (local servers ignore it)
    timeout_s: float = 60.0  # per attempt: connect, and each wait for the next bytes
    max_retries: int = 2  # further attempts after the first one fails
    backoff_s: float = 0.5  # sleep before retry k (k = 1, 2, ...) is backoff_s * 2 ** (k - 1)
    temperature: float = 0.0
    max_tokens: int = 512
    system_role: bool = True  # False: the rules open the first user turn (models without a system role)


class OpenAICompatibleGenerator:
    """``Generator`` over an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, options: OpenAICompatibleOptions):
        import openai  # the `llm` extra

        self.options = options
        self.name = f"openai:{options.model}"
        self._client = openai.OpenAI(
            base_url=options.base_url,
            api_key=options.api_key or "not-needed",
            timeout=options.timeout_s,
            max_retries=0,  # retries are ours: one policy, one bound on the time spent
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Generator protocol ------------------------------------------------------------
    def generate(
        self,
        question: str,
        query_vector: np.ndarray,
        context: Context,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> Answer:
        """The model's answer to ``question`` from ``context``, its ``[n]`` markers resolved
        to context spans. ``history``: earlier ``{"role", "content"}`` turns of the
        conversation. An empty context answers ``NO_ANSWER`` without calling the model."""
        if not context.spans:
            return Answer(NO_ANSWER, [], self.name, abstained=True)
        prompt = build_prompt(question, context, history, self.options.system_role)
        reply = self._with_retries(
            lambda: self._client.chat.completions.create(**self._request(prompt, sampling), stream=False)
        )
        content = reply.choices[0].message.content if reply.choices else None
        return self._answer(content or "", prompt)

    def stream(
        self,
        question: str,
        query_vector: np.ndarray,
        context: Context,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str | Answer]:
        """Text deltas as the model writes them, then the final ``Answer`` as the last item.

        ``"".join`` of the deltas equals ``answer.text`` (leading and trailing whitespace are
        held back, as ``generate`` strips them). The request is made when iteration starts."""
        if not context.spans:
            yield NO_ANSWER
            yield Answer(NO_ANSWER, [], self.name, abstained=True)
            return
        prompt = build_prompt(question, context, history, self.options.system_role)
        chunks = self._with_retries(lambda: self._open_stream(prompt, sampling))
        raw, pending, started = [], "", False
        try:
            for delta in chunks:
                raw.append(delta)
                text = pending + delta
                if not started:
                    text = text.lstrip()
                shown = text.rstrip()
                pending = text[len(shown) :]
                if shown:
                    started = True
                    yield shown
        except _endpoint_errors() as exc:  # the stream broke after text went out: no retry
            raise self._unavailable(exc, "the stream broke") from exc
        finally:
            chunks.close()
        yield self._answer("".join(raw), prompt)

    # -- internals ---------------------------------------------------------------------------
    def _request(self, prompt: Prompt, sampling: Sampling | None = None) -> dict[str, Any]:
        sampling = sampling or Sampling()
        request: dict[str, Any] = {
            "model": self.options.model,
            "messages": prompt.messages,
            "temperature": self.options.temperature if sampling.temperature is None else sampling.temperature,
            "max_tokens": min(self.options.max_tokens, sampling.max_tokens or self.options.max_tokens),
        }
        optional = {
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stop": list(sampling.stop) or None,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
        }
        return request | {name: value for name, value in optional.items() if value is not None}

    def _open_stream(self, prompt: Prompt, sampling: Sampling | None = None) -> Generator[str, None, None]:
        """Send the request and wait for the first delta, so that failures before any text
        (connect, status, a first token that never comes) are retried like ``generate``'s."""
        response = self._client.chat.completions.create(**self._request(prompt, sampling), stream=True)
        deltas = _deltas(response)
        try:
            first = next(deltas, None)
        except BaseException:
            response.close()
            raise

        def rest() -> Generator[str, None, None]:
            try:
                if first is not None:
                    yield first
                yield from deltas
            finally:
                response.close()

        return rest()

    def _answer(self, raw: str, prompt: Prompt) -> Answer:
        """The reply as an ``Answer``: its markers resolved, or, when it is the prompt's
        fixed "not in the sources" sentence (``generation.prompt.abstains``), no citations
        and ``abstained``."""
        text = raw.strip()
        if abstains(text):
            return Answer(text, [], self.name, abstained=True)
        return Answer(text, parse_citations(text, prompt.numbering), self.name)

    def _with_retries(self, call: Callable[[], T]) -> T:
        attempts = self.options.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except _endpoint_errors() as exc:
                if not _retryable(exc):
                    raise self._unavailable(exc, "the endpoint refused the request") from exc
                if attempt == attempts:
                    raise self._unavailable(exc, f"giving up after {attempts} attempt(s)") from exc
                time.sleep(self.options.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _unavailable(self, exc: BaseException, what: str) -> GeneratorUnavailable:
        status = getattr(exc, "status_code", None)
        detail = f"HTTP {status}: {_message(exc)}" if status else f"{type(exc).__name__}: {_message(exc)}"
        base_url = redact_credentials(self.options.base_url)
        return GeneratorUnavailable(
            redact_credentials(
                f"LLM endpoint {base_url} (model {self.options.model!r}) is unavailable: {what}; last error: {detail}"
            )[:2000],
            base_url,
            status,
        )


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|password|secret)=)[^&\s#]+")


def redact_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it, and secret-looking query
    parameters, replaced by ``***``: error messages reach clients and logs.

        >>> redact_credentials("http://bob:hunter2@llm:8080/v1?api_key=abc")
        'http://***@llm:8080/v1?api_key=***'
    """
    return _SECRET_QUERY.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


def _deltas(response: Iterator[Any]) -> Iterator[str]:
    for chunk in response:
        for choice in chunk.choices or []:
            if choice.delta and choice.delta.content:
                yield choice.delta.content


def _endpoint_errors() -> tuple[type[BaseException], ...]:
    """What talking to the endpoint may raise; anything else is a bug and propagates."""
    import httpx
    import openai

    return openai.OpenAIError, httpx.TransportError  # older clients leak httpx errors mid-stream


def _retryable(exc: BaseException) -> bool:
    """Connection errors and timeouts, 408, 409, 429 and 5xx: what may pass on a new try."""
    import httpx
    import openai

    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):  # timeouts included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _message(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text
