"""What any stage after selection may do to a context without knowing how it was selected.

A shared module: selection, the read-consistency repair in ``retrieval/pipeline.py`` and
``compression/`` all use it, and it imports nothing but ``retrieval.types``, so compression
can depend on it without depending on selection (see ``tests/test_import_graph.py``).
"""

from __future__ import annotations

from retrieval.types import ContextSpan


def share_table_headers(items: list[ContextSpan], header_tokens: dict[str, int]) -> list[ContextSpan]:
    """The first row of each table in reading order shows the header line; later rows of
    the same table show only themselves and cost that much less."""
    seen: set[str] = set()
    for item in items:
        span = item.span
        region = span.parent_id or span.doc_id
        if span.granularity != "row" or not span.header:
            item.n_tokens = span.n_tokens
            continue
        item.show_header = region not in seen
        item.n_tokens = span.n_tokens - (0 if item.show_header else header_tokens.get(region, 0))
        seen.add(region)
    return items


__all__ = ["share_table_headers"]
