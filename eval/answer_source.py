"""Where the answer in a context came from: from a run file (``spanrag eval ... -p NAME``)
of a dataset with context answers (HotpotQA, TAT-QA), answer in context over the whole
context beside answer in context over the pieces of the gold documents only. A context
that holds many similar pieces of other documents (TAT-QA's line items of other reports)
can match a short answer by chance; the second number cannot.

    python -m eval.answer_source runs/tatqa-dev-tables/run.default.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from eval import metrics as M


def answer_sources(run: Mapping) -> dict[str, float]:
    """``answer_in_context`` and ``answer_in_gold_documents`` over the questions that have
    context answers, and how many there are."""
    whole = gold_only = 0.0
    n = 0
    for q in run["queries"]:
        gold = q["gold"]
        answers = gold.get("context_answers")
        if answers is None:
            continue
        n += 1
        require_all = bool(gold.get("require_all"))
        context = q["context"]
        whole += M.answer_in_context("\n".join(c["text"] for c in context), answers, require_all)
        in_gold = [c["text"] for c in context if c["doc_id"] in gold.get("qrels", {})]
        gold_only += M.answer_in_context("\n".join(in_gold), answers, require_all)
    return {
        "questions": n,
        "answer_in_context": round(whole / n, 4) if n else 0.0,
        "answer_in_gold_documents": round(gold_only / n, 4) if n else 0.0,
    }


def main(paths: list[str]) -> None:
    if not paths:
        raise SystemExit("usage: python -m eval.answer_source RUN.json [RUN.json ...]")
    print("| run | questions | answer in context | from the gold documents only |")
    print("|---|---:|---:|---:|")
    for path in paths:
        found = answer_sources(json.loads(Path(path).read_text(encoding="utf-8")))
        print(
            f"| {path} | {found['questions']} | {found['answer_in_context']:.3f} "
            f"| {found['answer_in_gold_documents']:.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
