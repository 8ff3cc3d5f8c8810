from __future__ import annotations

import json
from pathlib import Path

import pytest

SNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2, "-": -1}


@pytest.fixture(scope="session")
def snli_dev(shared_data: Path) -> Path:
    return shared_data / "snli" / "snli_1.0_dev.jsonl"


@pytest.fixture(scope="session")
def snli_rows(snli_dev: Path) -> list[dict[str, str]]:
    """The SNLI dev rows as dicts, read naively with the standard library."""
    with snli_dev.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def sick_train(shared_data: Path) -> Path:
    return shared_data / "sick2014" / "SICK_train.txt"
