"""NoDuplicatesSampler on 2 real gloo processes (CPU): global batches are duplicate-free across ranks."""

from __future__ import annotations

import json

import pytest

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.distributed._common import run_workers
from tests.sampler import _gloo_worker as worker
from tests.sampler._helpers import duplicated_columns, duplicates_in, row_texts

pytestmark = pytest.mark.slow  # two gloo processes: ~9 s

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("sampler_gloo")
    args = ["--init-file", str(workdir / "rendezvous"), "--out", str(workdir)]
    run_workers("tests.sampler._gloo_worker", args, WORLD_SIZE, workdir, timeout=120)
    return [json.loads((workdir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def texts() -> list[set[str]]:
    data = duplicated_columns(worker.NUM_ROWS, worker.NUM_COLUMNS, worker.POOL, seed=worker.DATA_SEED)
    return row_texts(data, list(data))


def test_sampler_reads_world_size_and_rank_from_torch_distributed(rank_results: list[dict]) -> None:
    for rank, result in enumerate(rank_results):
        assert (result["shard"]["num_replicas"], result["shard"]["rank"]) == (WORLD_SIZE, rank)


def test_both_ranks_yield_the_same_number_of_batches(rank_results: list[dict]) -> None:
    lengths = {result["shard"]["len"] for result in rank_results}
    assert len(lengths) == 1
    assert rank_results[0]["all_counts"] == [lengths.pop()] * WORLD_SIZE
    for result in rank_results:
        assert all(len(batches) == result["shard"]["len"] for batches in result["shard"]["epochs"])
        assert all(len(batches) == result["interleaved"]["len"] for batches in result["interleaved"]["epochs"])


@pytest.mark.parametrize("epoch", range(worker.EPOCHS), ids=lambda e: f"epoch{e}")
def test_global_batches_are_duplicate_free_across_ranks(
    rank_results: list[dict], texts: list[set[str]], epoch: int
) -> None:
    per_rank = [result["shard"]["epochs"][epoch] for result in rank_results]
    left_out = set(rank_results[0]["shard"]["left_out"][epoch])
    assert all(set(result["shard"]["left_out"][epoch]) == left_out for result in rank_results)
    rows: list[int] = []
    for step, batches in enumerate(zip(*per_rank, strict=True)):
        assert [len(batch) for batch in batches] == [worker.BATCH_SIZE] * WORLD_SIZE, f"step {step}"
        global_batch = [row for batch in batches for row in batch]
        assert duplicates_in(global_batch, texts) == [], f"step {step}"
        rows += global_batch
    assert len(rows) == len(set(rows)), "a row was yielded twice in one epoch"
    # Every row is yielded or reported left out; only full global batches: with these few repeats, what is left
    # out does not fill one.
    assert sorted(rows + sorted(left_out)) == list(range(worker.NUM_ROWS))
    assert len(left_out) < worker.BATCH_SIZE * WORLD_SIZE


def test_the_rows_left_out_change_between_epochs(rank_results: list[dict]) -> None:
    # 410 rows in global batches of 16: 10 rows are left out per epoch, never the same row two epochs running.
    left_out = rank_results[0]["shard"]["left_out"]
    assert len(left_out[0]) == len(left_out[1]) == 10
    assert not set(left_out[0]) & set(left_out[1])


@pytest.mark.parametrize("epoch", range(worker.EPOCHS), ids=lambda e: f"epoch{e}")
def test_ranks_agree_with_a_single_process_layout(rank_results: list[dict], epoch: int) -> None:
    """Both ranks see the same global sequence, and it is what one process with ``num_replicas=2`` builds."""
    data = duplicated_columns(worker.NUM_ROWS, worker.NUM_COLUMNS, worker.POOL, seed=worker.DATA_SEED)
    local = NoDuplicatesSampler(data, worker.BATCH_SIZE, False, seed=worker.SAMPLER_SEED, num_replicas=WORLD_SIZE)
    local.set_epoch(epoch)
    expected = list(local)
    for result in rank_results:
        assert result["interleaved"]["epochs"][epoch] == expected
    shards = [result["shard"]["epochs"][epoch] for result in rank_results]
    assert [batch for step in zip(*shards, strict=True) for batch in step] == expected
