"""The Inf-CL-style loss (Wang et al. 2024), kept in the benchmarks as the alternative MNRPlus's kernel was chosen
against: cosine ``query_to_doc`` with a shared candidate pool, candidate-column tiles with an online logsumexp,
tiles recomputed in backward (four matrix products per tile where MNRPlus's fused tiles need three).

Not part of the library: ``bench_loss.py`` times it beside MNRPlus and MNRL, and ``test_infcl_variant_matches_mnrl``
there checks it against MNRL so that the timing compares like with like.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["infcl_mnr_loss"]

_NEG_INF = float("-inf")


def _row_logsumexp_(z: Tensor) -> Tensor:
    """Row logsumexp of ``z``, overwriting ``z`` (max shift, exp and sum in place: no tile-sized temporaries)."""
    if z.shape[1] == 0:
        return torch.full((z.shape[0],), _NEG_INF, dtype=z.dtype, device=z.device)
    m = z.amax(dim=1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + z.sub_(m[:, None]).exp_().sum(dim=1).log()


class _InfCLFunction(torch.autograd.Function):
    """query_to_doc only, shared negatives, no masks: candidate-column tiles, online logsumexp, recompute."""

    @staticmethod
    def forward(ctx: Any, queries: Tensor, candidates: Tensor, scale: float, tile_cols: int) -> Tensor:
        B = queries.shape[0]
        lse = torch.full((B,), _NEG_INF, dtype=queries.dtype, device=queries.device)
        for c0 in range(0, candidates.shape[0], tile_cols):
            z = torch.mm(queries, candidates[c0 : c0 + tile_cols].T).mul_(scale)  # (B, tile_cols)
            lse = torch.logaddexp(lse, _row_logsumexp_(z))
        pos = (queries * candidates[:B]).sum(dim=1)
        ctx.save_for_backward(queries, candidates, lse)
        ctx.scale, ctx.tile_cols = scale, tile_cols
        return lse.mean() - scale * pos.mean()

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        queries, candidates, lse = ctx.saved_tensors
        scale, tile_cols = ctx.scale, ctx.tile_cols
        B = queries.shape[0]
        w = float(grad_loss) / B
        dq = torch.zeros_like(queries)
        dc = torch.zeros_like(candidates)
        for c0 in range(0, candidates.shape[0], tile_cols):
            c_t = candidates[c0 : c0 + tile_cols]
            p = torch.mm(queries, c_t.T).mul_(scale).sub_(lse[:, None]).exp_()  # (B, tile_cols) recomputed
            dq.addmm_(p, c_t, alpha=w * scale)
            dc[c0 : c0 + tile_cols] = torch.mm(p.T, queries).mul_(w * scale)
        dq.sub_(candidates[:B], alpha=w * scale)
        dc[:B].sub_(queries, alpha=w * scale)
        return dq, dc, None, None


def infcl_mnr_loss(queries: Tensor, candidates: Tensor, scale: float = 20.0, tile_cols: int = 2048) -> Tensor:
    """Inf-CL-style loss: cosine query_to_doc with a shared pool, tiles recomputed in backward.

    Args:
        queries: ``(B, d)`` anchor embeddings.
        candidates: ``(B * (1 + n), d)``: the positives, then each hard-negative column.
        scale: Inverse temperature.
        tile_cols: Candidate columns per tile.
    """
    if tile_cols < 1:
        raise ValueError(f"tile_cols must be positive, got {tile_cols}")
    compute = torch.float64 if queries.dtype == torch.float64 else torch.float32
    q = F.normalize(queries.to(compute), p=2, dim=1)
    c = F.normalize(candidates.to(compute), p=2, dim=1)
    return _InfCLFunction.apply(q, c, float(scale), tile_cols)
