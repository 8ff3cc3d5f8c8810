"""Rows that do not fit in the regular batches: extra batches by default, or left out in rotation, with exact length.

The motivating case (issue 15, item 9): 1,000 rows where one text fills 100 of them, batch 32. sentence-transformers'
NoDuplicatesBatchSampler yields all 1,000 rows; the sampler used to yield 930 and skip the same 70 every epoch.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.sampler._helpers import duplicated_columns, duplicates_in, row_texts

NUM_ROWS, CROWDED, BATCH = 1000, 100, 32


def crowded_pairs() -> dict[str, list[str]]:
    """1,000 (anchor, positive) rows; the anchor "same" fills 100 of them, at random places."""
    anchors = np.array([f"anchor {i}" for i in range(NUM_ROWS)], dtype=object)
    anchors[np.random.default_rng(0).choice(NUM_ROWS, CROWDED, replace=False)] = "same"
    return {"anchor": anchors.tolist(), "positive": [f"positive {i}" for i in range(NUM_ROWS)]}


def epochs(sampler: NoDuplicatesSampler, count: int) -> list[list[list[int]]]:
    out = []
    for epoch in range(count):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def flat(batches: list[list[int]]) -> list[int]:
    return [row for batch in batches for row in batch]


def longest_absence(yielded: list[set[int]], num_rows: int) -> int:
    """The most consecutive epochs (of those given) any row is missing from."""
    longest = [0] * num_rows
    run = [0] * num_rows
    for rows in yielded:
        for row in range(num_rows):
            run[row] = 0 if row in rows else run[row] + 1
            longest[row] = max(longest[row], run[row])
    return max(longest)


# --- Default: every row, every epoch ----------------------------------------------------------------------------


def test_every_row_once_per_epoch_as_sentence_transformers_yields_them() -> None:
    data = crowded_pairs()
    texts = row_texts(data, ["anchor", "positive"])
    theirs = NoDuplicatesBatchSampler(Dataset.from_dict(data), BATCH, False, generator=torch.Generator(), seed=0)
    their_batches = list(theirs)
    assert sorted(flat(their_batches)) == list(range(NUM_ROWS))
    # Its len() is an estimate (32) that its pass exceeds: the learning-rate schedule counts 32 steps of 100.
    assert (len(theirs), len(their_batches)) == (32, 100)
    sampler = NoDuplicatesSampler(data, BATCH, False)
    for epoch, batches in enumerate(epochs(sampler, 3)):
        assert sorted(flat(batches)) == list(range(NUM_ROWS)), f"epoch {epoch}"
        assert len(batches) == len(sampler), f"epoch {epoch}"
        assert [len(batch) for batch in batches[:29]] == [BATCH] * 29, f"epoch {epoch}"
        assert all(duplicates_in(batch, texts) == [] for batch in batches), f"epoch {epoch}"
    # 100 rows of "same" need 100 batches: 30 regular ones (29 full + 2 rows) and 70 extra ones of one row.
    assert (len(sampler), sampler.num_extra_batches, sampler.num_left_out) == (100, 70, 0)


def test_the_rows_in_extra_batches_change_between_epochs() -> None:
    data = crowded_pairs()
    sampler = NoDuplicatesSampler(data, BATCH, False)
    extra = [set(flat(batches[-sampler.num_extra_batches :])) for batches in epochs(sampler, 2)]
    assert len(extra[0]) == len(extra[1]) == 70
    # Least recently placed first: the 30 rows of "same" in the regular batches of epoch 0 are in extras next.
    assert len(extra[1] - extra[0]) == 30


def test_trainer_evaluates_every_row(tiny_model, training_args) -> None:
    """An eval set run through the trainer's batch sampler is scored on all its rows."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    dataset = Dataset.from_dict(crowded_pairs())
    args = training_args(per_device_eval_batch_size=BATCH, batch_sampler=NoDuplicatesSampler)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, eval_dataset=dataset, loss=MultipleNegativesRankingLoss(tiny_model)
    )
    loader = trainer.get_eval_dataloader()
    assert sorted(flat(list(loader.batch_sampler))) == list(range(NUM_ROWS))


# --- overflow="skip": left out in rotation ----------------------------------------------------------------------


def test_skip_rotates_the_rows_left_out_within_the_stated_bound() -> None:
    data = crowded_pairs()
    sampler = NoDuplicatesSampler(data, BATCH, False, overflow="skip")
    # 30 batches (29 full and one of 2) hold 30 rows of "same": 70 are left out per epoch. Least recently placed
    # first, a row of "same" waits at most 3 epochs: (100 - 1) // 30.
    assert (len(sampler), sampler.rows_per_epoch, sampler.num_left_out) == (30, 930, 70)
    assert sampler.max_epochs_left_out == 3
    yielded = [set(flat(batches)) for batches in epochs(sampler, 8)]
    assert all(len(rows) == 930 for rows in yielded)
    assert longest_absence(yielded, NUM_ROWS) == 3
    assert set().union(*yielded[:4]) == set(range(NUM_ROWS)), "every row is yielded within 4 epochs"


def test_the_count_left_out_is_reported_every_epoch(caplog: pytest.LogCaptureFixture) -> None:
    data = crowded_pairs()
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.sampler"):
        sampler = NoDuplicatesSampler(data, BATCH, False, overflow="skip")
        assert "leaves out 70 of 1000 rows every epoch" in caplog.text
        assert "no row is left out more than 3 epochs in a row" in caplog.text
        left_out = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            left_out.append(sampler.left_out_indices.tolist())
            assert sorted(left_out[-1] + flat(batches)) == list(range(NUM_ROWS))
    assert "epoch 0 leaves out 70 of 1000 rows" in caplog.text
    assert "epoch 1 leaves out 70 of 1000 rows" in caplog.text
    assert all(data["anchor"][row] == "same" for rows in left_out for row in rows)
    # The 30 rows of "same" that epoch 1 yields are among the 70 that epoch 0 left out.
    same = {row for row, text in enumerate(data["anchor"]) if text == "same"}
    assert same - set(left_out[1]) <= set(left_out[0])


# --- drop_last and distributed: only full batches, exact length, rotation ---------------------------------------


@pytest.mark.parametrize("overflow", ["extra", "skip"])
def test_drop_last_yields_full_batches_and_rotates_the_remainder(overflow: str) -> None:
    # No duplicates: 100 rows, batch 32, 3 full batches, 4 rows left out, never the same row two epochs running.
    data = {"anchor": [f"a{i}" for i in range(100)], "positive": [f"p{i}" for i in range(100)]}
    sampler = NoDuplicatesSampler(data, BATCH, True, overflow=overflow)
    assert (len(sampler), sampler.num_left_out, sampler.max_epochs_left_out) == (3, 4, 1)
    yielded = []
    for batches in epochs(sampler, 10):
        assert [len(batch) for batch in batches] == [BATCH] * 3
        yielded.append(set(flat(batches)))
    assert longest_absence(yielded, 100) == 1


def test_drop_last_with_crowded_text_is_exact_and_bounded() -> None:
    data = crowded_pairs()
    sampler = NoDuplicatesSampler(data, BATCH, True)
    # 29 full batches hold 29 rows of "same": 71 of them, and one more row, are left out per epoch.
    assert (len(sampler), sampler.num_left_out) == (29, 72)
    bound = sampler.max_epochs_left_out
    assert bound == 99 // 29 + 999 // 928
    texts = row_texts(data, ["anchor", "positive"])
    yielded = []
    for batches in epochs(sampler, 2 * (bound + 1)):
        assert len(batches) == len(sampler)
        assert all(len(batch) == BATCH and duplicates_in(batch, texts) == [] for batch in batches)
        yielded.append(set(flat(batches)))
    assert longest_absence(yielded, NUM_ROWS) <= bound


@pytest.mark.parametrize("shard", [False, True], ids=["interleaved", "sharded"])
def test_distributed_ranks_yield_the_same_exact_count_and_rotate(shard: bool) -> None:
    data = duplicated_columns(300, 2, 90, seed=3)
    texts = row_texts(data, ["anchor", "positive"])
    samplers = [NoDuplicatesSampler(data, 8, False, num_replicas=2, rank=r, shard=shard) for r in range(2)]
    assert samplers[0].num_left_out == samplers[1].num_left_out > 0
    bound = samplers[0].max_epochs_left_out
    yielded = []
    for epoch in range(bound + 3):
        per_rank = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(per_rank[-1]) == len(sampler), f"epoch {epoch}"
        assert per_rank[0] == per_rank[1] or shard
        steps = zip(*per_rank, strict=True) if shard else zip(per_rank[0][::2], per_rank[0][1::2], strict=True)
        rows: set[int] = set()
        for step in steps:
            global_batch = step[0] + step[1]
            assert [len(batch) for batch in step] == [8, 8]
            assert duplicates_in(global_batch, texts) == [], f"epoch {epoch}"
            rows |= set(global_batch)
        assert len(rows) == samplers[0].rows_per_epoch == 300 - samplers[0].num_left_out
        yielded.append(rows)
    assert longest_absence(yielded, 300) <= bound
