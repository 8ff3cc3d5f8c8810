"""Duplicate-free batches for in-batch-negative losses, in O(N), with an exact length and global batches under DDP."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from st_mnr_plus.sampler.index import DuplicateIndex, as_arrow_table, encode_duplicates
from st_mnr_plus.sampler.layout import EpochLayouts

logger = logging.getLogger(__name__)

__all__ = ["NoDuplicatesSampler"]

# Columns sentence-transformers never treats as inputs (its ``_EXCLUDE_DATASET_COLUMNS``).
_EXCLUDED_COLUMNS = ("dataset_name",)
_OVERFLOW_MODES = ("extra", "skip")


class NoDuplicatesSampler(DefaultBatchSampler):
    """Batches in which no text occurs in two different rows, built with array operations in O(N).

    Multiple Negatives Ranking treats every other text of a batch as a negative, so a text that repeats inside a
    batch is a false negative. Like sentence-transformers' ``NoDuplicatesBatchSampler`` (``NO_DUPLICATES``), this
    sampler keeps any two rows of a batch from sharing a value, across all input columns (label columns and
    ``dataset_name`` excluded; a value repeated inside one row is allowed, as there), and yields every row once
    per epoch. Unlike it:

    * **Speed**: every text is hashed once to 64 bits, vectorised over the Arrow buffers, the texts whose hash
      repeats are checked against each other (so a hash collision cannot merge two different texts), and only
      texts held by two or more rows are kept, as ``int32`` ids. Each epoch is a random permutation cut into
      batches; the few rows that collide are found with one sort and put back by a short repair loop whose work
      is proportional to the collisions, not to the dataset. Epoch 0's layout is drawn at construction (which
      needs a valid layout anyway) and reused.
    * **Exact length**: the sizes of the batches are decided once, at construction, so ``len(sampler)`` is the
      number of batches every epoch yields. Nothing is ever repeated to pad an epoch.
    * **Global batches under DDP**: with ``num_replicas`` processes, batches of ``batch_size * num_replicas`` rows
      are built duplicate-free as a whole, then split by rank, so negatives gathered across devices are
      duplicate-free too.

    **Rows that do not fit.** A text held by more rows than there are batches cannot be in all of them without a
    duplicate. With ``overflow="extra"`` (the default) the rows that do not fit in the regular batches go to extra,
    smaller batches at the end of the epoch, as in sentence-transformers, so every row is yielded exactly once per
    epoch. With ``overflow="skip"`` they are left out of the epoch instead, and every batch but the last is full.
    Either way, which rows of such a text go to the regular batches rotates from epoch to epoch, least recently
    placed first.

    **Rows left out.** Rows are left out of an epoch with ``overflow="skip"``, and whenever only full batches are
    yielded (``drop_last=True``, or ``num_replicas > 1``: a short batch could not give every rank the same number
    of rows): then the rows that do not fill a full batch are left out too. The same number of rows is left out
    every epoch (:attr:`num_left_out`, logged each epoch; :attr:`left_out_indices` lists them), but not the same
    rows: no row is left out more than :attr:`max_epochs_left_out` epochs in a row, so every row is yielded at
    least once in any ``max_epochs_left_out + 1`` consecutive epochs. The bound is computed from the data: with
    only ``drop_last`` at work it is 1 (a row never sits out two epochs running); a text held by ``c`` rows with
    ``b`` batches adds ``(c - 1) // b`` for its rows. An epoch whose own layout cannot be repaired (rare, only
    with very dense duplication; logged, and :attr:`fell_back` is then true) reuses the construction's layout
    and its rows; such an epoch does not count towards the bound, it only delays the rotation by one epoch.

    **Distributed.** ``num_replicas`` and ``rank`` default to ``torch.distributed``'s world size and rank when it
    is initialised. Global batch ``g`` holds ``batch_size * num_replicas`` rows; rank ``r`` gets rows
    ``[r * batch_size, (r + 1) * batch_size)`` of it. With ``shard=False`` (the default, what
    ``SentenceTransformerTrainer`` needs) every process yields the whole sequence, each global batch as
    ``num_replicas`` consecutive per-device batches: accelerate's ``BatchSamplerShard``, which the trainer wraps
    around every batch sampler, then hands batch ``i`` to process ``i % num_replicas``, so each step's batches
    are one global batch. With ``shard=True`` (a plain ``DataLoader`` without accelerate) each process yields only
    its own slice. Only full global batches are yielded, so every rank yields the same count.

    **Determinism.** Each epoch's layout is drawn from NumPy's PCG64 seeded with ``seed + epoch`` (see
    :meth:`set_epoch`), and the rows it keeps when not all fit follow from ``seed`` and the epochs before it
    (replayed when an epoch is asked for out of order, as on resume), so the same seed and epoch give the same
    batches on every machine and every rank. The torch ``generator`` is accepted for compatibility with
    sentence-transformers and not used.

    **Values.** Strings are compared exactly (or normalised, see ``normalize``); a null is the text ``"None"``,
    as sentence-transformers compares ``str(None)``. Other values (numbers, lists, images, audio) are compared
    by :func:`st_mnr_plus.sampler.index.value_key`: ``str()`` for plain values, a digest of the content otherwise
    (an image or audio column by its stored bytes).

    Args:
        dataset: The training rows: a ``datasets.Dataset``, a ``pyarrow.Table``, or a dict of column name to list.
        batch_size: Rows per batch on each device.
        drop_last: Yield only full batches (see **Rows left out**).
        valid_label_columns: Label column names (as sentence-transformers passes them); those present are not
            checked for duplicates.
        generator: Accepted for compatibility with ``DefaultBatchSampler``; unused.
        seed: Seed of the shuffles; epoch ``e`` uses ``seed + e``. ``None`` takes ``generator.initial_seed()``
            (or 0).
        precompute_hashes: Accepted for compatibility with ``NoDuplicatesBatchSampler``, and ignored: this sampler
            always encodes every value once, at construction.
        precompute_num_proc: Accepted for compatibility, and ignored (the encoding runs in this process).
        precompute_batch_size: Accepted for compatibility, and ignored.
        overflow: ``"extra"`` to put the rows that do not fit in the regular batches into extra batches, or
            ``"skip"`` to leave them out of the epoch (see **Rows that do not fit**).
        columns: Check only these columns for duplicates (default: every column but labels and ``dataset_name``).
        normalize: Compare texts after Unicode NFKC normalisation, collapsing whitespace runs to one space,
            trimming and lower-casing (default ``False``, comparing exact strings as sentence-transformers does).
        num_replicas: Processes that share one global batch (default: the ``torch.distributed`` world size, or 1).
        rank: This process's rank (default: the ``torch.distributed`` rank, or 0).
        shard: Yield only this rank's slice of each global batch (see **Distributed**).

    Raises:
        ValueError: On a bad argument, or a column that does not exist.

    Example:
        ::

            from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
            from st_mnr_plus import MNRPlus, NoDuplicatesSampler

            args = SentenceTransformerTrainingArguments(output_dir="out", batch_sampler=NoDuplicatesSampler)
            trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs, loss=MNRPlus(model))
            trainer.train()
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = 0,
        precompute_hashes: bool = False,
        precompute_num_proc: int | None = None,
        precompute_batch_size: int = 1000,
        *,
        overflow: Literal["extra", "skip"] = "extra",
        columns: Sequence[str] | None = None,
        normalize: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        shard: bool = False,
    ) -> None:
        # torch's BatchSampler's messages first (NoDuplicatesBatchSampler raises them), which code may match on.
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size} "
                f"(type {type(batch_size).__name__}: the rows of each batch on each device)."
            )
        if not isinstance(drop_last, bool):
            raise ValueError(
                f"drop_last should be a boolean value, but got drop_last={drop_last} "
                f"(type {type(drop_last).__name__}: True or False)."
            )
        if overflow not in _OVERFLOW_MODES:
            raise ValueError(f"overflow must be one of {_OVERFLOW_MODES}, got {overflow!r}.")
        if seed is None:
            seed = generator.initial_seed() if generator is not None else 0
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        super().__init__(
            dataset,
            batch_size=int(batch_size),
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=int(seed),
        )
        # Kept as sentence-transformers keeps them, for code that reads them back; they change nothing here.
        self.precompute_hashes = precompute_hashes
        self.precompute_num_proc = precompute_num_proc
        self.precompute_batch_size = precompute_batch_size
        self.overflow = overflow
        self.normalize = bool(normalize)
        self.shard = bool(shard)
        self.num_replicas, self.rank = _resolve_replicas(num_replicas, rank)
        self.columns = _checked_columns(dataset, valid_label_columns, columns)
        self.global_batch_size = self.batch_size * self.num_replicas

        self._index: DuplicateIndex = encode_duplicates(as_arrow_table(dataset, self.columns), self.columns, normalize)
        partial = not drop_last and self.num_replicas == 1
        self._layouts = EpochLayouts(
            self._index, self.global_batch_size, partial=partial, extra=overflow == "extra" and partial, seed=self.seed
        )
        self._epoch_slots = self._layouts.first()
        self.rows_per_epoch: int = self._layouts.num_rows
        """Rows yielded per epoch, over all ranks."""
        self.num_left_out: int = self._index.num_rows - self.rows_per_epoch
        """Rows each epoch leaves out (the same number every epoch, not the same rows; see **Rows left out**)."""
        self.num_extra_batches: int = len(self._layouts.extra_sizes)
        """Extra, smaller batches at the end of each epoch for the rows that do not fit in the regular ones."""
        self.max_epochs_left_out: int | None = self._layouts.rotation.max_epochs_left_out if self.num_left_out else 0
        """The most epochs in a row any row can be left out (``None``: no row is ever yielded)."""
        self.fell_back: bool = False
        """Whether the last epoch iterated reused the construction's layout (its own could not be repaired)."""
        self._log_plan()

    @property
    def left_out_indices(self) -> np.ndarray:
        """Rows the last epoch iterated leaves out (epoch 0's before the first iteration), sorted."""
        if not self.num_left_out:
            return np.empty(0, dtype=np.int64)
        mask = np.ones(self._index.num_rows, dtype=bool)
        mask[self._epoch_slots] = False
        return np.flatnonzero(mask)

    def __len__(self) -> int:
        """The exact number of batches :meth:`__iter__` yields in every epoch (on this process)."""
        num_batches = len(self._layouts.sizes)
        if self.num_replicas > 1 and not self.shard:
            return num_batches * self.num_replicas
        return num_batches

    def __iter__(self) -> Iterator[list[int]]:
        slots, own = self._layouts.draw(self.epoch)
        self._epoch_slots = slots
        self.fell_back = not own
        if not own:
            logger.log(
                logging.WARNING if self.num_left_out else logging.DEBUG,
                "NoDuplicatesSampler epoch %d: repair budget exhausted, reshuffling the construction layout%s.",
                self.epoch,
                " and leaving out its rows" if self.num_left_out else "",
            )
        if self.num_left_out:
            logger.info(
                "NoDuplicatesSampler epoch %d leaves out %d of %d rows (`left_out_indices`).",
                self.epoch,
                self.num_left_out,
                self._index.num_rows,
            )
        starts, per_rank = self._layouts.starts.tolist(), self.batch_size
        ranks = [self.rank] if self.shard else range(self.num_replicas)
        for start, end in itertools.pairwise(starts):
            batch = slots[start:end]
            if self.num_replicas == 1:
                yield batch.tolist()
                continue
            for r in ranks:
                yield batch[r * per_rank : (r + 1) * per_rank].tolist()

    def _log_plan(self) -> None:
        """Say once, at construction, what the epochs will hold."""
        num_rows, regular = self._index.num_rows, len(self._layouts.regular_sizes)
        if self.num_extra_batches:
            logger.info(
                "NoDuplicatesSampler: %d of %d rows cannot share the %d regular batches of %d rows without "
                "repeating a text; they go to %d extra, smaller batches at the end of each epoch.",
                num_rows - int(self._layouts.regular_sizes.sum()),
                num_rows,
                regular,
                self.global_batch_size,
                self.num_extra_batches,
            )
        if self.num_left_out:
            logger.warning(
                "NoDuplicatesSampler leaves out %d of %d rows every epoch (%s), different rows each epoch: %s. The "
                "rows of each epoch are in `left_out_indices`.",
                self.num_left_out,
                num_rows,
                self._left_out_reason(),
                f"no row is left out more than {self.max_epochs_left_out} epochs in a row"
                if self.max_epochs_left_out is not None
                else "no batch can be formed",
            )
        logger.debug(
            "NoDuplicatesSampler: %d rows, %d texts held by 2+ rows, %d batches per epoch.",
            num_rows,
            self._index.num_texts,
            len(self),
        )

    def _left_out_reason(self) -> str:
        if self.num_replicas > 1:
            return "only full global batches are yielded under num_replicas > 1"
        if self.drop_last:
            return "only full batches are yielded under drop_last=True"
        return 'overflow="skip" leaves out the rows that do not fit in the regular batches'


def _resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``, defaulting to the initialised ``torch.distributed`` group, else ``(1, 0)``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}.")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an integer in [0, num_replicas={num_replicas}), got {rank!r}.")
    return int(num_replicas), int(rank)


def _column_names(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names is None and isinstance(dataset, dict):
        names = list(dataset)
    if names is None:
        raise ValueError(
            f"dataset must be a datasets.Dataset, a pyarrow.Table or a dict of columns, got {type(dataset).__name__}."
        )
    return list(names)


def _checked_columns(dataset: Any, valid_label_columns: list[str] | None, columns: Sequence[str] | None) -> list[str]:
    """The columns whose texts must not repeat within a batch."""
    names = _column_names(dataset)
    labels = set(valid_label_columns or []) & set(names)
    if columns is None:
        return [name for name in names if name not in labels and name not in _EXCLUDED_COLUMNS]
    if isinstance(columns, str):
        raise ValueError(f"columns must be a list of column names, got the string {columns!r}.")
    columns = list(columns)
    for name in columns:
        if name not in names:
            raise ValueError(f"columns names {name!r}, which is not a column of the dataset (columns: {names}).")
        if name in labels:
            raise ValueError(f"columns names {name!r}, which is a label column (valid_label_columns).")
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns names a column twice: {columns}.")
    return columns
