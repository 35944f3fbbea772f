"""The dense span index in FAISS: exact (``flat``, the default) or approximate (``hnsw``,
``ivf``), chosen by :class:`DenseIndexSpec` (``SPANRAG_DENSE_INDEX``). All three keep fp16
codes of the span vectors and rank by inner product (the vectors are unit length).

* ``flat``: one exhaustive index over every span; a granularity filter is an ID selector on
  the same scan, so every search is exact.
* ``hnsw``: an HNSW graph (``M`` links per node) over the fp16 codes, one per granularity.
* ``ivf``: inverted lists (k-means, about 2·√n lists), fp16 codes, one index per granularity
  (a granularity too small for two lists gets an exact scan).

The approximate kinds keep one index per granularity because graph and list search lose
recall under a selective filter (the ``dense`` pipeline searches document spans only, ~10%
of them; the graph build searches paragraphs): searching several granularities searches
each index and merges the hits by score. SQLite keeps the float32 vectors, so an index is
always rebuilt from them, never converted.

    >>> import numpy as np
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = DenseIndex.build(DenseIndexSpec("hnsw"), 4, np.array([10, 11, 12, 13]),
    ...                          ["document", "sentence", "sentence", "sentence"], vectors)
    >>> index.search(vectors[2], k=1, granularities=["sentence"])
    [(12, 1.0)]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from indexing.spans import GRANULARITIES, Granularity

if TYPE_CHECKING:  # FAISS is imported where an index is built or read: store-only CLI commands start fast
    import faiss

DenseIndexKind = Literal["flat", "hnsw", "ivf"]
DENSE_INDEX_KINDS: tuple[DenseIndexKind, ...] = ("flat", "hnsw", "ivf")
ALL = "*"  # the part name of flat's single index over every granularity


@dataclass(frozen=True)
class DenseIndexSpec:
    """Which dense index to build and how to search it.

    ``hnsw_ef_search`` and ``ivf_nprobe`` are search-time knobs (a deeper ``k`` widens them:
    HNSW searches with ``max(ef_search, k)`` candidates, IVF probes enough lists to hold
    about ``2k`` vectors); the others shape the built index and are part of
    :attr:`signature`, so changing them rebuilds it.

        >>> DenseIndexSpec().signature, DenseIndexSpec("hnsw").signature
        ('fp16', 'hnsw-fp16-m32-efc80')
    """

    kind: DenseIndexKind = "flat"
    device: str = "cpu"  # "cuda" (or "auto" with CUDA present): searches on the GPU; not in the signature
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nprobe: int = 32

    def __post_init__(self) -> None:
        if self.kind not in DENSE_INDEX_KINDS:
            raise ValueError(f"unknown dense index {self.kind!r}; known: {', '.join(DENSE_INDEX_KINDS)}")

    @property
    def signature(self) -> str:
        """What the saved index was built as; a saved index with another one is rebuilt
        (``fp16`` for flat, as before the approximate kinds existed)."""
        if self.kind == "hnsw":
            return f"hnsw-fp16-m{self.hnsw_m}-efc{self.hnsw_ef_construction}"
        return "fp16" if self.kind == "flat" else "ivf-fp16"

    @classmethod
    def from_signature(cls, signature: str, device: str = "cpu") -> DenseIndexSpec:
        """The spec an index saved with ``signature`` was built with (searched as it is
        while an index of another kind is built in its place).

            >>> DenseIndexSpec.from_signature("hnsw-fp16-m16-efc40").hnsw_m
            16
        """
        if signature.startswith("hnsw-fp16-m"):
            m, efc = signature.removeprefix("hnsw-fp16-m").split("-efc")
            return cls("hnsw", device, hnsw_m=int(m), hnsw_ef_construction=int(efc))
        if signature == "ivf-fp16":
            return cls("ivf", device)
        if signature == "fp16":
            return cls("flat", device)
        raise ValueError(f"unknown dense index signature {signature!r}")


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 2·√n, with at least 39 training vectors each."""
    return max(1, min(round(2 * math.sqrt(n)), n // 39))


def _build_part(spec: DenseIndexSpec, dim: int, row_ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    import faiss

    ip, fp16 = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer.QT_fp16
    inner: faiss.Index
    if spec.kind == "flat" or (spec.kind == "ivf" and ivf_lists(len(row_ids)) == 1):
        # fp16: the exhaustive scan is memory-bound, half the bytes to read (and one
        # inverted list would be the same scan)
        inner = faiss.IndexScalarQuantizer(dim, fp16, ip)
    elif spec.kind == "hnsw":
        # faiss's stub types the second argument as a ScalarQuantizer; the constructor takes its QuantizerType
        hnsw = faiss.IndexHNSWSQ(dim, fp16, spec.hnsw_m, ip)  # type: ignore[arg-type]
        hnsw.hnsw.efConstruction = spec.hnsw_ef_construction
        inner = hnsw
    else:
        nlist = ivf_lists(len(row_ids))
        inner = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, fp16, ip)
        sample = np.random.default_rng(0).permutation(len(vectors))[: 64 * nlist]
        inner.train(vectors[np.sort(sample)])
    index = faiss.IndexIDMap2(inner)
    if len(row_ids):
        index.add_with_ids(vectors, row_ids)
    return index


class TorchFlatSearch:
    """Exact inner-product top-k as one fp16 (fp32 on a CPU) matrix product and ``topk`` on a
    torch device: the GPU path for the flat index. On an H100 a torch fp16 product beat FAISS
    GPU's flat index (about 105,000 against 45,000 QPS at 1M × 384, 4,096-query batches, as
    the issue measured), and FAISS GPU has no flat scalar-quantizer index to clone ours to.

        >>> import numpy as np
        >>> search = TorchFlatSearch(np.array([7, 8, 9]), np.eye(3, dtype=np.float32), "cpu")
        >>> search.search(np.array([0.0, 1.0, 0.0], dtype=np.float32), k=2, allowed=np.array([8, 9]))
        [(8, 1.0), (9, 0.0)]
    """

    def __init__(self, row_ids: np.ndarray, vectors: np.ndarray, device: str):
        import torch

        self.device = device
        self.row_ids = np.asarray(row_ids, dtype=np.int64)
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        self.matrix = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32), device=device).to(dtype)

    @classmethod
    def from_faiss(cls, index: faiss.Index, device: str) -> TorchFlatSearch:
        """The vectors and ids of a flat ``IndexIDMap2`` (decoded from its fp16 codes)."""
        import faiss

        id_map = cast("faiss.IndexIDMap", index)  # every part is an IndexIDMap2 (_build_part)
        row_ids = faiss.vector_to_array(id_map.id_map).astype(np.int64)
        return cls(row_ids, id_map.index.reconstruct_n(0, index.ntotal), device)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None, excluded: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        import torch

        q = torch.as_tensor(np.asarray(query, dtype=np.float32).reshape(-1), device=self.device).to(self.matrix.dtype)
        scores = (self.matrix @ q).float()
        drop = None if allowed is None else ~np.isin(self.row_ids, allowed)
        if excluded is not None and len(excluded):
            dead = np.isin(self.row_ids, excluded)
            drop = dead if drop is None else drop | dead
        if drop is not None:
            scores = scores.masked_fill(torch.as_tensor(drop, device=self.device), float("-inf"))
        k = min(k, int(torch.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = torch.topk(scores, k)
        return [(int(self.row_ids[i]), float(s)) for s, i in zip(top.values.cpu().numpy(), top.indices.cpu().numpy())]


@dataclass
class DenseIndex:
    """Span vectors by span row id, in one index (``flat``) or one per granularity.

    With ``spec.device`` on CUDA, searches run on the GPU: flat through
    :class:`TorchFlatSearch`, IVF parts cloned to FAISS GPU when the ``faiss`` module sees
    GPUs (the ``gpu`` extra); HNSW stays on the CPU (FAISS has no GPU HNSW)."""

    spec: DenseIndexSpec
    parts: dict[str, faiss.Index] = field(default_factory=dict)
    _torch_flat: TorchFlatSearch | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import faiss

        device = self.spec.device
        if device == "auto":  # resolved here, when an index is loaded, so store-only commands skip torch
            from indexing.embed import pick_device

            device = pick_device(device)
        if not device.startswith("cuda"):
            return
        if ALL in self.parts:
            self._torch_flat = TorchFlatSearch.from_faiss(self.parts[ALL], device)
        elif self.spec.kind == "ivf" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            self.parts = {g: faiss.index_cpu_to_all_gpus(part) for g, part in self.parts.items()}

    @classmethod
    def build(
        cls,
        spec: DenseIndexSpec,
        dim: int,
        row_ids: np.ndarray,
        granularities: Sequence[str],
        vectors: np.ndarray,
    ) -> DenseIndex:
        """Index ``vectors`` (float32, unit length; row ``i`` is span row ``row_ids[i]`` of
        granularity ``granularities[i]``)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(row_ids), dim)
        if spec.kind == "flat":
            return cls(spec, {ALL: _build_part(spec, dim, row_ids, vectors)})
        labels = np.asarray(granularities)
        parts: dict[str, faiss.Index] = {}
        for g in GRANULARITIES:
            mask = labels == g
            if mask.any():
                parts[g] = _build_part(spec, dim, row_ids[mask], vectors[mask])
        return cls(spec, parts)

    @property
    def ntotal(self) -> int:
        return sum(p.ntotal for p in self.parts.values())

    def search(
        self,
        query: np.ndarray,
        k: int,
        granularities: Sequence[Granularity] | None = None,
        rows_by_granularity: dict[str, np.ndarray] | None = None,
        excluded: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` best ``(row_id, score)``, best first, over ``granularities`` (None: all),
        never a row of ``excluded`` (tombstones: filtered inside the search, so ``k`` hits
        come back however many rows are excluded). ``rows_by_granularity`` (row ids per
        granularity) is what flat filters with."""
        return self.search_many(np.asarray(query).reshape(1, -1), k, granularities, rows_by_granularity, excluded)[0]

    def search_many(
        self,
        queries: np.ndarray,
        k: int,
        granularities: Sequence[Granularity] | None = None,
        rows_by_granularity: dict[str, np.ndarray] | None = None,
        excluded: np.ndarray | None = None,
    ) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each row of ``queries``, in one FAISS call per index part (the
        filter is built once and FAISS spreads the queries over its threads)."""
        import faiss

        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(len(queries), -1))
        blocked = None
        if excluded is not None and len(excluded):
            blocked = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(excluded, dtype=np.int64)))
        if ALL in self.parts:
            return self._search_flat(q, k, granularities, rows_by_granularity or {}, excluded, blocked)
        hits: list[list[tuple[int, float]]] = [[] for _ in range(len(q))]
        for g in GRANULARITIES if granularities is None else dict.fromkeys(granularities):
            part = self.parts.get(g)
            if part is None or part.ntotal == 0 or k <= 0:
                continue
            depth = min(k, part.ntotal)
            scores, rows = part.search(q, depth, params=self._params(part, depth, blocked))
            for i in range(len(q)):
                hits[i].extend((int(r), float(s)) for r, s in zip(rows[i], scores[i]) if r >= 0)
        for found in hits:
            found.sort(key=lambda hit: (-hit[1], hit[0]))
        return [found[:k] for found in hits]

    def _search_flat(
        self, q, k, granularities, rows_by_granularity, excluded, blocked
    ) -> list[list[tuple[int, float]]]:
        import faiss

        index = self.parts[ALL]
        allowed = None
        selector = blocked
        if granularities is not None and set(granularities) != set(GRANULARITIES):
            allowed = np.concatenate([rows_by_granularity.get(g, np.zeros(0, np.int64)) for g in granularities])
            if len(allowed) == 0:
                return [[] for _ in range(len(q))]
            wanted = faiss.IDSelectorBatch(allowed)
            selector = wanted if blocked is None else faiss.IDSelectorAnd(wanted, blocked)
            k = min(k, len(allowed))
        # faiss's stub lacks the keyword constructor its Python wrapper adds (it keeps `sel` alive;
        # the selectors it is made of stay alive as locals until the search returns)
        params = None if selector is None else faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        if self._torch_flat is not None:
            torch_flat = self._torch_flat
            return [torch_flat.search(row, k, allowed, excluded) for row in q]
        k = min(k, index.ntotal)
        if k <= 0:
            return [[] for _ in range(len(q))]
        scores, rows = index.search(q, k, params=params)
        return [[(int(r), float(s)) for r, s in zip(rows[i], scores[i]) if r >= 0] for i in range(len(q))]

    def _params(self, part: faiss.Index, k: int, blocked: faiss.IDSelector | None) -> faiss.SearchParameters | None:
        import faiss

        inner = faiss.downcast_index(cast("faiss.IndexIDMap", part).index)  # every part is an IndexIDMap2
        # faiss's stub lacks SearchParametersHNSW and the keyword constructors its Python wrapper adds
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=max(self.spec.hnsw_ef_search, k), sel=blocked
            )
        if isinstance(inner, faiss.IndexIVF):
            wanted = math.ceil(2 * k * inner.nlist / part.ntotal)  # lists that hold ~2k vectors
            nprobe = min(inner.nlist, max(self.spec.ivf_nprobe, wanted))
            return faiss.SearchParametersIVF(nprobe=nprobe, sel=blocked)  # type: ignore[call-arg]
        # a part too small for lists: exact
        return None if blocked is None else faiss.SearchParameters(sel=blocked)  # type: ignore[call-arg]

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``dense.faiss`` (flat) or ``dense.<granularity>.faiss``, and ``dense.json``."""
        import faiss

        for name, part in self.cpu_parts().items():
            faiss.write_index(part, str(directory / _file_name(name)))
        (directory / "dense.json").write_text(json.dumps({"signature": self.spec.signature, "parts": list(self.parts)}))

    @classmethod
    def load(cls, spec: DenseIndexSpec, directory: Path) -> DenseIndex | None:
        """The index saved in ``directory`` if it was built as ``spec`` says, else None.
        (A flat index saved before ``dense.json`` existed is its one ``dense.faiss``.)"""
        import faiss

        try:
            saved = json.loads((directory / "dense.json").read_text())
        except FileNotFoundError:
            saved = {"signature": "fp16", "parts": [ALL]}
        if saved["signature"] != spec.signature:
            return None
        return cls(spec, {name: faiss.read_index(str(directory / _file_name(name))) for name in saved["parts"]})

    def cpu_parts(self) -> dict[str, faiss.Index]:
        """The parts as CPU indexes (GPU clones are copied back for writing)."""
        import faiss

        return {
            name: faiss.index_gpu_to_cpu(part) if "Gpu" in type(part).__name__ else part
            for name, part in self.parts.items()
        }


def _file_name(part: str) -> str:
    return "dense.faiss" if part == ALL else f"dense.{part}.faiss"


__all__ = ["DENSE_INDEX_KINDS", "DenseIndex", "DenseIndexKind", "DenseIndexSpec", "TorchFlatSearch", "ivf_lists"]
