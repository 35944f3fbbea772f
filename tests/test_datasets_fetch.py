"""``spanrag datasets`` (eval/get_datasets.py): converting the public files into the layout
``spanrag eval`` reads, checking a folder against that layout, and failing cleanly offline.

No test touches the network. The raw inputs are rebuilt from ``../shared/datasets`` (the
files behind the README's numbers) in each dataset's published format, converted back, and
compared byte for byte and through ``eval.datasets.load_dataset`` with the shared files.
Tests skip when ``../shared/datasets`` is absent (CI has it at ``../shared``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eval import get_datasets as gd
from eval.datasets import DatasetError, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared eval data lives at ../shared/datasets)")
    return path


def cli_app() -> typer.Typer:
    """``datasets_command`` as its own app, exactly as app/cli.py registers it."""
    app = typer.Typer(add_completion=False)
    app.command()(gd.datasets_command)
    return app


def run_cli(*args: str):
    return CliRunner().invoke(cli_app(), [str(a) for a in args])


def same_dataset(a, b) -> None:
    """What the harness sees: queries with their gold data, qrels, corpus, collection name."""
    assert [dataclasses.asdict(q) for q in a.queries] == [dataclasses.asdict(q) for q in b.queries]
    assert a.qrels == b.qrels
    assert (a.kind, a.split) == (b.kind, b.split)
    assert a.collection_name("m") == b.collection_name("m")
    if a.corpus_docs is not None:
        assert [(d.doc_id, d.text) for d in a.corpus_docs] == [(d.doc_id, d.text) for d in b.corpus_docs]


def errors(findings) -> list[str]:
    return [f.message for f in findings if f.level == "error"]


# -- raw files in their published formats, rebuilt from the shared ones ----------------------------
def raw_hotpotqa(records: list[dict]) -> list[dict]:
    """hotpot_dev_distractor_v1.json's layout: lists of pairs, the question's own id."""
    return [
        {
            "_id": f"{i:024x}",
            "answer": r["answer"],
            "question": r["question"],
            "supporting_facts": [
                [t, s] for t, s in zip(r["supporting_facts"]["title"], r["supporting_facts"]["sent_id"])
            ],
            "context": [[t, s] for t, s in zip(r["context"]["title"], r["context"]["sentences"])],
            "type": r["type"],
            "level": r["level"],
        }
        for i, r in enumerate(records)
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def raw_scifact(layout: Path, out: Path) -> tuple[Path, Path]:
    """The SciFact release (data/corpus.jsonl, data/claims_train.jsonl) and BEIR's
    scifact folder (corpus.jsonl, queries.jsonl, qrels/train.tsv) for a folder in our layout."""
    corpus = read_jsonl(layout / "corpus.jsonl")
    release = out / "release"
    write_jsonl(
        release / "data" / "corpus.jsonl",
        [
            {
                "doc_id": int(r["_id"]),
                "title": r["title"],
                "abstract": r["metadata"]["sentences"],
                "structured": r["metadata"]["structured"],
            }
            for r in corpus
        ],
    )
    cited: dict[str, list[int]] = {}
    for line in (layout / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, _ = line.split("\t")
        cited.setdefault(qid, []).append(int(doc))
    evidence: dict[str, dict[str, list]] = {}
    for r in read_jsonl(layout / "qrels" / "train.evidence.jsonl"):
        for e in r["evidence"]:
            evidence.setdefault(r["query-id"], {}).setdefault(e["doc"], []).append(
                {"sentences": e["sentences"], "label": e["label"]}
            )
    write_jsonl(
        release / "data" / "claims_train.jsonl",
        [
            {
                "id": int(q["_id"]),
                "claim": q["text"],
                "evidence": evidence.get(q["_id"], {}),
                "cited_doc_ids": cited[q["_id"]],
            }
            for q in read_jsonl(layout / "queries.train.jsonl")
        ],
    )
    beir = out / "beir" / "scifact"
    write_jsonl(
        beir / "corpus.jsonl",
        [{"_id": r["_id"], "title": r["title"], "text": r["text"], "metadata": {}} for r in corpus],
    )
    shutil.copy(layout / "queries.train.jsonl", beir / "queries.jsonl")
    (beir / "qrels").mkdir()
    shutil.copy(layout / "qrels" / "train.tsv", beir / "qrels" / "train.tsv")
    return release, beir


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory) -> Path:
    """Our layout, cut from the shared SciFact: the first 40 judged training queries, their
    documents and the first 20 other documents, lines copied verbatim."""
    src = shared("scifact")
    out = tmp_path_factory.mktemp("slice") / "scifact"
    header, *rows = (src / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    qids = set(list(dict.fromkeys(r.split("\t")[0] for r in rows))[:40])
    rows = [r for r in rows if r.split("\t")[0] in qids]
    docs = {r.split("\t")[1] for r in rows}
    corpus = (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for i, line in enumerate(corpus) if i < 20 or json.loads(line)["_id"] in docs]
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(keep), encoding="utf-8")
    (out / "qrels" / "train.tsv").write_text(header + "".join(rows), encoding="utf-8")
    for rel, key in (("queries.train.jsonl", "_id"), ("qrels/train.evidence.jsonl", "query-id")):
        lines = (src / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        (out / rel).write_text("".join(x for x in lines if json.loads(x)[key] in qids), encoding="utf-8")
    return out


def assert_same_files(a: Path, b: Path, names) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


SCIFACT_FILES = ("corpus.jsonl", "queries.train.jsonl", "qrels/train.tsv", "qrels/train.evidence.jsonl")


# -- HotpotQA -----------------------------------------------------------------------------------
def test_hotpotqa_raw_file_converts_to_the_shared_dev50(tmp_path):
    dev50 = shared("hotpotqa/dev50.json")
    records = json.loads(dev50.read_text(encoding="utf-8"))
    extra = dict(records[0], question="a 51st question, past the limit")
    raw = tmp_path / "hotpot_dev_distractor_v1.json"
    raw.write_text(json.dumps(raw_hotpotqa(records + [extra])), encoding="utf-8")

    out = gd.convert("hotpotqa", [raw], tmp_path / "data")

    assert out == tmp_path / "data" / "hotpotqa" / "dev50.json"
    assert out.read_bytes() == dev50.read_bytes()  # the first 50, in file order, renumbered
    same_dataset(load_dataset("hotpotqa", out), load_dataset("hotpotqa", dev50))


def test_hotpotqa_limit_and_the_hugging_face_layout(tmp_path):
    dev50 = shared("hotpotqa/dev50.json")
    # our own file is in the Hugging Face layout (dicts of lists): read as well, same result
    out = gd.convert("hotpotqa", [dev50], tmp_path / "a")
    assert out.read_bytes() == dev50.read_bytes()

    out10 = gd.convert("hotpotqa", [dev50], tmp_path / "b", limit=10)
    assert out10.name == "dev10.json"
    ds = load_dataset("hotpotqa", out10)
    assert [q.id for q in ds.queries] == [f"hotpot-dev-{i:03d}" for i in range(10)]
    assert gd.convert("hotpotqa", [dev50], tmp_path / "c", limit=None).name == "dev.json"


# -- TAT-QA -------------------------------------------------------------------------------------
def test_tatqa_dev_file_is_copied_unchanged_and_loads_the_same(tmp_path):
    dev = shared("tatqa/dev.json")
    raw = tmp_path / "tatqa_dataset_dev.json"  # the published file is byte-identical to ours
    shutil.copy(dev, raw)

    out = gd.convert("tatqa", [raw], tmp_path / "data")

    assert out == tmp_path / "data" / "tatqa" / "dev.json"
    assert out.read_bytes() == dev.read_bytes()
    same_dataset(load_dataset("tatqa", out), load_dataset("tatqa", dev))


def test_tatqa_convert_refuses_a_file_that_is_not_tatqa(tmp_path):
    bad = tmp_path / "tatqa_dataset_dev.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "table": {"uid": "t", "table": [["a"]]},
                    "paragraphs": [],
                    "questions": [{"question": "no uid?", "answer": "x"}],
                }
            ]
        ),
        encoding="utf-8",
    )
    with pytest.raises(DatasetError, match="no 'uid'"):
        gd.convert("tatqa", [bad], tmp_path / "data")
    assert not (tmp_path / "data" / "tatqa").exists()


# -- SciFact ------------------------------------------------------------------------------------
def test_scifact_release_plus_beir_folders_reproduce_the_layout(tmp_path, scifact_slice):
    release, beir = raw_scifact(scifact_slice, tmp_path / "raw")

    out = gd.convert("scifact", [release, beir], tmp_path / "data")

    assert out == tmp_path / "data" / "scifact"
    assert_same_files(out, scifact_slice, SCIFACT_FILES)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(SCIFACT_FILES)
    a, b = load_dataset("beir", out, "train"), load_dataset("beir", scifact_slice, "train")
    same_dataset(a, b)
    assert any(q.evidence_sentences for q in a.queries)  # sentence evidence survives the trip


def test_scifact_from_the_downloaded_archives(tmp_path, scifact_slice):
    release, beir = raw_scifact(scifact_slice, tmp_path / "raw")
    tarball = tmp_path / "data.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(release / "data", arcname="data")
    archive = tmp_path / "scifact.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(beir.rglob("*")):
            if p.is_file():
                z.write(p, f"scifact/{p.relative_to(beir).as_posix()}")

    out = gd.convert("scifact", [tarball, archive], tmp_path / "data")
    assert_same_files(out, scifact_slice, SCIFACT_FILES)
    # the release alone is enough for the train split
    alone = gd.convert("scifact", [tarball], tmp_path / "release-only")
    assert_same_files(alone, scifact_slice, SCIFACT_FILES)


def test_scifact_beir_alone_loads_without_sentence_evidence(tmp_path, scifact_slice):
    _, beir = raw_scifact(scifact_slice, tmp_path / "raw")
    out = gd.convert("scifact", [beir], tmp_path / "data")
    assert not (out / "qrels" / "train.evidence.jsonl").exists()
    a, b = load_dataset("beir", out, "train"), load_dataset("beir", scifact_slice, "train")
    assert [(q.id, q.text) for q in a.queries] == [(q.id, q.text) for q in b.queries]
    assert a.qrels == b.qrels
    assert not any(q.evidence_sentences for q in a.queries)
    assert any("metadata.sentences" in f.message for f in gd.check(out) if f.level == "warning")


def test_scifact_test_split_needs_beir_and_unknown_inputs_are_named(tmp_path, scifact_slice):
    release, _ = raw_scifact(scifact_slice, tmp_path / "raw")
    with pytest.raises(DatasetError, match="test split comes from BEIR"):
        gd.convert("scifact", [release], tmp_path / "data", splits=("train", "test"))
    stray = tmp_path / "notes.txt"
    stray.write_text("hello", encoding="utf-8")
    with pytest.raises(DatasetError, match="neither the SciFact release"):
        gd.convert("scifact", [stray], tmp_path / "data")


def test_existing_output_is_replaced_only_with_force(tmp_path):
    dev50 = shared("hotpotqa/dev50.json")
    gd.convert("hotpotqa", [dev50], tmp_path, limit=5)
    with pytest.raises(DatasetError, match="--force"):
        gd.convert("hotpotqa", [dev50], tmp_path, limit=5)
    gd.convert("hotpotqa", [dev50], tmp_path, limit=5, force=True)
    assert len(json.loads((tmp_path / "hotpotqa" / "dev5.json").read_text(encoding="utf-8"))) == 5


# -- check --------------------------------------------------------------------------------------
def test_check_accepts_the_shared_folder_and_names_identical_files():
    root = shared("")
    for rel in ("scifact/corpus.jsonl", "hotpotqa/dev50.json", "tatqa/dev.json"):
        shared(rel)
    findings = gd.check(root)
    assert errors(findings) == []
    identical = [f for f in findings if "byte-identical" in f.message]
    assert len(identical) == len(gd.REFERENCE_SHA256)
    loads = [f.message for f in findings if f.level == "ok" and f.message.startswith("loads as")]
    assert len(loads) == 3


def _copy_slice(scifact_slice: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "datasets" / "scifact"
    shutil.copytree(scifact_slice, dst)
    return dst


def _edit_lines(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(edit(lines)), encoding="utf-8")


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("no-qrels", "no qrels/<split>.tsv"),
        ("unknown-doc", "not in corpus.jsonl"),
        ("query-without-text", "have no query in queries.train.jsonl"),
        ("evidence-out-of-range", "has no sentence 999"),
        ("bad-json", "corpus.jsonl line 3: invalid JSON"),
        ("bad-score", "qrels/train.tsv line 2: score 'x' is not an integer"),
    ],
)
def test_check_flags_a_broken_beir_folder(tmp_path, scifact_slice, breakage, expected):
    folder = _copy_slice(scifact_slice, tmp_path)
    if breakage == "no-qrels":
        shutil.rmtree(folder / "qrels")
    elif breakage == "unknown-doc":
        _edit_lines(folder / "qrels" / "train.tsv", lambda ls: ls + ["0\tno-such-doc\t1\n"])
    elif breakage == "query-without-text":
        _edit_lines(folder / "queries.train.jsonl", lambda ls: ls[1:])
    elif breakage == "evidence-out-of-range":

        def edit(lines):
            first = json.loads(lines[0])
            first["evidence"][0]["sentences"] = [999]
            return [json.dumps(first) + "\n"] + lines[1:]

        _edit_lines(folder / "qrels" / "train.evidence.jsonl", edit)
    elif breakage == "bad-json":
        _edit_lines(folder / "corpus.jsonl", lambda ls: ls[:2] + ['{"_id": "x", \n'] + ls[2:])
    elif breakage == "bad-score":
        _edit_lines(folder / "qrels" / "train.tsv", lambda ls: [ls[0], ls[1].rsplit("\t", 1)[0] + "\tx\n"] + ls[2:])

    for target in (folder, folder.parent):  # the dataset folder itself, or the datasets folder
        messages = errors(gd.check(target))
        assert any(expected in m for m in messages), messages

    result = run_cli("check", folder.parent)
    assert result.exit_code == 1
    assert expected in result.output and "Traceback" not in result.output


def test_check_flags_broken_hotpotqa_and_tatqa_files(tmp_path):
    records = json.loads(shared("hotpotqa/dev50.json").read_text(encoding="utf-8"))
    contexts = json.loads(shared("tatqa/dev.json").read_text(encoding="utf-8"))
    root = tmp_path / "datasets"
    (root / "hotpotqa").mkdir(parents=True)
    (root / "tatqa").mkdir()
    # a raw HotpotQA file dropped in without converting
    (root / "hotpotqa" / "raw.json").write_text(json.dumps(raw_hotpotqa(records[:3])), encoding="utf-8")
    no_answer = [dict(r) for r in records[:3]]
    del no_answer[1]["answer"]
    (root / "hotpotqa" / "dev3.json").write_text(json.dumps(no_answer), encoding="utf-8")
    broken = json.loads(json.dumps(contexts[:2]))
    del broken[1]["questions"][0]["uid"]
    (root / "tatqa" / "dev.json").write_text(json.dumps(broken), encoding="utf-8")

    messages = errors(gd.check(root))
    assert any(
        "raw.json: question 0: supporting_facts and context must be" in m and "spanrag datasets convert hotpotqa" in m
        for m in messages
    ), messages
    assert any("dev3.json: question 1: no 'answer'" in m for m in messages), messages
    assert any("dev.json: context 1, question 0: no 'uid'" in m for m in messages), messages


def test_check_an_empty_or_missing_folder(tmp_path):
    assert "no dataset here" in errors(gd.check(tmp_path))[0]
    assert errors(gd.check(tmp_path / "nope")) == ["does not exist"]
    result = run_cli("check", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output


# -- fetch --------------------------------------------------------------------------------------
def test_fetch_offline_fails_with_a_message_not_a_traceback(tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    result = run_cli("fetch", "scifact", "--to", tmp_path / "data")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "cannot download https://scifact.s3-us-west-2.amazonaws.com/" in result.output
    assert "Temporary failure in name resolution" in result.output
    assert (
        f"spanrag datasets convert scifact --from data.tar.gz --from scifact.zip --to {tmp_path / 'data'}"
        in result.output
    )
    assert not (tmp_path / "data" / "scifact").exists()
    assert not (tmp_path / "data" / gd.DOWNLOADS).exists()  # nothing half-written left behind


def test_fetch_from_a_refused_connection(tmp_path, monkeypatch):
    """A real urllib failure, on loopback: a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = gd.DATASETS["tatqa"]
    source = dataclasses.replace(info.sources[0], url=f"http://127.0.0.1:{port}/tatqa_dataset_dev.json")
    monkeypatch.setitem(gd.DATASETS, "tatqa", dataclasses.replace(info, sources=(source,)))
    with pytest.raises(DatasetError, match=r"cannot download http://127\.0\.0\.1:\d+/tatqa_dataset_dev\.json"):
        gd.fetch("tatqa", tmp_path)
    assert not list(tmp_path.rglob("*.part"))


def test_fetch_all_downloads_converts_and_checks(tmp_path, monkeypatch, scifact_slice):
    """fetch end to end, with file:// URLs standing in for the public ones."""
    dev50 = shared("hotpotqa/dev50.json")
    tatqa = shared("tatqa/dev.json")
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    hotpot_raw = upstream / "hotpot_dev_distractor_v1.json"
    hotpot_raw.write_text(json.dumps(raw_hotpotqa(json.loads(dev50.read_text(encoding="utf-8")))), encoding="utf-8")
    release, beir = raw_scifact(scifact_slice, upstream)
    tarball = upstream / "data.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(release / "data", arcname="data")
    archive = upstream / "scifact.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(beir.rglob("*")):
            if p.is_file():
                z.write(p, f"scifact/{p.relative_to(beir).as_posix()}")
    local = {"scifact": (tarball, archive), "hotpotqa": (hotpot_raw,), "tatqa": (tatqa,)}
    for name, paths in local.items():
        info = gd.DATASETS[name]
        sources = tuple(dataclasses.replace(s, url=p.as_uri()) for s, p in zip(info.sources, paths))
        monkeypatch.setitem(gd.DATASETS, name, dataclasses.replace(info, sources=sources))

    out = tmp_path / "datasets"
    result = run_cli("fetch", "all", "--to", out)
    assert result.exit_code == 0, result.output
    assert f"spanrag eval --dataset beir:{out / 'scifact'} --split train" in result.output
    assert_same_files(out / "scifact", scifact_slice, SCIFACT_FILES)
    assert (out / "hotpotqa" / "dev50.json").read_bytes() == dev50.read_bytes()
    assert (out / "tatqa" / "dev.json").read_bytes() == tatqa.read_bytes()
    assert sorted(p.name for p in (out / gd.DOWNLOADS).iterdir()) == sorted(
        s.filename for info in gd.DATASETS.values() for s in info.sources
    )

    result = run_cli("check", out)
    assert result.exit_code == 0, result.output
    assert "error" not in result.output
    # a second fetch keeps what is there; the downloads are kept and reused
    result = run_cli("fetch", "all", "--to", out)
    assert result.exit_code == 0, result.output
    assert result.output.count("exists, kept") == 3
    result = run_cli("fetch", "hotpotqa", "--to", out, "--force", "--limit", "7")
    assert result.exit_code == 0, result.output
    assert "downloaded before" in result.output
    assert len(json.loads((out / "hotpotqa" / "dev7.json").read_text(encoding="utf-8"))) == 7


# -- the command --------------------------------------------------------------------------------
def test_list_names_every_source_and_licence():
    result = run_cli("list")
    assert result.exit_code == 0
    for info in gd.DATASETS.values():
        assert info.licence in result.output
        for source in info.sources:
            assert source.url in result.output


def test_usage_errors_are_messages():
    for args in (
        ["fetch", "scifact"],
        ["fetch", "--to", "x"],
        ["fetch", "squad", "--to", "x"],
        ["convert", "hotpotqa", "--to", "x"],
        ["frobnicate"],
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, args
        assert "error:" in result.output and "Traceback" not in result.output, args


def test_registered_in_the_spanrag_cli():
    from app import cli as app_cli

    names = {c.name for c in app_cli.cli.registered_commands}
    if "datasets" not in names:
        pytest.skip('app/cli.py does not register it yet: cli.command("datasets")(datasets_command)')
    result = CliRunner().invoke(app_cli.cli, ["datasets", "list"])
    assert result.exit_code == 0 and "hotpot_dev_distractor_v1.json" in result.output
