"""Run every query of a dataset through named pipelines and score them.

    >>> rag = RagService(Settings(data_dir=Path(".eval-data")))                    # doctest: +SKIP
    >>> ds = load_dataset("beir", Path("../shared/datasets/scifact"), "train")     # doctest: +SKIP
    >>> run_eval(rag, ds, ["dense", "bm25"], Path("runs/scifact"))["pipelines"]    # doctest: +SKIP

Writes to ``out_dir``:

* ``results.json``: ``{"dataset", "split", "n_queries", "pipelines": {NAME: {metrics}}}``;
* ``run.<pipeline>.json``: per query the ranked documents (top 100, with the pipeline's
  scores), the final context spans, token count, timings, the generated answer and its
  citations, *and the query's gold data*, so :func:`metrics_from_run` recomputes every
  metric from that file alone;
* ``report.md`` and ``plots/`` (see :mod:`eval.report`).

Abstention: with ``unanswerable`` (another dataset; ``spanrag eval --unanswerable-from``),
that dataset's questions are also asked of this dataset's collection, as questions it
cannot answer (qids ``unanswerable:<id>``, gold ``{"unanswerable": true}``). Every other
metric counts the dataset's own (answerable) questions only; ``abstain_precision``,
``abstain_recall``, ``abstained_answerable`` (:func:`eval.metrics.abstention_metrics`) and
``answered_in_context`` (the answer is in the context *and* the generator did not abstain)
count them all. Each record keeps ``abstained`` and the ``support`` the extractive
generator's abstention rule reads (``generation.extractive.Support``: ``best_cosine``,
``median_cosine``, ``coverage``, ``specific_coverage``, ``n_specific``), so the rule can be
refit from run files (``ExtractiveOptions().supports(Support(**record["support"]))``).

Metric definitions live in :mod:`eval.metrics`. Per query: the context is the final
context in reading order; its text is each span's shown text (a table row with its
header line, as the generator reads it) joined by newlines; ``context_tokens`` counts that
text's word pieces with the embedding model's tokenizer (context spans never overlap, and
spans repeated at the same offsets are counted once); ``latency_ms`` is the retriever's
``retrieval_ms`` (question in, final context out; generation excluded).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval import metrics as M
from eval.datasets import EvalDataset
from retrieval.pipeline import get_pipeline

TOP_DOCS = 100
ROUND = 6

#: Metric order in results.json and the report.
METRIC_ORDER = (
    "ndcg@10",
    "recall@10",
    "recall@100",
    "mrr@10",
    "evidence_recall",
    "sentence_evidence_recall",
    "cited_precision",
    "cited_recall",
    "answer_in_context",
    "answered_in_context",
    "answer_em",
    "answer_f1",
    "context_tokens_mean",
    "context_tokens_p50",
    "context_tokens_p95",
    "latency_ms_p50",
    "latency_ms_p95",
    "abstain_precision",
    "abstain_recall",
    "abstained_answerable",
    "n_queries",
    "n_unanswerable",
)
UNANSWERABLE_PREFIX = "unanswerable:"


# -- one query -----------------------------------------------------------------------------------
def context_records(result) -> list[dict]:
    """The final context spans as plain dicts, in reading order, deduplicated by offsets."""
    out, seen = [], set()
    for item in result.context.spans:
        span = item.span
        key = (span.doc_id, span.start, span.end)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "span_id": span.id,
                "doc_id": span.doc_id,
                "text": item.text,
                "start": span.start,
                "end": span.end,
                "granularity": span.granularity,
                "n_tokens": item.n_tokens,
                "score": item.score,
            }
        )
    return out


def run_query(
    rag, collection: str, pipeline: str, query, qid: str | None = None, overrides: dict | None = None
) -> dict:
    from generation.extractive import support

    result = rag.retrieve(collection, query.text, pipeline, overrides)
    answer, generation_ms = rag.answer(result)
    evidence = support(result.question, result.query_vector, result.context)
    spans = context_records(result)
    # n_tokens was counted at ingest by the embedding model's own tokenizer, over the text
    # the context shows (a table row with its header, unless an earlier row of the same
    # table already shows it); spans are distinct by offsets above.
    context_tokens = sum(s["n_tokens"] for s in spans)
    return {
        "qid": qid or query.id,
        "question": query.text,
        "ranked": [[d.doc_id, d.score] for d in result.ranked_documents[:TOP_DOCS]],
        "context": spans,
        "context_tokens": context_tokens,
        "timings_ms": {**result.timings_ms, "generation_ms": generation_ms},
        "answer": answer.text,
        "citations": [asdict(c) for c in answer.citations],
        "abstained": answer.abstained,
        "support": {k: round(v, ROUND) if isinstance(v, float) else v for k, v in asdict(evidence).items()},
        # the selector's decisions, compact: [span_id, decision, reason, source, {score: value}]
        "trace": [
            [t.span_id, t.decision, t.reason, t.source, {k: round(v, 4) for k, v in t.scores.items()}]
            for t in result.context.trace
        ],
    }


def query_metrics(record: Mapping, gold: Mapping) -> dict[str, float | None]:
    """Per-query context and answer metrics (None where the query does not count)."""
    spans = record["context"]
    context_text = "\n".join(s["text"] for s in spans)
    evidence = [M.EvidenceUnit.from_dict(u) for u in gold.get("evidence", [])]
    sentences = [M.EvidenceUnit.from_dict(u) for u in gold.get("evidence_sentences", [])]
    context_answers = gold.get("context_answers")
    answers = gold.get("answers") or []
    prediction = M.strip_citations(record.get("answer", ""))
    in_context = (
        None
        if context_answers is None
        else M.answer_in_context(context_text, context_answers, bool(gold.get("require_all")))
    )
    # an abstaining answer cites nothing: it counts for recall (0), not for precision
    cited_precision, cited_recall = M.cited_evidence(record.get("citations") or [], sentences)
    return {
        "evidence_recall": M.evidence_recall(evidence, spans),
        "sentence_evidence_recall": M.evidence_recall(sentences, spans),
        "cited_precision": cited_precision,
        "cited_recall": cited_recall,
        "answer_in_context": in_context,
        "answered_in_context": None if in_context is None else in_context * (not record.get("abstained")),
        "answer_em": M.squad_em(prediction, answers) if answers else None,
        "answer_f1": M.squad_f1(prediction, answers) if answers else None,
    }


# -- aggregation ---------------------------------------------------------------------------------
def aggregate(records: Sequence[Mapping], golds: Mapping[str, Mapping]) -> dict[str, float]:
    """Every metric the dataset allows, from per-query records and gold data (abstention:
    see the module doc)."""
    out: dict[str, float] = {}
    if any(golds[r["qid"]].get("unanswerable") for r in records):
        flags = [bool(golds[r["qid"]].get("unanswerable")) for r in records]
        out.update(M.abstention_metrics([bool(r.get("abstained")) for r in records], flags))
        unanswerable = sum(flags)
        records = [r for r, flag in zip(records, flags) if not flag]
    else:
        unanswerable = 0
    qrels = {r["qid"]: golds[r["qid"]]["qrels"] for r in records if golds[r["qid"]].get("qrels")}
    if qrels:
        run = {r["qid"]: [d for d, _ in r["ranked"]] for r in records}
        out.update(M.ranking_metrics(run, qrels))
    per_query = [query_metrics(r, golds[r["qid"]]) for r in records]
    for name in (
        "evidence_recall",
        "sentence_evidence_recall",
        "cited_precision",
        "cited_recall",
        "answer_in_context",
        "answered_in_context",
        "answer_em",
        "answer_f1",
    ):
        values = [v for m in per_query if (v := m[name]) is not None]
        if values and (name != "answered_in_context" or unanswerable):
            out[name] = M.mean(values)
    tokens = [r["context_tokens"] for r in records]
    latency = [r["timings_ms"]["retrieval_ms"] for r in records]
    out["context_tokens_mean"] = M.mean(tokens)
    out["context_tokens_p50"] = M.percentile(tokens, 50)
    out["context_tokens_p95"] = M.percentile(tokens, 95)
    out["latency_ms_p50"] = M.percentile(latency, 50)
    out["latency_ms_p95"] = M.percentile(latency, 95)
    ordered = {k: round(float(out[k]), ROUND) for k in METRIC_ORDER if k in out}
    ordered["n_queries"] = len(records)
    if unanswerable:
        ordered["n_unanswerable"] = unanswerable
    return ordered


def golds_of(dataset: EvalDataset, unanswerable: EvalDataset | None = None) -> dict[str, dict]:
    golds = {q.id: q.gold(dataset.qrels.get(q.id)) for q in dataset.queries}
    for q in unanswerable.queries if unanswerable is not None else []:
        golds[UNANSWERABLE_PREFIX + q.id] = {"unanswerable": True}
    return golds


def metrics_from_run(run_json: Mapping | str | Path, dataset: EvalDataset | None = None) -> dict:
    """Recompute a pipeline's metrics from a ``run.<pipeline>.json`` (a path or the loaded
    object). Gold data come from ``dataset`` when given, else from the run file itself."""
    loaded: Mapping = (
        run_json if isinstance(run_json, Mapping) else json.loads(Path(run_json).read_text(encoding="utf-8"))
    )
    records = loaded["queries"]
    if dataset is not None:
        golds = golds_of(dataset)
        golds |= {r["qid"]: r["gold"] for r in records if r["qid"].startswith(UNANSWERABLE_PREFIX)}
    else:
        golds = {r["qid"]: r["gold"] for r in records}
    return aggregate(records, golds)


# -- the whole run -------------------------------------------------------------------------------
def _running_summary(records: list[dict], golds: Mapping[str, Mapping], has_qrels: bool) -> str:
    parts = []
    declined = [bool(r.get("abstained")) for r in records if golds[r["qid"]].get("unanswerable")]
    if declined:
        parts.append(f"abst {M.mean(declined):.3f}")
    records = [r for r in records if not golds[r["qid"]].get("unanswerable")]
    if not records:
        return " · ".join(parts)
    if has_qrels:
        run = {r["qid"]: [d for d, _ in r["ranked"]] for r in records}
        qrels = {r["qid"]: golds[r["qid"]]["qrels"] for r in records}
        parts.insert(0, f"nDCG@10 {M.ranking_metrics(run, qrels)['ndcg@10']:.3f}")
    per_query = [query_metrics(r, golds[r["qid"]]) for r in records]
    for name, label in (
        ("evidence_recall", "ev"),
        ("sentence_evidence_recall", "sent"),
        ("answer_in_context", "aic"),
        ("answer_f1", "F1"),
    ):
        values = [v for m in per_query if (v := m[name]) is not None]
        if values:
            parts.append(f"{label} {M.mean(values):.3f}")
    parts.append(f"tok {M.mean(r['context_tokens'] for r in records):.0f}")
    parts.append(f"p50 {M.percentile([r['timings_ms']['retrieval_ms'] for r in records], 50):.0f}ms")
    return " · ".join(parts)


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def make_progress(enabled: bool = True):
    """A rich progress bar on stderr (queries done, rate, running metrics)."""
    if not enabled:
        return _NullProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=Console(stderr=True),
    )


def freeze_long_lived_objects() -> None:
    """Move the dataset, its gold data and the loaded indexes out of the garbage collector's
    reach, so that full collections during timed queries scan only per-query objects.
    A server holds no dataset; without this, the harness's own memory showed up as
    200 ms pauses in p95 latency."""
    gc.collect()
    gc.freeze()


def prepare_collection(rag, dataset: EvalDataset, pipeline: str, log: Callable[[str], None]) -> tuple[str, float]:
    """Ingest ``dataset`` (cached by content), then get the service to where a server is
    before its first question: the model loaded, one warm-up question asked of ``pipeline``
    (lazy loads: indexes, tokenizer caches), background index work done, long-lived objects
    frozen. Returns the collection and the ingest's seconds."""
    started = time.perf_counter()
    collection, report = dataset.ingest(rag)
    ingest_s = time.perf_counter() - started
    log(
        f"collection {collection}: {report['added']} added, {report['updated']} updated, "
        f"{report['unchanged']} unchanged ({ingest_s:.1f}s)"
    )
    rag.encoder  # noqa: B018  # load the model before timing queries
    if dataset.queries:
        rag.retrieve(collection, dataset.queries[0].text, pipeline)
    rag.store.settle()  # background index work (a merge, the token matrix) is not timed with the queries
    freeze_long_lived_objects()
    return collection, ingest_s


def run_eval(
    rag,
    dataset: EvalDataset,
    pipelines: list[str],
    out_dir: Path,
    limit: int | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    unanswerable: EvalDataset | None = None,
) -> dict:
    """Ingest (cached by content), run every query through each pipeline, score, write the
    outputs; returns the results.json object. ``unanswerable``: another dataset whose
    questions (its first ``limit``) are asked too, as ones this collection cannot answer."""
    from eval.report import write_report

    specs = [get_pipeline(p) for p in pipelines]  # fail on an unknown name before any work
    dataset = dataset.limited(limit)
    unanswerable = unanswerable.limited(limit) if unanswerable is not None else None
    asked = [(q, q.id) for q in dataset.queries]
    asked += [(q, UNANSWERABLE_PREFIX + q.id) for q in (unanswerable.queries if unanswerable else [])]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda message: None)

    golds = golds_of(dataset, unanswerable)  # before the freeze: it is long-lived too
    collection, ingest_s = prepare_collection(rag, dataset, specs[0].name, log)

    results: dict[str, Any] = {
        "dataset": dataset.name,
        "split": dataset.split,
        "n_queries": len(dataset.queries),
        "pipelines": {},
    }
    if unanswerable is not None:
        results["unanswerable_from"] = {
            "dataset": unanswerable.name,
            "kind": unanswerable.kind,
            "split": unanswerable.split,
            "n_queries": len(unanswerable.queries),
        }
    all_records: dict[str, list[dict]] = {}
    wall: dict[str, float] = {}
    costs: dict[str, dict[str, float]] = {}
    with make_progress(progress) as bar:
        for spec in specs:
            task = bar.add_task(spec.name, total=len(asked), metrics="")
            records: list[dict] = []
            t0 = time.perf_counter()
            for i, (query, qid) in enumerate(asked, start=1):
                records.append(run_query(rag, collection, spec.name, query, qid))
                update: dict[str, object] = {"completed": i}
                if i % 10 == 0 or i == len(asked):
                    update["metrics"] = _running_summary(records, golds, dataset.has_qrels)
                bar.update(task, **update)
            wall[spec.name] = time.perf_counter() - t0
            all_records[spec.name] = records
            results["pipelines"][spec.name] = aggregate(records, golds)
            footprint = rag.store.index_footprint(collection)
            if footprint:
                costs.setdefault(spec.name, {})["index_mb"] = round(
                    sum(footprint.get(s, 0) for s in spec.search_structures) / 2**20, 1
                )
            run_file = {
                "dataset": dataset.name,
                "kind": dataset.kind,
                "split": dataset.split,
                "pipeline": spec.name,
                "description": spec.description,
                "params": spec.params.flat(),  # the flat names, as in earlier run records
                "collection": collection,
                "embedding_model": rag.settings.embedding_model,
                "generator": rag.settings.generator,
                "settings_overrides": rag.settings.retrieval_overrides(),
                "metric_notes": __doc__.split("Metric definitions", 1)[1].strip(),
                "queries": [{**r, "gold": golds[r["qid"]]} for r in records],
            }
            (out_dir / f"run.{spec.name}.json").write_text(json.dumps(run_file, ensure_ascii=False), encoding="utf-8")
    base = results["pipelines"].get("dense", {}).get("latency_ms_p95")
    for name, metrics in results["pipelines"].items():
        if base and "latency_ms_p95" in metrics:
            costs.setdefault(name, {})["latency_p95_vs_dense"] = round(metrics["latency_ms_p95"] / base, 2)
    # costs of running a pipeline (not recomputable from its run file, so kept apart)
    results["costs"] = costs
    (out_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    latencies = {name: [r["timings_ms"]["retrieval_ms"] for r in recs] for name, recs in all_records.items()}
    write_report(
        out_dir,
        results,
        latencies,
        context_tokens={name: [r["context_tokens"] for r in recs] for name, recs in all_records.items()},
        command=command,
        collection=collection,
        extra={
            "ingest_seconds": round(ingest_s, 2),
            "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
            "notes": dataset.notes,
        },
    )
    return results


__all__ = ["METRIC_ORDER", "aggregate", "context_records", "metrics_from_run", "query_metrics", "run_eval", "run_query"]
