"""Parameter sweeps in the harness: a grid of overrides, folds by document, the pick made
without seeing the fold, and in-sample numbers beside out-of-fold ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typer.testing import CliRunner  # noqa: E402

from eval.cli import eval_command  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402
from eval.sweep import Objective, SweepError, SweepGrid, document_folds, pick, run_sweep  # noqa: E402
from service.engine import RagService  # noqa: E402
from service.settings import Settings  # noqa: E402

TOPICS = [
    ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen.", "plants"),
    ("Volcanoes", "Magma rises through the crust and erupts as lava, ash and volcanic gases.", "magma"),
    ("Vaccines", "A vaccine trains the immune system to recognise a pathogen without disease.", "vaccine"),
    ("Tides", "Ocean tides are caused by the gravitational pull of the moon and the sun.", "tides"),
    ("Bees", "Honey bees pollinate flowers and store nectar as honey in wax combs.", "bees"),
    ("Glaciers", "Glaciers are slow rivers of ice that carve valleys as they move downhill.", "glaciers"),
    ("Comets", "Comets are icy bodies whose tails of gas and dust point away from the sun.", "comets"),
    ("Coral", "Coral reefs are built by colonies of tiny animals that secrete calcium carbonate.", "coral"),
    ("Lightning", "Lightning is a discharge of static electricity between clouds and the ground.", "lightning"),
    ("Rust", "Iron rusts when it reacts with oxygen and water to form iron oxide.", "iron"),
]


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i, (title, text, _) in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": f"{text} {text}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as f, (folder / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for i, (_, _, word) in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"q{i}", "text": f"What do we know about {word}?"}) + "\n")
            q.write(f"q{i}\td{i}\t1\n")
    return folder


def test_a_grid_is_the_product_of_validated_values():
    grid = SweepGrid.parse(["top_k=2,4", "bubble_min_gain=0.1"], "default")
    assert grid.points() == [{"top_k": 2, "bubble_min_gain": 0.1}, {"top_k": 4, "bubble_min_gain": 0.1}]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_knob=1", "not a retrieval parameter"),
        ("top_k=0", "top_k=0"),
        ("top_k", "expected NAME=V1,V2"),
        ("bubble_min_gain=abc", "bubble_min_gain=abc"),
    ],
)
def test_a_bad_sweep_is_refused_before_anything_runs(spec, message):
    with pytest.raises(SweepError, match=message):
        SweepGrid.parse([spec], "default")


def test_questions_sharing_a_document_stay_in_one_fold_and_folds_are_balanced():
    golds = {f"q{i}": {"qrels": {f"d{i // 3}": 1}} for i in range(30)}  # 10 groups of 3
    golds["bridge"] = {"qrels": {"d0": 1, "d9": 1}}  # joins two groups
    folds = document_folds(golds, 5)
    assert folds == document_folds(dict(reversed(golds.items())), 5)  # not the question order
    for i in range(30):
        assert folds[f"q{i}"] == folds[f"q{3 * (i // 3)}"]
    assert folds["bridge"] == folds["q0"] == folds["q27"]
    sizes = [list(folds.values()).count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 4 and sum(sizes) == 31
    with pytest.raises(SweepError, match="too few"):
        document_folds({"a": {"qrels": {"d": 1}}, "b": {"qrels": {"d": 1}}}, 2)


def test_the_objective_keeps_to_the_token_cap_and_breaks_ties_by_fewer_tokens():
    points = [
        {"answer_in_context": 0.95, "context_tokens_mean": 480},
        {"answer_in_context": 0.90, "context_tokens_mean": 390},
        {"answer_in_context": 0.90, "context_tokens_mean": 300},
    ]
    assert pick(Objective("answer_in_context", 400), points) == 2
    assert pick(Objective("answer_in_context"), points) == 0
    assert pick(Objective("answer_in_context", 100), points) == 2  # none fits: fewest tokens
    assert pick(Objective("answer_in_context", 400), points, [False, True, False]) == 1  # a tie keeps the setting


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    dataset = load_dataset("beir", make_beir(root / "topics"))
    rag = RagService(Settings(data_dir=root / "data"))
    grid = SweepGrid.parse(["top_k=1,4"], "default")
    # a cap only one-span contexts meet: every fold must pick top_k=1 whatever it scores
    result = run_sweep(
        rag, dataset, "default", grid, Objective("evidence_recall", 45), root / "out", folds=5, progress=False
    )
    yield result, root / "out", rag
    rag.close()


def test_a_sweep_reports_every_point_each_folds_pick_and_out_of_fold_numbers(swept):
    result, out, _ = swept
    on_disk = json.loads((out / "sweep.json").read_text())
    assert on_disk == json.loads(json.dumps(result.as_dict()))
    assert [p["params"] for p in on_disk["points"]] == [{"top_k": 1}, {"top_k": 4}]
    small, large = (p["metrics"] for p in on_disk["points"])
    assert small["context_tokens_mean"] < 45 < large["context_tokens_mean"]
    assert len(on_disk["fold_picks"]) == 5 and sum(f["n_queries"] for f in on_disk["fold_picks"]) == 10
    assert all(f["params"] == {"top_k": 1} for f in on_disk["fold_picks"])
    assert on_disk["in_sample"]["params"] == {"top_k": 1}
    # every fold picked the same point, so its held-out records are all of that point's
    assert on_disk["out_of_fold"] == on_disk["in_sample"]["metrics"]
    assert len(on_disk["context_tokens"]["out_of_fold"]) == 10
    assert on_disk["pipeline_as_is"]["n_queries"] == 10
    report = (out / "sweep.md").read_text()
    assert "out-of-fold" in report and "top_k=1" in report
    assert (out / "plots" / "context_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_the_cli_runs_a_sweep_and_refuses_a_bad_one(swept, tmp_path):
    _, _, rag = swept
    folder = make_beir(tmp_path / "topics")
    app_args = ["--dataset", f"beir:{folder}", "--data-dir", str(tmp_path / "data"), "--no-progress"]
    runner = CliRunner()
    from typer import Typer

    app = Typer()
    app.command()(eval_command)
    bad = runner.invoke(app, [*app_args, "-p", "default", "--sweep", "top_k=0", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "top_k=0" in bad.output and "Traceback" not in bad.output
    two = runner.invoke(
        app, [*app_args, "-p", "default", "-p", "dense", "--sweep", "top_k=1,2", "--out", str(tmp_path / "o")]
    )
    assert two.exit_code == 2 and "one --pipeline" in two.output
    ok = runner.invoke(
        app, [*app_args, "-p", "dense", "--sweep", "top_k=1,2", "--folds", "2", "--out", str(tmp_path / "o")]
    )
    assert ok.exit_code == 0, ok.output
    assert "would pick" in ok.output and (tmp_path / "o" / "sweep.json").exists()


def test_sweeps_summarize_as_one_table_row_each(swept):
    from eval.sweep import summary_table

    _, out, _ = swept
    table = summary_table([out, out]).splitlines()
    assert len(table) == 4 and table[2] == table[3]
    assert "top_k ∈ {1, 4}" in table[2] and "top_k=1" in table[2] and "1 ×5" in table[2]
