"""One small document written into a large collection, and taken out again: where the
time goes (the issue-17 target: under 2 s plus the document's own encoding).

    .venv/bin/python -m bench.small_write --data-dir .eval-data --collection eval-beir-0b1e8c439f-07db4e

The document is added with ``RagService.ingest_text`` and deleted afterwards, so the
collection ends as it began. Stages are timed as in ``bench.ingest_throughput``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.ingest_throughput import STAGES, timed_write_path
from bench.results import write_result

TEXT = (
    "Green tea is brewed at 80 degrees Celsius for two minutes. Boiling water makes it bitter.\n\n"
    "Black tea takes boiling water and four minutes. Oolong sits between the two."
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".eval-data"))
    ap.add_argument("--collection", required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/small_write.json"))
    args = ap.parse_args(argv)

    from service.engine import RagService
    from service.settings import Settings

    clock = timed_write_path()

    rag = RagService(Settings(data_dir=args.data_dir))
    rag.encoder.encode(["load the model"])
    rag.store.refresh(args.collection)  # indexes loaded, as in a running service
    spans = rag.store.collection_stats(args.collection)["spans"]
    clock.seconds.clear()
    started = time.perf_counter()
    report = rag.ingest_text(args.collection, "bench-small-write", TEXT, title="Brewing tea")
    seconds = time.perf_counter() - started
    stages = {s: round(clock.seconds.get(s, 0.0), 3) for s in STAGES if s in clock.seconds}
    other = round(seconds - sum(clock.seconds.values()), 3)
    rag.delete_document(args.collection, "bench-small-write")
    rag.close()
    out = {
        "collection_spans": spans,
        "document_spans": report.spans,
        "seconds": round(seconds, 3),
        "stages": stages,
        "other": other,
    }
    return write_result(out, args.out)


if __name__ == "__main__":
    main()
