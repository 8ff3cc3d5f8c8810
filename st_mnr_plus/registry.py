"""Look up components by kind and name: ``registry.get("loss", "mnr_plus")``.

Components come from the ``register_<kind>()`` hooks of the built-in plugin and of every plugin installed
under the ``st_mnr_plus`` entry-point group (see :mod:`st_mnr_plus.plugins`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal, get_args

Kind = Literal["loss", "batch_sampler", "dataset_builder", "evaluator", "callback"]
KINDS: tuple[str, ...] = get_args(Kind)

_HOOKS: dict[str, str] = {
    "loss": "register_losses",
    "batch_sampler": "register_batch_samplers",
    "dataset_builder": "register_dataset_builders",
    "evaluator": "register_evaluators",
    "callback": "register_callbacks",
}

_tables: dict[str, dict[str, tuple[Callable[..., Any], str]]] = {}
_lock = threading.Lock()


class UnknownComponentError(KeyError):
    """No component of that kind is registered under that name."""

    def __str__(self) -> str:
        # KeyError's str() would show the repr of the message, quotes and escapes included.
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ValueError):
    """Two plugins registered the same name under one kind."""


def _check_kind(kind: str) -> None:
    if kind not in _HOOKS:
        raise ValueError(f"Unknown component kind {kind!r}; expected one of {', '.join(KINDS)}.")


def _build_table(kind: str) -> dict[str, tuple[Callable[..., Any], str]]:
    from st_mnr_plus.plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    hook = getattr(pm.hook, _HOOKS[kind])
    table: dict[str, tuple[Callable[..., Any], str]] = {}
    # Call each implementation on its own so that every entry remembers which plugin gave it.
    for impl in hook.get_hookimpls():
        result = impl.function()
        if result is None:
            continue
        if not isinstance(result, dict):
            raise TypeError(
                f"Plugin {impl.plugin_name!r}: {_HOOKS[kind]}() must return a dict of name -> component, "
                f"got {type(result).__name__}."
            )
        for name, component in result.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"Plugin {impl.plugin_name!r}: {_HOOKS[kind]}() returned a non-string name {name!r}.")
            if not callable(component):
                raise TypeError(
                    f"Plugin {impl.plugin_name!r}: {kind} {name!r} must be a class or a factory, "
                    f"got {type(component).__name__}."
                )
            if name in table:
                raise DuplicateComponentError(
                    f"{kind} {name!r} is registered twice: by plugin {table[name][1]!r} ({_describe(table[name][0])}) "
                    f"and by plugin {impl.plugin_name!r} ({_describe(component)}). Uninstall one, or block it with "
                    "ST_MNR_PLUS_DISABLE_PLUGINS=<entry point name>."
                )
            table[name] = (component, impl.plugin_name)
    return table


def _describe(component: Callable[..., Any]) -> str:
    return f"{getattr(component, '__module__', '?')}.{getattr(component, '__qualname__', repr(component))}"


def _table(kind: str) -> dict[str, tuple[Callable[..., Any], str]]:
    _check_kind(kind)
    table = _tables.get(kind)
    if table is None:
        with _lock:
            table = _tables.get(kind)
            if table is None:
                table = _tables[kind] = _build_table(kind)
    return table


def _clear_cache() -> None:
    with _lock:
        _tables.clear()


def names(kind: Kind) -> list[str]:
    """Return the registered names of one kind, sorted."""
    return sorted(_table(kind))


def get(kind: Kind, name: str) -> Callable[..., Any]:
    """Return the class or factory registered as ``name`` under ``kind``.

    Raises:
        UnknownComponentError: (a ``KeyError``) no such name; the message lists the names that exist.
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    table = _table(kind)
    try:
        return table[name][0]
    except KeyError:
        available = ", ".join(sorted(table)) or "(none)"
        raise UnknownComponentError(f"No {kind} named {name!r}. Registered {kind} names: {available}.") from None


def source(kind: Kind, name: str) -> str:
    """Return the name of the plugin that registered ``name`` under ``kind`` (``st_mnr_plus.builtin`` for ours)."""
    get(kind, name)
    return _table(kind)[name][1]


__all__ = ["KINDS", "DuplicateComponentError", "Kind", "UnknownComponentError", "get", "names", "source"]
