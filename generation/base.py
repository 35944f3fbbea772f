"""The generator seam: question + selected context (+ earlier turns) → answer with citations.

Every generator answers in one piece (``generate``) or as it writes (``stream``): text
deltas (``str``) and, as the last item, the final ``Answer``, whose ``text`` is exactly the
deltas joined. ``history`` is the conversation so far (``{"role": "user" | "assistant",
"content"}`` turns, see ``generation.prompt.history_messages``) and ``sampling`` the
request's sampling parameters (``Sampling``); a generator without a model (the extractive
one) accepts both and ignores them.

    >>> gen: Generator = ExtractiveGenerator()                               # doctest: +SKIP
    >>> answer = gen.generate(question, query_vector, context)               # doctest: +SKIP
    >>> *deltas, final = gen.stream(question, query_vector, context)         # doctest: +SKIP
    >>> "".join(deltas) == final.text                                        # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from generation.types import Answer, History, Sampling
from retrieval.types import Context


class Generator(Protocol):
    name: str

    def generate(
        self,
        question: str,
        query_vector: np.ndarray,
        context: Context,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> Answer: ...

    def stream(
        self,
        question: str,
        query_vector: np.ndarray,
        context: Context,
        history: History | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str | Answer]: ...
