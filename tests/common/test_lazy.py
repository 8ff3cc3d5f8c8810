"""A package's public names loaded on first access."""

from __future__ import annotations

import sys
import types

import pytest

from st_mnr_plus.common.lazy import lazy_attributes


@pytest.fixture
def package(monkeypatch):
    module = types.ModuleType("lazy_demo")
    monkeypatch.setitem(sys.modules, "lazy_demo", module)
    module.__getattr__, module.__dir__ = lazy_attributes("lazy_demo", {"dumps": "json", "sqrt": "math"})
    return module


def test_a_name_is_loaded_on_first_access_and_kept(package):
    import json

    assert "dumps" not in vars(package)
    assert package.dumps is json.dumps
    assert vars(package)["dumps"] is json.dumps  # the next access is a plain attribute


def test_an_unknown_name_is_an_attribute_error_naming_the_package(package):
    with pytest.raises(AttributeError, match="module 'lazy_demo' has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_dir_lists_the_lazy_names_before_they_load(package):
    assert {"dumps", "sqrt"} <= set(dir(package))
    assert "sqrt" not in vars(package)


def test_the_packages_use_it():
    import st_mnr_plus
    import st_mnr_plus.losses

    assert "MNRPlus" in dir(st_mnr_plus)
    assert st_mnr_plus.MNRPlus is st_mnr_plus.losses.MNRPlus
    with pytest.raises(AttributeError, match=r"module 'st_mnr_plus\.losses' has no attribute 'Nope'"):
        st_mnr_plus.losses.Nope  # noqa: B018
