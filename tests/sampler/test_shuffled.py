"""ShuffledBatchSampler: sentence-transformers' default (BATCH_SAMPLER) batches, given to the trainer as a class."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler
from torch.utils.data import RandomSampler

from st_mnr_plus.sampler import ShuffledBatchSampler


def _rows(n: int) -> Dataset:
    return Dataset.from_dict({"anchor": [f"a{i}" for i in range(n)], "positive": [f"p{i}" for i in range(n)]})


@pytest.mark.parametrize(("rows", "drop_last"), [(10, False), (10, True), (12, False), (1, False)])
def test_the_first_epoch_is_sentence_transformers_default_batches(rows, drop_last):
    """Epoch 0 equals what the trainer builds for BatchSamplers.BATCH_SAMPLER with a generator seeded by seed."""
    dataset = _rows(rows)
    ours = ShuffledBatchSampler(dataset, batch_size=4, drop_last=drop_last, seed=7)
    generator = torch.Generator().manual_seed(7)
    theirs = DefaultBatchSampler(RandomSampler(dataset, generator=generator), 4, drop_last, seed=7)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs) == len(list(ours))


def test_every_row_once_per_epoch_and_each_epoch_seeded_with_seed_plus_epoch():
    dataset = _rows(11)
    sampler = ShuffledBatchSampler(dataset, batch_size=4, drop_last=False, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(11))
        assert [len(b) for b in batches] == [4, 4, 3]
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    again = ShuffledBatchSampler(dataset, batch_size=4, drop_last=False, seed=3)
    again.set_epoch(1)
    assert list(again) == epochs[1]  # a resumed run sees the same batches
    assert list(again) == epochs[1]  # and iterating twice does not advance it


def test_the_class_takes_the_dataset_as_the_trainer_passes_it(training_args, tiny_model):
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    dataset = _rows(24)
    args = training_args(batch_sampler=ShuffledBatchSampler, max_steps=2)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(tiny_model)
    )
    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    assert batch["anchor_input_ids"].shape[0] == 8
    assert trainer.train().global_step == 2


def test_seed_none_takes_the_generators_initial_seed():
    dataset = _rows(10)
    generator = torch.Generator().manual_seed(5)
    from_generator = ShuffledBatchSampler(dataset, batch_size=4, drop_last=False, generator=generator, seed=None)
    assert list(from_generator) == list(ShuffledBatchSampler(dataset, batch_size=4, drop_last=False, seed=5))
    assert list(ShuffledBatchSampler(dataset, 4, False, seed=None)) == list(ShuffledBatchSampler(dataset, 4, False))
