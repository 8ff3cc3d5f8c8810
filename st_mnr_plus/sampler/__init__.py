"""Duplicate-free batches: :class:`NoDuplicatesSampler`, a drop-in for sentence-transformers'
``NoDuplicatesBatchSampler``.

:mod:`~st_mnr_plus.sampler.no_duplicates` holds the public class (the trainer-facing batch sampler);
:mod:`~st_mnr_plus.sampler.index` finds which rows share a value, and :mod:`~st_mnr_plus.sampler.layout` places the
rows into duplicate-free batches epoch by epoch. The last two are array code with no knowledge of the trainer.
"""

from __future__ import annotations

from st_mnr_plus.sampler.no_duplicates import NoDuplicatesSampler

__all__ = ["NoDuplicatesSampler"]
