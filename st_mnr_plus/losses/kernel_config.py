"""Block sizes, precision and cost of the fused MNR kernels (:mod:`.kernels`), in plain Python.

:func:`block_config` is the one place that picks the tiles of each kernel for a dtype and a feature size: the
launchers use it, and so does :mod:`.kernel_build`, so the compile check covers every configuration they launch.
:func:`cost` counts the FLOPs and bytes of one forward + backward for the configuration picked, after the cost
comments above the kernels (``benchmarks/roofline.py`` reads it). :func:`precision` maps PyTorch's matmul flag to
``tl.dot``'s ``input_precision``. Nothing here needs triton or a GPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: The kernels, by the names :func:`block_config` gives their blocks under (the order of :mod:`.kernels`).
KERNEL_NAMES = ("forward", "backward_rows", "backward_columns")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Blocks(NamedTuple):
    """Tile sizes and launch options of one kernel."""

    BM: int  # anchor rows per tile (owned by the program in the forward and the backward by rows)
    BN: int  # columns per tile (owned by the program in the backward by columns)
    BK: int  # features per step of a similarity tile
    num_warps: int
    num_stages: int
    BD: int | None = None  # backward only: output features per program, a power of two (padding masked)


class BlockConfig(NamedTuple):
    """The :class:`Blocks` of each kernel of :data:`KERNEL_NAMES` for one dtype and feature size."""

    forward: Blocks
    backward_rows: Blocks
    backward_columns: Blocks


_FORWARD = {
    "16-bit": Blocks(BM=64, BN=64, BK=64, num_warps=8, num_stages=2),
    "fp32": Blocks(BM=64, BN=32, BK=32, num_warps=8, num_stages=3),
}
# Backward blocks by accumulator width BD: (by rows, by columns). The program's own tile (BM by rows, BN by
# columns) shrinks as BD grows, so that its (own tile, BD) fp32 accumulator and the (streamed tile, BD) operand of
# each product fit in the registers; the streamed tile stays 64 (16-bit) or 32 (fp32) wide, a full row of tensor
# core tiles for the 8 warps. Each entry compiles with no local memory for sm_80 and sm_90 in every dtype and
# precision (``st-mnr-plus kernels``; neighbours such as BM = 32 for BD = 512 spill) and uses at most 70 KB of
# shared memory, under the 99 KB of sm_86 and sm_89. The narrowest entry is the configuration every d had before.
_BACKWARD = {
    "16-bit": {
        128: (Blocks(64, 64, 64, 8, 2, BD=128), Blocks(64, 64, 64, 8, 2, BD=128)),
        256: (Blocks(32, 64, 64, 8, 2, BD=256), Blocks(64, 32, 64, 8, 2, BD=256)),
        512: (Blocks(16, 64, 64, 8, 2, BD=512), Blocks(64, 16, 64, 8, 2, BD=512)),
    },
    "fp32": {
        64: (Blocks(64, 32, 32, 8, 3, BD=64), Blocks(64, 32, 32, 8, 3, BD=64)),
        128: (Blocks(32, 32, 32, 8, 3, BD=128), Blocks(64, 32, 16, 8, 3, BD=128)),
        256: (Blocks(32, 32, 32, 8, 3, BD=256), Blocks(64, 16, 32, 8, 3, BD=256)),
        512: (Blocks(16, 32, 32, 8, 3, BD=512), Blocks(32, 16, 32, 8, 2, BD=512)),
    },
}


def block_config(dtype: torch.dtype, d: int) -> BlockConfig:
    """The blocks the launchers use for inputs of ``dtype`` and feature size ``d``: the one place that decides
    them, so that :mod:`.kernel_build` compiles exactly the configurations that can be launched.

    The forward has one configuration per dtype family. The backward's blocks set its cost, ``cdiv(d, BD) + h``
    forwards per kernel (``h`` = 2 for 16-bit inputs, 1 for fp32): up to ``d = 512`` the accumulator holds every
    feature of its rows, ``BD`` = the next power of two >= ``d`` (at least 128 for 16-bit inputs, 64 for fp32), and
    each similarity tile is computed once (``1 + h``); beyond, ``BD = 512`` and ``cdiv(d, 512)`` programs share a
    row: two halves for ``512 < d <= 1024`` (``2 + h``), 8 blocks for 4096 (``8 + h``, where the narrowest blocks,
    ``BD = 128``, would do ``32 + h``, and read the similarity operands ``F * (T * N + L * cdiv(N, BN)) * d * s``
    with ``32 * (1 / 64 + 1 / 64)`` instead of ``8 * (1 / 16 + 1 / 64)`` times ``L * N * d * s``).

    Why two halves rather than one 1024-wide accumulator for ``512 < d <= 1024``: by rows, every tile tried spills
    on sm_80, sm_90 or both (16 rows against 64, 32 or 16 columns; bf16 and fp32). By columns a 1024-wide
    accumulator of 16 columns compiles (for bf16 against 64-row tiles with 132 KB of shared memory, over the 99 KB
    of sm_86 and sm_89), but alone it would save one forward of the nine at ``d = 768`` (seventeen with ``BD =
    128``) for one more configuration per dtype.

    The price of the wide accumulators is their 16-row (16-column) tiles, chosen by the cost comments alone,
    without a GPU timing yet. Each program streams every column (row) once for the similarities and once for the
    product, so the operands are read from L2 once per 16 rows instead of 64: by the cost comments, one forward and
    backward in bf16 moves 25% more bytes at ``d = 384``, 7% more at 768, as many at 512, 17% fewer at 1024 and 32%
    fewer at 4096, for 36%, 47%, 46%, 57% and 70% fewer matrix FLOPs (fp32, whose blocks were small already: 45%
    and 55% fewer bytes, 67% and 74% fewer FLOPs at 384 and 768). On sm_90 Triton runs 16-row tiles as
    ``mma.sync``, not ``wgmma``.
    """
    family = "fp32" if dtype == torch.float32 else "16-bit"
    widths = sorted(_BACKWARD[family])
    width = next((w for w in widths if w >= d), widths[-1])  # wider than the widest: cdiv(d, BD) programs per row
    rows, columns = _BACKWARD[family][width]
    return BlockConfig(_FORWARD[family], rows, columns)


# ---- costs -------------------------------------------------------------------------------------------------------


def _forward_cost(b: Blocks, L: int, N: int, n_own: int, d: int, s: int) -> tuple[int, int]:
    """``(FLOPs, bytes)`` of one forward launch: the comment above :func:`_mnr_forward_kernel`."""
    tiles = _cdiv(L, b.BM)
    flops = 2 * L * N * d + 2 * L * n_own * d
    operands = (tiles * N + L * _cdiv(N, b.BN)) * d * s + 2 * L * n_own * d * s
    return flops, operands + 8 * (tiles * N + L * (1 + n_own)) + 4 * L + 4 * tiles + 16 * L


def _backward_rows_cost(b: Blocks, L: int, N: int, n_own: int, d: int, s: int, h: int) -> tuple[int, int]:
    """``(FLOPs, bytes)`` of one launch of the backward by rows: the comment above its kernel."""
    tiles, f = _cdiv(L, b.BM), _cdiv(d, b.BD)
    flops = 2 * L * N * d * (f + h) + 2 * L * n_own * d * (f + 2)
    operands = f * (tiles * N + L * _cdiv(N, b.BN)) * d * s + tiles * N * d * s + 8 * L * d
    own = L * n_own * (f * (2 * d * s + 8) + d * (2 * s + 4))
    return flops, operands + f * (16 * L + 8 * tiles * N + 4 * tiles) + own


def _backward_columns_cost(b: Blocks, L: int, N: int, d: int, s: int, h: int) -> tuple[int, int]:
    """``(FLOPs, bytes)`` of one launch of the backward by columns: the comment above its kernel."""
    tiles, f = _cdiv(N, b.BN), _cdiv(d, b.BD)
    flops = 2 * L * N * d * (f + h)
    operands = f * (tiles * L + N * _cdiv(L, b.BM)) * d * s + tiles * L * d * s + 8 * N * d
    return flops, operands + f * (16 * tiles * L + 8 * N + 4 * tiles)


def cost(
    batch: int, negatives: int, dim: int, dtype: torch.dtype, *, doc_to_query: bool = False, own: bool = False
) -> dict:
    """FLOPs and bytes of one forward and backward of the whole loss on the kernels: every launch of
    :func:`mnr_forward` and :func:`mnr_backward`, with the blocks :func:`block_config` picks, by the formulas of the
    comments above the kernels (pure Python: no triton launch, no GPU).

    Args:
        batch: Anchors ``W``, all on one rank (``offset = 0``, ``local = W``).
        negatives: Hard-negative columns ``n``: the candidates are ``W * (1 + n)`` rows.
        dim: Features ``d``.
        dtype: The embeddings' dtype (float32, bfloat16 or float16).
        doc_to_query: Also the doc_to_query direction.
        own: ``hard_negatives="own"``: each anchor scores its own negatives only, row-wise.

    Returns:
        ``flops``: the matrix-product FLOPs on the real rows, columns and features (tensor cores, and the
        row-wise products of own negatives; padding lanes and the ~10 elementwise operations per logit are not
        counted). ``bytes``: what the kernels load and store (re-read operands mostly hit L2). ``gemm_equivalents``:
        ``flops`` in units of one ``(batch, dim) x (dim, batch * (1 + negatives))`` product (sentence-transformers'
        MNRL does 3: one forward, two backward). ``launches``: ``{"<kernel>/<direction>": {"flops",
        "bytes"}}`` in launch order.
    """
    if batch < 1 or negatives < 0 or dim < 1:
        raise ValueError(f"batch >= 1, negatives >= 0 and dim >= 1 needed, got {batch}, {negatives}, {dim}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    config, s = block_config(dtype, dim), dtype.itemsize
    h = 1 if dtype == torch.float32 else 2
    n_own = negatives if own else 0
    directions = {"query_to_doc": (batch if own else batch * (1 + negatives), n_own)}
    if doc_to_query:
        directions["doc_to_query"] = (batch, 0)
    launches = {}
    for name, (columns, own_columns) in directions.items():
        launches[f"forward/{name}"] = _forward_cost(config.forward, batch, columns, own_columns, dim, s)
    for name, (columns, own_columns) in directions.items():
        rows = _backward_rows_cost(config.backward_rows, batch, columns, own_columns, dim, s, h)
        launches[f"backward_rows/{name}"] = rows
        launches[f"backward_columns/{name}"] = _backward_columns_cost(
            config.backward_columns, batch, columns, dim, s, h
        )
    flops = sum(f for f, _ in launches.values())
    return {
        "flops": flops,
        "bytes": sum(b for _, b in launches.values()),
        "gemm_equivalents": flops / (2 * batch * batch * (1 + negatives) * dim),
        "launches": {name: {"flops": f, "bytes": b} for name, (f, b) in launches.items()},
    }


def precisions(dtype: torch.dtype) -> tuple[str, ...]:
    """Every ``input_precision`` the launchers may pass for ``dtype`` (see :func:`precision`)."""
    return ("ieee", "tf32") if dtype == torch.float32 else ("ieee",)


def matmul_allows_tf32() -> bool:
    """Whether PyTorch's fp32 matmuls may use TF32: ``torch.backends.cuda.matmul.fp32_precision == "tf32"`` where
    PyTorch has it (reading the legacy ``allow_tf32`` then raises once the new setting was used), else
    ``torch.backends.cuda.matmul.allow_tf32``. Both are False by default."""
    matmul = torch.backends.cuda.matmul
    fp32_precision = getattr(matmul, "fp32_precision", None)
    if fp32_precision is not None:
        return fp32_precision == "tf32"
    return bool(matmul.allow_tf32)


def precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision``: TF32 for fp32 inputs only where PyTorch's matmul allows it
    (:func:`matmul_allows_tf32`). Triton ignores it for 16-bit operands: they always get ``"ieee"`` (one compiled
    variant, not two)."""
    if dtype == torch.float32 and matmul_allows_tf32():
        return "tf32"
    return "ieee"
