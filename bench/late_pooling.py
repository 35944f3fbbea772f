"""Late pooling against a pass per span: how close the pooled vectors are, per granularity,
and how many word pieces reach the encoder.

    .venv/bin/python -m bench.late_pooling --scifact-docs 300 --out docs/results/late_pooling.json

For each document (the first ``--scifact-docs`` SciFact abstracts, and the ten long
Wikipedia articles of ``wiki10``) the span tree is built as ingest builds it; every span
that has no table header gets two vectors, its own pass (``Encoder.encode``) and late
pooling (``Encoder.encode_late``), and the cosine between them is reported per
granularity (mean and 10th percentile). Quality is measured by ``spanrag eval`` with
``SPANRAG_LATE_POOLING=true`` (README: Late pooling).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from indexing.embed import Encoder, distinct_texts
from indexing.parsers import parse_text
from indexing.parsers.jsonl import parse_record
from indexing.sentences import SentenceSplitter
from indexing.span_tree import build_span_tree

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


class PieceCounter(Encoder):
    """The model, counting word pieces that reach its forward pass."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder._model, encoder.name, encoder.batch_size)
        self.pieces = 0

    def _hidden_states(self, ids):
        self.pieces += sum(len(i) - 2 for i in ids)
        return super()._hidden_states(ids)


def documents(scifact_docs: int) -> dict[str, list]:
    with (DATASETS / "scifact" / "corpus.jsonl").open() as lines:
        scifact = [parse_record(json.loads(line)) for line, _ in zip(lines, range(scifact_docs), strict=False)]
    articles = json.loads((DATASETS / "wiki10" / "articles.json").read_text())
    wiki = [parse_text(a["text"], title=a["title"]) for a in articles]
    return {"scifact": scifact, "wiki10": wiki}


def compare(encoder: Encoder, parsed_docs: list) -> dict:
    splitter = SentenceSplitter()
    trees = [build_span_tree(f"d{i}", p, encoder.count_tokens, splitter) for i, p in enumerate(parsed_docs)]
    spans = [[s for s in tree if not s.header] for tree in trees]
    counter = PieceCounter(encoder)
    started = time.perf_counter()
    late = counter.encode_late([p.text for p in parsed_docs], [[(s.start, s.end) for s in t] for t in spans])
    late_s, late_pieces = time.perf_counter() - started, counter.pieces
    counter.pieces = 0
    texts = [s.context_text for t in spans for s in t]
    started = time.perf_counter()
    own = counter.encode(texts)
    own_s = time.perf_counter() - started
    cosines: dict[str, list[float]] = defaultdict(list)
    row = 0
    for tree, pooled in zip(spans, late, strict=True):
        missing = set(pooled.missing)
        for position, span in enumerate(tree):
            if position not in missing:
                cosines[span.granularity].append(float(pooled.vectors[position] @ own[row]))
            row += 1
    return {
        "documents": len(parsed_docs),
        "spans": len(texts),
        "distinct_texts": len(distinct_texts(texts)[0]),
        "pieces_own_pass": counter.pieces,
        "pieces_late": late_pieces,
        "seconds_own_pass": round(own_s, 2),
        "seconds_late": round(late_s, 2),
        "cosine": {
            g: {"n": len(v), "mean": round(float(np.mean(v)), 4), "p10": round(float(np.percentile(v, 10)), 4)}
            for g, v in cosines.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact-docs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("docs/results/late_pooling.json"))
    args = parser.parse_args()
    encoder = Encoder.load("all-MiniLM-L6-v2", "cpu")
    encoder.encode(["warm up"])
    results = {
        "window": encoder.max_tokens - 2,
        "overlap": Encoder.LATE_OVERLAP,
        "corpora": {name: compare(encoder, docs) for name, docs in documents(args.scifact_docs).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
