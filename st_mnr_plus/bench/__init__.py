"""``st-mnr-plus bench``: st-mnr-plus's benchmark comparisons, shipped in the package to run on any machine.

:mod:`~st_mnr_plus.bench.workloads` holds the workloads (also imported by the repository's pytest-benchmark
files, so the two cannot drift apart), :mod:`~st_mnr_plus.bench.harness` a small timing harness,
:mod:`~st_mnr_plus.bench.report` the ratios, tables, comparison and plot, :mod:`~st_mnr_plus.bench.memory` the
process's peak memory, and :mod:`~st_mnr_plus.bench.cli` the subcommand.
"""

from __future__ import annotations
