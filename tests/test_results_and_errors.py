"""The typed query result and the one error table (``service.results``, ``app.errors``): both
HTTP surfaces answer an exception with the same status and message, and the typed result
becomes the documented answer object, in HTTP, in a stream and in the OpenAI reply.

No model is loaded: the service's store, encoder and query are stand-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.errors import ERROR_TYPES, ERRORS, native_response, service_error
from app.openai_api import as_openai_error
from app.security import AccessDenied, RateLimited
from generation.openai_compatible import GeneratorUnavailable
from generation.types import Answer, Citation
from indexing.parsers.base import ParseError
from indexing.parsers.limits import DocumentTooLarge
from indexing.spans import Span, doc_id_of, order_of, span_id
from indexing.store.base import CollectionNotFound, InvalidCollectionName, StoreMismatch
from retrieval.pipeline import UnknownPipeline
from retrieval.types import CompressionReport, Context, ContextSpan, RetrievalResult, TraceEntry
from service.engine import DocumentConflict, RagService
from service.results import AnswerDelta, QueryAnswer, QueryResult, QuerySources
from service.settings import Settings

C = "docs"

# one example of each exception in the table, with the status the HTTP API has always answered
EXAMPLES: dict[type[Exception], tuple[Exception, int]] = {
    AccessDenied: (AccessDenied(403, "the key may not write to 'docs'", "insufficient_scope"), 403),
    RateLimited: (RateLimited(2.5, 60), 429),
    CollectionNotFound: (CollectionNotFound("ghost"), 404),
    UnknownPipeline: (UnknownPipeline("unknown pipeline 'nope'; known: default"), 400),
    GeneratorUnavailable: (GeneratorUnavailable("the model at http://x/v1 is down", "http://x/v1"), 503),
    StoreMismatch: (StoreMismatch("collection 'docs' was built with another model"), 409),
    DocumentConflict: (DocumentConflict("document 'a' was ingested from a file"), 409),
    DocumentTooLarge: (DocumentTooLarge("max_chars", 10, "document has 11 characters", 11), 413),
    ParseError: (ParseError("not a PDF"), 422),
    InvalidCollectionName: (InvalidCollectionName("invalid collection name '../x'"), 422),
}


class Stub:
    """What the routes touch of the store and the encoder, without a model."""

    def has_collection(self, name: str) -> bool:
        return name == C

    def list_collections(self) -> list[str]:
        return [C]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def close(self) -> None:
        pass


@pytest.fixture
def rag(tmp_path) -> RagService:
    service = RagService(Settings(data_dir=tmp_path))
    service.__dict__["store"] = service.__dict__["encoder"] = Stub()  # cached properties, set up front
    return service


@pytest.fixture
def http(rag) -> TestClient:
    return TestClient(create_app(service=rag), base_url="http://127.0.0.1")  # no lifespan: no warm-up


def ask(http: TestClient) -> tuple:
    native = http.post(f"/v1/collections/{C}/query", json={"question": "How long is a year on Mercury?"})
    openai = http.post(
        "/v1/chat/completions",
        json={"model": f"spanrag:{C}", "messages": [{"role": "user", "content": "How long is a year on Mercury?"}]},
    )
    return native, openai


# -- one error table -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ERROR_TYPES, ids=lambda kind: kind.__name__)
def test_both_surfaces_answer_an_exception_with_the_table_status_and_message(kind, rag, http, monkeypatch):
    exc, status = EXAMPLES[kind]  # a KeyError here: a new table entry needs an example
    error = service_error(exc)
    assert error.status == status

    native, openai = native_response(error), as_openai_error(exc)
    assert native.status_code == openai.status == status
    assert json.loads(native.body) == {"detail": error.message} and openai.body()["error"]["message"] == error.message
    assert all(native.headers[name] == value for name, value in (error.headers or {}).items())
    assert openai.headers == error.headers

    def raising(*args, **kwargs):
        raise exc

    monkeypatch.setattr(rag, "query", raising)
    answered, chatted = ask(http)  # end to end: the handlers the app installed
    assert answered.status_code == chatted.status_code == status
    assert answered.json() == {"detail": error.message}
    assert chatted.json() == {
        "error": {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}
    }
    for name, value in (error.headers or {}).items():
        assert answered.headers[name] == chatted.headers[name] == value


def test_the_table_lists_a_subclass_before_its_base():
    kinds = [kind for kind, _ in ERRORS]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def test_an_exception_outside_the_table_is_not_answered_as_one():
    assert service_error(RuntimeError("a bug")) is None and as_openai_error(RuntimeError("a bug")) is None


# -- one typed result -------------------------------------------------------------------------


def sample_result(trace: bool = True, retrieval_question: str | None = None) -> QueryResult:
    doc = "samples/solar-system.html"
    sentence = Span(
        id=span_id(doc, 7),
        doc_id=doc,
        parent_id=span_id(doc, 6),
        granularity="sentence",
        start=120,
        end=160,
        text="A year on Mercury lasts 88 days.",
        heading_path=["Planets", "Orbits"],
        n_tokens=9,
    )
    row = Span(
        id=span_id(doc, 12),
        doc_id=doc,
        parent_id=span_id(doc, 11),
        granularity="row",
        start=300,
        end=315,
        text="Mercury | 88",
        header="Planet | Days",
        n_tokens=6,
    )
    context = Context(
        [ContextSpan(sentence, 0.91), ContextSpan(row, 0.5, show_header=False)],
        n_tokens=15,
        trace=[TraceEntry(sentence.id, 1, {"fused": 0.91}, 9, "taken", "rank within k and budget")],
    )
    report = CompressionReport("sentence", True, 15, 20, 15, 4, 3)
    result = RetrievalResult(
        "How long is a year on Mercury?",
        "default",
        np.zeros(3),
        [],
        [],
        context,
        {"retrieval_ms": 1.5},
        report,
        retrieval_question,
    )
    citation = Citation(1, sentence.id, doc, sentence.text, sentence.start, sentence.end, sentence.heading_path)
    answer = Answer("A year on Mercury lasts 88 days [1].", [citation], "extractive")
    return QueryResult(
        QueryAnswer.of(answer, {"retrieval_ms": 1.5, "generation_ms": 0.2, "total_ms": 2.0}),
        QuerySources.of(result, trace),
    )


DOCUMENTED = {  # the answer object, as /query and `spanrag query --json` have always sent it
    "answer": "A year on Mercury lasts 88 days [1].",
    "citations": [
        {
            "id": 1,
            "span_id": "samples/solar-system.html#7",
            "doc_id": "samples/solar-system.html",
            "text": "A year on Mercury lasts 88 days.",
            "start": 120,
            "end": 160,
            "heading_path": ["Planets", "Orbits"],
        }
    ],
    "abstained": False,
    "timings_ms": {"retrieval_ms": 1.5, "generation_ms": 0.2, "total_ms": 2.0},
    "generator": "extractive",
    "context": [
        {
            "span_id": "samples/solar-system.html#7",
            "doc_id": "samples/solar-system.html",
            "text": "A year on Mercury lasts 88 days.",
            "score": 0.91,
            "granularity": "sentence",
            "start": 120,
            "end": 160,
            "heading_path": ["Planets", "Orbits"],
        },
        {
            "span_id": "samples/solar-system.html#12",
            "doc_id": "samples/solar-system.html",
            "text": "Mercury | 88",
            "score": 0.5,
            "granularity": "row",
            "start": 300,
            "end": 315,
            "heading_path": [],
        },
    ],
    "usage": {
        "context_tokens": 15,
        "compression": {
            "method": "sentence",
            "applied": True,
            "target_tokens": 15,
            "tokens_before": 20,
            "tokens_after": 15,
            "pieces_before": 4,
            "pieces_after": 3,
            "removed_share": 0.25,
        },
    },
    "pipeline": "default",
    "trace": [
        {
            "span_id": "samples/solar-system.html#7",
            "rank": 1,
            "scores": {"fused": 0.91},
            "n_tokens": 9,
            "decision": "taken",
            "reason": "rank within k and budget",
            "source": "first_stage",
        }
    ],
}


def test_the_typed_result_becomes_the_documented_answer_object():
    out = sample_result().as_dict()
    assert out == DOCUMENTED and list(out) == list(DOCUMENTED)  # the same keys, in the same order
    assert json.loads(json.dumps(out)) == out

    untraced = sample_result(trace=False, retrieval_question="Mercury year length").as_dict()
    assert list(untraced) == [*list(DOCUMENTED)[:-1], "retrieval_question"]
    assert untraced["retrieval_question"] == "Mercury year length"


def test_the_stream_halves_add_up_to_the_answer_object():
    result = sample_result()
    assert {**result.answer.as_dict(), **result.sources.as_dict()} == result.as_dict()
    assert AnswerDelta("88 days").as_dict() == {"text": "88 days"}


def test_each_surface_sends_the_typed_result_converted_once(rag, http, monkeypatch):
    result = sample_result(trace=False)
    monkeypatch.setattr(rag, "query", lambda *args, **kwargs: result)
    native, openai = ask(http)
    assert native.status_code == openai.status_code == 200
    assert native.json() == result.as_dict()

    reply = openai.json()
    message = reply["choices"][0]["message"]
    assert message["content"] == result.answer.text and message["citations"] == DOCUMENTED["citations"]
    assert reply["choices"][0]["logprobs"]["citations"] == DOCUMENTED["citations"]
    assert reply["spanrag"] == {k: v for k, v in result.as_dict().items() if k != "answer"}


def test_a_native_stream_sends_each_typed_event_as_its_json(rag, http, monkeypatch):
    result = sample_result(trace=False)
    events = [
        ("context", result.sources),
        ("delta", AnswerDelta("A year on Mercury lasts 88 days")),
        ("delta", AnswerDelta(" [1].")),
        ("answer", result.answer),
    ]
    monkeypatch.setattr(rag, "query_stream", lambda *args, **kwargs: iter(events))
    response = http.post(f"/v1/collections/{C}/query", json={"question": "How long is a year?", "stream": True})
    sent = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert [json.loads(s) for s in sent] == [payload.as_dict() for _, payload in events] + [{}]


# -- one id helper ----------------------------------------------------------------------------


@pytest.mark.parametrize("doc_id", ["a.md", "notes#v2.md", "x#"])
def test_span_ids_are_read_back_by_the_one_helper(doc_id):
    assert doc_id_of(span_id(doc_id, 14)) == doc_id and order_of(span_id(doc_id, 14)) == 14
    assert order_of("no-order") is None and order_of("a#b") is None
