"""MNRPlus vs sentence-transformers' MultipleNegativesRankingLoss: loss-only forward + backward on embeddings.

Groups (our loss beside the ST original in the same run, parametrized by batch size, dimension and number of
hard-negative columns):

* ``loss-...``: query_to_doc (MNRL's default). At 0 negative columns it also times ``infcl_mnr_loss``
  (``benchmarks/_infcl.py``), the Inf-CL-style variant that recomputes tiles in backward, against which the fused
  kernel MNRPlus uses was chosen.
* ``symmetric-...``: ``MNRPlus(symmetric=True)`` (both directions from the same tiles) vs MNRL with
  ``directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"``.

Memory is peak RSS of a fresh subprocess minus its RSS once the inputs exist (``test_peak_extra_memory``); MNRL
runs there under an address-space cap so that sizes it cannot fit fail cleanly. One size in a fresh process:
``python benchmarks/bench_loss.py --loss mnrl --batch 16384 --dim 768 --negatives 1`` prints one JSON line.

The workloads (losses, embeddings, the timed step, the fresh-process measurement) are those of the installed
``st-mnr-plus bench`` (:mod:`st_mnr_plus.bench.workloads`, :mod:`st_mnr_plus.bench.fresh`); this file is their
pytest-benchmark front-end, plus the Inf-CL variant, which is not in the library.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _infcl import infcl_mnr_loss
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus.bench import fresh
from st_mnr_plus.bench.workloads import loss_step as step
from st_mnr_plus.bench.workloads import make_embeddings
from st_mnr_plus.bench.workloads import make_loss as package_make_loss

GIB = 1024**3
SIZES = [
    pytest.param(256, id="B256"),
    pytest.param(1024, id="B1024", marks=pytest.mark.large),
    pytest.param(4096, id="B4096", marks=pytest.mark.large),
    pytest.param(16384, id="B16384", marks=pytest.mark.large),
]
DIMS = [pytest.param(384, id="d384"), pytest.param(768, id="d768")]
NEGATIVES = [pytest.param(0, id="neg0"), pytest.param(1, id="neg1")]


LOSS_NAMES = ("mnrl", "mnr_plus", "mnr_plus_infcl")


def make_loss(name: str, symmetric: bool = False) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """A callable from embedding columns to the scalar loss: the package's two, plus the Inf-CL variant."""
    if name == "mnr_plus_infcl":
        if symmetric:
            raise ValueError("mnr_plus_infcl has no symmetric variant")
        return lambda embeddings: infcl_mnr_loss(embeddings[0], torch.cat(embeddings[1:]), 20.0)
    return package_make_loss(name, symmetric=symmetric)


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


def run_in_subprocess(
    loss: str, batch: int, dim: int, negatives: int, symmetric: bool = False, max_gib: float | None = None
) -> dict[str, object]:
    """The package's fresh-process measurement, through this file's entry point (which knows the Inf-CL loss)."""
    entry = (str(Path(__file__).resolve()),)
    return fresh.run_fresh(loss, batch, dim, negatives, symmetric=symmetric, max_gib=max_gib, entry=entry)


MEMORY_SIZES = [
    pytest.param(256, 384, 0, id="B256-d384-neg0", marks=pytest.mark.slow),  # two fresh processes: ~15 s
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


def test_infcl_variant_matches_mnrl() -> None:
    """The Inf-CL variant computes MNRL's loss and gradients, so that timing it compares like with like."""
    embeddings = make_embeddings(9, 16, 1, seed=13)
    expected = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    expected_grads = torch.autograd.grad(expected, embeddings)
    leaves = [e.detach().clone().requires_grad_() for e in embeddings]
    actual = infcl_mnr_loss(leaves[0], torch.cat(leaves[1:]), 20.0, tile_cols=4)  # several tiles
    actual.backward()
    torch.testing.assert_close(actual, expected, rtol=1.3e-6, atol=1e-5)
    for k, (leaf, want) in enumerate(zip(leaves, expected_grads, strict=True)):
        torch.testing.assert_close(leaf.grad, want, rtol=1.3e-6, atol=1e-5, msg=lambda m, k=k: f"column {k}: {m}")


def main() -> None:
    args = fresh.parse_args(losses=LOSS_NAMES)
    result = fresh.measure_args(args, make_loss(args.loss, symmetric=args.symmetric))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
