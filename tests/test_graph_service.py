"""The graph index as the service keeps it: built at ingest, updated and deleted per
document, surviving a restart, and used by the bubble to reach bridge documents."""

import pytest

C = "wiki"


@pytest.fixture(params=["sqlite_faiss", "qdrant"])
def backend(request) -> str:
    """Every graph test runs on both store backends (the graph file is the same for both)."""
    return request.param


FILM = "Big Stone Gap is a 2014 American romantic comedy film directed by Adriana Trigiani. It was filmed in Virginia."
AUTHOR = "Adriana Trigiani is an American author and film director. She is based in Greenwich Village, New York City."
OTHER = "Lake Placid is a village in the Adirondack Mountains of New York. It hosted the Winter Olympics."


def write(folder, name, title, text):
    (folder / f"{name}.md").write_text(f"# {title}\n\n{text}\n")


def corpus(tmp_path):
    folder = tmp_path / "wiki"
    folder.mkdir()
    write(folder, "film", "Big Stone Gap (film)", FILM)
    write(folder, "author", "Adriana Trigiani", AUTHOR)
    write(folder, "lake", "Lake Placid", OTHER)
    return folder


def doc(rag, name):
    """A file's document id (its absolute path here, outside the working directory)."""
    return next(d for source in rag.store.list_sources(C) for d in source.doc_ids if d.endswith(f"/{name}.md"))


def paragraph_of(rag, doc_id):
    return next(s.id for s in rag.store.document_spans(C, doc_id) if s.granularity == "paragraph")


def nodes_of(rag, doc_id):
    graph = rag.graph.graph(C)
    return {n for n in graph if n == f"doc:{doc_id}" or n.startswith(f"span:{doc_id}#")}


def test_ingest_builds_the_graph_and_a_restart_reads_it_back(make_rag, tmp_path, backend):
    folder = corpus(tmp_path)
    rag = make_rag(tmp_path / "data", store=backend)
    rag.ingest_paths(C, [folder])
    stats = rag.graph.stats(C)
    assert stats["documents"] == 3 and stats["edges"]["mentions"] > 0 and stats["edges"]["parent"] > 0
    assert "adriana trigiani" in rag.graph.entities_of(C, paragraph_of(rag, doc(rag, "film")))
    edges = sorted(rag.graph.graph(C).edges(keys=False))
    rag.close()  # the process ends (Qdrant's local mode holds its folder until then)
    again = make_rag(tmp_path / "data", store=backend)  # a new process on the same data directory
    assert again.graph.stats(C) == stats
    assert sorted(again.graph.graph(C).edges(keys=False)) == edges


def test_updating_a_document_leaves_nothing_of_its_old_version(make_rag, tmp_path, backend):
    folder = corpus(tmp_path)
    rag = make_rag(tmp_path / "data", store=backend)
    rag.ingest_paths(C, [folder])
    lake = "span:" + paragraph_of(rag, doc(rag, "lake"))
    before_other = sorted(rag.graph.graph(C).edges(lake, keys=True, data=True))
    write(folder, "author", "Adriana Trigiani", "Adriana Trigiani writes novels. She lives in Manhattan.")
    rag.ingest_paths(C, [folder])
    graph = rag.graph.graph(C)
    assert "ent:greenwich village" not in graph  # only the old version mentioned it
    spans = {s.id for s in rag.store.document_spans(C, doc(rag, "author"))}
    assert {n[5:] for n in nodes_of(rag, doc(rag, "author")) if n.startswith("span:")} <= spans
    assert "ent:manhattan" in graph
    assert sorted(graph.edges(lake, keys=True, data=True)) == before_other  # untouched documents keep theirs


def test_deleting_a_document_removes_its_nodes_edges_and_orphaned_entities(make_rag, tmp_path, backend):
    folder = corpus(tmp_path)
    rag = make_rag(tmp_path / "data", store=backend)
    rag.ingest_paths(C, [folder])
    doc_id_author = doc(rag, "author")
    assert rag.delete_document(C, doc_id_author)
    graph = rag.graph.graph(C)
    assert not nodes_of(rag, doc_id_author)
    assert "ent:greenwich village" not in graph
    gone = doc_id_author + "#"
    assert not any(v.startswith("span:" + gone) for _, v in graph.edges())
    assert "ent:adriana trigiani" in graph  # the film still mentions her


def test_a_graph_left_behind_by_a_crash_is_repaired_on_the_next_ingest(make_rag, tmp_path, backend):
    folder = corpus(tmp_path)
    rag = make_rag(tmp_path / "data", store=backend)
    rag.ingest_paths(C, [folder])
    rag.graph.delete_document(C, doc(rag, "film"))  # as if the process died before the graph write
    assert not nodes_of(rag, doc(rag, "film"))
    rag.ingest_paths(C, [folder])  # files unchanged: nothing re-embedded, graph repaired
    assert nodes_of(rag, doc(rag, "film"))


def test_the_bubble_reaches_the_document_an_anchor_names(make_rag, tmp_path, backend):
    folder = corpus(tmp_path)
    rag = make_rag(tmp_path / "data", store=backend)
    rag.ingest_paths(C, [folder])
    question = "Where is the director of the romantic comedy Big Stone Gap based?"
    result = rag.retrieve(C, question, pipeline="bubble", overrides={"bubble_anchor_docs": 1})
    assert result.ranked_documents[0].doc_id == doc(rag, "film")
    bridged = {t.span_id for t in result.context.trace if t.source == "graph"}
    assert bridged and all(s.startswith(doc(rag, "author") + "#") for s in bridged)
    assert any("Greenwich Village" in item.text for item in result.context.spans)
    alone = rag.retrieve(C, question, pipeline="bubble", overrides={"bubble_anchor_docs": 1, "bubble_graph_docs": 0})
    assert not any(t.source == "graph" for t in alone.context.trace)
