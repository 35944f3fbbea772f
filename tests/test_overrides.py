"""Every way to override a pipeline's knobs goes through one validated model
(``retrieval.params``): an out-of-range value is refused on each path, never run.

* HTTP, native (``/query``, ``/retrieve``): 422 naming the field;
* HTTP, OpenAI-compatible (``extra_body`` lands at the top level of the request): 400 in
  OpenAI's error shape, ``param`` naming the field;
* CLI flags and ``SPANRAG_*`` settings: a message and exit code 2, no traceback;
* LangChain retriever: ``ValueError`` from the constructor and from per-call kwargs;
* ``Settings``, ``RetrievalParams.with_overrides`` / ``model_copy(update=...)`` and the
  pipeline lookup: pydantic's ``ValidationError`` (a ``ValueError``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from retrieval.params import FLAT_NAMES, OVERRIDE_NAMES, RetrievalOverrides, RetrievalParams

C = "docs"
QUESTION = "How many days does Mercury take to orbit the Sun?"

OUT_OF_RANGE: list[tuple[str, object]] = [
    ("top_k", 0),
    ("top_k", -3),
    ("top_k", 201),
    ("top_k", "many"),
    ("budget_tokens", 0),
    ("budget_tokens", -1),
    ("budget_tokens", 100_001),
    ("compression", "words"),
    ("compression", ""),
    ("compress_budget_tokens", 0),
    ("compress_budget_tokens", 100_001),
    ("compress_ratio", 0),
    ("compress_ratio", 1),
    ("compress_ratio", 1.5),
    ("compress_ratio", -0.1),
]
IDS = [f"{name}={value!r}" for name, value in OUT_OF_RANGE]


def test_the_cases_cover_every_override_knob():
    assert {name for name, _ in OUT_OF_RANGE} == set(OVERRIDE_NAMES) == set(RetrievalOverrides.model_fields)


# -- in-process: the model, the parameters, the pipelines, the settings -----------------------


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_the_override_model_and_the_parameters_refuse_it(name, value):
    with pytest.raises(ValidationError):
        RetrievalOverrides(**{name: value})
    with pytest.raises(ValueError):
        RetrievalParams().with_overrides({name: value})
    with pytest.raises(ValueError):  # pydantic's own model_copy would have set it unchecked
        RetrievalParams().model_copy(update={name: value})
    with pytest.raises(ValueError):
        RetrievalParams(**{name: value})


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_the_pipeline_lookup_refuses_it(name, value):
    from retrieval.pipeline import pipeline_params

    with pytest.raises(ValueError):
        pipeline_params("default", {name: value})


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_settings_refuse_it(name, value, monkeypatch, tmp_path):
    from service.settings import Settings

    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, **{name: value})
    monkeypatch.setenv(f"SPANRAG_{name.upper()}", str(value))
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path)


def test_an_unknown_knob_is_refused_not_ignored():
    with pytest.raises(ValueError, match="nope"):
        RetrievalParams().with_overrides({"nope": 1})
    with pytest.raises(ValueError):
        RetrievalParams().with_overrides({"bubble": {"anchor_docs": 0}})


def test_valid_overrides_apply_by_flat_name_and_by_group():
    params = RetrievalParams(selector="bubble").with_overrides(
        {"top_k": 7, "compression": "sentence", "compress_ratio": 0.5, "bubble_graph_docs": 0}
    )
    assert params.selection.top_k == params.top_k == 7
    assert params.compress.method == params.compression == "sentence"
    assert params.compress.ratio == 0.5 and params.bubble.graph_docs == 0
    assert params.bubble.anchor_docs == 4  # the rest of the group is kept
    grouped = RetrievalParams(selector="bubble").with_overrides({"bubble": {"graph_docs": 0}, "top_k": 7})
    assert grouped.bubble == params.bubble and grouped.selection == params.selection
    assert params.with_overrides(None) is params


def test_every_flat_name_reads_and_writes_its_group():
    params = RetrievalParams()
    for flat, (group, name) in FLAT_NAMES.items():
        assert getattr(params, flat) == getattr(getattr(params, group), name), flat
    assert params.flat()["bubble_graph_docs"] == 3 and params.flat()["first_stage_k"] == 1000


# -- HTTP: native and OpenAI-compatible --------------------------------------------------------


@pytest.fixture(scope="module")
def http(tmp_path_factory, make_rag):
    from fastapi.testclient import TestClient

    from app.api import create_app

    rag = make_rag(tmp_path_factory.mktemp("overrides") / "data")
    with TestClient(create_app(service=rag), base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize("endpoint", ["query", "retrieve"])
@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_native_http_answers_422_naming_the_field(http, endpoint, name, value):
    r = http.post(f"/v1/collections/{C}/{endpoint}", json={"question": QUESTION, name: value})
    assert r.status_code == 422, r.text
    assert name in r.text


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_openai_extra_body_answers_400_in_openai_shape(http, name, value):
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": f"spanrag:{C}",
            "messages": [{"role": "user", "content": QUESTION}],
            name: value,
        },
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == name, error


# -- CLI: flags and settings ---------------------------------------------------------------------

CLI_FLAGS = {"top_k": "--top-k", "budget_tokens": "--budget-tokens", "compress_budget_tokens": "--compress-tokens"}
CLI_CASES = [(n, v) for n, v in OUT_OF_RANGE if n in CLI_FLAGS and isinstance(v, int)]


def run_cli(*args: str, env: dict[str, str] | None = None):
    from app.cli import cli

    return CliRunner().invoke(cli, list(args), env=env)


def assert_clear_error(result, *needles: str) -> None:
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught error
    assert "Traceback" not in output
    assert "error:" in output and all(n in output for n in needles), output


@pytest.mark.parametrize(("name", "value"), CLI_CASES, ids=[f"{n}={v!r}" for n, v in CLI_CASES])
def test_a_cli_flag_out_of_range_is_a_clear_error(name, value, tmp_path):
    result = run_cli("query", QUESTION, "-c", C, "--data-dir", str(tmp_path), CLI_FLAGS[name], str(value))
    assert_clear_error(result, CLI_FLAGS[name])


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_a_setting_out_of_range_is_a_clear_cli_error(name, value, tmp_path):
    variable = f"SPANRAG_{name.upper()}"
    result = run_cli("query", QUESTION, "-c", C, "--data-dir", str(tmp_path), env={variable: str(value)})
    assert_clear_error(result, variable)


# -- LangChain -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=IDS)
def test_the_langchain_retriever_refuses_it_at_construction_and_per_call(name, value):
    from app.langchain_retriever import SpanRAGRetriever

    remote = {"collection": C, "base_url": "http://127.0.0.1:9"}  # never reached: refused first
    with pytest.raises(ValueError):
        SpanRAGRetriever(**remote, search_kwargs={name: value})
    if name in ("top_k", "budget_tokens"):  # also fields of the retriever
        with pytest.raises(ValueError):
            SpanRAGRetriever(**remote, **{name: value})
    retriever = SpanRAGRetriever(**remote)
    with pytest.raises(ValueError):
        retriever.invoke(QUESTION, **{name: value})
