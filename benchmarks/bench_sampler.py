"""NoDuplicatesSampler vs sentence-transformers' NoDuplicatesBatchSampler, plain and ``precompute_hashes=True``.

One group per size, ``epoch-<N>-b<batch>``: constructing the sampler (hashing included) and drawing one full
epoch, on ``N`` synthetic (anchor, positive) rows of which ~5% repeat a text of another row. Each run records
in ``extra_info`` the batches yielded, the rows yielded, the rows yielded more than once (ST's resampling) and
the rows not yielded (left out), and checks every batch for duplicates with an independent encoding (pandas
``factorize``), outside the timed call.

ST's plain sampler reads every row through ``dataset[i]``: at N = 1,000,000 one epoch takes about 20 s on the
dev VM, so that one case draws only the first ``ST_PLAIN_FRACTION`` of the epoch's batches and records the
extrapolated epoch time (``extrapolated_epoch_s``) next to the measured one; it is labelled as such in the README
(a full epoch, timed once by hand, took 22.6 s against 21.7 s extrapolated).

Both samplers' modules are imported here, at collection: importing sentence-transformers takes seconds, and
it is no part of an epoch.

Peak memory comes from a fresh process: ``python benchmarks/bench_sampler.py --kind ours --rows 1000000 --batch
1024`` prints one JSON line (time, peak RSS, RSS after building the data, counts); ``test_fresh_process_report``
runs it at the smoke size so the command cannot rot.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

# Both samplers' modules at collection (see above): make_sampler imports them where it builds one.
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler  # noqa: F401

from st_mnr_plus.bench.memory import peak_rss_mib
from st_mnr_plus.bench.workloads import make_sampler, one_epoch, synthetic_pairs
from st_mnr_plus.sampler import NoDuplicatesSampler  # noqa: F401

ST_PLAIN_FRACTION = 0.1
KINDS = ("ours", "st_hashed", "st_plain")
GIB = 1024**3


def as_dataset(table: pa.Table):
    from datasets import Dataset

    return Dataset(table)


def epoch_report(table: pa.Table, batches: list[list[int]], batch_size: int) -> dict[str, Any]:
    """Counts of one epoch, and the number of batches holding a duplicate, by an independent pandas encoding."""
    num_rows = table.num_rows
    rows = np.fromiter((row for batch in batches for row in batch), dtype=np.int64)
    seen = np.bincount(rows, minlength=num_rows)
    codes, _ = pd.factorize(
        pd.concat([table.column("anchor").to_pandas(), table.column("positive").to_pandas()], ignore_index=True)
    )
    anchor, positive = codes[:num_rows], codes[num_rows:]
    batch_of = np.repeat(np.arange(len(batches)), [len(batch) for batch in batches])
    # (batch, text) pairs over the texts of each yielded row; a text repeated inside one row counts once.
    texts = np.concatenate([anchor[rows], positive[rows][positive[rows] != anchor[rows]]])
    owners = np.concatenate([batch_of, batch_of[positive[rows] != anchor[rows]]])
    keys = owners * (int(codes.max()) + 1) + texts
    unique_keys, counts = np.unique(keys, return_counts=True)
    return {
        "batches": len(batches),
        "full_batches": int(sum(len(batch) == batch_size for batch in batches)),
        "rows_yielded": len(rows),
        "rows_repeated": int((seen > 1).sum()),
        "rows_left_out": int((seen == 0).sum()),
        "batches_with_duplicates": len(np.unique(unique_keys[counts > 1] // (int(codes.max()) + 1))),
    }


# ----------------------------------------------------------------------------------------------------- pytest


def size(rows: int, batch: int, large: bool) -> Any:
    return pytest.param(rows, batch, id=f"{rows}-b{batch}", marks=[pytest.mark.large] if large else [])


SIZES = [
    size(2_000, 64, large=False),
    size(100_000, 64, large=True),
    size(100_000, 1024, large=True),
    size(1_000_000, 64, large=True),
    size(1_000_000, 1024, large=True),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("rows", "batch"), SIZES)
def test_epoch(benchmark, kind: str, rows: int, batch: int) -> None:
    table = synthetic_pairs(rows)
    dataset = as_dataset(table)
    fraction = ST_PLAIN_FRACTION if kind == "st_plain" and rows >= 1_000_000 else 1.0
    benchmark.group = f"epoch-{rows}-b{batch}"
    # Ours takes well under a second at every size: three rounds for a steadier mean. ST's take seconds to minutes.
    rounds = 3 if kind == "ours" else 1
    batches = benchmark.pedantic(one_epoch, args=(kind, dataset, batch, fraction), rounds=rounds, iterations=1)
    report = epoch_report(table, batches, batch)
    benchmark.extra_info.update(report, fraction=fraction)
    if fraction < 1 and benchmark.stats is not None:
        benchmark.extra_info["extrapolated_epoch_s"] = benchmark.stats.stats.mean / fraction
    assert report["batches"] > 0
    assert report["rows_repeated"] == 0 or kind != "ours"
    if kind == "ours":
        # Our sampler never repeats a row, and by default yields every row.
        assert report["batches_with_duplicates"] == 0
        assert report["rows_left_out"] == make_sampler("ours", dataset, batch).num_left_out == 0
    elif fraction == 1.0:
        # ST's pass has no duplicate in a batch either; it may repeat rows to reach its __len__.
        assert report["batches_with_duplicates"] == 0


@pytest.mark.slow  # a fresh process per sampler: ~8 s
def test_fresh_process_report(tmp_path: Path) -> None:
    """The command that gives the peak-memory figures runs and reports consistent counts."""
    cmd = [sys.executable, __file__, "--kind", "ours", "--rows", "2000", "--batch", "64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rows_yielded"] + report["rows_left_out"] == 2000
    assert report["batches_with_duplicates"] == 0
    assert report["peak_rss_gib"] >= report["rss_after_data_gib"] > 0


# -------------------------------------------------------------------------------------------- fresh process


def peak_rss_gib() -> float:
    # VmHWM: ru_maxrss would carry the parent pytest's peak over exec.
    return peak_rss_mib() * 2**20 / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--fraction", type=float, default=1.0, help="draw only this fraction of the epoch")
    parser.add_argument("--cap-gib", type=float, default=12.0, help="RLIMIT_AS of this process, in GiB")
    args = parser.parse_args()
    cap = int(args.cap_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # Import everything a sampler needs before measuring, so the figures are the sampler's, not the imports'.
    import sentence_transformers.base.sampler  # noqa: F401

    import st_mnr_plus.sampler  # noqa: F401

    table = synthetic_pairs(args.rows)
    dataset = as_dataset(table)
    rss_after_data = peak_rss_gib()
    start = time.perf_counter()
    batches = one_epoch(args.kind, dataset, args.batch, args.fraction)
    elapsed = time.perf_counter() - start
    peak = peak_rss_gib()
    report = epoch_report(table, batches, args.batch)
    result = {
        "kind": args.kind,
        "rows": args.rows,
        "batch": args.batch,
        "fraction": args.fraction,
        "seconds": round(elapsed, 3),
        "epoch_seconds": round(elapsed / args.fraction, 3),
        "rss_after_data_gib": round(rss_after_data, 3),
        "peak_rss_gib": round(peak, 3),
        **report,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
