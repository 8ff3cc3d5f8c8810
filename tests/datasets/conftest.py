from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

SNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2, "-": -1}


@pytest.fixture(scope="session")
def snli_dev(tmp_path_factory: pytest.TempPathFactory, snli_dev: Path) -> Path:
    """The packaged SNLI dev split, decompressed: the builder's plain ``.jsonl`` reader is what these tests check."""
    packaged = snli_dev
    path = tmp_path_factory.mktemp("snli") / "snli_1.0_dev.jsonl"
    with gzip.open(packaged, "rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="session")
def snli_rows(snli_dev: Path) -> list[dict[str, str]]:
    """The SNLI dev rows as dicts, read naively with the standard library."""
    with snli_dev.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def sick_train(sick_dir: Path) -> Path:
    return sick_dir / "SICK_train.txt"
