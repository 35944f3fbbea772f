"""Evaluation metrics: document ranking (ir-measures), context quality and answer quality.

Ranking metrics are computed by ir-measures, never by hand:

* ``ndcg@10`` = ``nDCG@10``, ``recall@10`` = ``R@10``, ``recall@100`` = ``R@100``,
  ``mrr@10`` = ``RR@10`` (ir-measures' reciprocal rank of the first relevant document
  within the top 10; its mean over queries is MRR@10).

A run is ``{qid: [doc_id, ...]}`` *in the pipeline's order* (best first). ir-measures'
providers break score ties differently (pytrec_eval by doc id descending, others by
insertion order), so we never hand them the pipeline's raw scores: every document gets the
rank-derived score ``n - rank``, which makes the pipeline's own order authoritative and
every metric deterministic (see :func:`rank_scores`).

Each ranking metric is averaged over every query with at least one relevant document in
the qrels; a query whose run is empty counts as 0.

    >>> qrels = {"q1": {"d2": 1}}
    >>> ranking_metrics({"q1": ["d1", "d2"]}, qrels)["mrr@10"]
    0.5
    >>> squad_f1("The cat sat.", ["a cat sat"])
    1.0
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ir_measures
from ir_measures import RR, R, nDCG

RANKING_MEASURES = {
    "ndcg@10": nDCG @ 10,
    "recall@10": R @ 10,
    "recall@100": R @ 100,
    "mrr@10": RR @ 10,
}


# -- ranking ---------------------------------------------------------------------------------
def rank_scores(ranked: Sequence[str]) -> dict[str, float]:
    """``{doc_id: n - rank}``: strictly decreasing scores that keep the given order.

    A doc id repeated later in the list keeps its first (best) position.
    """
    out: dict[str, float] = {}
    n = len(ranked)
    for rank, doc_id in enumerate(ranked):
        out.setdefault(doc_id, float(n - rank))
    return out


def per_query_ranking(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, float]]:
    """``{metric: {qid: value}}`` for every judged query (at least one relevant doc)."""
    judged = {
        q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if any(int(r) > 0 for r in docs.values())
    }
    ir_run = {q: rank_scores(run.get(q, [])) for q in judged}
    ir_run = {q: docs for q, docs in ir_run.items() if docs}
    out: dict[str, dict[str, float]] = {name: {q: 0.0 for q in judged} for name in RANKING_MEASURES}
    by_measure = {m: name for name, m in RANKING_MEASURES.items()}
    if ir_run:
        for metric in ir_measures.iter_calc(list(RANKING_MEASURES.values()), judged, ir_run):
            out[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    return out


def ranking_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean ``ndcg@10``, ``recall@10``, ``recall@100``, ``mrr@10`` over judged queries."""
    per_query = per_query_ranking(run, qrels)
    return {name: mean(values.values()) for name, values in per_query.items()}


# -- answers (SQuAD v1.1 normalization) ------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_CITATION = re.compile(r"\s*\[\d+\]")


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, squeeze whitespace (SQuAD)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def strip_citations(text: str) -> str:
    """Remove ``[n]`` citation markers from a generated answer before scoring it."""
    return _CITATION.sub("", text).strip()


def _em(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, golds: Iterable[str]) -> float:
    """Exact match after SQuAD normalization, the max over the gold answers (0 if none)."""
    return max((_em(prediction, g) for g in golds), default=0.0)


def squad_f1(prediction: str, golds: Iterable[str]) -> float:
    """Token F1 after SQuAD normalization, the max over the gold answers (0 if none)."""
    return max((_f1(prediction, g) for g in golds), default=0.0)


# -- context ----------------------------------------------------------------------------------
def _squeeze(text: str) -> str:
    return " ".join(text.split()).casefold()


def answer_in_context(context_text: str, answers: Sequence[str], require_all: bool = False) -> float:
    """1.0 when the gold answer appears in the context, case-insensitively, else 0.0.

    Whitespace is squeezed on both sides before the substring test. With several
    alternative gold answers (``require_all=False``) any one of them suffices; for a
    multi-span answer (``require_all=True``, TAT-QA ``multi-span``) *every* span must
    appear. Empty answers never match.
    """
    haystack = _squeeze(context_text)
    needles = [_squeeze(a) for a in answers if a and a.strip()]
    if not needles:
        return 0.0
    hits = [n in haystack for n in needles]
    return float(all(hits) if require_all else any(hits))


@dataclass(frozen=True)
class EvidenceUnit:
    """One piece of gold evidence.

    ``start``/``end`` None: a whole document (SciFact evidence documents, HotpotQA
    supporting paragraphs, which are one document each). Otherwise a character range of
    the document's normalized text (a TAT-QA paragraph or table).
    """

    doc_id: str
    start: int | None = None
    end: int | None = None
    label: str = ""

    def as_dict(self) -> dict:
        return {"doc_id": self.doc_id, "start": self.start, "end": self.end, "label": self.label}

    @classmethod
    def from_dict(cls, d: Mapping) -> EvidenceUnit:
        return cls(str(d["doc_id"]), d.get("start"), d.get("end"), d.get("label", ""))


def unit_found(unit: EvidenceUnit, spans: Sequence[Mapping]) -> bool:
    """Whether ``unit`` is present in the context ``spans`` (dicts with doc_id, start, end).

    A document unit is found when any context span belongs to that document. A range unit
    is found when a context span of that document overlaps the range by at least one
    character (a sentence of the paragraph, the paragraph itself, or a larger span
    containing it; for a table: the table or any of its rows).
    """
    for span in spans:
        if str(span["doc_id"]) != unit.doc_id:
            continue
        if unit.start is None or unit.end is None:
            return True
        if span["start"] < unit.end and unit.start < span["end"]:
            return True
    return False


def cited_evidence(citations: Sequence[Mapping], units: Sequence[EvidenceUnit]) -> tuple[float | None, float | None]:
    """Precision and recall of an answer's citations against gold evidence sentences:
    the share of cited pieces that overlap a gold sentence, and the share of gold
    sentences some citation overlaps (None where there is nothing to divide by: no
    citations for precision, no gold sentences for either).

        >>> gold = [EvidenceUnit("a", 0, 10), EvidenceUnit("a", 20, 30)]
        >>> cited_evidence([{"doc_id": "a", "start": 0, "end": 9}, {"doc_id": "b", "start": 0, "end": 9}], gold)
        (0.5, 0.5)
    """
    if not units:
        return None, None
    precision = sum(any(unit_found(u, [c]) for u in units) for c in citations) / len(citations) if citations else None
    return precision, sum(unit_found(u, citations) for u in units) / len(units)


def evidence_recall(units: Sequence[EvidenceUnit], spans: Sequence[Mapping]) -> float | None:
    """Share of the gold evidence units found in the context (None: no units to find)."""
    if not units:
        return None
    return sum(unit_found(u, spans) for u in units) / len(units)


# -- abstention ---------------------------------------------------------------------------------
def abstention_metrics(abstained: Sequence[bool], unanswerable: Sequence[bool]) -> dict[str, float]:
    """How well a generator declines what the collection cannot answer, per query pair
    (``abstained[i]``: it said the context does not hold the answer; ``unanswerable[i]``:
    the question comes from another dataset than the collection).

    * ``abstain_precision``: share of the abstentions that were on unanswerable questions;
    * ``abstain_recall``: share of the unanswerable questions it abstained on;
    * ``abstained_answerable``: share of the answerable questions it abstained on (what
      abstention costs).

    A rate with nothing to count over (no abstention, no question of a kind) is left out.

        >>> abstention_metrics([True, True, False, False], [True, False, True, False])
        {'abstain_precision': 0.5, 'abstain_recall': 0.5, 'abstained_answerable': 0.5}
    """
    if len(abstained) != len(unanswerable):
        raise ValueError("abstained and unanswerable must have one entry per query")
    pairs = list(zip(map(bool, abstained), map(bool, unanswerable)))
    hits = sum(a and u for a, u in pairs)
    n_abstained = sum(a for a, _ in pairs)
    n_unanswerable = sum(u for _, u in pairs)
    n_answerable = len(pairs) - n_unanswerable
    out = {}
    if n_abstained:
        out["abstain_precision"] = hits / n_abstained
    if n_unanswerable:
        out["abstain_recall"] = hits / n_unanswerable
    if n_answerable:
        out["abstained_answerable"] = (n_abstained - hits) / n_answerable
    return out


# -- aggregation -------------------------------------------------------------------------------
def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]; 0 if empty."""
    xs = sorted(values)
    if not xs:
        return 0.0
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


__all__ = [
    "RANKING_MEASURES",
    "EvidenceUnit",
    "abstention_metrics",
    "answer_in_context",
    "evidence_recall",
    "mean",
    "normalize_answer",
    "per_query_ranking",
    "percentile",
    "rank_scores",
    "ranking_metrics",
    "squad_em",
    "squad_f1",
    "strip_citations",
    "unit_found",
]
