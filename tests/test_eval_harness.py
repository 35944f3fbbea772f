"""The evaluation harness end to end on a tiny BEIR folder: results.json, run files that
recompute it exactly, the report and its plots, and the CLI's error handling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typer.testing import CliRunner  # noqa: E402

from eval.cli import eval_command  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402
from eval.harness import metrics_from_run, run_eval  # noqa: E402
from service.engine import RagService  # noqa: E402
from service.settings import Settings  # noqa: E402

CORPUS = [
    ("d1", "Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen."),
    ("d2", "Volcanoes", "Magma rises through the crust and erupts as lava, ash and volcanic gases."),
    ("d3", "Vaccines", "A vaccine trains the immune system to recognise a pathogen without causing disease."),
    ("d4", "Tides", "Ocean tides are caused by the gravitational pull of the moon and the sun."),
    ("d5", "Bees", "Honey bees pollinate flowers and store nectar as honey in wax combs."),
    ("d6", "Glaciers", "Glaciers are slow rivers of ice that carve valleys as they move downhill."),
]
QUERIES = [
    ("q1", "How do plants make glucose from sunlight?", ["d1"]),
    ("q2", "What causes ocean tides?", ["d4"]),
    ("q3", "How does a vaccine protect against disease?", ["d3"]),
    ("q4", "Which insects make honey and pollinate flowers?", ["d5", "d1"]),
]


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, title, text in CORPUS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, text, _ in QUERIES:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, _, docs in QUERIES:
            for d in docs:
                f.write(f"{qid}\t{d}\t1\n")
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    folder = make_beir(root / "tiny")
    rag = RagService(Settings(data_dir=root / "data"))
    dataset = load_dataset("beir", folder)
    out = root / "out"
    results = run_eval(rag, dataset, ["dense", "bm25"], out, progress=False)
    yield rag, dataset, out, results
    rag.close()


def test_results_json_shape(evaluated):
    _, dataset, out, results = evaluated
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert set(on_disk) == {"dataset", "split", "n_queries", "pipelines", "costs"}
    assert on_disk["costs"]["dense"]["latency_p95_vs_dense"] == 1.0
    assert {"index_mb", "latency_p95_vs_dense"} <= set(on_disk["costs"]["bm25"])
    assert (on_disk["dataset"], on_disk["split"], on_disk["n_queries"]) == ("tiny", "test", 4)
    for name in ("dense", "bm25"):
        m = on_disk["pipelines"][name]
        for key in (
            "ndcg@10",
            "recall@10",
            "recall@100",
            "mrr@10",
            "evidence_recall",
            "context_tokens_mean",
            "context_tokens_p50",
            "context_tokens_p95",
            "latency_ms_p50",
            "latency_ms_p95",
        ):
            assert key in m, key
        assert m["n_queries"] == 4
        assert "answer_in_context" not in m and "answer_em" not in m  # BEIR has no answers
        assert m["ndcg@10"] > 0.7  # the tiny corpus is easy for both
        assert m["context_tokens_mean"] > 0


def test_metrics_recomputed_from_run_files_equal_results(evaluated):
    _, dataset, out, results = evaluated
    for name in ("dense", "bm25"):
        run_file = out / f"run.{name}.json"
        assert metrics_from_run(run_file) == results["pipelines"][name]  # gold from the file
        assert metrics_from_run(json.loads(run_file.read_text()), dataset) == results["pipelines"][name]
        q = json.loads(run_file.read_text())["queries"][0]
        assert {"qid", "ranked", "context", "context_tokens", "timings_ms", "answer", "citations", "gold"} <= set(q)
        assert {"span_id", "doc_id", "text", "start", "end", "granularity", "n_tokens"} <= set(q["context"][0])
        taken = [t[0] for t in q["trace"] if t[1] == "taken"]  # the selector's decisions travel too
        assert sorted(taken) == sorted(c["span_id"] for c in q["context"])


def test_report_and_plots_exist(evaluated):
    _, _, out, _ = evaluated
    report = (out / "report.md").read_text()
    assert "| dense |" in report and "| bm25 |" in report
    assert "plots/context_tokens.png" in report
    for png in ("quality_vs_tokens.png", "latency.png", "context_tokens.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_second_run_reuses_the_collection(evaluated, tmp_path):
    rag, dataset, _, _ = evaluated
    collection, report = dataset.ingest(rag)
    assert collection.startswith("eval-beir-") and report["added"] == 0 and report["unchanged"] == 6


def run_cli(*args: str):
    import typer

    app = typer.Typer()
    app.command()(eval_command)
    return CliRunner().invoke(app, list(args))


def test_cli_lists_pipelines():
    result = run_cli("--list-pipelines")
    assert result.exit_code == 0
    assert "dense" in result.output and "bm25" in result.output and "hybrid" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "nope:/tmp", "--pipeline", "dense", "--out", "/tmp/x"], "unknown dataset kind"),
        (["--dataset", "beir:/does/not/exist", "--pipeline", "dense", "--out", "/tmp/x"], "does not exist"),
        (["--dataset", "beir:/tmp", "--pipeline", "warp-drive", "--out", "/tmp/x"], "unknown pipeline"),
    ],
)
def test_cli_errors_exit_2_without_traceback(args, message):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
