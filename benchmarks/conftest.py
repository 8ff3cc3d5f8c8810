"""Benchmarks run once each as smoke tests under ``--benchmark-disable`` (the default addopts), where sizes
marked ``large`` are skipped; ``pytest benchmarks --benchmark-enable`` runs them all for real figures."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # --benchmark-enable overrides the --benchmark-disable of the default addopts without clearing it.
    if config.getoption("benchmark_enable", default=False) or not config.getoption("benchmark_disable", default=False):
        return
    skip = pytest.mark.skip(reason="large benchmark size: runs only with --benchmark-enable")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
