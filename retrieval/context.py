"""What any stage after selection may do to a context without knowing how it was selected.

A shared module: selection, the read-consistency repair in ``retrieval/pipeline.py``,
``compression/`` and the extractive generator's abstention (``terms``) use it, and it imports nothing but ``retrieval.types``, so compression
can depend on it without depending on selection (see ``tests/test_import_graph.py``).
"""

from __future__ import annotations

import re

from retrieval.types import ContextSpan

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
STOPWORDS = frozenset(
    "a an and are as at be been by did do does for from had has have how in is it its of on or"
    " that the their there these this to was were what when where which who whom whose why"
    " will with would than then they them he she his her i you we our your not no yes".split()
)


def terms(text: str) -> set[str]:
    """Content words and numbers, lower-cased: the bubble's coverage signal and the
    extractive generator's question coverage."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and (len(w) > 2 or w.isdigit())}


def share_table_headers(items: list[ContextSpan], header_tokens: dict[str, int]) -> list[ContextSpan]:
    """The first row of each table in reading order shows the header line; later rows of
    the same table show only themselves and cost that much less (``whole_tokens``: a row's
    cost with its header, cut to the columns it shows)."""
    seen: set[str] = set()
    for item in items:
        span = item.span
        region = span.parent_id or span.doc_id
        if span.granularity != "row" or not span.header:
            item.n_tokens = item.whole_tokens
            continue
        item.show_header = region not in seen
        item.n_tokens = item.whole_tokens - (0 if item.show_header else header_tokens.get(region, 0))
        seen.add(region)
    return items


__all__ = ["STOPWORDS", "share_table_headers", "terms"]
