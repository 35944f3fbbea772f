"""One background thread per store for the work no query should wait for: merging
segments, compacting deltas, building the token matrix.

    >>> jobs = BackgroundJobs()
    >>> done = []
    >>> jobs.submit(("merge", "docs"), lambda: done.append(1))
    True
    >>> jobs.wait(); done
    [1]
    >>> jobs.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("spanrag.store")


class BackgroundJobs:
    """Runs submitted jobs one at a time, in submission order; a job already waiting or
    running under the same key is not submitted twice. A job's exception is logged (the
    next write or search submits it again)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._queued: dict[Hashable, Future] = {}
        self._running: set[Hashable] = set()
        self._closed = False

    def submit(self, key: Hashable, job: Callable[[], object]) -> bool:
        """Queue ``job`` unless one under ``key`` is waiting; False when not queued."""
        with self._lock:
            if self._closed or key in self._queued:
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spanrag-segments")
            self._queued[key] = self._executor.submit(self._run, key, job)
            return True

    def _run(self, key: Hashable, job: Callable[[], object]) -> None:
        with self._lock:
            self._queued.pop(key, None)
            self._running.add(key)
        try:
            job()
        except Exception:
            log.exception("background job %s failed", key)
        finally:
            with self._lock:
                self._running.discard(key)

    def running(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._running or key in self._queued

    def wait(self) -> None:
        """Until every job submitted so far (and any they submit) has run."""
        while True:
            with self._lock:
                pending = list(self._queued.values())
                busy = bool(self._running)
            if not pending and not busy:
                return
            for future in pending:
                future.result()
            if not pending:
                threading.Event().wait(0.01)

    def close(self) -> None:
        """Drop waiting jobs; wait for the running one."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
