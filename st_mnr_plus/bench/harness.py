"""A small timing harness: warm-up, repeated timed calls, summary statistics.

pytest-benchmark does this for the repository's ``benchmarks/``; the installed ``st-mnr-plus bench`` uses this
harness instead, so that running the package's comparisons needs neither pytest nor a test collection.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Measurement", "synchronize", "time_call"]


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work, so that a timer read after it covers the work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    """One benchmarked case: its group, the variant's name, the timings (seconds) and anything else it reports.

    ``group`` ties a variant to its baseline: every ratio compares two measurements of one group.
    """

    group: str
    name: str
    params: dict[str, Any]
    times: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, float]:
        if not self.times:
            return {}
        return {
            "min": min(self.times),
            "mean": statistics.fmean(self.times),
            "median": statistics.median(self.times),
            "stdev": statistics.stdev(self.times) if len(self.times) > 1 else 0.0,
            "rounds": len(self.times),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stats": self.stats}


def time_call(
    fn: Callable[..., Any],
    *,
    setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    warmup: int = 1,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> tuple[list[float], Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; the times and the last result.

    ``setup`` (as in ``benchmark.pedantic``) returns fresh ``(args, kwargs)`` before each call, outside the timed
    region. On CUDA the device is synchronised before the timer starts and inside the timed region.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    times: list[float] = []
    result: Any = None
    for index in range(warmup + repeats):
        args, kwargs = setup() if setup is not None else ((), {})
        synchronize(device)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        synchronize(device)
        elapsed = time.perf_counter() - start
        if index >= warmup:
            times.append(elapsed)
    return times, result
