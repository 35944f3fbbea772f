"""Context selection: adaptive-k cut points, clustered de-duplication, and the context
bubble's budget, table headers, caps and trace."""

import numpy as np
import pytest

from retrieval.selection import adaptive_cut
from retrieval.selection.clustered import cluster_labels

C = "docs"
PLANETS = "How many moons does Mars have and how long is its orbital period?"
COFFEE = "Which coffee origin has the highest price per kg, and how is it roasted?"
REASONS = {
    "budget",
    "overlap",
    "k_reached",
    "below_cut",
    "cluster_duplicate",
    "redundant",
    "section_cap",
    "doc_cap",
    "low_gain",
    "expanded into its pieces",
    "outside the bubble",
}


# -- adaptive-k ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, options, expected",
    [
        ([0.9, 0.88, 0.86, 0.5, 0.48, 0.47], {}, 3),  # the one big drop
        ([0.9, 0.5, 0.49, 0.48, 0.1, 0.09], {}, 1),  # largest gap right after the top
        ([0.9, 0.5, 0.49, 0.48, 0.1, 0.09], {"head_fraction": 0.34, "ignore_below_median": False}, 4),  # head skipped
        ([0.9, 0.8, 0.79, 0.2, 0.19, 0.18, 0.17, 0.01], {}, 3),  # tail gap 0.17→0.01 is below the median
        ([0.9, 0.8, 0.79, 0.2, 0.19, 0.18, 0.17, 0.0], {"ignore_below_median": False}, 3),
        ([0.9, 0.88, 0.86, 0.5, 0.48, 0.47], {"buffer": 2}, 5),
        ([0.5, 0.5, 0.5], {}, 1),  # no gap at all: keep the first
        ([0.7], {}, 1),
        ([], {}, 0),
    ],
)
def test_adaptive_k_cuts_at_the_largest_gap(scores, options, expected):
    assert adaptive_cut(scores, **options) == expected


def test_adaptive_k_refuses_unsorted_scores():
    with pytest.raises(ValueError):
        adaptive_cut([0.1, 0.9])


def test_the_adaptive_k_pipeline_keeps_only_what_is_above_the_cut(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    result = rag.retrieve(C, PLANETS, pipeline="adaptive-k")
    cut = [t for t in result.context.trace if t.reason == "below_cut"]
    kept = [t for t in result.context.trace if t.decision == "taken"]
    assert kept and cut
    assert min(t.scores["relevance"] for t in kept) >= max(t.scores["relevance"] for t in cut)


# -- clustered ----------------------------------------------------------------------------------


def test_clustering_puts_planted_near_duplicates_together():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, 32))
    dupes = base[0] + 0.01 * rng.normal(size=(3, 32))  # three copies of the first
    vectors = np.vstack([base, dupes])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = cluster_labels(vectors, similarity=0.9)
    assert len(set(labels[[0, 3, 4, 5]])) == 1
    assert len(set(labels)) == 3


def test_the_clustered_pipeline_drops_duplicated_passages(rag, tmp_path):
    folder = tmp_path / "dupes"
    folder.mkdir()
    passage = (
        "Mars has two small moons, Phobos and Deimos, and a thin carbon dioxide atmosphere. "
        "A Martian year lasts 687 Earth days."
    )
    for i in range(3):
        (folder / f"copy{i}.txt").write_text(passage + "\n")
    (folder / "other.txt").write_text("Jupiter has dozens of moons; Ganymede is the largest.\n")
    rag.ingest_paths(C, [folder])
    clustered = rag.retrieve(C, "How many moons does Mars have?", pipeline="clustered")
    topk = rag.retrieve(C, "How many moons does Mars have?", pipeline="hybrid")

    def texts(result):
        return [s.span.text for s in result.context.spans]

    assert len(texts(topk)) > len(set(texts(topk)))  # fixed top-k repeats the passage
    assert len(texts(clustered)) == len(set(texts(clustered)))
    assert any(t.reason == "cluster_duplicate" for t in clustered.context.trace)


# -- context bubble -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget", [40, pytest.param(80, marks=pytest.mark.slow), pytest.param(150, marks=pytest.mark.slow), 400]
)
@pytest.mark.parametrize("question", [PLANETS, COFFEE, "What does spanrag do at ingest?"])
def test_the_bubble_never_exceeds_its_budget(rag, samples_dir, budget, question):
    rag.ingest_paths(C, [samples_dir])
    context = rag.retrieve(C, question, pipeline="bubble", overrides={"budget_tokens": budget}).context
    assert context.n_tokens == sum(item.n_tokens for item in context.spans) <= budget
    shown = rag.encoder.count_tokens([item.text for item in context.spans])
    assert shown == [item.n_tokens for item in context.spans]  # the accounting is what is shown


def test_table_rows_come_with_their_header_once_per_table(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    context = rag.retrieve(C, COFFEE, pipeline="bubble").context
    rows = [item for item in context.spans if item.span.granularity == "row"]
    assert len(rows) >= 2
    tables: dict[str, list] = {}
    for item in rows:
        tables.setdefault(item.span.parent_id, []).append(item)
    for items in tables.values():
        assert items[0].show_header and items[0].text.startswith(items[0].span.header)
        assert not any(i.show_header for i in items[1:])
        assert all(i.text == i.span.text for i in items[1:])


SALES_BY_CONTRACT = """# Sales by contract type

Substantially all of our contracts are fixed-price type contracts. Sales included in Other
contract types represent cost plus and time and material type contracts.

| Contract type | 2019 | 2018 | 2017 |
|---|---|---|---|
| Fixed Price | $ 1,452.4 | $ 1,146.2 | $ 1,036.9 |
| Other | 44.1 | 56.7 | 70.8 |
| Total sales | $1,496.5 | $1,202.9 | $1,107.7 |
"""  # TAT-QA dev, the first context (years ended September 30)


@pytest.mark.parametrize("cut", [True, False])
def test_a_row_shows_the_columns_of_the_year_asked_about_and_costs_only_those(rag, tmp_path, cut):
    (tmp_path / "sales.md").write_text(SALES_BY_CONTRACT)
    rag.ingest_paths(C, [tmp_path / "sales.md"])
    question = "What is the amount of total sales in 2019?"
    context = rag.retrieve(C, question, overrides={"bubble_table_columns": cut}).context

    total = next(item for item in context.spans if item.span.text.startswith("| Total sales"))
    assert "$1,496.5" in total.text
    assert ("$1,202.9" in total.text) is not cut
    assert total.span.text == "| Total sales | $1,496.5 | $1,202.9 | $1,107.7 |"  # the citation's text
    if cut:
        header_shown = next(item for item in context.spans if item.span.granularity == "row" and item.show_header)
        assert header_shown.text.startswith("| Contract type | 2019 |\n")
    shown = rag.encoder.count_tokens([item.text for item in context.spans])
    assert shown == [item.n_tokens for item in context.spans]
    assert context.n_tokens == sum(shown)


def test_table_rows_are_alternatives_not_repeats_unless_their_text_is_the_same():
    """Rows of one table embed alike (the same header, cells of numbers): with
    ``bubble_rows_as_alternatives`` a row is alike only to a row of the same text, while
    sentences keep their embedding similarity."""
    from indexing.spans import Span
    from retrieval.selection.bubble import Unit, _row_texts, _similarities_to

    def unit(i: int, granularity: str, text: str) -> Unit:
        return Unit(Span(f"d{i}#1", f"d{i}", None, granularity, 0, len(text), text), "structure")

    ordered = [
        unit(0, "row", "Total sales | 1,496.5"),
        unit(1, "row", "Total sales | 2,310.0"),  # another company's line item
        unit(2, "row", "Total sales | 1,496.5"),  # the same row in a copy of the report
        unit(3, "sentence", "Sales rose in 2019."),
    ]
    vectors = np.array([[1.0, 0.0], [0.99, 0.14], [1.0, 0.0], [0.8, 0.6]])
    plain = _similarities_to(0, vectors, None)
    alike = _similarities_to(0, vectors, _row_texts(ordered))
    assert plain[1] > 0.95  # would be dropped as a duplicate
    assert alike.tolist() == [1.0, -1.0, 1.0, pytest.approx(0.8)]
    assert _similarities_to(3, vectors, _row_texts(ordered)).tolist() == pytest.approx(vectors @ vectors[3])


def test_a_cost_weight_makes_each_piece_pay_for_its_tokens_in_the_trace(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    free = rag.retrieve(C, PLANETS, pipeline="default", overrides={"bubble_relative_min_gain": 0.0}).context
    paid = rag.retrieve(
        C, PLANETS, pipeline="default", overrides={"bubble_relative_min_gain": 0.0, "bubble_cost_weight": 2.0}
    ).context

    taken = [t for t in paid.trace if t.decision == "taken"]
    assert taken and all(t.scores["cost_penalty"] == pytest.approx(2.0 * t.scores["cost"] / 100) for t in taken)
    assert not any("cost_penalty" in t.scores for t in free.trace)
    first_free = next(t for t in free.trace if t.decision == "taken")
    assert taken[0].scores["cost"] <= first_free.scores["cost"]  # a long first piece loses its lead


def test_the_bubble_respects_section_and_document_caps(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    context = rag.retrieve(
        C, PLANETS, pipeline="bubble", overrides={"bubble_doc_cap": 2, "bubble_section_cap": 1}
    ).context
    per_doc: dict[str, int] = {}
    for item in context.spans:
        per_doc[item.span.doc_id] = per_doc.get(item.span.doc_id, 0) + 1
    assert context.spans and max(per_doc.values()) <= 2
    reasons = {t.reason for t in context.trace}
    assert "doc_cap" in reasons or "section_cap" in reasons


def test_the_bubble_trace_explains_every_candidate_and_is_deterministic(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    first = rag.retrieve(C, PLANETS, pipeline="bubble")
    again = rag.retrieve(C, PLANETS, pipeline="bubble")
    trace = first.context.trace
    assert [(t.span_id, t.decision, t.reason) for t in trace] == [
        (t.span_id, t.decision, t.reason) for t in again.context.trace
    ]
    for mine, other in zip(trace, again.context.trace):  # equal up to float rounding of the vector store
        assert mine.scores == pytest.approx(other.scores, rel=1e-6, abs=1e-7)
    traced = {t.span_id for t in trace}
    pool = [c.span_id for c in first.candidates[:100]]
    assert set(pool) <= traced  # every first-stage candidate that reached selection
    taken = {t.span_id for t in trace if t.decision == "taken"}
    assert taken == {item.span.id for item in first.context.spans}
    for t in trace:
        if t.decision == "dropped":
            assert t.reason in REASONS
        else:
            assert {"relevance", "doc_prior", "coverage_gain", "redundancy", "gain"} <= set(t.scores)
            assert t.source in {"anchor", "structure", "graph", "first_stage"}


def test_the_bubble_cites_sentences_around_its_anchor(rag, samples_dir):
    rag.ingest_paths(C, [samples_dir])
    out = rag.query(C, PLANETS, pipeline="bubble").as_dict()
    assert any("687" in c["text"] for c in out["context"])
    assert all(c["granularity"] in ("sentence", "row") for c in out["context"])
