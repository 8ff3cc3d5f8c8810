"""Memory figures of a process: what the benchmarks and :class:`~st_mnr_plus.callbacks.ThroughputCallback` report."""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mib"]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux it reads ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives ``execve``,
    so a process started by a large one (pytest, a launcher) would report its parent's peak. Elsewhere it falls
    back to ``getrusage`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
