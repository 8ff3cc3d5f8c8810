"""Losses: :class:`MNRPlus` (and its gradient-cached sibling ``CachedMNRPlus``)."""

from __future__ import annotations

from st_mnr_plus.losses.cached import CachedMNRPlus
from st_mnr_plus.losses.mnr_plus import MNRPlus

__all__ = ["CachedMNRPlus", "MNRPlus"]
