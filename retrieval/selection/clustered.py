"""Clustered selection: near-duplicate candidates stop eating the budget.

After "Clustered Retrieval Augmented Generation (CRAG)": the candidate spans are clustered
by their embeddings (scipy's average-linkage hierarchical clustering on cosine distance,
cut at ``1 - cluster_similarity``), each cluster keeps its best ``cluster_keep`` members
in fused order, and the representatives are packed under the budget in fused order.
Deterministic: same candidates, same clusters.
"""

from __future__ import annotations

import numpy as np

from retrieval.params import ClusteredParams, SelectionParams
from retrieval.selection.base import SelectionInputs, allowed_candidates, pack_in_order, split_vanished
from retrieval.types import Candidate, Context


def cluster_labels(vectors: np.ndarray, similarity: float) -> np.ndarray:
    """One label per row; rows whose average-linkage cosine similarity is at least
    ``similarity`` share a label."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    distances = np.clip(pdist(np.asarray(vectors, dtype=np.float64), metric="cosine"), 0.0, 2.0)
    tree = linkage(distances, method="average")
    return fcluster(tree, t=1.0 - similarity, criterion="distance").astype(np.int64)


class ClusteredSelector:
    """Cluster the candidate pool, keep each cluster's best, pack them in fused order."""

    group = "clustered"  # reads RetrievalParams.clustered

    def select(
        self, candidates: list[Candidate], limits: SelectionParams, inputs: SelectionInputs, options: ClusteredParams
    ) -> Context:
        allowed = allowed_candidates(candidates, limits)
        live, dropped = split_vanished(allowed, inputs)
        labels = cluster_labels(inputs.vectors([c.span_id for c in live]), options.similarity)
        kept_per_cluster: dict[int, int] = {}
        for candidate, label in zip(live, labels):  # fused order: the first are the best
            candidate.scores["cluster"] = float(label)
            if kept_per_cluster.get(int(label), 0) >= options.keep:
                dropped[candidate.span_id] = "cluster_duplicate"
            else:
                kept_per_cluster[int(label)] = kept_per_cluster.get(int(label), 0) + 1
        return pack_in_order(allowed, limits, limit=limits.top_k, pre_dropped=dropped)
