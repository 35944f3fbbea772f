"""The service sizes the thread pools of torch, FAISS and OpenBLAS itself: one thread per
library while answering, every available core while ingesting, and nothing touched when
the plan is switched off (then OMP_NUM_THREADS and the libraries decide)."""

from __future__ import annotations

import faiss
import pytest
import torch
from threadpoolctl import threadpool_info

from indexing.cores import available_cores
from service.threads import ThreadPlan

C = "docs"


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def pool_sizes() -> tuple[int, int, set[int]]:
    return torch.get_num_threads(), faiss.omp_get_max_threads(), blas_threads()


@pytest.fixture
def restore_pools():
    before = torch.get_num_threads()
    yield
    ThreadPlan(bulk=before, query=before).use("query")


def test_zero_means_every_core_this_process_may_use():
    plan = ThreadPlan(bulk=0, query=0)
    assert plan.threads("bulk") == plan.threads("query") == available_cores() >= 1


def test_negative_thread_counts_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        ThreadPlan(bulk=-1)


def test_use_sizes_torch_faiss_and_blas_pools(restore_pools):
    plan = ThreadPlan(bulk=2, query=1)
    plan.use("query")
    assert pool_sizes() == (1, 1, {1})
    plan.use("bulk")
    assert pool_sizes() == (2, 2, {2})


def test_bulk_work_restores_the_query_pools_after_the_block_even_on_error(restore_pools):
    plan = ThreadPlan(bulk=2, query=1)
    with pytest.raises(RuntimeError), plan.bulk_work():
        assert torch.get_num_threads() == 2
        raise RuntimeError("ingest failed")
    assert pool_sizes() == (1, 1, {1})


def test_a_plan_switched_off_leaves_the_pools_alone(restore_pools):
    ThreadPlan(bulk=2, query=2).use("query")
    ThreadPlan(bulk=1, query=1, enabled=False).use("query")
    assert pool_sizes() == (2, 2, {2})


def test_the_service_answers_with_query_pools_and_ingests_with_bulk_pools(
    make_rag, tmp_path, samples_dir, restore_pools
):
    rag = make_rag(tmp_path / "data", threads=2, query_threads=1)
    seen_during_ingest: list[int] = []
    encode = rag.encoder.encode_with_tokens

    def recording(texts, token_rows):
        seen_during_ingest.append(torch.get_num_threads())
        return encode(texts, token_rows)

    rag.encoder.encode_with_tokens = recording
    rag.ingest_paths(C, [samples_dir])
    assert seen_during_ingest and set(seen_during_ingest) == {2}
    assert pool_sizes() == (1, 1, {1})  # back to query pools once the ingest returns

    ThreadPlan(bulk=2, query=2).use("query")  # as if something else had changed them
    rag.retrieve(C, "How are documents split?")
    assert pool_sizes() == (1, 1, {1})
