"""The generator seam: question + selected context → answer with citations."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from generation.types import Answer
from retrieval.types import Context


class Generator(Protocol):
    name: str

    def generate(self, question: str, query_vector: np.ndarray, context: Context) -> Answer: ...
