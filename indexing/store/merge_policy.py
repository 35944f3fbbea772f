"""When the embedded store merges its delta segments into a new base (``indexing.store.segments``).
Kept apart from the segments so the settings can read its defaults without loading numpy.

    >>> policy = MergePolicy(min_rows=100, fraction=0.1)
    >>> policy.wants_merge(base_rows=10_000, delta_rows=900, tombstones=50, deltas=3)
    False
    >>> policy.wants_merge(base_rows=10_000, delta_rows=900, tombstones=150, deltas=3)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MergePolicy:
    """When the deltas are merged into a new base (in the background): when the spans
    written and deleted since the last merge pass ``fraction`` of the base, with at least
    ``min_rows`` of them. In between, deltas are compacted by size tiers (:meth:`compaction`),
    so each span is compacted a logarithmic number of times and a search visits few of them."""

    min_rows: int = 20_000
    fraction: float = 0.1
    max_deltas: int = 16
    tier: int = 4

    def __post_init__(self) -> None:
        if self.min_rows < 0 or not 0 < self.fraction or self.max_deltas < 1 or self.tier < 2:
            raise ValueError(f"invalid merge policy {self}")

    def wants_merge(self, base_rows: int, delta_rows: int, tombstones: int, deltas: int) -> bool:
        changed = delta_rows + tombstones
        return changed > 0 and changed >= max(self.min_rows, self.fraction * base_rows)

    def compaction(self, sizes: list[int]) -> list[int]:
        """Positions of the deltas to compact into one (empty: none). The deltas of the
        smallest size tier (sizes within a factor ``tier`` of each other) that holds
        ``tier`` of them; else, past ``max_deltas``, the smallest ones.

            >>> MergePolicy(tier=4).compaction([5000, 30, 40, 20, 35])
            [1, 2, 3, 4]
            >>> MergePolicy(tier=4, max_deltas=3).compaction([5000, 300, 30, 20])
            [2, 3]
        """
        levels: dict[int, list[int]] = {}
        for position, size in enumerate(sizes):
            levels.setdefault(int(math.log(max(size, 1), self.tier)), []).append(position)
        for level in sorted(levels):
            if len(levels[level]) >= self.tier:
                return levels[level]
        if len(sizes) > self.max_deltas:
            smallest = sorted(range(len(sizes)), key=lambda i: sizes[i])
            return sorted(smallest[: len(sizes) - self.max_deltas + 1])
        return []
