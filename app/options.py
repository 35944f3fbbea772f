"""Per-request retrieval options shared by the native and the OpenAI-compatible endpoints,
and the text type every request string goes through."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from retrieval.params import RetrievalOverrides


def encodable_text(value: str) -> str:
    """Refuse strings that cannot be stored or embedded: JSON may carry a lone UTF-16
    surrogate (``"\\ud800"``), which no UTF-8 writer (SQLite, the tokenizer, a log line) accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains an unpaired surrogate at character {exc.start}") from None
    if "\x00" in value:
        raise ValueError(f"contains a NUL character at character {value.index(chr(0))}")
    return value


Text = Annotated[str, AfterValidator(encodable_text)]
"""A request string: valid Unicode, no NUL."""


class RetrievalOptions(RetrievalOverrides):
    """Knobs a request may override on top of the pipeline and the server's settings: the
    override knobs as ``retrieval.params`` declares them once (names, ranges, NaN refused),
    shared with the CLI flags, the ``SPANRAG_*`` settings and the LangChain retriever.
    ``overrides()`` gives the ones set, for ``RetrievalParams.with_overrides``."""
