"""Duplicate-free batches: :class:`NoDuplicatesSampler`, a drop-in for sentence-transformers'
``NoDuplicatesBatchSampler``.

:mod:`~st_mnr_plus.sampler.no_duplicates` holds the public class (the trainer-facing batch sampler);
:mod:`~st_mnr_plus.sampler.index` finds which rows share a value, and :mod:`~st_mnr_plus.sampler.layout` places the
rows into duplicate-free batches epoch by epoch (the last two are array code with no knowledge of the trainer).
:mod:`~st_mnr_plus.sampler.shuffled` holds :class:`ShuffledBatchSampler`, sentence-transformers' default shuffled
batches as a class the trainer can be given (``st-mnr-plus train --sampler default``).
"""

from __future__ import annotations

from st_mnr_plus.sampler.no_duplicates import NoDuplicatesSampler
from st_mnr_plus.sampler.shuffled import ShuffledBatchSampler

__all__ = ["NoDuplicatesSampler", "ShuffledBatchSampler"]
