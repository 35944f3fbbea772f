"""How precise could an extractive citer be with the scores a run already has? From a run
file of a bubble pipeline (``spanrag eval ... -p default``): the share of the context's
pieces that are gold evidence sentences, and the cited precision and recall of citing the
top 1, 2 or 3 pieces by each score the bubble's trace keeps (cosine with the question,
the bubble's gain, and cosine + 2 × gain / best gain as the extractive generator ranks).

    python -m eval.citation_ceiling runs/hotpotqa-dev/run.default.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from eval import metrics as M

Piece = dict


def pieces_of(run: Mapping) -> list[tuple[list[Piece], int]]:
    """Per question with gold sentences: its context pieces (scores from the trace, whether
    gold) and how many gold sentences it has."""
    out = []
    for q in run["queries"]:
        gold = [M.EvidenceUnit.from_dict(u) for u in q["gold"].get("evidence_sentences", [])]
        if not gold:
            continue
        taken = {t[0]: t[4] for t in q["trace"] if t[1] == "taken"}
        pieces = [
            {
                "cosine": taken.get(c["span_id"], {}).get("relevance", 0.0),
                "gain": taken.get(c["span_id"], {}).get("gain", 0.0),
                "gold": any(M.unit_found(u, [c]) for u in gold),
            }
            for c in q["context"]
        ]
        out.append((pieces, len(gold)))
    return out


def cite_top(
    questions: list[tuple[list[Piece], int]], score: Callable[[Piece, float], float], n: int, threshold: float = 0.0
):
    """Cited precision and recall of citing each question's top ``n`` pieces by ``score``
    (those scoring at least ``threshold`` × the best, as the extractive generator keeps)."""
    precision, recall = [], []
    for pieces, n_gold in questions:
        best_gain = max((p["gain"] for p in pieces), default=0.0) or 1.0
        ranked = sorted(pieces, key=lambda p: -score(p, best_gain))[:n]
        best = score(ranked[0], best_gain) if ranked else 0.0
        chosen = [p for p in ranked if best <= 0 or score(p, best_gain) >= threshold * best]
        hits = sum(p["gold"] for p in chosen)
        if chosen:
            precision.append(hits / len(chosen))
        recall.append(hits / n_gold)
    return sum(precision) / max(len(precision), 1), sum(recall) / max(len(recall), 1)


def generator_score(weight: float) -> Callable[[Piece, float], float]:
    """How ``ExtractiveGenerator`` ranks a piece: cosine + weight × gain / best gain."""
    return lambda p, best: p["cosine"] + weight * p["gain"] / best


WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)  # the grid ExtractiveOptions.selector_weight was picked from

SCORES: dict[str, Callable[[Piece, float], float]] = {
    "cosine": lambda p, best: p["cosine"],
    "gain": lambda p, best: p["gain"],
    "cosine + 2 gain/best": generator_score(2.0),
}


def main(argv: list[str] | None = None) -> None:
    for path in argv if argv is not None else sys.argv[1:]:
        questions = pieces_of(json.loads(Path(path).read_text(encoding="utf-8")))
        total = sum(len(p) for p, _ in questions)
        gold = sum(x["gold"] for p, _ in questions for x in p)
        print(f"{path}: {len(questions)} questions; {gold / max(total, 1):.3f} of context pieces are gold")
        print("| score | top 1 P / R | top 2 P / R | top 3 P / R |\n|---|---|---|---|")
        for name, score in SCORES.items():
            cells = [cite_top(questions, score, n) for n in (1, 2, 3)]
            print(f"| {name} | " + " | ".join(f"{p:.3f} / {r:.3f}" for p, r in cells) + " |")
        print("\nAs the extractive generator cites (top 3 at ≥ 0.8 of the best), by selector_weight:")
        print("| selector_weight | P / R |\n|---:|---|")
        for weight in WEIGHTS:
            p, r = cite_top(questions, generator_score(weight), 3, 0.8)
            print(f"| {weight:g} | {p:.3f} / {r:.3f} |")


if __name__ == "__main__":
    main()
