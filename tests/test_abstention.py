"""Abstention, as a specification: a question the collection cannot answer gets a plain
"not found" with no citation and ``abstained: true`` (extractive generator: a calibrated
support rule; model-backed generator: the prompt's fixed sentence, detected in the reply),
an answerable one still cites, and the eval metrics count abstentions correctly."""

from __future__ import annotations

import numpy as np
import pytest

from eval import metrics as M
from eval.harness import aggregate
from generation.extractive import (
    NOT_FOUND,
    ExtractiveGenerator,
    ExtractiveOptions,
    Support,
    found_share,
    specific_terms,
    support,
)
from generation.prompt import NOT_IN_SOURCES, SYSTEM_PROMPT, abstains, build_prompt
from indexing.spans import Span
from retrieval.selection.bubble import terms
from retrieval.types import Context, ContextSpan

C = "samples"
WORLD_CUP = "Who won the 2018 football World Cup?"
MERCURY = "How many days does Mercury take to orbit the Sun?"


@pytest.fixture
def rag(make_rag, tmp_path, samples_dir):
    service = make_rag(tmp_path / "data")
    service.ingest_paths(C, [samples_dir])
    return service


def test_a_question_the_samples_cannot_answer_abstains_without_citations(rag):
    out = rag.query(C, WORLD_CUP).as_dict()
    assert out["abstained"] is True
    assert out["citations"] == []
    assert out["answer"] == NOT_FOUND and "[" not in out["answer"]
    assert out["context"], "retrieval still returns a context; the generator declines to answer from it"

    events = list(rag.query_stream(C, WORLD_CUP))
    (kind, final), deltas = events[-1], [e for k, e in events if k == "delta"]
    assert kind == "answer" and final.abstained is True and final.citations == []
    assert "".join(d.text for d in deltas) == final.text == NOT_FOUND


def test_an_answerable_sample_question_does_not_abstain_and_cites(rag):
    out = rag.query(C, MERCURY).as_dict()
    assert out["abstained"] is False
    assert out["citations"] and "88 days" in out["answer"] and "[1]" in out["answer"]
    assert out["citations"][0]["doc_id"].endswith("solar-system.html")


@pytest.mark.parametrize(
    "question",
    [
        "How long should green tea steep?",
        "Which planet has two moons?",
        "How much does Kenyan AA coffee cost per kilogram?",
        "What is a span?",
        "How long does a year last on Mercury and on Mars?",
    ],
)
def test_sample_questions_the_other_tests_ask_are_still_answered(rag, question):
    out = rag.query(C, question).as_dict()
    assert out["abstained"] is False and out["citations"]


def test_the_rule_reads_the_cosine_then_the_question_s_terms():
    options = ExtractiveOptions()
    lo, sure = options.min_cosine, options.sure_cosine
    assert 0.2 < lo < sure < 0.8
    full = dict(coverage=1.0, specific_coverage=1.0)
    # below the floor nothing is enough; at or above sure_cosine nothing more is asked
    assert not options.supports(Support(best_cosine=lo - 0.01, **full))
    assert options.supports(Support(best_cosine=sure, coverage=0.0, specific_coverage=0.0, n_specific=2))
    # in between: every name and number of the question, and enough of its content terms
    mid = (lo + sure) / 2
    assert options.supports(Support(best_cosine=mid, coverage=options.min_coverage, specific_coverage=1.0))
    assert not options.supports(Support(best_cosine=mid, coverage=1.0, specific_coverage=0.5, n_specific=2))
    assert not options.supports(Support(best_cosine=mid, coverage=options.min_coverage - 0.01, specific_coverage=1.0))
    assert options.supports(Support(best_cosine=lo, **full))
    # the knobs: a plain cosine threshold when the band is empty
    plain = ExtractiveOptions(min_cosine=0.3, sure_cosine=0.3)
    assert plain.supports(Support(best_cosine=0.3, coverage=0.0, specific_coverage=0.0, n_specific=1))
    assert ExtractiveOptions(min_cosine=-1.0, sure_cosine=-1.0).supports(Support(best_cosine=-0.5, coverage=0.0))


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Who won the 2018 football World Cup?", {"2018", "world", "cup"}),  # a year, a name
        ("What was the change in Total (loan) in 2019 from 2018?", {"total", "2019", "2018"}),
        ("Were Scott Derrickson and Ed Wood of the same nationality?", {"scott", "derrickson", "wood"}),
        ("ALDH1 expression is associated with poorer prognosis.", {"aldh1"}),  # opens, but a digit
        ("IgG levels fall. Mars is red.", {"igg"}),  # sentence openers count only with a second capital
        ("What does spanrag do at ingest?", set()),
        ("How much does Kenyan AA coffee cost per kilogram?", {"kenyan"}),  # "AA": under three letters
    ],
)
def test_specific_terms_are_numbers_and_names(question, expected):
    assert specific_terms(question) == expected


def test_a_specific_word_is_found_with_another_short_ending_a_number_only_as_written():
    context = terms("Kenya AA, washed: 18.50 USD per kg in 2019. Magazines. Derrick Rose.")
    assert found_share({"kenyan"}, context) == 1.0  # the sample question: "Kenyan" coffee, "Kenya" row
    assert found_share({"magazine", "2019"}, context) == 1.0
    assert found_share({"derrickson", "2018"}, context) == 0.0  # not a short ending; another year
    assert found_share({"201"}, context) == 0.0


def test_support_measures_the_context():
    question = "How long is a year on Mars in 2019?"
    text = "Mars orbits the Sun in 687 days."
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    piece = span("mars.md", text)
    context = Context([ContextSpan(piece, 0.9, pieces=[piece] * 3, piece_vectors=vectors)], 10)
    out = support(question, np.array([1.0, 0.0]), context)
    assert out.best_cosine == pytest.approx(1.0) and out.median_cosine == pytest.approx(0.6)
    assert out.n_specific == 2 and out.specific_coverage == 0.5  # "Mars" found, "2019" not
    assert out.coverage == pytest.approx(1 / 4)  # long, year, mars, 2019: only "mars"


def test_a_topical_question_about_a_name_the_samples_lack_abstains(rag):
    # Close in topic to the planets page (cosine about 0.49, above the floor), but Jupiter is
    # nowhere in it: the old single threshold answered with Mars's moons.
    out = rag.query(C, "How many moons does Jupiter have?").as_dict()
    assert out["abstained"] is True and out["citations"] == []


def test_an_empty_context_is_an_abstention():
    answer = ExtractiveGenerator().generate(WORLD_CUP, None, Context([], 0))
    assert answer.abstained and answer.citations == []


# -- the model-backed generator: the prompt's fixed sentence ----------------------------------
def test_the_prompt_offers_the_fixed_sentence():
    assert NOT_IN_SOURCES in SYSTEM_PROMPT


@pytest.mark.parametrize(
    "reply, expected",
    [
        (NOT_IN_SOURCES, True),
        ("I cannot answer from the provided sources", True),
        ("  i CANNOT answer from the provided sources!  ", True),
        ('"I cannot answer from the provided sources."', True),
        ("I cannot answer from the provided sources. [1]", True),  # opens with it: the marker is noise
        ("Sorry, I cannot answer from the provided sources.", True),  # contains it, cites nothing
        ("Mars has two moons [1].", False),
        ("Mars has two moons [1]; I cannot answer from the provided sources which is larger.", False),
        ("I cannot answer that quickly, but Mars has two moons [1].", False),
        ("", False),
    ],
)
def test_the_fixed_sentence_is_detected_in_a_reply(reply, expected):
    assert abstains(reply) is expected


def span(doc_id: str, text: str) -> Span:
    return Span(
        id=f"{doc_id}#1",
        doc_id=doc_id,
        parent_id=f"{doc_id}#0",
        granularity="paragraph",
        start=0,
        end=len(text),
        text=text,
        heading_path=[],
        n_tokens=len(text.split()),
    )


def test_the_llm_generator_turns_the_fixed_sentence_into_an_abstention_without_citations():
    pytest.importorskip("openai")
    from generation.openai_compatible import OpenAICompatibleGenerator, OpenAICompatibleOptions

    prompt = build_prompt(
        "How many moons has Mars?", Context([ContextSpan(span("mars.md", "Mars has two moons."), 1.0)], 5)
    )
    with OpenAICompatibleGenerator(OpenAICompatibleOptions(base_url="http://127.0.0.1:9/v1", model="m")) as gen:
        declined = gen._answer(f" {NOT_IN_SOURCES} [1]\n", prompt)
        answered = gen._answer("Two [1].", prompt)
    assert declined.abstained and declined.citations == [] and declined.text == f"{NOT_IN_SOURCES} [1]"
    assert not answered.abstained and [c.span_id for c in answered.citations] == ["mars.md#1"]


# -- metrics ------------------------------------------------------------------------------------
def test_abstention_precision_and_recall_on_a_hand_made_case():
    # 4 unanswerable questions, 3 abstained; 6 answerable, 1 abstained
    unanswerable = [True] * 4 + [False] * 6
    abstained = [True, True, True, False] + [True] + [False] * 5
    out = M.abstention_metrics(abstained, unanswerable)
    assert out == pytest.approx({"abstain_precision": 3 / 4, "abstain_recall": 3 / 4, "abstained_answerable": 1 / 6})
    assert M.abstention_metrics([False, False], [True, False]) == {"abstain_recall": 0.0, "abstained_answerable": 0.0}
    with pytest.raises(ValueError):
        M.abstention_metrics([True], [])


def record(qid: str, context: str, abstained: bool) -> dict:
    return {
        "qid": qid,
        "ranked": [],
        "context_tokens": 10,
        "timings_ms": {"retrieval_ms": 1.0},
        "context": [{"doc_id": "d", "start": 0, "end": len(context), "text": context}],
        "answer": "x",
        "abstained": abstained,
    }


def test_the_harness_scores_abstention_and_keeps_other_metrics_to_answerable_questions():
    gold = {
        "qrels": {},
        "answers": ["Paris"],
        "context_answers": ["Paris"],
        "require_all": False,
        "evidence": [],
        "evidence_sentences": [],
    }
    records = [
        record("a1", "Paris is in France.", False),
        record("a2", "Paris again.", True),
        record("a3", "Nothing here.", False),
        record("unanswerable:u1", "Paris!", True),
        record("unanswerable:u2", "Paris!", False),
    ]
    golds = {
        "a1": gold,
        "a2": gold,
        "a3": gold,
        "unanswerable:u1": {"unanswerable": True},
        "unanswerable:u2": {"unanswerable": True},
    }
    out = aggregate(records, golds)
    assert out["answer_in_context"] == pytest.approx(2 / 3)  # answerable questions only
    assert out["answered_in_context"] == pytest.approx(1 / 3)  # a2's answer was in context, but it abstained
    assert out["abstain_precision"] == 0.5 and out["abstain_recall"] == 0.5
    assert out["abstained_answerable"] == pytest.approx(1 / 3)
    assert out["n_queries"] == 3 and out["n_unanswerable"] == 2
    without = aggregate(records[:3], golds)
    assert "abstain_recall" not in without and "answered_in_context" not in without
