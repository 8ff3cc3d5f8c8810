"""One-off comparison behind issue 19's decision: how NoDuplicatesSampler encodes its texts.

Construction plus one epoch (batch 1,024) of this checkout's sampler with three encoders of the texts, in one
process, alternating: ``exact`` (Arrow's ``dictionary_encode`` of every text, commit f11311d), ``hashed`` (the
64-bit hashing of commit ad61a72, whose rare collision could keep two different texts apart) and ``checked`` (this
checkout: the hashing, then the entries whose hash can repeat are compared with the texts). The two older encoders
are read from git history, so run it from a clone with its history::

    python benchmarks/compare_sampler_encoders.py --rounds 5 --rows 500000 1000000 2000000 [--nli]

Prints one JSON line per size: median seconds (construction + epoch, and the encoding alone) and the transient
memory of the encoding (peak of Arrow's memory pool plus NumPy's allocations, via tracemalloc). ``--nli`` uses
NLI-like rows instead of ``bench_sampler.synthetic_pairs``: every anchor in about three rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from bench_sampler import as_dataset, synthetic_pairs

import st_mnr_plus.sampler.no_duplicates as sampler_module
from st_mnr_plus.sampler.index import DuplicateIndex
from st_mnr_plus.sampler.index import encode_duplicates as checked

COMMITS = {"exact": "f11311d", "hashed": "ad61a72"}
REPO = Path(__file__).resolve().parent.parent


def encoder_at(commit: str, folder: Path):
    """``encode_duplicates`` of ``st_mnr_plus/_sampling.py`` at ``commit``, returning this checkout's index type."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:st_mnr_plus/_sampling.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = folder / f"sampling_{commit}.py"
    path.write_text(source, encoding="utf8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up
    spec.loader.exec_module(module)

    def encode(table: pa.Table, columns: list[str], normalize: bool = False) -> DuplicateIndex:
        old = module.encode_duplicates(table, columns, normalize)
        return DuplicateIndex(old.num_rows, old.row_texts, old.text_ptr, old.text_rows, old.text_counts)

    return encode


def nli_like(num_rows: int) -> pa.Table:
    """``num_rows`` (anchor, positive) rows; every anchor is drawn from ``num_rows // 3`` premises."""
    premises = np.random.default_rng(0).integers(0, num_rows // 3, size=num_rows)
    anchors = pd.Series(premises).map("a premise sentence number {} describing a scene in some detail".format)
    positives = pd.Series(np.arange(num_rows)).map("a hypothesis that follows from premise {} here".format)
    return pa.table({"anchor": pa.array(anchors, pa.string()), "positive": pa.array(positives, pa.string())})


def seconds(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def epoch(encoders: dict, kind: str, dataset) -> None:
    sampler_module.encode_duplicates = encoders[kind]
    sampler = sampler_module.NoDuplicatesSampler(dataset, 1024, False, seed=0)
    if sum(len(batch) for batch in sampler) != len(dataset):
        raise RuntimeError(f"{kind}: an epoch left rows out")


def transient_mib(encode, table: pa.Table) -> float:
    default = pa.default_memory_pool()
    proxy = pa.proxy_memory_pool(default)
    pa.set_memory_pool(proxy)
    tracemalloc.start()
    try:
        encode(table, ["anchor", "positive"])
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default)
    return round((proxy.max_memory() + numpy_peak) / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--nli", action="store_true", help="NLI-like rows: every anchor in about three rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        encoders = {kind: encoder_at(commit, Path(folder)) for kind, commit in COMMITS.items()}
        encoders["checked"] = checked
        kinds = list(encoders)
        for rows in args.rows:
            table = nli_like(rows) if args.nli else synthetic_pairs(rows)
            dataset = as_dataset(table)
            times: dict[str, dict[str, list[float]]] = {kind: {"epoch": [], "encode": []} for kind in kinds}
            for r in range(args.rounds):
                for kind in kinds[r % 3 :] + kinds[: r % 3]:
                    times[kind]["epoch"].append(seconds(epoch, encoders, kind, dataset))
                    times[kind]["encode"].append(seconds(encoders[kind], table, ["anchor", "positive"]))
            result = {
                kind: {name: round(statistics.median(values), 3) for name, values in times[kind].items()}
                | {"transient_mib": transient_mib(encoders[kind], table)}
                for kind in kinds
            }
            print(json.dumps({"rows": rows, "nli": args.nli, **result}), flush=True)


if __name__ == "__main__":
    main()
