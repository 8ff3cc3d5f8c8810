"""Fused Triton kernels of the MNR loss: nothing of size ``B x B`` is ever written to memory.

The technique is Inf-CL's (``inf_cl/flash.py``, after FlashAttention): the forward streams over tiles of columns
and keeps, per anchor row, a running maximum and a running sum of ``exp(logit - max)`` (rescaled whenever the
maximum grows), so it writes only ``(rows,)`` logsumexps. The backward recomputes every tile of similarities from
the inputs and the saved normalisers, and splits the gradient in two kernels so that one program owns each output
row (no atomics, so two runs are bit-identical): one by rows (FlashAttention's ``dq``), one by columns (``dk``).

Layout (sentence-transformers'): ``q`` is ``(W, d)``, ``c`` is ``(W * (1 + n), d)``: all positives, then each
hard-negative column, so that candidate ``k * W + j`` belongs to query ``j``. This rank's anchors are the ``local``
rows from ``offset``; local row ``r`` has global index ``g = offset + r`` and its positive is ``c[g]``.

Each kernel is written once for a generic *direction*: rows ``x[offset + r]`` scored against columns ``y[:ncols]``
with identities ``ids`` (the row's identity is ``ids[g]``, column ``j``'s is ``ids[j]``), column ``g`` being the
row's positive. The launchers run it twice:

=================  ==========  ===================================  ====================
direction          ``x``       ``y``                                ``ids``
=================  ==========  ===================================  ====================
``query_to_doc``   ``q``       ``c`` (only the ``W`` positives      ``candidate_ids``
                               under ``own``, plus a row-wise dot
                               with the row's own negatives)
``doc_to_query``   ``c``       ``q``                                ``query_ids``
=================  ==========  ===================================  ====================

Precision: similarities are ``tl.dot`` products with fp32 accumulation (exact products for 16-bit inputs). fp32
inputs follow PyTorch's matmul flag (``allow_tf32``, or ``fp32_precision`` where PyTorch has it): TF32 only
when it is set, ``input_precision="ieee"`` otherwise, as MNRL's matmul does. In the backward, the probabilities ``p = exp(logit - normaliser)`` (in ``[0, 1]``) multiply the
other side on the tensor cores: for 16-bit inputs each ``p`` goes in as two numbers of the inputs' dtype, ``hi +
lo``, about 16 bits of it (bfloat16) instead of the 8 that FlashAttention's single cast keeps, so that what
remains against a float64 computation from the same inputs is float32 accumulation order, as on the PyTorch
path. The row weight multiplies the fp32 accumulators at the end: a 16-bit ``p`` never holds it.

Under ``TRITON_INTERPRET=1`` (decided when this module is imported: ``triton.jit`` then returns interpreted
functions) the launchers run on CPU tensors. The interpreter's ``tl.dot`` mishandles bfloat16 operands
(triton-lang/triton#11584), so there the operands of every dot are cast to float32 first (``UPCAST``, after the
same rounding of ``p`` to bfloat16 ``hi + lo``); compiled kernels never carry it.

Costs (the comment above each kernel, per call; :func:`cost` for a whole forward and backward): the forward does
``2 * local * ncols * d`` FLOPs per direction, like one matrix product. A backward program owns the gradient of
its rows (or columns) in ``BD`` of their features, a ``(rows, BD)`` fp32 accumulator in registers, and recomputes
the similarity tiles over the full ``d`` for it: each backward kernel costs ``cdiv(d, BD) + h`` forwards (``h`` = 2
products of ``p`` for 16-bit inputs, 1 for fp32). :func:`block_config` takes ``BD`` >= ``d`` up to ``d = 512``
(each tile is computed once: ``1 + h``), with fewer rows per program as ``BD`` grows so that nothing spills, and
``BD = 512`` beyond: two halves up to ``d = 1024`` (``2 + h``). One forward and backward of query_to_doc, bf16, in
matrix products (before, with ``BD = 128`` for every ``d``): 7 for ``d = 384`` (11), 9 for 768 (17) and 1024 (21),
21 for 4096 (69); fp32 (``BD = 64`` before): 5 for 384 (15), 7 for 768 (27), 19 for 4096 (131).

Needs triton: import this module lazily (``functional.py`` does), never from a module the package imports eagerly.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from st_mnr_plus.losses.kernel_config import (
    FLOAT_DTYPES,
    BlockConfig,
    Blocks,
    block_config,
    cost,
    matmul_allows_tf32,
    precision,
    precisions,
)

__all__ = [
    "KERNELS",
    "BlockConfig",
    "Blocks",
    "MNRForward",
    "MNRGradients",
    "block_config",
    "cost",
    "interpreting",
    "matmul_allows_tf32",
    "mnr_backward",
    "mnr_forward",
    "precision",
    "precisions",
]

# ``from __future__ import annotations`` (required by the repository's ruff configuration) leaves every annotation
# a string: triton copes, as it reads a parameter as constexpr when "constexpr" is in its annotation string
# (``KernelParam.is_constexpr`` in triton/runtime/jit.py), so ``BM: tl.constexpr`` works as written.

# Integer arguments that may equal 1 (one row, one negative column): Triton would otherwise compile a separate
# specialisation for the value 1. ``d`` stays specialised: its divisibility by 16 vectorises the loads.
_RUNTIME_INTS = ["offset", "local", "ncols", "world", "n_own"]


def interpreting() -> bool:
    """Whether this module's kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when it was imported:
    ``@triton.jit`` decides as it decorates): then the launchers take CPU tensors, otherwise CUDA tensors."""
    return not isinstance(_mnr_forward_kernel, triton.JITFunction)


# ---- device helpers ---------------------------------------------------------------------------------------------


@triton.jit
def _sim_tile(
    A, B, a_rows, b_rows, a_mask, b_mask, d, BA: tl.constexpr, BB: tl.constexpr, BK: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``(BA, BB)`` fp32 dot products ``A[a_rows] . B[b_rows]`` over the whole feature dimension, ``BK`` at a time."""
    acc = tl.zeros((BA, BB), dtype=tl.float32)
    a_base = A + a_rows.to(tl.int64)[:, None] * d  # (BA, 1)
    b_base = B + b_rows.to(tl.int64)[None, :] * d  # (1, BB): B is read transposed, (BK, BB) tiles
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        k_mask = ks < d
        a = tl.load(a_base + ks[None, :], mask=a_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_base + ks[:, None], mask=k_mask[:, None] & b_mask[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _row_dot(A, B, a_rows, b_rows, mask, d, BM: tl.constexpr, BK: tl.constexpr):
    """``(BM,)`` fp32 dot products of matching rows ``A[a_rows[i]] . B[b_rows[i]]`` (a row-wise, not a matrix,
    product: each anchor against its own hard negative)."""
    acc = tl.zeros((BM,), dtype=tl.float32)
    a_base = A + a_rows.to(tl.int64)[:, None] * d
    b_base = B + b_rows.to(tl.int64)[:, None] * d
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        both = mask[:, None] & (ks < d)[None, :]
        a = tl.load(a_base + ks[None, :], mask=both, other=0.0).to(tl.float32)
        b = tl.load(b_base + ks[None, :], mask=both, other=0.0).to(tl.float32)
        acc += tl.sum(a * b, axis=1)
    return acc


@triton.jit
def _exclusions(sim, row, col, row_id, col_id, threshold, valid):
    """``(excluded, duplicate)`` masks of a tile, its operands broadcast to the tile already.

    Entry (row ``g``, column ``j``) is excluded when ``j != g`` and it is a duplicate (equal identities) or a false
    negative (raw similarity above the row's threshold); tile padding (``~valid``) is neither.
    """
    candidate = valid & (row != col)
    duplicate = candidate & (row_id == col_id)
    return duplicate | (candidate & (sim > threshold)), duplicate


# ---- forward -----------------------------------------------------------------------------------------------------


# Per call, with L = local rows, N = ncols (query_to_doc: W * (1 + n) shared, W under own; doc_to_query: W),
# n_own (n under own, else 0), s = the inputs' itemsize and T = cdiv(L, BM); grid: T programs. Counted on the real
# rows, columns and features (the padding of tiles is masked: computed, never loaded); cost() adds these up.
# FLOPs: 2 * L * N * d on the tensor cores (the similarity tiles) + 2 * L * n_own * d (own negatives, row-wise)
# + about 10 * L * (N + n_own) for the masks, maxima and exponentials (not in cost()).
# Bytes: every program streams all N columns and re-reads its BM anchors for each column tile:
# (T * N + L * cdiv(N, BN)) * d * s, mostly from L2 (from DRAM: (N + L) * d * s once), + 2 * L * n_own * d * s
# (own negatives and their anchors, row-wise) + 8 * (T * N + L * (1 + n_own)) (identities) + 4 * L + 4 * T
# (thresholds, scale) + 16 * L written.
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _mnr_forward_kernel(
    X, Y, IDS, THRESHOLD, SCALE, LSE, HARDEST, MASKED, DUPLICATES,
    offset, local, ncols, world, n_own, d,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Per local row: logsumexp of its logits over ``y[:ncols]`` (and its ``n_own`` own negatives), with an online
    maximum, and the hardest unmasked negative similarity and the masked / duplicate counts."""
    r = tl.program_id(0) * BM + tl.arange(0, BM)
    r_mask = r < local
    g = offset + r
    threshold = tl.load(THRESHOLD + r, mask=r_mask, other=float("inf"))
    scale = tl.load(SCALE).to(tl.float32)
    row_id = tl.load(IDS + g, mask=r_mask, other=0)
    run_max = tl.full((BM,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BM,), dtype=tl.float32)
    hardest = tl.full((BM,), float("-inf"), tl.float32)
    masked = tl.zeros((BM,), dtype=tl.int32)
    duplicates = tl.zeros((BM,), dtype=tl.int32)
    for c0 in range(0, ncols, BN):
        cols = c0 + tl.arange(0, BN)
        c_mask = cols < ncols
        sim = _sim_tile(X, Y, g, cols, r_mask, c_mask, d, BM, BN, BK, UPCAST, PRECISION)  # (BM, BN)
        col_id = tl.load(IDS + cols, mask=c_mask, other=0)
        valid = r_mask[:, None] & c_mask[None, :]
        excluded, duplicate = _exclusions(
            sim, g[:, None], cols[None, :], row_id[:, None], col_id[None, :], threshold[:, None], valid
        )
        kept = valid & ~excluded
        logits = tl.where(kept, sim * scale, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        shift = tl.where(new_max > float("-inf"), new_max, 0.0)  # a row with nothing kept yet: no NaN
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(logits - shift[:, None]), axis=1)
        run_max = new_max
        negative = kept & (cols[None, :] != g[:, None])
        hardest = tl.maximum(hardest, tl.max(tl.where(negative, sim, float("-inf")), axis=1))
        # Both counts in one reduction (a tile adds at most BN < 2**16 to either): one cross-thread sum, not two,
        # saves about 90 registers on sm_80.
        both = tl.sum(excluded.to(tl.int32) + duplicate.to(tl.int32) * 65536, axis=1)
        masked += both & 65535
        duplicates += both >> 16
    for k in range(0, n_own):  # each row against its own hard negative k: candidate world * (1 + k) + g
        own = world * (1 + k) + g
        sim = _row_dot(X, Y, g, own, r_mask, d, BM, BK)  # (BM,)
        own_id = tl.load(IDS + own, mask=r_mask, other=0)
        excluded, duplicate = _exclusions(sim, g, own, row_id, own_id, threshold, r_mask)
        kept = r_mask & ~excluded
        logit = tl.where(kept, sim * scale, float("-inf"))
        new_max = tl.maximum(run_max, logit)
        shift = tl.where(new_max > float("-inf"), new_max, 0.0)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.exp(logit - shift)
        run_max = new_max
        hardest = tl.maximum(hardest, tl.where(kept, sim, float("-inf")))
        masked += excluded.to(tl.int32)
        duplicates += duplicate.to(tl.int32)
    some = run_sum > 0  # a row with nothing kept (only tile padding here) has the logsumexp -inf
    tl.store(LSE + r, tl.where(some, run_max + tl.log(tl.where(some, run_sum, 1.0)), float("-inf")), mask=r_mask)
    tl.store(HARDEST + r, hardest, mask=r_mask)
    tl.store(MASKED + r, masked, mask=r_mask)
    tl.store(DUPLICATES + r, duplicates, mask=r_mask)


# ---- backward ----------------------------------------------------------------------------------------------------


@triton.jit
def _probabilities(sim, row, col, row_id, col_id, threshold, normaliser, scale, valid):
    """``exp(scale * sim - normaliser)`` on the kept entries of a tile, 0 elsewhere (operands broadcast)."""
    excluded, _ = _exclusions(sim, row, col, row_id, col_id, threshold, valid)
    return tl.where(valid & ~excluded, tl.exp(sim * scale - normaliser), 0.0)


#: Backward accumulators hold probabilities times 2**15: exact in binary, it keeps the small probabilities of a
#: large batch normal in float16 (whose smallest normal is 6e-5), and p <= 1 keeps them below its maximum, 65504.
P_UNIT: tl.constexpr = tl.constexpr(32768.0)


@triton.jit
def _accumulate(acc, p, v, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``acc + (P_UNIT * p) @ v`` for fp32 probabilities ``p`` and a block ``v`` of the inputs.

    16-bit inputs: ``P_UNIT * p`` is split into two numbers of the inputs' dtype, ``hi + lo``, each multiplied on
    the tensor cores: about 16 (bfloat16) or 22 (float16) bits of ``p`` instead of 8 or 11, for one more product.
    """
    p = p * P_UNIT
    if v.dtype == tl.float32:
        return tl.dot(p, v, acc, input_precision=PRECISION)
    hi = p.to(v.dtype)
    lo = (p - hi.to(tl.float32)).to(v.dtype)
    if UPCAST:  # the interpreter: hi + lo is exact in float32, so one (slow, numpy) product does
        return tl.dot(hi.to(tl.float32) + lo.to(tl.float32), v.to(tl.float32), acc)
    return tl.dot(lo, v, tl.dot(hi, v, acc))


# Per call (L, N, n_own, s, T as for the forward; h = 2 products of p for 16-bit inputs, 1 for fp32; F = cdiv(d, BD)
# feature blocks, 1 where BD >= d: see block_config); grid: T x F programs, each holding a (BM, BD) fp32
# accumulator and recomputing its similarity tiles over the full d.
# FLOPs: 2 * L * N * d * (F + h) on the tensor cores, i.e. F + h forwards, + 2 * L * n_own * d * (F + 2) (own
# negatives: scored row-wise in every program, then multiplied twice) + about 10 * L * N * F elementwise.
# Bytes: F * (T * N + L * cdiv(N, BN)) * d * s (similarity operands, mostly from L2) + T * N * d * s (the columns'
# feature blocks) + 8 * L * d (its output rows, fp32, read and written) + F * (16 * L + 8 * T * N + 4 * T)
# (thresholds, normalisers and identities of its rows, identities of the columns, scale) + L * n_own * (F * (2 * d
# * s + 8) + d * (2 * s + 4)) (own negatives: scored with their identities in every program, multiplied, their
# gradient written).
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _mnr_backward_rows_kernel(
    X, Y, IDS, THRESHOLD, SCALE, NORM, GRAD_X, GRAD_OWN, weight,
    offset, local, ncols, world, n_own, d,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``GRAD_X[g] += weight * sum_j p(g, j) y[j]`` for the program's rows and feature block; with own negatives,
    also ``GRAD_OWN[own] = weight * p(g, own) x[g]`` (each own negative belongs to one row: stored, not added)."""
    r = tl.program_id(0) * BM + tl.arange(0, BM)
    r_mask = r < local
    g = offset + r
    e = tl.program_id(1) * BD + tl.arange(0, BD)
    e_mask = e < d
    threshold = tl.load(THRESHOLD + r, mask=r_mask, other=float("inf"))
    normaliser = tl.load(NORM + r, mask=r_mask, other=0.0)
    scale = tl.load(SCALE).to(tl.float32)
    row_id = tl.load(IDS + g, mask=r_mask, other=0)
    acc = tl.zeros((BM, BD), dtype=tl.float32)
    for c0 in range(0, ncols, BN):
        cols = c0 + tl.arange(0, BN)
        c_mask = cols < ncols
        sim = _sim_tile(X, Y, g, cols, r_mask, c_mask, d, BM, BN, BK, UPCAST, PRECISION)  # (BM, BN)
        col_id = tl.load(IDS + cols, mask=c_mask, other=0)
        p = _probabilities(
            sim, g[:, None], cols[None, :], row_id[:, None], col_id[None, :], threshold[:, None],
            normaliser[:, None], scale, r_mask[:, None] & c_mask[None, :],
        )  # fmt: skip
        y = tl.load(Y + cols.to(tl.int64)[:, None] * d + e[None, :], mask=c_mask[:, None] & e_mask[None, :], other=0.0)
        acc = _accumulate(acc, p, y, UPCAST, PRECISION)
    x_block = X + g.to(tl.int64)[:, None] * d + e[None, :]
    block_mask = r_mask[:, None] & e_mask[None, :]
    for k in range(0, n_own):  # own negative k of each row: candidate world * (1 + k) + g
        own = world * (1 + k) + g
        sim = _row_dot(X, Y, g, own, r_mask, d, BM, BK)
        own_id = tl.load(IDS + own, mask=r_mask, other=0)
        p = _probabilities(sim, g, own, row_id, own_id, threshold, normaliser, scale, r_mask)
        own_block = own.to(tl.int64)[:, None] * d + e[None, :]
        acc += (p * P_UNIT)[:, None] * tl.load(Y + own_block, mask=block_mask, other=0.0).to(tl.float32)
        x = tl.load(x_block, mask=block_mask, other=0.0).to(tl.float32)
        tl.store(GRAD_OWN + own_block, weight * p[:, None] * x, mask=block_mask)
    out = GRAD_X + g.to(tl.int64)[:, None] * d + e[None, :]
    tl.store(out, tl.load(out, mask=block_mask, other=0.0) + acc * (weight / P_UNIT), mask=block_mask)


# Per call (L, N, s, h, F as for the backward by rows; U = cdiv(N, BN)); grid: U x F programs, each holding a
# (BN, BD) fp32 accumulator, streaming every local row and recomputing the similarity tiles, transposed (columns x
# rows), over the full d.
# FLOPs: 2 * L * N * d * (F + h) on the tensor cores, as by rows, + about 10 * L * N * F elementwise.
# Bytes: F * (U * L + N * cdiv(L, BM)) * d * s (similarity operands, mostly from L2) + U * L * d * s (the anchors'
# feature blocks) + 8 * N * d (its output rows, fp32, read and written) + F * (16 * U * L + 8 * N + 4 * U)
# (thresholds, normalisers and identities of every row tile, identities of its columns, scale).
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _mnr_backward_columns_kernel(
    X, Y, IDS, THRESHOLD, SCALE, NORM, GRAD_Y, weight,
    offset, local, ncols, d,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``GRAD_Y[j] += weight * sum_r p(g, j) x[g]`` over every local row ``g = offset + r``, for the program's
    columns ``j`` and feature block (the tiles are scored transposed: columns x rows)."""
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    c_mask = cols < ncols
    e = tl.program_id(1) * BD + tl.arange(0, BD)
    e_mask = e < d
    scale = tl.load(SCALE).to(tl.float32)
    col_id = tl.load(IDS + cols, mask=c_mask, other=0)
    acc = tl.zeros((BN, BD), dtype=tl.float32)
    for r0 in range(0, local, BM):
        r = r0 + tl.arange(0, BM)
        r_mask = r < local
        g = offset + r
        threshold = tl.load(THRESHOLD + r, mask=r_mask, other=float("inf"))
        normaliser = tl.load(NORM + r, mask=r_mask, other=0.0)
        row_id = tl.load(IDS + g, mask=r_mask, other=0)
        sim = _sim_tile(Y, X, cols, g, c_mask, r_mask, d, BN, BM, BK, UPCAST, PRECISION)  # (BN, BM)
        p = _probabilities(
            sim, g[None, :], cols[:, None], row_id[None, :], col_id[:, None], threshold[None, :],
            normaliser[None, :], scale, c_mask[:, None] & r_mask[None, :],
        )  # fmt: skip
        x = tl.load(X + g.to(tl.int64)[:, None] * d + e[None, :], mask=r_mask[:, None] & e_mask[None, :], other=0.0)
        acc = _accumulate(acc, p, x, UPCAST, PRECISION)
    block_mask = c_mask[:, None] & e_mask[None, :]
    out = GRAD_Y + cols.to(tl.int64)[:, None] * d + e[None, :]
    tl.store(out, tl.load(out, mask=block_mask, other=0.0) + acc * (weight / P_UNIT), mask=block_mask)


#: The kernels by name, as :mod:`.kernel_build` compiles them.
KERNELS = {
    "forward": _mnr_forward_kernel,
    "backward_rows": _mnr_backward_rows_kernel,
    "backward_columns": _mnr_backward_columns_kernel,
}


# ---- launchers ---------------------------------------------------------------------------------------------------


class MNRForward(NamedTuple):
    """What :func:`mnr_forward` returns, each ``(local,)``.

    ``lse_q2d`` and ``lse_d2q`` (``None`` without doc_to_query) are float32 logsumexps; ``hardest`` the float32
    largest raw similarity of an unmasked query_to_doc negative (``-inf`` if none); ``masked`` and ``duplicates``
    int32 counts of the excluded query_to_doc columns and of the duplicates among them.
    """

    lse_q2d: Tensor
    lse_d2q: Tensor | None
    hardest: Tensor
    masked: Tensor
    duplicates: Tensor


class MNRGradients(NamedTuple):
    """What :func:`mnr_backward` returns: float32 ``grad_q`` ``(W, d)`` and ``grad_c`` ``(W * (1 + n), d)``."""

    grad_q: Tensor
    grad_c: Tensor


class _Problem(NamedTuple):
    """The checked inputs of a launch and what the kernels derive from them."""

    q: Tensor
    c: Tensor
    scale: Tensor
    query_ids: Tensor
    candidate_ids: Tensor
    threshold: Tensor
    offset: int
    local: int
    world: int
    n_own: int  # own negatives per row, scored row-wise: n under ``own``, else 0
    q2d_columns: int  # columns of the query_to_doc tiles: W under ``own``, else W * (1 + n)
    config: BlockConfig
    meta: dict  # the constexprs and launch options shared by every launch (the blocks: :meth:`options`)

    def options(self, kernel: str) -> dict:
        """The keyword arguments of a launch of ``kernel`` (a name of :data:`KERNELS`)."""
        blocks = getattr(self.config, kernel)._asdict()
        return {**self.meta, **{key: value for key, value in blocks.items() if value is not None}}


def _check_embeddings(q: Tensor, c: Tensor, offset: int, local: int) -> None:
    if not interpreting() and not (q.is_cuda and c.is_cuda):
        raise ValueError("the fused MNR kernels need CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
    if q.dtype not in FLOAT_DTYPES or c.dtype != q.dtype:
        raise ValueError(f"q and c must share a dtype among {FLOAT_DTYPES}, got {q.dtype} and {c.dtype}")
    if q.ndim != 2 or c.ndim != 2 or c.shape[1] != q.shape[1] or not (q.is_contiguous() and c.is_contiguous()):
        raise ValueError(f"q (W, d) and c (W * (1 + n), d) must be contiguous, got {tuple(q.shape)}, {tuple(c.shape)}")
    if c.device != q.device:
        raise ValueError(f"q and c must be on one device, got {q.device} and {c.device}")
    if q.shape[0] == 0 or q.shape[1] == 0 or c.shape[0] % q.shape[0] or c.shape[0] == 0:
        raise ValueError(f"c must hold W * (1 + n) rows of W = {q.shape[0]} queries, got {c.shape[0]}")
    if offset < 0 or local < 1 or offset + local > q.shape[0]:
        raise ValueError(f"offset {offset} and local {local} must name rows of the {q.shape[0]} queries")


def _check_vector(value: Tensor, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
    if value.shape != shape or value.dtype != dtype or value.device != device:
        raise ValueError(
            f"{name} must be {shape} {dtype} on {device}, got {tuple(value.shape)} {value.dtype} on {value.device}"
        )


def _check(q, c, scale, offset, local, own, query_ids, candidate_ids, threshold) -> _Problem:
    """Validate the launchers' inputs (every bad one raises ``ValueError``) and derive the launch parameters."""
    _check_embeddings(q, c, offset, local)
    world, d = q.shape
    _check_vector(scale.reshape(-1), "scale", (1,), torch.float32, q.device)
    if (query_ids is None) != (candidate_ids is None):
        raise ValueError("query_ids and candidate_ids must be given together")
    if query_ids is None:  # unique identities: nothing is a duplicate (one compiled variant, not two)
        query_ids = torch.arange(world, device=q.device)
        candidate_ids = torch.arange(c.shape[0], device=q.device)
    _check_vector(query_ids, "query_ids", (world,), torch.int64, q.device)
    _check_vector(candidate_ids, "candidate_ids", (c.shape[0],), torch.int64, q.device)
    if threshold is None:  # nothing is above +inf
        threshold = torch.full((local,), float("inf"), dtype=torch.float32, device=q.device)
    _check_vector(threshold, "threshold", (local,), torch.float32, q.device)
    config = block_config(q.dtype, d)
    meta = {
        "UPCAST": interpreting() and q.dtype == torch.bfloat16,  # triton-lang/triton#11584
        "PRECISION": precision(q.dtype),
        "enable_fp_fusion": True,  # Triton's default, named: left unset, Triton 3.9 warns that it will change
    }
    ids = (query_ids.contiguous(), candidate_ids.contiguous())
    n_own = c.shape[0] // world - 1 if own else 0
    columns = world if own else c.shape[0]
    return _Problem(
        q, c, scale.reshape(()), *ids, threshold.contiguous(), offset, local, world, n_own, columns, config, meta
    )


def _directions(p: _Problem, doc_to_query: bool):
    """``(name, x, y, ids, ncols, n_own)`` of each direction to launch (see the module docstring's table)."""
    yield "query_to_doc", p.q, p.c, p.candidate_ids, p.q2d_columns, p.n_own
    if doc_to_query:
        yield "doc_to_query", p.c, p.q, p.query_ids, p.world, 0


def _on_device(t: Tensor):
    """Launch on the inputs' GPU: Triton launches on the current device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def mnr_forward(
    q: Tensor,
    c: Tensor,
    scale: Tensor,
    *,
    offset: int,
    local: int,
    own: bool,
    doc_to_query: bool,
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    threshold: Tensor | None = None,
) -> MNRForward:
    """Per local row, the logsumexp of its query_to_doc (and doc_to_query) logits, and its statistics.

    Args:
        q: ``(W, d)`` queries (every rank's when gathered), float32, bfloat16 or float16, contiguous.
        c: ``(W * (1 + n), d)`` candidates, same dtype: the positives, then each hard-negative column.
        scale: One-element float32 tensor on the device (read by the kernels: no host synchronisation).
        offset: Global index of this rank's first anchor.
        local: Number of this rank's anchors.
        own: Each anchor's hard negatives are negatives of that anchor only (``hard_negatives="own"``).
        doc_to_query: Also compute the doc_to_query logsumexps.
        query_ids: ``(W,)`` int64 identities of the queries, or None (no duplicate masking).
        candidate_ids: ``(W * (1 + n),)`` int64 identities of the candidates, with ``query_ids``.
        threshold: ``(local,)`` float32 false-negative bound of each anchor (similarity above it: excluded).

    Returns:
        An :class:`MNRForward`.
    """
    p = _check(q, c, scale, offset, local, own, query_ids, candidate_ids, threshold)
    out = {}
    with _on_device(q):
        for name, x, y, ids, ncols, n_own in _directions(p, doc_to_query):
            lse, hardest = (torch.empty(local, dtype=torch.float32, device=q.device) for _ in range(2))
            masked, duplicates = (torch.empty(local, dtype=torch.int32, device=q.device) for _ in range(2))
            _mnr_forward_kernel[(triton.cdiv(local, p.config.forward.BM),)](
                x, y, ids, p.threshold, p.scale, lse, hardest, masked, duplicates,
                offset, local, ncols, p.world, n_own, q.shape[1], **p.options("forward"),
            )  # fmt: skip
            out[name] = (lse, hardest, masked, duplicates)
    lse, hardest, masked, duplicates = out["query_to_doc"]
    return MNRForward(lse, out["doc_to_query"][0] if doc_to_query else None, hardest, masked, duplicates)


def mnr_backward(
    q: Tensor,
    c: Tensor,
    scale: Tensor,
    norm_q2d: Tensor,
    norm_d2q: Tensor | None,
    weight: float,
    *,
    offset: int,
    local: int,
    own: bool,
    doc_to_query: bool,
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    threshold: Tensor | None = None,
) -> MNRGradients:
    """The embedding gradients of the query_to_doc (and doc_to_query) logits, before :func:`ops.finish_gradients`.

    With ``P(r, j) = weight * exp(logit(r, j) - norm[r])`` (0 on excluded entries) of each direction, it adds up
    what ``ops.accumulate`` does for these blocks: ``grad_q[g] += sum_j P1 c[j]``, ``grad_c[j] += sum_r P1 q[g]``
    (own negatives: ``grad_c[own] = P1_own q[g]``), ``grad_c[g] += sum_k P2 q[k]`` and ``grad_q[k] += sum_r P2
    c[g]``. Deterministic: every output row is written by one program of each launch, the launches in order.

    Args:
        q, c, scale, offset, local, own, doc_to_query, query_ids, candidate_ids, threshold: As in
            :func:`mnr_forward`.
        norm_q2d: ``(local,)`` float32 normaliser of each row's query_to_doc logits.
        norm_d2q: ``(local,)`` float32 normaliser of its doc_to_query logits (with ``doc_to_query``).
        weight: d loss / d normaliser of one row (``1 / local``, or ``1 / (2 * local)`` per direction).

    Returns:
        An :class:`MNRGradients` of float32 tensors; rows that receive nothing are 0.
    """
    p = _check(q, c, scale, offset, local, own, query_ids, candidate_ids, threshold)
    norms = {"query_to_doc": norm_q2d, "doc_to_query": norm_d2q}
    for name in ("query_to_doc", "doc_to_query") if doc_to_query else ("query_to_doc",):
        norm = norms[name]
        if norm is None or norm.shape != (local,) or norm.dtype != torch.float32 or norm.device != q.device:
            raise ValueError(f"the {name} normaliser must be ({local},) float32 on the inputs' device")
    grad_q = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    grad_c = torch.zeros(c.shape, dtype=torch.float32, device=q.device)
    grads = {"query_to_doc": (grad_q, grad_c), "doc_to_query": (grad_c, grad_q)}  # (of x, of y)
    d, rows, columns = q.shape[1], p.config.backward_rows, p.config.backward_columns
    with _on_device(q):
        for name, x, y, ids, ncols, n_own in _directions(p, doc_to_query):
            grad_x, grad_y = grads[name]
            norm = norms[name].contiguous()
            _mnr_backward_rows_kernel[(triton.cdiv(local, rows.BM), triton.cdiv(d, rows.BD))](
                x, y, ids, p.threshold, p.scale, norm, grad_x, grad_c, float(weight),
                offset, local, ncols, p.world, n_own, d, **p.options("backward_rows"),
            )  # fmt: skip
            _mnr_backward_columns_kernel[(triton.cdiv(ncols, columns.BN), triton.cdiv(d, columns.BD))](
                x, y, ids, p.threshold, p.scale, norm, grad_y, float(weight),
                offset, local, ncols, d, **p.options("backward_columns"),
            )  # fmt: skip
    return MNRGradients(grad_q, grad_c)
