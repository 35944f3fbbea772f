"""Prune a selected context to a token budget before the generator.

Selection decides *which regions* of the collection the generator reads; compression decides
*which sentences and rows* of that context are worth their tokens. It runs only when the
selected context exceeds the target (the gate: compression is not free), and it never cuts
inside a citable piece, so every ``[n]`` still resolves to a whole sentence or table row with
its character offsets.

**Sentence level** (``compression="sentence"``). The context is split into its pieces
(sentences and table rows). Each piece gets

* ``relevance``: cosine of its stored vector with the question;
* ``coverage``: per question token, the best similarity of that token to the piece's own
  word pieces (the MaxSim terms, from the stored token vectors of the piece or of the
  paragraph holding it), so a piece is valued for the parts of the question it answers;
* ``prior``: the selector's score of the span the piece came from, scaled to [0, 1].

Pieces are then chosen greedily under the target::

    gain = relevance_weight × relevance + prior_weight × prior + lead_weight × [lead sentence]
           + coverage_weight × mean over question tokens of max(0, coverage − covered so far)
           + bridge_weight × [first piece of a document the selector reached through the graph]

where "covered so far" starts at each question token's median coverage over the context
(a token every piece matches, such as "the", adds nothing), so once the first hop of a
question is covered, the piece that answers its remaining tokens (often in a bridged
document) gains most. A piece that no longer fits is skipped; a table row costs its header
line only if it is the first row kept from its table. The kept pieces are shown in the
context's reading order. (A redundancy penalty and a bonus for every new document were
measured and left out: both cost TAT-QA answers, whose near-identical rows of different
companies are alternatives, not repeats.)

**Token level** (``compression="sentence+token"``, off by default). After sentence pruning
to a looser target, the words of each kept piece whose word pieces match no question token
well are dropped (after TCRA-LLM's "semantic compression"), never numbers and never a word
of a table's header. Dropping filler words can hurt generators ("LLM-Microscope"); the
evaluation reports it next to sentence pruning.

    >>> compressor = ContextCompressor()                                        # doctest: +SKIP
    >>> context, report = compressor.compress(result.context, params.compress, inputs)  # doctest: +SKIP
    >>> report.applied, report.tokens_before, report.tokens_after               # doctest: +SKIP
    (True, 497, 296)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from indexing.embed import TokenEncoder
from indexing.spans import Span, doc_id_of, order_of
from indexing.store.base import SpanStore
from indexing.token_codecs import similarities
from retrieval.context import share_table_headers
from retrieval.params import CompressionParams
from retrieval.types import CompressionReport, Context, ContextSpan, RowProjection, TraceEntry


@dataclass
class CompressionInputs:
    """What compression reads besides the context: the question's vectors and the store."""

    collection: str
    question: str
    query_vector: np.ndarray
    store: SpanStore
    count_tokens: Callable[[list[str]], list[int]]
    query_tokens: np.ndarray | None = None  # None: no token-level signal (coverage from relevance)
    token_encoder: TokenEncoder | None = None


@dataclass
class Piece:
    span: Span
    vector: np.ndarray
    prior: float
    order: int  # position in the context's reading order
    coverage: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    cost_alone: int = 0  # tokens it adds as the first piece of its table (with the header line)
    cost_shared: int = 0  # tokens it adds when its table's header is already shown
    projection: RowProjection | None = None  # a row the selector cut to some columns: it stays cut
    whole_tokens: int = -1  # its cost with its header line; -1: the span's own count

    def __post_init__(self) -> None:
        if self.whole_tokens < 0:
            self.whole_tokens = self.span.n_tokens


def compression_target(params: CompressionParams, tokens: int) -> int | None:
    """Tokens the compressed context may use: the tighter of ``compress_budget_tokens`` and
    ``compress_ratio`` × the selected tokens (None: no target set, nothing to do)."""
    targets = []
    if params.budget_tokens is not None:
        targets.append(params.budget_tokens)
    if params.ratio is not None:
        targets.append(int(params.ratio * tokens))
    return min(targets) if targets else None


class ContextCompressor:
    """Sentence-level (and optionally token-level) pruning of a selected context."""

    def compress(
        self, context: Context, params: CompressionParams, inputs: CompressionInputs
    ) -> tuple[Context, CompressionReport]:
        pieces = self._pieces(context)
        before = context.n_tokens
        target = compression_target(params, before)
        report = CompressionReport(params.method, False, target, before, before, len(pieces), len(pieces))
        if params.method == "off" or target is None or before <= target or not pieces:
            return context, report  # no pieces: nothing stored to choose from

        self._score(pieces, inputs)
        self._costs(pieces, inputs)
        sentence_target = target
        if params.method == "sentence+token":
            sentence_target = int(target / max(1e-6, 1 - params.token_drop))
        bridged = {doc_id_of(t.span_id) for t in context.trace if t.source == "graph" and t.decision == "taken"}
        kept, trace = self._greedy(pieces, params, sentence_target, inputs, bridged)
        items = [
            ContextSpan(
                span=p.span,
                score=p.scores["gain"],
                pieces=[p.span],
                piece_vectors=p.vector[None, :],
                projection=p.projection,
                whole_tokens=p.whole_tokens,
            )
            for p in sorted(kept, key=lambda p: p.order)
        ]
        # a table's header line costs what _costs counted: a kept row's cost alone less shared
        headers = {p.span.parent_id or p.span.doc_id: p.cost_alone - p.cost_shared for p in kept if p.span.header}
        items = share_table_headers(items, headers)
        if params.method == "sentence+token":
            items = self._drop_words(items, target, inputs)
        compressed = Context(items, sum(i.n_tokens for i in items), [*context.trace, *trace])
        report.applied = True
        report.tokens_after = compressed.n_tokens
        report.pieces_after = len(items)
        return compressed, report

    # -- pieces and their signals -----------------------------------------------------------
    @staticmethod
    def _pieces(context: Context) -> list[Piece]:
        best = max((abs(item.score) for item in context.spans), default=0.0) or 1.0
        pieces: list[Piece] = []
        seen: set[str] = set()
        for item in context.spans:
            vectors = item.piece_vectors if item.piece_vectors is not None else np.zeros((0, 0))
            for k, piece in enumerate(item.pieces):
                if piece.id in seen or k >= len(vectors):
                    continue
                seen.add(piece.id)
                whole = piece.id == item.span.id  # a row the context holds as itself
                pieces.append(
                    Piece(
                        piece,
                        vectors[k],
                        max(item.score, 0.0) / best,
                        len(pieces),
                        projection=item.projection if whole else None,
                        whole_tokens=item.whole_tokens if whole else -1,
                    )
                )
        return pieces

    def _score(self, pieces: list[Piece], inputs: CompressionInputs) -> None:
        relevance = np.stack([p.vector for p in pieces]) @ inputs.query_vector
        coverage = self._token_coverage(pieces, inputs)
        for p, r in zip(pieces, relevance):
            p.scores["relevance"] = float(r)
            p.coverage = coverage.get(p.span.id)

    @staticmethod
    def _token_coverage(pieces: list[Piece], inputs: CompressionInputs) -> dict[str, np.ndarray]:
        """Per piece, each question token's best similarity to the piece's word pieces, read
        from the stored token vectors of the piece or of the paragraph holding it."""
        if inputs.query_tokens is None or inputs.token_encoder is None or not len(inputs.query_tokens):
            return {}
        hosts = {p.span.id: p.span for p in pieces}
        parent_ids = [p.span.parent_id for p in pieces if p.span.parent_id]
        stored = inputs.store.get_token_vectors(inputs.collection, [*hosts, *dict.fromkeys(parent_ids)])
        missing_parents = [pid for pid in dict.fromkeys(parent_ids) if pid in stored and pid not in hosts]
        hosts.update({s.id: s for s in inputs.store.get_spans(inputs.collection, missing_parents)})
        host_of: dict[str, str] = {}
        for p in pieces:
            if p.span.id in stored:
                host_of[p.span.id] = p.span.id
            elif p.span.parent_id is not None and p.span.parent_id in stored and p.span.parent_id in hosts:
                host_of[p.span.id] = p.span.parent_id
        used = sorted(set(host_of.values()))
        offsets = dict(zip(used, inputs.token_encoder.token_offsets([hosts[h].context_text for h in used])))
        sims = {h: similarities(inputs.query_tokens, stored[h]) for h in used}
        out: dict[str, np.ndarray] = {}
        for piece_id, host_id in host_of.items():
            matrix, host, span = sims[host_id], hosts[host_id], hosts.get(piece_id)
            if piece_id == host_id or span is None:
                columns = np.arange(matrix.shape[1])
            else:
                lo, hi = span.start - host.start, span.end - host.start
                columns = np.array(
                    [
                        j
                        for j, o in enumerate(offsets[host_id][: matrix.shape[1]])
                        if o is not None and o[0] < hi and lo < o[1]
                    ],
                    dtype=np.int64,
                )
            if len(columns):
                out[piece_id] = matrix[:, columns].max(axis=1)
        return out

    @staticmethod
    def _costs(pieces: list[Piece], inputs: CompressionInputs) -> None:
        """What each piece adds to the context: a table row pays its header line only as
        the first row kept from its table."""
        header_tokens: dict[str, int] = {}
        for p in pieces:
            p.cost_alone = p.cost_shared = p.whole_tokens
            if p.span.granularity == "row" and p.span.header:
                table = p.span.parent_id or p.span.doc_id
                if table not in header_tokens:
                    header_tokens[table] = inputs.count_tokens([_header_of(p.span, p.projection)])[0]
                p.cost_shared = p.whole_tokens - header_tokens[table]

    # -- choosing pieces -------------------------------------------------------------------------
    def _greedy(
        self,
        pieces: list[Piece],
        params: CompressionParams,
        target: int,
        inputs: CompressionInputs,
        bridged: set[str],
    ) -> tuple[list[Piece], list[TraceEntry]]:
        n = len(pieces)
        relevance = np.array([p.scores["relevance"] for p in pieces])
        prior = np.array([p.prior for p in pieces])
        with_coverage = [i for i, p in enumerate(pieces) if p.coverage is not None]
        coverage = np.zeros((n, 0))
        covered = np.zeros(0)
        if with_coverage:
            first_coverage = pieces[with_coverage[0]].coverage
            assert first_coverage is not None  # with_coverage lists pieces that have one
            n_q = len(first_coverage)
            coverage = np.stack([p.coverage if p.coverage is not None else np.zeros(n_q) for p in pieces])
            covered = np.median(coverage[with_coverage], axis=0)
        lead = np.array([_is_lead(p.span) for p in pieces], dtype=float)
        base = params.relevance_weight * relevance + params.prior_weight * prior + params.lead_weight * lead
        is_open: np.ndarray = np.ones(n, dtype=bool)
        docs_kept: set[str] = set()
        tables_paid: set[str] = set()
        decided: dict[int, str] = {}
        total = 0
        kept: list[int] = []
        while is_open.any():
            open_idx = np.flatnonzero(is_open)
            gain = base[open_idx].copy()
            if coverage.shape[1]:
                gain += params.coverage_weight * np.maximum(coverage[open_idx] - covered, 0).mean(axis=1)
            gain += params.bridge_weight * np.array(
                [pieces[i].span.doc_id in bridged and pieces[i].span.doc_id not in docs_kept for i in open_idx],
                dtype=float,
            )
            i = int(open_idx[int(np.argmax(gain))])
            is_open[i] = False
            piece = pieces[i]
            piece.scores["gain"] = float(gain.max())
            table = piece.span.parent_id or piece.span.doc_id
            cost = piece.cost_shared if piece.span.granularity == "row" and table in tables_paid else piece.cost_alone
            if total + cost > target:
                decided[i] = "compressed_out"
                continue
            decided[i] = ""
            kept.append(i)
            total += cost
            docs_kept.add(piece.span.doc_id)
            if piece.span.granularity == "row":
                tables_paid.add(table)
            if coverage.shape[1]:
                covered = np.maximum(covered, coverage[i])
        rank = {i: r for r, i in enumerate(kept, start=1)}
        trace = [
            TraceEntry(
                span_id=p.span.id,
                rank=rank.get(i, len(kept) + 1),
                scores=dict(p.scores),
                n_tokens=p.span.n_tokens,
                decision="dropped" if decided[i] else "taken",
                reason=decided[i] or "kept by compression",
                source="compression",
            )
            for i, p in enumerate(pieces)
        ]
        return [pieces[i] for i in kept], trace

    # -- token level ---------------------------------------------------------------------------
    @staticmethod
    def _drop_words(items: list[ContextSpan], target: int, inputs: CompressionInputs) -> list[ContextSpan]:
        """Drop the sentence words least similar to any question token until the context
        fits ``target`` (numbers and table rows always stay)."""
        if inputs.query_tokens is None or inputs.token_encoder is None:
            return items
        words: list[tuple[float, int, int]] = []  # (relevance, item, word index)
        split: list[list[str]] = []
        for k, item in enumerate(items):
            if item.span.granularity != "sentence":
                split.append([])  # rows keep their cells
                continue
            tokens = item.span.text.split(" ")
            split.append(tokens)
            relevance = _word_relevance(item.span.text, tokens, inputs.token_encoder, inputs.query_tokens)
            for w, (token, r) in enumerate(zip(tokens, relevance)):
                if token and not _NUMBER.search(token):
                    words.append((r, k, w))
        costs = dict(zip(((k, w) for _, k, w in words), inputs.count_tokens([split[k][w] for _, k, w in words])))
        total = sum(i.n_tokens for i in items)
        dropped: set[tuple[int, int]] = set()
        for _, k, w in sorted(words):
            if total <= target:
                break
            dropped.add((k, w))
            total -= costs[(k, w)]
        for k, item in enumerate(items):
            shown = " ".join(t for w, t in enumerate(split[k]) if (k, w) not in dropped)
            if split[k] and shown != item.span.text:
                item.display_text = shown
                item.n_tokens = inputs.count_tokens([shown])[0]
        return items


_NUMBER = re.compile(r"\d")


def _header_of(span: Span, projection: RowProjection | None) -> str:
    """The header lines a row shows: cut to its columns when the selector cut it."""
    return projection.header if projection is not None else span.header


def _is_lead(span: Span) -> bool:
    """The first sentence of its paragraph (span ids number spans in pre-order, so a first
    child comes right after its parent); leads tend to name what the paragraph is about."""
    if span.granularity != "sentence" or not span.parent_id:
        return False
    parent_order = order_of(span.parent_id)
    return parent_order is not None and parent_order + 1 == span.order


def _word_relevance(text: str, words: list[str], encoder: TokenEncoder, query_tokens: np.ndarray) -> list[float]:
    """Each space-separated word's best similarity to a question token (its word pieces
    encoded in context, from one forward pass over the text)."""
    (vectors,) = encoder.encode_tokens([text])
    (offsets,) = encoder.token_offsets([text])
    sims = (query_tokens @ vectors.T).max(axis=0) if len(vectors) else np.zeros(0)
    out, start = [], 0
    for word in words:
        end = start + len(word)
        scores = [sims[j] for j, o in enumerate(offsets[: len(sims)]) if o is not None and o[0] < end and start < o[1]]
        out.append(float(max(scores)) if scores else 1.0)
        start = end + 1
    return out
