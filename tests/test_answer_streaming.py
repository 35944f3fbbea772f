"""Streaming through the generator seam and the service: the extractive generator streams
the answer it would give whole, and the service opens a stream eagerly, so that what fails
before the first delta fails before any HTTP response has started."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.server_process import free_port
from generation.extractive import NO_ANSWER, ExtractiveGenerator
from generation.openai_compatible import GeneratorUnavailable
from generation.types import Answer
from indexing.store.base import CollectionNotFound

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "docs"
YEARS = "How long does a year last on Mercury and on Mars?"
HISTORY = [
    {"role": "user", "content": "Which planets are rocky?"},
    {"role": "assistant", "content": "Mercury, Venus, Earth and Mars [1]."},
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, make_rag) -> Path:
    path = tmp_path_factory.mktemp("streaming") / "data"
    make_rag(path).ingest_paths(C, [SAMPLES])
    return path


@pytest.fixture(scope="module")
def rag(make_rag, data_dir):
    return make_rag(data_dir)


def test_the_extractive_stream_is_one_delta_per_cited_piece_adding_up_to_the_whole_answer(rag):
    result = rag.retrieve(C, YEARS)
    generator = ExtractiveGenerator()
    whole = generator.generate(result.question, result.query_vector, result.context)
    *deltas, answer = generator.stream(result.question, result.query_vector, result.context)

    assert isinstance(answer, Answer) and answer == whole
    assert len(deltas) == len(answer.citations) >= 2
    assert "".join(deltas) == answer.text
    for n, delta in enumerate(deltas, start=1):
        assert delta.endswith(f"[{n}]") and delta.startswith(" ") == (n > 1)


def test_the_extractive_generator_accepts_and_ignores_history(rag):
    result = rag.retrieve(C, YEARS)
    generator = ExtractiveGenerator()
    alone = generator.generate(result.question, result.query_vector, result.context)
    assert generator.generate(result.question, result.query_vector, result.context, HISTORY) == alone
    assert list(generator.stream(result.question, result.query_vector, result.context, HISTORY))[-1] == alone


def test_an_empty_context_streams_the_no_answer_text(rag):
    result = rag.retrieve(C, YEARS, overrides={"budget_tokens": 1})
    assert not result.context.spans
    assert list(rag.stream_answer(result)) == [NO_ANSWER, Answer(NO_ANSWER, [], "extractive")]


def test_the_service_streams_the_answer_it_would_give_whole(rag):
    result = rag.retrieve(C, YEARS)
    *deltas, answer = rag.stream_answer(result, HISTORY)
    assert "".join(deltas) == answer.text and answer == rag.answer(result, HISTORY)[0]


def test_query_stream_sends_the_query_object_in_two_halves_around_the_deltas(rag):
    whole = rag.query(C, YEARS, trace=True).as_dict()
    events = list(rag.query_stream(C, YEARS, trace=True))

    kinds = [kind for kind, _ in events]
    assert kinds == ["context", *["delta"] * len(whole["citations"]), "answer"]
    (_, sources), *deltas, (_, answer) = [(k, p.as_dict()) for k, p in events]  # what a stream sends
    assert sources == {k: whole[k] for k in ("context", "usage", "pipeline", "trace")}
    assert "".join(d["text"] for _, d in deltas) == answer["answer"] == whole["answer"]
    assert answer["citations"] == whole["citations"] and answer["generator"] == whole["generator"]
    assert set(answer["timings_ms"]) == set(whole["timings_ms"]) | {"first_delta_ms"}


def test_a_generator_that_cannot_answer_fails_when_the_stream_is_opened_not_when_it_is_read(make_rag, data_dir):
    offline = make_rag(
        data_dir,
        generator="openai",
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_model="none",
        llm_timeout_s=1,
        llm_max_retries=0,
    )
    result = offline.retrieve(C, YEARS)
    with pytest.raises(GeneratorUnavailable):
        offline.stream_answer(result)  # no iteration needed
    with pytest.raises(GeneratorUnavailable):
        offline.query_stream(C, YEARS)
    with pytest.raises(CollectionNotFound):
        offline.query_stream("ghost", YEARS)
