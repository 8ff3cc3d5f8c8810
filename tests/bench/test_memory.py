from __future__ import annotations

from st_mnr_plus.bench.memory import peak_rss_mib


def test_peak_rss_is_this_process_not_the_parent():
    """ru_maxrss survives exec: a small child of a large parent must still report its own peak."""
    import subprocess
    import sys

    ballast = bytearray(512 * 2**20)  # the parent's peak RSS grows by 512 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from st_mnr_plus.bench.memory import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_rss_mib() > 512
    assert child < peak_rss_mib() - 256, child
    del ballast
