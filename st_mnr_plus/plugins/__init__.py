"""The component registry's plugin layer, built on pluggy.

A plugin is a module with ``@st_mnr_plus.hookimpl`` functions named after the hook specs in
:mod:`st_mnr_plus.plugins.hookspecs`. Third-party packages declare theirs in ``pyproject.toml``::

    [project.entry-points.st_mnr_plus]
    my_plugin = "my_package.st_mnr_plus_plugin"

The built-in components are registered by :mod:`st_mnr_plus.plugins.builtin` through the same hooks.
:mod:`~st_mnr_plus.plugins.manager` builds the pluggy manager (built-ins, then entry points), and
:mod:`~st_mnr_plus.plugins.registry` looks components up by kind and name through it: the only module of the
package that calls the hooks.
"""

from __future__ import annotations

import pluggy

NAME = "st_mnr_plus"
"""One name for the hook markers, the plugin manager and the entry-point group."""

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "hookimpl", "hookspec"]
