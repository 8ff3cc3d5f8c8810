"""ShuffledBatchSampler: sentence-transformers' default batches as a class the trainer can be given by name.

``SentenceTransformerTrainingArguments(batch_sampler=BatchSamplers.BATCH_SAMPLER)`` (the default) makes the
trainer build ``DefaultBatchSampler(RandomSampler(dataset, generator=generator), ...)``: a random permutation of
the rows cut into batches. ``DefaultBatchSampler`` itself takes an index sampler as its first argument, so the
class handed over as ``batch_sampler=DefaultBatchSampler`` (which the trainer calls with the dataset) would
iterate the rows themselves. This class takes the dataset, as the trainer passes it, and shuffles its indices.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from torch.utils.data import BatchSampler, RandomSampler

__all__ = ["ShuffledBatchSampler"]


class ShuffledBatchSampler(DefaultBatchSampler):
    """A random permutation of the rows, cut into batches: sentence-transformers' ``BATCH_SAMPLER`` batches.

    It takes ``DefaultBatchSampler``'s arguments, which the trainer passes (and its checks, with its messages), but
    iterates a permutation of the dataset's row indices instead of the rows. Epoch ``e`` is drawn with a generator
    seeded with ``seed + e`` (the trainer calls :meth:`set_epoch`), like
    :class:`~st_mnr_plus.sampler.NoDuplicatesSampler`, so a resumed run sees the batches of an uninterrupted one.
    Duplicates are not avoided: with an in-batch-negatives loss prefer ``NoDuplicatesSampler``.

    Args:
        dataset: The rows (anything with ``len()``; the trainer passes its ``datasets.Dataset``).
        batch_size: Rows per batch.
        drop_last: Leave out the last batch when it is not full.
        valid_label_columns: Accepted for the trainer's signature; unused.
        generator: Accepted for the trainer's signature; with ``seed=None`` its initial seed is used.
        seed: Base seed of the permutations.
    """

    def __iter__(self) -> Iterator[list[int]]:
        seed = self.seed
        if seed is None:
            seed = self.generator.initial_seed() if self.generator is not None else 0
        # BatchSampler keeps the dataset as its sampler: len() of it is the number of rows.
        permutation = RandomSampler(
            range(len(self.sampler)), generator=torch.Generator().manual_seed(seed + self.epoch)
        )
        return iter(BatchSampler(permutation, self.batch_size, self.drop_last))
