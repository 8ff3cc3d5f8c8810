"""The MNR loss on the fused Triton kernels (:mod:`.kernels`): one autograd Function, chosen by :mod:`.functional`.

What it computes is :func:`~st_mnr_plus.losses.functional.tiled_mnr_loss`'s, for the options the kernels cover
(``query_to_doc`` with or without ``doc_to_query``, joint or per-direction partition, shared or own hard
negatives, duplicate masking by row identity, the false-negative bounds, a fixed or learnable scale): the
forward kernel writes each anchor's logsumexps and statistics, never a ``B x B`` tile; the backward kernels
recompute the tiles from the inputs and the saved normalisers. The positive term, the scale's gradient and the
scale factor come from :func:`.ops.finish_gradients`, as on the PyTorch path.

The inputs are already normalised for cosine similarity (by the caller, under autograd, which then differentiates
the normalisation), and the kernels read them in their own dtype: bfloat16 and float16 run on the tensor cores
with float32 accumulation. Under autocast the kernels see the embeddings as they come; logsumexps and gradients
are float32, cast to each input's dtype once, after the incoming gradient is applied.

Needs triton, imported on first use: this module imports :mod:`.kernels`, which imports triton.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from st_mnr_plus.losses import kernels
from st_mnr_plus.losses.ops import Ids, Pool, finish_gradients

__all__ = ["fused_mnr_loss"]


def _normalisers(forward: kernels.MNRForward, spec: Any) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(norm_q2d, norm_d2q, per-row normaliser)`` of the directions, as the PyTorch path combines them."""
    q2d, d2q = forward.lse_q2d, forward.lse_d2q
    if d2q is None:
        return q2d, None, q2d
    if spec.partition_mode == "per_direction":
        return q2d, d2q, (q2d + d2q) / 2
    joint = torch.logaddexp(q2d, d2q)
    return joint, joint, joint


def _stats(forward: kernels.MNRForward, positive: Tensor, columns: int) -> Tensor:
    """The :data:`~st_mnr_plus.losses.ops.STAT_NAMES` sums, in that order, from the kernel's per-row figures
    (query_to_doc), as :func:`.ops.tile_stats` sums them on the PyTorch path."""
    hardest = forward.hardest
    has_negative = torch.isfinite(hardest)
    return torch.stack(
        [
            ((positive > hardest) | ~has_negative).sum().float(),
            positive.sum(),
            torch.where(has_negative, hardest, torch.zeros_like(hardest)).sum(),
            has_negative.sum().float(),
            forward.masked.sum().float(),
            forward.duplicates.sum().float(),
            positive.new_tensor(float((columns - 1) * positive.shape[0])),
        ]
    )


class _FusedMNRFunction(torch.autograd.Function):
    """Loss and statistics from the forward kernel; gradients from the backward kernels, in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        queries: Tensor,
        candidates: Tensor,
        scale: float | Tensor,
        ids: Ids | None,
        threshold: Tensor | None,
        positive: Tensor,
        spec: Any,
    ) -> tuple[Tensor, Tensor]:
        q, c = queries.detach().contiguous(), candidates.detach().contiguous()
        s = (scale.detach() if isinstance(scale, Tensor) else torch.tensor(scale)).to(q.device, torch.float32)
        own = spec.hard_negatives == "own" and c.shape[0] > q.shape[0]
        doc_to_query = "doc_to_query" in spec.directions
        launch = {
            "offset": spec.offset,
            "local": spec.local_batch,
            "own": own,
            "doc_to_query": doc_to_query,
            "query_ids": None if ids is None else ids.queries,
            "candidate_ids": None if ids is None else ids.candidates,
            "threshold": threshold,
        }
        forward = kernels.mnr_forward(q, c, s, **launch)
        norm_q2d, norm_d2q, normaliser = _normalisers(forward, spec)
        loss = normaliser.mean() - s * positive.mean()
        columns = q.shape[0] + c.shape[0] // q.shape[0] - 1 if own else c.shape[0]
        stats = _stats(forward, positive, columns)
        ctx.save_for_backward(q, c, s, norm_q2d, norm_d2q if norm_d2q is not None else norm_q2d)
        ctx.launch, ctx.spec = launch, spec
        ctx.input_dtypes = (queries.dtype, candidates.dtype, scale.dtype if isinstance(scale, Tensor) else None)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_stats: Tensor) -> tuple[Tensor | None, ...]:
        q, c, s, norm_q2d, norm_d2q = ctx.saved_tensors
        spec, launch = ctx.spec, ctx.launch
        per_direction = launch["doc_to_query"] and spec.partition_mode == "per_direction"
        weight = 1.0 / (spec.local_batch * (2 if per_direction else 1))
        grads = kernels.mnr_backward(q, c, s, norm_q2d, norm_d2q if launch["doc_to_query"] else None, weight, **launch)
        pool = Pool(q.float(), c.float(), spec.offset, spec.local_batch)
        buffers = Pool(grads.grad_q, grads.grad_c, spec.offset, spec.local_batch)
        d_queries, d_candidates, d_scale = finish_gradients(pool, buffers, s, None)
        out: list[Tensor | None] = []
        for k, (grad, dtype) in enumerate(zip((d_queries, d_candidates, d_scale), ctx.input_dtypes, strict=True)):
            out.append((grad * grad_loss.to(grad.dtype)).to(dtype) if ctx.needs_input_grad[k] else None)
        return (*out, None, None, None, None)


def fused_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: Any,
    ids: Ids | None,
    threshold: Tensor | None,
    positive: Tensor,
) -> tuple[Tensor, Tensor]:
    """``(loss, stats)`` on the kernels, from the (normalised) queries and candidates.

    Args:
        queries: ``(W, d)`` queries, every rank's when gathered; float32, bfloat16 or float16.
        candidates: ``(W * (1 + n), d)``: the positives, then each hard-negative column; the queries' dtype.
        scale: The scale; a tensor that requires grad gets its gradient.
        spec: The :class:`~st_mnr_plus.losses.functional.MNRSpec` (options the kernels cover, checked by the
            caller).
        ids: Row identities for duplicate masking, or ``None``.
        threshold: ``(local,)`` float32 false-negative bound of each anchor, or ``None``.
        positive: ``(local,)`` float32 similarity of each anchor with its positive (no graph).

    Returns:
        The float32 scalar loss and the detached :data:`~st_mnr_plus.losses.ops.STAT_NAMES` sums.
    """
    return _FusedMNRFunction.apply(queries, candidates, scale, ids, threshold, positive, spec)
