"""The MNR loss on the GPU path: row chunks, cuBLAS products, one element-wise Triton pass per chunk.

Liger-Kernel's fused linear cross-entropy (``ops/fused_linear_cross_entropy.py``) applied to contrastive logits.
The anchors are processed in chunks of ``R`` rows, sized from a memory budget (:func:`.kernel_config.chunk_rows`);
for each chunk:

1. ``S = X Y^T``: the chunk's similarities, ``(R, N)`` float32, from operands in the products' dtype
   (:func:`.kernel_config.product_dtype`: bfloat16/float16 under autocast or for 16-bit embeddings);
2. ``row_lse`` (:mod:`.kernels`): each row's logsumexp without the positive, and its statistics;
3. ``probabilities``: ``G``, the probabilities of every entry but the positive, in the products' dtype,
   written over ``S`` (a chunk costs 4 bytes a logit);
4. ``grad_X += G Y`` and ``grad_Y += G^T X``, float32 output and accumulation.

Three products, as MNRL does, and never a ``B x B`` matrix. The loss is the last operation, so the gradients are
computed in the forward and saved; ``backward`` only multiplies them by the incoming gradient. doc_to_query
without gathering is read down the columns of the same similarities: its normalisers need every chunk, so a first
pass computes the logsumexps (rows and columns) and a second one computes the similarities again for the
gradients: four products. Gathered, it is scored by rows in the same pass (three products more, of ``L x W``).

The positive term never goes through ``G``: its coefficient is ``-(weight) * sum_dir exp(lse_without_positive -
normaliser)``, formed in float32 from the logsumexps, and added with the float32 embeddings. For a row whose
positive holds all but 5e-7 of the probability, bfloat16 ``p_pos - 1`` would be 0 or 2^-8; this keeps the
gradient's relative precision that of the other probabilities. Cosine similarity is normalised here, in float32,
and the gradients are projected back through the normalisation, as on the PyTorch path.

On CPU tensors (Triton's interpreter, ``TRITON_INTERPRET=1``) the same code runs: the kernels interpreted, the
products as float32 CPU matmuls of the operands rounded to the products' dtype (what cuBLAS computes with float32
accumulation), so the tests count the products, trace the bytes and measure the precision of this very path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor

from st_mnr_plus.losses import kernels
from st_mnr_plus.losses.kernel_config import HALF_DTYPES, chunk_rows
from st_mnr_plus.losses.kernels import ColumnInputs, RowInputs
from st_mnr_plus.losses.ops import Ids, inverse_norms, row_dot

__all__ = ["chunked_mnr_loss", "in_product"]

_PRODUCT = threading.local()


def in_product() -> bool:
    """Whether the current thread is inside one of this module's matrix products. On CPU tensors a 16-bit
    product is emulated by float32 copies of its operands: an op trace counts that work as the product's, not as
    an element-wise pass (a GPU runs it as one cuBLAS call)."""
    return getattr(_PRODUCT, "depth", 0) > 0


@contextmanager
def _product() -> Iterator[None]:
    _PRODUCT.depth = getattr(_PRODUCT, "depth", 0) + 1
    try:
        yield
    finally:
        _PRODUCT.depth -= 1


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with float32 output: cuBLAS with 16-bit operands and float32 output on CUDA, float32 CPU
    matmuls of the (already rounded) operands on the CPU."""
    with _product():
        if a.is_cuda and a.dtype in HALF_DTYPES:
            return torch.mm(a, b, out_dtype=torch.float32)
        return torch.mm(a.float(), b.float())


def _addmm_(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b`` into a float32 ``out``, accumulated in float32 (no temporary of ``out``'s size on CUDA)."""
    with _product():
        if a.is_cuda and a.dtype in HALF_DTYPES:
            torch.addmm(out, a, b, out_dtype=torch.float32, out=out)
        else:
            torch.addmm(out, a.float(), b.float(), out=out)


class _Problem(NamedTuple):
    """The operands, in the products' dtype, and the layout of one loss computation."""

    x: Tensor  # (W, d) queries, rounded to the products' dtype
    y: Tensor  # (W * (1 + n), d) candidates, likewise
    offset: int
    local: int
    world: int
    n_own: int  # own negatives per row (hard_negatives="own"), else 0
    ncols: int  # dense columns of query_to_doc: W under own, else W * (1 + n)
    columns_read: bool  # doc_to_query read down the columns (no gathering)
    by_rows: bool  # doc_to_query scored by rows (gathered)


def _own_similarities(p: _Problem, g0: int, g1: int) -> Tensor | None:
    """``(R, n)`` float32 similarities of rows ``g0:g1`` with their own hard negatives, or ``None``."""
    if not p.n_own:
        return None
    negatives = p.y[p.world :].view(p.n_own, p.world, -1)[:, g0:g1]  # (n, R, d)
    with _product():
        return torch.einsum("rd,krd->rk", p.x[g0:g1].float(), negatives.float()).contiguous()


def _own_gradients(p: _Problem, g0: int, g1: int, own_p: Tensor, grad_x: Tensor, grad_y: Tensor) -> None:
    negatives = p.y[p.world :].view(p.n_own, p.world, -1)[:, g0:g1]
    with _product():
        grad_x[g0:g1] += torch.einsum("rk,krd->rd", own_p, negatives.float())
        grad_y[p.world :].view(p.n_own, p.world, -1)[:, g0:g1] += torch.einsum("rk,rd->krd", own_p, p.x[g0:g1].float())


def _ids(p: _Problem, ids: Ids | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(query_ids, candidate_ids)``: the given identities, or unique ones (nothing is a duplicate)."""
    if ids is None:
        return torch.arange(p.world, device=device), torch.arange(p.y.shape[0], device=device)
    return ids.queries.contiguous(), ids.candidates.contiguous()


def _normalisers(lse: dict[str, Tensor], positive_logit: Tensor, spec: Any) -> tuple[dict[str, Tensor], Tensor]:
    """From each direction's logsumexp without the positive: the normaliser each direction's probabilities use,
    and the per-row normaliser of the loss (joint: one over both directions; per_direction: their mean)."""
    full = {d: torch.logaddexp(value, positive_logit) for d, value in lse.items()}
    if len(full) == 1:
        (only,) = full.values()
        return {d: only for d in full}, only
    if spec.partition_mode == "per_direction":
        return full, (full["query_to_doc"] + full["doc_to_query"]) / 2
    joint = torch.logaddexp(full["query_to_doc"], full["doc_to_query"])
    return {d: joint for d in full}, joint


def _stats(p: _Problem, positive: Tensor, hardest: Tensor, masked: Tensor, duplicates: Tensor) -> Tensor:
    """The :data:`~st_mnr_plus.losses.ops.STAT_NAMES` sums of query_to_doc, from the kernel's per-row figures."""
    has_negative = torch.isfinite(hardest)
    columns = p.ncols + p.n_own
    return torch.stack(
        [
            ((positive > hardest) | ~has_negative).sum().float(),
            positive.sum(),
            torch.where(has_negative, hardest, torch.zeros_like(hardest)).sum(),
            has_negative.sum().float(),
            masked.sum().float(),
            duplicates.sum().float(),
            positive.new_tensor(float((columns - 1) * positive.shape[0])),
        ]
    )


class _Run:
    """One forward of the GPU path: the operands, the chunks and the float32 buffers the passes fill."""

    def __init__(self, queries, candidates, scale, spec, ids, thresholds, dtype, normalize) -> None:
        world, n_all = queries.shape[0], candidates.shape[0]
        negatives = n_all // world - 1
        own = spec.hard_negatives == "own" and negatives > 0
        self.q, self.c = queries.detach(), candidates.detach()
        self.inverse = (_inverse_norms(self.q), _inverse_norms(self.c)) if normalize else None
        x, y = _operand(self.q, self.inverse, 0, dtype), _operand(self.c, self.inverse, 1, dtype)  # rounded once
        doc_to_query = "doc_to_query" in spec.directions
        columns_read = doc_to_query and spec.offset == 0 and spec.local_batch == world
        self.p = p = _Problem(
            x, y, spec.offset, spec.local_batch, world, negatives if own else 0, world if own else n_all,
            columns_read, doc_to_query and not columns_read,
        )  # fmt: skip
        self.spec, self.dtype, device = spec, dtype, queries.device
        self.query_ids, self.candidate_ids = _ids(p, ids, device)
        self.rows = slice(p.offset, p.offset + p.local)
        self.positive = row_dot(x[self.rows], y[self.rows])  # (L,) the positives' similarities, as products see
        bound = thresholds(self.positive)
        self.threshold = torch.full_like(self.positive, float("inf")) if bound is None else bound.float().contiguous()
        self.s = scale.reshape(1).float().contiguous()
        row_bytes = (p.ncols + (world if p.by_rows else 0)) * 4  # S, with G written over it
        step = chunk_rows(p.local, row_bytes, tile_size=spec.tile_size)
        self.chunks = [(r0, min(r0 + step, p.local)) for r0 in range(0, p.local, step)]
        self.grad_x = torch.zeros(x.shape, dtype=torch.float32, device=device)
        self.grad_y = torch.zeros(y.shape, dtype=torch.float32, device=device)
        empty = lambda kind: torch.empty(p.local, dtype=kind, device=device)  # noqa: E731
        self.lse = {"query_to_doc": empty(torch.float32)}
        self.hardest, self.masked, self.duplicates = empty(torch.float32), empty(torch.int32), empty(torch.int32)
        self.psim = torch.zeros((), dtype=torch.float32, device=device)

    def inputs(self, r0: int, r1: int, ids: Tensor, penalty=None) -> RowInputs:
        return RowInputs(ids, self.threshold[r0:r1], self.s, penalty or self.spec.penalty, self.p.offset + r0)

    def similarities(self, r0: int, r1: int) -> tuple[Tensor, Tensor | None]:
        """The chunk's query_to_doc similarities ``(R, ncols)`` and own-negative ones ``(R, n)``."""
        p, g0, g1 = self.p, self.p.offset + r0, self.p.offset + r1
        return _mm(p.x[g0:g1], p.y[: p.ncols].T), _own_similarities(p, g0, g1)

    def row_statistics(self, r0: int, r1: int, sim: Tensor, own_sim: Tensor | None) -> None:
        stats = kernels.row_statistics(sim, own_sim, self.inputs(r0, r1, self.candidate_ids), self.p.world)
        self.lse["query_to_doc"][r0:r1], self.hardest[r0:r1] = stats.lse, stats.hardest
        self.masked[r0:r1], self.duplicates[r0:r1] = stats.masked, stats.duplicates

    def gradients(self, r0: int, r1: int, sim, own_sim, norm: Tensor, columns=None) -> None:
        rows = self.inputs(r0, r1, self.candidate_ids)
        self.psim += _gradients(self.p, r0, r1, sim, own_sim, rows, norm, self.grad_x, self.grad_y, columns)

    def columns_read(self) -> dict[str, Tensor]:
        """doc_to_query down the columns: pass 1, the logsumexps of rows and columns; pass 2, the gradients."""
        p = self.p
        column = torch.full((p.world,), float("-inf"), dtype=torch.float32, device=self.s.device)
        for r0, r1 in self.chunks:
            sim, own_sim = self.similarities(r0, r1)
            self.row_statistics(r0, r1, sim, own_sim)
            inputs = ColumnInputs(self.query_ids, self.threshold)
            part = kernels.column_lse(sim[:, : p.world], self.inputs(r0, r1, self.query_ids), inputs)
            column = torch.logaddexp(column, part)
            del sim, own_sim
        self.lse["doc_to_query"] = column
        norms, _ = _normalisers(self.lse, self.s * self.positive, self.spec)
        columns = ColumnInputs(self.query_ids, self.threshold, norms["doc_to_query"].contiguous())
        for r0, r1 in self.chunks:
            sim, own_sim = self.similarities(r0, r1)
            self.gradients(r0, r1, sim, own_sim, norms["query_to_doc"][r0:r1], columns)
            del sim, own_sim
        return norms

    def by_rows(self) -> dict[str, Tensor]:
        """Every direction by rows, one pass: query_to_doc, and doc_to_query of this rank's positives when
        gathered (``x`` and ``y`` swap roles: the rows are positives, the columns every query)."""
        p, s = self.p, self.s
        if p.by_rows:
            self.lse["doc_to_query"] = torch.empty(p.local, dtype=torch.float32, device=s.device)
        for r0, r1 in self.chunks:
            sim, own_sim = self.similarities(r0, r1)
            self.row_statistics(r0, r1, sim, own_sim)
            chunk_lse = {"query_to_doc": self.lse["query_to_doc"][r0:r1]}
            g0, g1 = p.offset + r0, p.offset + r1
            if p.by_rows:
                back = _mm(p.y[g0:g1], p.x.T)
                back_inputs = self.inputs(r0, r1, self.query_ids, (None, 0.0))
                chunk_lse["doc_to_query"] = kernels.row_statistics(back, None, back_inputs, p.world).lse
                self.lse["doc_to_query"][r0:r1] = chunk_lse["doc_to_query"]
            norms, _ = _normalisers(chunk_lse, s * self.positive[r0:r1], self.spec)
            self.gradients(r0, r1, sim, own_sim, norms["query_to_doc"])
            if p.by_rows:
                out, _, back_psim = kernels.probabilities(
                    back, None, back_inputs, norms["doc_to_query"], self.dtype, p.world
                )
                self.psim += back_psim.sum()
                _addmm_(self.grad_y[g0:g1], out, p.x)
                _addmm_(self.grad_x, out.T, p.y[g0:g1])
                del back, out
            del sim, own_sim  # before the next chunk's product: one chunk alive at a time
        return _normalisers(self.lse, s * self.positive, self.spec)[0]

    def finish(self, norms: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """The positive term, the weight, the scale's gradient, the projection through the normalisation."""
        p, weight, positive = self.p, self.spec.row_weight(), self.positive
        # The positive pair's coefficient: -(weight) * (1 - p_pos) per direction, from the logsumexps without it.
        coefficient = -weight * sum(torch.exp(self.lse[d] - norms[d]) for d in self.lse)
        self.grad_x.mul_(weight)
        self.grad_y.mul_(weight)
        self.grad_x[self.rows].addcmul_(p.y[self.rows], coefficient[:, None])
        self.grad_y[self.rows].addcmul_(p.x[self.rows], coefficient[:, None])
        d_scale = weight * self.psim + (coefficient * positive).sum()
        _, normaliser = _normalisers(self.lse, self.s * positive, self.spec)
        loss = normaliser.mean() - self.s[0] * positive.mean()
        stats = _stats(p, positive, self.hardest, self.masked, self.duplicates)
        d_queries = _project(self.grad_x, self.q, self.inverse, 0).mul_(self.s)
        d_candidates = _project(self.grad_y, self.c, self.inverse, 1).mul_(self.s)
        return loss, stats, d_queries, d_candidates, d_scale


def _forward(queries, candidates, scale, spec, ids, thresholds, dtype, normalize) -> tuple[Tensor, ...]:
    """Loss, statistics and the float32 gradients ``(d_queries, d_candidates, d_scale)``."""
    run = _Run(queries, candidates, scale, spec, ids, thresholds, dtype, normalize)
    return run.finish(run.columns_read() if run.p.columns_read else run.by_rows())


def _gradients(p: _Problem, r0, r1, sim, own_sim, rows: RowInputs, norm, grad_x, grad_y, columns=None) -> Tensor:
    """``G`` of a chunk, then ``grad_x[rows] += G y`` and ``grad_y += G^T x`` (unweighted); returns the chunk's
    sum of ``p * sim``."""
    out, own_p, psim = kernels.probabilities(sim, own_sim, rows, norm.contiguous(), p.x.dtype, p.world, columns)
    g0, g1 = p.offset + r0, p.offset + r1
    _addmm_(grad_x[g0:g1], out, p.y[: p.ncols])
    _addmm_(grad_y[: p.ncols], out.T, p.x[g0:g1])
    if own_p is not None:
        _own_gradients(p, g0, g1, own_p, grad_x, grad_y)
    return psim.sum()


def _inverse_norms(u: Tensor, chunk: int = 4096) -> Tensor:
    """``(rows,)`` float32 ``1 / max(||u_i||, 1e-12)``, in row chunks: no float32 copy of a 16-bit ``u``."""
    return torch.cat([inverse_norms(u[r0 : r0 + chunk].float()) for r0 in range(0, u.shape[0], chunk)])


def _operand(u: Tensor, inverse: tuple[Tensor, Tensor] | None, side: int, dtype: torch.dtype, chunk: int = 4096):
    """``u`` (normalised in float32 with ``inverse``) in the products' dtype, made in row chunks so that no
    float32 copy of the whole matrix is ever held: the products' operands and the gradients are the only
    ``(rows, d)`` matrices this path keeps."""
    if inverse is None:
        return u if u.dtype == dtype else u.to(dtype)
    out = torch.empty(u.shape, dtype=dtype, device=u.device)
    for r0 in range(0, u.shape[0], chunk):
        rows = slice(r0, r0 + chunk)
        out[rows] = u[rows].float() * inverse[side][rows, None]
    return out


def _project(grad: Tensor, u: Tensor, inverse: tuple[Tensor, Tensor] | None, side: int, chunk: int = 4096):
    """Through ``x = u / ||u||``: ``(G - (x . G) x) / ||u||`` in place, with ``x`` made from ``u`` chunk by
    chunk."""
    if inverse is None:
        return grad
    for r0 in range(0, u.shape[0], chunk):
        rows = slice(r0, r0 + chunk)
        x = u[rows].float() * inverse[side][rows, None]
        along = torch.einsum("rd,rd->r", x, grad[rows])
        grad[rows].addcmul_(x, along[:, None], value=-1.0).mul_(inverse[side][rows, None])
    return grad


class _ChunkedMNRFunction(torch.autograd.Function):
    """Loss and statistics in forward, with every gradient computed there and saved; backward scales them."""

    @staticmethod
    def forward(ctx, queries, candidates, scale, ids, spec, thresholds, dtype, normalize):
        s = (scale.detach() if isinstance(scale, Tensor) else torch.tensor(float(scale))).to(queries.device)
        with torch.autocast(device_type=queries.device.type, enabled=False):
            loss, stats, d_queries, d_candidates, d_scale = _forward(
                queries, candidates, s, spec, ids, thresholds, dtype, normalize
            )
        ctx.save_for_backward(d_queries, d_candidates, d_scale)
        ctx.input_dtypes = (queries.dtype, candidates.dtype, scale.dtype if isinstance(scale, Tensor) else None)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_stats: Tensor):
        # Multiply in float32, then cast once: an fp16 input under GradScaler's 2**16 loss scale must not see the
        # scaled gradient in fp16 before the product is known. A loss used as is (incoming gradient 1, as Liger's
        # fused linear cross-entropy checks) hands the saved gradients over without a second copy of them.
        unit = torch.equal(grad_loss, torch.ones_like(grad_loss))
        out: list[Tensor | None] = []
        for k, (grad, dtype) in enumerate(zip(ctx.saved_tensors, ctx.input_dtypes, strict=True)):
            if not ctx.needs_input_grad[k]:
                out.append(None)
                continue
            out.append((grad if unit else grad * grad_loss.to(grad.dtype)).to(dtype))
        return (*out, None, None, None, None, None)


def chunked_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: Any,
    ids: Ids | None,
    thresholds,
    dtype: torch.dtype,
    normalize: bool,
) -> tuple[Tensor, Tensor]:
    """``(loss, stats)`` on the GPU path.

    Args:
        queries: ``(W, d)`` queries, every rank's when gathered (float32, bfloat16 or float16).
        candidates: ``(W * (1 + n), d)``: the positives, then each hard-negative column.
        scale: The scale; a tensor that requires grad gets its gradient.
        spec: The :class:`~st_mnr_plus.losses.functional.MNRSpec` (options the path covers, checked by the
            caller).
        ids: Row identities for duplicate masking, or ``None``.
        thresholds: ``thresholds(positive) -> (L,) bound or None``: the false-negative bounds from the positives'
            similarities.
        dtype: The products' dtype (:func:`.kernel_config.product_dtype`).
        normalize: Cosine similarity: normalise here and project the gradients back.

    Returns:
        The float32 scalar loss and the detached :data:`~st_mnr_plus.losses.ops.STAT_NAMES` sums.
    """
    return _ChunkedMNRFunction.apply(queries, candidates, scale, ids, spec, thresholds, dtype, normalize)
