"""The lazily created plugin manager: built-ins first, then the ``st_mnr_plus`` entry points."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading

import pluggy

from st_mnr_plus.plugins import NAME, builtin, hookspecs

logger = logging.getLogger(__name__)

DISABLE_ENV = "ST_MNR_PLUS_DISABLE_PLUGINS"
"""``1``/``true``/``yes``/``all`` turns third-party discovery off; a comma-separated list blocks those
entry-point names only. Built-in components are always registered."""

BUILTIN_NAME = "st_mnr_plus.builtin"

_plugin_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()


class PluginLoadError(ImportError):
    """A third-party plugin's entry point could not be imported."""


def _blocked_names() -> tuple[bool, set[str]]:
    """Read :data:`DISABLE_ENV`: (discovery off entirely, entry-point names blocked)."""
    value = os.environ.get(DISABLE_ENV, "").strip()
    if value.lower() in {"1", "true", "yes", "on", "all"}:
        return True, set()
    if value.lower() in {"", "0", "false", "no", "off"}:
        return False, set()
    return False, {name.strip() for name in value.split(",") if name.strip()}


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    """Register every ``st_mnr_plus`` entry point, naming the distribution of any that fails to import.

    This mirrors ``PluginManager.load_setuptools_entrypoints``, which lets the bare import error escape with
    no hint of which installed package is at fault.
    """
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "<unknown distribution>"
        for ep in dist.entry_points:
            if ep.group != NAME or ep.name in blocked:
                continue
            # The same distribution can be visible twice (e.g. listed on sys.path twice).
            if (dist_name, ep.name) in seen or pm.get_plugin(ep.name) is not None:
                continue
            seen.add((dist_name, ep.name))
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"st-mnr-plus plugin {ep.name!r} ({ep.value}) from distribution "
                    f"{dist_name} {dist.version} failed to import: {type(exc).__name__}: {exc}. "
                    f"Fix or uninstall {dist_name}, or set {DISABLE_ENV}={ep.name} to skip it."
                ) from exc
            pm.register(plugin, name=ep.name)
            logger.debug("Registered st-mnr-plus plugin %r from %s %s", ep.name, dist_name, dist.version)


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
            disabled, blocked = _blocked_names()
            if not disabled:
                _load_entry_points(pm, blocked)
            pm.check_pending()
            _plugin_manager = pm
    return _plugin_manager


def reset_plugin_manager() -> None:
    """Forget the plugin manager and the registry built from it (for tests, or after installing a plugin)."""
    global _plugin_manager
    from st_mnr_plus import registry

    with _lock:
        _plugin_manager = None
        registry._clear_cache()
