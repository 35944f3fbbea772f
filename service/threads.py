"""Thread pools sized by the service, not by the user's environment.

A query runs torch (the encoder, MaxSim), FAISS (its own OpenMP runtime) and numpy
(OpenBLAS) one after another. Left to their defaults, each of the three sizes its pool to
every core and keeps its threads spinning after a call, so on a small machine the next
library's threads wait for cores that spin for nothing: measured on 2 cores, the default
pipeline's p95 was 5.3x dense's with the libraries' defaults and 1.9x with
``OMP_NUM_THREADS=1`` (README: *Threads*). spanrag therefore sets the pools itself:

* **query** work (``SPANRAG_QUERY_THREADS``, default 1): one thread per library per
  request; a server answers concurrent requests on its worker threads, which is how a
  query service uses several cores.
* **bulk** work (``SPANRAG_THREADS``, default 0: the cores this process may use): ingest,
  token vectors and index builds, one large job at a time.

``SPANRAG_THREAD_PLAN=false`` leaves every pool as the libraries and ``OMP_NUM_THREADS``
set them (what the benchmark compares with).

    >>> plan = ThreadPlan(bulk=2, query=1)
    >>> plan.threads("query"), plan.threads("bulk")
    (1, 2)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from indexing.cores import available_cores

Work = Literal["query", "bulk"]


@dataclass
class ThreadPlan:
    """Threads per library for each kind of work; 0 means every available core.

    :meth:`use` sizes the pools of torch, FAISS and OpenBLAS (the libraries already
    imported; torch is imported only by work that needs it anyway)."""

    bulk: int = 0
    query: int = 1
    enabled: bool = True
    _sized: tuple[int, bool, bool] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.bulk < 0 or self.query < 0:
            raise ValueError("thread counts are >= 0 (0: every available core)")

    def threads(self, work: Work) -> int:
        wanted = self.bulk if work == "bulk" else self.query
        return wanted or available_cores()

    def use(self, work: Work) -> None:
        """Size the pools for ``work`` (process-wide; cheap when they already are)."""
        if not self.enabled:
            return
        n = self.threads(work)
        # a library imported since the last call has its default pools: size it too
        sized = (n, "torch" in sys.modules, "faiss" in sys.modules)
        with self._lock:
            if sized == self._sized and _pools_are(n):
                return
            _size_pools(n)
            self._sized = sized

    @contextmanager
    def bulk_work(self) -> Iterator[None]:
        """Bulk pools inside the block, query pools after it."""
        self.use("bulk")
        try:
            yield
        finally:
            self.use("query")


def _pools_are(n: int) -> bool:
    """Whether torch's and FAISS's pools (if imported) still have ``n`` threads: something
    else in the process may have resized them since."""
    torch, faiss = sys.modules.get("torch"), sys.modules.get("faiss")
    return (torch is None or torch.get_num_threads() == n) and (faiss is None or faiss.omp_get_max_threads() == n)


def _size_pools(n: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    # numpy's and FAISS's OpenBLAS keep their own pthread pools
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
