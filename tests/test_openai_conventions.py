"""OpenAI conventions of ``/v1/chat/completions`` (issue 15, item 4), through a real spanrag
server on loopback, the real ``openai`` client and LangChain's real ``ChatOpenAI``.

* A feature spanrag does not offer (tools, structured output, log probabilities, several
  choices, audio, ...) is a 400 in OpenAI's shape naming the parameter, streamed or not,
  never a plain-text answer as if it had been honoured; the harmless fields clients always
  send, and fields nobody defines, keep working.
* The citations reach a ``ChatOpenAI`` user: ``response_metadata["logprobs"]["citations"]``,
  from ``invoke`` and from the chunks of ``stream`` added up, while the ``[n]`` markers stay
  in the content and ``message.citations`` and ``spanrag`` stay where they were.
* ``with_structured_output`` and ``bind_tools`` fail at once with ``BadRequestError`` naming
  the parameter, instead of later on the client with a JSON error.

The server answers with the extractive generator (deterministic: answers can be compared
exactly); its collection is written over HTTP as JSON documents (the sample corpus's solar
system and tea notes).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from app.server_process import SpanragServer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "notes"
MODEL = f"spanrag:{C}"
MERCURY = "How many days does Mercury take to orbit the Sun?"
YEARS = "How long does a year last on Mercury and on Mars?"  # the extractive answer cites several pieces
ERROR_KEYS = {"message", "type", "param", "code"}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


class Orbit(BaseModel):
    """A structured answer that spanrag cannot give."""

    planet: str
    days: int


# -- server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("conventions")
    with SpanragServer(root / "data", env={"SPANRAG_GENERATOR": "extractive"}, cwd=root) as running:
        with httpx.Client(base_url=running.base_url, timeout=300, trust_env=False) as http:
            for name, fmt in (("solar-system.html", "html"), ("tea-notes.txt", "text")):
                document = {"id": f"samples/{name}", "text": (SAMPLES / name).read_text(), "format": fmt}
                response = http.post(f"/v1/collections/{C}/documents", json=document)
                assert response.status_code in (200, 201), response.text
        yield running.base_url


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def client(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def llm(server) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{server}/v1", api_key="unused", model=MODEL, max_retries=0, timeout=60)


def chat(http: httpx.Client, stream: bool = False, **fields) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [user(MERCURY)], "stream": stream, **fields}
    )


def streamed_chunks(response: httpx.Response) -> list[dict]:
    """A streamed chat's chunks (``data: [DONE]`` checked and dropped)."""
    data = [line.removeprefix("data:").strip() for line in response.text.splitlines() if line.startswith("data:")]
    assert data[-1] == "[DONE]", response.text[-300:]
    return [json.loads(d) for d in data[:-1]]


# -- unsupported features: 400 naming the parameter ------------------------------------------------

UNSUPPORTED = [
    ({"tools": [TOOL]}, "tools", "unsupported_parameter"),
    ({"tools": [TOOL], "tool_choice": "required"}, "tools", "unsupported_parameter"),
    ({"tools": [TOOL], "parallel_tool_calls": True}, "tools", "unsupported_parameter"),
    ({"functions": [TOOL["function"]]}, "functions", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", "unsupported_value"),
    ({"tool_choice": "auto"}, "tool_choice", "unsupported_value"),
    ({"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "tool_choice", "unsupported_value"),
    ({"function_call": "auto"}, "function_call", "unsupported_value"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Orbit", "schema": Orbit.model_json_schema()},
            }
        },
        "response_format",
        "unsupported_value",
    ),
    ({"logprobs": True}, "logprobs", "unsupported_value"),
    ({"logprobs": True, "top_logprobs": 5}, "logprobs", "unsupported_value"),
    ({"top_logprobs": 2}, "top_logprobs", "unsupported_value"),
    ({"n": 2}, "n", "unsupported_value"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "unsupported_parameter"),
    ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio", "unsupported_parameter"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "unsupported_parameter"),
    ({"modalities": ["audio"]}, "modalities", "unsupported_value"),
    ({"web_search_options": {}}, "web_search_options", "unsupported_parameter"),
]
UNSUPPORTED_IDS = [
    "tools",
    "tools+required",
    "tools+parallel",
    "functions",
    "tool_choice-required",
    "tool_choice-auto",
    "tool_choice-named",
    "function_call",
    "json_object",
    "json_schema",
    "logprobs",
    "logprobs+top",
    "top_logprobs",
    "n-2",
    "logit_bias",
    "audio+modalities",
    "audio",
    "modalities-audio",
    "web_search",
]


@pytest.mark.parametrize("fields, param, code", UNSUPPORTED, ids=UNSUPPORTED_IDS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unsupported_feature_is_400_in_openai_shape_naming_the_parameter(http, fields, param, code, stream):
    response = chat(http, stream, **fields)

    assert response.status_code == 400 and response.headers["content-type"] == "application/json", response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert error["message"].startswith(("Unsupported parameter: ", "Unsupported value: "))
    assert repr(param) in error["message"] and "spanrag" in error["message"]


def test_an_unsupported_feature_is_refused_before_the_model_is_looked_up(http):
    error = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [user(MERCURY)], "response_format": {"type": "json_object"}},
    ).json()["error"]
    assert error["param"] == "response_format"


def test_a_malformed_value_of_a_refused_parameter_is_400_naming_it(http):
    error = chat(http, tools="lookup").json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "tools"


def test_the_fields_clients_always_send_and_fields_nobody_defines_keep_working(http):
    plain = chat(http).json()
    harmless = {
        "tools": [],
        "functions": [],
        "tool_choice": "none",
        "function_call": "none",
        "response_format": {"type": "text"},
        "logprobs": False,
        "top_logprobs": 0,
        "n": 1,
        "logit_bias": {},
        "modalities": ["text"],
        "audio": None,
        "parallel_tool_calls": False,
        "user": "u-1",
        "metadata": {"trace": "t-1"},
        "store": False,
        "service_tier": "auto",
        "prediction": {"type": "content", "content": "88 days"},
        "reasoning_effort": "low",
        "verbosity": "low",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "chat_template_kwargs": {"enable_thinking": False},
        "x_gateway_request_id": 7,  # no one's parameters
    }
    answered = chat(http, **harmless)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"] == plain["choices"][0]["message"]

    streamed = chat(http, stream=True, stream_options={"include_usage": True}, **harmless)
    assert streamed.status_code == 200, streamed.text
    chunks = streamed_chunks(streamed)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == plain["choices"][0]["message"]["content"]
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_the_openai_client_raises_bad_request_naming_the_parameter(client):
    cases = [
        ("tools", dict(tools=[TOOL])),
        ("tool_choice", dict(tool_choice="required")),
        ("response_format", dict(response_format={"type": "json_object"})),
        ("logprobs", dict(logprobs=True, top_logprobs=3)),
        ("n", dict(n=3)),
    ]
    for param, kwargs in cases:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as raised:
                client.chat.completions.create(model=MODEL, messages=[user(MERCURY)], stream=stream, **kwargs)
            assert raised.value.status_code == 400 and raised.value.param == param, (param, raised.value.body)
            assert raised.value.type == "invalid_request_error" and repr(param) in raised.value.message

    with pytest.raises(openai.BadRequestError) as raised:  # the SDK's structured output helper
        client.chat.completions.parse(model=MODEL, messages=[user(MERCURY)], response_format=Orbit)
    assert raised.value.param == "response_format" and raised.value.code == "unsupported_value"


# -- citations where OpenAI's fields carry them ---------------------------------------------------


def test_the_citations_ride_in_the_choices_logprobs_too_streamed_or_not(client):
    reply = client.chat.completions.create(model=MODEL, messages=[user(YEARS)])
    (choice,) = reply.choices
    citations = choice.message.model_extra["citations"]
    assert len(citations) >= 2 and citations == reply.model_extra["spanrag"]["citations"]
    assert choice.logprobs.content is None and choice.logprobs.refusal is None  # no token log probabilities
    assert choice.logprobs.model_extra["citations"] == citations

    *answer_chunks, last = list(client.chat.completions.create(model=MODEL, messages=[user(YEARS)], stream=True))
    assert all(c.choices[0].logprobs is None for c in answer_chunks)
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.model_extra["citations"] == citations
    assert last.choices[0].logprobs.model_extra["citations"] == citations


def test_chat_openai_invoke_reaches_the_citations_in_response_metadata(llm, client, http):
    reply = client.chat.completions.create(model=MODEL, messages=[user(YEARS)])
    expected = reply.choices[0].message.model_extra["citations"]

    message = llm.invoke(YEARS)

    assert message.content == reply.choices[0].message.content and "[1]" in message.content
    citations = message.response_metadata["logprobs"]["citations"]
    assert citations == expected and len(citations) >= 2
    for c in citations:  # each [n] resolves to a stored span
        assert f"[{c['id']}]" in message.content
        document = http.get(f"/v1/collections/{C}/documents/{c['doc_id']}").json()
        assert document["text"][c["start"] : c["end"]] == c["text"]
    assert message.response_metadata["finish_reason"] == "stop" and message.response_metadata["model_name"] == MODEL


def test_chat_openai_stream_reaches_the_citations_in_the_added_up_chunks(llm):
    whole = llm.invoke(YEARS)
    chunks = list(llm.stream(YEARS))

    assert sum(1 for c in chunks if c.content) >= 2  # really streamed: one chunk per cited piece
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    assert message.content == whole.content
    assert message.response_metadata["logprobs"]["citations"] == whole.response_metadata["logprobs"]["citations"]
    assert message.response_metadata["finish_reason"] == "stop"
    # LangChain puts them on the final chunk: what a UI that renders chunks as they come reads
    (final,) = [c for c in chunks if c.response_metadata.get("finish_reason")]
    assert final.response_metadata["logprobs"]["citations"] == whole.response_metadata["logprobs"]["citations"]


# -- LangChain's structured output and tools fail at once, naming the parameter -----------------------


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda llm: llm.with_structured_output(Orbit), "response_format"),  # json_schema, LangChain's default
        (lambda llm: llm.with_structured_output(Orbit, method="json_mode"), "response_format"),
        (lambda llm: llm.with_structured_output(Orbit, method="function_calling"), "tools"),
        (lambda llm: llm.bind_tools([Orbit]), "tools"),
        (lambda llm: llm.bind_tools([Orbit], tool_choice="required"), "tools"),
        (lambda llm: llm.bind(logprobs=True), "logprobs"),
    ],
    ids=[
        "structured-json_schema",
        "structured-json_mode",
        "structured-function_calling",
        "bind_tools",
        "bind_tools-required",
        "logprobs",
    ],
)
def test_chat_openai_structured_output_and_tools_fail_at_once_with_a_400_naming_the_parameter(llm, make, param):
    runnable = make(llm)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(openai.BadRequestError) as raised:
        warnings.simplefilter("always")
        runnable.invoke(MERCURY)
    assert raised.value.status_code == 400 and raised.value.param == param
    assert repr(param) in str(raised.value) and "spanrag" in str(raised.value)
    # not mistaken for OpenAI's "json_schema is not supported with this model", which LangChain
    # answers with advice to use function calling, refused here as well
    assert not [w for w in caught if "function_calling" in str(w.message)]


def test_chat_openai_bound_tools_fail_when_streamed_too(llm):
    with pytest.raises(openai.BadRequestError) as raised:
        list(llm.bind_tools([Orbit]).stream(MERCURY))
    assert raised.value.param == "tools"
