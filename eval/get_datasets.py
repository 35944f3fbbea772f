"""``spanrag datasets``: get the evaluation data behind the README's numbers, laid out the
way ``spanrag eval`` reads it.

    spanrag datasets list                                  # sources, licences, layout
    spanrag datasets fetch all --to ~/spanrag-datasets     # download and convert (needs a network)
    spanrag datasets convert hotpotqa --from hotpot_dev_distractor_v1.json --to ~/spanrag-datasets
    spanrag datasets convert scifact --from data.tar.gz --from scifact.zip --to ~/spanrag-datasets
    spanrag datasets check ~/spanrag-datasets              # validate a folder, or one dataset in it

The layout (the one ``../shared/datasets`` has in the project's own workspace)::

    DIR/scifact/corpus.jsonl                {_id, title, text, metadata{sentences, structured}}
    DIR/scifact/queries.train.jsonl         {_id, text}
    DIR/scifact/qrels/train.tsv             BEIR qrels, with header
    DIR/scifact/qrels/train.evidence.jsonl  {query-id, evidence[{doc, label, sentences}]}
    DIR/hotpotqa/dev50.json                 the first 50 questions of the distractor dev file
    DIR/tatqa/dev.json                      the TAT-QA dev file as published

which the eval commands take as ``--dataset beir:DIR/scifact --split train``,
``--dataset hotpotqa:DIR/hotpotqa/dev50.json`` and ``--dataset tatqa:DIR/tatqa/dev.json``.

Conversions (``convert`` and ``fetch`` run the same code):

* **SciFact** from the SciFact release (``data.tar.gz``: ``corpus.jsonl`` with each
  abstract as a list of sentences, ``claims_train.jsonl`` with rationales and
  ``cited_doc_ids``): the corpus text is the sentences joined by one space, the train
  qrels are each claim's ``cited_doc_ids`` (what BEIR's qrels are), the evidence file the
  claims' rationales. BEIR's ``scifact.zip`` (same corpus, ``queries.jsonl``,
  ``qrels/{train,test}.tsv``) is checked against it and supplies the ``test`` split; given
  alone it yields a corpus without sentences and no evidence file (no
  ``sentence_evidence_recall``).
* **HotpotQA** from ``hotpot_dev_distractor_v1.json`` (a list of ``{_id, question, answer,
  supporting_facts[[title, sent_id]], context[[title, sentences]], type, level}``; the
  Hugging Face ``hotpot_qa`` layout, with dicts of lists, is read too): the first
  ``--limit`` questions in file order (50 by default, 0 for all), renumbered
  ``hotpot-dev-000``..., rewritten with ``supporting_facts``/``context`` as dicts of lists.
* **TAT-QA** from ``tatqa_dataset_dev.json``: checked, then copied byte for byte.

Outputs are written whole and then renamed into place; an existing output is replaced
only with ``--force``. ``check`` reports, per file, whether it is byte-identical to the
file behind the README's numbers (:data:`REFERENCE_SHA256`), which also means the same
eval collection name.

Registered in ``app/cli.py`` with ``cli.command("datasets")(datasets_command)``; also
runnable as ``python -m eval.get_datasets ...``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import typer
from rich.console import Console

from eval.errors import DatasetError

console = Console(stderr=True, soft_wrap=True)  # long URLs and paths stay whole

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# -- what there is ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    url: str
    filename: str  # the name it is saved under in the download folder
    what: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    licence: str
    homepage: str
    sources: tuple[Source, ...]
    layout: str
    eval_args: str  # with {dir} for the datasets folder


DATASETS: dict[str, DatasetInfo] = {
    "scifact": DatasetInfo(
        "scifact",
        "SciFact (Wadden et al., 2020)",
        "claims and rationales CC BY 4.0, abstracts ODC-By 1.0 (allenai/scifact LICENSE.md)",
        "https://github.com/allenai/scifact",
        (
            Source(
                "https://scifact.s3-us-west-2.amazonaws.com/release/latest/data.tar.gz",
                "scifact-data.tar.gz",
                "SciFact release: abstracts as sentences, claims with rationales",
            ),
            Source(
                "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
                "scifact.zip",
                "BEIR's SciFact: corpus, queries, qrels/train.tsv, qrels/test.tsv",
            ),
        ),
        "scifact/{corpus.jsonl, queries.train.jsonl, qrels/train.tsv, qrels/train.evidence.jsonl}",
        "--dataset beir:{dir}/scifact --split train",
    ),
    "hotpotqa": DatasetInfo(
        "hotpotqa",
        "HotpotQA, distractor dev (Yang et al., 2018)",
        "CC BY-SA 4.0",
        "https://hotpotqa.github.io",
        (
            Source(
                "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
                "hotpot_dev_distractor_v1.json",
                "HotpotQA dev, distractor setting (7,405 questions)",
            ),
        ),
        "hotpotqa/dev50.json (the first 50 questions; --limit)",
        "--dataset hotpotqa:{dir}/hotpotqa/dev50.json",
    ),
    "tatqa": DatasetInfo(
        "tatqa",
        "TAT-QA dev (Zhu et al., 2021)",
        "CC BY 4.0",
        "https://github.com/NExTplusplus/TAT-QA",
        (
            Source(
                "https://raw.githubusercontent.com/NExTplusplus/TAT-QA/master/dataset_raw/tatqa_dataset_dev.json",
                "tatqa_dataset_dev.json",
                "TAT-QA dev: 278 contexts, 1,668 questions",
            ),
        ),
        "tatqa/dev.json",
        "--dataset tatqa:{dir}/tatqa/dev.json",
    ),
}
NAMES = tuple(DATASETS)
DEFAULT_HOTPOTQA_LIMIT = 50
DOWNLOADS = ".downloads"  # inside --to, unless --downloads says otherwise

# sha256 of the files behind the README's numbers (../shared/datasets): a converted file
# with the same hash is the same data, and names the same eval collection.
REFERENCE_SHA256 = {
    "scifact/corpus.jsonl": "0b1e8c439fab43a8a8a262605774639c121057eebd67a925a29b9e99ff16a99d",
    "scifact/queries.train.jsonl": "c74c48b3f82a7926c1a72947bb724f7ab651702a17e6cd2e85963a53eb2d3f62",
    "scifact/qrels/train.tsv": "c10cf828fd86e1a51f79e33e8ffe6aedc198a753f2d6be2d5a31c18a0086472b",
    "scifact/qrels/train.evidence.jsonl": "b27b94b5a67723a16285816b1782145acd30dd4ef9967748721654c308ca0181",
    "hotpotqa/dev50.json": "6cf7bdb18674e1808a2e66ec9e9a832217e8609a8c0099af0ae5eb7445675148",
    "tatqa/dev.json": "8da095a819af6db3c14877c6df2d4d29960e41d1a63dd1fa853507bd2a616af5",
}


# -- reading sources: a file, a folder, a .zip or a .tar(.gz) -----------------------------------
class _Files:
    """The files of a folder or archive by relative POSIX path (a plain file: its name)."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise DatasetError(f"--from path does not exist: {path}")
        import tarfile
        import zipfile

        self._zip = self._tar = None
        if path.is_dir():
            names = [p.relative_to(path).as_posix() for p in sorted(path.rglob("*")) if p.is_file()]
        elif self._looks_like_json(path):
            self.names = [path.name]
            return
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        elif tarfile.is_tarfile(path):
            self._tar = tarfile.open(path)
            names = [m.name for m in self._tar.getmembers() if m.isfile()]
        else:
            self.names = [path.name]
            return
        self.names = [n for n in names if not any(part.startswith((".", "__MACOSX")) for part in n.split("/"))]

    @staticmethod
    def _looks_like_json(path: Path) -> bool:
        with path.open("rb") as f:
            return f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{")

    def find(self, name: str) -> str | None:
        """The shallowest file whose path is ``name`` or ends in ``/name``."""
        hits = [n for n in self.names if n == name or n.endswith("/" + name)]
        return min(hits, key=lambda n: (n.count("/"), n)) if hits else None

    def sibling(self, of: str, name: str) -> str | None:
        parent = PurePosixPath(of).parent
        target = name if str(parent) == "." else f"{parent}/{name}"
        return target if target in self.names else None

    def read_bytes(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        if self._tar is not None:
            f = self._tar.extractfile(name)
            assert f is not None
            return f.read()
        return (self.path / name).read_bytes() if self.path.is_dir() else self.path.read_bytes()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def where(self, name: str) -> str:
        return f"{self.path}" if name == self.path.name and not self.path.is_dir() else f"{self.path}:{name}"


def _jsonl(files: _Files, name: str) -> list[dict]:
    out = []
    for line_no, line in enumerate(files.read_text(name).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{files.where(name)} line {line_no}: invalid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DatasetError(f"{files.where(name)} line {line_no}: expected a JSON object")
        out.append(record)
    return out


def _json(files: _Files, name: str) -> Any:
    try:
        return json.loads(files.read_text(name))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{files.where(name)}: invalid JSON at line {exc.lineno} ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{files.where(name)}: not UTF-8 text ({exc.reason})") from exc


def _qrels_rows(text: str, where: str) -> list[tuple[str, str, int]]:
    rows = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text), delimiter="\t"), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise DatasetError(f"{where} line {line_no}: expected query-id, corpus-id and score separated by tabs")
        try:
            score = int(row[-1].strip())
        except ValueError:
            if line_no == 1:
                continue  # the header
            raise DatasetError(f"{where} line {line_no}: score {row[-1]!r} is not an integer") from None
        rows.append((row[0].strip(), row[1].strip(), score))
    return rows


# -- writing ------------------------------------------------------------------------------------
def _dumps_jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def _prepare(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise DatasetError(f"{target} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)


def _write_file(target: Path, data: bytes, force: bool) -> Path:
    _prepare(target, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _write_folder(target: Path, files: dict[str, bytes], force: bool) -> Path:
    """Write ``{relative path: bytes}`` into a fresh folder, then swap it in for ``target``."""
    _prepare(target, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# -- SciFact ------------------------------------------------------------------------------------
@dataclass
class _SciFactSources:
    release: tuple[_Files, str] | None = None  # (files, path of the release's corpus.jsonl)
    claims: list[tuple[_Files, str]] = field(default_factory=list)  # claims_train/dev.jsonl
    beir: tuple[_Files, str] | None = None  # (files, path of BEIR's corpus.jsonl)


def _scifact_sources(paths: list[Path]) -> _SciFactSources:
    found = _SciFactSources()
    for path in paths:
        files = _Files(path)
        used = False
        claims = files.find("claims_train.jsonl") or files.find("claims_dev.jsonl")
        if claims is not None:
            corpus = files.sibling(claims, "corpus.jsonl")
            if corpus is None:
                raise DatasetError(f"{files.where(claims)}: no corpus.jsonl beside it (the SciFact release has both)")
            found.release = (files, corpus)
            for name in ("claims_train.jsonl", "claims_dev.jsonl"):
                sibling = files.sibling(claims, name)
                if sibling:
                    found.claims.append((files, sibling))
            used = True
        queries = files.find("queries.jsonl")
        if queries is not None:
            corpus = files.sibling(queries, "corpus.jsonl")
            if corpus is None:
                raise DatasetError(f"{files.where(queries)}: no corpus.jsonl beside it (BEIR's scifact.zip has both)")
            found.beir = (files, corpus)
            used = True
        if not used:
            raise DatasetError(
                f"{path} is neither the SciFact release (data.tar.gz, or its folder: corpus.jsonl and "
                "claims_train.jsonl) nor BEIR's scifact.zip (or its folder: corpus.jsonl, queries.jsonl, qrels/)"
            )
    return found


def convert_scifact(
    sources: list[Path], to: Path, splits: tuple[str, ...] = ("train",), force: bool = False, log: Log = _quiet
) -> Path:
    """Lay out SciFact as ``to/scifact`` (see the module docstring); returns that folder."""
    for split in splits:
        if split not in ("train", "test"):
            raise DatasetError(f"SciFact splits: train, test; got {split!r}")
    src = _scifact_sources(sources)
    notes: list[str] = []
    out: dict[str, bytes] = {}

    beir_corpus: list[dict] = []
    beir_queries: dict[str, str] = {}
    if src.beir is not None:
        files, corpus_name = src.beir
        beir_corpus = _jsonl(files, corpus_name)
        queries_name = files.sibling(corpus_name, "queries.jsonl")
        assert queries_name is not None  # the corpus was found beside queries.jsonl (_scifact_sources)
        for r in _jsonl(files, queries_name):
            beir_queries[str(r["_id"])] = r.get("text", "")

    def beir_qrels(split: str) -> list[tuple[str, str, int]] | None:
        if src.beir is None:
            return None
        files, corpus_name = src.beir
        name = files.sibling(corpus_name, f"qrels/{split}.tsv")
        return None if name is None else _qrels_rows(files.read_text(name), files.where(name))

    # corpus
    if src.release is not None:
        files, corpus_name = src.release
        records = []
        for r in _jsonl(files, corpus_name):
            try:
                sentences = [str(s) for s in r["abstract"]]
                records.append(
                    {
                        "_id": str(r["doc_id"]),
                        "title": r.get("title", ""),
                        "text": " ".join(sentences),
                        "metadata": {"sentences": sentences, "structured": bool(r.get("structured", False))},
                    }
                )
            except (KeyError, TypeError) as exc:
                raise DatasetError(f"{files.where(corpus_name)}: a record without doc_id/abstract ({exc})") from exc
        if beir_corpus:
            by_id = {r["_id"]: r for r in records}
            differ = sum(1 for b in beir_corpus if by_id.get(str(b.get("_id")), {}).get("text") != b.get("text"))
            if differ:
                notes.append(
                    f"{differ} BEIR corpus record(s) differ from the release's joined sentences; "
                    "the release's text is kept (evidence sentences are located in it)"
                )
    elif beir_corpus:
        records = beir_corpus
        notes.append(
            "no SciFact release given: the corpus has no metadata.sentences and there is no evidence "
            "file, so sentence_evidence_recall is not computed (add --from data.tar.gz)"
        )
    else:
        raise DatasetError("SciFact needs its corpus: the release (data.tar.gz) or BEIR's scifact.zip")
    out["corpus.jsonl"] = _dumps_jsonl(records)
    corpus_ids = {r["_id"] for r in records}

    claims: dict[str, dict] = {}
    claims_split: dict[str, list[str]] = {}
    for files, name in src.claims:
        split = "train" if name.endswith("claims_train.jsonl") else "dev"
        for r in _jsonl(files, name):
            qid = str(r["id"])
            claims[qid] = r
            claims_split.setdefault(split, []).append(qid)

    for split in splits:
        rows = beir_qrels(split)
        from_claims = split == "train" and "train" in claims_split
        if from_claims:
            cited = [(qid, str(d), 1) for qid in claims_split["train"] for d in claims[qid].get("cited_doc_ids", [])]
            if rows is not None and sorted(rows) != sorted(cited):
                notes.append("BEIR's qrels/train.tsv differs from the claims' cited_doc_ids; the claims are used")
            rows = cited
        if rows is None:
            raise DatasetError(
                f"no qrels for the {split} split: the test split comes from BEIR's "
                "qrels/test.tsv (add --from scifact.zip)"
            )
        qids = list(dict.fromkeys(q for q, _, _ in rows))
        queries = []
        for qid in qids:
            text = claims[qid]["claim"] if from_claims else beir_queries.get(qid)
            if text is None:
                raise DatasetError(f"SciFact {split}: query {qid} has qrels but no text in the claims or queries.jsonl")
            queries.append({"_id": qid, "text": text})
        # rationales of the same claim (ids are global across the release's files)
        same_claim = {q["_id"] for q in queries if q["_id"] in claims and claims[q["_id"]].get("claim") == q["text"]}
        missing = sorted({d for _, d, _ in rows if d not in corpus_ids})
        if missing:
            raise DatasetError(
                f"SciFact {split}: {len(missing)} judged document(s) not in the corpus, e.g. {missing[0]}"
            )
        out[f"queries.{split}.jsonl"] = _dumps_jsonl(queries)
        out[f"qrels/{split}.tsv"] = (
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        ).encode("utf-8")
        evidence = []
        for qid in qids:
            if qid not in same_claim:
                continue
            items = [
                {"doc": str(doc), "label": r.get("label", ""), "sentences": list(r.get("sentences", []))}
                for doc, rationales in (claims[qid].get("evidence") or {}).items()
                for r in rationales
            ]
            if items:
                evidence.append({"query-id": qid, "evidence": items})
        if evidence:
            out[f"qrels/{split}.evidence.jsonl"] = _dumps_jsonl(evidence)
        log(f"scifact {split}: {len(queries)} queries, {len(rows)} qrels, {len(evidence)} with evidence sentences")
    target = _write_folder(to / "scifact", out, force)
    for note in notes:
        log(f"note: {note}")
    log(f"scifact: {len(records)} documents -> {target}")
    return target


# -- HotpotQA -----------------------------------------------------------------------------------
def _hotpot_record(raw: dict, index: int, new_id: str) -> dict:
    try:
        sf, ctx = raw["supporting_facts"], raw["context"]
        if isinstance(sf, dict):  # the Hugging Face layout already
            sf_title, sf_sent = list(sf["title"]), list(sf["sent_id"])
        else:
            sf_title, sf_sent = [str(t) for t, _ in sf], [int(i) for _, i in sf]
        if isinstance(ctx, dict):
            titles, sentences = list(ctx["title"]), [list(s) for s in ctx["sentences"]]
        else:
            titles, sentences = [str(t) for t, _ in ctx], [list(s) for _, s in ctx]
        return {
            "question": raw["question"],
            "answer": raw["answer"],
            "type": raw.get("type"),
            "level": raw.get("level"),
            "supporting_facts": {"title": sf_title, "sent_id": sf_sent},
            "context": {"title": titles, "sentences": sentences},
            "id": new_id,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"HotpotQA record {index}: not in the HotpotQA layout ({type(exc).__name__}: {exc})"
        ) from exc


def convert_hotpotqa(
    source: Path, to: Path, limit: int | None = DEFAULT_HOTPOTQA_LIMIT, force: bool = False, log: Log = _quiet
) -> Path:
    """The first ``limit`` questions (file order; None or 0: all) as ``to/hotpotqa/dev<limit>.json``."""
    files = _Files(source)
    name = files.find("hotpot_dev_distractor_v1.json") or (files.names[0] if len(files.names) == 1 else None)
    if name is None:
        raise DatasetError(f"{source}: give the HotpotQA JSON file itself (hotpot_dev_distractor_v1.json)")
    text = files.read_text(name)
    if text.lstrip().startswith("["):
        records = _json(files, name)
    else:  # JSON Lines (a Hugging Face export)
        records = _jsonl(files, name)
    if not isinstance(records, list) or not records:
        raise DatasetError(f"{files.where(name)}: expected a non-empty JSON list of HotpotQA questions")
    split = "train" if "train" in PurePosixPath(name).stem else "dev"
    total = len(records)
    if limit:
        records = records[:limit]
    out = [_hotpot_record(r, i, f"hotpot-{split}-{i:03d}") for i, r in enumerate(records)]
    for warning in _check_hotpot_records(out, files.where(name)):
        log(f"note: {warning}")
    target = to / "hotpotqa" / (f"{split}{limit}.json" if limit else f"{split}.json")
    _write_file(target, json.dumps(out).encode("utf-8"), force)
    log(f"hotpotqa: {len(out)} of {total} questions -> {target}")
    return target


def _check_hotpot_records(records: list, where: str) -> list[str]:
    """Raises on what the loader cannot read; returns warnings (supporting facts that point
    outside their question's paragraphs, which the published data has a few of)."""
    seen, outside = set(), []
    for i, r in enumerate(records):
        where_i = f"{where}: question {i}"
        if not isinstance(r, dict):
            raise DatasetError(f"{where_i}: not a JSON object")
        for key in ("question", "answer", "supporting_facts", "context"):
            if key not in r:
                raise DatasetError(f"{where_i}: no {key!r}")
        qid = str(r.get("id", r.get("_id", i)))
        if qid in seen:
            raise DatasetError(f"{where_i}: duplicate id {qid!r}")
        seen.add(qid)
        sf, ctx = r["supporting_facts"], r["context"]
        if not (isinstance(sf, dict) and isinstance(ctx, dict)):
            raise DatasetError(
                f"{where_i}: supporting_facts and context must be {{title: [...], ...}} "
                "(lay out the raw file with `spanrag datasets convert hotpotqa`)"
            )
        titles, sentences = ctx.get("title"), ctx.get("sentences")
        if not isinstance(titles, list) or not isinstance(sentences, list) or len(titles) != len(sentences):
            raise DatasetError(f"{where_i}: context.title and context.sentences must be lists of one length")
        if not all(isinstance(s, list) for s in sentences):
            raise DatasetError(f"{where_i}: context.sentences must be a list of sentence lists")
        sf_titles, sf_sents = sf.get("title"), sf.get("sent_id")
        if not isinstance(sf_titles, list) or not isinstance(sf_sents, list) or len(sf_titles) != len(sf_sents):
            raise DatasetError(f"{where_i}: supporting_facts.title and .sent_id must be lists of one length")
        for title, sent in zip(sf_titles, sf_sents):
            if title not in titles:
                outside.append(f"{qid}: {title!r} is not one of its paragraphs")
            elif not isinstance(sent, int) or not 0 <= sent < len(sentences[titles.index(title)]):
                outside.append(f"{qid}: {title!r} has no sentence {sent!r}")
    if outside:
        return [f"{len(outside)} supporting fact(s) point outside their question's paragraphs, e.g. {outside[0]}"]
    return []


# -- TAT-QA -------------------------------------------------------------------------------------
def _check_tatqa_contexts(contexts: Any, where: str) -> list[str]:
    """Raises on what the loader cannot read; returns warnings (unresolved paragraph refs)."""
    if not isinstance(contexts, list) or not contexts:
        raise DatasetError(f"{where}: expected a non-empty JSON list of TAT-QA contexts")
    warnings, unresolved, seen = [], 0, set()
    for i, c in enumerate(contexts):
        where_i = f"{where}: context {i}"
        table = c.get("table") if isinstance(c, dict) else None
        if not isinstance(table, dict) or "uid" not in table or not isinstance(table.get("table"), list):
            raise DatasetError(f"{where_i}: no table {{uid, table: [[cell]]}}")
        if not all(isinstance(row, list) for row in table["table"]):
            raise DatasetError(f"{where_i}: table.table must be a list of rows (lists of cells)")
        paragraphs = c.get("paragraphs", [])
        refs = set()
        for p in paragraphs:
            if not isinstance(p, dict) or "text" not in p:
                raise DatasetError(f"{where_i}: a paragraph without text")
            refs |= {str(p.get("order")), str(p.get("uid"))}
        for j, q in enumerate(c.get("questions", [])):
            for key in ("uid", "question", "answer"):
                if not isinstance(q, dict) or key not in q:
                    raise DatasetError(f"{where_i}, question {j}: no {key!r}")
            if str(q["uid"]) in seen:
                raise DatasetError(f"{where_i}, question {j}: duplicate uid {q['uid']!r}")
            seen.add(str(q["uid"]))
            unresolved += sum(1 for ref in q.get("rel_paragraphs") or [] if str(ref) not in refs)
    if not seen:
        raise DatasetError(f"{where}: no questions")
    if unresolved:
        warnings.append(f"{unresolved} rel_paragraphs reference(s) name no paragraph of their context")
    return warnings


def convert_tatqa(source: Path, to: Path, force: bool = False, log: Log = _quiet) -> Path:
    """Check a TAT-QA file and copy it, unchanged, to ``to/tatqa/<split>.json``."""
    files = _Files(source)
    name = files.find("tatqa_dataset_dev.json") or (files.names[0] if len(files.names) == 1 else None)
    if name is None:
        raise DatasetError(f"{source}: give the TAT-QA JSON file itself (tatqa_dataset_dev.json)")
    data = files.read_bytes(name)
    contexts = _json(files, name)
    for warning in _check_tatqa_contexts(contexts, files.where(name)):
        log(f"note: {warning}")
    match = re.search(r"(train|dev|test)", PurePosixPath(name).stem)
    target = to / "tatqa" / f"{match.group(1) if match else 'dev'}.json"
    _write_file(target, data, force)
    n = sum(len(c.get("questions", [])) for c in contexts)
    log(f"tatqa: {len(contexts)} contexts, {n} questions -> {target}")
    return target


def convert(
    name: str,
    sources: list[Path],
    to: Path,
    *,
    limit: int | None = DEFAULT_HOTPOTQA_LIMIT,
    splits: tuple[str, ...] = ("train",),
    force: bool = False,
    log: Log = _quiet,
) -> Path:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")
    if not sources:
        raise DatasetError(f"give the downloaded file(s) with --from (see `spanrag datasets list` for {name}'s)")
    if name == "scifact":
        return convert_scifact(sources, to, splits, force, log)
    if len(sources) != 1:
        raise DatasetError(f"{name} takes one --from file")
    if name == "hotpotqa":
        return convert_hotpotqa(sources[0], to, limit, force, log)
    return convert_tatqa(sources[0], to, force, log)


# -- download -----------------------------------------------------------------------------------
def download(url: str, dest: Path, log: Log = _quiet, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` (kept and reused when present); a DatasetError, never a
    traceback, when the network is not there."""
    import http.client
    import urllib.error
    import urllib.request

    if dest.is_file() and dest.stat().st_size > 0:
        log(f"using {dest} (downloaded before)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        os.replace(part, dest)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, refused, bad URL
        part.unlink(missing_ok=True)
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
        raise DatasetError(f"cannot download {url}: {reason}") from exc
    log(f"  {dest.stat().st_size / 1e6:.1f} MB -> {dest}")
    return dest


def output_path(name: str, to: Path, limit: int | None = DEFAULT_HOTPOTQA_LIMIT) -> Path:
    """Where ``convert``/``fetch`` put ``name`` (the published dev files)."""
    if name == "scifact":
        return to / "scifact"
    if name == "hotpotqa":
        return to / "hotpotqa" / (f"dev{limit}.json" if limit else "dev.json")
    return to / "tatqa" / "dev.json"


def fetch(
    name: str,
    to: Path,
    *,
    downloads: Path | None = None,
    limit: int | None = DEFAULT_HOTPOTQA_LIMIT,
    splits: tuple[str, ...] = ("train",),
    force: bool = False,
    log: Log = _quiet,
) -> Path:
    """Download ``name``'s public files into ``downloads`` (default ``to/.downloads``) and
    convert them into ``to``. An output that exists already is kept (``force``: replaced)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(NAMES)} (or all)")
    existing = output_path(name, to, limit)
    if existing.exists() and not force:
        log(f"{name}: {existing} exists, kept (--force replaces it; `spanrag datasets check` validates it)")
        return existing
    folder = downloads or to / DOWNLOADS
    sources = DATASETS[name].sources
    try:
        files = [download(s.url, folder / s.filename, log) for s in sources]
    except DatasetError as exc:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        import urllib.parse

        by_hand = " ".join(f"--from {PurePosixPath(urllib.parse.urlparse(s.url).path).name}" for s in sources)
        raise DatasetError(
            f"{exc}\nNo network here? Download {' and '.join(s.url for s in sources)} by hand (a browser, "
            f"curl) and lay {'them' if len(sources) > 1 else 'it'} out with:\n"
            f"  spanrag datasets convert {name} {by_hand} --to {to}"
        ) from exc
    return convert(name, files, to, limit=limit, splits=splits, force=force, log=log)


# -- check --------------------------------------------------------------------------------------
@dataclass
class Finding:
    level: str  # "ok", "info", "warning", "error"
    dataset: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.dataset}: {self.message}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reference(path: Path, rel: str, label: str) -> Finding | None:
    expected = REFERENCE_SHA256.get(rel)
    if expected is None:
        return None
    which = "" if rel == label else f"{rel}: "
    if _sha256(path) == expected:
        return Finding("info", label, f"{which}byte-identical to the data behind the README's numbers")
    return Finding(
        "info",
        label,
        f"{which}differs from the data behind the README's numbers "
        "(another slice or upstream version; results may differ)",
    )


def _check_beir(folder: Path, label: str) -> list[Finding]:
    found: list[Finding] = []
    err = lambda m: found.append(Finding("error", label, m))  # noqa: E731
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        return [Finding("error", label, f"no corpus.jsonl in {folder}")]
    docs: dict[str, list] = {}
    with_sentences = 0
    with corpus.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                err(f"corpus.jsonl line {line_no}: invalid JSON ({exc.msg})")
                return found
            if not isinstance(r, dict) or "_id" not in r:
                err(f"corpus.jsonl line {line_no}: a record without _id")
                return found
            doc_id = str(r["_id"])
            if doc_id in docs:
                err(f"corpus.jsonl line {line_no}: duplicate _id {doc_id!r}")
            if not str(r.get("text", "")).strip() and not str(r.get("title", "")).strip():
                err(f"corpus.jsonl line {line_no}: document {doc_id!r} has neither title nor text")
            sentences = (r.get("metadata") or {}).get("sentences")
            with_sentences += isinstance(sentences, list)
            docs[doc_id] = sentences if isinstance(sentences, list) else []
    qrels_dir = folder / "qrels"
    splits = sorted(p.name[:-4] for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not splits:
        err(f"no qrels/<split>.tsv in {folder}")
        return found
    for split in splits:
        try:
            rows = _qrels_rows((qrels_dir / f"{split}.tsv").read_text(encoding="utf-8"), f"qrels/{split}.tsv")
        except DatasetError as exc:
            err(str(exc))
            continue
        queries_path = next(
            (p for p in (folder / f"queries.{split}.jsonl", folder / "queries.jsonl") if p.is_file()), None
        )
        if queries_path is None:
            err(f"split {split}: no queries.{split}.jsonl or queries.jsonl")
            continue
        try:
            queries = {str(r["_id"]): r for r in _jsonl(_Files(folder), queries_path.name)}
        except (DatasetError, KeyError) as exc:
            err(f"{queries_path.name}: {exc}")
            continue
        qids = set(q for q, _, _ in rows)
        no_text = sorted(qids - set(queries))
        if no_text:
            err(
                f"split {split}: {len(no_text)} judged query id(s) have no query in {queries_path.name}, e.g. {no_text[0]!r}"
            )
        unknown = sorted({d for _, d, _ in rows if d not in docs})
        if unknown:
            err(f"split {split}: {len(unknown)} judged document(s) are not in corpus.jsonl, e.g. {unknown[0]!r}")
        evidence_path = qrels_dir / f"{split}.evidence.jsonl"
        n_evidence = 0
        if evidence_path.is_file():
            try:
                evidence = _jsonl(_Files(folder), f"qrels/{split}.evidence.jsonl")
            except DatasetError as exc:
                err(str(exc))
                evidence = []
            for r in evidence:
                qid = str(r.get("query-id"))
                if qid not in qids:
                    err(f"qrels/{split}.evidence.jsonl: query {qid!r} is not in qrels/{split}.tsv")
                    break
                try:
                    bad = next(
                        (
                            (e["doc"], i)
                            for e in r["evidence"]
                            for i in e["sentences"]
                            if not 0 <= int(i) < len(docs.get(str(e["doc"]), []))
                        ),
                        None,
                    )
                except (KeyError, TypeError, ValueError):
                    err(
                        f"qrels/{split}.evidence.jsonl: query {qid!r}: evidence must be "
                        "[{doc, label, sentences: [index]}]"
                    )
                    break
                if bad is not None:
                    doc = str(bad[0])
                    err(
                        f"qrels/{split}.evidence.jsonl: query {qid!r}: "
                        + (
                            f"document {doc!r} has no sentence {bad[1]} in metadata.sentences"
                            if doc in docs
                            else f"document {doc!r} is not in corpus.jsonl"
                        )
                    )
                    break
            n_evidence = len(evidence)
        if not [e for e in found if e.level == "error"]:
            found.append(
                Finding(
                    "ok",
                    label,
                    f"split {split}: {len(qids)} queries, {len(rows)} qrels"
                    + (f", {n_evidence} with evidence sentences" if n_evidence else ""),
                )
            )
    if with_sentences == 0:
        found.append(
            Finding("warning", label, "no document has metadata.sentences: sentence_evidence_recall is not computed")
        )
    for rel in ("corpus.jsonl", "queries.train.jsonl", "qrels/train.tsv", "qrels/train.evidence.jsonl"):
        if (folder / rel).is_file() and folder.name == "scifact":
            ref = _reference(folder / rel, f"scifact/{rel}", label)
            if ref:
                found.append(ref)
    return found


def _check_json_file(path: Path, kind: str, label: str) -> list[Finding]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [Finding("error", label, f"{path.name}: not valid UTF-8 JSON ({exc})")]
    try:
        if kind == "hotpotqa":
            if not isinstance(data, list) or not data:
                raise DatasetError(f"{path.name}: expected a non-empty JSON list of HotpotQA questions")
            warnings = _check_hotpot_records(data, path.name)
        else:
            warnings = _check_tatqa_contexts(data, path.name)
    except DatasetError as exc:
        return [Finding("error", label, str(exc))]
    found = [Finding("warning", label, w) for w in warnings]
    n = len(data) if kind == "hotpotqa" else sum(len(c.get("questions", [])) for c in data)
    found.append(Finding("ok", label, f"{n} questions"))
    ref = _reference(path, f"{path.parent.name}/{path.name}", label)
    return found + ([ref] if ref else [])


def _guess_kind(path: Path) -> str | None:
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    if "table" in first and "questions" in first:
        return "tatqa"
    if "supporting_facts" in first and "context" in first:
        return "hotpotqa"
    return None


def _load_check(kind: str, path: Path, label: str) -> list[Finding]:
    """What the harness itself makes of it (eval.datasets.load_dataset)."""
    from eval.datasets import load_dataset

    splits: Sequence[str | None] = [None]
    if kind == "beir":
        splits = sorted(p.name[:-4] for p in (path / "qrels").glob("*.tsv"))
    found = []
    for split in splits:
        try:
            ds = load_dataset(kind, path, split)
        except DatasetError as exc:
            found.append(Finding("error", label, f"spanrag eval cannot load it: {exc}"))
            continue
        for note in ds.notes:
            found.append(Finding("warning", label, note))
        found.append(
            Finding(
                "ok",
                label,
                f"loads as {kind}:{path}" + (f" --split {split}" if split else "") + f" ({len(ds.queries)} queries)",
            )
        )
    return found


def check(path: Path) -> list[Finding]:
    """Validate a datasets folder (``scifact/``, ``hotpotqa/*.json``, ``tatqa/*.json``), one
    dataset folder, or one file against the layout ``spanrag eval`` reads."""
    path = Path(path)
    if not path.exists():
        return [Finding("error", str(path), "does not exist")]
    targets: list[tuple[str, Path, str]] = []  # (kind, path, label)
    kind = _guess_kind(path)
    if kind is not None:
        targets.append((kind, path, path.name))
    elif path.is_file():
        return [Finding("error", path.name, "neither a HotpotQA nor a TAT-QA file (see `spanrag datasets list`)")]
    else:
        skipped = []
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            if child.is_dir() and (child / "corpus.jsonl").is_file():
                targets.append(("beir", child, child.name))
            elif child.is_dir() and child.name in ("hotpotqa", "tatqa"):
                files = sorted(child.glob("*.json"))
                if not files:
                    targets.append((child.name, child / f"(no {child.name} JSON file)", child.name))
                targets += [(child.name, f, f"{child.name}/{f.name}") for f in files]
            elif child.is_dir() and child.name == "scifact":
                targets.append(("beir", child, child.name))
            elif child.is_dir():
                skipped.append(child.name)
        if not targets:
            return [
                Finding(
                    "error",
                    str(path),
                    "no dataset here: expected scifact/ (a BEIR folder), "
                    "hotpotqa/*.json or tatqa/*.json (`spanrag datasets fetch all --to DIR`)",
                )
            ]
        missing = [n for n in ("scifact", "hotpotqa", "tatqa") if not (path / n).exists()]
        findings = [Finding("info", str(path), f"not here: {', '.join(missing)}")] if missing else []
        findings += [Finding("info", str(path), f"skipped {name}/ (not an eval dataset layout)") for name in skipped]
        return findings + [f for kind, p, label in targets for f in _check_one(kind, p, label)]
    return [f for kind, p, label in targets for f in _check_one(kind, p, label)]


def _check_one(kind: str, path: Path, label: str) -> list[Finding]:
    if not path.exists():
        return [Finding("error", label, f"{path} does not exist")]
    found = _check_beir(path, label) if kind == "beir" else _check_json_file(path, kind, label)
    if not any(f.level == "error" for f in found):
        found += _load_check(kind, path, label)
    return found


# -- the command --------------------------------------------------------------------------------
def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def _print_list() -> None:
    for info in DATASETS.values():
        print(f"{info.name}: {info.title}\n  licence: {info.licence}\n  home: {info.homepage}")
        for s in info.sources:
            print(f"  source: {s.url}\n          {s.what}")
        print(f"  layout: DIR/{info.layout}")
        print(f"  eval:   spanrag eval {info.eval_args.format(dir='DIR')} ...")


def datasets_command(
    action: str = typer.Argument(..., help="list | fetch | convert | check"),
    target: str | None = typer.Argument(
        None, help="fetch, convert: scifact, hotpotqa or tatqa (fetch: also all); check: a folder or file"
    ),
    to: Path | None = typer.Option(
        None, "--to", help="datasets folder to write into (it gets scifact/, hotpotqa/, tatqa/)"
    ),
    from_: list[Path] | None = typer.Option(
        None, "--from", help="convert: a downloaded file, archive or unpacked folder (scifact: repeat for both)"
    ),
    limit: int = typer.Option(
        DEFAULT_HOTPOTQA_LIMIT, "--limit", min=0, help="hotpotqa: keep the first N questions (0: all)"
    ),
    split: list[str] | None = typer.Option(
        None, "--split", help="scifact: train (default) and/or test (test needs BEIR's scifact.zip)"
    ),
    downloads: Path | None = typer.Option(
        None, "--downloads", help="fetch: keep downloads here (default: <--to>/.downloads; reused)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an existing converted dataset"),
) -> None:
    """Get the eval datasets (SciFact, HotpotQA, TAT-QA) in the layout `spanrag eval` reads.

    list: each dataset's sources, licence and layout.

    fetch NAME --to DIR: download and lay out (NAME: scifact, hotpotqa, tatqa or all).

    convert NAME --from FILE --to DIR: lay out files downloaded by hand.

    check DIR: validate a datasets folder, one dataset folder or one file.
    """
    log = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    action = action.lower()
    splits = tuple(dict.fromkeys(split or ["train"]))
    hotpot_limit = limit or None
    try:
        if action == "list":
            _print_list()
        elif action in ("fetch", "convert"):
            if not target:
                _fail(f"usage: spanrag datasets {action} NAME --to DIR (NAME: {', '.join(NAMES)})")
            if to is None:
                _fail("--to DIR is required (the datasets folder, e.g. ~/spanrag-datasets)")
            names = list(NAMES) if (action == "fetch" and target.lower() == "all") else [target.lower()]
            if action == "fetch":
                outputs = [
                    fetch(n, to, downloads=downloads, limit=hotpot_limit, splits=splits, force=force, log=log)
                    for n in names
                ]
            else:
                outputs = [
                    convert(names[0], list(from_ or []), to, limit=hotpot_limit, splits=splits, force=force, log=log)
                ]
            for out in outputs:
                kind = "beir" if out.is_dir() else out.parent.name
                extra = f" --split {splits[0]}" if kind == "beir" else ""
                log(f"use it with: spanrag eval --dataset {kind}:{out}{extra} ...")
        elif action == "check":
            if not target:
                _fail("usage: spanrag datasets check DIR (a datasets folder, one dataset folder, or a file)")
            findings = check(Path(target).expanduser())
            for f in findings:
                print(f, flush=True)
            errors = sum(f.level == "error" for f in findings)
            if errors:
                console.print(
                    f"{errors} problem(s): this folder does not have the layout spanrag eval reads "
                    "(`spanrag datasets list` shows it)",
                    highlight=False,
                )
                raise typer.Exit(1)
        else:
            _fail(f"unknown action {action!r}: list, fetch, convert or check")
    except DatasetError as exc:
        _fail(str(exc))


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(datasets_command)
    app()


if __name__ == "__main__":
    main()
