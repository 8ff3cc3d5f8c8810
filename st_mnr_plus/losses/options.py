"""The options of the MNR losses, each declared once: :data:`LOSS_OPTIONS`.

One row per option holds its name, default, check, who owns it (:class:`~st_mnr_plus.losses.MNRPlus`, or
:class:`~st_mnr_plus.losses.CachedMNRPlus` alone), whether the model card records it, whether it shapes the
computation (then it is a field of :class:`~st_mnr_plus.losses.functional.MNRSpec`) and which of its values the
GPU path computes. Everything else is built from the table: the checked attributes of both losses
(:func:`declare_options`, so ``loss.scale = -1`` fails the way ``MNRPlus(model, scale=-1)`` does), the assignment
of the constructor's arguments (:func:`assign_options`), the config dict and model card (:func:`card_values`) and
the spec's option values (:func:`spec_values`). The constructors keep their explicit signatures, as a drop-in for
sentence-transformers' losses must; ``tests/losses/test_options.py`` checks that they agree with the table.

Adding an option: one row here, and its math in :mod:`.ops` / :mod:`.functional` (which read it from the spec).

Each check returns the value in its canonical form (a tuple for ``directions``, a float for numbers) and raises
:class:`OptionError`, a :class:`~st_mnr_plus.common.ConfigurationError` (so a ``ValueError``) naming the option.
Where sentence-transformers rejects the value too, the row's ``upstream`` gives its message (MNRL is asked, see
:func:`mnrl_message`), and the error says that first, then ours (:meth:`LossOption.validate`): code written against
MNRL/CMNRL that matches on their messages keeps working with our losses swapped in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim
from sentence_transformers.util import similarity_fct_name as _similarity_fct_name

from st_mnr_plus.common.errors import ConfigurationError

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
DIRECTIONS: tuple[str, ...] = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES: tuple[str, ...] = ("joint", "per_direction")
HARDNESS_MODES: tuple[str | None, ...] = (None, "in_batch_negatives", "hard_negatives", "all_negatives")
HARD_NEGATIVES: tuple[str, ...] = ("shared", "own")
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

Check = Callable[[Any, str], Any]


class OptionError(ConfigurationError):
    """A loss option with a value it cannot take; the message names the option and what it must be."""


# ---- checks ----------------------------------------------------------------------------------------------------


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` only: a string such as ``"no"`` is an error, not a truthy value."""
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_scale(value: Any, name: str = "scale") -> float:
    """A positive finite number."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise OptionError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_positive(value: Any, name: str) -> float:
    """A positive finite number (``max_scale``)."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise OptionError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_optional_positive(value: Any, name: str) -> float | None:
    """``None`` or a positive finite number (``scale_learning_rate``)."""
    return None if value is None else check_positive(value, name)


def check_non_negative(value: Any, name: str) -> float:
    """A non-negative finite number (``hardness_strength``)."""
    if not _is_number(value) or not 0 <= value < math.inf:
        raise OptionError(f"{name} must be non-negative (a finite number >= 0), got {value!r}")
    return float(value)


def check_optional_finite(value: Any, name: str) -> float | None:
    """``None`` or a finite number (``false_negative_margin``)."""
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise OptionError(f"{name} must be a finite number or None, got {value!r}")
    return float(value)


def check_ratio(value: Any, name: str) -> float | None:
    """``None`` or a number in ``(0, 1]`` (``false_negative_ratio``)."""
    if value is None:
        return None
    if not _is_number(value) or not 0 < value <= 1:
        raise OptionError(f"{name} must be a number in (0, 1] or None, got {value!r}")
    return float(value)


def check_optional_positive_int(value: Any, name: str) -> int | None:
    """``None`` or a positive integer (``tile_size``, ``mini_batch_num_tokens``)."""
    return None if value is None else check_positive_int(value, name)


def check_positive_int(value: Any, name: str) -> int:
    """A positive integer (``mini_batch_size``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_callable(value: Any, name: str) -> Callable[..., Any]:
    if not callable(value):
        raise OptionError(f"{name} must be callable, got {value!r}")
    return value


def check_choice(choices: Sequence[Any]) -> Check:
    """A check that ``value`` is one of ``choices``."""

    def check(value: Any, name: str) -> Any:
        if value not in choices:
            raise OptionError(f"{name} must be one of {tuple(choices)}, got {value!r}")
        return value

    return check


def check_directions(value: Any, name: str = "directions") -> tuple[str, ...]:
    """A non-empty tuple of distinct directions that contains ``"query_to_doc"`` (it holds the positive pair)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise OptionError(f"{name} must be a tuple of directions from {DIRECTIONS}, got {value!r}")
    directions = tuple(value)
    if not directions:
        raise OptionError(f"{name} must name at least one direction")
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise OptionError(f"{name} has invalid entries {unknown}; valid: {DIRECTIONS}")
    if "query_to_doc" not in directions:
        raise OptionError(f"{name} must include 'query_to_doc' (it contains the positive pair), got {directions!r}")
    if len(set(directions)) != len(directions):
        raise OptionError(f"{name} has repeated entries: {directions!r}")
    return directions


def check_combination(directions: tuple[str, ...], partition_mode: str) -> None:
    """Options that are valid alone but not together; the message starts with sentence-transformers' own."""
    if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        upstream = _mnrl_message(directions=directions, partition_mode=partition_mode)
        raise OptionError(
            (f"{upstream} " if upstream else "")
            + "partition_mode='per_direction' requires every direction's candidate pool to include the positive "
            f"pair; 'query_to_query' and 'doc_to_doc' do not. Use partition_mode='joint' (got {directions!r})."
        )


# ---- sentence-transformers' messages -----------------------------------------------------------------------------


def _mnrl_message(**arguments: Any) -> str | None:
    """What sentence-transformers' ``MultipleNegativesRankingLoss`` says of ``arguments`` (the others at their
    defaults): the message of its ``ValueError``, or ``None`` where it accepts them.

    Asked, not copied: some of its messages print a set, whose order no copy could reproduce, and the message
    follows the installed version.
    """
    try:
        MultipleNegativesRankingLoss(None, **arguments)
    except ValueError as exc:
        return str(exc)
    except Exception:  # it fails on the value in its own way (a TypeError comparing a string with 0): no message
        return None
    return None


def mnrl_message(name: str, value: Any) -> str | None:
    """An ``upstream`` for the options that ``MultipleNegativesRankingLoss`` checks: its message for the value."""
    return _mnrl_message(**{name: value})


# ---- the table -------------------------------------------------------------------------------------------------


def _always(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class LossOption:
    """One option of the MNR losses.

    Attributes:
        name: The constructor argument, attribute, config-dict and model-card key.
        default: The constructor's default.
        check: ``check(value, name) -> canonical value``, raising :class:`OptionError`.
        owner: ``"loss"``: :class:`MNRPlus` holds it and :class:`CachedMNRPlus` forwards it there;
            ``"cache"``: only :class:`CachedMNRPlus` has it (its mini-batching).
        stored: A plain checked attribute (a descriptor built by :func:`declare_options`); ``False`` for the few
            the loss class implements itself (the scale, ``symmetric``, ``learnable_scale``).
        card: How the config dict and the model card record it: ``True`` as is, ``False`` not at all, or a
            function of the value (the similarity function by name).
        spec: It shapes the computation: :class:`~st_mnr_plus.losses.functional.MNRSpec` carries it.
        kernel: For a ``spec`` option, which of its values the GPU path computes; other values run on
            the PyTorch path (``backend="auto"``) or are refused (``backend="triton"``).
        upstream: Where sentence-transformers' MNRL or CMNRL rejects a value too: its message, or a function of
            the option's name and value giving it (``None`` where it accepts the value, as :func:`mnrl_message`).
            :meth:`validate` puts it first.
    """

    name: str
    default: Any
    check: Check
    owner: Literal["loss", "cache"] = "loss"
    stored: bool = True
    card: bool | Callable[[Any], Any] = True
    spec: bool = False
    kernel: Callable[[Any], bool] = _always
    upstream: str | Callable[[str, Any], str | None] | None = None

    def validate(self, value: Any, name: str | None = None) -> Any:
        """``value`` checked and in canonical form (a :data:`Check`; ``name`` defaults to the option's).

        Raises:
            OptionError: what :attr:`check` raises, after sentence-transformers' message where it has one.
        """
        name = name or self.name
        try:
            return self.check(value, name)
        except OptionError as exc:
            upstream = self.upstream(self.name, value) if callable(self.upstream) else self.upstream
            if upstream is None:
                raise
            raise OptionError(f"{upstream} {exc}") from None


LOSS_OPTIONS: tuple[LossOption, ...] = (
    LossOption("scale", 20.0, check_scale, stored=False, upstream=mnrl_message),
    LossOption("similarity_fct", cos_sim, check_callable, card=_similarity_fct_name),
    LossOption("mini_batch_size", 32, check_positive_int, owner="cache"),
    LossOption(
        "mini_batch_num_tokens",
        None,
        check_optional_positive_int,
        owner="cache",
        upstream="mini_batch_num_tokens must be a positive integer or None.",
    ),
    LossOption("gather_across_devices", False, check_bool),
    LossOption(
        "directions",
        ("query_to_doc",),
        check_directions,
        spec=True,
        kernel=lambda value: set(value) <= {"query_to_doc", "doc_to_query"},
        upstream=mnrl_message,
    ),
    LossOption("partition_mode", "joint", check_choice(PARTITION_MODES), spec=True, upstream=mnrl_message),
    LossOption("show_progress_bar", False, check_bool, owner="cache", card=False),
    LossOption("hardness_mode", None, check_choice(HARDNESS_MODES), spec=True, upstream=mnrl_message),
    LossOption("hardness_strength", 0.0, check_non_negative, spec=True, upstream=mnrl_message),
    LossOption("symmetric", False, check_bool, stored=False, card=False),
    LossOption("mask_duplicates", True, check_bool),
    LossOption("false_negative_margin", None, check_optional_finite, spec=True),
    LossOption("false_negative_ratio", None, check_ratio, spec=True),
    LossOption("learnable_scale", False, check_bool, stored=False),
    LossOption("max_scale", 100.0, check_positive),
    LossOption("scale_learning_rate", 1e-3, check_optional_positive),
    LossOption("hard_negatives", "shared", check_choice(HARD_NEGATIVES), spec=True),
    LossOption("tile_size", None, check_optional_positive_int, card=False, spec=True),
    LossOption("group_by_length", True, check_bool),
    LossOption("backend", "auto", check_choice(BACKENDS), spec=True),
)
"""Every option of :class:`MNRPlus` and :class:`CachedMNRPlus`, in the order of the model card."""

OPTIONS_BY_NAME: Mapping[str, LossOption] = {option.name: option for option in LOSS_OPTIONS}


def validate(name: str, value: Any) -> Any:
    """``value`` for the option ``name``, checked as its row says (:meth:`LossOption.validate`)."""
    return OPTIONS_BY_NAME[name].validate(value)


SPEC_OPTIONS: tuple[LossOption, ...] = tuple(option for option in LOSS_OPTIONS if option.spec)


def options_of(owner: Literal["loss", "cache"]) -> tuple[LossOption, ...]:
    """The options a class holds: :class:`MNRPlus` those of ``"loss"``, :class:`CachedMNRPlus` all of them."""
    return tuple(option for option in LOSS_OPTIONS if owner == "cache" or option.owner == "loss")


class Option:
    """A module attribute validated on every assignment by its option's check, as in the constructor.

    Stored in the instance's ``__dict__`` under ``_<name>``; ``nn.Module`` leaves data descriptors alone.
    """

    def __init__(self, check: Check) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = f"_{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.__dict__[self.slot]

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.slot] = self.check(value, self.name)


class Delegated:
    """An option held by a wrapped loss (``instance.loss``): read from it and assigned to it, with its checks, as
    ``CachedMultipleNegativesRankingLoss`` forwards its options to its inner loss."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else getattr(instance.loss, self.name)

    def __set__(self, instance: Any, value: Any) -> None:
        setattr(instance.loss, self.name, value)


def _install(cls: type, name: str, descriptor: Any) -> None:
    if name in cls.__dict__:  # the class implements it (a property): the table does not override it
        return
    descriptor.__set_name__(cls, name)
    setattr(cls, name, descriptor)


def declare_options(owner: Literal["loss", "cache"], *, delegate: bool = False) -> Callable[[type], type]:
    """A class decorator that gives the class a checked attribute per stored option it owns.

    With ``delegate``, the options owned by ``"loss"`` are forwarded to ``instance.loss`` instead (every one,
    implemented or stored), and only the class's own (``owner``) options are stored on it.
    """

    def decorate(cls: type) -> type:
        for option in options_of(owner):
            if delegate and option.owner == "loss":
                _install(cls, option.name, Delegated())
            elif option.stored and option.owner == owner:
                _install(cls, option.name, Option(option.validate))
        return cls

    return decorate


def assign_options(instance: Any, arguments: Mapping[str, Any], owner: Literal["loss", "cache"]) -> None:
    """Set each stored option ``owner`` holds from the constructor's ``arguments`` (its ``locals()``), checked."""
    for option in LOSS_OPTIONS:
        if option.stored and option.owner == owner:
            setattr(instance, option.name, arguments[option.name])


def card_values(instance: Any, owner: Literal["loss", "cache"]) -> dict[str, Any]:
    """The options a class holds, as its ``get_config_dict()`` (and so the model card) records them."""
    values = {}
    for option in options_of(owner):
        if option.card is False:
            continue
        value = getattr(instance, option.name)
        values[option.name] = value if option.card is True else option.card(value)
    return values


def spec_values(instance: Any) -> dict[str, Any]:
    """The options that shape the computation (:data:`SPEC_OPTIONS`), read from a loss."""
    return {option.name: getattr(instance, option.name) for option in SPEC_OPTIONS}


def checked_spec_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for :data:`SPEC_OPTIONS`, checked, with every one not given at its default."""
    unknown = sorted(set(values) - {option.name for option in SPEC_OPTIONS})
    if unknown:
        raise OptionError(f"unknown option(s) {unknown}; the computation takes {[o.name for o in SPEC_OPTIONS]}")
    checked = {o.name: o.validate(values.get(o.name, o.default)) for o in SPEC_OPTIONS}
    check_combination(checked["directions"], checked["partition_mode"])
    return checked


def kernel_fallbacks(values: Mapping[str, Any]) -> list[str]:
    """The options whose values the GPU path does not compute, as ``name=value`` (empty: it covers all)."""
    return [f"{o.name}={values[o.name]!r}" for o in SPEC_OPTIONS if not o.kernel(values[o.name])]
