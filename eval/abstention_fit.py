"""Fit the extractive generator's abstention knobs from run files (README, "Abstention").

    python -m eval.abstention_fit \\
        --answerable runs/abstention-fit-scifact-hotpotqa/run.default.json \\
        --unanswerable runs/abstention-fit-hotpotqa/run.default.json [--max-loss 0.01] [--json]

Answerable records are the own (not ``unanswerable:``) records of the ``--answerable`` runs;
unanswerable ones the ``unanswerable:`` records of the ``--unanswerable`` runs. A record that
two runs share (the same question asked of the same collection) counts once.

:func:`fit` searches a grid of ``sure_cosine``, ``min_coverage`` and
``min_specific_coverage`` (``min_cosine`` fixed) for the values that decline the most
unanswerable records while the *loss* stays at most ``max_loss``: the answerable records
abstained on whose gold rationale sentence (``gold.evidence_sentences``) overlaps the
record's context, as a share of all answerable records. Ties go to the smallest loss, then
the lowest ``sure_cosine``, ``min_coverage``, ``min_specific_coverage``. Every candidate is
judged by the shipped rule itself, ``ExtractiveOptions(...).supports(Support(**record["support"]))``
(an empty context abstains, as in the generator), so the fit reads nothing of a record but
its ``support``, its ``context`` and its gold evidence sentences.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.harness import UNANSWERABLE_PREFIX
from eval.metrics import EvidenceUnit, unit_found
from generation.extractive import ExtractiveOptions, Support


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    """``start`` to ``stop`` inclusive by ``step``, rounded to 2 decimals (no float drift)."""
    n = round((stop - start) / step)
    return tuple(round(start + i * step, 2) for i in range(n + 1))


@dataclass(frozen=True)
class Grid:
    """The candidate values (the README's grid by default)."""

    sure_cosine: tuple[float, ...] = field(default_factory=lambda: _steps(0.40, 0.80, 0.01))
    min_coverage: tuple[float, ...] = field(default_factory=lambda: _steps(0.0, 0.80, 0.05))
    min_specific_coverage: tuple[float, ...] = (0.5, 1.0)

    def __len__(self) -> int:
        return len(self.sure_cosine) * len(self.min_coverage) * len(self.min_specific_coverage)


@dataclass(frozen=True)
class Figures:
    """What one rule does on the fit's records (counts, and the shares they give)."""

    n_unanswerable: int
    n_answerable: int
    n_evidence: int  # answerable records whose rationale sentence is in the context
    declined: int  # unanswerable records abstained on
    abstained: int  # answerable records abstained on
    evidence_abstained: int  # of those, ones with the rationale sentence in the context

    @property
    def recall(self) -> float:
        """Share of the unanswerable records declined."""
        return self.declined / self.n_unanswerable if self.n_unanswerable else 0.0

    @property
    def answerable_abstained(self) -> float:
        """Share of all answerable records abstained on."""
        return self.abstained / self.n_answerable if self.n_answerable else 0.0

    @property
    def evidence_abstained_share(self) -> float:
        """Share of the evidence-in-context answerable records abstained on."""
        return self.evidence_abstained / self.n_evidence if self.n_evidence else 0.0

    @property
    def loss(self) -> float:
        """Evidence-in-context answerable records abstained on, as a share of *all*
        answerable records: what ``max_loss`` caps."""
        return self.evidence_abstained / self.n_answerable if self.n_answerable else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "recall": self.recall,
            "answerable_abstained": self.answerable_abstained,
            "evidence_abstained_share": self.evidence_abstained_share,
            "loss": self.loss,
        }


@dataclass(frozen=True)
class FitResult:
    """The chosen knobs, what they do on the records, and what ``min_cosine`` alone does."""

    min_cosine: float
    sure_cosine: float
    min_coverage: float
    min_specific_coverage: float
    max_loss: float
    figures: Figures
    baseline: Figures  # the plain threshold best_cosine >= min_cosine
    n_candidates: int
    n_feasible: int  # candidates within max_loss

    @property
    def options(self) -> ExtractiveOptions:
        return ExtractiveOptions(
            min_cosine=self.min_cosine,
            sure_cosine=self.sure_cosine,
            min_coverage=self.min_coverage,
            min_specific_coverage=self.min_specific_coverage,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "knobs": {
                "min_cosine": self.min_cosine,
                "sure_cosine": self.sure_cosine,
                "min_coverage": self.min_coverage,
                "min_specific_coverage": self.min_specific_coverage,
            },
            "max_loss": self.max_loss,
            "figures": self.figures.as_dict(),
            "baseline": self.baseline.as_dict(),
            "n_candidates": self.n_candidates,
            "n_feasible": self.n_feasible,
        }


class FitError(ValueError):
    """Records the fit cannot use, or a grid with no candidate within the loss cap; the
    message is what the user sees."""


def evidence_in_context(record: Mapping) -> bool:
    """Whether any of the record's gold rationale sentences overlaps its context (the
    harness's ``sentence_evidence_recall`` above 0)."""
    units = [EvidenceUnit.from_dict(u) for u in (record.get("gold") or {}).get("evidence_sentences") or []]
    return any(unit_found(u, record.get("context") or []) for u in units)


def _evidence(record: Mapping) -> tuple[Support, bool]:
    """The record's ``Support`` and whether its context is non-empty."""
    if not isinstance(record.get("support"), Mapping):
        raise FitError(f"record {record.get('qid', '?')!r} has no 'support' (a run from before it was recorded?)")
    try:
        evidence = Support(**record["support"])
    except TypeError as e:
        raise FitError(f"record {record.get('qid', '?')!r}: 'support' does not match Support ({e})") from None
    return evidence, bool(record.get("context", True))


def _figures(
    options: ExtractiveOptions,
    answerable: Sequence[tuple[Support, bool, bool]],
    unanswerable: Sequence[tuple[Support, bool]],
    n_evidence: int,
) -> Figures:
    # the generator abstains on an empty context before it reads the rule
    declined = sum(not (has_context and options.supports(s)) for s, has_context in unanswerable)
    abstained = evidence_abstained = 0
    for s, has_context, ev in answerable:
        if not (has_context and options.supports(s)):
            abstained += 1
            evidence_abstained += ev
    return Figures(len(unanswerable), len(answerable), n_evidence, declined, abstained, evidence_abstained)


def fit(
    answerable_records: Iterable[Mapping],
    unanswerable_records: Iterable[Mapping],
    max_loss: float = 0.01,
    grid: Grid | None = None,
    min_cosine: float | None = None,
) -> FitResult:
    """The grid values that decline the most ``unanswerable_records`` with a loss (see the
    module doc) of at most ``max_loss`` on ``answerable_records``; ties: smallest loss, then
    lowest ``sure_cosine``, ``min_coverage``, ``min_specific_coverage``. ``min_cosine``:
    ``ExtractiveOptions``' value unless given. Raises ``FitError`` for records without
    ``support``, no records of a kind, or no candidate within ``max_loss``."""
    grid = grid or Grid()
    if min_cosine is None:
        min_cosine = ExtractiveOptions().min_cosine
    answerable = [(*_evidence(r), evidence_in_context(r)) for r in answerable_records]
    unanswerable = [_evidence(r) for r in unanswerable_records]
    if not answerable or not unanswerable:
        raise FitError("the fit needs answerable and unanswerable records")
    n_evidence = sum(ev for _, _, ev in answerable)
    best: tuple[tuple[int, int, float, float, float], Figures] | None = None
    n_feasible = 0
    for sure in grid.sure_cosine:
        for cov in grid.min_coverage:
            for spec in grid.min_specific_coverage:
                options = ExtractiveOptions(
                    min_cosine=min_cosine, sure_cosine=sure, min_coverage=cov, min_specific_coverage=spec
                )
                figures = _figures(options, answerable, unanswerable, n_evidence)
                if figures.evidence_abstained > max_loss * figures.n_answerable + 1e-9:  # loss > max_loss
                    continue
                n_feasible += 1
                # most declined; then fewest evidence-in-context abstained; then lowest values
                key = (figures.declined, -figures.evidence_abstained, -sure, -cov, -spec)
                if best is None or key > best[0]:
                    best = (key, figures)
    if best is None:
        raise FitError(f"no grid candidate abstains on at most {max_loss} of the answerable records")
    (_, _, sure, cov, spec), figures = best
    plain = ExtractiveOptions(min_cosine=min_cosine, sure_cosine=min_cosine)  # best_cosine >= min_cosine
    baseline = _figures(plain, answerable, unanswerable, n_evidence)
    return FitResult(min_cosine, -sure, -cov, -spec, max_loss, figures, baseline, len(grid), n_feasible)


# -- command line --------------------------------------------------------------------------------
def load_records(paths: Sequence[Path], unanswerable: bool) -> list[dict]:
    """The ``unanswerable:`` records (or the others) of the run files, once per
    (collection, qid). Raises ``FitError`` for a missing or unreadable file, a file that is
    not a run, or a run without such records or without ``support``."""
    kind = "unanswerable" if unanswerable else "answerable"
    out: dict[tuple[str, str], dict] = {}
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FitError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FitError(f"{path}: cannot read a run file ({e})") from None
        if not isinstance(run, dict) or not isinstance(run.get("queries"), list):
            raise FitError(f"{path}: not a run file (no 'queries'; expected runs/<name>/run.<pipeline>.json)")
        records = [q for q in run["queries"] if str(q.get("qid", "")).startswith(UNANSWERABLE_PREFIX) == unanswerable]
        if not records:
            raise FitError(f"{path}: no {kind} records")
        missing = sum(not isinstance(q.get("support"), Mapping) for q in records)
        if missing:
            raise FitError(
                f"{path}: {missing} of {len(records)} {kind} records have no 'support' "
                "(rerun `spanrag eval` with this version to record it)"
            )
        collection = str(run.get("collection", path))
        for q in records:
            out.setdefault((collection, str(q["qid"])), q)
    return list(out.values())


def _describe(result: FitResult) -> str:
    f, b = result.figures, result.baseline

    def row(name: str, x: Figures) -> str:
        return (
            f"{name:<24} {x.recall:.4f} ({x.declined}/{x.n_unanswerable})".ljust(50)
            + f"{x.answerable_abstained:.4f} ({x.abstained}/{x.n_answerable})".ljust(24)
            + f"{x.evidence_abstained} of {x.n_evidence} (loss {x.loss:.4f})"
        )

    return "\n".join(
        [
            f"records: {f.n_answerable} answerable ({f.n_evidence} with a rationale sentence in the context), "
            f"{f.n_unanswerable} unanswerable",
            f"grid: {result.n_candidates} candidates, {result.n_feasible} with loss <= {result.max_loss}",
            f"chosen: min_cosine {result.min_cosine} sure_cosine {result.sure_cosine} "
            f"min_coverage {result.min_coverage} min_specific_coverage {result.min_specific_coverage}",
            "",
            f"{'rule':<24} {'unanswerable declined':<25}{'answerable abstained':<24}evidence in context abstained",
            row("chosen", f),
            row(f"min_cosine {result.min_cosine} only", b),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.abstention_fit",
        description="Fit the extractive generator's abstention knobs (sure_cosine, min_coverage, "
        "min_specific_coverage) from the `support` recorded in run files.",
    )
    parser.add_argument(
        "--answerable",
        type=Path,
        action="extend",
        nargs="+",
        required=True,
        metavar="RUN.json",
        help="run file whose own (not unanswerable:) records are the answerable ones; repeatable",
    )
    parser.add_argument(
        "--unanswerable",
        type=Path,
        action="extend",
        nargs="+",
        required=True,
        metavar="RUN.json",
        help="run file whose unanswerable: records are the unanswerable ones; repeatable",
    )
    parser.add_argument(
        "--max-loss",
        type=float,
        default=0.01,
        help="most evidence-in-context answerable records abstained on, as a share of all answerable (0.01)",
    )
    parser.add_argument(
        "--min-cosine", type=float, default=None, help="fixed min_cosine (default: ExtractiveOptions' value)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = fit(
            load_records(args.answerable, unanswerable=False),
            load_records(args.unanswerable, unanswerable=True),
            max_loss=args.max_loss,
            min_cosine=args.min_cosine,
        )
    except FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2) if args.json else _describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
