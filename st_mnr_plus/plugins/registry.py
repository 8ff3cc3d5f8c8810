"""Look up components by kind and name: ``registry.get("loss", "mnr_plus")``.

Components come from the ``register_<kind>()`` hooks of the built-in plugin and of every plugin installed
under the ``st_mnr_plus`` entry-point group (see :mod:`st_mnr_plus.plugins`).

The layers go one way: the components (losses, sampler, builders, presets, callbacks) know nothing of plugins;
:mod:`st_mnr_plus.plugins.builtin` names them in hook implementations; :mod:`st_mnr_plus.plugins.manager` builds
the pluggy ``PluginManager``; this module calls the hooks through it and keeps one table per kind. Nothing below
imports this module: a new manager (after ``reset_plugin_manager()``) is noticed here and gets new tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import pluggy

from st_mnr_plus.common.errors import ConfigurationError
from st_mnr_plus.plugins.manager import get_plugin_manager

Kind = Literal["loss", "batch_sampler", "dataset_builder", "evaluator", "callback"]
KINDS: tuple[str, ...] = get_args(Kind)

_HOOKS: dict[str, str] = {
    "loss": "register_losses",
    "batch_sampler": "register_batch_samplers",
    "dataset_builder": "register_dataset_builders",
    "evaluator": "register_evaluators",
    "callback": "register_callbacks",
}

Table = dict[str, tuple[Callable[..., Any], str]]
"""Registry name -> (component, name of the plugin that registered it)."""

# The tables of one plugin manager, built kind by kind on first use. A new manager (after
# reset_plugin_manager()) gets new tables: the plugin layer below need not know this module.
_cache: tuple[pluggy.PluginManager | None, dict[str, Table]] = (None, {})
_lock = threading.Lock()


class UnknownComponentError(ConfigurationError, KeyError):
    """No component of that kind is registered under that name."""

    def __str__(self) -> str:
        # KeyError's str() would show the repr of the message, quotes and escapes included.
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ConfigurationError):
    """Two plugins registered the same name under one kind."""


def _check_kind(kind: str) -> None:
    if kind not in _HOOKS:
        raise ValueError(f"Unknown component kind {kind!r}; expected one of {', '.join(KINDS)}.")


def _results_by_plugin(pm: pluggy.PluginManager, hook: str) -> Iterator[tuple[str, Any]]:
    """Call ``hook`` through pluggy once per plugin that implements it: (plugin name, its result).

    A plain hook call returns the results without saying which plugin gave which (and drops ``None``), so each
    plugin is called through a subset caller that leaves the others out.
    """
    impls = getattr(pm.hook, hook).get_hookimpls()
    plugins = list({id(impl.plugin): impl.plugin for impl in impls}.values())
    for plugin in plugins:
        others = [other for other in plugins if other is not plugin]
        name = pm.get_name(plugin) or repr(plugin)
        for result in pm.subset_hook_caller(hook, remove_plugins=others)():
            yield name, result


def _build_table(pm: pluggy.PluginManager, kind: str) -> Table:
    hook = _HOOKS[kind]
    table: Table = {}
    for plugin, result in _results_by_plugin(pm, hook):
        if not isinstance(result, dict):
            raise TypeError(
                f"Plugin {plugin!r}: {hook}() must return a dict of name -> component, got {type(result).__name__}."
            )
        for name, component in result.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"Plugin {plugin!r}: {hook}() returned a non-string name {name!r}.")
            if not callable(component):
                raise TypeError(
                    f"Plugin {plugin!r}: {kind} {name!r} must be a class or a factory, got {type(component).__name__}."
                )
            if name in table:
                raise DuplicateComponentError(
                    f"{kind} {name!r} is registered twice: by plugin {table[name][1]!r} ({_describe(table[name][0])}) "
                    f"and by plugin {plugin!r} ({_describe(component)}). Uninstall one, or block it with "
                    "ST_MNR_PLUS_DISABLE_PLUGINS=<entry point name>."
                )
            table[name] = (component, plugin)
    return table


def _describe(component: Callable[..., Any]) -> str:
    return f"{getattr(component, '__module__', '?')}.{getattr(component, '__qualname__', repr(component))}"


def _table(kind: str) -> Table:
    global _cache
    _check_kind(kind)
    pm = get_plugin_manager()
    built_from, tables = _cache
    if built_from is pm and kind in tables:
        return tables[kind]
    with _lock:
        if _cache[0] is not pm:
            _cache = (pm, {})
        tables = _cache[1]
        if kind not in tables:
            tables[kind] = _build_table(pm, kind)
        return tables[kind]


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
