"""The GPU path's rules in plain Python: product dtype, chunk size, kernel blocks and cost.

:func:`product_dtype` is the one place that decides in which dtype the loss's matrix products run, on the CPU
path and the GPU path, under autocast or not. :func:`chunk_rows` picks the rows of a chunk from a memory budget.
:data:`ELEMENTWISE_BLOCKS` are the blocks of the element-wise kernels of :mod:`.kernels` (the launchers use them,
and :mod:`.kernel_build` compiles them). :func:`cost` counts the matrix products, their FLOPs and the bytes the
element-wise passes move in one forward + backward of the GPU path (``benchmarks/roofline.py`` reads it; the
tests check it against counted products and traced bytes). Nothing here needs triton or a GPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HALF_DTYPES = (torch.bfloat16, torch.float16)

#: The default memory budget of one chunk's similarities (float32 ``S``, with ``G`` written over it): 64 MiB, and
#: never fewer rows than :data:`MIN_CHUNK_ROWS`. At B = 16,384 that is chunks of 1,024 rows, at 65,536 too.
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: Rows below which a chunk's ``G^T X`` product, which reads and writes the float32 gradient of every candidate
#: once per chunk (``8 * N * d`` bytes for ``2 * R * N * d`` FLOPs), waits on memory rather than on the tensor
#: cores: ``R >= 4 * FLOPS / bandwidth``, 850 rows at 65% of an H100's bf16 peak and 90% of its bandwidth, 440 on
#: an A100 (``benchmarks/roofline.py``).
MIN_CHUNK_ROWS = 1024

#: The hardness modes as the kernels' ``PENALTY`` constexpr (see :mod:`.kernels`).
PENALTY_CODES = {None: 0, "in_batch_negatives": 1, "all_negatives": 2, "hard_negatives": 3}


class Blocks(NamedTuple):
    """Blocks and launch options of one element-wise kernel: ``BM`` rows by ``BN`` columns per step."""

    BM: int
    BN: int
    num_warps: int


#: One configuration per kernel, for every dtype: the kernels read float32 similarities whatever the products'
#: dtype (only ``probabilities`` writes that dtype), so the dtype changes one store, not the blocks. 8 rows share
#: each (BN,) load of the columns' identities (1 byte per logit of int64 identities, not 8); 8 x 128 entries per
#: step at 8 warps, 4 per thread: 32-121 registers a thread on sm_90 (``st-mnr-plus kernels``), where 8 x 256 at 4
#: warps took 168-248 and left two blocks of 4 warps per SM for kernels that live on memory bandwidth.
ELEMENTWISE_BLOCKS: dict[str, Blocks] = {
    "row_lse": Blocks(BM=8, BN=128, num_warps=8),
    "column_lse": Blocks(BM=8, BN=128, num_warps=8),
    "probabilities": Blocks(BM=8, BN=128, num_warps=8),
}


# ---- the product dtype --------------------------------------------------------------------------------------------


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force on ``device_type``, or ``None`` when autocast is off there."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return None
    getter = getattr(torch, "get_autocast_dtype", None)
    if getter is not None:
        return getter(device_type)
    return torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.get_autocast_cpu_dtype()


def product_dtype(device_type: str, dtype: torch.dtype, *, gpu_path: bool) -> torch.dtype:
    """The dtype of the operands of the loss's matrix products (their output and every accumulation: float32).

    - The PyTorch tile path (``gpu_path=False``): float32 (float64 for float64 embeddings), autocast or not. On a
      CPU, 16-bit products are slower than float32 ones without AMX.
    - The GPU path: under autocast on the embeddings' device, the autocast dtype (bfloat16 or float16), as
      MNRL's ``cos_sim`` takes it; otherwise the embeddings' own dtype: 16-bit embeddings run on the tensor cores,
      float32 ones in float32, where cuBLAS follows ``torch.backends.cuda.matmul`` (TF32 only where it is
      allowed). On CPU tensors (Triton's interpreter) the same rule reads the CPU autocast state.

    Called where the loss is called, before it turns autocast off for its own arithmetic.
    """
    if dtype == torch.float64:
        return torch.float64
    if not gpu_path:
        return torch.float32
    autocast = _autocast_dtype(device_type)
    if autocast is not None:
        return autocast
    return dtype if dtype in FLOAT_DTYPES else torch.float32


def chunk_rows(rows: int, bytes_per_row: int, budget: int = DEFAULT_CHUNK_BYTES, tile_size: int | None = None) -> int:
    """Rows per chunk: ``tile_size`` when given, else as many as ``budget`` bytes hold but at least
    :data:`MIN_CHUNK_ROWS` (and at most ``rows``)."""
    if tile_size is not None:
        return max(1, min(tile_size, rows))
    return max(1, min(rows, max(budget // max(bytes_per_row, 1), MIN_CHUNK_ROWS)))


def matmul_allows_tf32() -> bool:
    """Whether PyTorch's fp32 CUDA matmuls may use TF32: ``torch.backends.cuda.matmul.fp32_precision == "tf32"``
    where PyTorch has it, else ``torch.backends.cuda.matmul.allow_tf32``. Both are off by default."""
    matmul = torch.backends.cuda.matmul
    fp32_precision = getattr(matmul, "fp32_precision", None)
    if fp32_precision is not None:
        return fp32_precision == "tf32"
    return bool(matmul.allow_tf32)


# ---- costs -------------------------------------------------------------------------------------------------------


def cost(
    batch: int,
    negatives: int,
    dim: int,
    dtype: torch.dtype,
    *,
    doc_to_query: bool = False,
    own: bool = False,
    gathered: bool = False,
) -> dict:
    """Matrix products, FLOPs and element-wise bytes of one forward and backward of the GPU path, all on one rank
    (``W = L = batch``), counted from the launches :mod:`.chunked` makes (pure Python: no launch, no GPU).

    Per direction scored by rows, the products are three, each ``2 * L * N * d`` FLOPs: the similarities ``S = X
    Y^T``, then ``G Y`` and ``G^T X`` with ``G`` the gradient of the logits; own hard negatives add three
    row-wise products of ``2 * L * n * d`` (``row_wise_flops``, not matrix products: O(B d)). doc_to_query without gathering is read down the columns of the
    query_to_doc similarities, whose normalisers are only known after every chunk: the similarities are computed
    again in a second pass, one product more (four); ``gathered``, it is scored by rows (three more, of ``L x W``).

    Element-wise bytes per chunk of ``R`` rows (the comments above the kernels): ``row_lse`` reads ``S`` (4 per
    logit) and the columns' identities once per ``BM`` rows (8 / 8 = 1), ``probabilities`` reads them too and
    writes ``G`` (4 + 1 + ``s``, ``s`` the products' itemsize), the column pass reads the positives' block once
    more (4) and ``probabilities`` then the columns' identities, thresholds and normalisers (16 / 8 = 2); the
    products write ``S`` (4 per logit, counted apart as ``product_output_bytes``). Per-row vectors are left out
    (a few bytes per row, nothing per logit).

    Args:
        batch: Anchors ``W``.
        negatives: Hard-negative columns ``n``.
        dim: Features ``d``.
        dtype: The products' dtype (:func:`product_dtype`).
        doc_to_query: Also the doc_to_query direction.
        own: ``hard_negatives="own"``.
        gathered: Candidates gathered across ranks (doc_to_query then scored by rows).

    Returns:
        ``gemm_equivalents``: matrix-product FLOPs in units of one ``(batch, dim) x (dim, batch * (1 + negatives))`` product
        (MNRL does 3); ``flops``; ``logits``: the dense logits of query_to_doc; ``elementwise_bytes`` and
        ``product_output_bytes`` with their ``..._per_logit`` ratios; ``products``: the list of ``(name, rows,
        columns, inner)`` of every product, in order.
    """
    if batch < 1 or negatives < 0 or dim < 1:
        raise ValueError(f"batch >= 1, negatives >= 0 and dim >= 1 needed, got {batch}, {negatives}, {dim}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    s = dtype.itemsize
    L, W = batch, batch
    N = W if own and negatives else W * (1 + negatives)
    n_own = negatives if own else 0
    products: list[tuple[str, int, int, int]] = []
    elementwise = output = 0
    columns_read = doc_to_query and not gathered
    passes = 2 if columns_read else 1
    rows_per_load = ELEMENTWISE_BLOCKS["row_lse"].BM  # rows that share one (BN,) load of the columns' identities
    ids = 8 * L * N / rows_per_load
    for index in range(passes):
        products.append(("query_to_doc/similarities", L, N, dim))
        output += 4 * L * N
        if index == 0:
            elementwise += 4 * L * (N + n_own) + ids  # row_lse
            if columns_read:
                elementwise += 4 * L * W + 8 * L * W / ELEMENTWISE_BLOCKS["column_lse"].BN  # column_lse
    elementwise += 4 * L * (N + n_own) + s * L * N + 4 * L * n_own + ids  # probabilities
    if columns_read:  # the columns' identities, thresholds and normalisers, once per 8 rows
        elementwise += 16 * L * W / ELEMENTWISE_BLOCKS["probabilities"].BM
    products += [("query_to_doc/rows", L, dim, N), ("query_to_doc/columns", N, dim, L)]
    if doc_to_query and gathered:
        products += [("doc_to_query/" + name, L, W, dim) for name in ("similarities", "rows", "columns")]
        output += 4 * L * W
        elementwise += 4 * L * W * 2 + s * L * W
    flops = sum(2 * a * b * c for _, a, b, c in products)
    row_wise = 3 * 2 * L * n_own * dim  # own negatives: scored, then multiplied into both sides, row by row
    logits = L * N + L * n_own
    return {
        "flops": flops,
        "row_wise_flops": row_wise,
        "gemm_equivalents": flops / (2 * batch * batch * (1 + negatives) * dim),
        "logits": logits,
        "elementwise_bytes": elementwise,
        "elementwise_bytes_per_logit": elementwise / logits,
        "product_output_bytes": output,
        "product_output_bytes_per_logit": output / logits,
        "products": products,
    }
