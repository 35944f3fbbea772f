"""All of a collection's stored token vectors as one packed matrix, for fast late interaction.

SQLite stays the source of truth (one row of codes per span). This is a derived cache, like
the FAISS file: the codes of every span concatenated in span-row order and saved as ``.npy``
files that are memory-mapped on load, so MaxSim over a few documents is a slice and one
decode, never a query per span, and a large collection is paged in by the OS, not copied
into the heap. A document's spans are written in one transaction, so its token rows form
one contiguous block.

Token retrieval (XTR) searches the 1-bit signs of every token in a FAISS binary index
(Hamming distance), then rescores the hits asymmetrically against the stored codes.

    >>> import numpy as np
    >>> from indexing.token_codecs import encode_tokens
    >>> rows = [("d1#1", "d1", encode_tokens(np.eye(4, dtype=np.float32)[:2], "fp16")),
    ...         ("d2#1", "d2", encode_tokens(np.eye(4, dtype=np.float32)[2:3], "fp16"))]
    >>> matrix = TokenMatrix.build(rows, stamp=(1, 1))
    >>> packed = matrix.pack(["d2", "d1", "missing"])
    >>> packed.doc_ids, packed.offsets.tolist()
    (['d2', 'd1'], [0, 1, 3])
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexing.store.bm25 import positions_in
from indexing.store.files import staging_for, swap_in
from indexing.token_codecs import Codec, EncodedTokens, similarities

if TYPE_CHECKING:
    import faiss


@dataclass
class PackedTokens:
    """Token vectors of several documents packed row-wise (float, or the stored codes):
    document ``doc_ids[i]`` owns rows ``offsets[i]:offsets[i + 1]``; ``first_span_ids[i]``
    is its first scored span."""

    doc_ids: list[str]
    vectors: np.ndarray | EncodedTokens
    offsets: np.ndarray
    first_span_ids: list[str] = field(default_factory=list)


@dataclass
class TokenHits:
    """Token retrieval result: hit ``j`` is query token ``query_index[j]`` meeting a token of
    document ``doc_ids[doc_index[j]]`` with ``similarity[j]``. ``floor[i]`` is the lowest
    similarity retrieved for query token ``i`` (what XTR imputes for documents it missed)."""

    doc_ids: list[str]
    doc_index: np.ndarray
    query_index: np.ndarray
    similarity: np.ndarray
    floor: np.ndarray
    first_span_ids: list[str] = field(default_factory=list)


def _best_per_query(query_of: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` most similar hits of each query token (best first per token)."""
    order = np.lexsort((-sims, query_of))
    ranked = query_of[order]
    rank_in_query = np.arange(len(order)) - np.searchsorted(ranked, ranked, side="left")
    return order[rank_in_query < k]


def _floor(query_of: np.ndarray, sims: np.ndarray, n_q: int) -> np.ndarray:
    floor: np.ndarray = np.full(n_q, np.inf, dtype=np.float32)
    np.minimum.at(floor, query_of, sims.astype(np.float32))
    floor[np.isinf(floor)] = 0.0
    return floor


def merge_token_hits(parts: list[TokenHits], k: int) -> TokenHits:
    """The hits of several token searches (a matrix and the rows written since) as one: the
    ``k`` best per query token over all of them, the floor recomputed from those.

        >>> a = TokenHits(["d1"], np.array([0, 0]), np.array([0, 0]), np.array([0.9, 0.2], np.float32),
        ...               np.array([0.2], np.float32), ["d1#1"])
        >>> b = TokenHits(["d2"], np.array([0]), np.array([0]), np.array([0.5], np.float32),
        ...               np.array([0.5], np.float32), ["d2#1"])
        >>> hits = merge_token_hits([a, b], k=2)
        >>> hits.doc_ids, [round(float(s), 2) for s in hits.similarity], hits.floor.tolist()
        (['d1', 'd2'], [0.9, 0.5], [0.5])
    """
    n_q = len(parts[0].floor)
    doc_ids: list[str] = []
    first_span_ids: list[str] = []
    index_of: dict[str, int] = {}
    doc_index, query_index, similarity = [], [], []
    for hits in parts:
        remap: np.ndarray = np.zeros(len(hits.doc_ids), dtype=np.int64)
        for i, (doc, first) in enumerate(zip(hits.doc_ids, hits.first_span_ids or [""] * len(hits.doc_ids))):
            if doc not in index_of:
                index_of[doc] = len(doc_ids)
                doc_ids.append(doc)
                first_span_ids.append(first)
            remap[i] = index_of[doc]
        doc_index.append(remap[hits.doc_index])
        query_index.append(hits.query_index)
        similarity.append(hits.similarity)
    doc_of, query_of, sims = (np.concatenate(x) for x in (doc_index, query_index, similarity))
    keep = np.sort(_best_per_query(query_of, sims, k))
    doc_of, query_of, sims = doc_of[keep], query_of[keep], sims[keep]
    present, doc_of = np.unique(doc_of, return_inverse=True)
    return TokenHits(
        [doc_ids[d] for d in present],
        doc_of.astype(np.int64),
        query_of.astype(np.int64),
        sims.astype(np.float32),
        _floor(query_of, sims, n_q),
        [first_span_ids[d] for d in present],
    )


def sign_codes(encoded: EncodedTokens) -> np.ndarray:
    """1-bit codes (packed signs) of any stored codec: what the binary token index holds."""
    if encoded.codec == "binary":
        return np.asarray(encoded.data)
    return np.packbits(np.asarray(encoded.data) > 0, axis=1)


class TokenMatrix:
    """Packed token codes of one collection, valid for exactly one ``stamp``. ``span_rows``
    (the spans' row ids, when known) lets a search over it drop spans deleted since, and
    ``max_row`` says from which row the spans written since begin."""

    def __init__(
        self,
        stamp: tuple[int, int],
        codec: Codec,
        dim: int,
        codes: np.ndarray,
        scales: np.ndarray | None,
        span_ids: list[str],
        span_starts: np.ndarray,
        doc_ids: list[str],
        doc_spans: np.ndarray,
        span_rows: np.ndarray | None = None,
    ):
        self.stamp = stamp
        self.span_rows = span_rows  # [n_spans] span row ids, or None (a matrix saved before they were kept)
        self.codec = codec
        self.dim = dim
        self.codes = codes
        self.scales = scales
        self.span_ids = span_ids  # [n_spans] in storage order
        self.span_starts = span_starts  # [n_spans + 1] first token of each span
        self.doc_ids = doc_ids
        self.doc_spans = doc_spans  # [n_docs + 1] first span of each document
        self._doc_index = {d: i for i, d in enumerate(doc_ids)}
        self._binary_index: faiss.IndexBinary | None = None
        self.directory: Path | None = None  # where it was loaded from (the binary index is cached there)

    @property
    def n_tokens(self) -> int:
        return int(self.span_starts[-1])

    @property
    def max_row(self) -> int | None:
        """The highest span row it holds (None when its rows are not known)."""
        if self.span_rows is None:
            return None
        return int(self.span_rows[-1]) if len(self.span_rows) else 0  # built in row order

    @classmethod
    def build(
        cls,
        rows: Iterable[tuple[str, str, EncodedTokens]],
        stamp: tuple[int, int],
        span_rows: Iterable[int] | None = None,
    ) -> TokenMatrix:
        """From ``(span_id, doc_id, codes)`` in storage order (a document's spans together);
        ``span_rows``: their span row ids, in the same order."""
        parts: list[np.ndarray] = []
        scales: list[np.ndarray] = []
        span_ids: list[str] = []
        lengths: list[int] = []
        doc_ids: list[str] = []
        doc_starts: list[int] = []
        codec: Codec = "binary"
        dim = 0
        for span_id, doc_id, encoded in rows:
            if parts and (encoded.codec, encoded.dim) != (codec, dim):
                raise ValueError(
                    f"token vectors stored with codecs {codec}/{dim} and {encoded.codec}/{encoded.dim}"
                    " in one collection; re-ingest it with one SPANRAG_TOKEN_CODEC"
                )
            codec, dim = encoded.codec, encoded.dim
            if not doc_ids or doc_ids[-1] != doc_id:
                doc_ids.append(doc_id)
                doc_starts.append(len(span_ids))
            parts.append(np.asarray(encoded.data))
            if encoded.scales is not None:
                scales.append(np.asarray(encoded.scales))
            span_ids.append(span_id)
            lengths.append(len(encoded))
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("a document's token rows are not contiguous in span-row order")
        width = {"binary": (dim + 7) // 8}.get(codec, dim)
        dtype = {"binary": np.uint8, "int8": np.int8, "fp16": np.float16}[codec]
        codes = np.concatenate(parts) if parts else np.zeros((0, width), dtype)
        return cls(
            stamp,
            codec,
            dim,
            codes,
            np.concatenate(scales) if scales else None,
            span_ids,
            np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
            doc_ids,
            np.array(doc_starts + [len(span_ids)], dtype=np.int64),
            None if span_rows is None else np.fromiter(span_rows, dtype=np.int64, count=len(span_ids)),
        )

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        staging = staging_for(directory)
        np.save(staging / "codes.npy", self.codes)
        if self.scales is not None:
            np.save(staging / "scales.npy", self.scales)
        (staging / "span_ids.json").write_text(json.dumps(self.span_ids))
        np.save(staging / "span_starts.npy", self.span_starts)
        np.save(staging / "doc_spans.npy", self.doc_spans)
        if self.span_rows is not None:
            np.save(staging / "span_rows.npy", self.span_rows)
        (staging / "doc_ids.json").write_text(json.dumps(self.doc_ids))
        (staging / "meta.json").write_text(
            json.dumps({"stamp": list(self.stamp), "codec": self.codec, "dim": self.dim})
        )
        swap_in(staging, directory)

    @classmethod
    def load(cls, directory: Path, stamp: tuple[int, int] | None) -> TokenMatrix | None:
        """The saved matrix if it was built for ``stamp`` (None: whatever stamp it has),
        else None (codes memory-mapped)."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if stamp is not None and tuple(meta["stamp"]) != tuple(stamp):
                return None
            scales_path = directory / "scales.npy"
            rows_path = directory / "span_rows.npy"
            matrix = cls(
                (int(meta["stamp"][0]), int(meta["stamp"][1])),
                meta["codec"],
                meta["dim"],
                np.load(directory / "codes.npy", mmap_mode="r"),
                np.load(scales_path) if scales_path.exists() else None,
                json.loads((directory / "span_ids.json").read_text()),
                np.load(directory / "span_starts.npy"),
                json.loads((directory / "doc_ids.json").read_text()),
                np.load(directory / "doc_spans.npy"),
                np.load(rows_path) if rows_path.exists() else None,
            )
        except (OSError, ValueError, KeyError):
            return None
        matrix.directory = directory
        return matrix

    # -- reads ---------------------------------------------------------------------------------
    def _token_range(self, doc: int) -> tuple[int, int]:
        return int(self.span_starts[self.doc_spans[doc]]), int(self.span_starts[self.doc_spans[doc + 1]])

    def pack(self, doc_ids: list[str]) -> PackedTokens:
        """Stored codes of the given documents (those without tokens are left out)."""
        found = [(d, self._doc_index[d]) for d in doc_ids if d in self._doc_index]
        ranges = [self._token_range(i) for _, i in found]
        if not ranges:
            return PackedTokens([], np.zeros((0, self.dim), np.float32), np.zeros(1, np.int64))
        vectors = EncodedTokens(
            self.codec,
            self.dim,
            np.concatenate([self.codes[s:e] for s, e in ranges]),
            None if self.scales is None else np.concatenate([self.scales[s:e] for s, e in ranges]),
        )
        offsets = np.concatenate([[0], np.cumsum([e - s for s, e in ranges])]).astype(np.int64)
        first_spans = [self.span_ids[self.doc_spans[i]] for _, i in found]
        return PackedTokens([d for d, _ in found], vectors, offsets, first_spans)

    IVF_FROM_TOKENS = 200_000  # below this a flat Hamming scan is fast enough
    IVF_LISTS = 1024
    IVF_PROBES = 16

    def binary_index(self, flat: bool = False) -> faiss.IndexBinary:
        """Sign bits of every token in FAISS: a flat Hamming scan for small collections (or
        when ``flat``: the rows written since a matrix, rebuilt as they grow), an inverted
        file (1,024 lists, 16 probed) past 200k tokens, built once per stamp and saved
        beside the codes."""
        import faiss  # XTR only: loading it costs commands that never search tokens

        if self._binary_index is not None:
            return self._binary_index
        # named by stamp: a writer may have replaced the folder since this matrix was loaded
        cached = None if self.directory is None else self.directory / "signs.{}.{}.faissbin".format(*self.stamp)
        if cached is not None and cached.exists():
            index = faiss.read_index_binary(str(cached))
        else:
            signs = np.ascontiguousarray(sign_codes(EncodedTokens(self.codec, self.dim, self.codes)))
            bits = signs.shape[1] * 8
            if flat or len(signs) < self.IVF_FROM_TOKENS:
                index = faiss.IndexBinaryFlat(bits)
            else:
                index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, self.IVF_LISTS)
                sample = np.random.default_rng(0).choice(
                    len(signs), min(len(signs), 64 * self.IVF_LISTS), replace=False
                )
                index.train(signs[np.sort(sample)])
            index.add(signs)
            if cached is not None:
                _save_binary_index(faiss, index, cached)
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = self.IVF_PROBES
        self._binary_index = index
        return index

    def search(
        self,
        query_tokens: np.ndarray,
        k: int,
        oversample: int = 4,
        dead_spans: np.ndarray | None = None,
        flat: bool = False,
    ) -> TokenHits:
        """XTR's retrieval stage: the ``k`` stored tokens most similar to each query token.

        Candidates come from Hamming search over sign bits (``k × oversample`` per query
        token), then are rescored against the stored codes, so the similarities are the same
        ones MaxSim would use. ``dead_spans`` (a mask over the spans: deleted since the
        matrix was built) drops their tokens before the cut to ``k``."""
        n_q = len(query_tokens)
        if self.n_tokens == 0 or n_q == 0:
            empty: np.ndarray = np.zeros(0, np.int64)
            return TokenHits([], empty, empty, np.zeros(0, np.float32), np.zeros(n_q, np.float32))
        index = self.binary_index(flat)
        fetch = min(k * oversample, self.n_tokens)
        query_signs = np.packbits(query_tokens > 0, axis=1)
        _, token_ids = index.search(query_signs, fetch)  # [n_q, fetch]
        flat_ids = token_ids.reshape(-1)
        valid = flat_ids >= 0
        if dead_spans is not None and dead_spans.any():
            span_of_hit = np.searchsorted(self.span_starts, np.where(valid, flat_ids, 0), side="right") - 1
            valid &= ~dead_spans[span_of_hit]
        flat_ids = flat_ids[valid]
        unique_tokens, inverse = np.unique(flat_ids, return_inverse=True)  # score each row once
        scales = None if self.scales is None else self.scales[unique_tokens]
        stored = EncodedTokens(self.codec, self.dim, np.asarray(self.codes[unique_tokens]), scales)
        query_of = np.repeat(np.arange(n_q), fetch)[valid]
        sims = similarities(query_tokens, stored)[query_of, inverse]
        # keep the k best per query token after exact rescoring
        keep = _best_per_query(query_of, sims, k)
        query_of, sims, token_of = query_of[keep], sims[keep], unique_tokens[inverse][keep]
        floor = _floor(query_of, sims, n_q)
        span_of = np.searchsorted(self.span_starts, token_of, side="right") - 1
        doc_of = np.searchsorted(self.doc_spans, span_of, side="right") - 1
        docs, doc_index = np.unique(doc_of, return_inverse=True)
        return TokenHits(
            [self.doc_ids[d] for d in docs],
            doc_index.astype(np.int64),
            query_of.astype(np.int64),
            sims.astype(np.float32),
            floor,
            [self.span_ids[self.doc_spans[d]] for d in docs],
        )


@dataclass
class TokenDelta:
    """A token matrix and what was written since it was built, searched as one (XTR after a
    write, until the next merge rebuilds the matrix in the background): the token rows with
    span rows above the matrix's ``max_row`` (read from SQLite as they arrive, kept here,
    packed into a small matrix searched by a flat Hamming scan), and the matrix's spans
    deleted since (dropped from its hits).

        >>> from indexing.token_codecs import encode_tokens
        >>> old = TokenMatrix.build([("d1#1", "d1", encode_tokens(np.eye(4, dtype=np.float32)[:1], "fp16"))],
        ...                         stamp=(1, 1), span_rows=[7])
        >>> new = [(9, "d2#1", "d2", encode_tokens(np.eye(4, dtype=np.float32)[1:2], "fp16"))]
        >>> view = TokenDelta.over(old).advanced((3, 2), new, dead_rows=[7])
        >>> view.search(np.eye(4, dtype=np.float32)[:2], k=1).doc_ids
        ['d2']
    """

    base: TokenMatrix
    last_row: int
    rows: list[tuple[int, str, str, EncodedTokens]] = field(default_factory=list)
    stamp: tuple[int, int] | None = None
    matrix: TokenMatrix | None = None
    dead: np.ndarray | None = None  # mask over the base's spans
    dead_docs: frozenset[str] = frozenset()  # base documents with a deleted span (replaced or deleted)

    @classmethod
    def over(cls, base: TokenMatrix) -> TokenDelta:
        if base.max_row is None:
            raise ValueError("the matrix does not know its span rows")
        return cls(base, base.max_row)

    def advanced(
        self,
        stamp: tuple[int, int],
        new_rows: list[tuple[int, str, str, EncodedTokens]],
        dead_rows: Iterable[int],
    ) -> TokenDelta:
        """This delta at ``stamp``: ``new_rows`` (``(row, span_id, doc_id, codes)``, rows above
        :attr:`last_row`, ascending) added, every span row in ``dead_rows`` dropped."""
        dead = set(dead_rows)
        rows = [r for r in [*self.rows, *new_rows] if r[0] not in dead]
        matrix = None
        if rows:
            matrix = TokenMatrix.build(((s, d, e) for _, s, d, e in rows), stamp, [r[0] for r in rows])
        base_rows = self.base.span_rows if self.base.span_rows is not None else np.zeros(0, np.int64)
        dead_spans = positions_in(base_rows, np.fromiter(dead, dtype=np.int64, count=len(dead)))
        dead_mask: np.ndarray = np.zeros(len(base_rows), dtype=bool)
        dead_mask[dead_spans] = True
        doc_of_span = np.searchsorted(self.base.doc_spans, dead_spans, side="right") - 1
        return TokenDelta(
            self.base,
            max(self.last_row, new_rows[-1][0]) if new_rows else self.last_row,
            rows,
            stamp,
            matrix,
            dead_mask,
            frozenset(self.base.doc_ids[int(d)] for d in np.unique(doc_of_span)),
        )

    def pack(self, doc_ids: list[str]) -> PackedTokens:
        """Stored codes of the given documents as they are now: a document written since
        from the rows since, one the matrix holds (and no delete or replace touched) from
        the matrix, any other left out. What MaxSim reads between merges, with no query
        to SQLite for documents the matrix already holds."""
        fresh = self.matrix.pack(doc_ids) if self.matrix is not None else None
        from_fresh = set(fresh.doc_ids) if fresh is not None else set()
        kept = [d for d in doc_ids if d not in from_fresh and d not in self.dead_docs]
        old = self.base.pack(kept)
        parts = {d: (old, i) for i, d in enumerate(old.doc_ids)}
        if fresh is not None:
            parts |= {d: (fresh, i) for i, d in enumerate(fresh.doc_ids)}
        order = [d for d in dict.fromkeys(doc_ids) if d in parts]
        if not order:
            return old
        codes, scales, lengths, firsts = [], [], [], []
        for d in order:
            packed, i = parts[d]
            start, end = int(packed.offsets[i]), int(packed.offsets[i + 1])
            encoded = packed.vectors
            assert isinstance(encoded, EncodedTokens)
            codes.append(np.asarray(encoded.data[start:end]))
            if encoded.scales is not None:
                scales.append(np.asarray(encoded.scales[start:end]))
            lengths.append(end - start)
            firsts.append(packed.first_span_ids[i])
        return PackedTokens(
            order,
            EncodedTokens(
                self.base.codec, self.base.dim, np.concatenate(codes), np.concatenate(scales) if scales else None
            ),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            firsts,
        )

    def search(self, query_tokens: np.ndarray, k: int) -> TokenHits:
        parts = [self.base.search(query_tokens, k, dead_spans=self.dead)]
        if self.matrix is not None:
            parts.append(self.matrix.search(query_tokens, k, flat=True))
        return merge_token_hits(parts, k) if len(parts) > 1 else parts[0]


def _save_binary_index(faiss, index, path: Path) -> None:
    """Keep XTR's index beside the matrix it was built from, when that folder is still there:
    a merge or a backfill may have swapped the folder out since the matrix was loaded, and
    then the index is only kept in memory. Written under a temporary name and renamed, so a
    reader never loads half a file."""
    staging = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        faiss.write_index_binary(index, str(staging))
        os.replace(staging, path)
    except (OSError, RuntimeError):  # faiss reports a missing folder as RuntimeError
        staging.unlink(missing_ok=True)
