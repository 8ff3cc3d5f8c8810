"""The GPU path's gradients in bf16 against float64 and against MNRL under the same autocast (issue 27):
``benchmarks/precision.py`` at a size the default suite runs in a few seconds.

The kernels run in Triton's interpreter on CPU tensors (``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` without a
GPU), the products as float32 matmuls of bf16-rounded operands: the GPU path's arithmetic. At B=64, d=64 the
errors are of the same order as at the benchmark's B=256, d=384 (its table in ``benchmarks/README.md``), and every
aim of the issue holds.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

from benchmarks import precision

SIZE = {"batch": 64, "dim": 64}
# The comparison is MNRL under the same autocast: bf16 embeddings and fp32 ones under bf16 autocast. (bf16
# embeddings without autocast are not compared: MNRL's cos_sim converts them to float32 and takes float32
# products, which ours trades for the tensor cores.)
SETTINGS = ["bf16, autocast", "fp32, autocast"]


@pytest.mark.parametrize("regime", list(precision.TARGETS))
@pytest.mark.parametrize("setting", SETTINGS)
def test_the_gpu_path_is_within_the_aims_and_no_worse_than_mnrl(setting, regime):
    # One run of ours per cell: the learnable scale's, whose embedding gradients are bit-identical to a fixed
    # scale's at 20 (the benchmark runs both).
    errors = precision.measure(setting, regime, seed=0, **SIZE, fixed_scale=False)
    target = precision.TARGETS[regime]
    if target is not None:  # the rows are in the regime they are named after
        assert target / 3 < errors["one_minus_p_pos"] < target * 3, errors["one_minus_p_pos"]
    ours, mnrl, aim = errors["ours"], errors["mnrl"], precision.AIMS[regime]
    # No slack: at this size ours is at least twice as precise as MNRL in every cell (0.3-0.4x on random rows, 0.01x
    # on confident and saturated ones, where MNRL's bf16 p_pos - 1 is lost).
    assert ours["embeddings"] <= mnrl["embeddings"], f"ours {ours['per_input']}, MNRL {mnrl['per_input']}"
    assert ours["embeddings"] <= aim, f"embedding gradients {ours['per_input']} above the aim {aim}"
    assert ours["scale"] <= aim, f"scale gradient {ours['scale']:.2e} above the aim {aim}"
