"""Write a BEIR-layout slice of a BEIR folder: the first N queries of a split, the documents
they judge relevant, and a deterministic sample of other documents up to a corpus size.

    python scripts/make-beir-slice.py ../shared/datasets/scifact .eval-slices/scifact-1k \\
        --split train --queries 100 --docs 1000

Used for store parity (qdrant-client's local mode searches by brute force, so the whole
SciFact corpus with its token vectors is slow there). Qrels and evidence files of the split
are filtered to the kept queries.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    qrels_path = args.source / "qrels" / f"{args.split}.tsv"
    lines = qrels_path.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line.strip()]
    judged = list(dict.fromkeys(r[0] for r in rows))[: args.queries]
    keep_q = set(judged)
    relevant = {r[1] for r in rows if r[0] in keep_q}

    corpus = [json.loads(line) for line in (args.source / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    others = [r["_id"] for r in corpus if r["_id"] not in relevant]
    random.Random(args.seed).shuffle(others)
    keep_d = relevant | set(others[: max(0, args.docs - len(relevant))])

    (args.target / "qrels").mkdir(parents=True, exist_ok=True)
    with (args.target / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for record in corpus:
            if record["_id"] in keep_d:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    queries_path = args.source / f"queries.{args.split}.jsonl"
    if not queries_path.is_file():
        queries_path = args.source / "queries.jsonl"
    with (args.target / queries_path.name).open("w", encoding="utf-8") as f:
        for line in queries_path.open(encoding="utf-8"):
            if line.strip() and str(json.loads(line)["_id"]) in keep_q:
                f.write(line if line.endswith("\n") else line + "\n")
    with (args.target / "qrels" / qrels_path.name).open("w", encoding="utf-8") as f:
        f.write(header + "\n" + "".join("\t".join(r) + "\n" for r in rows if r[0] in keep_q))
    evidence = args.source / "qrels" / f"{args.split}.evidence.jsonl"
    if evidence.is_file():
        with (args.target / "qrels" / evidence.name).open("w", encoding="utf-8") as f:
            for line in evidence.open(encoding="utf-8"):
                if line.strip() and str(json.loads(line)["query-id"]) in keep_q:
                    f.write(line if line.endswith("\n") else line + "\n")
    print(f"{len(keep_q)} queries, {len(keep_d)} documents ({len(relevant)} judged relevant) -> {args.target}")


if __name__ == "__main__":
    main()
