"""eval/abstention_fit.py: the grid search behind ExtractiveOptions' abstention knobs, on small
synthetic run records (no model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.abstention_fit import FitError, Grid, fit, main
from eval.harness import UNANSWERABLE_PREFIX
from generation.extractive import ExtractiveOptions

ROOT = Path(__file__).resolve().parents[1]
SMALL = Grid(sure_cosine=(0.5, 0.6), min_coverage=(0.0, 0.5), min_specific_coverage=(1.0,))


def record(qid: str, best: float, coverage: float, specific: float = 1.0, evidence: bool = False) -> dict:
    """A run record (eval.harness.run_query's layout, the fields the fit reads): one context
    span of d1 [0, 100); its gold rationale sentence inside that span (``evidence``) or in
    another document."""
    return {
        "qid": qid,
        "question": f"question {qid}?",
        "context": [{"span_id": "s1", "doc_id": "d1", "text": "...", "start": 0, "end": 100}],
        "abstained": False,
        "support": {
            "best_cosine": best,
            "coverage": coverage,
            "specific_coverage": specific,
            "n_specific": 1,
            "median_cosine": best / 2,
        },
        "gold": {"evidence_sentences": [{"doc_id": "d1" if evidence else "d9", "start": 10, "end": 40}]},
    }


def safe(n: int) -> list[dict]:
    """Answerable records every candidate answers (best cosine above every sure_cosine)."""
    return [record(f"ok{i}", 0.9, 1.0, evidence=True) for i in range(n)]


def knobs(result) -> tuple[float, float, float]:
    return result.sure_cosine, result.min_coverage, result.min_specific_coverage


# -- the objective -------------------------------------------------------------------------------
def test_chooses_the_knobs_that_decline_the_most_unanswerable_under_the_cap():
    # (0.6, 0.5) alone declines both unanswerable; it abstains on one evidence-in-context
    # claim of ten: allowed at max_loss 0.1
    answerable = [record("a", 0.55, 0.4, evidence=True), *safe(9)]
    unanswerable = [record("u1", 0.55, 0.3), record("u2", 0.45, 0.4)]
    result = fit(answerable, unanswerable, max_loss=0.1, grid=SMALL)
    assert knobs(result) == (0.6, 0.5, 1.0)
    assert result.min_cosine == ExtractiveOptions().min_cosine
    f = result.figures
    assert (f.declined, f.n_unanswerable, f.recall) == (2, 2, 1.0)
    assert (f.abstained, f.answerable_abstained) == (1, 0.1)
    assert (f.evidence_abstained, f.n_evidence, f.loss) == (1, 10, 0.1)
    # the baseline: best_cosine >= min_cosine alone declines neither
    assert (result.baseline.declined, result.baseline.abstained) == (0, 0)
    assert (result.n_candidates, result.n_feasible) == (4, 4)


def test_the_loss_cap_is_respected():
    answerable = [record("a", 0.55, 0.4, evidence=True), *safe(9)]
    unanswerable = [record("u1", 0.55, 0.3), record("u2", 0.45, 0.4)]
    result = fit(answerable, unanswerable, max_loss=0.05, grid=SMALL)
    # (0.6, 0.5) would lose the claim: the best within the cap declines only u2
    assert knobs(result) == (0.5, 0.5, 1.0)
    assert result.figures.evidence_abstained == 0 and result.figures.loss <= 0.05
    assert result.figures.declined == 1
    assert result.n_feasible == 3
    with pytest.raises(FitError, match="no grid candidate"):
        fit([record("a", 0.3, 1.0, evidence=True)], unanswerable, max_loss=0.0, grid=SMALL)  # below min_cosine


def test_only_claims_with_their_rationale_in_the_context_count_against_the_cap():
    # the same claim, its rationale sentence outside the context: abstaining on it costs no loss
    answerable = [record("a", 0.55, 0.4, evidence=False), *safe(9)]
    unanswerable = [record("u1", 0.55, 0.3), record("u2", 0.45, 0.4)]
    result = fit(answerable, unanswerable, max_loss=0.0, grid=SMALL)
    assert knobs(result) == (0.6, 0.5, 1.0)
    assert result.figures.answerable_abstained == 0.1 and result.figures.loss == 0.0
    assert result.figures.n_evidence == 9


def test_ties_go_to_fewest_evidence_claims_abstained_then_lowest_values():
    # (0.5, 0.5) and (0.6, 0.0) each decline one; (0.5, 0.5) costs claim a, (0.6, 0.0) nothing;
    # (0.6, 0.5) declines both but costs two claims, over the cap
    answerable = [record("a", 0.45, 0.4, evidence=True), record("b", 0.55, 0.4, evidence=True), *safe(8)]
    unanswerable = [record("u1", 0.45, 0.4), record("u2", 0.55, 0.6, specific=0.0)]
    result = fit(answerable, unanswerable, max_loss=0.1, grid=SMALL)
    assert knobs(result) == (0.6, 0.0, 1.0)
    assert (result.figures.declined, result.figures.evidence_abstained) == (1, 0)


def test_equal_candidates_break_to_the_lowest_values_on_the_default_grid():
    # u is declined by any sure_cosine above 0.45 with min_coverage above 0.3; claim a is lost
    # from min_coverage 0.55 up: sure_cosine 0.46..0.80 x min_coverage 0.35..0.50 x either
    # min_specific_coverage all tie
    answerable = [record("a", 0.45, 0.5, evidence=True), *safe(99)]
    unanswerable = [record("u", 0.45, 0.3), record("far", 0.2, 0.0)]
    result = fit(answerable, unanswerable, max_loss=0.0)
    assert knobs(result) == (0.46, 0.35, 0.5)
    assert result.figures.declined == 2 and result.figures.loss == 0.0
    assert result.n_candidates == 41 * 17 * 2


def test_candidates_are_judged_by_the_shipped_rule(monkeypatch):
    answerable = [record("a", 0.55, 0.4, evidence=True), *safe(9)]
    unanswerable = [record("u1", 0.55, 0.3), record("u2", 0.45, 0.4)]
    monkeypatch.setattr(ExtractiveOptions, "supports", lambda self, evidence: True)
    result = fit(answerable, unanswerable, max_loss=0.1, grid=SMALL)
    assert result.figures.declined == 0 and knobs(result) == (0.5, 0.0, 1.0)


def test_min_cosine_is_fixed_unless_asked():
    answerable = safe(10)
    unanswerable = [record("u", 0.38, 1.0)]
    assert fit(answerable, unanswerable, grid=SMALL).baseline.declined == 0  # 0.38 >= 0.36
    result = fit(answerable, unanswerable, grid=SMALL, min_cosine=0.4)
    assert result.min_cosine == 0.4 and result.baseline.declined == 1


def test_records_without_support_are_an_error():
    bare = record("a", 0.9, 1.0)
    del bare["support"]
    with pytest.raises(FitError, match="no 'support'"):
        fit([bare], [record("u", 0.2, 0.0)])


# -- the command line ----------------------------------------------------------------------------
def write_run(path: Path, own: list[dict], unanswerable: list[dict], collection: str = "c") -> Path:
    queries = own + [{**r, "qid": UNANSWERABLE_PREFIX + r["qid"]} for r in unanswerable]
    path.write_text(json.dumps({"collection": collection, "queries": queries}))
    return path


@pytest.fixture
def runs(tmp_path):
    own = write_run(tmp_path / "own.json", [record("a", 0.45, 0.5, evidence=True), *safe(99)], [])
    other = write_run(tmp_path / "other.json", safe(3), [record("u", 0.45, 0.3), record("far", 0.2, 0.0)], "x")
    return own, other


def test_cli_prints_the_knobs_and_figures(runs, capsys):
    own, other = runs
    # own.json twice: a record counts once per (collection, qid)
    assert main(["--answerable", str(own), str(own), "--unanswerable", str(other), "--max-loss", "0"]) == 0
    out = capsys.readouterr().out
    assert "sure_cosine 0.46 min_coverage 0.35 min_specific_coverage 0.5" in out
    assert "100 answerable (100 with a rationale sentence in the context), 2 unanswerable" in out
    assert "1.0000 (2/2)" in out and "0.5000 (1/2)" in out  # chosen, then min_cosine 0.36 only

    assert main(["--answerable", str(own), "--unanswerable", str(other), "--max-loss", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["knobs"] == {
        "min_cosine": 0.36,
        "sure_cosine": 0.46,
        "min_coverage": 0.35,
        "min_specific_coverage": 0.5,
    }
    assert data["figures"]["recall"] == 1.0 and data["baseline"]["recall"] == 0.5


def test_cli_errors_cleanly(runs, tmp_path, capsys):
    own, other = runs
    assert main(["--answerable", str(tmp_path / "nope.json"), "--unanswerable", str(other)]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    # a run file recorded before `support`
    old = json.loads(other.read_text())
    for q in old["queries"]:
        del q["support"]
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(old))
    assert main(["--answerable", str(own), "--unanswerable", str(stale)]) == 2
    assert "have no 'support'" in capsys.readouterr().err
    # no unanswerable: records in it
    assert main(["--answerable", str(own), "--unanswerable", str(own)]) == 2
    assert "no unanswerable records" in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "eval.abstention_fit", "--answerable", str(tmp_path / "missing.json")]
        + ["--unanswerable", str(tmp_path / "missing.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "missing.json: no such file" in done.stderr and "Traceback" not in done.stderr
