"""One loss forward + backward in a fresh process, for its peak memory: prints one JSON line.

``python -m st_mnr_plus.bench.fresh --loss mnrl --batch 16384 --dim 768 --negatives 1 [--max-gib 10]``

A fresh process, because peak RSS is a high-water mark: in a process that has already run something larger
it would report that instead. ``--max-gib`` caps the address space (``RLIMIT_AS``) so that a size the loss
cannot fit fails with ``{"ok": false, ...}`` instead of swapping the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from st_mnr_plus.bench.workloads import DTYPES, GIB, LOSSES, make_loss, measure_loss_memory

__all__ = ["main", "run_fresh"]


def run_fresh(
    loss: str,
    batch: int,
    dim: int,
    negatives: int = 0,
    *,
    symmetric: bool = False,
    dtype: str = "float32",
    max_gib: float | None = None,
    entry: Sequence[str] = ("-m", "st_mnr_plus.bench.fresh"),
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``python <entry>`` for one loss and size; its JSON result, or ``{"ok": False, "error": ...}``.

    ``entry`` lets a caller with more losses (the repository's ``benchmarks/bench_loss.py``, run as a script)
    use its own entry point with the same arguments (see :func:`parse_args` and :func:`measure_args`).
    """
    command = [sys.executable, *entry, "--loss", loss, "--batch", str(batch), "--dim", str(dim)]
    command += ["--negatives", str(negatives), "--dtype", dtype]
    if symmetric:
        command.append("--symmetric")
    if max_gib is not None:
        command += ["--max-gib", str(max_gib)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "error": f"exit code {result.returncode}: {tail[:200]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None = None, losses: Sequence[str] = LOSSES) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=list(losses), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--negatives", type=int, default=0)
    parser.add_argument("--symmetric", action="store_true")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--max-gib", type=float, default=None, help="address-space cap (RLIMIT_AS) in GiB")
    return parser.parse_args(argv)


def measure_args(args: argparse.Namespace, loss_fn: Any) -> dict[str, Any]:
    """Apply ``--max-gib`` and measure ``loss_fn`` at the parsed size; the JSON-ready result."""
    if args.max_gib is not None:
        import resource

        cap = int(args.max_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    settings = {("impl" if key == "loss" else key): value for key, value in vars(args).items()}
    # The measured loss value goes under "loss", the implementation's name under "impl".
    dtype = DTYPES[args.dtype]
    return {**settings, **measure_loss_memory(loss_fn, args.batch, args.dim, args.negatives, dtype=dtype)}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure_args(args, make_loss(args.loss, symmetric=args.symmetric))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
