"""The graph's semantic-neighbour search at collection scale: one FAISS call per batch of
documents against one call per span (the path before issue 17), on an existing collection.

    .venv/bin/python -m bench.graph_sync --data-dir .eval-data --collection eval-beir-0b1e8c439f-07db4e

Each run builds the graph of every document of the collection into a fresh graph file
(``Ingestor.sync_graph`` with no document list, as a repair does) and reports its seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.results import write_result


def build(data_dir: Path, collection: str, one_by_one: bool) -> dict:
    from indexing.graph import GraphIndex
    from indexing.store.dense_index import DenseIndex
    from service.engine import RagService
    from service.settings import Settings

    rag = RagService(Settings(data_dir=data_dir, graph=False))
    rag.store.refresh(collection)
    batched = DenseIndex.search_many
    if one_by_one:

        def per_query(self, queries, k, granularities=None, rows_by_granularity=None):
            return [batched(self, q.reshape(1, -1), k, granularities, rows_by_granularity)[0] for q in queries]

        DenseIndex.search_many = per_query  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp, rag.threads.bulk_work():
            graph = GraphIndex(Path(tmp) / "graph.sqlite3")
            started = time.perf_counter()
            documents = rag.ingestor.sync_graph(collection, graph)
            seconds = time.perf_counter() - started
            edges = graph.stats(collection)["edges"]
            graph.close()
    finally:
        DenseIndex.search_many = batched  # type: ignore[method-assign]
        rag.close()
    return {"documents": documents, "seconds": round(seconds, 2), "edges": edges}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".eval-data"))
    ap.add_argument("--collection", required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/graph_sync.json"))
    args = ap.parse_args(argv)
    out = {
        "batched": build(args.data_dir, args.collection, one_by_one=False),
        "one search per span": build(args.data_dir, args.collection, one_by_one=True),
    }
    out["speedup"] = round(out["one search per span"]["seconds"] / out["batched"]["seconds"], 2)
    out["same_edges"] = out["batched"]["edges"] == out["one search per span"]["edges"]
    return write_result(out, args.out)


if __name__ == "__main__":
    main()
