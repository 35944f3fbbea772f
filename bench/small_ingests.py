"""A collection built by many small writes, for comparing its retrieval quality with the same
collection built in one go (issue 18: segments must not change what search returns).

    .venv/bin/python -m bench.small_ingests --from .eval-data --to /tmp/small-ingests \\
        --collection eval-beir-0b1e8c439f-07db4e --docs-per-write 10
    spanrag eval --dataset beir:../shared/datasets/scifact --split train -p default \\
        --data-dir /tmp/small-ingests --out runs/scifact-train-small-ingests

Copies every document of ``--collection`` (its spans, vectors and token vectors, as
stored: nothing is encoded again) from one data directory into a fresh one,
``--docs-per-write`` documents per write, each write followed by ``refresh`` as the
service does, so the copy is searched through a base, deltas and tombstones and merged
in the background by the default merge policy. Then the sources and the graph file are
copied, so ``spanrag eval`` on the new directory finds the corpus unchanged and only asks
the questions. A few documents are written twice (replaced) and some deleted and written
again, so tombstones are part of it.

To ask the questions of the segments as the writes left them (not merged first), run the
eval with ``SPANRAG_MERGE_MIN_ROWS`` above the collection's size; ``--merge-min-rows 25000``
leaves about a sixth of SciFact in deltas, searched with the statistics of the base:

    .venv/bin/python -m bench.small_ingests --to /tmp/small-ingests-deltas --merge-min-rows 25000 \
        --collection eval-beir-0b1e8c439f-07db4e
    SPANRAG_MERGE_MIN_ROWS=1000000000 spanrag eval --dataset beir:../shared/datasets/scifact \
        --split train -p default --data-dir /tmp/small-ingests-deltas --out runs/scifact-train-small-ingests-deltas
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.results import write_result
from indexing.store.merge_policy import MergePolicy


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="source", type=Path, default=Path(".eval-data"))
    ap.add_argument("--to", type=Path, required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--docs-per-write", type=int, default=10)
    ap.add_argument(
        "--merge-min-rows",
        type=int,
        default=MergePolicy().min_rows,
        help="the copy's merge policy (default: the store's)",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench/small_ingests.json"))
    args = ap.parse_args(argv)

    from indexing.store.sqlite_faiss import SqliteFaissStore

    source = SqliteFaissStore(args.source)
    shutil.rmtree(args.to, ignore_errors=True)
    target = SqliteFaissStore(args.to, merge_policy=MergePolicy(min_rows=args.merge_min_rows))
    c = args.collection
    stats = source.collection_stats(c)
    target.create_collection(c, stats["model"], stats["dim"])
    token_model = source.token_model(c)
    doc_ids = sorted(source.document_hashes(c))

    def copy(ids: list[str]) -> None:
        items = []
        for doc_id in ids:
            doc = source.get_document(c, doc_id)
            spans = source.document_spans(c, doc_id)
            items.append((doc, spans, source.get_vectors(c, [s.id for s in spans])))
        target.replace_documents(c, items)
        tokens = [pair for pairs in source.document_token_vectors(c, ids).values() for pair in pairs]
        if tokens:
            target.put_token_vectors(c, tokens, token_model)
        target.refresh(c)

    started = time.perf_counter()
    writes = 0
    for i in range(0, len(doc_ids), args.docs_per_write):
        copy(doc_ids[i : i + args.docs_per_write])
        writes += 1
        if i and i % (50 * args.docs_per_write) == 0:
            again = doc_ids[i - 40 : i - 30]  # replaced: new rows, the old ones tombstoned
            copy(again)
            target.delete_documents(c, again[:5])
            copy(again[:5])
            writes += 3
    for record in source.list_sources(c):
        target.put_source(c, record)
    shutil.copy(args.source / "graph.sqlite3", args.to / "graph.sqlite3")
    freshness = target.freshness(c)
    seconds = time.perf_counter() - started
    out = {
        "collection": c,
        "documents": len(doc_ids),
        "writes": writes,
        "docs_per_write": args.docs_per_write,
        "seconds": round(seconds, 1),
        "freshness_at_the_end": freshness,
    }
    source.close()
    target.close()
    return write_result(out, args.out)


if __name__ == "__main__":
    main()
