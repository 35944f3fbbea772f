"""Evaluation datasets: BEIR folders, HotpotQA (distractor layout) and TAT-QA, loaded into
one :class:`EvalDataset`.

    >>> ds = load_dataset("beir", Path("../shared/datasets/scifact"), "train")   # doctest: +SKIP
    >>> ds.ingest(rag)                                                           # doctest: +SKIP
    >>> rag.retrieve(ds.collection_name(rag.settings.embedding_model), ds.queries[0].text)  # doctest: +SKIP

Gold data per query:

* ``answers``: gold answer strings for ``answer_em``/``answer_f1`` (max over them); empty
  when the dataset has none (BEIR).
* ``context_answers``: strings for ``answer_in_context``, or None when the query does not
  count (BEIR; HotpotQA yes/no answers; TAT-QA answers that are not ``span``/``multi-span``).
  ``require_all`` is True for a TAT-QA multi-span answer: every span must be in the context.
* ``evidence``: gold evidence units (:class:`eval.metrics.EvidenceUnit`).
* ``evidence_sentences``: finer gold evidence where the dataset marks sentences (SciFact's
  rationale sentences, HotpotQA's supporting facts, as character ranges of the document):
  ``sentence_evidence_recall``, and ``cited_precision``/``cited_recall`` of the answer's
  citations.

The collection a dataset is ingested into is named by content:
``eval-<kind>-<sha256(dataset file)[:10]>-<sha256(model name)[:6]>`` (for BEIR the file is
``corpus.jsonl``), so a second run reuses it and a changed file or model gets a new one.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import DatasetError
from eval.metrics import EvidenceUnit
from indexing.parsers.base import Block, ParsedDocument, TableRow
from indexing.parsers.jsonl import parse_record

KINDS = ("beir", "hotpotqa", "tatqa")


@dataclass
class EvalQuery:
    id: str
    text: str
    answers: list[str] = field(default_factory=list)
    evidence: list[EvidenceUnit] = field(default_factory=list)
    context_answers: list[str] | None = None
    require_all: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    evidence_sentences: list[EvidenceUnit] = field(default_factory=list)

    def gold(self, qrels: dict[str, int] | None) -> dict:
        """The gold data a run file carries for this query (enough to recompute metrics)."""
        return {
            "qrels": dict(qrels or {}),
            "answers": list(self.answers),
            "context_answers": None if self.context_answers is None else list(self.context_answers),
            "require_all": self.require_all,
            "evidence": [u.as_dict() for u in self.evidence],
            "evidence_sentences": [u.as_dict() for u in self.evidence_sentences],
        }


@dataclass
class EvalDataset:
    name: str
    kind: str
    split: str
    source_file: Path  # the file whose bytes name the collection
    queries: list[EvalQuery]
    qrels: dict[str, dict[str, int]]
    corpus_path: Path | None = None  # BEIR: ingested with RagService.ingest_paths
    corpus_docs: list[ParsedDocument] | None = None  # HotpotQA/TAT-QA: built here
    notes: list[str] = field(default_factory=list)

    @property
    def has_qrels(self) -> bool:
        return bool(self.qrels)

    def collection_name(self, model_name: str) -> str:
        """``model_name``: what made the vectors (``Settings.vector_recipe``), so that another
        model, backend or pooling builds a collection of its own."""
        data_hash = hashlib.sha256(self.source_file.read_bytes()).hexdigest()[:10]
        model_hash = hashlib.sha256(model_name.encode()).hexdigest()[:6]
        return f"eval-{self.kind}-{data_hash}-{model_hash}"

    def ingest(self, rag, progress=None) -> tuple[str, dict]:
        """Ingest the corpus (a no-op when unchanged); returns (collection, report dict)."""
        collection = self.collection_name(rag.settings.vector_recipe())
        if self.corpus_path is not None:
            report = rag.ingest_paths(collection, [self.corpus_path], progress)
        else:
            report = rag.ingest_parsed(collection, f"eval:{self.kind}:{self.name}", self.corpus_docs or [])
        if report.failed:
            raise DatasetError(f"ingest failed: {report.failed[0].source}: {report.failed[0].reason}")
        return collection, report.as_dict() | {"doc_ids": len(report.doc_ids)}

    def limited(self, limit: int | None) -> EvalDataset:
        """The same dataset with only its first ``limit`` queries (corpus unchanged)."""
        if limit is None or limit >= len(self.queries):
            return self
        queries = self.queries[:limit]
        keep = {q.id for q in queries}
        return EvalDataset(
            self.name,
            self.kind,
            self.split,
            self.source_file,
            queries,
            {q: d for q, d in self.qrels.items() if q in keep},
            self.corpus_path,
            self.corpus_docs,
            self.notes,
        )


def parse_spec(spec: str) -> tuple[str, Path]:
    """``KIND:PATH`` → (kind, path); raises DatasetError for a bad kind or missing path."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise DatasetError(f"--dataset must be KIND:PATH with KIND one of {', '.join(KINDS)}; got {spec!r}")
    kind = kind.lower()
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"dataset path does not exist: {p}")
    return kind, p


def load_dataset(kind: str, path: Path, split: str | None = None) -> EvalDataset:
    loaders = {"beir": load_beir, "hotpotqa": load_hotpotqa, "tatqa": load_tatqa}
    if kind not in loaders:
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path does not exist: {path}")
    try:
        return loaders[kind](path, split)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read {kind} dataset {path}: {type(exc).__name__}: {exc}") from exc


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- BEIR ---------------------------------------------------------------------------------------
def load_beir(folder: Path, split: str | None = None) -> EvalDataset:
    if not folder.is_dir():
        raise DatasetError(f"a beir dataset is a folder with corpus.jsonl, queries*.jsonl and qrels/; got {folder}")
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise DatasetError(f"no corpus.jsonl in {folder}")
    qrels_dir = folder / "qrels"
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if split is None:
        split = "test" if "test" in available else (available[0] if len(available) == 1 else None)
        if split is None:
            raise DatasetError(f"choose a split with --split; qrels in {qrels_dir}: {', '.join(available) or 'none'}")
    qrels_path = qrels_dir / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(f"no qrels for split {split!r} ({qrels_path}); available: {', '.join(available) or 'none'}")
    queries_path = next((p for p in (folder / f"queries.{split}.jsonl", folder / "queries.jsonl") if p.is_file()), None)
    if queries_path is None:
        raise DatasetError(f"no queries.{split}.jsonl or queries.jsonl in {folder}")

    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3:
                continue
            qid, docid, rel = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                qrels.setdefault(qid, {})[docid] = int(rel)
            except ValueError:
                continue  # the header line
    evidence_sentences: dict[str, list[dict]] = {}
    evidence_path = qrels_dir / f"{split}.evidence.jsonl"
    if evidence_path.is_file():
        for record in _read_jsonl(evidence_path):
            evidence_sentences[str(record["query-id"])] = record.get("evidence", [])

    sentence_units, unplaced = _sentence_units(corpus, evidence_sentences)
    queries = []
    for record in _read_jsonl(queries_path):
        qid = str(record["_id"])
        if qid not in qrels:
            continue  # BEIR evaluates the judged queries of the split only
        relevant = [d for d, r in qrels[qid].items() if r > 0]
        meta = {"evidence_sentences": evidence_sentences[qid]} if qid in evidence_sentences else {}
        queries.append(
            EvalQuery(
                id=qid,
                text=record.get("text", ""),
                evidence=[EvidenceUnit(d, label="document") for d in relevant],
                meta=meta,
                evidence_sentences=sentence_units.get(qid, []),
            )
        )
    if not queries:
        raise DatasetError(f"no query of {queries_path.name} has qrels in {qrels_path.name}")
    notes = [f"{unplaced} evidence sentence(s) not found verbatim in their document were left out"] if unplaced else []
    return EvalDataset(folder.name, "beir", split, corpus, queries, qrels, corpus_path=corpus, notes=notes)


def _sentence_units(corpus: Path, evidence: dict[str, list[dict]]) -> tuple[dict[str, list[EvidenceUnit]], int]:
    """Evidence sentences (indices into a record's ``metadata.sentences``) as character
    ranges of the document the ingest builds from that record (title, blank line, text)."""
    wanted = {str(e["doc"]) for items in evidence.values() for e in items if e.get("sentences")}
    if not wanted:
        return {}, 0
    located: dict[str, tuple[str, list[str]]] = {}
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            doc_id = str(record.get("_id", record.get("id")))
            if doc_id in wanted:
                doc = parse_record(record)
                sentences = (record.get("metadata") or {}).get("sentences") or []
                if doc is not None:
                    located[doc_id] = (doc.text, [str(s) for s in sentences])
    out: dict[str, list[EvidenceUnit]] = {}
    unplaced = 0
    for qid, items in evidence.items():
        for item in items:
            doc_id = str(item["doc"])
            text, sentences = located.get(doc_id, ("", []))
            for index in item.get("sentences") or []:
                sentence = sentences[index].strip() if 0 <= index < len(sentences) else ""
                start = text.find(sentence) if sentence else -1
                if start < 0:
                    unplaced += 1
                    continue
                out.setdefault(qid, []).append(
                    EvidenceUnit(doc_id, start, start + len(sentence), label=f"sentence {index}")
                )
    return out, unplaced


# -- HotpotQA ------------------------------------------------------------------------------------
YES_NO = {"yes", "no"}


def load_hotpotqa(path: Path, split: str | None = None) -> EvalDataset:
    """The paragraphs of all questions pooled, one document per unique title (the first
    text seen for a title wins); qrels and evidence are the supporting-fact titles."""
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON list in the HotpotQA layout")
    docs: dict[str, ParsedDocument] = {}
    conflicts = 0
    queries, qrels = [], {}
    for i, rec in enumerate(records):
        for title, sentences in zip(rec["context"]["title"], rec["context"]["sentences"]):
            body = "".join(sentences).strip()
            if title in docs:
                conflicts += docs[title].metadata["body"] != body
                continue
            parsed = parse_record({"_id": title, "title": title, "text": body})
            if parsed is not None:
                parsed.metadata = {"body": body}
                docs[title] = parsed
        qid = str(rec.get("id", rec.get("_id", f"q{i}")))
        support = list(dict.fromkeys(rec["supporting_facts"]["title"]))
        paragraphs = dict(zip(rec["context"]["title"], rec["context"]["sentences"], strict=False))
        qrels[qid] = {t: 1 for t in support}
        answer = str(rec["answer"])
        queries.append(
            EvalQuery(
                id=qid,
                text=rec["question"],
                answers=[answer],
                evidence=[EvidenceUnit(t, label="supporting paragraph") for t in support],
                context_answers=None if answer.strip().lower() in YES_NO else [answer],
                meta={"type": rec.get("type"), "level": rec.get("level")},
                evidence_sentences=_supporting_sentences(rec["supporting_facts"], paragraphs, docs),
            )
        )
    for parsed in docs.values():
        parsed.metadata = {}
    notes = (
        [f"{conflicts} paragraph titles had differing texts across questions; the first was kept"] if conflicts else []
    )
    return EvalDataset(
        "hotpotqa", "hotpotqa", split or path.stem, path, queries, qrels, corpus_docs=list(docs.values()), notes=notes
    )


def _supporting_sentences(
    facts: dict, paragraphs: dict[str, list[str]], docs: dict[str, ParsedDocument]
) -> list[EvidenceUnit]:
    """HotpotQA's supporting facts (title, sentence index) as character ranges of the stored
    documents' text; a fact whose sentence the stored text does not hold (another
    question's version of that title was kept) is left out."""
    units = []
    for title, index in zip(facts["title"], facts["sent_id"], strict=False):
        sentences, doc = paragraphs.get(title) or [], docs.get(title)
        if doc is None or not 0 <= index < len(sentences):
            continue
        sentence = sentences[index].strip()
        before = "".join(sentences[:index]).strip()
        start = doc.text.find(sentence, doc.text.find(before[-40:]) if before else 0) if sentence else -1
        if start >= 0:
            units.append(EvidenceUnit(title, start, start + len(sentence), label="supporting fact"))
    return units


# -- TAT-QA --------------------------------------------------------------------------------------
def _cells(row: list) -> str:
    return " | ".join(" ".join(str(c).split()) for c in row)


def _header_rows(table: list[list]) -> int:
    """Row 0 is a header; so are the following rows whose first cell is empty (multi-line
    headers such as a year row under a period row), up to 3, leaving one data row."""
    n = 1
    while n < min(3, len(table) - 1) and not str(table[n][0]).strip():
        n += 1
    return n


def tatqa_document(context: dict) -> tuple[ParsedDocument, dict[str, tuple[int, int]], tuple[int, int] | None]:
    """One TAT-QA context as a document: the table (header rows kept as the header line of
    every row) then the paragraphs in order. Returns the document, ``{paragraph order:
    (start, end)}`` and the table's ``(start, end)``."""
    rows = [r for r in context["table"]["table"] if any(str(c).strip() for c in r)]
    parts: list[str] = []
    blocks: list[Block] = []
    pos = 0
    table_range = None
    if rows:
        n_header = _header_rows(rows)
        lines = [_cells(r) for r in rows]
        offsets, p = [], 0
        for line in lines:
            offsets.append(TableRow(p, p + len(line)))
            p += len(line) + 1
        table_text = "\n".join(lines)
        header = TableRow(offsets[0].start, offsets[n_header - 1].end)
        blocks.append(Block("table", 0, len(table_text), header=header, rows=offsets[n_header:]))
        table_range = (0, len(table_text))
        parts.append(table_text)
        pos = len(table_text) + 2
    paragraphs: dict[str, tuple[int, int]] = {}
    for para in sorted(context.get("paragraphs", []), key=lambda p: int(p.get("order", 0))):
        text = " ".join(str(para.get("text", "")).split())
        if not text:
            continue
        blocks.append(Block("paragraph", pos, pos + len(text)))
        paragraphs[str(para.get("order"))] = (pos, pos + len(text))
        paragraphs[str(para.get("uid"))] = (pos, pos + len(text))
        parts.append(text)
        pos += len(text) + 2
    doc = ParsedDocument(text="\n\n".join(parts), title="", blocks=blocks, doc_id=str(context["table"]["uid"]))
    return doc, paragraphs, table_range


def _tatqa_answers(question: dict) -> tuple[list[str], list[str] | None, bool]:
    """(answers for EM/F1, answers for answer_in_context or None, every span required)."""
    answer, kind = question.get("answer"), question.get("answer_type")
    spans = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
    if kind == "span":
        return spans, spans, False
    if kind == "multi-span":
        return [", ".join(spans)], spans, True
    return spans, None, False  # arithmetic / count: graded by EM/F1 only


def load_tatqa(path: Path, split: str | None = None) -> EvalDataset:
    contexts = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(contexts, list):
        raise DatasetError(f"{path}: expected a JSON list in the TAT-QA layout")
    docs, queries, qrels = [], [], {}
    missing = 0
    for context in contexts:
        doc, paragraphs, table_range = tatqa_document(context)
        doc_id = doc.doc_id
        assert doc_id is not None  # tatqa_document names the document by its table
        docs.append(doc)
        for q in context.get("questions", []):
            qid = str(q["uid"])
            units = []
            for ref in q.get("rel_paragraphs") or []:
                if str(ref) in paragraphs:
                    start, end = paragraphs[str(ref)]
                    units.append(EvidenceUnit(doc_id, start, end, label=f"paragraph {ref}"))
                else:
                    missing += 1
            if "table" in str(q.get("answer_from", "")) and table_range is not None:
                units.append(EvidenceUnit(doc_id, *table_range, label="table"))
            answers, context_answers, require_all = _tatqa_answers(q)
            queries.append(
                EvalQuery(
                    id=qid,
                    text=q["question"],
                    answers=answers,
                    evidence=units,
                    context_answers=context_answers,
                    require_all=require_all,
                    meta={
                        "answer_type": q.get("answer_type"),
                        "answer_from": q.get("answer_from"),
                        "scale": q.get("scale", ""),
                    },
                )
            )
            qrels[qid] = {doc_id: 1}
    notes = [f"{missing} relevant-paragraph references did not resolve"] if missing else []
    return EvalDataset("tatqa", "tatqa", split or path.stem, path, queries, qrels, corpus_docs=docs, notes=notes)


__all__ = ["KINDS", "DatasetError", "EvalDataset", "EvalQuery", "load_dataset", "parse_spec", "tatqa_document"]
