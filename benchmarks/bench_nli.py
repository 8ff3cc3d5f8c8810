"""``build_nli`` against the two-line ``datasets`` recipe on SNLI-format jsonl generated from the real dev rows.

The recipe is ``load_dataset("json", data_files=...)`` + ``filter(gold_label == "entailment")``: it neither
validates, deduplicates nor reports, and keeps every column. Time groups hold our pairs, our triplets and the
recipe on the same file; memory groups run each in a fresh subprocess (capped address space) and record its peak
RSS in ``extra_info["peak_rss_mib"]``.

The file: the 9,842 SNLI dev rows repeated, copy ``k >= 1`` with `` k`` appended to both sentences, so premises,
pairs and duplicates stay as realistic as the dev split (about 34% entailment, a few exact duplicates per copy).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SNLI_DEV = REPO_ROOT / "st_mnr_plus" / "data" / "snli" / "snli_1.0_dev.jsonl.gz"
MEMORY_CAP_BYTES = 6 << 30

SIZES = [
    pytest.param(10_000, id="10k"),
    pytest.param(100_000, id="100k", marks=pytest.mark.large),
    pytest.param(1_000_000, id="1M", marks=pytest.mark.large),
]


def generate_snli_jsonl(path: Path, n_rows: int) -> dict[str, int]:
    """Write ``n_rows`` SNLI-format lines built from the real dev rows; return the expected output counts."""
    with gzip.open(SNLI_DEV, "rt", encoding="utf-8") as f:
        dev = [json.loads(line) for line in f if line.strip()]
    entailment = 0
    pairs: set[tuple[str, str]] = set()
    with path.open("w", encoding="utf-8") as out:
        written, copy = 0, 0
        while written < n_rows:
            suffix = f" {copy}" if copy else ""
            for row in dev[: n_rows - written]:
                s1, s2 = row["sentence1"] + suffix, row["sentence2"] + suffix
                out.write(json.dumps({"gold_label": row["gold_label"], "sentence1": s1, "sentence2": s2}) + "\n")
                if row["gold_label"] == "entailment":
                    entailment += 1
                    pairs.add((s1, s2))
            written += min(len(dev), n_rows - written)
            copy += 1
    return {"entailment": entailment, "distinct_pairs": len(pairs)}


@pytest.fixture(scope="module")
def snli_files(tmp_path_factory):
    """Size -> (path, expected counts), generated once per size and module."""
    cache: dict[int, tuple[Path, dict[str, int]]] = {}

    def get(n_rows: int) -> tuple[Path, dict[str, int]]:
        if n_rows not in cache:
            path = tmp_path_factory.mktemp("snli") / f"snli_{n_rows}.jsonl"
            cache[n_rows] = (path, generate_snli_jsonl(path, n_rows))
        return cache[n_rows]

    return get


@pytest.fixture(autouse=True)
def _quiet_datasets():
    import datasets

    enabled = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if enabled:
        datasets.enable_progress_bars()


def ours_pairs(path: Path, cache_dir: Path):
    from st_mnr_plus.datasets.nli import build_nli

    return build_nli(path, "pairs", cache_dir=cache_dir)


def ours_triplets(path: Path, cache_dir: Path):
    from st_mnr_plus.datasets.nli import build_nli

    return build_nli(path, "triplets", cache_dir=cache_dir)


def datasets_recipe(path: Path, cache_dir: Path):
    """The two-line recipe: load the jsonl, keep the entailment rows."""
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache_dir))
    return dataset.filter(lambda row: row["gold_label"] == "entailment")


METHODS = {"build_nli-pairs": ours_pairs, "build_nli-triplets": ours_triplets, "datasets-recipe": datasets_recipe}


def check(method: str, result, expected: dict[str, int]) -> None:
    if method == "build_nli-pairs":
        assert result.column_names == ["anchor", "positive"]
        assert len(result) == expected["distinct_pairs"]
        assert result.build_report.skipped["duplicate"] == expected["entailment"] - expected["distinct_pairs"]
    elif method == "build_nli-triplets":
        assert result.column_names == ["anchor", "positive", "negative"]
        assert len(result) > 0
    else:
        assert len(result) == expected["entailment"]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("n_rows", SIZES)
def test_build_time(benchmark, snli_files, tmp_path, n_rows, method):
    path, expected = snli_files(n_rows)
    benchmark.group = f"nli-build-time-{n_rows:,}-rows"
    rounds = iter(range(1_000_000))

    def setup():
        # A fresh cache directory per round: the recipe would otherwise hit its own cache.
        return (path, tmp_path / f"cache-{next(rounds)}"), {}

    result = benchmark.pedantic(METHODS[method], setup=setup, rounds=3, iterations=1, warmup_rounds=0)
    check(method, result, expected)
    benchmark.extra_info["rows"] = n_rows
    benchmark.extra_info["rows_out"] = len(result)


# Self-contained, so that the child imports nothing but the library under test (and datasets for the recipe).
CHILD = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    import datasets
    datasets.disable_progress_bars()
    method, path, cache_dir = sys.argv[1], sys.argv[2], tempfile.mkdtemp()
    if method == "datasets-recipe":
        dataset = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)
        result = dataset.filter(lambda row: row["gold_label"] == "entailment")
    else:
        from st_mnr_plus.datasets.nli import build_nli
        result = build_nli(path, method.rsplit("-", 1)[1], cache_dir=cache_dir)
    from st_mnr_plus.bench.memory import peak_rss_mib  # VmHWM: ru_maxrss survives exec from pytest
    print(json.dumps({"rows_out": len(result), "peak_rss_kib": peak_rss_mib() * 1024}))
    """
)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def run_in_fresh_process(method: str, path: Path) -> dict[str, int]:
    """Run one method in a new interpreter (address space capped) and return its output size and peak RSS."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(path)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_cap_memory,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {path} failed in its subprocess:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("n_rows", SIZES)
def test_peak_memory(benchmark, snli_files, n_rows, method):
    """Peak RSS of a fresh process building from the file (the time recorded includes interpreter start)."""
    path, _ = snli_files(n_rows)
    benchmark.group = f"nli-peak-rss-{n_rows:,}-rows"
    outcome = benchmark.pedantic(run_in_fresh_process, args=(method, path), rounds=1, iterations=1)
    assert outcome["rows_out"] > 0
    benchmark.extra_info["rows"] = n_rows
    benchmark.extra_info["peak_rss_mib"] = round(outcome["peak_rss_kib"] / 1024, 1)
    benchmark.extra_info["file_mib"] = round(path.stat().st_size / 2**20, 1)
