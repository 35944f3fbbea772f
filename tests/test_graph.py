"""The graph index: entities found by a transparent rule, structure and mention edges per
document, local incremental writes that leave nothing stale, persistence, and the
traversals retrieval uses (hop neighbourhoods, personalized PageRank)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from indexing.entities import extract_entities, normalize_entity
from indexing.graph import GraphIndex
from indexing.spans import Document, Span, span_id

C = "docs"


def make_doc(doc_id: str, title: str, paragraphs: list[list[str]], version: str = "v1") -> tuple[Document, list[Span]]:
    """A document shaped like the span tree builder's: document, title section, then per
    paragraph a paragraph span with one sentence span per sentence."""
    text = title
    layout = []
    for sentences in paragraphs:
        text += "\n\n"
        start = len(text)
        bounds = []
        for i, sentence in enumerate(sentences):
            if i:
                text += " "
            bounds.append((len(text), len(text) + len(sentence)))
            text += sentence
        layout.append(((start, len(text)), bounds))
    spans: list[Span] = []

    def add(granularity, start, end, parent):
        span = Span(
            id=span_id(doc_id, len(spans)),
            doc_id=doc_id,
            parent_id=parent,
            granularity=granularity,
            start=start,
            end=end,
            text=text[start:end],
            heading_path=[title],
            order=len(spans),
        )
        spans.append(span)
        return span.id

    top = add("document", 0, len(text), None)
    section = add("section", 0, len(text), top)
    for (start, end), bounds in layout:
        paragraph = add("paragraph", start, end, section)
        for s, e in bounds:
            add("sentence", s, e, paragraph)
    doc = Document(
        id=doc_id, collection=C, title=title, source=f"/tmp/{doc_id}", content_hash=f"{doc_id}-{version}", text=text
    )
    return doc, spans


@pytest.fixture
def index(tmp_path):
    graph = GraphIndex(tmp_path / "graph.sqlite3")
    yield graph
    graph.close()


def edges(index: GraphIndex, kind: str | None = None) -> set[tuple[str, str, str]]:
    return {(u, v, k) for u, v, k in index.graph(C).edges(data="kind") if kind is None or k == kind}


def rows_of(index: GraphIndex, doc_id: str) -> list[tuple]:
    return index._query(
        "SELECT row_id, src, dst, kind, weight FROM edges WHERE collection = ? AND doc_id = ? ORDER BY row_id",
        (C, doc_id),
    )


def nodes_of_doc(index: GraphIndex, doc_id: str) -> set[str]:
    return {n for n in index.graph(C) if n == f"doc:{doc_id}" or n.startswith(f"span:{doc_id}#")}


# -- the entity rule -------------------------------------------------------------------------------
def test_capitalized_phrases_are_entities_in_order_of_appearance():
    text = "The film stars Johnny Depp as Ed Wood, with Bela Lugosi played by Martin Landau."
    assert extract_entities(text) == ["johnny depp", "ed wood", "bela lugosi", "martin landau"]


def test_connectors_join_capitalized_words_only_between_them():
    assert extract_entities("She taught at the University of the Arts in Leipzig.") == [
        "university of the arts",
        "leipzig",
    ]
    assert extract_entities("Tim Burton of the studio left.") == ["tim burton"]


def test_and_yields_the_whole_run_and_each_side():
    assert extract_entities("Were Scott Derrickson and Ed Wood of the same nationality?") == [
        "scott derrickson and ed wood",
        "scott derrickson",
        "ed wood",
    ]


def test_sentence_initial_stopwords_are_not_entities():
    assert extract_entities("After the war, He moved to Paris. Which city? It was Paris.") == ["paris"]
    assert extract_entities("The Beatles were from Liverpool.") == ["beatles", "liverpool"]


def test_initials_abbreviations_digits_and_possessives():
    assert extract_entities("J. R. R. Tolkien taught in St. Louis on Apollo 11.") == [
        "j r r tolkien",
        "st louis",
        "apollo 11",
    ]
    assert extract_entities("He chaired Nelson Rockefeller's Committee.") == ["nelson rockefeller", "committee"]
    assert extract_entities("He succeeded Sir Alex Ferguson.") == ["sir alex ferguson", "alex ferguson"]


def test_known_titles_match_case_insensitively_with_or_without_their_qualifier():
    titles = ["Ed Wood (film)", "Woodson, Arkansas", "Deliver Us from Evil (2014 film)"]
    assert extract_entities("a biopic of ed wood set near Woodson, Arkansas", titles) == [
        "ed wood film",
        "woodson",
        "woodson arkansas",
        "arkansas",
    ]
    assert "deliver us from evil 2014 film" in extract_entities("He wrote Deliver Us from Evil.", titles)
    assert extract_entities("Ed Wood directed it.", titles) == ["ed wood", "ed wood film"]


def test_a_one_word_title_matches_only_when_capitalized_and_stopword_titles_never():
    titles = ["Sinister (film)", "It"]
    assert extract_entities("a sinister plot", titles) == []
    assert extract_entities("Sinister is a horror film.", titles) == ["sinister", "sinister film"]
    assert extract_entities("It was it.", titles) == []


def test_normalization_folds_case_accents_possessives_and_a_leading_the():
    assert normalize_entity("  The Beatles' ") == "beatles"
    assert normalize_entity("Amélie (film)") == "amelie film"
    assert normalize_entity("Ed Wood's") == "ed wood"
    assert normalize_entity("Tunnels &amp; Trolls") == normalize_entity("Tunnels & Trolls") == "tunnels trolls"
    assert normalize_entity("The") == "the"


# -- structure --------------------------------------------------------------------------------------
def test_spans_point_to_their_parent_and_next_sibling_and_top_spans_to_the_document(index):
    doc, spans = make_doc("a", "Alpha", [["One here.", "Two here."], ["Three here."]])
    index.update_document(C, doc, spans)
    assert edges(index, "parent") == {
        ("span:a#0", "doc:a", "parent"),
        ("span:a#1", "span:a#0", "parent"),
        ("span:a#1", "doc:a", "parent"),
        ("span:a#2", "span:a#1", "parent"),
        ("span:a#3", "span:a#2", "parent"),
        ("span:a#4", "span:a#2", "parent"),
        ("span:a#5", "span:a#1", "parent"),
        ("span:a#6", "span:a#5", "parent"),
    }
    # siblings of the same granularity under the same parent, in order; none across parents
    assert edges(index, "next") == {("span:a#2", "span:a#5", "next"), ("span:a#3", "span:a#4", "next")}
    kinds = dict(index.graph(C).nodes(data="kind"))
    assert kinds["doc:a"] == "doc" and kinds["span:a#3"] == "span" and kinds["ent:alpha"] == "entity"


def test_only_paragraphs_sentences_rows_and_the_document_title_mention_entities(index):
    doc, spans = make_doc("a", "Alpha Centauri", [["Bob Marley sang."]])
    index.update_document(C, doc, spans)
    assert edges(index, "mentions") == {
        ("doc:a", "ent:alpha centauri", "mentions"),
        ("span:a#2", "ent:bob marley", "mentions"),
        ("span:a#3", "ent:bob marley", "mentions"),
    }
    assert index.entities_of(C, "a#3") == ["bob marley"] and index.entities_of(C, "a#1") == []


def test_a_row_mentions_the_entities_of_its_cells_not_of_its_header(index):
    doc, spans = make_doc("t", "Capitals", [["France | Paris"]])
    row = spans[2]
    spans[2] = Span(
        id=row.id,
        doc_id="t",
        parent_id=row.parent_id,
        granularity="row",
        start=row.start,
        end=row.end,
        text=row.text,
        header="Country | Capital",
        order=row.order,
    )
    index.update_document(C, doc, spans[:3])
    assert index.entities_of(C, "t#2") == ["france", "paris"]


def test_two_documents_mentioning_one_entity_are_two_hops_apart_through_it(index):
    index.update_document(C, *make_doc("a", "Alpha", [["Bob Marley sang in Kingston."]]))
    index.update_document(C, *make_doc("b", "Beta", [["Later Bob Marley toured."]]))
    assert index.neighbours(C, "a#2", {"mentions"}, hops=1) == {}
    assert index.neighbours(C, "a#2", {"mentions"}, hops=2) == {"a#3": 2, "b#2": 2, "b#3": 2}
    structure = index.neighbours(C, "a#3", {"parent", "next"}, hops=2)
    assert structure == {"a#1": 2, "a#2": 1} and not any(s.startswith("b#") for s in structure)
    with pytest.raises(ValueError, match="unknown edge kinds"):
        index.neighbours(C, "a#2", {"mention"})


def test_a_paragraph_naming_another_documents_title_reaches_it_through_the_title_entity(index):
    index.update_document(C, *make_doc("film", "Ed Wood (film)", [["It is a film by Tim Burton."]]))
    index.update_document(C, *make_doc("town", "Woodson", [["The namesake is ed wood."]]))
    assert "ed wood film" in index.entities_of(C, "town#2")
    # paragraph -> ent:ed wood film -> doc:film -> section -> paragraph
    assert index.neighbours(C, "town#2", {"mentions", "parent"}, hops=4)["film#2"] == 4


def test_hub_entities_are_not_traversed(tmp_path):
    index = GraphIndex(tmp_path / "graph.sqlite3", max_entity_degree=3)
    try:
        for name in "abc":
            index.update_document(C, *make_doc(name, name.upper() + "x", [["They met in Paris."]]))
        assert index.graph(C).in_degree("ent:paris") == 6 > index.max_entity_degree
        assert index.neighbours(C, "a#2", {"mentions"}, hops=2) == {}
        index.max_entity_degree = 6
        assert set(index.neighbours(C, "a#2", {"mentions"}, hops=2)) == {"a#3", "b#2", "b#3", "c#2", "c#3"}
    finally:
        index.close()


# -- persistence and incremental writes ------------------------------------------------------------------
def test_the_graph_survives_a_restart(tmp_path):
    path = tmp_path / "graph.sqlite3"
    first = GraphIndex(path)
    first.update_document(C, *make_doc("a", "Alpha", [["Bob Marley sang."], ["In Kingston."]]))
    first.update_document(C, *make_doc("b", "Beta", [["Bob Marley toured."]]), similar={"b#2": [("a#5", 0.8)]})
    before = sorted(first.graph(C).edges(data=True, keys=True))
    first.close()
    second = GraphIndex(path)
    try:
        assert sorted(second.graph(C).edges(data=True, keys=True)) == before
        assert second.neighbours(C, "b#2", {"similar"}) == {"a#5": 1}
        assert second.stats(C)["edges"] == {"mentions": 8, "next": 1, "parent": 12, "similar": 1}
    finally:
        second.close()


def test_updating_a_document_leaves_nothing_of_its_old_version_and_touches_no_other_document(index):
    index.update_document(C, *make_doc("a", "Alpha", [["Victor Hugo lived in Paris."], ["Then Guernsey."]]))
    index.update_document(
        C, *make_doc("b", "Beta", [["Victor Hugo wrote in Brussels."]]), similar={"b#2": [("a#5", 0.9), ("a#2", 0.7)]}
    )
    index.update_document(C, *make_doc("c", "Gamma", [["Berlin is far."]]))
    b_own_rows = [r for r in rows_of(index, "b") if r[3] != "similar"]
    c_rows = rows_of(index, "c")
    generation = index.generation(C)

    index.update_document(C, *make_doc("a", "Alpha", [["Now it is about London."]], version="v2"))
    assert index.generation(C) == generation + 1
    graph = index.graph(C)
    assert nodes_of_doc(index, "a") == {"doc:a", "span:a#0", "span:a#1", "span:a#2", "span:a#3"}
    assert "ent:paris" not in graph and "ent:guernsey" not in graph
    assert "ent:victor hugo" in graph  # b still mentions it
    # b's similar edges pointed into a's old version: gone; b keeps its own edges
    assert edges(index, "similar") == set()
    assert rows_of(index, "b") == b_own_rows  # same rows, same rowids
    assert rows_of(index, "c") == c_rows
    assert index.entities_of(C, "a#2") == ["london"]


def test_first_indexing_or_reindexing_an_unchanged_document_keeps_the_similar_edges_into_it(index):
    # b is indexed first, with neighbours in a (already in the span store, not yet in the graph)
    index.update_document(C, *make_doc("b", "Beta", [["Rome."]]), similar={"b#2": [("a#2", 0.9)]})
    index.update_document(C, *make_doc("a", "Alpha", [["Paris."]]))
    index.update_document(C, *make_doc("a", "Alpha", [["Paris."]]))
    assert edges(index, "similar") == {("span:b#2", "span:a#2", "similar")}


def test_deleting_a_document_leaves_no_stale_node_and_removes_incoming_similar_edges(index):
    index.update_document(C, *make_doc("a", "Alpha", [["Victor Hugo lived in Paris."]]))
    index.update_document(
        C, *make_doc("b", "Beta", [["Victor Hugo wrote in Brussels."]]), similar={"b#2": [("a#2", 0.9)]}
    )
    b_rows = [r for r in rows_of(index, "b") if r[3] != "similar"]
    index.delete_document(C, "a")
    graph = index.graph(C)
    assert nodes_of_doc(index, "a") == set()
    assert "ent:paris" not in graph and "ent:alpha" not in graph and "ent:victor hugo" in graph
    assert rows_of(index, "b") == b_rows
    assert index.document_hashes(C) == {"b": "b-v1"}


def test_dropping_a_collection_empties_it_and_leaves_others(index):
    index.update_document(C, *make_doc("a", "Alpha", [["Victor Hugo lived in Paris."]]))
    index.update_document("other", *make_doc("b", "Beta", [["Victor Hugo wrote in Brussels."]]))
    assert "ent:paris" in index.graph(C)  # cached before the drop
    index.drop_collection(C)
    assert index.document_hashes(C) == {} and index.graph(C).number_of_nodes() == 0
    assert index.document_hashes("other") == {"b": "b-v1"} and "ent:brussels" in index.graph("other")


def test_similar_edges_stay_between_documents_and_start_at_the_documents_own_spans(index):
    doc, spans = make_doc("a", "Alpha", [["One.", "Two."]])
    index.update_document(C, doc, spans, similar={"a#3": [("a#4", 0.99), ("z#7", 0.5)]})
    assert edges(index, "similar") == {("span:a#3", "span:z#7", "similar")}
    assert index.graph(C)["span:a#3"]["span:z#7"][0]["weight"] == 0.5
    with pytest.raises(ValueError, match="not a span of document"):
        index.update_document(C, doc, spans, similar={"b#1": [("z#7", 0.5)]})


def test_a_failed_update_leaves_the_previous_version_in_place(index):
    doc, spans = make_doc("a", "Alpha", [["Paris."]])
    index.update_document(C, doc, spans)
    before, generation = rows_of(index, "a"), index.generation(C)
    new_doc, new_spans = make_doc("a", "Alpha", [["London."]], version="v2")
    with pytest.raises(sqlite3.IntegrityError):  # a NaN weight violates NOT NULL mid-transaction
        index.update_document(C, new_doc, new_spans, similar={"a#2": [("b#2", math.nan)]})
    assert rows_of(index, "a") == before and index.generation(C) == generation
    assert index.document_hashes(C) == {"a": "a-v1"}


def test_another_instance_sees_a_write_once_it_is_committed(tmp_path):
    writer, reader = GraphIndex(tmp_path / "g.sqlite3"), GraphIndex(tmp_path / "g.sqlite3")
    try:
        writer.update_document(C, *make_doc("a", "Alpha", [["Paris."]]))
        assert "ent:paris" in reader.graph(C)
        writer.update_document(C, *make_doc("a", "Alpha", [["London."]], version="v2"))
        assert "ent:paris" not in reader.graph(C) and "ent:london" in reader.graph(C)
        assert reader.generation(C) == writer.generation(C) == 2
    finally:
        writer.close()
        reader.close()


def test_titles_of_stored_documents_are_known_when_another_document_is_indexed(index):
    index.update_document(C, *make_doc("film", "Ed Wood (film)", [["A film."]]))
    index.update_document(C, *make_doc("x", "Xylo", [["About ed wood."]]))
    assert index.entities_of(C, "x#2") == ["ed wood film"]
    index.delete_document(C, "film")
    index.update_document(C, *make_doc("y", "Yarn", [["About ed wood."]]))
    assert index.entities_of(C, "y#2") == []
    index.update_document(
        C, *make_doc("z", "Zed", [["About deliver us from evil."]]), known_titles=["Deliver Us from Evil (2014 film)"]
    )
    assert index.entities_of(C, "z#2") == ["deliver us from evil 2014 film"]


def test_stale_and_orphan_documents_are_found_for_repair(index):
    index.update_document(C, *make_doc("a", "Alpha", [["Paris."]]))
    index.update_document(C, *make_doc("b", "Beta", [["Rome."]]))
    live = {"a": "a-v2", "b": "b-v1", "c": "c-v1"}  # a changed, c never made it into the graph
    assert index.stale_documents(C, live) == ["a", "c"]
    assert index.orphan_documents(C, {"b", "c"}) == ["a"]
    assert index.stale_documents("other", live) == ["a", "b", "c"]


# -- traversal ------------------------------------------------------------------------------------------------
def build_world(index: GraphIndex) -> None:
    index.update_document(C, *make_doc("a", "Alpha", [["Marie Curie worked in Paris."]]))
    index.update_document(C, *make_doc("b", "Beta", [["Marie Curie won a Nobel Prize."]]))
    index.update_document(
        C, *make_doc("c", "Gamma", [["Penguins live in Antarctica."]]), similar={"c#2": [("d#2", 0.9)]}
    )
    index.update_document(C, *make_doc("d", "Delta", [["Seals hunt near Antarctica."]]))


def test_personalized_pagerank_ranks_the_seeds_neighbours_above_unrelated_spans(index):
    build_world(index)
    ranked = index.personalized_pagerank(C, {"a#2": 1.0}, top=50)
    scores = dict(ranked)
    assert ranked[0][0] == "a#2"
    assert scores["b#2"] > 0 and all(not s.startswith(("c#", "d#")) for s in scores)
    assert scores["b#2"] > scores.get("b#1", 0)
    assert index.personalized_pagerank(C, {"nowhere#1": 1.0}) == []
    semantic = dict(index.personalized_pagerank(C, {"c#2": 1.0}))
    assert semantic["d#2"] > 0 and not any(s.startswith(("a#", "b#")) for s in semantic)


def test_same_input_gives_same_graph_and_same_answers_in_the_same_order(tmp_path):
    answers = []
    for run in range(2):
        index = GraphIndex(tmp_path / f"g{run}.sqlite3")
        build_world(index)
        answers.append(
            (
                list(index.graph(C).edges(data=True, keys=True)),
                list(index.graph(C).nodes(data=True)),
                list(index.neighbours(C, "a#2", {"mentions", "parent", "next"}, hops=3).items()),
                index.personalized_pagerank(C, {"a#2": 1.0, "c#2": 0.5}),
                index.stats(C),
            )
        )
        index.close()
    assert answers[0] == answers[1]
