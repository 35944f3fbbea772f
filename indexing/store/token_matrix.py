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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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


def sign_codes(encoded: EncodedTokens) -> np.ndarray:
    """1-bit codes (packed signs) of any stored codec: what the binary token index holds."""
    if encoded.codec == "binary":
        return np.asarray(encoded.data)
    return np.packbits(np.asarray(encoded.data) > 0, axis=1)


class TokenMatrix:
    """Packed token codes of one collection, valid for exactly one ``stamp``."""

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
    ):
        self.stamp = stamp
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

    @classmethod
    def build(cls, rows: Iterable[tuple[str, str, EncodedTokens]], stamp: tuple[int, int]) -> TokenMatrix:
        """From ``(span_id, doc_id, codes)`` in storage order (a document's spans together)."""
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
        (staging / "doc_ids.json").write_text(json.dumps(self.doc_ids))
        (staging / "meta.json").write_text(
            json.dumps({"stamp": list(self.stamp), "codec": self.codec, "dim": self.dim})
        )
        swap_in(staging, directory)

    @classmethod
    def load(cls, directory: Path, stamp: tuple[int, int]) -> TokenMatrix | None:
        """The saved matrix if it was built for ``stamp``, else None (codes memory-mapped)."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if tuple(meta["stamp"]) != tuple(stamp):
                return None
            scales_path = directory / "scales.npy"
            matrix = cls(
                stamp,
                meta["codec"],
                meta["dim"],
                np.load(directory / "codes.npy", mmap_mode="r"),
                np.load(scales_path) if scales_path.exists() else None,
                json.loads((directory / "span_ids.json").read_text()),
                np.load(directory / "span_starts.npy"),
                json.loads((directory / "doc_ids.json").read_text()),
                np.load(directory / "doc_spans.npy"),
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

    def binary_index(self) -> faiss.IndexBinary:
        """Sign bits of every token in FAISS: a flat Hamming scan for small collections,
        an inverted file (1,024 lists, 16 probed) past 200k tokens, built once per stamp and
        saved beside the codes."""
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
            if len(signs) < self.IVF_FROM_TOKENS:
                index = faiss.IndexBinaryFlat(bits)
            else:
                index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, self.IVF_LISTS)
                sample = np.random.default_rng(0).choice(
                    len(signs), min(len(signs), 64 * self.IVF_LISTS), replace=False
                )
                index.train(signs[np.sort(sample)])
            index.add(signs)
            if cached is not None:
                faiss.write_index_binary(index, str(cached))
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = self.IVF_PROBES
        self._binary_index = index
        return index

    def search(self, query_tokens: np.ndarray, k: int, oversample: int = 4) -> TokenHits:
        """XTR's retrieval stage: the ``k`` stored tokens most similar to each query token.

        Candidates come from Hamming search over sign bits (``k × oversample`` per query
        token), then are rescored against the stored codes, so the similarities are the same
        ones MaxSim would use."""
        n_q = len(query_tokens)
        if self.n_tokens == 0 or n_q == 0:
            empty: np.ndarray = np.zeros(0, np.int64)
            return TokenHits([], empty, empty, np.zeros(0, np.float32), np.zeros(n_q, np.float32))
        index = self.binary_index()
        fetch = min(k * oversample, self.n_tokens)
        query_signs = np.packbits(query_tokens > 0, axis=1)
        _, token_ids = index.search(query_signs, fetch)  # [n_q, fetch]
        flat = token_ids.reshape(-1)
        valid = flat >= 0
        flat = flat[valid]
        unique_tokens, inverse = np.unique(flat, return_inverse=True)  # score each row once
        scales = None if self.scales is None else self.scales[unique_tokens]
        stored = EncodedTokens(self.codec, self.dim, np.asarray(self.codes[unique_tokens]), scales)
        query_of = np.repeat(np.arange(n_q), fetch)[valid]
        sims = similarities(query_tokens, stored)[query_of, inverse]
        # keep the k best per query token after exact rescoring
        keep = np.lexsort((-sims, query_of))
        query_of, sims, token_of = query_of[keep], sims[keep], unique_tokens[inverse][keep]
        rank_in_query = np.arange(len(keep)) - np.searchsorted(query_of, query_of, side="left")
        top = rank_in_query < k
        query_of, sims, token_of = query_of[top], sims[top], token_of[top]
        floor: np.ndarray = np.full(n_q, np.inf, dtype=np.float32)
        np.minimum.at(floor, query_of, sims.astype(np.float32))
        floor[np.isinf(floor)] = 0.0
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
