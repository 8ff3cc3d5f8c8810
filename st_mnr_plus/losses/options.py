"""The options of the MNR losses: one check per option, one message per mistake.

:class:`~st_mnr_plus.losses.MNRPlus`, :class:`~st_mnr_plus.losses.CachedMNRPlus` and
:class:`~st_mnr_plus.losses.functional.MNRSpec` all validate through these functions, at construction and (through
:class:`Option`) at every later assignment, so ``loss.scale = -1`` fails the way ``MNRPlus(model, scale=-1)`` does.
Each check returns the value in its canonical form (a tuple for ``directions``, a float for numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
DIRECTIONS: tuple[str, ...] = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES: tuple[str, ...] = ("joint", "per_direction")
HARDNESS_MODES: tuple[str | None, ...] = (None, "in_batch_negatives", "hard_negatives", "all_negatives")
HARD_NEGATIVES: tuple[str, ...] = ("shared", "own")

T = TypeVar("T")


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` only: a string such as ``"no"`` is an error, not a truthy value."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A positive finite number (``scale``, ``max_scale``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        # The first words are sentence-transformers' own message for the scale, which code may match.
        prefix = "Scale must be a positive value: " if name == "scale" else ""
        raise ValueError(f"{prefix}{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_non_negative(value: Any, name: str) -> float:
    """A non-negative finite number (``hardness_strength``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be non-negative (a finite number >= 0), got {value!r}")
    return float(value)


def check_optional_finite(value: Any, name: str) -> float | None:
    """``None`` or a finite number (``false_negative_margin``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    return float(value)


def check_ratio(value: Any, name: str) -> float | None:
    """``None`` or a number in ``(0, 1]`` (``false_negative_ratio``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] or None, got {value!r}")
    return float(value)


def check_optional_positive_int(value: Any, name: str) -> int | None:
    """``None`` or a positive integer (``tile_size``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """A positive integer (``mini_batch_size``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_callable(value: Any, name: str) -> Callable[..., Any]:
    if not callable(value):
        raise ValueError(f"{name} must be callable, got {value!r}")
    return value


def check_choice(choices: Sequence[Any]) -> Callable[[Any, str], Any]:
    """A check that ``value`` is one of ``choices``."""

    def check(value: Any, name: str) -> Any:
        if value not in choices:
            raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
        return value

    return check


def check_directions(value: Any, name: str = "directions") -> tuple[str, ...]:
    """A non-empty tuple of distinct directions that contains ``"query_to_doc"`` (it holds the positive pair)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a tuple of directions from {DIRECTIONS}, got {value!r}")
    directions = tuple(value)
    if not directions:
        raise ValueError(f"{name} must name at least one direction")
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise ValueError(f"{name} has invalid entries {unknown}; valid: {DIRECTIONS}")
    if "query_to_doc" not in directions:
        raise ValueError(f"{name} must include 'query_to_doc' (it contains the positive pair), got {directions!r}")
    if len(set(directions)) != len(directions):
        raise ValueError(f"{name} has repeated entries: {directions!r}")
    return directions


def check_combination(directions: tuple[str, ...], partition_mode: str) -> None:
    """Options that are valid alone but not together."""
    if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        raise ValueError(
            "partition_mode='per_direction' requires every direction's candidate pool to include the positive pair; "
            "'query_to_query' and 'doc_to_doc' do not. Use partition_mode='joint'."
        )


class Option(Generic[T]):
    """A module attribute that is validated on every assignment by the same check as its constructor argument.

    Stored in the instance's ``__dict__`` under ``_<name>``; ``nn.Module`` leaves data descriptors alone.
    """

    def __init__(self, check: Callable[[Any, str], T]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = f"_{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        return instance.__dict__[self.slot]

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.slot] = self.check(value, self.name)
