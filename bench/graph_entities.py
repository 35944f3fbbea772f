"""How well does the graph index's entity rule link HotpotQA paragraphs? (graph index groundwork)

Every context paragraph of a question is a document titled by its ``context.title``
(built like ``eval.datasets.load_hotpotqa`` does: title heading, then the paragraph, cut
into the span tree). Reports:

(a) title-mention recall: over (paragraph, other title of the same question) pairs where
    the other title, or its name without a parenthesised qualifier, occurs in the
    paragraph (case-insensitive, on word boundaries), the fraction where
    ``extract_entities`` returns that title's entity: with the question's 10 titles as
    known titles (entity = the normalized full title), and with the capitalized-phrase
    rule alone (entity = the normalized occurring form);
(b) bridge recall: for bridge questions, the fraction whose two supporting paragraphs'
    spans are within 2 (and 4) hops in a GraphIndex of the question's 10 paragraphs
    (structure and mentions edges, no similar edges);
(c) question entities: the fraction of questions where an entity extracted from the
    question equals a supporting paragraph's title entity or an entity of its spans (any
    supporting paragraph, and every one).

    python -m bench.graph_entities --hotpotqa ../shared/datasets/hotpotqa/dev50.json \\
        --out docs/results/graph_entities.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
import time
from pathlib import Path

from indexing.entities import TitleMatcher, extract_entities, normalize_entity, strip_qualifier
from indexing.graph import GraphIndex
from indexing.parsers.jsonl import parse_record
from indexing.sentences import SentenceSplitter
from indexing.span_tree import build_span_tree
from indexing.spans import Document, Span

STRUCTURE_AND_MENTIONS = {"parent", "next", "mentions"}


def paragraph_document(
    collection: str, title: str, sentences: list[str], splitter: SentenceSplitter
) -> tuple[Document, list[Span]]:
    body = "".join(sentences).strip()
    parsed = parse_record({"_id": title, "title": title, "text": body})
    spans = build_span_tree(title, parsed, lambda ts: [len(t.split()) for t in ts], splitter)
    doc = Document(
        id=title,
        collection=collection,
        title=title,
        source="",
        content_hash=hashlib.sha256(parsed.text.encode()).hexdigest(),
        text=parsed.text,
    )
    return doc, spans


def occurs(name: str, text: str) -> bool:
    return bool(name) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def title_mention_recall(records: list[dict]) -> dict:
    pairs = with_titles = rule_only = 0
    misses: list[str] = []
    for rec in records:
        titles = rec["context"]["title"]
        matcher = TitleMatcher.from_titles(titles)
        for title, sentences in zip(titles, rec["context"]["sentences"]):
            body = "".join(sentences)
            known = rule = None
            for other in titles:
                if other == title:
                    continue
                form = other if occurs(other, body) else strip_qualifier(other)
                if not occurs(form, body):
                    continue
                if known is None:
                    known, rule = set(extract_entities(body, matcher)), set(extract_entities(body))
                pairs += 1
                hit = normalize_entity(other) in known
                with_titles += hit
                rule_only += normalize_entity(form) in rule
                if not hit:
                    misses.append(f"{other!r} in {title!r}")
    return {
        "pairs": pairs,
        "recall_known_titles": with_titles / max(pairs, 1),
        "recall_rule_only": rule_only / max(pairs, 1),
        "misses": misses[:10],
    }


def reach(index: GraphIndex, collection: str, spans: list[Span]) -> dict[str, int]:
    """Fewest structure/mentions edges (at most 4) from any of ``spans`` to every span reached."""
    best: dict[str, int] = {}
    for s in spans:
        for n, d in index.neighbours(collection, s.id, STRUCTURE_AND_MENTIONS, hops=4).items():
            best[n] = min(d, best.get(n, d))
    return best


def hops_between(reached: dict[str, int], b: list[Span]) -> int:
    return min((reached[s.id] for s in b if s.id in reached), default=99)


def graph_recall(records: list[dict], data_dir: Path, use_known_titles: bool) -> dict:
    splitter = SentenceSplitter()
    index = GraphIndex(data_dir / f"graph-{int(use_known_titles)}.sqlite3")
    bridge = within2 = within4 = title_link = 0
    distractor_pairs = distractor_within2 = 0
    questions = any_gold = all_gold = 0
    entities_per_paragraph: list[int] = []
    try:
        for i, rec in enumerate(records):
            collection = f"q{i}"
            titles = rec["context"]["title"]
            docs = {}
            for title, sentences in zip(titles, rec["context"]["sentences"]):
                doc, spans = paragraph_document(collection, title, sentences, splitter)
                docs[title] = spans
                index.update_document(collection, doc, spans, known_titles=titles if use_known_titles else ())
            for spans in docs.values():
                entities_per_paragraph += [
                    len(index.entities_of(collection, s.id)) for s in spans if s.granularity == "paragraph"
                ]
            gold = [t for t in dict.fromkeys(rec["supporting_facts"]["title"]) if t in docs]
            if rec["type"] == "bridge" and len(gold) == 2:
                bridge += 1
                reached = reach(index, collection, docs[gold[0]])
                best = hops_between(reached, docs[gold[1]])
                within2 += best <= 2
                within4 += best <= 4
                mentioned = [{e for s in docs[t] for e in index.entities_of(collection, s.id)} for t in gold]
                title_link += normalize_entity(gold[1]) in mentioned[0] or normalize_entity(gold[0]) in mentioned[1]
                for other in titles:
                    if other not in gold and other in docs:
                        distractor_pairs += 1
                        distractor_within2 += hops_between(reached, docs[other]) <= 2
            question = set(extract_entities(rec["question"], titles if use_known_titles else ()))
            matched = []
            for title in gold:
                gold_entities = {normalize_entity(title)}
                for s in docs[title]:
                    gold_entities.update(index.entities_of(collection, s.id))
                matched.append(bool(question & gold_entities))
            questions += 1
            any_gold += any(matched)
            all_gold += bool(matched) and all(matched)
    finally:
        index.close()
    return {
        "bridge_questions": bridge,
        "bridge_within_2_hops": within2 / max(bridge, 1),
        "bridge_within_4_hops": within4 / max(bridge, 1),
        "bridge_title_link": title_link / max(bridge, 1),
        "distractor_within_2_hops": distractor_within2 / max(distractor_pairs, 1),
        "questions": questions,
        "question_matches_any_gold": any_gold / max(questions, 1),
        "question_matches_every_gold": all_gold / max(questions, 1),
        "mean_entities_per_paragraph": sum(entities_per_paragraph) / max(len(entities_per_paragraph), 1),
    }


def report(dataset: Path, a: dict, b: dict, b_rule: dict, seconds: float, command: str) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"# Graph index: entity rule on HotpotQA ({dataset.name})",
        "",
        "```",
        command,
        "```",
        "",
        "Each context paragraph is a document titled by its `context.title` entry; one graph per question "
        "(its 10 paragraphs; structure and mentions edges, no similar edges). Rule: `indexing/entities.py` "
        "module docstring.",
        "",
        "## (a) Title-mention recall",
        "",
        f"Pairs (paragraph, another title of the question occurring in it, with or without its "
        f"parenthesised qualifier, case-insensitive): **{a['pairs']}**.",
        "",
        "| extraction | recall |",
        "|---|---:|",
        "| rule + the question's 10 titles as known titles (entity = normalized full title) | "
        f"{pct(a['recall_known_titles'])} |",
        f"| capitalized-phrase rule alone (entity = normalized occurring form) | {pct(a['recall_rule_only'])} |",
        "",
        "## (b) Bridge recall and (c) question entities",
        "",
        "| graph built with | bridge: gold paragraphs within 2 hops | within 4 hops "
        "| one mentions the other's title | base rate: gold to distractor within 2 hops "
        "| question entity matches a gold paragraph | matches every gold paragraph | entities per paragraph |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("known titles (the question's 10)", b), ("the rule alone", b_rule)):
        lines.append(
            f"| {name} | {pct(r['bridge_within_2_hops'])} | {pct(r['bridge_within_4_hops'])} | "
            f"{pct(r['bridge_title_link'])} | {pct(r['distractor_within_2_hops'])} | "
            f"{pct(r['question_matches_any_gold'])} | {pct(r['question_matches_every_gold'])} | "
            f"{r['mean_entities_per_paragraph']:.1f} |"
        )
    lines += [
        "",
        f"Bridge questions: {b['bridge_questions']} of {b['questions']}. Hops count edges in either "
        "direction, from any span of one supporting paragraph to any span of the other; paragraph -> "
        "entity -> paragraph is 2 hops, paragraph -> title entity -> `doc:` -> section -> paragraph is 4. "
        "(c) counts an entity of the question (extracted with the same titles) equal to a supporting "
        "paragraph's title entity or to an entity one of its spans mentions.",
        "",
        f"Misses of (a) with known titles (first 10): {', '.join(a['misses']) or 'none'}.",
        "",
        f"Wall time: {seconds:.1f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hotpotqa", type=Path, default=Path("../shared/datasets/hotpotqa/dev50.json"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/graph_entities.md"))
    args = ap.parse_args(argv)
    records = json.loads(args.hotpotqa.read_text(encoding="utf-8"))
    started = time.perf_counter()
    a = title_mention_recall(records)
    with tempfile.TemporaryDirectory() as tmp:
        b = graph_recall(records, Path(tmp), use_known_titles=True)
        b_rule = graph_recall(records, Path(tmp), use_known_titles=False)
    seconds = time.perf_counter() - started
    command = f".venv/bin/python -m bench.graph_entities --hotpotqa {args.hotpotqa} --out {args.out}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(args.hotpotqa, a, b, b_rule, seconds, command))
    result = {"title_mentions": a, "graph_known_titles": b, "graph_rule_only": b_rule, "seconds": seconds}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
