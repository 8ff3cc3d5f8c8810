"""MNRPlus vs sentence-transformers' MultipleNegativesRankingLoss: loss-only forward + backward on embeddings.

Groups (our loss beside the ST original in the same run, parametrized by batch size, dimension and number of
hard-negative columns):

* ``loss-...``: query_to_doc (MNRL's default). At 0 negative columns it also times ``infcl_mnr_loss``, the
  Inf-CL-style variant that recomputes tiles in backward, against which the fused kernel MNRPlus uses was chosen.
* ``symmetric-...``: ``MNRPlus(symmetric=True)`` (both directions from the same tiles) vs MNRL with
  ``directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"``.

Memory is peak RSS of a fresh subprocess minus its RSS once the inputs exist (``test_peak_extra_memory``); MNRL
runs there under an address-space cap so that sizes it cannot fit fail cleanly. One size in a fresh process:
``python benchmarks/bench_loss.py --loss mnrl --batch 16384 --dim 768 --negatives 1`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from st_mnr_plus.callbacks import peak_rss_mib

GIB = 1024**3
SIZES = [
    pytest.param(256, id="B256"),
    pytest.param(1024, id="B1024", marks=pytest.mark.large),
    pytest.param(4096, id="B4096", marks=pytest.mark.large),
    pytest.param(16384, id="B16384", marks=pytest.mark.large),
]
DIMS = [pytest.param(384, id="d384"), pytest.param(768, id="d768")]
NEGATIVES = [pytest.param(0, id="neg0"), pytest.param(1, id="neg1")]


def make_loss(name: str, symmetric: bool = False) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """A callable from embedding columns to the scalar loss."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from st_mnr_plus.losses import MNRPlus
    from st_mnr_plus.losses.functional import infcl_mnr_loss

    if name == "mnrl":
        kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
        module = MultipleNegativesRankingLoss(None, **(kwargs if symmetric else {}))
        return lambda embeddings: module.compute_loss_from_embeddings(embeddings, None)
    if name == "mnr_plus":
        module = MNRPlus(None, symmetric=symmetric)
        return lambda embeddings: module.compute_loss_from_embeddings(embeddings, None)
    if name == "mnr_plus_infcl":
        if symmetric:
            raise ValueError("mnr_plus_infcl has no symmetric variant")
        return lambda embeddings: infcl_mnr_loss(embeddings[0], torch.cat(embeddings[1:]), 20.0)
    raise ValueError(f"loss must be 'mnrl', 'mnr_plus' or 'mnr_plus_infcl', got {name!r}")


def make_embeddings(batch: int, dim: int, negatives: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator).requires_grad_() for _ in range(2 + negatives)]


def step(loss_fn: Callable[[list[torch.Tensor]], torch.Tensor], embeddings: list[torch.Tensor]) -> float:
    loss = loss_fn(embeddings)
    loss.backward()
    return float(loss.detach())


def _setup(batch: int, dim: int, negatives: int):
    def setup():
        return (make_embeddings(batch, dim, negatives),), {}

    return setup


def _rounds(batch: int) -> int:
    # MNRL at B=16,384, d=768 takes 15-35 s a call on the 2-core dev VM: few rounds at the big sizes.
    return 5 if batch <= 1024 else 2 if batch <= 4096 else 1


@pytest.mark.parametrize("negatives", NEGATIVES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("loss", ["mnrl", "mnr_plus", "mnr_plus_infcl"])
def test_loss_forward_backward(benchmark, loss, batch, dim, negatives):
    if loss == "mnr_plus_infcl" and negatives:
        pytest.skip("the Inf-CL variant is timed on the 0-negative pool only")
    benchmark.group = f"loss-B{batch}-d{dim}-neg{negatives}"
    loss_fn = make_loss(loss)
    value = benchmark.pedantic(
        lambda embeddings: step(loss_fn, embeddings), setup=_setup(batch, dim, negatives), rounds=_rounds(batch)
    )
    assert torch.isfinite(torch.tensor(value))
    assert value > 0


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("loss", ["mnrl", "mnr_plus"])
def test_symmetric_forward_backward(benchmark, loss, batch, dim):
    benchmark.group = f"symmetric-B{batch}-d{dim}"
    loss_fn = make_loss(loss, symmetric=True)
    value = benchmark.pedantic(
        lambda embeddings: step(loss_fn, embeddings), setup=_setup(batch, dim, 0), rounds=_rounds(batch)
    )
    assert torch.isfinite(torch.tensor(value))


# ----------------------------------------------------------------------------------------------- memory


def _current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def measure(loss: str, batch: int, dim: int, negatives: int, symmetric: bool = False) -> dict[str, object]:
    """One forward + backward in this process: seconds and peak RSS above the RSS once the inputs exist."""
    loss_fn = make_loss(loss, symmetric=symmetric)
    warm = make_embeddings(8, dim, negatives)
    step(loss_fn, warm)  # load kernels and allocator pools before the baseline
    embeddings = make_embeddings(batch, dim, negatives)
    for e in embeddings:  # the gradients are inputs' memory too, not the loss's
        e.grad = torch.zeros_like(e)
    baseline = _current_rss()
    start = time.perf_counter()
    try:
        value = step(loss_fn, embeddings)
    except (MemoryError, RuntimeError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    seconds = time.perf_counter() - start
    peak = peak_rss_mib() * 2**20  # VmHWM: ru_maxrss would carry the parent pytest's peak over exec
    return {"ok": True, "loss": value, "seconds": seconds, "peak_extra_gib": max(peak - baseline, 0) / GIB}


def run_in_subprocess(
    loss: str, batch: int, dim: int, negatives: int, symmetric: bool = False, max_gib: float | None = None
) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__).resolve()), "--loss", loss, "--batch", str(batch)]
    command += ["--dim", str(dim), "--negatives", str(negatives)]
    if symmetric:
        command.append("--symmetric")
    if max_gib is not None:
        command += ["--max-gib", str(max_gib)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "error": f"exit code {result.returncode}: {tail[:200]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


MEMORY_SIZES = [
    pytest.param(256, 384, 0, id="B256-d384-neg0"),
    pytest.param(16384, 768, 0, id="B16384-d768-neg0", marks=pytest.mark.large),
    pytest.param(16384, 768, 1, id="B16384-d768-neg1", marks=pytest.mark.large),
]


@pytest.mark.parametrize(("batch", "dim", "negatives"), MEMORY_SIZES)
def test_peak_extra_memory(benchmark, batch, dim, negatives):
    """MNRPlus's and MNRL's peak extra memory, each in a fresh subprocess (recorded in ``extra_info``)."""
    benchmark.group = f"memory-B{batch}-d{dim}-neg{negatives}"
    results = benchmark.pedantic(
        lambda: {loss: run_in_subprocess(loss, batch, dim, negatives) for loss in ("mnrl", "mnr_plus")}, rounds=1
    )
    benchmark.extra_info.update(results)
    assert results["mnrl"]["ok"], results["mnrl"]
    assert results["mnr_plus"]["ok"], results["mnr_plus"]
    torch.testing.assert_close(results["mnr_plus"]["loss"], results["mnrl"]["loss"], rtol=1e-4, atol=1e-4)


@pytest.mark.large
def test_b65536_mnr_plus_fits_where_mnrl_fails(benchmark):
    """B = 65,536, d = 768, one negative column: MNRL under a 10 GiB address-space cap, MNRPlus free."""
    benchmark.group = "memory-B65536-d768-neg1"
    results = benchmark.pedantic(
        lambda: {
            "mnrl": run_in_subprocess("mnrl", 65536, 768, 1, max_gib=10),
            "mnr_plus": run_in_subprocess("mnr_plus", 65536, 768, 1, max_gib=10),
        },
        rounds=1,
    )
    benchmark.extra_info.update(results)
    assert results["mnr_plus"]["ok"], results["mnr_plus"]
    assert results["mnr_plus"]["peak_extra_gib"] < 2.0
    assert not results["mnrl"]["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=["mnrl", "mnr_plus", "mnr_plus_infcl"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--negatives", type=int, default=0)
    parser.add_argument("--symmetric", action="store_true")
    parser.add_argument("--max-gib", type=float, default=None, help="address-space cap (RLIMIT_AS) in GiB")
    args = parser.parse_args()
    if args.max_gib is not None:
        cap = int(args.max_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    settings = {("impl" if key == "loss" else key): value for key, value in vars(args).items()}
    # The measured loss value stays under "loss"; the implementation's name goes under "impl".
    result = {**settings, **measure(args.loss, args.batch, args.dim, args.negatives, args.symmetric)}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
