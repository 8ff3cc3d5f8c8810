"""The element-wise Triton kernels of the GPU path: one pass over a chunk of similarities at a time.

The GPU path (:mod:`.chunked`) is Liger-Kernel's fused linear cross-entropy applied to contrastive logits: the
anchors are processed in row chunks, the matrix products run on cuBLAS (16-bit operands, float32 output), and
everything between them runs in these kernels, which read the chunk's float32 similarities ``S`` (``(R, ncols)``,
row ``r`` being global anchor ``g = row0 + r``, column ``g`` its positive) and never launch a matrix product:

- :func:`row_statistics` (``_row_lse_kernel``): per row, the logsumexp of its kept logits *without the
  positive*, with an online maximum over column blocks, and the statistics (hardest unmasked negative, masked and
  duplicate counts). Rows scored against their own hard negatives (``hard_negatives="own"``) read those
  similarities, ``(R, n_own)``, after the columns.
- :func:`column_lse` (``_column_lse_kernel``): per column ``j < W``, the logsumexp over this chunk's rows of the
  doc_to_query logits read down the column (``symmetric`` without gathering), again without the positive.
- :func:`probabilities` (``_probabilities_kernel``): ``G = p_row + p_col`` in the products' dtype (bfloat16,
  float16 or float32), written over ``S`` in place, 0 on the positive and on excluded entries, the own
  negatives' float32 probabilities, and per row the float32 sum of ``p * sim`` (the scale's gradient).

Leaving the positive out is what keeps 16-bit gradients exact where MNRL's are not: for a confident row ``1 -
p_pos`` is far below bfloat16's resolution at 1, but it is the sum of the other probabilities, each stored with
bfloat16's *relative* precision, and the positive's coefficient ``-(1 - p_pos)`` is formed from the logsumexp
without the positive, in float32 (:mod:`.chunked`).

Masks (every kernel, through ``_logits``): entry ``(g, j)`` with ``j != g`` is excluded when it is a duplicate
(equal identities) or a false negative (raw similarity above the row's threshold; the column's, read down
columns). ``PENALTY`` (a run-time code, one compiled variant for every mode) adds the hardness penalty ``alpha * sim`` (a stop-gradient: it moves the logits, not the
gradient) to the entries its mode names: 1 = in_batch_negatives (columns that are not the row's own documents,
``j % W != g``), 2 = all_negatives (every column but the positive), 3 = hard_negatives (the row's own hard
negatives, ``j % W == g`` with ``j >= W``); own-negative entries carry it under modes 2 and 3.

Costs (the comment above each kernel, per call; :func:`.kernel_config.cost` for a whole forward and backward):
none of these kernels does a matrix product, and each reads a chunk's similarities once: 4 bytes per logit read,
plus 2 (16-bit) or 4 (fp32) written by :func:`probabilities`.

Under ``TRITON_INTERPRET=1`` (decided when this module is imported: ``triton.jit`` then returns interpreted
functions) the launchers run on CPU tensors, which is how the tests run them.

Needs triton: import this module lazily (:mod:`.chunked` does), never from a module the package imports eagerly.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from st_mnr_plus.losses.kernel_config import ELEMENTWISE_BLOCKS, PENALTY_CODES

__all__ = [
    "KERNELS",
    "ColumnInputs",
    "RowInputs",
    "RowStatistics",
    "column_lse",
    "interpreting",
    "probabilities",
    "row_statistics",
]

# ``from __future__ import annotations`` (required by the repository's ruff configuration) leaves every annotation
# a string: triton copes, as it reads a parameter as constexpr when "constexpr" is in its annotation string
# (``KernelParam.is_constexpr`` in triton/runtime/jit.py), so ``BM: tl.constexpr`` works as written.

# Integer arguments that may equal 1 (one row, one negative column): Triton would otherwise compile a separate
# specialisation for the value 1.
_RUNTIME_INTS = ["stride", "row0", "rows", "ncols", "world", "n_own", "g_stride", "PENALTY"]


def interpreting() -> bool:
    """Whether this module's kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when it was imported:
    ``@triton.jit`` decides as it decorates): then the launchers take CPU tensors, otherwise CUDA tensors."""
    return not isinstance(_row_lse_kernel, triton.JITFunction)


# ---- device helpers ---------------------------------------------------------------------------------------------


@triton.jit
def _logits(sim, g, j, row_id, col_id, threshold, scale, alpha, valid, world, own_entry, PENALTY):
    """``(logit, kept, excluded, duplicate)`` of a block of entries, its operands broadcast to the block.

    ``kept`` leaves out the positive (``j == g``), the excluded entries and the padding; ``logit`` is -inf
    wherever ``kept`` is False. ``own_entry``: the entries are the row's own hard negatives (``j`` is then their
    candidate index, never ``g``).
    """
    candidate = valid & (j != g)
    duplicate = candidate & (row_id == col_id)
    excluded = duplicate | (candidate & (sim > threshold))
    kept = candidate & ~excluded
    logit = sim * scale
    if PENALTY == 1:  # in_batch_negatives: every column but the row's own documents; never an own entry
        logit += tl.where(((j % world) != g) & ~own_entry, alpha * sim, 0.0)
    elif PENALTY == 2:  # all_negatives: every column but the positive (left out of kept already)
        logit += alpha * sim
    elif PENALTY == 3:  # hard_negatives: only the row's own hard negatives
        logit += tl.where(((j % world) == g) & (j >= world) | own_entry, alpha * sim, 0.0)
    return tl.where(kept, logit, float("-inf")), kept, excluded, duplicate


@triton.jit
def _entries(S, stride, OWN_SIM, r, r_mask, j, ncols, n_own):
    """``(sim, valid, own_entry)`` of a step over a row's entries: columns ``j < ncols`` of ``S``, then its own
    negatives ``k = j - ncols`` (stored at ``OWN_SIM[r, k]``)."""
    own_entry = (j >= ncols) & (j < ncols + n_own)
    valid = r_mask[:, None] & ((j < ncols) | own_entry)[None, :]
    row = r[:, None].to(tl.int64)
    own_ptr = OWN_SIM + row * n_own + (j - ncols)[None, :]
    sim = tl.load(tl.where(own_entry[None, :], own_ptr, S + row * stride + j[None, :]), mask=valid, other=0.0)
    return sim, valid, own_entry


@triton.jit
def _candidates(j, g, ncols, n_own, world):
    """``(BM, BN)`` candidate index of each entry: column ``j``, or own negative ``k = j - ncols`` of row ``g``,
    candidate ``world * (1 + k) + g``."""
    own_entry = (j >= ncols) & (j < ncols + n_own)
    return tl.where(own_entry[None, :], world * (1 + (j - ncols)[None, :]) + g[:, None], j[None, :])


@triton.jit
def _column_ids(IDS, j, candidate, dense, own_valid):
    """The identity of each entry: one ``(BN,)`` load of the dense columns' (shared by the block's rows: 8 / BM
    bytes per logit, not 8), and a gather of the own negatives' where the block holds some."""
    dense_ids = tl.load(IDS + j, mask=dense, other=0)
    own_ids = tl.load(IDS + candidate, mask=own_valid, other=0)
    return tl.where(own_valid, own_ids, dense_ids[None, :])


@triton.jit
def _online(run_max, run_sum, logit, AXIS: tl.constexpr):
    """One step of an online logsumexp along ``AXIS``: the running maximum and sum of ``exp(logit - max)``."""
    new_max = tl.maximum(run_max, tl.max(logit, axis=AXIS))
    shift = tl.where(new_max > float("-inf"), new_max, 0.0)  # nothing kept yet: no NaN from -inf - -inf
    if AXIS == 1:
        total = tl.sum(tl.exp(logit - shift[:, None]), axis=1)
    else:
        total = tl.sum(tl.exp(logit - shift[None, :]), axis=0)
    return new_max, run_sum * tl.exp(run_max - shift) + total


@triton.jit
def _to_store(p, dtype: tl.constexpr):
    """``p`` (float32) in ``dtype``, rounded to nearest even. For bfloat16 the rounding is done on the bits (add
    half an ulp, ties to even, and clear the low half), so that the cast that follows is exact: GPUs round
    float32 -> bfloat16 to nearest, Triton's interpreter truncates, and both must store the same G."""
    if dtype == tl.bfloat16:
        bits = p.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    return p.to(dtype)


@triton.jit
def _finish(run_max, run_sum):
    some = run_sum > 0  # nothing kept: the logsumexp is -inf
    return tl.where(some, run_max + tl.log(tl.where(some, run_sum, 1.0)), float("-inf"))


# ---- the kernels ------------------------------------------------------------------------------------------------


# Per call, with R rows, N = ncols columns and n_own own negatives per row; grid: cdiv(R, BM) programs.
# FLOPs: no matrix product; about 12 element-wise operations per logit (masks, penalty, scale, max, exp, sum).
# Bytes: 4 * R * (N + n_own) (the similarities, read once) + 8 * (R + N + R * n_own) (identities) + 4 * R
# (thresholds) + 16 * R written (logsumexp, hardest, masked, duplicates).
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _row_lse_kernel(
    S, stride, OWN_SIM, IDS, THRESHOLD, SCALE, LSE, HARDEST, MASKED, DUPLICATES,
    row0, rows, ncols, world, n_own, alpha, PENALTY,
    BM: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """Per row of the chunk: logsumexp of its kept logits without the positive, and its statistics."""
    r = tl.program_id(0) * BM + tl.arange(0, BM)
    r_mask = r < rows
    g = row0 + r
    threshold = tl.load(THRESHOLD + r, mask=r_mask, other=float("inf"))
    scale = tl.load(SCALE).to(tl.float32)
    row_id = tl.load(IDS + g, mask=r_mask, other=0)
    run_max = tl.full((BM,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BM,), dtype=tl.float32)
    hardest = tl.full((BM,), float("-inf"), tl.float32)
    masked = tl.zeros((BM,), dtype=tl.int32)
    duplicates = tl.zeros((BM,), dtype=tl.int32)
    for c0 in range(0, ncols + n_own, BN):
        j = c0 + tl.arange(0, BN)
        sim, valid, own_entry = _entries(S, stride, OWN_SIM, r, r_mask, j, ncols, n_own)
        candidate = _candidates(j, g, ncols, n_own, world)
        col_id = _column_ids(IDS, j, candidate, j < ncols, valid & own_entry[None, :])
        logit, kept, excluded, duplicate = _logits(
            sim, g[:, None], candidate, row_id[:, None], col_id, threshold[:, None], scale, alpha, valid, world,
            own_entry[None, :], PENALTY,
        )  # fmt: skip
        run_max, run_sum = _online(run_max, run_sum, logit, 1)
        hardest = tl.maximum(hardest, tl.max(tl.where(kept, sim, float("-inf")), axis=1))
        masked += tl.sum(excluded.to(tl.int32), axis=1)
        duplicates += tl.sum(duplicate.to(tl.int32), axis=1)
    tl.store(LSE + r, _finish(run_max, run_sum), mask=r_mask)
    tl.store(HARDEST + r, hardest, mask=r_mask)
    tl.store(MASKED + r, masked, mask=r_mask)
    tl.store(DUPLICATES + r, duplicates, mask=r_mask)


# Per call, with R rows and W columns read (the positives); grid: cdiv(W, BN) programs, each streaming every row.
# FLOPs: no matrix product; about 10 element-wise operations per logit.
# Bytes: 4 * R * W (the similarities, read once) + 8 * (R + W) (identities) + 4 * W (thresholds) + 4 * W written.
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _column_lse_kernel(
    S, stride, IDS, THRESHOLD, SCALE, LSE,
    row0, rows, world,
    BM: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """Per column ``j < W``: logsumexp over the chunk's rows of the doc_to_query logits read down the column
    (column ``j``'s threshold and identity; the positive, row ``g = j``, left out)."""
    j = tl.program_id(0) * BN + tl.arange(0, BN)
    j_mask = j < world
    threshold = tl.load(THRESHOLD + j, mask=j_mask, other=float("inf"))
    scale = tl.load(SCALE).to(tl.float32)
    col_id = tl.load(IDS + j, mask=j_mask, other=0)
    run_max = tl.full((BN,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BN,), dtype=tl.float32)
    for r0 in range(0, rows, BM):
        r = r0 + tl.arange(0, BM)
        r_mask = r < rows
        g = row0 + r
        valid = r_mask[:, None] & j_mask[None, :]
        sim = tl.load(S + r[:, None].to(tl.int64) * stride + j[None, :], mask=valid, other=0.0)
        row_id = tl.load(IDS + g, mask=r_mask, other=0)
        logit, _, _, _ = _logits(
            sim, g[:, None], j[None, :], row_id[:, None], col_id[None, :], threshold[None, :], scale, 0.0, valid,
            world, False, 0,
        )  # fmt: skip
        run_max, run_sum = _online(run_max, run_sum, logit, 0)
    tl.store(LSE + j, _finish(run_max, run_sum), mask=j_mask)


# Per call, with R rows, N = ncols columns, n_own own negatives and s the products' itemsize; grid: cdiv(R, BM).
# FLOPs: no matrix product; about 16 element-wise operations per logit (20 with the column direction).
# Bytes: 4 * R * (N + n_own) read and s * R * N + 4 * R * n_own written (the similarities in, G and the own
# probabilities out) + 8 * (R + N + R * n_own) (identities) + 8 * R (thresholds, normalisers) + 4 * R written
# (sum of p * sim); with the column direction also 16 * N (its identities, thresholds and normalisers).
@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _probabilities_kernel(
    S, stride, OWN_SIM, G, g_stride, OWN_P, PSIM,
    IDS, THRESHOLD, NORM, COLUMN_IDS, COLUMN_THRESHOLD, COLUMN_NORM, SCALE,
    row0, rows, ncols, world, n_own, alpha, PENALTY,
    BM: tl.constexpr, BN: tl.constexpr, COLUMNS: tl.constexpr,
):  # fmt: skip
    """``G[r, j] = exp(logit_row - NORM[r]) (+ exp(logit_col - COLUMN_NORM[j]) for j < W with COLUMNS)``, 0 on
    the positive and on excluded entries, stored in ``G``'s dtype; ``OWN_P[r, k]`` the own negatives' float32
    probabilities; ``PSIM[r]`` the float32 sum of ``p * sim`` over the row's entries."""
    r = tl.program_id(0) * BM + tl.arange(0, BM)
    r_mask = r < rows
    g = row0 + r
    threshold = tl.load(THRESHOLD + r, mask=r_mask, other=float("inf"))
    norm = tl.load(NORM + r, mask=r_mask, other=0.0)
    scale = tl.load(SCALE).to(tl.float32)
    row_id = tl.load(IDS + g, mask=r_mask, other=0)
    if COLUMNS:
        query_id = tl.load(COLUMN_IDS + g, mask=r_mask, other=0)
    psim = tl.zeros((BM,), dtype=tl.float32)
    for c0 in range(0, ncols + n_own, BN):
        j = c0 + tl.arange(0, BN)
        sim, valid, own_entry = _entries(S, stride, OWN_SIM, r, r_mask, j, ncols, n_own)
        candidate = _candidates(j, g, ncols, n_own, world)
        dense = j < ncols
        col_id = _column_ids(IDS, j, candidate, dense, valid & own_entry[None, :])
        row_offset = r[:, None].to(tl.int64)
        logit, _, _, _ = _logits(
            sim, g[:, None], candidate, row_id[:, None], col_id, threshold[:, None], scale, alpha, valid, world,
            own_entry[None, :], PENALTY,
        )  # fmt: skip
        p = tl.exp(logit - norm[:, None])  # 0 where logit is -inf
        if COLUMNS:  # doc_to_query of positive j, read down column j < W
            by_column = valid & (j < world)[None, :]
            column_id = tl.load(COLUMN_IDS + j, mask=j < world, other=0)
            column_threshold = tl.load(COLUMN_THRESHOLD + j, mask=j < world, other=float("inf"))
            column_norm = tl.load(COLUMN_NORM + j, mask=j < world, other=0.0)
            column_logit, _, _, _ = _logits(
                sim, g[:, None], j[None, :], query_id[:, None], column_id[None, :], column_threshold[None, :],
                scale, 0.0, by_column, world, False, 0,
            )  # fmt: skip
            p += tl.exp(column_logit - column_norm[None, :])
        psim += tl.sum(p * sim, axis=1)
        dense_block = r_mask[:, None] & dense[None, :]
        tl.store(G + row_offset * g_stride + j[None, :], _to_store(p, G.dtype.element_ty), mask=dense_block)
        tl.store(OWN_P + row_offset * n_own + (j - ncols)[None, :], p, mask=r_mask[:, None] & own_entry[None, :])
    tl.store(PSIM + r, psim, mask=r_mask)


#: The kernels by name, as :mod:`.kernel_build` compiles them.
KERNELS = {
    "row_lse": _row_lse_kernel,
    "column_lse": _column_lse_kernel,
    "probabilities": _probabilities_kernel,
}


# ---- launchers ---------------------------------------------------------------------------------------------------


class RowInputs(NamedTuple):
    """What the masks of a chunk's rows read: the identities (row ``g``'s is ``ids[g]``, column ``j``'s
    ``ids[j]``), the rows' thresholds ``(R,)``, the scale (one float32 element, read on the device), the hardness
    penalty (mode name or ``None``, and ``alpha``) and the global index of the chunk's first row."""

    ids: Tensor
    threshold: Tensor
    scale: Tensor
    penalty: tuple[str | None, float]
    row0: int


class ColumnInputs(NamedTuple):
    """doc_to_query read down the columns ``j < W``: the query identities ``(W,)``, each column's threshold
    ``(W,)`` and, for :func:`probabilities`, each column's normaliser ``(W,)``."""

    ids: Tensor
    threshold: Tensor
    norm: Tensor | None = None


class RowStatistics(NamedTuple):
    """What :func:`row_statistics` returns, each ``(R,)``: the float32 logsumexp without the positive (-inf when
    nothing else is kept), the float32 hardest unmasked negative similarity (-inf if none), int32 counts of the
    excluded entries and of the duplicates among them."""

    lse: Tensor
    hardest: Tensor
    masked: Tensor
    duplicates: Tensor


def _on_device(t: Tensor):
    """Launch on the inputs' GPU: Triton launches on the current device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(sim: Tensor, own_sim: Tensor | None, rows: RowInputs) -> tuple[Tensor, int]:
    if not interpreting() and not sim.is_cuda:
        raise ValueError("the MNR kernels need CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
    if sim.ndim != 2 or sim.dtype != torch.float32 or sim.stride(1) != 1:
        raise ValueError(f"sim must be a (R, N) float32 matrix with unit column stride, got {sim.dtype} {sim.shape}")
    if rows.threshold.shape != (sim.shape[0],) or rows.threshold.dtype != torch.float32:
        raise ValueError(f"the thresholds must be ({sim.shape[0]},) float32, got {rows.threshold.shape}")
    if rows.penalty[0] not in PENALTY_CODES:
        raise ValueError(f"unknown hardness mode {rows.penalty[0]!r}")
    if own_sim is None:
        return sim.new_empty((sim.shape[0], 0)), 0
    if own_sim.shape[0] != sim.shape[0] or own_sim.dtype != torch.float32 or not own_sim.is_contiguous():
        raise ValueError(f"own_sim must be a contiguous ({sim.shape[0]}, n) float32 matrix, got {own_sim.shape}")
    return own_sim, own_sim.shape[1]


def row_statistics(sim: Tensor, own_sim: Tensor | None, rows: RowInputs, world: int) -> RowStatistics:
    """Per row of a chunk: the logsumexp of its kept logits without the positive, and its statistics.

    Args:
        sim: ``(R, N)`` float32 similarities of the chunk's rows against the columns (unit column stride).
        own_sim: ``(R, n)`` float32 similarities of each row with its own hard negatives, or ``None``.
        rows: The rows' masks and scale (:class:`RowInputs`).
        world: ``W``: the positives are the first ``W`` columns; row ``g``'s own documents are ``g + k * W``.
    """
    own_sim, n_own = _check(sim, own_sim, rows)
    count = sim.shape[0]
    lse, hardest = (torch.empty(count, dtype=torch.float32, device=sim.device) for _ in range(2))
    masked, duplicates = (torch.empty(count, dtype=torch.int32, device=sim.device) for _ in range(2))
    blocks = ELEMENTWISE_BLOCKS["row_lse"]
    with _on_device(sim):
        _row_lse_kernel[(triton.cdiv(count, blocks.BM),)](
            sim, sim.stride(0), own_sim, rows.ids, rows.threshold, rows.scale, lse, hardest, masked, duplicates,
            rows.row0, count, sim.shape[1], world, n_own, float(rows.penalty[1]), PENALTY_CODES[rows.penalty[0]],
            BM=blocks.BM, BN=blocks.BN, num_warps=blocks.num_warps,
        )  # fmt: skip
    return RowStatistics(lse, hardest, masked, duplicates)


def column_lse(sim: Tensor, rows: RowInputs, columns: ColumnInputs) -> Tensor:
    """``(W,)`` float32: per column ``j < W`` of ``sim``, the logsumexp over the chunk's rows of the
    doc_to_query logits (column ``j``'s threshold and identity, the positive left out; -inf when none is kept).
    ``rows`` gives the scale and the chunk's first row; the rows' identities are ``columns.ids[g]``."""
    _check(sim, None, rows)
    world = columns.ids.shape[0]
    out = torch.empty(world, dtype=torch.float32, device=sim.device)
    blocks = ELEMENTWISE_BLOCKS["column_lse"]
    with _on_device(sim):
        _column_lse_kernel[(triton.cdiv(world, blocks.BN),)](
            sim, sim.stride(0), columns.ids, columns.threshold, rows.scale, out, rows.row0, sim.shape[0], world,
            BM=blocks.BM, BN=blocks.BN, num_warps=blocks.num_warps,
        )  # fmt: skip
    return out


def probabilities(
    sim: Tensor,
    own_sim: Tensor | None,
    rows: RowInputs,
    norm: Tensor,
    dtype: torch.dtype,
    world: int,
    columns: ColumnInputs | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``d loss / d sim`` of a chunk, unweighted, written over ``sim`` in place (Liger-Kernel's fused linear
    cross-entropy writes the gradient of the logits into the logits): ``G``, the probabilities of every entry but
    the positive (0 there and on excluded entries), in ``dtype``.

    A 16-bit ``G`` is a view of the first half of each float32 row of ``sim``, with ``sim``'s row stride: a program
    owns its rows and writes each step's entries over bytes of its row it has read already, so the chunk costs 4
    bytes a logit, not 6. ``sim`` is overwritten.

    Args:
        sim, own_sim, rows, world: As in :func:`row_statistics`; ``sim``'s rows must be contiguous.
        norm: ``(R,)`` float32 normaliser of each row's logits.
        dtype: The products' dtype: float32 (``G`` is ``sim``), bfloat16 or float16.
        columns: Also doc_to_query read down the columns ``j < W`` (:class:`ColumnInputs` with ``norm``).

    Returns:
        ``(G, own_p, psim)``: the ``(R, N)`` view, ``(R, n)`` float32 probabilities of the own negatives (``None``
        without), and ``(R,)`` float32 sums of ``p * sim`` over each row's entries (both directions).
    """
    own_sim, n_own = _check(sim, own_sim, rows)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    count, ncols = sim.shape
    out = sim if dtype == torch.float32 else sim.view(dtype)[:, :ncols]
    own_p = torch.empty((count, n_own), dtype=torch.float32, device=sim.device)
    psim = torch.empty(count, dtype=torch.float32, device=sim.device)
    blocks = ELEMENTWISE_BLOCKS["probabilities"]
    by_columns = columns is not None
    column = columns if by_columns else ColumnInputs(rows.ids, rows.threshold, norm)  # unread placeholders
    with _on_device(sim):
        _probabilities_kernel[(triton.cdiv(count, blocks.BM),)](
            sim, sim.stride(0), own_sim, out, out.stride(0), own_p, psim,
            rows.ids, rows.threshold, norm, column.ids, column.threshold, column.norm, rows.scale,
            rows.row0, count, ncols, world, n_own, float(rows.penalty[1]), PENALTY_CODES[rows.penalty[0]],
            BM=blocks.BM, BN=blocks.BN, COLUMNS=by_columns,
            num_warps=blocks.num_warps,
        )  # fmt: skip
    return out, (own_p if n_own else None), psim
