"""What the sampler tests share: random datasets with heavy duplication, and the checks of a batch sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

COLUMN_NAMES = ("anchor", "positive", "negative", "negative_2")


def duplicated_columns(num_rows: int, num_columns: int, pool: int, seed: int) -> dict[str, list[str]]:
    """``num_columns`` text columns of ``num_rows`` rows, each text drawn from ``pool`` distinct texts."""
    rng = np.random.default_rng(seed)
    return {name: [f"text {i}" for i in rng.integers(0, pool, size=num_rows)] for name in COLUMN_NAMES[:num_columns]}


def row_texts(data: dict[str, Sequence[object]], columns: Sequence[str]) -> list[set[str]]:
    """The set of texts of every row, compared as sentence-transformers compares them (``str`` of each value)."""
    num_rows = len(data[columns[0]]) if columns else 0
    return [{str(data[c][i]) for c in columns} for i in range(num_rows)]


def duplicates_in(batch: Sequence[int], texts: list[set[str]]) -> list[str]:
    """Texts held by two different rows of ``batch``."""
    seen: set[str] = set()
    repeated = []
    for row in batch:
        for text in texts[row]:
            if text in seen:
                repeated.append(text)
            seen.add(text)
    return repeated


def st_value_sets(dataset: Any, valid_label_columns: list[str] | None = None) -> list[set[str]]:
    """The per-row value sets sentence-transformers' NoDuplicatesBatchSampler compares, read its own way.

    Its sampler reads every row through its own ``dataset`` (labels removed) and compares ``str()`` of each value
    but ``dataset_name``: the key of every plain value (strings, numbers, ``None``, lists of those).
    """
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    st_sampler = NoDuplicatesBatchSampler(dataset, 2, False, valid_label_columns=valid_label_columns)
    return [{str(v) for k, v in st_sampler.dataset[i].items() if k != "dataset_name"} for i in range(len(dataset))]
