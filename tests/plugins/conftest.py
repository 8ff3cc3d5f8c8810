from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from st_mnr_plus.plugins.manager import reset_plugin_manager


def write_plugin_dist(root: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> Path:
    """Write a real, importable distribution: ``<module>.py`` plus a ``.dist-info`` with an entry point."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[st_mnr_plus]\n{entry_name or module} = {module}\n")
    return root


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Install a throwaway third-party plugin on a temporary ``sys.path`` entry; return its entry-point name."""
    modules: list[str] = []

    def install(dist: str, module: str, source: str, entry_name: str | None = None) -> str:
        root = write_plugin_dist(tmp_path / dist, dist, module, source, entry_name)
        monkeypatch.syspath_prepend(str(root))
        modules.append(module)
        reset_plugin_manager()
        return entry_name or module

    monkeypatch.delenv("ST_MNR_PLUS_DISABLE_PLUGINS", raising=False)
    reset_plugin_manager()
    yield install
    for module in modules:
        sys.modules.pop(module, None)
    reset_plugin_manager()
