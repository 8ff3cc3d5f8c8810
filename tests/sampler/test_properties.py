"""Property tests of NoDuplicatesSampler over random datasets with heavy duplication."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.sampler._helpers import COLUMN_NAMES, duplicates_in, row_texts

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw: st.DrawFn) -> tuple[dict[str, list[str]], int]:
    """A dataset of 1..48 rows and 1..4 columns whose texts come from a small pool, and a batch size 1..N."""
    num_rows = draw(st.integers(1, 48))
    num_columns = draw(st.integers(1, 4))
    # A pool smaller than the number of texts forces duplicates, often many rows per text.
    pool = draw(st.integers(1, max(1, num_rows * num_columns)))
    texts = st.lists(st.integers(0, pool - 1), min_size=num_rows, max_size=num_rows)
    data = {name: [f"t{i}" for i in draw(texts)] for name in COLUMN_NAMES[:num_columns]}
    batch_size = draw(st.integers(1, num_rows))
    return data, batch_size


def epoch(sampler: NoDuplicatesSampler, number: int) -> list[list[int]]:
    sampler.set_epoch(number)
    return list(sampler)


@SETTINGS
@given(case=datasets(), seed=st.integers(0, 2**31))
def test_default_yields_every_row_once_in_duplicate_free_batches(
    case: tuple[dict[str, list[str]], int], seed: int
) -> None:
    data, batch_size = case
    num_rows = len(next(iter(data.values())))
    sampler = NoDuplicatesSampler(pa.table(data), batch_size, False, seed=seed)
    texts = row_texts(data, list(data))
    assert sampler.num_left_out == 0
    sizes = None
    for number in range(3):
        batches = epoch(sampler, number)
        assert len(batches) == len(sampler), f"epoch {number}"
        assert sorted(row for batch in batches for row in batch) == list(range(num_rows)), f"epoch {number}"
        for batch in batches:
            assert duplicates_in(batch, texts) == [], f"epoch {number}, batch {batch}"
        regular = len(batches) - sampler.num_extra_batches
        assert all(len(batch) == batch_size for batch in batches[: regular - 1])
        assert all(0 < len(batch) <= batch_size for batch in batches)
        assert sizes is None or [len(batch) for batch in batches] == sizes, "batch sizes changed between epochs"
        sizes = [len(batch) for batch in batches]


@SETTINGS
@given(case=datasets(), drop_last=st.booleans(), seed=st.integers(0, 2**31))
def test_left_out_rows_rotate_within_the_bound(
    case: tuple[dict[str, list[str]], int], drop_last: bool, seed: int
) -> None:
    """overflow="skip" (or drop_last): a fixed count left out per epoch, no row left out beyond the bound."""
    data, batch_size = case
    num_rows = len(next(iter(data.values())))
    sampler = NoDuplicatesSampler(pa.table(data), batch_size, drop_last, seed=seed, overflow="skip")
    texts = row_texts(data, list(data))
    assert sampler.rows_per_epoch + sampler.num_left_out == num_rows
    bound = sampler.max_epochs_left_out
    waited = [0] * num_rows  # epochs in a row each row has been left out, fallback epochs not counted
    for number in range(min(12, (bound or 0) + 3)):
        batches = epoch(sampler, number)
        rows = [row for batch in batches for row in batch]
        assert len(batches) == len(sampler), f"epoch {number}"
        assert len(rows) == len(set(rows)) == sampler.rows_per_epoch, f"epoch {number}"
        assert sorted(rows + sampler.left_out_indices.tolist()) == list(range(num_rows))
        assert all(len(batch) == batch_size for batch in batches[: -1 if not drop_last else None])
        for batch in batches:
            assert duplicates_in(batch, texts) == [], f"epoch {number}, batch {batch}"
        if bound is None:
            assert rows == []
            continue
        yielded = set(rows)
        for row in range(num_rows):
            waited[row] = 0 if row in yielded else waited[row] + (not sampler.fell_back)
        assert max(waited) <= bound, f"epoch {number}: a row was left out more than {bound} epochs in a row"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=datasets(), drop_last=st.booleans(), overflow=st.sampled_from(["extra", "skip"]), seed=st.integers(0, 99))
def test_same_seed_same_batches_and_epochs_reshuffle(
    case: tuple[dict[str, list[str]], int], drop_last: bool, overflow: str, seed: int
) -> None:
    data, batch_size = case
    first = NoDuplicatesSampler(pa.table(data), batch_size, drop_last, seed=seed, overflow=overflow)
    second = NoDuplicatesSampler(pa.table(data), batch_size, drop_last, seed=seed, overflow=overflow)
    epochs = [epoch(first, number) for number in range(5)]
    assert epochs == [epoch(second, number) for number in range(5)]
    # Asked for out of order (a resumed run), an epoch is the same: the rotation is replayed.
    assert epoch(second, 3) == epochs[3]
    assert (
        epoch(NoDuplicatesSampler(pa.table(data), batch_size, drop_last, seed=seed, overflow=overflow), 4)
        == (epochs[4])
    )
    orders = {tuple(row for batch in batches for row in batch) for batches in epochs}
    # With 4+ rows an epoch, five identical orders in a row would mean the epoch is not reshuffled.
    if first.rows_per_epoch >= 4:
        assert len(orders) > 1


@SETTINGS
@given(num_rows=st.integers(1, 60), batch_size=st.integers(1, 60), drop_last=st.booleans())
def test_distinct_texts_behave_like_a_plain_shuffled_batch_sampler(
    num_rows: int, batch_size: int, drop_last: bool
) -> None:
    data = {"anchor": [f"a{i}" for i in range(num_rows)], "positive": [f"p{i}" for i in range(num_rows)]}
    sampler = NoDuplicatesSampler(pa.table(data), batch_size, drop_last)
    batches = list(sampler)
    assert sampler.num_extra_batches == 0
    assert sampler.num_left_out == (num_rows % batch_size if drop_last else 0)
    assert len(batches) == (num_rows // batch_size if drop_last else -(-num_rows // batch_size))
    assert [len(batch) for batch in batches] == [
        min(batch_size, num_rows - i * batch_size) for i in range(len(batches))
    ]


@SETTINGS
@given(
    case=datasets(),
    num_replicas=st.integers(2, 4),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_rank_slices_form_duplicate_free_global_batches(
    case: tuple[dict[str, list[str]], int], num_replicas: int, drop_last: bool, seed: int
) -> None:
    data, batch_size = case
    texts = row_texts(data, list(data))
    table = pa.table(data)
    per_rank = [
        list(
            NoDuplicatesSampler(table, batch_size, drop_last, seed=seed, num_replicas=num_replicas, rank=r, shard=True)
        )
        for r in range(num_replicas)
    ]
    interleaved = NoDuplicatesSampler(table, batch_size, drop_last, seed=seed, num_replicas=num_replicas)
    assert len({len(batches) for batches in per_rank}) == 1, "ranks yield different numbers of batches"
    assert len(interleaved) == num_replicas * len(per_rank[0])
    assert list(interleaved) == [batch for step in zip(*per_rank, strict=True) for batch in step]
    rows = []
    for step in zip(*per_rank, strict=True):
        assert all(len(batch) == batch_size for batch in step)
        global_batch = [row for batch in step for row in batch]
        assert duplicates_in(global_batch, texts) == []
        rows += global_batch
    assert len(rows) == len(set(rows)) == interleaved.rows_per_epoch
