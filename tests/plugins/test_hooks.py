"""One ``test_hook_<name>`` per hook spec: a third-party plugin implementing only that hook is found by kind.

The meta-tests below check that every spec has such a test, a registry kind and an entry in docs/plugins.md.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

from st_mnr_plus import registry
from st_mnr_plus.plugins import hookspecs

PLUGINS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def plugin_source(hook: str, name: str, component: str) -> str:
    return f"""
        from st_mnr_plus import hookimpl

        {component}

        @hookimpl
        def {hook}():
            return {{{name!r}: Component}}
    """


def check_hook(install_plugin, hook: str, kind: str, component: str = "class Component:\n            pass") -> None:
    module = f"hook_{hook}_plugin"
    entry = install_plugin(
        f"st-mnr-plus-{hook.replace('_', '-')}", module, plugin_source(hook, "from_plugin", component)
    )
    found = registry.get(kind, "from_plugin")
    assert found.__module__ == module
    assert found is sys.modules[module].Component
    assert registry.source(kind, "from_plugin") == entry
    # The built-ins of that kind stay beside it.
    assert any(registry.source(kind, other) == "st_mnr_plus.builtin" for other in registry.names(kind))


def test_hook_register_losses(install_plugin):
    check_hook(install_plugin, "register_losses", "loss")


def test_hook_register_batch_samplers(install_plugin):
    check_hook(install_plugin, "register_batch_samplers", "batch_sampler")


def test_hook_register_dataset_builders(install_plugin):
    check_hook(
        install_plugin,
        "register_dataset_builders",
        "dataset_builder",
        "def Component(sources):\n            return sources",
    )


def test_hook_register_evaluators(install_plugin):
    check_hook(install_plugin, "register_evaluators", "evaluator", "def Component():\n            return None")


def test_hook_register_callbacks(install_plugin):
    check_hook(install_plugin, "register_callbacks", "callback")


HOOKS = sorted(
    name for name, value in vars(hookspecs).items() if inspect.isfunction(value) and name.startswith("register_")
)


def test_every_hook_spec_is_found():
    # Guards the meta-tests below from passing on an empty list.
    assert len(HOOKS) == len(registry.KINDS) == 5


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_its_test(hook: str):
    assert callable(globals().get(f"test_hook_{hook}")), f"add test_hook_{hook} to {__file__}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_serves_one_kind(hook: str):
    assert list(registry._HOOKS.values()).count(hook) == 1


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str):
    page = PLUGINS_PAGE.read_text(encoding="utf-8")
    assert re.search(rf"`{hook}`", page), f"docs/plugins.md must name `{hook}`"
    assert inspect.getdoc(getattr(hookspecs, hook)), f"hookspecs.{hook} needs a docstring saying what to return"
