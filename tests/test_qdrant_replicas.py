"""On Qdrant, Qdrant holds everything: spans, BM25 (sparse vectors scored with the engine's
IDF) and the graph. A spanrag process keeps no index file and no cache that another
replica's write could leave stale, so two services over one Qdrant both ingest and both
answer, with the same results. (Qdrant's local mode cannot be opened by two processes, so
the replicas here are two services sharing one client; the compose file runs the real
cluster.)"""

from __future__ import annotations

import pytest
from test_graph import make_doc

from indexing.graph import GraphIndex
from indexing.graph_qdrant import QdrantGraphIndex
from indexing.store.qdrant import QdrantStore

pytestmark = pytest.mark.slow
C = "docs"


def graph_content(index: GraphIndex) -> tuple[set, list]:
    g = index.graph(C)
    return {(n, k) for n, k in g.nodes(data="kind")}, sorted(
        (u, v, d["kind"], round(d["weight"], 6)) for u, v, d in g.edges(data=True)
    )


def test_the_graph_in_qdrant_is_the_graph_in_sqlite_after_the_same_writes(tmp_path):
    store = QdrantStore(path=tmp_path / "qdrant")
    in_qdrant = QdrantGraphIndex(store.client)
    in_sqlite = GraphIndex(tmp_path / "graph.sqlite3")
    writes = [
        ("update", make_doc("a", "Victor Hugo", [["Hugo lived in Paris.", "He wrote novels."]])),
        ("update", make_doc("b", "Les Misérables", [["A novel by Victor Hugo set in Paris."]])),
        ("update", make_doc("c", "Guernsey", [["Victor Hugo lived in exile on Guernsey."]])),
        ("similar", make_doc("b", "Les Misérables", [["A novel by Victor Hugo set in Paris."]])),
        ("update", make_doc("a", "Victor Hugo", [["Hugo moved to London."]], version="v2")),
        ("delete", make_doc("c", "Guernsey", [[]])),
    ]
    try:
        for action, (doc, spans) in writes:
            for index in (in_qdrant, in_sqlite):
                if action == "delete":
                    index.delete_document(C, doc.id)
                elif action == "similar":
                    index.update_document(C, doc, spans, similar={"b#3": [("a#3", 0.9), ("c#3", 0.8)]})
                else:
                    index.update_document(C, doc, spans)
            assert graph_content(in_qdrant) == graph_content(in_sqlite), action
        assert in_qdrant.document_hashes(C) == in_sqlite.document_hashes(C) == {"a": "a-v2", "b": "b-v1"}
        seeds = {"b#3": 1.0}
        assert in_qdrant.personalized_pagerank(C, seeds, top=8) == in_sqlite.personalized_pagerank(C, seeds, top=8)
        assert in_qdrant.begin_write(C) is False and in_qdrant.begin_write(C) is True
        in_qdrant.end_write(C)
        assert in_qdrant.begin_write(C) is False
    finally:
        in_sqlite.close()
        store.close()


@pytest.fixture(params=["client", "edge"])
def replicas(make_rag, tmp_path, request):
    """Two services over one Qdrant (one client: an in-process engine is single-process),
    on qdrant-client's local mode and on the Qdrant engine in-process (edge)."""
    if request.param == "edge":
        pytest.importorskip("qdrant_edge", reason="the edge extra is not installed")
    first = make_rag(tmp_path / "one", store="qdrant", qdrant_local_engine=request.param)
    second = make_rag(tmp_path / "two", store="qdrant", qdrant_local_engine=request.param)
    second.store.client = first.store.client
    return first, second


def test_two_services_over_one_qdrant_see_each_others_writes(replicas, tmp_path):
    first, second = replicas
    first.ingest_text(C, "tea", "Green tea is brewed at 80 degrees for two minutes.", title="Tea")
    second.ingest_text(C, "coffee", "Espresso is brewed at 93 degrees for 25 seconds.", title="Coffee")

    for service in (first, second):
        assert service.store.collection_stats(C)["documents"] == 2
        tea = service.store.lexical_search(C, "green tea", 5, "sentence")
        assert [h.span_id.split("#")[0] for h in tea][:1] == ["tea"]
        assert service.graph is not None and service.graph.document_hashes(C).keys() == {"tea", "coffee"}
    question = "How long is espresso brewed?"
    answers = [service.retrieve(C, question) for service in (first, second)]
    assert [[(i.span.id, round(i.score, 6)) for i in a.context.spans] for a in answers][0] == [
        (i.span.id, round(i.score, 6)) for i in answers[1].context.spans
    ]
    assert answers[0].context.spans[0].span.doc_id == "coffee"

    second.delete_document(C, "tea")
    assert first.store.lexical_search(C, "green tea", 5, "sentence") == []
    assert first.graph is not None and set(first.graph.document_hashes(C)) == {"coffee"}
    assert "doc:tea" not in first.graph.graph(C)


def test_a_qdrant_service_keeps_no_index_or_graph_files(replicas, tmp_path):
    first, _ = replicas
    first.ingest_text(C, "tea", "Green tea is brewed at 80 degrees for two minutes.", title="Tea")
    first.retrieve(C, "green tea")

    data_dir = tmp_path / "one"
    kept = {p.relative_to(data_dir).parts[0] for p in data_dir.rglob("*") if p.is_file()}
    assert kept <= {"qdrant"}, kept  # local mode's own folder; a server URL leaves nothing
    assert first.store._lexical == {}  # BM25 ran in the engine
