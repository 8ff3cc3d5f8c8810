"""Losses: :class:`MNRPlus` (and its gradient-cached sibling ``CachedMNRPlus``).

Loaded on first access (PEP 562), so that importing a module of this package that needs neither (the kernels'
configuration, the compile workers of :mod:`.kernel_build`) does not import sentence-transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_mnr_plus.common.lazy import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from st_mnr_plus.losses.cached import CachedMNRPlus
    from st_mnr_plus.losses.mnr_plus import MNRPlus

_LAZY = {"MNRPlus": "st_mnr_plus.losses.mnr_plus", "CachedMNRPlus": "st_mnr_plus.losses.cached"}

__all__ = ["CachedMNRPlus", "MNRPlus"]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
