"""When the embedded store merges its delta segments into a new base (``indexing.store.segments``).
Kept apart from the segments so the settings can read its defaults without loading numpy.

    >>> policy = MergePolicy(min_rows=100, fraction=0.1)
    >>> policy.wants_merge(base_rows=10_000, delta_rows=900, tombstones=50, deltas=3)
    False
    >>> policy.wants_merge(base_rows=10_000, delta_rows=900, tombstones=150, deltas=3)
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MergePolicy:
    """When the deltas are merged into a new base (in the background): when the spans
    written and deleted since the last merge pass ``fraction`` of the base, with at least
    ``min_rows`` of them; and the deltas are compacted into one when there are more than
    ``max_deltas`` (each costs a search call)."""

    min_rows: int = 20_000
    fraction: float = 0.1
    max_deltas: int = 8

    def __post_init__(self) -> None:
        if self.min_rows < 0 or not 0 < self.fraction or self.max_deltas < 1:
            raise ValueError(f"invalid merge policy {self}")

    def wants_merge(self, base_rows: int, delta_rows: int, tombstones: int, deltas: int) -> bool:
        changed = delta_rows + tombstones
        return changed > 0 and changed >= max(self.min_rows, self.fraction * base_rows)

    def wants_compaction(self, deltas: int) -> bool:
        return deltas > self.max_deltas
