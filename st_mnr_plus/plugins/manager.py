"""The lazily created plugin manager: built-ins first, then the ``st_mnr_plus`` entry points.

Everything here is pluggy's public API: ``add_hookspecs``, ``register``, ``set_blocked``,
``load_setuptools_entrypoints`` and ``check_pending``. This module knows nothing of the registry built on top of
it (:mod:`st_mnr_plus.plugins.registry`), which notices a new manager by itself.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading

import pluggy

from st_mnr_plus.common.errors import ConfigurationError
from st_mnr_plus.common.switches import env_switch, switch_word
from st_mnr_plus.plugins import NAME, builtin, hookspecs

logger = logging.getLogger(__name__)

DISABLE_ENV = "ST_MNR_PLUS_DISABLE_PLUGINS"
"""A word for on (``1``, ``true``, ``yes``, ... :data:`~st_mnr_plus.common.switches.TRUE_WORDS`) or ``all`` turns
third-party discovery off, one for off (``0``, ``false``, ...) or nothing leaves it on; anything else is a
comma-separated list of the entry-point names to block. Built-in components are always registered."""

BUILTIN_NAME = "st_mnr_plus.builtin"

_plugin_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()


class PluginLoadError(ConfigurationError, ImportError):
    """A third-party plugin's entry point could not be imported."""


def _blocked_names() -> tuple[bool, set[str]]:
    """Read :data:`DISABLE_ENV`: (discovery off entirely, entry-point names blocked)."""
    value = os.environ.get(DISABLE_ENV, "").strip()
    if value.lower() == "all":
        return True, set()
    if not value or switch_word(value) is not None:
        return env_switch(DISABLE_ENV), set()
    return False, {name.strip() for name in value.split(",") if name.strip()}


def _failed_entry_point(pm: pluggy.PluginManager) -> tuple[str, str, str, str]:
    """(name, value, distribution, its version) of the entry point pluggy failed to load.

    ``load_setuptools_entrypoints`` walks ``importlib.metadata.distributions()`` in order and registers each entry
    point before it loads the next, so the one that failed is the first of the group neither registered nor
    blocked.
    """
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == NAME and not pm.has_plugin(ep.name) and not pm.is_blocked(ep.name):
                return ep.name, ep.value, dist.metadata["Name"] or "<unknown distribution>", dist.version
    return "?", "?", "<unknown distribution>", "?"


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Block the names :data:`DISABLE_ENV` lists, then load the group; name the distribution of a plugin that fails.

    pluggy's loader lets the bare import error escape, with no hint of which installed package is at fault.
    """
    disabled, blocked = _blocked_names()
    if disabled:
        return
    for name in sorted(blocked):
        pm.set_blocked(name)
    try:
        count = pm.load_setuptools_entrypoints(NAME)
    except pluggy.PluginValidationError:
        raise  # imported, but its hook implementations do not match the specs: pluggy's message names it
    except Exception as exc:
        name, value, dist, version = _failed_entry_point(pm)
        raise PluginLoadError(
            f"st-mnr-plus plugin {name!r} ({value}) from distribution {dist} {version} failed to import: "
            f"{type(exc).__name__}: {exc}. Fix or uninstall {dist}, or set {DISABLE_ENV}={name} to skip it."
        ) from exc
    for plugin, dist in pm.list_plugin_distinfo():
        logger.debug(
            "Registered st-mnr-plus plugin %r from %s %s", pm.get_name(plugin), dist.project_name, dist.version
        )
    logger.debug("Loaded %d st-mnr-plus plugin(s) from entry points.", count)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, creating it on first use.

    Creation registers the built-ins, then (unless :data:`DISABLE_ENV` says otherwise) every module named in
    the ``st_mnr_plus`` entry-point group, then checks that each hook implementation matches a spec.
    """
    global _plugin_manager
    if _plugin_manager is not None:
        return _plugin_manager
    with _lock:
        if _plugin_manager is None:
            pm = pluggy.PluginManager(NAME)
            pm.add_hookspecs(hookspecs)
            pm.register(builtin, name=BUILTIN_NAME)
            _load_entry_points(pm)
            pm.check_pending()
            _plugin_manager = pm
    return _plugin_manager


def reset_plugin_manager() -> None:
    """Forget the plugin manager (for tests, or after installing a plugin); the next look-up builds a new one.

    The registry's tables are built from a given manager, so they are rebuilt with the new one.
    """
    global _plugin_manager
    with _lock:
        _plugin_manager = None
