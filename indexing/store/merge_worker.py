"""The build half of a merge, in a process of its own: reading every span of one committed
state, building the dense and BM25 indexes and the token matrix, and saving them. The
server's process then only loads the files and swaps them in, so the questions it answers
meanwhile do not share the interpreter with the Python-heavy build (measured: p95 9.6x idle
and questions of over a second while a 100k-span base merged in a thread; README: Live
updates).

    python -m indexing.store.merge_worker DATA_DIR COLLECTION DENSE_SIGNATURE

prints ``{"generation": G, "max_row": R}`` of the base it saved, or ``null`` when the
collection is gone. :meth:`SqliteFaissStore._merge` runs it; it dies with its parent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the one that started it dies (no orphan merge
    swapping files under a store that was killed and reopened)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def build_in_child(data_dir: Path, collection: str, signature: str) -> dict | None:
    """Run the worker and wait for it; its result, or None (collection gone). A failed
    worker raises ``RuntimeError`` with its last output lines."""
    done = subprocess.run(
        [sys.executable, "-m", "indexing.store.merge_worker", str(data_dir), collection, signature],
        capture_output=True,
        text=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"merge worker for {collection!r} exited with {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from indexing.store.dense_index import DenseIndexSpec
    from indexing.store.sqlite_faiss import SqliteFaissStore

    data_dir, collection, signature = argv if argv is not None else sys.argv[1:]
    store = SqliteFaissStore(
        Path(data_dir), dense_index=DenseIndexSpec.from_signature(signature, "cpu"), merge_in_process=True
    )
    try:
        print(json.dumps(store.build_and_save_base(collection)), flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
