"""Compressed token vectors for late interaction: fp16, int8 and 1-bit binary codes.

Token vectors are unit length. ``int8`` keeps one float scale per token (max |x| / 127);
``binary`` keeps only signs, packed 8 per byte (as in BTR's binary token representations),
and is scored asymmetrically: the query stays in full precision and meets the signs scaled
by 1/sqrt(dim), the dot product of a unit query with the best unit approximation of the
token built from its signs alone.

    >>> import numpy as np
    >>> tokens = np.eye(8, dtype=np.float32)[:3]
    >>> encoded = encode_tokens(tokens, "binary")
    >>> encoded.data.shape, bytes_per_token(8, "binary")
    ((3, 1), 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Codec = Literal["fp16", "int8", "binary"]
CODECS: tuple[Codec, ...] = ("fp16", "int8", "binary")


@dataclass
class EncodedTokens:
    codec: Codec
    dim: int
    data: np.ndarray  # fp16 [n, dim] | int8 [n, dim] | uint8 [n, ceil(dim / 8)]
    scales: np.ndarray | None = None  # int8 only: float32 [n]

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (0 if self.scales is None else self.scales.nbytes)


def bytes_per_token(dim: int, codec: Codec) -> int:
    return {"fp16": 2 * dim, "int8": dim + 4, "binary": (dim + 7) // 8}[codec]


def encode_tokens(vectors: np.ndarray, codec: Codec) -> EncodedTokens:
    vectors = np.asarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if codec == "fp16":
        return EncodedTokens(codec, dim, vectors.astype(np.float16))
    if codec == "int8":
        scales = np.abs(vectors).max(axis=1) / 127.0
        scales[scales == 0] = 1.0
        data = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
        return EncodedTokens(codec, dim, data, scales.astype(np.float32))
    if codec == "binary":
        return EncodedTokens(codec, dim, np.packbits(vectors > 0, axis=1))
    raise ValueError(f"unknown token codec {codec!r}; known: {', '.join(CODECS)}")


def encoded_from_bytes(codec: Codec, dim: int, n: int, data: bytes, scales: bytes | None) -> EncodedTokens:
    """The ``EncodedTokens`` whose ``data`` (and int8 ``scales``) were stored as raw bytes."""
    if codec == "binary":
        array = np.frombuffer(data, dtype=np.uint8).reshape(n, (dim + 7) // 8)
    else:
        array = np.frombuffer(data, dtype=np.float16 if codec == "fp16" else np.int8).reshape(n, dim)
    return EncodedTokens(codec, dim, array, None if scales is None else np.frombuffer(scales, np.float32))


def decode_tokens(encoded: EncodedTokens) -> np.ndarray:
    """float32 [n, dim] the scorer compares the query with (signs / sqrt(dim) for binary)."""
    if encoded.codec == "fp16":
        return encoded.data.astype(np.float32)
    if encoded.codec == "int8":
        assert encoded.scales is not None  # int8 codes always carry their scales
        return encoded.data.astype(np.float32) * encoded.scales[:, None]
    bits = np.unpackbits(encoded.data, axis=1, count=encoded.dim).astype(np.float32)
    return (bits * 2.0 - 1.0) / np.sqrt(encoded.dim, dtype=np.float32)


def similarities(query: np.ndarray, tokens: EncodedTokens | np.ndarray) -> np.ndarray:
    """``query @ decode(tokens).T`` [n_query, n_tokens] without materializing decoded floats
    where the codec allows: binary uses ``q·(2b − 1)/√d = (2 q·b − Σq)/√d`` on the raw bits
    and int8 applies its scales to the product (one pass over the codes fewer than decoding
    first)."""
    query = np.asarray(query, dtype=np.float32)
    if isinstance(tokens, np.ndarray):
        return query @ tokens.T
    if tokens.codec == "binary":
        bits = np.unpackbits(tokens.data, axis=1, count=tokens.dim)
        dot = query @ bits.T.astype(np.float32)
        return (2.0 * dot - query.sum(axis=1, keepdims=True)) / np.float32(np.sqrt(tokens.dim))
    if tokens.codec == "int8":
        assert tokens.scales is not None  # int8 codes always carry their scales
        return (query @ tokens.data.T.astype(np.float32)) * tokens.scales[None, :]
    return query @ tokens.data.T.astype(np.float32)
