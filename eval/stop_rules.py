"""Would a calibrated stopping rule spend fewer tokens than the bubble's relative floor?

Issue 19 asks the default to stop growing its context when the next piece is worth less
than what it costs, and names three kinds of rule: question terms covered, a score gap,
or a *calibrated* rule. The bubble's rule is the score gap (``bubble_relative_min_gain``:
stop below a share of the first piece's gain). This module replays both on the run files
of a pipeline that fills its budget (``default-full-budget``), whose traces keep every
taken piece in the order taken with its score components:

* **relative floor** at ratio ``r``: the taken pieces up to the first whose gain is below
  ``r`` × the first piece's (the bubble's rule without the extra piece it still gives each
  anchor or bridged document below the floor, so it is a lower bound of what the bubble
  spends);
* **calibrated**: a logistic regression (scikit-learn) of whether a piece holds a gold
  answer, from the trace's own components (cosine, document and span priors, coverage,
  redundancy, gain and gain relative to the first, position taken, tokens, lexical overlap
  with the question, how it became a candidate); the context is the pieces with a
  probability of at least ``θ``, by probability, under the same budget. The model is fitted
  on all the runs together (one rule for every dataset), **out of fold**: 5 folds by gold
  document, each question scored by the model that never saw its documents.

It prints answer in context and mean context tokens per dataset for each setting: the
frontier each rule reaches.

    python -m eval.stop_rules runs/tatqa/run.default-full-budget.json runs/hotpotqa/run.default-full-budget.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from eval import metrics as M
from eval.sweep import document_folds
from retrieval.context import terms

SOURCES = ("anchor", "structure", "first_stage", "graph")
RATIOS = (0.5, 0.55, 0.6, 0.65, 0.7)
THRESHOLDS = (0.02, 0.03, 0.04, 0.06, 0.08, 0.1)
N_FEATURES = 10 + len(SOURCES)  # the ten score components of questions_of, then one flag per source


@dataclass
class Question:
    """One question of a run: its taken pieces in the order taken, and its gold."""

    qrels: dict[str, int]  # its gold documents: the folds keep questions sharing one together
    texts: list[str]
    tokens: list[int]
    features: np.ndarray  # one row per piece
    gains: list[float]
    holds_answer: np.ndarray  # per piece
    answers: list[str]
    require_all: bool

    def answered(self, chosen: Sequence[int]) -> float:
        return M.answer_in_context("\n".join(self.texts[i] for i in sorted(chosen)), self.answers, self.require_all)


def questions_of(run: Mapping) -> list[Question]:
    """The questions of a run file that have answer strings to find."""
    out = []
    for q in run["queries"]:
        gold = q["gold"]
        answers = gold.get("context_answers")
        if not answers:
            continue
        require_all = bool(gold.get("require_all"))
        shown = {c["span_id"]: c for c in q["context"]}
        taken = [t for t in q["trace"] if t[1] == "taken" and t[0] in shown]
        asked = terms(q["question"])
        first_gain = taken[0][4].get("gain", 1.0) if taken else 1.0
        texts = [shown[t[0]]["text"] for t in taken]
        tokens = [max(shown[t[0]]["n_tokens"], 0) for t in taken]
        rows = []
        for position, (text, n_tokens, (_, _, _, source, scores)) in enumerate(zip(texts, tokens, taken, strict=True)):
            rows.append(
                [
                    scores.get("relevance", 0.0),
                    scores.get("doc_prior", 0.0),
                    scores.get("span_prior", 0.0),
                    scores.get("coverage_gain", 0.0),
                    scores.get("redundancy", 0.0),
                    scores.get("gain", 0.0),
                    scores.get("gain", 0.0) / first_gain if first_gain else 0.0,
                    np.log1p(position),
                    np.log1p(n_tokens),
                    len(asked & terms(text)) / max(len(asked), 1),
                    *(float(source == s) for s in SOURCES),
                ]
            )
        out.append(
            Question(
                qrels=dict(gold.get("qrels") or {}),
                texts=texts,
                tokens=tokens,
                features=np.array(rows, dtype=float).reshape(len(rows), N_FEATURES),
                gains=[t[4].get("gain", 0.0) for t in taken],
                holds_answer=np.array([M.answer_in_context(t, answers, False) for t in texts], dtype=float),
                answers=answers,
                require_all=require_all,
            )
        )
    return out


def relative_floor(question: Question, ratio: float) -> list[int]:
    """The taken pieces before the first whose gain is below ``ratio`` × the first's."""
    if not question.gains:
        return []
    floor = ratio * question.gains[0]
    return next(([*range(i)] for i, g in enumerate(question.gains) if g < floor), [*range(len(question.gains))])


def calibrated(question: Question, probability: np.ndarray, threshold: float, budget: int) -> list[int]:
    """The pieces with ``probability`` ≥ ``threshold`` (always the likeliest), by
    probability, that fit ``budget``."""
    chosen: list[int] = []
    total = 0
    for i in np.argsort(-probability, kind="stable").tolist():
        if chosen and probability[i] < threshold:
            break
        if total + question.tokens[i] <= budget:
            chosen.append(i)
            total += question.tokens[i]
    return chosen


def out_of_fold(datasets: Sequence[list[Question]], folds: int = 5) -> list[list[np.ndarray]]:
    """Each piece's probability of holding an answer from a model fitted on the other
    folds of every dataset together, each dataset weighing the same. The folds are the
    harness's (:func:`eval.sweep.document_folds`): questions sharing a gold document stay
    together."""
    flat = [(d, q) for d, questions in enumerate(datasets) for q in questions]
    golds = {str(i): {"qrels": {f"{d}:{doc}": 1 for doc in q.qrels}} for i, (d, q) in enumerate(flat)}
    fold_by_question = document_folds(golds, folds)
    fold_of = [fold_by_question[str(i)] for i in range(len(flat))]
    probability: list[np.ndarray] = [np.zeros(0)] * len(flat)
    for f in range(folds):
        train = [i for i, k in enumerate(fold_of) if k != f and len(flat[i][1].tokens)]
        x = np.vstack([flat[i][1].features for i in train])
        y = np.concatenate([flat[i][1].holds_answer for i in train])
        weight = np.concatenate([np.full(len(flat[i][1].tokens), 1.0 / len(datasets[flat[i][0]])) for i in train])
        model = LogisticRegression(max_iter=5000).fit(x, y, sample_weight=weight / weight.mean())
        for i, k in enumerate(fold_of):
            if k == f and len(flat[i][1].tokens):
                probability[i] = model.predict_proba(flat[i][1].features)[:, 1]
    out: list[list[np.ndarray]] = [[] for _ in datasets]
    for (d, _), p in zip(flat, probability, strict=True):
        out[d].append(p)
    return out


def frontier(datasets: Sequence[list[Question]], budget: int = 500) -> list[dict]:
    """Answer in context and mean tokens per dataset for every setting of both rules."""
    rows = []
    for ratio in RATIOS:
        picks = [[relative_floor(q, ratio) for q in questions] for questions in datasets]
        rows.append({"rule": f"relative floor {ratio}", "per_dataset": _score(datasets, picks)})
    probabilities = out_of_fold(datasets)
    for threshold in THRESHOLDS:
        picks = [
            [calibrated(q, p, threshold, budget) for q, p in zip(questions, probs, strict=True)]
            for questions, probs in zip(datasets, probabilities, strict=True)
        ]
        rows.append({"rule": f"calibrated θ={threshold}", "per_dataset": _score(datasets, picks)})
    return rows


def _score(datasets: Sequence[list[Question]], picks: Sequence[Sequence[list[int]]]) -> list[tuple[float, float]]:
    return [
        (
            float(np.mean([q.answered(c) for q, c in zip(questions, chosen, strict=True)])),
            float(np.mean([sum(q.tokens[i] for i in c) for q, c in zip(questions, chosen, strict=True)])),
        )
        for questions, chosen in zip(datasets, picks, strict=True)
    ]


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    datasets = [questions_of(run) for run in runs]
    names = [f"{run['dataset']} ({len(qs)})" for run, qs in zip(runs, datasets, strict=True)]
    print("| rule | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for row in frontier(datasets):
        cells = [f"{a:.3f} @ {t:.0f}" for a, t in row["per_dataset"]]
        print(f"| {row['rule']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
