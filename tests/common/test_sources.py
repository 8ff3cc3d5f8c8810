"""The one rule that tells a local path from a hub id (data sets, evaluator sources, models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from st_mnr_plus.common.sources import is_local_path


@pytest.mark.parametrize(
    "value",
    [
        "sentence-transformers/all-MiniLM-L6-v2",
        "stanfordnlp/snli",
        "sentence-transformers/all-nli:pair-class",
        "mteb/sickr-sts",
        "glue",
    ],
)
def test_hub_ids_are_not_paths(value):
    assert not is_local_path(value)


@pytest.mark.parametrize(
    "value",
    [
        "path/to/SICK",  # two slashes: no hub id has them
        "./SICK",
        "../data",
        "~/data/snli",
        "/abs/folder",
        "snli_1.0_train.jsonl",
        "multinli.jsonl.gz",
        "my_nli.csv",
        "pairs.tsv",
        "SICK.txt",
        "C:\\data\\sick",
    ],
)
def test_anything_only_a_path_can_be_is_a_path_even_when_missing(value):
    assert is_local_path(value)


def test_an_existing_name_is_a_path_and_a_path_object_always_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stsbenchmark").mkdir()
    assert is_local_path("stsbenchmark")
    assert not is_local_path("stsbenchmark-not-here")
    assert is_local_path(Path("stsbenchmark-not-here"))
