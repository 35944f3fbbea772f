"""Evaluation metrics on tiny hand-made data whose right answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval import metrics as M
from eval.datasets import load_dataset, tatqa_document
from eval.harness import query_metrics
from indexing.parsers.jsonl import parse_record

# -- ranking (ir-measures) ------------------------------------------------------------------------
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d9": 1}}


def test_perfect_and_partial_ranking():
    run = {"q1": ["d1", "x", "y"], "q2": ["x", "d2", "y", "d3"], "q3": ["d9"]}
    per_q = M.per_query_ranking(run, QRELS)
    assert per_q["ndcg@10"]["q1"] == pytest.approx(1.0)
    assert per_q["mrr@10"]["q2"] == pytest.approx(0.5)
    assert per_q["recall@10"]["q2"] == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert per_q["ndcg@10"]["q2"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_no_relevant_document_retrieved_scores_zero():
    run = {"q1": ["a", "b"], "q2": ["c"], "q3": []}  # q3 retrieved nothing at all
    out = M.ranking_metrics(run, QRELS)
    assert out == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


def test_missing_query_counts_as_zero_in_the_mean():
    out = M.ranking_metrics({"q1": ["d1"]}, QRELS)
    assert out["mrr@10"] == pytest.approx(1 / 3)
    assert out["ndcg@10"] == pytest.approx(1 / 3)


def test_recall_cutoffs():
    run = {"q2": ["d2"] + [f"x{i}" for i in range(20)] + ["d3"]}
    out = M.per_query_ranking(run, {"q2": QRELS["q2"]})
    assert out["recall@10"]["q2"] == pytest.approx(0.5)
    assert out["recall@100"]["q2"] == pytest.approx(1.0)
    assert out["mrr@10"]["q2"] == pytest.approx(1.0)


def test_ties_follow_the_pipeline_order_not_doc_ids():
    # Raw scores tie; ir-measures' providers would break the tie differently (pytrec_eval by
    # doc id descending). The pipeline's order is authoritative: rank-derived scores.
    assert M.rank_scores(["a", "b", "a"]) == {"a": 3.0, "b": 2.0}
    qrels = {"q": {"b": 1}}
    first = M.per_query_ranking({"q": ["a", "b"]}, qrels)
    second = M.per_query_ranking({"q": ["b", "a"]}, qrels)
    assert first["mrr@10"]["q"] == pytest.approx(0.5)
    assert first["ndcg@10"]["q"] == pytest.approx(1 / math.log2(3))
    assert second["mrr@10"]["q"] == pytest.approx(1.0)
    assert second["ndcg@10"]["q"] == pytest.approx(1.0)


def test_unjudged_queries_are_ignored():
    out = M.ranking_metrics({"q1": ["d1"], "q0": ["z"]}, {"q1": {"d1": 1}, "q0": {"z": 0}})
    assert out["ndcg@10"] == pytest.approx(1.0)


# -- answers ---------------------------------------------------------------------------------------
def test_squad_normalization():
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.strip_citations("Paris is big [1]. Also old [2]") == "Paris is big. Also old"


def test_em_f1_take_the_max_over_gold_answers():
    golds = ["Barack Obama", "Obama"]
    assert M.squad_em("obama.", golds) == 1.0
    assert M.squad_f1("President Obama", golds) == pytest.approx(2 / 3)  # vs "Obama": p=1/2, r=1
    assert M.squad_em("Bush", golds) == 0.0
    assert M.squad_f1("Bush", golds) == 0.0
    assert M.squad_em("anything", []) == 0.0


def test_answer_in_context():
    ctx = "The Eiffel Tower is in\nParis, France."
    assert M.answer_in_context(ctx, ["paris"]) == 1.0
    assert M.answer_in_context(ctx, ["in Paris"]) == 1.0  # whitespace squeezed
    assert M.answer_in_context(ctx, ["London", "France"]) == 1.0  # any alternative
    assert M.answer_in_context(ctx, ["Paris", "London"], require_all=True) == 0.0  # multi-span
    assert M.answer_in_context(ctx, ["Paris", "France"], require_all=True) == 1.0
    assert M.answer_in_context(ctx, [""]) == 0.0


def test_evidence_recall_documents_and_ranges():
    spans = [{"doc_id": "A", "start": 0, "end": 10}, {"doc_id": "B", "start": 50, "end": 60}]
    units = [M.EvidenceUnit("A"), M.EvidenceUnit("C")]
    assert M.evidence_recall(units, spans) == 0.5
    ranges = [M.EvidenceUnit("B", 55, 80), M.EvidenceUnit("B", 60, 70), M.EvidenceUnit("A", 5, 6)]
    assert M.evidence_recall(ranges, spans) == pytest.approx(2 / 3)  # [60,70) only touches the end
    assert M.evidence_recall([], spans) is None


def test_percentile():
    assert M.percentile([1, 2, 3, 4], 50) == 2.5
    assert M.percentile([5], 95) == 5
    assert M.percentile([], 50) == 0.0
    assert M.percentile(range(1, 101), 95) == pytest.approx(95.05)


# -- dataset gold rules ----------------------------------------------------------------------------
def test_hotpotqa_yes_no_excluded_from_answer_in_context(tmp_path):
    records = [
        {
            "id": "h1",
            "question": "Same nationality?",
            "answer": "yes",
            "type": "comparison",
            "level": "hard",
            "supporting_facts": {"title": ["A", "B"], "sent_id": [0, 0]},
            "context": {"title": ["A", "B"], "sentences": [["A is American."], ["B is American."]]},
        },
        {
            "id": "h2",
            "question": "Where is A from?",
            "answer": "America",
            "type": "bridge",
            "level": "easy",
            "supporting_facts": {"title": ["A"], "sent_id": [0]},
            "context": {"title": ["A", "C"], "sentences": [["A is American."], ["C is", " French."]]},
        },
    ]
    path = tmp_path / "hp.json"
    path.write_text(json.dumps(records))
    ds = load_dataset("hotpotqa", path)
    assert sorted(d.doc_id for d in ds.corpus_docs) == ["A", "B", "C"]
    c = next(d for d in ds.corpus_docs if d.doc_id == "C")
    assert c.text == "C\n\nC is French."
    h1, h2 = ds.queries
    assert h1.context_answers is None and h1.answers == ["yes"]
    assert h2.context_answers == ["America"]
    assert ds.qrels == {"h1": {"A": 1, "B": 1}, "h2": {"A": 1}}
    assert [u.doc_id for u in h1.evidence] == ["A", "B"]


def test_hotpotqa_supporting_facts_become_sentence_ranges_of_the_stored_documents(tmp_path):
    records = [
        {
            "id": "h1",
            "question": "Where was the author of B born?",
            "answer": "Lyon",
            "supporting_facts": {"title": ["A", "B", "A"], "sent_id": [1, 0, 9]},
            "context": {
                "title": ["A", "B"],
                "sentences": [["A is a writer.", " A was born in Lyon.", " A died in Paris."], ["B is a novel by A."]],
            },
        }
    ]
    path = tmp_path / "hp.json"
    path.write_text(json.dumps(records))
    ds = load_dataset("hotpotqa", path)
    text = {d.doc_id: d.text for d in ds.corpus_docs}

    units = ds.queries[0].evidence_sentences
    assert [(u.doc_id, text[u.doc_id][u.start : u.end]) for u in units] == [
        ("A", "A was born in Lyon."),
        ("B", "B is a novel by A."),
    ]  # sentence 9 of A does not exist: left out


def test_cited_evidence_precision_and_recall():
    gold = [M.EvidenceUnit("a", 0, 20), M.EvidenceUnit("b", 5, 15)]
    on_a = {"doc_id": "a", "start": 3, "end": 12}
    elsewhere = {"doc_id": "a", "start": 30, "end": 40}

    assert M.cited_evidence([on_a, elsewhere], gold) == (0.5, 0.5)
    assert M.cited_evidence([on_a, {"doc_id": "b", "start": 0, "end": 6}], gold) == (1.0, 1.0)
    assert M.cited_evidence([], gold) == (None, 0.0)  # no citations: no precision, recall 0
    assert M.cited_evidence([on_a], []) == (None, None)  # no gold sentences: the query does not count


def test_tatqa_document_and_gold(tmp_path):
    context = {
        "table": {"uid": "T1", "table": [["", "2019", "2018"], ["Revenue", "10", "8"], ["Cost", "4", "3"]]},
        "paragraphs": [
            {"uid": "p1", "order": 1, "text": "Revenue grew   strongly."},
            {"uid": "p2", "order": 2, "text": "Costs fell in Europe and Asia."},
        ],
        "questions": [
            {
                "uid": "u1",
                "question": "Where did costs fall?",
                "answer": ["Europe", "Asia"],
                "answer_type": "multi-span",
                "answer_from": "text",
                "rel_paragraphs": ["2"],
            },
            {
                "uid": "u2",
                "question": "Revenue change?",
                "answer": 2,
                "answer_type": "arithmetic",
                "answer_from": "table",
                "rel_paragraphs": [],
            },
        ],
    }
    doc, paragraphs, table_range = tatqa_document(context)
    assert doc.text.startswith(" | 2019 | 2018\nRevenue | 10 | 8")
    table = doc.blocks[0]
    assert doc.text[table.header.start : table.header.end] == " | 2019 | 2018"
    assert [doc.text[r.start : r.end] for r in table.rows] == ["Revenue | 10 | 8", "Cost | 4 | 3"]
    assert doc.text[slice(*paragraphs["1"])] == "Revenue grew strongly."
    path = tmp_path / "tat.json"
    path.write_text(json.dumps([context]))
    ds = load_dataset("tatqa", path)
    u1, u2 = ds.queries
    assert u1.require_all and u1.context_answers == ["Europe", "Asia"]
    assert [(u.start, u.end) for u in u1.evidence] == [paragraphs["2"]]
    assert u2.context_answers is None and u2.answers == ["2"]
    assert [(u.start, u.end, u.label) for u in u2.evidence] == [(*table_range, "table")]
    assert ds.qrels["u2"] == {"T1": 1}


def test_beir_evidence_sentences_become_character_ranges_of_the_ingested_document(tmp_path):
    """SciFact's rationale sentences (indices into ``metadata.sentences``) are located in the
    document text the ingest builds (title, blank line, text); one that is not there verbatim
    is left out and counted in the dataset's notes."""
    sentences = ["Aspirin lowers fever.", "It also thins the blood.", "Dose matters."]
    record = {"_id": "d1", "title": "Aspirin", "text": " ".join(sentences), "metadata": {"sentences": sentences}}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "queries.train.jsonl").write_text(json.dumps({"_id": "q1", "text": "Does aspirin thin blood?"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "qrels" / "train.evidence.jsonl").write_text(
        json.dumps({"query-id": "q1", "evidence": [{"doc": "d1", "label": "SUPPORT", "sentences": [1, 7]}]}) + "\n"
    )
    dataset = load_dataset("beir", tmp_path, "train")
    (query,) = dataset.queries
    (unit,) = query.evidence_sentences
    text = parse_record(record).text
    assert text[unit.start : unit.end] == "It also thins the blood."
    assert dataset.notes and "1 evidence sentence" in dataset.notes[0]
    gold = query.gold(dataset.qrels["q1"])
    spans = [{"doc_id": "d1", "start": unit.start, "end": unit.end}]
    assert query_metrics({"context": [], "answer": ""}, gold)["sentence_evidence_recall"] == 0.0
    assert query_metrics({"context": [{**spans[0], "text": ""}], "answer": ""}, gold)["sentence_evidence_recall"] == 1.0


def test_a_run_record_scores_its_citations_against_the_gold_sentences():
    from eval.harness import query_metrics

    gold = {"evidence_sentences": [{"doc_id": "A", "start": 15, "end": 35}], "evidence": [{"doc_id": "A"}]}
    record = {
        "context": [{"doc_id": "A", "start": 0, "end": 50, "text": "A is a writer. A was born in Lyon."}],
        "citations": [{"doc_id": "A", "start": 15, "end": 35}, {"doc_id": "A", "start": 0, "end": 14}],
        "answer": "A was born in Lyon [1].",
    }

    metrics = query_metrics(record, gold)

    assert (metrics["cited_precision"], metrics["cited_recall"]) == (0.5, 1.0)


def test_the_citation_ceiling_cites_the_top_pieces_by_each_score():
    from eval.citation_ceiling import cite_top, pieces_of

    def piece(span_id, start, relevance, gain):
        return {"span_id": span_id, "doc_id": "a", "start": start, "end": start + 9}, [
            span_id,
            "taken",
            "taken (anchor)",
            "anchor",
            {"relevance": relevance, "gain": gain},
        ]

    spans = [piece("a#1", 0, 0.9, 0.5), piece("a#2", 20, 0.5, 1.0), piece("a#3", 40, 0.1, 0.1)]
    run = {
        "queries": [
            {
                "context": [c for c, _ in spans],
                "trace": [t for _, t in spans],
                "gold": {"evidence_sentences": [{"doc_id": "a", "start": 20, "end": 29}]},
            }
        ]
    }
    questions = pieces_of(run)
    assert [p["gold"] for p in questions[0][0]] == [False, True, False]
    assert cite_top(questions, lambda p, best: p["cosine"], 1) == (0.0, 0.0)
    assert cite_top(questions, lambda p, best: p["gain"], 1) == (1.0, 1.0)
    assert cite_top(questions, lambda p, best: p["gain"], 2) == (0.5, 1.0)
    assert cite_top(questions, lambda p, best: p["gain"], 2, threshold=0.8) == (1.0, 1.0)  # 0.5 < 0.8 × 1.0


def test_an_answer_found_only_in_another_documents_piece_counts_for_the_context_not_for_the_gold_documents():
    from eval.answer_source import answer_sources

    def question(context, answers, require_all=False):
        return {
            "context": [{"doc_id": d, "text": t} for d, t in context],
            "gold": {"qrels": {"gold": 1}, "context_answers": answers, "require_all": require_all},
        }

    run = {
        "queries": [
            question([("gold", "Total sales | $1,496.5"), ("other", "Other | 5%")], ["$1,496.5"]),
            question([("gold", "Total sales | $1,202.9"), ("other", "Margin | 5%")], ["5%"]),  # by chance
            question([("gold", "a"), ("other", "b")], ["a", "b"], require_all=True),  # half of it
            {"context": [], "gold": {"qrels": {"gold": 1}, "context_answers": None}},  # arithmetic: not counted
        ]
    }
    assert answer_sources(run) == {
        "questions": 3,
        "answer_in_context": round(3 / 3, 4),
        "answer_in_gold_documents": round(1 / 3, 4),
    }


def _stop_rule_run(questions: int, seed: int) -> dict:
    """A run file of a budget-filling pipeline: per question, the answer's piece comes
    first or second in the taken order, then filler pieces of falling gain."""
    rng = np.random.default_rng(seed)
    queries = []
    for n in range(questions):
        answer_at = int(rng.integers(0, 2))
        context, trace = [], []
        for i in range(6):
            span_id = f"d{n % 7}#{i}"
            text = f"Revenue | {n}{i}" if i == answer_at else f"filler {n} {i}"
            gain = 1.5 - 0.2 * i
            context.append({"span_id": span_id, "doc_id": f"d{n % 7}", "text": text, "n_tokens": 10})
            scores = {"relevance": 0.8 if i == answer_at else 0.3, "gain": gain, "doc_prior": 1.0}
            trace.append([span_id, "taken", "taken (anchor)", "anchor", scores])
        queries.append(
            {
                "qid": str(n),
                "question": "What was revenue?",
                "context": context,
                "trace": trace,
                "gold": {"qrels": {f"d{n % 7}": 1}, "context_answers": [f"{n}{answer_at}"]},
            }
        )
    return {"dataset": "synthetic", "queries": queries}


def test_the_relative_floor_replay_keeps_the_pieces_taken_before_the_first_below_the_floor():
    from eval.stop_rules import questions_of, relative_floor

    (question, *_) = questions_of(_stop_rule_run(1, seed=0))
    assert question.gains == pytest.approx([1.5, 1.3, 1.1, 0.9, 0.7, 0.5])
    assert relative_floor(question, 0.7) == [0, 1, 2]  # 0.9 < 0.7 × 1.5
    assert relative_floor(question, 0.0) == [0, 1, 2, 3, 4, 5]


def test_the_calibrated_rule_takes_pieces_by_probability_down_to_its_threshold_under_the_budget():
    from eval.stop_rules import calibrated, questions_of

    (question, *_) = questions_of(_stop_rule_run(1, seed=0))
    probability = np.array([0.1, 0.9, 0.5, 0.05, 0.3, 0.2])
    assert calibrated(question, probability, 0.25, budget=500) == [1, 2, 4]
    assert calibrated(question, probability, 0.25, budget=20) == [1, 2]
    assert calibrated(question, probability, 0.99, budget=500) == [1]  # the likeliest always


def test_the_calibrated_rule_scores_each_question_with_a_model_that_never_saw_its_documents():
    """Flip the labels of one document's questions: their own probabilities do not move,
    and the rule learns that the answer's piece is the one that matches best."""
    from eval.stop_rules import out_of_fold, questions_of

    questions = questions_of(_stop_rule_run(60, seed=1))
    before = out_of_fold([questions])[0]
    flipped = questions_of(_stop_rule_run(60, seed=1))
    for q in flipped:
        if "d3" in q.qrels:
            q.holds_answer = 1.0 - q.holds_answer
    after = out_of_fold([flipped])[0]
    assert all(np.allclose(b, a) for q, b, a in zip(questions, before, after, strict=True) if "d3" in q.qrels)
    assert not all(np.allclose(b, a) for b, a in zip(before, after, strict=True))
    assert all(int(np.argmax(p)) == int(np.argmax(q.holds_answer)) for q, p in zip(questions, before, strict=True))
