"""The context bubble: grow a budgeted, structure-aware context from anchor spans.

After "Structure and Diversity Aware Context Bubble Construction for Enterprise Retrieval
Augmented Systems". Steps, all deterministic:

1. **Anchors**: the best candidate span of each of the top ``bubble_anchor_docs`` documents
   (fused order).
2. **Units**: the citable pieces (sentences and table rows) around each anchor: its whole
   document when that is small, else the section or table that holds the anchor; plus the
   pieces of documents the graph index reaches from the anchors (entity co-mentions and
   semantic neighbours, ``bubble_graph_docs`` of them), plus any first-stage candidate that
   is itself a piece.
3. **Greedy growth under a strict budget**: each round takes the unit with the highest gain

       gain = relevance + doc_weight × doc prior + span_weight × first-stage prior
              + coverage_weight × share of the question's terms it adds
              − redundancy_weight × max(0, similarity to the closest taken unit − threshold)
              − cost_weight × tokens it adds / 100   (off by default)

   where relevance is the unit's cosine with the question (two table rows are alike only
   when their text is the same: ``bubble_rows_as_alternatives``). A unit whose cost no longer fits
   is dropped (``budget``), one too similar to a taken unit is dropped (``redundant``), a
   section or document already holding its cap drops the rest (``section_cap``,
   ``doc_cap``); growth stops when the best gain falls below ``bubble_min_gain``
   (``low_gain``).
4. **Structural priors**: a table row brings its header (the first row taken from a table
   pays for the header line, later rows share it and cost only themselves); with
   ``bubble_table_columns``, a row (and its header) shows only the label column and the
   columns of the years the question asks about, and costs that much
   (``retrieval/tables.py``).

Every unit and every first-stage candidate gets a trace entry with its score components
and the reason it was taken or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexing.spans import Span, doc_id_of
from retrieval.context import share_table_headers, terms
from retrieval.params import BubbleParams, SelectionParams
from retrieval.selection.base import SelectionInputs, overlaps, reading_order
from retrieval.tables import shown_rows
from retrieval.types import PIECE_GRANULARITIES, Candidate, Context, ContextSpan, RowProjection, TraceEntry

REGIONS = ("section", "table", "document")


@dataclass
class Unit:
    span: Span
    source: str  # anchor | structure | graph | first_stage
    scores: dict[str, float] = field(default_factory=dict)
    terms: set[str] = field(default_factory=set)
    region: str = ""  # the section/table/paragraph id the section cap counts in
    header_tokens: int = 0
    whole_tokens: int = 0  # its cost with its header line (if any) shown
    projection: RowProjection | None = None  # a row cut to the columns the question asks about


@dataclass
class _BubbleState:
    """Per-query state the steps of :meth:`ContextBubble.select` share: the inputs, the
    priors, the anchors, the units gathered so far and the document spans loaded for them."""

    candidates: list[Candidate]
    inputs: SelectionInputs
    options: BubbleParams
    doc_prior: dict[str, float]
    span_prior: dict[str, float]
    anchors: list[Candidate] = field(default_factory=list)
    units: dict[str, Unit] = field(default_factory=dict)  # span id → unit, in the order gathered
    spans_of_doc: dict[str, list[Span]] = field(default_factory=dict)
    index_of_doc: dict[str, dict[str, Span]] = field(default_factory=dict)
    bridged_prior: dict[str, float] = field(default_factory=dict)  # bridged document → its prior

    def doc_spans(self, doc_id: str) -> list[Span]:
        """A document's spans, loaded once per query."""
        if doc_id not in self.spans_of_doc:
            self.spans_of_doc[doc_id] = self.inputs.store.document_spans(self.inputs.collection, doc_id)
        return self.spans_of_doc[doc_id]

    def span_index(self, doc_id: str) -> dict[str, Span]:
        """A document's spans by id, built once per query."""
        if doc_id not in self.index_of_doc:
            self.index_of_doc[doc_id] = {s.id: s for s in self.doc_spans(doc_id)}
        return self.index_of_doc[doc_id]

    def add_region(self, anchor: Span, source: str) -> None:
        """The pieces around ``anchor`` as units: its whole document when that is small, else
        the section, table or document that holds it (at most ``region_units`` pieces)."""
        spans = self.doc_spans(anchor.doc_id)
        by_id = self.span_index(anchor.doc_id)
        pieces = [s for s in spans if s.granularity in PIECE_GRANULARITIES]
        if len(pieces) > self.options.region_units:
            region = _enclosing(anchor, by_id, REGIONS) or anchor
            pieces = [s for s in pieces if region.start <= s.start and s.end <= region.end]
            pieces = pieces[: self.options.region_units]
        for piece in pieces:
            if piece.id not in self.units:
                self.units[piece.id] = Unit(piece, source if piece.id != anchor.id else "anchor")


@dataclass
class _Growth:
    """The outcome of greedy growth: the taken units (indices into the ordered units, in the
    order taken) and each decided unit's reason ("" for taken)."""

    taken: list[int]
    decided: dict[int, str]


class ContextBubble:
    """Anchors → structural and graph neighbours → greedy, budgeted, diverse selection."""

    group = "bubble"  # reads RetrievalParams.bubble

    def select(
        self, candidates: list[Candidate], limits: SelectionParams, inputs: SelectionInputs, options: BubbleParams
    ) -> Context:
        state = _BubbleState(
            candidates=candidates,
            inputs=inputs,
            options=options,
            doc_prior=rank_prior(
                {c.doc_id: c.scores.get("rrf_document", 0.0) for c in candidates}, options.doc_rank_scale
            ),
            span_prior=_normalized({c.span_id: c.scores.get("rrf_span", 0.0) for c in candidates}),
        )
        state.anchors = _anchors(candidates, options.anchor_docs)
        self._add_anchor_regions(state)
        self._add_bridges(state)
        self._add_first_stage_pieces(state)
        ordered, vanished = self._present_units(state)
        if not ordered:
            return Context(spans=[], n_tokens=0, trace=_vanished_trace(vanished, 1))
        vectors = inputs.vectors([u.span.id for u in ordered])
        self._score_units(state, ordered, vectors)
        growth = self._grow(state, ordered, vectors, limits)
        trace = self._trace(state, ordered, vanished, growth)
        return self._context(ordered, growth, trace)

    @staticmethod
    def _add_anchor_regions(state: _BubbleState) -> None:
        """Units: the pieces around each anchor (see :meth:`_BubbleState.add_region`)."""
        for anchor in state.anchors:
            state.add_region(anchor.loaded_span, "structure")

    @staticmethod
    def _add_bridges(state: _BubbleState) -> None:
        """Bridge documents from the graph index: those the pieces of the first
        ``bridge_anchors`` anchors name by title, best anchor first (at most ``graph_docs``);
        each brings its region's pieces and a prior decayed from the document it was reached
        from."""
        inputs, options = state.inputs, state.options
        if inputs.graph is None or not options.graph_docs:
            return
        anchor_pieces = [
            u.span.id
            for a in state.anchors[: options.bridge_anchors]
            for u in state.units.values()
            if u.span.doc_id == a.doc_id
        ]
        linked = inputs.graph.linked_documents(inputs.collection, anchor_pieces)
        added = 0
        for doc_id, _entity, via in linked:
            if added >= options.graph_docs or any(a.doc_id == doc_id for a in state.anchors):
                continue
            spans = state.doc_spans(doc_id)
            top = next((s for s in spans if s.granularity == "document"), spans[0] if spans else None)
            if top is None:
                continue
            state.bridged_prior[doc_id] = options.bridge_decay * state.doc_prior.get(doc_id_of(via), 0.0)
            state.add_region(top, "graph")
            added += 1

    @staticmethod
    def _add_first_stage_pieces(state: _BubbleState) -> None:
        """Units: every first-stage candidate that is itself a piece."""
        for c in state.candidates:
            if c.loaded_span.granularity in PIECE_GRANULARITIES and c.span_id not in state.units:
                state.units[c.span_id] = Unit(c.loaded_span, "first_stage")

    @staticmethod
    def _present_units(state: _BubbleState) -> tuple[list[Unit], list[Unit]]:
        """Drop the units whose spans a concurrent delete or replace removed since they were
        read (``state.units`` keeps the rest); the rest in document order, and the vanished."""
        present = set(state.inputs.present(list(state.units)))
        vanished = [u for u in state.units.values() if u.span.id not in present]
        state.units = {span_id: u for span_id, u in state.units.items() if span_id in present}
        ordered = sorted(state.units.values(), key=lambda u: (u.span.doc_id, u.span.start, u.span.id))
        return ordered, vanished

    @staticmethod
    def _score_units(state: _BubbleState, ordered: list[Unit], vectors: np.ndarray) -> None:
        """Each unit's terms, region (for the section cap), table header cost and score
        components: relevance, document and span priors and their weighted sum ``base``."""
        inputs, options = state.inputs, state.options
        relevance = vectors @ inputs.query_vector
        rows = shown_rows(
            (u.span for u in ordered), inputs.question if options.table_columns else None, inputs.count_tokens
        )
        doc_prior = state.doc_prior
        for doc_id, prior in state.bridged_prior.items():
            doc_prior[doc_id] = max(doc_prior.get(doc_id, 0.0), prior)
        for unit, r in zip(ordered, relevance):
            span = unit.span
            unit.terms = terms(span.context_text)
            # only documents already loaded: a stray first-stage piece costs no extra query
            parent = (
                state.span_index(span.doc_id).get(span.parent_id or "") if span.doc_id in state.spans_of_doc else None
            )
            unit.region = span.parent_id or span.doc_id
            unit.whole_tokens = span.n_tokens
            if span.id in rows:
                shown = rows[span.id]
                # every row of a table is cut alike (shown_rows), so they share one header cost
                unit.projection = shown.projection
                unit.whole_tokens = shown.whole_tokens
                unit.header_tokens = shown.header_tokens
            if parent is not None and parent.granularity == "paragraph" and parent.parent_id:
                unit.region = parent.parent_id  # cap sentences per section, not per paragraph
            unit.scores = {
                "relevance": float(r),
                "doc_prior": doc_prior.get(span.doc_id, 0.0),
                "span_prior": state.span_prior.get(span.id, 0.0),
                "base": float(r)
                + options.doc_weight * doc_prior.get(span.doc_id, 0.0)
                + options.span_weight * state.span_prior.get(span.id, 0.0),
            }

    @staticmethod
    def _grow(state: _BubbleState, ordered: list[Unit], vectors: np.ndarray, limits: SelectionParams) -> _Growth:
        """Greedy growth under the budget: each round takes the open unit with the highest gain
        or drops it with a reason; below the gain floor only each anchor or bridged document's
        best piece stays open. Units never decided are ``low_gain``."""
        options = state.options
        taken: list[int] = []
        taken_by_doc: dict[str, list[int]] = {}
        decided: dict[int, str] = {}
        tables_paid: set[str] = set()
        per_region: dict[str, int] = {}
        per_doc: dict[str, int] = {}
        total = 0
        budget = limits.budget_tokens if limits.budget_tokens is not None else 10**9
        base = np.array([u.scores["base"] for u in ordered])
        closest = np.full(len(ordered), -1.0)
        alternatives = _row_texts(ordered) if options.rows_as_alternatives else None
        floor = options.min_gain
        lead_of = _leads(ordered, base, {a.doc_id for a in state.anchors} | set(state.bridged_prior))
        floor_reached = False
        question_list = sorted(terms(state.inputs.question))
        mentions = np.array([[t in u.terms for t in question_list] for u in ordered], dtype=bool).reshape(
            len(ordered), len(question_list)
        )
        covered_mask: np.ndarray = np.zeros(len(question_list), dtype=bool)
        is_open: np.ndarray = np.ones(len(ordered), dtype=bool)
        while True:
            open_units = np.flatnonzero(is_open).tolist()
            if floor_reached:
                represented = {ordered[t].span.doc_id for t in taken}
                open_units = [
                    i
                    for i in open_units
                    if lead_of.get(ordered[i].span.doc_id) == i and ordered[i].span.doc_id not in represented
                ]
            if not open_units:
                break
            if len(taken) >= limits.top_k:
                for j in open_units:
                    ordered[j].scores.setdefault("gain", float(base[j]))
                    decided[j] = "k_reached"
                break
            coverage = (mentions[open_units] & ~covered_mask).sum(axis=1) / max(len(question_list), 1)
            redundancy = np.maximum(closest[open_units] - options.redundancy_threshold, 0.0)
            gains = base[open_units] + options.coverage_weight * coverage - options.redundancy_weight * redundancy
            penalty = np.zeros(len(open_units))
            if options.cost_weight:
                penalty = options.cost_weight * np.array([_cost(ordered[j], tables_paid) for j in open_units]) / 100
                gains = gains - penalty
            best = int(np.argmax(gains))
            i = open_units[best]
            unit = ordered[i]
            unit.scores.update(
                {
                    "coverage_gain": float(coverage[best]),
                    "redundancy": max(float(closest[i]), 0.0),
                    "gain": float(gains[best]),
                }
            )
            if options.cost_weight:
                unit.scores["cost_penalty"] = float(penalty[best])
            if not taken:
                floor = max(options.min_gain, options.relative_min_gain * float(gains[best]))
            if gains[best] < floor and not floor_reached:
                floor_reached = True
                continue
            cost = _cost(unit, tables_paid)
            is_open[i] = False
            if closest[i] >= options.duplicate_similarity or any(
                overlaps(unit.span, ordered[t].span) for t in taken_by_doc.get(unit.span.doc_id, ())
            ):
                decided[i] = "redundant"
            elif per_doc.get(unit.span.doc_id, 0) >= options.doc_cap:
                decided[i] = "doc_cap"
            elif per_region.get(unit.region, 0) >= options.section_cap:
                decided[i] = "section_cap"
            elif total + cost > budget:
                decided[i] = "budget"
            else:
                decided[i] = ""
                taken.append(i)
                taken_by_doc.setdefault(unit.span.doc_id, []).append(i)
                total += cost
                unit.scores["cost"] = float(cost)
                covered_mask |= mentions[i]
                per_doc[unit.span.doc_id] = per_doc.get(unit.span.doc_id, 0) + 1
                per_region[unit.region] = per_region.get(unit.region, 0) + 1
                if unit.span.granularity == "row":
                    tables_paid.add(unit.region)
                closest = np.maximum(closest, _similarities_to(i, vectors, alternatives))

        for j in range(len(ordered)):
            if j not in decided:
                ordered[j].scores.setdefault("gain", float(base[j]))
                decided[j] = "low_gain"
        return _Growth(taken=taken, decided=decided)

    @staticmethod
    def _trace(state: _BubbleState, ordered: list[Unit], vanished: list[Unit], growth: _Growth) -> list[TraceEntry]:
        """A trace entry for every unit (taken ones first, by the order taken), every vanished
        unit and every first-stage candidate that is not a unit, sorted by rank."""
        trace: list[TraceEntry] = []
        taken, decided = growth.taken, growth.decided
        rank_of = {i: r for r, i in enumerate(taken, start=1)}
        next_rank = len(taken) + 1
        for i, unit in enumerate(ordered):
            reason = decided.get(i, "low_gain")
            if i not in rank_of:
                rank_of[i] = next_rank
                next_rank += 1
            trace.append(
                TraceEntry(
                    span_id=unit.span.id,
                    rank=rank_of[i],
                    scores=dict(unit.scores),
                    n_tokens=unit.whole_tokens,
                    decision="taken" if reason == "" else "dropped",
                    reason=f"taken ({unit.source})" if reason == "" else reason,
                    source=unit.source,
                )
            )
        trace.extend(_vanished_trace(vanished, next_rank))
        next_rank += len(vanished)
        vanished_ids = {u.span.id for u in vanished}
        unit_docs = {u.span.doc_id for u in state.units.values()}
        for c in state.candidates:
            if c.span_id not in state.units and c.span_id not in vanished_ids:
                trace.append(
                    TraceEntry(
                        span_id=c.span_id,
                        rank=next_rank,
                        scores=dict(c.scores),
                        n_tokens=c.loaded_span.n_tokens,
                        decision="dropped",
                        reason="expanded into its pieces" if c.doc_id in unit_docs else "outside the bubble",
                        source="first_stage",
                    )
                )
                next_rank += 1
        trace.sort(key=lambda t: t.rank)
        return trace

    @staticmethod
    def _context(ordered: list[Unit], growth: _Growth, trace: list[TraceEntry]) -> Context:
        """The taken units in reading order, table rows sharing their header."""
        selected = [
            ContextSpan(
                span=ordered[i].span,
                score=float(ordered[i].scores["gain"]),
                projection=ordered[i].projection,
                whole_tokens=ordered[i].whole_tokens,
            )
            for i in growth.taken
        ]
        header_tokens = {ordered[i].region: ordered[i].header_tokens for i in growth.taken}
        selected = share_table_headers(reading_order(selected), header_tokens)
        return Context(spans=selected, n_tokens=sum(c.n_tokens for c in selected), trace=trace)


def _anchors(candidates: list[Candidate], anchor_docs: int) -> list[Candidate]:
    """The best candidate of each of the first ``anchor_docs`` documents, in fused order."""
    anchors: list[Candidate] = []
    for c in candidates:
        if len(anchors) >= anchor_docs:
            break
        if all(a.doc_id != c.doc_id for a in anchors):
            anchors.append(c)
    return anchors


def _leads(ordered: list[Unit], base: np.ndarray, visited: set[str]) -> dict[str, int]:
    """Each visited (anchor or bridged) document's best unit by base score: below the gain
    floor, each such document still gets its best piece."""
    lead_of: dict[str, int] = {}
    for i, unit in enumerate(ordered):
        doc = unit.span.doc_id
        if doc in visited and (doc not in lead_of or base[i] > base[lead_of[doc]]):
            lead_of[doc] = i
    return lead_of


def _cost(unit: Unit, tables_paid: set[str]) -> int:
    """What taking ``unit`` adds to the context: a row of a table whose header is already
    shown costs only itself."""
    shared_header = unit.span.granularity == "row" and unit.region in tables_paid
    return unit.whole_tokens - (unit.header_tokens if shared_header else 0)


@dataclass(frozen=True)
class _RowTexts:
    """Each unit's row text (None for a sentence) and which units are rows, worked out once
    per query for :func:`_similarities_to`."""

    texts: np.ndarray
    is_row: np.ndarray


def _row_texts(ordered: list[Unit]) -> _RowTexts:
    texts = np.array([u.span.text if u.span.granularity == "row" else None for u in ordered], dtype=object)
    return _RowTexts(texts, np.not_equal(texts, None))


def _similarities_to(i: int, vectors: np.ndarray, rows: _RowTexts | None) -> np.ndarray:
    """Each unit's similarity to the taken unit ``i``, for the redundancy penalty and the
    duplicate drop. With ``rows`` (``bubble_rows_as_alternatives``), two table rows
    are alike only when their text is the same: rows embed alike (the same header, cells
    of numbers) but another row, or the same line item of another company or year, is an
    alternative answer, not a repeat."""
    sims = vectors @ vectors[i]
    if rows is None or not rows.is_row[i]:
        return sims
    return np.where(rows.is_row, np.where(rows.texts == rows.texts[i], 1.0, -1.0), sims)


def _vanished_trace(units: list[Unit], first_rank: int) -> list[TraceEntry]:
    return [
        TraceEntry(
            span_id=u.span.id,
            rank=first_rank + n,
            scores=dict(u.scores),
            n_tokens=u.span.n_tokens,
            decision="dropped",
            reason="vanished",
            source=u.source,
        )
        for n, u in enumerate(sorted(units, key=lambda u: u.span.id))
    ]


def _enclosing(span: Span, by_id: dict[str, Span], granularities: tuple[str, ...]) -> Span | None:
    current = by_id.get(span.parent_id or "")
    while current is not None:
        if current.granularity in granularities:
            return current
        current = by_id.get(current.parent_id or "")
    return None


def rank_prior(doc_scores: dict[str, float], scale: float) -> dict[str, float]:
    """exp(−(rank − 1) / scale) of each document's rank by fused score: RRF scores are flat
    (1/61 against 1/70), ranks are not, and a document at rank 10 should weigh little."""
    ranked = sorted(doc_scores, key=lambda d: (-doc_scores[d], d))
    return {d: float(np.exp(-i / scale)) for i, d in enumerate(ranked)}


def _normalized(values: dict[str, float]) -> dict[str, float]:
    top = max(values.values(), default=0.0)
    return {k: (v / top if top > 0 else 0.0) for k, v in values.items()}
