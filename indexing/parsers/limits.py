"""Limits on what one document may cost to parse, and checks for values that must be
clean before they reach the store.

Every limit is checked early and cheaply, before the expensive work it protects: the byte
size before a file is decoded, a table's column count before its rows are built, HTML
nesting before the tree is walked. A document over a limit raises
:class:`DocumentTooLarge` (a :class:`ParseError`) naming the limit, its value, what was
seen and the setting that raises it:

    >>> ParseLimits(max_table_columns=1000)  # doctest: +ELLIPSIS
    ParseLimits(max_bytes=50000000, ..., max_table_columns=1000, ...)
    >>> str(DocumentTooLarge("max_table_columns", 1000, "table has 1000000 columns"))
    'table has 1000000 columns; the limit is 1000 (SPANRAG_MAX_TABLE_COLUMNS)'
    >>> check_metadata({"year": float("nan")}, ParseLimits())
    Traceback (most recent call last):
    ...
    indexing.parsers.base.ParseError: metadata["year"] is NaN or infinite: JSON has no such number
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from indexing.parsers.base import ParseError

# The setting (environment variable) behind each limit, named in every refusal.
ENV_NAMES: dict[str, str] = {
    "max_bytes": "SPANRAG_MAX_DOCUMENT_BYTES",
    "max_chars": "SPANRAG_MAX_DOCUMENT_CHARS",
    "max_spans": "SPANRAG_MAX_DOCUMENT_SPANS",
    "max_table_cells": "SPANRAG_MAX_TABLE_CELLS",
    "max_table_columns": "SPANRAG_MAX_TABLE_COLUMNS",
    "max_nesting_depth": "SPANRAG_MAX_NESTING_DEPTH",
    "max_metadata_bytes": "SPANRAG_MAX_METADATA_BYTES",
    "max_metadata_depth": "SPANRAG_MAX_METADATA_DEPTH",
}


@dataclass(frozen=True)
class ParseLimits:
    """Per-document limits; every field is a positive int."""

    max_bytes: int = 50_000_000  # raw bytes of one file given to a parser
    max_chars: int = 5_000_000  # characters of one document's normalized text
    max_spans: int = 200_000  # spans of one document's span tree
    max_table_cells: int = 1_000_000  # cells of one table (a whole CSV/TSV file)
    max_table_columns: int = 1_000  # columns of one table row
    max_nesting_depth: int = 256  # HTML element depth; JSON nesting of a record or metadata
    max_metadata_bytes: int = 65_536  # one document's metadata serialized as JSON (UTF-8)
    max_metadata_depth: int = 16  # metadata nests far less than a page, and is read back as JSON

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"ParseLimits.{f.name} ({ENV_NAMES[f.name]}) must be a positive integer, got {value!r}"
                )


DEFAULT_LIMITS = ParseLimits()


class DocumentTooLarge(ParseError):
    """A document over one of the :class:`ParseLimits`.

    ``limit_name`` is the ParseLimits field, ``env`` its setting, ``limit`` its value and
    ``observed`` what was seen (a lower bound when the check stopped early: the message
    then says "more than")."""

    def __init__(self, limit_name: str, limit: int, description: str, observed: int | None = None) -> None:
        self.limit_name = limit_name
        self.env = ENV_NAMES[limit_name]
        self.limit = limit
        self.observed = observed
        self.description = description
        super().__init__(f"{description}; the limit is {limit} ({self.env})")

    def __reduce__(self):  # picklable, e.g. across a process pool
        return type(self), (self.limit_name, self.limit, self.description, self.observed)


def resolve(limits: ParseLimits | None) -> ParseLimits:
    return DEFAULT_LIMITS if limits is None else limits


# -- checks shared by the parsers --------------------------------------------------------------


def check_bytes(size: int, limits: ParseLimits, what: str = "file") -> None:
    if size > limits.max_bytes:
        raise DocumentTooLarge("max_bytes", limits.max_bytes, f"{what} has {size} bytes", size)


def check_chars(text: str | int, limits: ParseLimits, what: str = "document") -> None:
    """``text`` or its length."""
    n = text if isinstance(text, int) else len(text)
    if n > limits.max_chars:
        raise DocumentTooLarge("max_chars", limits.max_chars, f"{what} has {n} characters of text", n)


def check_spans(count: int, limits: ParseLimits, what: str = "document") -> None:
    if count > limits.max_spans:
        raise DocumentTooLarge("max_spans", limits.max_spans, f"{what} has {count} spans", count)


def too_deep(depth: int, limits: ParseLimits, what: str, limit_name: str = "max_nesting_depth") -> DocumentTooLarge:
    """The refusal for ``what`` nested at least ``depth`` levels deep (checks stop early)."""
    return DocumentTooLarge(
        limit_name, getattr(limits, limit_name), f"{what} is nested more than {depth - 1} levels deep", depth
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, what: str) -> None:
    """Refuse a string holding an unpaired surrogate (e.g. ``"\\ud800"`` from a JSON
    ``\\ud800`` escape): it cannot be encoded as UTF-8, so a later store write would fail.

        >>> check_text("caf\\u00e9", "title")
        >>> check_text("bad \\ud800", "title")
        Traceback (most recent call last):
        ...
        indexing.parsers.base.ParseError: title contains an unpaired surrogate (U+D800) at character 4
    """
    match = _SURROGATE.search(text)
    if match is not None:
        raise ParseError(
            f"{what} contains an unpaired surrogate (U+{ord(match.group()):04X}) at character {match.start()}"
        )


def nesting_depth(value: Any, limits: ParseLimits, what: str, limit_name: str = "max_nesting_depth") -> int:
    """Depth of nested dicts/lists in ``value`` (a scalar is 0, ``{}`` is 1), found
    without recursion; raises :class:`DocumentTooLarge` as soon as it passes
    ``limits.max_nesting_depth``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        if depth > getattr(limits, limit_name):
            raise too_deep(depth, limits, what, limit_name)
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def check_metadata(metadata: dict, limits: ParseLimits | None = None, what: str = "metadata") -> None:
    """Refuse metadata that cannot be stored as JSON, or is over the limits: nested deeper
    than ``max_metadata_depth``, non-string keys, NaN or infinite floats, strings (keys or
    values) with unpaired surrogates, types JSON lacks, or more than ``max_metadata_bytes``
    serialized. Never recurses, so any depth is refused cleanly."""
    limits = resolve(limits)
    if not isinstance(metadata, dict):
        raise ParseError(f"{what} must be a JSON object, got {type(metadata).__name__}")
    nesting_depth(metadata, limits, what, "max_metadata_depth")  # first: all below walks a bounded depth
    # (value, trail): trail is (key, parent trail), rendered into a path only for a message.
    # The JSON size (compact separators, UTF-8) is summed on the way, also without recursion.
    size = 0
    stack: list[tuple[Any, tuple | None]] = [(metadata, None)]
    while stack:
        item, trail = stack.pop()
        if isinstance(item, dict):
            size += 1 + max(1, 2 * len(item))  # braces, colons and commas
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ParseError(f"{_path(what, trail)} has a non-string key {key!r}: JSON object keys are strings")
                check_text(key, f"{_path(what, trail)} key {json.dumps(key[:40])}")
                size += _json_bytes(key)
                stack.append((child, (key, trail)))
        elif isinstance(item, (list, tuple)):
            size += 1 + max(1, len(item))  # brackets and commas
            stack.extend((child, (i, trail)) for i, child in enumerate(item))
        elif isinstance(item, str):
            check_text(item, _path(what, trail))
            size += _json_bytes(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ParseError(f"{_path(what, trail)} is NaN or infinite: JSON has no such number")
        elif item is None or isinstance(item, (bool, int, float)):
            size += len(json.dumps(item))
        else:
            raise ParseError(f"{_path(what, trail)} is a {type(item).__name__}, which JSON cannot hold")
        if size > limits.max_metadata_bytes:
            raise DocumentTooLarge(
                "max_metadata_bytes",
                limits.max_metadata_bytes,
                f"{what} has more than {limits.max_metadata_bytes} bytes as JSON",
                size,
            )


def _json_bytes(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))


def _path(what: str, trail: tuple | None) -> str:
    keys = []
    while trail is not None:
        key, trail = trail
        keys.append(f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key[:40])}]")
    return what + "".join(reversed(keys))
