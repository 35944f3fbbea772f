"""The edges one document owns in the graph index (:mod:`indexing.graph`): structure
(``parent``, ``next``), ``mentions`` of entities (:mod:`indexing.entities`) and the
``similar`` edges its caller computed, built from the document and its spans alone."""

from __future__ import annotations

from dataclasses import dataclass

from indexing.entities import TitleMatcher, extract_entities, keep_entity, normalize_entity, strip_qualifier
from indexing.spans import Document, Span, doc_id_of

MENTION_GRANULARITIES = frozenset({"paragraph", "sentence", "row"})


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str
    weight: float = 1.0
    dst_doc_id: str | None = None


def document_edges(
    doc: Document, spans: list[Span], titles: TitleMatcher, similar: dict[str, list[tuple[str, float]]] | None = None
) -> list[Edge]:
    """Every edge ``doc`` owns, in a deterministic order (the kinds are described in the
    :mod:`indexing.graph` docstring)."""
    doc_node = f"doc:{doc.id}"
    edges: list[Edge] = []
    title_entity = normalize_entity(doc.title)
    if keep_entity(title_entity):
        edges.append(Edge(doc_node, f"ent:{title_entity}", "mentions"))
    short_title = normalize_entity(strip_qualifier(doc.title))  # "Ed Wood (film)" is named "Ed Wood"
    if short_title != title_entity and keep_entity(short_title):
        edges.append(Edge(doc_node, f"ent:{short_title}", "mentions"))
    ordered = sorted(spans, key=lambda s: s.order)
    siblings: dict[tuple[str | None, str], list[Span]] = {}
    for span in ordered:
        node = f"span:{span.id}"
        if span.parent_id is not None:
            edges.append(Edge(node, f"span:{span.parent_id}", "parent"))
        if span.parent_id is None or span.granularity == "section":
            edges.append(Edge(node, doc_node, "parent"))
        siblings.setdefault((span.parent_id, span.granularity), []).append(span)
        if span.granularity in MENTION_GRANULARITIES:
            # a row's header line names columns, not things the row mentions
            for entity in extract_entities(span.text, titles):
                edges.append(Edge(node, f"ent:{entity}", "mentions"))
    for group in siblings.values():
        for a, b in zip(group, group[1:]):
            edges.append(Edge(f"span:{a.id}", f"span:{b.id}", "next"))
    own = {s.id for s in spans}
    similar = similar or {}
    for source in sorted(similar):
        if source not in own:
            raise ValueError(f"similar: {source!r} is not a span of document {doc.id!r}")
        for target, cosine in similar[source]:
            target_doc = doc_id_of(target)
            if target_doc != doc.id:
                edges.append(Edge(f"span:{source}", f"span:{target}", "similar", float(cosine), target_doc))
    return edges
