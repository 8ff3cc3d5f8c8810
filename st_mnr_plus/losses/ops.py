"""The per-tile math of the MNR loss, as small functions of tensors: scores -> masked logits -> logsumexp parts.

A *tile* is a slice of anchor rows. For each direction it yields a :class:`Block` of logits, ``scale * sim`` (plus
the hardness penalty ``alpha * stop_grad(sim)`` on penalised entries) with excluded candidates at ``-inf``:

========================  =====================  ========================================================
direction                 rows (``x``)           columns (``y``)
========================  =====================  ========================================================
``query_to_doc``          the tile's anchors     every candidate (positives, then each negative column);
                                                 with ``hard_negatives="own"``: the positives, plus an
                                                 *own* block of each anchor against its own negatives
``query_to_query``        the tile's anchors     every query (never the anchor itself)
``doc_to_query``          the tile's positives   every query; or, read down the columns of the
                                                 query_to_doc block (:func:`column_block`)
``doc_to_doc``            the tile's positives   every candidate (never a document of the same query)
========================  =====================  ========================================================

The loss of row ``i`` is ``normaliser_i - scale * sim(q_i, p_i)``, where the normaliser is the logsumexp of all of
the row's logits (``partition_mode="joint"``) or the mean over directions of each direction's logsumexp
(``"per_direction"``). Its gradient with respect to a logit is the softmax probability of that logit under the
normaliser, times the row's weight; the penalty is a stop-gradient, so the gradient with respect to the
similarity is ``scale`` times that, and :func:`accumulate` turns it into embedding gradients with two matrix
products per block. :func:`finish_gradients` adds the positive term, derives the scale's gradient and projects
through the cosine normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "STAT_NAMES",
    "Block",
    "Pool",
    "Tile",
    "accumulate",
    "column_block",
    "exclusion_mask",
    "finish_gradients",
    "inverse_norms",
    "logits",
    "logsumexp_",
    "penalised_columns",
    "probabilities_",
    "row_blocks",
    "row_dot",
    "tile_stats",
]

Similarity = Callable[[Tensor, Tensor], Tensor]

NEG_INF = float("-inf")

# Order of the entries of the statistics tensor (sums over this rank's rows, query_to_doc only).
STAT_NAMES: tuple[str, ...] = (
    "correct",  # rows whose positive beats every unmasked negative (raw similarity)
    "positive_similarity_sum",
    "hardest_negative_similarity_sum",
    "rows_with_negatives",  # rows that have at least one unmasked negative
    "masked",  # negatives excluded as duplicates or by the false-negative filter
    "masked_duplicates",  # ... of which as duplicates
    "negatives",  # negatives before masking
)


def dot(x: Tensor, y: Tensor) -> Tensor:
    """``(rows, cols)`` dot products: cosine on normalised inputs."""
    return x @ y.T


@dataclass(frozen=True)
class Pool:
    """Queries and candidates as the loss reads them, or gradient buffers laid out the same way.

    ``queries`` is ``(B, d)`` (every rank's rows when gathered); ``candidates`` is ``(B * (1 + n), d)``: all
    positives, then each hard-negative column, so that candidate ``k * B + j`` belongs to query ``j``. This rank's
    rows are ``offset : offset + local``.
    """

    queries: Tensor
    candidates: Tensor
    offset: int
    local: int

    @property
    def world(self) -> int:
        return self.queries.shape[0]

    @property
    def negatives(self) -> int:
        return self.candidates.shape[0] // self.world - 1

    def anchors(self, r0: int, r1: int) -> Tensor:
        return self.queries[self.offset + r0 : self.offset + r1]

    def positives(self, r0: int, r1: int) -> Tensor:
        return self.candidates[self.offset + r0 : self.offset + r1]

    def documents(self, own: bool) -> Tensor:
        """The candidates every row is scored against: all of them, or only the positives under ``own``."""
        return self.candidates[: self.world] if own else self.candidates

    def own_negatives(self, r0: int, r1: int) -> Tensor:
        """``(n, rows, d)`` view: hard negative ``k`` of each row of the tile."""
        n, world, dim = self.negatives, self.world, self.candidates.shape[1]
        return self.candidates[world:].view(n, world, dim)[:, self.offset + r0 : self.offset + r1]


@dataclass(frozen=True)
class Ids:
    """Row identities (see :func:`~st_mnr_plus.losses.identity.row_hashes`) in the layout of a :class:`Pool`."""

    queries: Tensor
    candidates: Tensor

    def own_negatives(self, pool: Pool, r0: int, r1: int) -> Tensor:
        """``(rows, n)``: the identity of each hard negative of each row of the tile."""
        n, world = pool.negatives, pool.world
        return self.candidates[world:].view(n, world)[:, pool.offset + r0 : pool.offset + r1].T


@dataclass(frozen=True)
class Tile:
    """Anchor rows ``r0 : r1`` of this rank, with what their masks need."""

    r0: int
    r1: int
    cols: Tensor  # (rows,) global index of each row: the column of its positive in the pool, and of itself
    threshold: Tensor | None  # (rows,) similarities above this are false negatives, or None
    anchor_ids: Tensor | None  # (rows,) identity of each row's anchor
    positive_ids: Tensor | None  # (rows,) identity of each row's positive

    @property
    def rows(self) -> int:
        return self.r1 - self.r0


@dataclass
class Block:
    """Logits of one direction for a tile: the rows ``x`` scored against the columns ``y``.

    ``y`` is ``(cols, d)``, or ``(n, rows, d)`` for an *own* block, where each row is scored only against its own
    hard negatives (``logits`` is then ``(rows, n)``). ``x_grad`` and ``y_grad`` are the matching slices of the
    gradient buffers, ``None`` when no gradient is computed.
    """

    direction: str
    logits: Tensor
    x: Tensor
    y: Tensor
    x_grad: Tensor | None = None
    y_grad: Tensor | None = None
    #: The raw scores of the rows against the positives (the first ``world`` columns), kept when asked for:
    #: :func:`column_block` reads doc_to_query from them instead of computing the same product again.
    positive_scores: Tensor | None = None

    @property
    def own(self) -> bool:
        return self.y.ndim == 3


# ---- masks and logits -----------------------------------------------------------------------------------------


def exclusion_mask(
    sim: Tensor,
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    threshold: Tensor | None,
    *,
    threshold_by_column: bool = False,
) -> tuple[Tensor | None, Tensor | None]:
    """Which candidates are dropped from the negatives: ``(excluded, duplicates)``, ``(rows, cols)`` bool or None.

    A candidate is a duplicate when its identity equals the row's (``row_ids[:, None] == col_ids[None, :]``), and
    a false negative when its raw similarity exceeds the row's ``threshold`` (or the column's, with
    ``threshold_by_column``). The caller clears the entry that is the row's own positive.
    """
    duplicates = None if row_ids is None or col_ids is None else row_ids[:, None] == col_ids[None, :]
    excluded = duplicates
    if threshold is not None:
        above = sim > (threshold[None, :] if threshold_by_column else threshold[:, None])
        excluded = above if excluded is None else excluded | above
    return excluded, duplicates


def _keep(entries: tuple[Tensor, Tensor], *masks: Tensor | None) -> None:
    """Clear ``entries`` (the row's positive) in each mask, in place."""
    for mask in masks:
        if mask is not None:
            mask[entries] = False


def _set(mask: Tensor | None, entries: tuple[Tensor, Tensor], shape: torch.Size, device: torch.device) -> Tensor:
    """``mask`` with ``entries`` set (a fresh all-False mask when ``mask`` is None)."""
    out = torch.zeros(shape, dtype=torch.bool, device=device) if mask is None else mask
    out[entries] = True
    return out


def penalised_columns(mode: str | None, cols: Tensor, world: int, groups: int) -> tuple[Tensor, bool] | None:
    """Which query_to_doc entries of a dense block carry the hardness penalty, as ``(own columns, inverted)``.

    ``own columns`` is ``(rows, k)``: the columns of each row's own documents among the block's ``groups`` groups
    of ``world`` columns (its positive first, then its hard negatives). ``inverted`` says the penalty goes to every
    column *except* those. ``None``: no entry of the block is penalised.
    """
    if mode is None:
        return None
    own = cols[:, None] + world * torch.arange(groups, device=cols.device)[None, :]
    if mode == "in_batch_negatives":
        return own, True  # every column but the row's own documents
    if mode == "all_negatives":
        return own[:, :1], True  # every column but the positive
    return (own[:, 1:], False) if groups > 1 else None  # hard_negatives: only the row's own hard negatives


def logits(
    sim: Tensor,
    scale: float | Tensor,
    excluded: Tensor | None = None,
    penalised: tuple[Tensor, bool] | Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """``scale * sim + alpha * stop_grad(sim)`` on penalised entries, ``-inf`` on excluded ones (out of place).

    ``penalised`` is ``(columns, inverted)`` from :func:`penalised_columns`, or a ``(rows, cols)`` bool mask.
    """
    out = sim * scale
    if penalised is not None and alpha > 0:
        if isinstance(penalised, tuple):
            columns, inverted = penalised
            selected = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, columns, True)
            penalised = ~selected if inverted else selected
        out = out + alpha * sim.detach() * penalised
    if excluded is not None:
        out = out.masked_fill(excluded, NEG_INF)
    return out


# ---- the blocks of a tile -------------------------------------------------------------------------------------


def _query_to_doc(
    pool: Pool,
    grads: Pool | None,
    ids: Ids | None,
    tile: Tile,
    own: bool,
    scale,
    penalty,
    similarity,
    keep_scores: bool,
    with_stats: bool,
) -> tuple[list[Block], Tensor | None]:
    """The anchors against every document (and, under ``own``, against their own negatives): blocks and stats."""
    r0, r1, rows = tile.r0, tile.r1, tile.rows
    x, docs = pool.anchors(r0, r1), pool.documents(own)
    sim = similarity(x, docs)  # (rows, cols)
    col_ids = None if ids is None else ids.candidates[: docs.shape[0]]
    excluded, duplicates = exclusion_mask(sim, tile.positive_ids, col_ids, tile.threshold)
    positive = (torch.arange(rows, device=sim.device), tile.cols)
    _keep(positive, excluded, duplicates)
    mode, alpha = penalty
    columns = penalised_columns(mode, tile.cols, pool.world, 1 if own else 1 + pool.negatives)
    x_grad, docs_grad = (None, None) if grads is None else (grads.anchors(r0, r1), grads.documents(own))
    scores = sim[:, : pool.world].clone() if keep_scores else None  # before tile_stats consumes sim
    blocks = [Block("query_to_doc", logits(sim, scale, excluded, columns, alpha), x, docs, x_grad, docs_grad, scores)]
    own_sim = own_excluded = own_duplicates = None
    if own and pool.negatives:
        negatives = pool.own_negatives(r0, r1)  # (n, rows, d)
        own_sim = _own_similarity(x, negatives, similarity)  # (rows, n)
        own_ids = None if ids is None else ids.own_negatives(pool, r0, r1)
        own_duplicates = None if own_ids is None else own_ids == tile.positive_ids[:, None]
        own_excluded = own_duplicates
        if tile.threshold is not None:
            above = own_sim > tile.threshold[:, None]
            own_excluded = above if own_excluded is None else own_excluded | above
        uniform = torch.ones_like(own_sim, dtype=torch.bool) if mode in ("hard_negatives", "all_negatives") else None
        own_grad = None if grads is None else grads.own_negatives(r0, r1)
        own_logits = logits(own_sim, scale, own_excluded, uniform, alpha)
        blocks.append(Block("query_to_doc", own_logits, x, negatives, x_grad, own_grad))
    if not with_stats:
        return blocks, None
    return blocks, tile_stats(sim, excluded, duplicates, positive, own_sim, own_excluded, own_duplicates)


def _own_similarity(x: Tensor, negatives: Tensor, similarity: Similarity) -> Tensor:
    if similarity is dot:
        return torch.einsum("rd,krd->rk", x, negatives)
    return torch.cat([similarity(x[i : i + 1], negatives[:, i]) for i in range(x.shape[0])])


def _query_to_query(pool: Pool, grads: Pool | None, ids: Ids | None, tile: Tile, scale, similarity) -> Block:
    """The anchors against every query, never against themselves."""
    x = pool.anchors(tile.r0, tile.r1)
    sim = similarity(x, pool.queries)  # (rows, world)
    excluded, _ = exclusion_mask(sim, tile.anchor_ids, None if ids is None else ids.queries, tile.threshold)
    itself = (torch.arange(tile.rows, device=sim.device), tile.cols)
    excluded = _set(excluded, itself, sim.shape, sim.device)
    x_grad, y_grad = (None, None) if grads is None else (grads.anchors(tile.r0, tile.r1), grads.queries)
    return Block("query_to_query", logits(sim, scale, excluded), x, pool.queries, x_grad, y_grad)


def _doc_to_query(pool: Pool, grads: Pool | None, ids: Ids | None, tile: Tile, scale, similarity) -> Block:
    """The positives against every query (their own included: it is the positive pair)."""
    x = pool.positives(tile.r0, tile.r1)
    sim = similarity(x, pool.queries)  # (rows, world)
    excluded, _ = exclusion_mask(sim, tile.anchor_ids, None if ids is None else ids.queries, tile.threshold)
    _keep((torch.arange(tile.rows, device=sim.device), tile.cols), excluded)
    x_grad, y_grad = (None, None) if grads is None else (grads.positives(tile.r0, tile.r1), grads.queries)
    return Block("doc_to_query", logits(sim, scale, excluded), x, pool.queries, x_grad, y_grad)


def _doc_to_doc(pool: Pool, grads: Pool | None, ids: Ids | None, tile: Tile, own: bool, scale, similarity) -> Block:
    """The positives against every document, never against a document of their own query."""
    x, docs = pool.positives(tile.r0, tile.r1), pool.documents(own)
    sim = similarity(x, docs)  # (rows, cols)
    col_ids = None if ids is None else ids.candidates[: docs.shape[0]]
    excluded, _ = exclusion_mask(sim, tile.positive_ids, col_ids, tile.threshold)
    groups = docs.shape[0] // pool.world
    same_query = tile.cols[:, None] + pool.world * torch.arange(groups, device=sim.device)[None, :]
    rows = torch.arange(tile.rows, device=sim.device)[:, None].expand_as(same_query)
    excluded = _set(excluded, (rows, same_query), sim.shape, sim.device)
    x_grad, y_grad = (None, None) if grads is None else (grads.positives(tile.r0, tile.r1), grads.documents(own))
    return Block("doc_to_doc", logits(sim, scale, excluded), x, docs, x_grad, y_grad)


def row_blocks(
    pool: Pool,
    grads: Pool | None,
    ids: Ids | None,
    tile: Tile,
    *,
    directions: tuple[str, ...],
    own: bool,
    scale: float | Tensor,
    penalty: tuple[str | None, float],
    doc_to_query_by_rows: bool,
    similarity: Similarity = dot,
    with_stats: bool = True,
) -> tuple[list[Block], Tensor | None]:
    """Every block of row-normalised logits of a tile, and its :data:`STAT_NAMES` sums.

    ``penalty`` is ``(hardness_mode, alpha)``. ``doc_to_query_by_rows=False`` leaves doc_to_query out: the caller
    reads it from :func:`column_block` instead, given the first block's ``positive_scores``. ``with_stats=False``
    skips the sums (``None``): a second pass over the same tiles has them already.
    """
    blocks, stats = _query_to_doc(
        pool, grads, ids, tile, own, scale, penalty, similarity, not doc_to_query_by_rows, with_stats
    )
    if "query_to_query" in directions:
        blocks.append(_query_to_query(pool, grads, ids, tile, scale, similarity))
    if "doc_to_query" in directions and doc_to_query_by_rows:
        blocks.append(_doc_to_query(pool, grads, ids, tile, scale, similarity))
    if "doc_to_doc" in directions:
        blocks.append(_doc_to_doc(pool, grads, ids, tile, own, scale, similarity))
    return blocks, stats


def column_block(
    pool: Pool,
    ids: Ids | None,
    tile: Tile,
    threshold: Tensor | None,
    scale: float | Tensor,
    scores: Tensor | None = None,
) -> Block:
    """doc_to_query read down the columns of the tile's anchors x positives scores (no gathering: offset 0).

    Entry ``(k, j)`` scores query ``k`` (a row of the tile) against positive ``j``: it is a logit of *column*
    ``j``'s doc_to_query row, so it is normalised along the columns, with column ``j``'s ``threshold`` and
    identity. The block shares ``x`` and ``y`` with the query_to_doc block's first ``world`` columns, so its
    gradient is added to theirs before the matrix products (it has no gradient buffers of its own). ``scores``:
    those scores, already computed for the query_to_doc block (its ``positive_scores``), used in place.
    """
    x, y = pool.anchors(tile.r0, tile.r1), pool.candidates[: pool.world]
    sim = dot(x, y) if scores is None else scores  # (rows, world)
    query_ids = None if ids is None else ids.queries
    excluded, _ = exclusion_mask(sim, tile.anchor_ids, query_ids, threshold, threshold_by_column=True)
    _keep((torch.arange(tile.rows, device=sim.device), tile.cols), excluded)
    return Block("doc_to_query", logits(sim, scale, excluded), x, y)


# ---- statistics ----------------------------------------------------------------------------------------------


def tile_stats(
    sim: Tensor,
    excluded: Tensor | None,
    duplicates: Tensor | None,
    positive: tuple[Tensor, Tensor],
    own_sim: Tensor | None = None,
    own_excluded: Tensor | None = None,
    own_duplicates: Tensor | None = None,
) -> Tensor:
    """The :data:`STAT_NAMES` sums of a tile, from its raw query_to_doc similarities.

    ``sim`` is consumed in place where no graph is recorded (inside the fused function's forward); where autograd
    may still need it (the plain path), a copy is.
    """
    sim = sim.detach().clone() if torch.is_grad_enabled() else sim.detach()
    positive_sim = sim[positive].clone()
    if excluded is not None:
        sim.masked_fill_(excluded, NEG_INF)
    sim[positive] = NEG_INF
    hardest = sim.amax(dim=1) if sim.shape[1] else torch.full_like(positive_sim, NEG_INF)
    negatives = sim.shape[1] - 1
    if own_sim is not None:
        own = own_sim.detach() if own_excluded is None else own_sim.detach().masked_fill(own_excluded, NEG_INF)
        hardest = torch.maximum(hardest, own.amax(dim=1))
        negatives += own_sim.shape[1]
    has_negative = torch.isfinite(hardest)

    def count(mask: Tensor | None) -> Tensor:
        return sim.new_zeros(()) if mask is None else mask.sum().to(sim.dtype)

    return torch.stack(
        [
            ((positive_sim > hardest) | ~has_negative).sum().to(sim.dtype),
            positive_sim.sum(),
            torch.where(has_negative, hardest, torch.zeros_like(hardest)).sum(),
            has_negative.sum().to(sim.dtype),
            count(excluded) + count(own_excluded),
            count(duplicates) + count(own_duplicates),
            sim.new_tensor(float(negatives * positive_sim.shape[0])),
        ]
    )


# ---- gradients ------------------------------------------------------------------------------------------------


def logsumexp_(block_logits: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp(block_logits, dim)``, overwriting ``block_logits`` (the shift, exp and sum in place: no
    temporary of the block's size), for logits that are not needed afterwards. A line of only ``-inf`` gives
    ``-inf``."""
    if block_logits.shape[dim] == 0:
        shape = list(block_logits.shape)
        del shape[dim]
        return block_logits.new_full(shape, NEG_INF)
    top = block_logits.amax(dim=dim)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top + block_logits.sub_(top.unsqueeze(dim)).exp_().sum(dim=dim).log()


def probabilities_(block_logits: Tensor, normaliser: Tensor, weight: float, *, by_column: bool = False) -> Tensor:
    """``weight * exp(logits - normaliser)`` in place: d loss / d logits of a block whose normaliser is known.

    ``normaliser`` is per row (``(rows,)``), or per column with ``by_column``. Excluded entries (``-inf``) get 0.
    """
    shift = normaliser[None, :] if by_column else normaliser[:, None]
    return block_logits.sub_(shift).exp_().mul_(weight)


def accumulate(block: Block, d_logits: Tensor) -> None:
    """Add the block's contribution ``G_x += d_logits @ y`` and ``G_y += d_logits.T @ x`` to its buffers.

    The buffers collect ``d loss / d sim`` times the other side's embedding; :func:`finish_gradients` multiplies
    by the scale (``d logit / d sim``) once at the end.
    """
    if block.own:  # y: (n, rows, d), d_logits: (rows, n)
        block.x_grad.add_(torch.einsum("rk,krd->rd", d_logits, block.y))
        block.y_grad.add_(torch.einsum("rk,rd->krd", d_logits, block.x))
        return
    block.x_grad.addmm_(d_logits, block.y)
    block.y_grad.addmm_(d_logits.T, block.x)


def finish_gradients(
    pool: Pool,
    grads: Pool,
    scale: float | Tensor,
    inverse_norms: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Accumulated buffers -> gradients of the loss w.r.t. queries, candidates and scale (in place).

    The buffers hold ``G_i = sum_j g_ij y_j`` over both sides of every logit, where ``g_ij`` is d loss / d sim_ij
    / scale... before the positive term, which is added here: ``-1/L`` on both sides of each positive pair. So
    ``x_i . G_i`` summed over every row of both inputs counts each ``g_ij sim_ij`` twice (once per side): half of
    it is d loss / d scale. Through the cosine normalisation ``x = u / ||u||``, d loss / d u_i is
    ``scale * (G_i - (x_i . G_i) x_i) / ||u_i||``.
    """
    weight = 1.0 / pool.local
    grads.anchors(0, pool.local).sub_(pool.positives(0, pool.local), alpha=weight)
    grads.positives(0, pool.local).sub_(pool.anchors(0, pool.local), alpha=weight)
    by_query = row_dot(pool.queries, grads.queries)
    by_candidate = row_dot(pool.candidates, grads.candidates)
    d_scale = (by_query.sum() + by_candidate.sum()) / 2
    d_queries, d_candidates = grads.queries, grads.candidates
    if inverse_norms is not None:
        d_queries.addcmul_(pool.queries, by_query[:, None], value=-1.0).mul_(inverse_norms[0][:, None])
        d_candidates.addcmul_(pool.candidates, by_candidate[:, None], value=-1.0).mul_(inverse_norms[1][:, None])
    return d_queries.mul_(scale), d_candidates.mul_(scale), d_scale


def inverse_norms(x: Tensor) -> Tensor:
    """``(rows,)`` ``1 / max(||x_i||, 1e-12)``, the factor ``F.normalize`` divides by."""
    return torch.linalg.vector_norm(x, dim=1).clamp_min_(1e-12).reciprocal_()


def row_dot(x: Tensor, y: Tensor, chunk: int = 4096) -> Tensor:
    """``(rows,)`` dot products of matching rows, in chunks: no ``(rows, d)`` temporary. 16-bit rows are
    multiplied in float32 (a chunk at a time), float32 and float64 ones in their own dtype."""
    out = torch.empty(x.shape[0], dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    for c0 in range(0, x.shape[0], chunk):
        rows = slice(c0, c0 + chunk)
        torch.sum(x[rows].to(out.dtype) * y[rows].to(out.dtype), dim=1, out=out[rows])
    return out


def positive_similarity(pool: Pool, similarity: Similarity = dot) -> Tensor:
    """``(local,)`` raw similarity of each of this rank's anchors with its positive."""
    x, y = pool.anchors(0, pool.local), pool.positives(0, pool.local)
    if similarity is dot:
        return row_dot(x, y)
    return torch.stack([similarity(x[i : i + 1], y[i : i + 1]).reshape(()) for i in range(pool.local)])
