"""The GPU path counted, not assumed: its matrix products, its element-wise bytes, the dtype its products take
under autocast, and its chunks.

``backend="triton"`` on CPU tensors runs the GPU path's own code in Triton's interpreter (tests/conftest.py sets
``TRITON_INTERPRET=1``): its kernels interpreted, its products as CPU matmuls. :mod:`st_mnr_plus.bench.trace`
counts the products with ``FlopCounterMode`` plus the interpreter's dots, and the bytes of every element-wise op
and kernel load/store; sentence-transformers' MNRL is traced the same way, under the same autocast.
"""

from __future__ import annotations

import os

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus.bench.trace import bytes_per_logit, peak_bytes, trace
from st_mnr_plus.losses import MNRPlus, kernel_config
from st_mnr_plus.losses.functional import MNRSpec, mnr_plus_loss

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("counts the GPU path in Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)
from st_mnr_plus.losses import chunked

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (options, hard-negative columns, the bound on product-equivalents)
LAYOUTS = {
    "q2d": ({}, 0, 3),
    "q2d-shared-1neg": ({}, 1, 3),
    "q2d-own-2neg": ({"hard_negatives": "own"}, 2, 3),
    "symmetric": ({"symmetric": True}, 0, 4),
    "symmetric-shared-1neg": ({"symmetric": True}, 1, 4),
}


def _embeddings(batch: int, columns: int, dim: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=gen).to(dtype).requires_grad_() for _ in range(columns)]


def _ours(embeddings, **options) -> torch.Tensor:
    loss_fn = MNRPlus(None, backend="triton", mask_duplicates=False, **options)
    loss = loss_fn.compute_loss_from_embeddings(embeddings, None)
    loss.backward()
    return loss


def _mnrl(embeddings) -> torch.Tensor:
    loss = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    loss.backward()
    return loss


# query_to_doc and symmetric at both sizes and dtypes; the hard-negative layouts once each (their count does not
# depend on d or the dtype: the same launches).
COUNTED = [
    *((layout, dtype, dim) for layout in ("q2d", "symmetric") for dtype in DTYPES for dim in (384, 768)),
    *((layout, "bf16", 384) for layout in ("q2d-shared-1neg", "q2d-own-2neg")),
]


@pytest.mark.parametrize(("layout", "dtype", "dim"), COUNTED)
def test_products_are_at_most_three_or_four_b_b_d_equivalents(layout, dtype, dim, one_thread):
    options, negatives, bound = LAYOUTS[layout]
    batch = 64  # the count is exact at any size: small keeps the interpreter quick
    embeddings = _embeddings(batch, 2 + negatives, dim, DTYPES[dtype])
    counted = trace(lambda: _ours(embeddings, **options))
    unit = 2 * batch * batch * (1 + negatives) * dim
    assert counted.kernel_dot_flops == 0  # every product runs on cuBLAS
    equivalents = counted.product_flops / unit
    assert equivalents <= bound, f"{equivalents:.2f} product-equivalents, over {bound}"
    symmetric = options.get("symmetric", False)
    model = kernel_config.cost(batch, negatives, dim, DTYPES[dtype], doc_to_query=symmetric, own="own" in str(options))
    assert counted.product_flops == model["flops"]  # the cost model is the count
    # Row-wise products: the positives' dots, the normalisation's projection, own negatives (O(B d), not B x B).
    rows = batch * (2 + negatives)
    assert model["row_wise_flops"] <= counted.row_wise_flops <= model["row_wise_flops"] + 8 * rows * dim
    assert all(e.grad.abs().max() > 0 for e in embeddings)


def test_mnrl_does_three_products_counted_the_same_way(one_thread):
    """The yardstick: the same counter gives sentence-transformers' MNRL three B x B x d products."""
    batch, dim = 256, 384
    counted = trace(lambda: _mnrl(_embeddings(batch, 2, dim, torch.float32)))
    assert counted.product_flops / (2 * batch * batch * dim) == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize(("layout", "bound"), [("q2d", 16), ("symmetric", 32)])
def test_element_wise_bytes_per_logit_are_within_the_bound_and_below_mnrl_under_autocast(layout, bound, one_thread):
    """The B x B part of the traffic, traced at B = 128 and 256 (``bytes_per_logit``), under bf16 autocast with
    float32 embeddings: the kernels read S twice (4 + 4 bytes), write G (2) and read the columns' identities once
    per 8 rows (1 + 1): 12; symmetric adds the column pass (4 + identities): 18."""
    options = LAYOUTS[layout][0]

    def run(loss):
        def at(batch):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss(_embeddings(batch, 2, 16, torch.float32))

        return at

    ours = bytes_per_logit(run(lambda e: _ours(e, **options)))
    assert ours <= bound
    model = kernel_config.cost(128, 0, 16, torch.bfloat16, doc_to_query="symmetric" in layout)
    assert ours == pytest.approx(model["elementwise_bytes_per_logit"], abs=0.25)  # the model is the trace
    assert bytes_per_logit(run(_mnrl)) > 2 * ours


def _recording_products(monkeypatch) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for name in ("_mm", "_addmm_"):
        original = getattr(chunked, name)

        def record(*args, _original=original):
            seen.extend(t.dtype for t in args[-2:])
            return _original(*args)

        monkeypatch.setattr(chunked, name, record)
    return seen


@pytest.mark.parametrize(
    ("autocast", "embeddings", "want"),
    [
        (torch.bfloat16, torch.float32, torch.bfloat16),
        (torch.float16, torch.float32, torch.float16),
        (None, torch.bfloat16, torch.bfloat16),
        (None, torch.float32, torch.float32),
    ],
    ids=["fp32-under-bf16-autocast", "fp32-under-fp16-autocast", "bf16", "fp32"],
)
def test_the_products_take_the_autocast_dtype_or_the_embeddings(monkeypatch, autocast, embeddings, want, one_thread):
    seen = _recording_products(monkeypatch)
    inputs = _embeddings(16, 2, 32, embeddings)
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        _ours(inputs)
    assert seen
    assert set(seen) == {want}
    assert kernel_config.product_dtype("cpu", embeddings, gpu_path=True) == embeddings  # outside autocast


def test_the_cpu_path_keeps_float32_products_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernel_config.product_dtype("cpu", torch.float32, gpu_path=False) == torch.float32
        assert kernel_config.product_dtype("cpu", torch.bfloat16, gpu_path=False) == torch.float32
        assert kernel_config.product_dtype("cpu", torch.float32, gpu_path=True) == torch.bfloat16
        assert kernel_config.product_dtype("cpu", torch.float64, gpu_path=True) == torch.float64


def test_under_bf16_autocast_the_loss_differs_from_float32_by_the_rounding_of_bf16_operands(one_thread):
    queries, positives = _embeddings(64, 2, 48, torch.float32, seed=3)
    spec = MNRSpec.of(64, backend="triton")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = mnr_plus_loss(queries, positives, 20.0, spec, "cos")
    exact, _ = mnr_plus_loss(queries, positives, 20.0, spec, "cos")
    # The same loss in float32 from the bf16-rounded normalised embeddings: what autocast should compute.
    rounded = [
        torch.nn.functional.normalize(e.detach(), dim=1).to(torch.bfloat16).float() for e in (queries, positives)
    ]
    emulated, _ = mnr_plus_loss(*rounded, 20.0, spec, "dot")
    torch.testing.assert_close(mixed, emulated, rtol=1.3e-6, atol=1e-5)
    difference = (mixed - exact).abs().item()
    assert 0 < difference < 20.0 * 2**-8  # at most the scale times bf16's relative rounding of a similarity


@pytest.mark.parametrize("tile_size", [1, 4, 5])
@pytest.mark.parametrize("options", [{}, {"symmetric": True}, {"hard_negatives": "own", "symmetric": True}],
                         ids=["q2d", "symmetric", "own-symmetric"])  # fmt: skip
def test_ragged_chunks_give_the_result_of_one_chunk(options, tile_size, one_thread):
    embeddings = _embeddings(13, 3, 16, torch.float32, seed=5)
    results = []
    for size in (None, tile_size):
        leaves = [e.detach().clone().requires_grad_() for e in embeddings]
        loss = _ours(leaves, tile_size=size, **options)
        results.append((loss.detach(), [leaf.grad for leaf in leaves]))
    (one, one_grads), (many, many_grads) = results
    torch.testing.assert_close(many, one, rtol=2e-6, atol=2e-6)
    for got, want in zip(many_grads, one_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-7)


def test_chunks_are_sized_from_the_memory_budget():
    assert kernel_config.chunk_rows(16_384, 16_384 * 4) == 1024  # 64 MiB of S (fp32), G written over it
    assert kernel_config.chunk_rows(8_192, 8_192 * 4) == 2048
    assert kernel_config.chunk_rows(65_536, 65_536 * 4) == 1024  # the floor: 256 rows would wait on memory
    assert kernel_config.chunk_rows(7, 10) == 7
    assert kernel_config.chunk_rows(5000, 10**12) == 1024
    assert kernel_config.chunk_rows(100, 10, tile_size=8) == 8


@pytest.mark.parametrize(("batch", "dim", "rows"), [(192, 96, 48)], ids=["4-chunks"])
def test_peak_memory_is_one_chunk_plus_the_gradients_operands_and_candidates(batch, dim, rows, one_thread):
    """What benchmarks/roofline.py's memory model of the GPU path says, measured: one chunk of float32
    similarities (G written over them), float32 gradients and 16-bit operands of both sides, and at most 4,096
    float32 rows of the projection, under bf16 autocast with float32 embeddings (pairs: the module passes the
    positives on without a copy)."""
    embeddings = _embeddings(batch, 2, dim, torch.float32)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _ours(embeddings, tile_size=rows)

    chunk = rows * batch * 4
    # + the float32 rows the projection through the normalisation makes, 4,096 at a time, and per-row vectors.
    model = chunk + 2 * batch * dim * (4 + 2) + min(4096, 2 * batch) * dim * 4 + 64 * batch
    measured = peak_bytes(step)
    assert chunk < measured <= model
