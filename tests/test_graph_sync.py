"""After an ingest the graph looks at the documents that ingest changed, not at every
document of the collection; a write that never finished (a crash between the span store
and the graph) makes the next ingest compare them all."""

from __future__ import annotations

import pytest

from indexing.graph import GraphIndex

C = "wiki"

TEXTS = {
    "film": "# Big Stone Gap (film)\n\nBig Stone Gap is a 2014 American romantic comedy film directed by Adriana Trigiani.\n",
    "author": "# Adriana Trigiani\n\nAdriana Trigiani is an American author and film director based in New York City.\n",
    "lake": "# Lake Placid\n\nLake Placid is a village in the Adirondack Mountains of New York.\n",
    "olympics": "# Winter Olympics\n\nThe Winter Olympics were held at Lake Placid in New York in 1932 and 1980.\n",
}


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "wiki"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / f"{name}.md").write_text(text)
    return folder


@pytest.fixture
def hash_lookups(monkeypatch):
    """Every ``GraphIndex.document_hashes`` call: the doc ids asked for (None: all)."""
    asked: list[list[str] | None] = []
    real = GraphIndex.document_hashes

    def recording(self, collection, doc_ids=None):
        asked.append(None if doc_ids is None else list(doc_ids))
        return real(self, collection, doc_ids)

    monkeypatch.setattr(GraphIndex, "document_hashes", recording)
    return asked


def test_an_ingest_of_one_changed_file_looks_only_at_that_document(make_rag, tmp_path, folder, hash_lookups):
    rag = make_rag(tmp_path / "data")
    rag.ingest_paths(C, [folder])
    hash_lookups.clear()

    (folder / "lake.md").write_text(TEXTS["lake"] + "\nIt lies near Saranac Lake.\n")
    report = rag.ingest_paths(C, [folder])

    assert report.updated == 1 and report.unchanged == 3
    assert hash_lookups and None not in hash_lookups
    assert {d for ids in hash_lookups for d in ids} == {"wiki/lake.md"}


def test_a_write_cut_short_makes_the_next_ingest_compare_every_document(
    make_rag, tmp_path, folder, hash_lookups, monkeypatch
):
    rag = make_rag(tmp_path / "data")
    rag.ingest_paths(C, [folder])
    film = next(d for s in rag.store.list_sources(C) for d in s.doc_ids if d.endswith("film.md"))

    def power_cut(*args, **kwargs):
        raise KeyboardInterrupt("killed after the span store's commit")

    (folder / "film.md").write_text(TEXTS["film"] + "\nIt was filmed in Virginia.\n")
    with monkeypatch.context() as patch:
        patch.setattr(rag.ingestor, "sync_graph", power_cut)
        with pytest.raises(KeyboardInterrupt):
            rag.ingest_paths(C, [folder])
    assert rag.graph.stale_documents(C, rag.store.document_hashes(C)) == [film]

    hash_lookups.clear()
    report = rag.ingest_paths(C, [folder])  # nothing changed on disk since

    assert report.spans == 0 and None in hash_lookups  # the whole collection was compared
    assert rag.graph.stale_documents(C, rag.store.document_hashes(C)) == []
