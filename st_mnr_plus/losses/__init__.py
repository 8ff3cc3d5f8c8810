"""Losses: :class:`MNRPlus` (and its gradient-cached sibling ``CachedMNRPlus``).

Loaded on first access (PEP 562), so that importing a module of this package that needs neither (the kernels'
configuration, the compile workers of :mod:`.kernel_build`) does not import sentence-transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from st_mnr_plus.losses.cached import CachedMNRPlus
    from st_mnr_plus.losses.mnr_plus import MNRPlus

_LAZY = {"MNRPlus": "st_mnr_plus.losses.mnr_plus", "CachedMNRPlus": "st_mnr_plus.losses.cached"}

__all__ = ["CachedMNRPlus", "MNRPlus"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'st_mnr_plus.losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
