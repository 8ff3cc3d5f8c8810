"""The MNR loss as functions of tensors: one tiled autograd Function over the per-tile math of :mod:`.ops`.

Layout (the sentence-transformers one): ``queries`` is ``(B, d)``, ``candidates`` is ``(B * (1 + n), d)``: all
positives first, then each hard-negative column in turn, so that candidate ``k * B + j`` belongs to query ``j``.
Under ``gather_across_devices`` both hold the rows of every rank and :class:`MNRSpec`'s ``offset``/``local_batch``
name this rank's rows.

How it computes (Liger-Kernel's fused linear cross-entropy, applied to contrastive logits): the anchor rows are
processed in tiles; each tile computes its logits against all candidates (``tile_rows x columns``, bounded by
``tile_elements``), its exact logsumexp, and at once the gradients of the loss with respect to the embeddings and
the scale, which are saved for ``backward`` (the loss is a scalar, so backward only multiplies them by the incoming
gradient). That is three matrix products per tile, as in the plain computation, but never a ``B x B`` matrix:
peak extra memory is ``O(B * d + tile)``. With ``doc_to_query`` and no gathering, its logits are read down the
columns of the same anchor x positive tiles; the column logsumexp is then only known after every tile, so a first
pass computes the logsumexps and a second one the gradients (four products per tile instead of six).

Everything runs in float32 (float64 for float64 inputs) with autocast disabled, and the gradients are cast to
each input's dtype once, at the end: float16 embeddings under a GradScaler get finite gradients.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from st_mnr_plus.common.switches import env_switch
from st_mnr_plus.losses import options as opt
from st_mnr_plus.losses.identity import row_hashes
from st_mnr_plus.losses.kernel_config import product_dtype
from st_mnr_plus.losses.ops import (
    STAT_NAMES,
    Block,
    Ids,
    Pool,
    Tile,
    accumulate,
    column_block,
    dot,
    finish_gradients,
    inverse_norms,
    logsumexp_,
    positive_similarity,
    probabilities_,
    row_blocks,
)
from st_mnr_plus.losses.options import DIRECTIONS, HARDNESS_MODES

logger = logging.getLogger(__name__)

__all__ = [
    "DIRECTIONS",
    "HARDNESS_MODES",
    "STAT_NAMES",
    "Backend",
    "MNRSpec",
    "choose_backend",
    "diagnostics_from_stats",
    "mnr_plus_loss",
    "plain_mnr_loss",
    "row_hashes",
    "tiled_mnr_loss",
]

# Elements of one tile of logits (float32: 4 bytes each). A few tile-sized temporaries live at once.
DEFAULT_TILE_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class MNRSpec:
    """What to compute; the embeddings come separately.

    The options (directions, modes, masks, tiling, backend: :data:`~st_mnr_plus.losses.options.SPEC_OPTIONS`) are
    read as attributes (``spec.directions``); they arrive checked, from the loss module (which checked them when
    they were set) or from :meth:`of`, which checks them: the spec itself checks nothing again.

    Args:
        local_batch: Number of this rank's anchor rows (the batch size without gathering).
        offset: Index of this rank's first row in the (gathered) queries.
        options: Every spec option by name, checked (see :meth:`of`).
        tile_elements: Target number of logits per tile when ``tile_size`` is ``None``.

    The options, as :class:`~st_mnr_plus.losses.MNRPlus` documents them: ``directions``, ``partition_mode``,
    ``hardness_mode``, ``hardness_strength``, ``hard_negatives`` (``"shared"``: hard-negative columns are negatives
    for every anchor; ``"own"``: each anchor's only for it), ``false_negative_margin`` and ``false_negative_ratio``
    (for a negative positive similarity ``s`` the ratio's bound is ``s - (1 - ratio) * |s|``), ``tile_size``
    (anchor rows per tile; ``None`` derives it from ``tile_elements``) and ``backend``.
    """

    local_batch: int
    offset: int = 0
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType(opt.checked_spec_values({})))
    tile_elements: int = DEFAULT_TILE_ELEMENTS

    @classmethod
    def of(
        cls, local_batch: int, offset: int = 0, *, tile_elements: int = DEFAULT_TILE_ELEMENTS, **options: Any
    ) -> MNRSpec:
        """A spec from option values given by name (the others at their defaults), each checked as the loss
        checks it: the way to build one outside a loss module."""
        opt.check_positive_int(local_batch, "local_batch")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise opt.OptionError(f"offset must be a non-negative integer, got {offset!r}")
        opt.check_positive_int(tile_elements, "tile_elements")
        checked = MappingProxyType(opt.checked_spec_values(options))
        return cls(local_batch=local_batch, offset=offset, options=checked, tile_elements=tile_elements)

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not fields: the options.
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def penalty(self) -> tuple[str | None, float]:
        """``(hardness_mode, alpha)``, with the mode ``None`` when no entry is penalised."""
        if self.hardness_mode is None or self.hardness_strength == 0.0:
            return None, 0.0
        return self.hardness_mode, self.hardness_strength

    def row_weight(self) -> float:
        """d loss / d normaliser of one row: ``1/L``, over the number of directions when they are averaged."""
        per_direction = len(self.directions) if self.partition_mode == "per_direction" else 1
        return 1.0 / (self.local_batch * per_direction)


# ---- which path computes it -------------------------------------------------------------------------------------

#: Input dtypes the GPU path takes (float64 stays on the PyTorch path).
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_LOGGED_FALLBACKS: set[str] = set()


class Backend(NamedTuple):
    """The path a forward takes: ``"torch"`` (the tile loop) or ``"triton"`` (the GPU path), and why the
    kernels were not taken under ``backend="auto"`` (``None`` when they were, or were not asked for)."""

    name: Literal["torch", "triton"]
    reason: str | None = None


def triton_available() -> bool:
    """Whether ``triton`` is installed (``pip install "st-mnr-plus[cuda]"``); it is not imported here."""
    return importlib.util.find_spec("triton") is not None


def _kernel_gaps(spec: MNRSpec, dtype: torch.dtype, similarity: str | None) -> list[str]:
    """What keeps the kernels from this call: options they do not compute, a similarity or dtype they lack."""
    gaps = opt.kernel_fallbacks(spec.options)
    if similarity is None:
        gaps.append("similarity_fct (neither cosine nor dot product)")
    if dtype not in KERNEL_DTYPES:
        gaps.append(f"dtype {dtype}")
    return gaps


def choose_backend(spec: MNRSpec, device: torch.device | str, dtype: torch.dtype, similarity: str | None) -> Backend:
    """Where :func:`mnr_plus_loss` runs, by ``spec.backend``: ``"torch"``; ``"triton"`` (or a clear error); or
    ``"auto"``: the kernels for CUDA tensors when triton is installed and they cover the options, else the
    PyTorch path (on CUDA with triton installed, an options gap is logged once at INFO, naming the options).

    Args:
        spec: The computation's options.
        device: The embeddings' device.
        dtype: The embeddings' dtype.
        similarity: ``"cos"``, ``"dot"``, or ``None`` for another similarity function (the plain path).

    Raises:
        OptionError: ``backend="triton"`` where the kernels cannot run: triton missing, CPU tensors without
            ``TRITON_INTERPRET=1``, or options, a similarity or a dtype they do not compute.
    """
    if spec.backend == "torch":
        return Backend("torch")
    device_type = torch.device(device).type
    gaps = _kernel_gaps(spec, dtype, similarity)
    if spec.backend == "triton":
        if not triton_available():
            raise opt.OptionError('backend="triton" needs triton: pip install "st-mnr-plus[cuda]"')
        if device_type != "cuda" and not env_switch("TRITON_INTERPRET"):
            raise opt.OptionError(
                f'backend="triton" runs on CUDA tensors, got {device_type} ones; on the CPU only in '
                "Triton's interpreter (TRITON_INTERPRET=1 set before the first forward)"
            )
        if gaps:
            raise opt.OptionError(f'backend="triton" does not compute {", ".join(gaps)}: use backend="auto"')
        return Backend("triton")
    if device_type != "cuda":
        return Backend("torch", f"{device_type} tensors")
    if not triton_available():
        return Backend("torch", 'triton is not installed (pip install "st-mnr-plus[cuda]")')
    if gaps:
        reason = f"the GPU path does not compute {', '.join(gaps)}"
        if reason not in _LOGGED_FALLBACKS:
            _LOGGED_FALLBACKS.add(reason)
            logger.info("MNRPlus runs on the PyTorch path: %s.", reason)
        return Backend("torch", reason)
    return Backend("triton")


# ---- the pieces the two passes share ---------------------------------------------------------------------------


def _thresholds(positive: Tensor, spec: MNRSpec) -> Tensor | None:
    """``(L,)`` raw-similarity bound above which a negative counts as a false negative, or ``None``."""
    bounds = []
    if spec.false_negative_margin is not None:
        bounds.append(positive - spec.false_negative_margin)
    if spec.false_negative_ratio is not None:
        bounds.append(positive - (1.0 - spec.false_negative_ratio) * positive.abs())
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else torch.minimum(*bounds)


def _tile(pool: Pool, ids: Ids | None, threshold: Tensor | None, r0: int, r1: int) -> Tile:
    cols = torch.arange(pool.offset + r0, pool.offset + r1, device=pool.queries.device)
    return Tile(
        r0,
        r1,
        cols,
        None if threshold is None else threshold[r0:r1],
        None if ids is None else ids.queries[pool.offset + r0 : pool.offset + r1],
        None if ids is None else ids.candidates[pool.offset + r0 : pool.offset + r1],
    )


def _lse_by_direction(blocks: list[Block], *, consume: bool = False) -> dict[str, Tensor]:
    """Per direction, the row logsumexp over its blocks (``consume``: overwriting their logits)."""
    parts: dict[str, list[Tensor]] = {}
    for block in blocks:
        lse = logsumexp_(block.logits, 1) if consume else torch.logsumexp(block.logits, dim=1)
        parts.setdefault(block.direction, []).append(lse)
    return {d: v[0] if len(v) == 1 else torch.logsumexp(torch.stack(v), dim=0) for d, v in parts.items()}


def _normaliser(lse: dict[str, Tensor], spec: MNRSpec) -> Tensor:
    """Per row: the joint logsumexp over the directions, or their mean (``per_direction``)."""
    values = [lse[d] for d in spec.directions]
    if spec.partition_mode == "per_direction":
        return torch.stack(values).mean(dim=0)
    return values[0] if len(values) == 1 else torch.logsumexp(torch.stack(values), dim=0)


def _tile_rows(pool: Pool, spec: MNRSpec) -> int:
    """Rows per tile, so that a tile's logits over every direction hold about ``spec.tile_elements`` entries."""
    own = spec.hard_negatives == "own" and pool.negatives > 0
    docs = pool.world if own else pool.candidates.shape[0]
    width = docs * (1 + ("doc_to_doc" in spec.directions)) + pool.world * (
        ("query_to_query" in spec.directions) + ("doc_to_query" in spec.directions)
    )
    rows = spec.tile_size or max(1, spec.tile_elements // max(width, 1))
    return min(rows, pool.local)


def _blocks(
    pool, grads, ids, tile, spec, scale, *, by_rows: bool, similarity=dot, with_stats=True
) -> tuple[list[Block], Tensor | None]:
    return row_blocks(
        pool,
        grads,
        ids,
        tile,
        directions=spec.directions,
        own=spec.hard_negatives == "own" and pool.negatives > 0,
        scale=scale,
        penalty=spec.penalty,
        doc_to_query_by_rows=by_rows,
        similarity=similarity,
        with_stats=with_stats,
    )


# ---- the two ways through the tiles ----------------------------------------------------------------------------


def _single_pass(pool: Pool, grads: Pool | None, ids: Ids | None, spec: MNRSpec, scale, threshold) -> tuple:
    """Each tile's logsumexps, then at once its probabilities and gradients: every direction read by rows."""
    normaliser = torch.empty(pool.local, dtype=pool.queries.dtype, device=pool.queries.device)
    stats = torch.zeros(len(STAT_NAMES), dtype=pool.queries.dtype, device=pool.queries.device)
    per_direction = spec.partition_mode == "per_direction"
    rows = _tile_rows(pool, spec)
    for r0 in range(0, pool.local, rows):
        tile = _tile(pool, ids, threshold, r0, min(r0 + rows, pool.local))
        blocks, tile_stats = _blocks(pool, grads, ids, tile, spec, scale, by_rows=True)
        stats += tile_stats
        lse = _lse_by_direction(blocks)
        normaliser[tile.r0 : tile.r1] = _normaliser(lse, spec)
        if grads is None:
            continue
        for block in blocks:
            norm = lse[block.direction] if per_direction else normaliser[tile.r0 : tile.r1]
            accumulate(block, probabilities_(block.logits, norm, spec.row_weight()))
    return normaliser, stats


def _two_pass(pool: Pool, grads: Pool | None, ids: Ids | None, spec: MNRSpec, scale, threshold) -> tuple:
    """doc_to_query read down the columns of the anchor x positive tiles: logsumexps first, gradients second."""
    dtype, device = pool.queries.dtype, pool.queries.device
    row_lse = {d: torch.empty(pool.local, dtype=dtype, device=device) for d in spec.directions if d != "doc_to_query"}
    column_lse = torch.full((pool.world,), float("-inf"), dtype=dtype, device=device)
    stats = torch.zeros(len(STAT_NAMES), dtype=dtype, device=device)
    rows = _tile_rows(pool, spec)
    tiles = [_tile(pool, ids, threshold, r0, min(r0 + rows, pool.local)) for r0 in range(0, pool.local, rows)]
    for tile in tiles:
        blocks, tile_stats = _blocks(pool, None, ids, tile, spec, scale, by_rows=False)
        stats += tile_stats
        for direction, value in _lse_by_direction(blocks, consume=True).items():
            row_lse[direction][tile.r0 : tile.r1] = value
        column = column_block(pool, ids, tile, threshold, scale, blocks[0].positive_scores)
        column_lse = torch.logaddexp(column_lse, logsumexp_(column.logits, 0))
    lse = {**row_lse, "doc_to_query": column_lse}
    normaliser = _normaliser(lse, spec)
    if grads is None:
        return normaliser, stats
    per_direction = spec.partition_mode == "per_direction"
    for tile in tiles:
        blocks, _ = _blocks(pool, grads, ids, tile, spec, scale, by_rows=False, with_stats=False)
        column = column_block(pool, ids, tile, threshold, scale, blocks[0].positive_scores)
        column_norm = lse["doc_to_query"] if per_direction else normaliser
        d_column = probabilities_(column.logits, column_norm, spec.row_weight(), by_column=True)
        for index, block in enumerate(blocks):
            norm = (lse[block.direction] if per_direction else normaliser)[tile.r0 : tile.r1]
            d_logits = probabilities_(block.logits, norm, spec.row_weight())
            if index == 0:  # the query_to_doc block: its first `world` columns are the column block's entries
                d_logits[:, : pool.world] += d_column
            accumulate(block, d_logits)
    return normaliser, stats


def _compute_dtype(t: Tensor) -> torch.dtype:
    return product_dtype(t.device.type, t.dtype, gpu_path=False)


class _TiledMNRFunction(torch.autograd.Function):
    """Loss and statistics in forward, with every gradient computed there too and saved for backward."""

    @staticmethod
    def forward(
        ctx: Any,
        queries: Tensor,
        candidates: Tensor,
        scale: float | Tensor,
        ids: Ids | None,
        spec: MNRSpec,
        normalize: bool,
    ) -> tuple[Tensor, Tensor]:
        need_grad = any(ctx.needs_input_grad[:3])
        with torch.autocast(device_type=queries.device.type, enabled=False):
            compute = _compute_dtype(queries)
            q, c = queries.detach().to(compute), candidates.detach().to(compute)
            inverse = None
            if normalize:
                inverse = (inverse_norms(q), inverse_norms(c))
                q, c = q * inverse[0][:, None], c * inverse[1][:, None]
            s = scale.detach().to(compute) if isinstance(scale, Tensor) else scale
            pool = Pool(q, c, spec.offset, spec.local_batch)
            grads = (
                Pool(torch.zeros_like(q), torch.zeros_like(c), spec.offset, spec.local_batch) if need_grad else None
            )
            positive = positive_similarity(pool)
            threshold = _thresholds(positive, spec)
            shared_columns = "doc_to_query" in spec.directions and pool.offset == 0 and pool.local == pool.world
            run = _two_pass if shared_columns else _single_pass
            normaliser, stats = run(pool, grads, ids, spec, s, threshold)
            loss = normaliser.mean() - s * positive.mean()
            if need_grad:
                d_queries, d_candidates, d_scale = finish_gradients(pool, grads, s, inverse)
                ctx.save_for_backward(d_queries, d_candidates, d_scale)
                ctx.input_dtypes = (
                    queries.dtype,
                    candidates.dtype,
                    scale.dtype if isinstance(scale, Tensor) else None,
                )
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_stats: Tensor) -> tuple[Tensor | None, ...]:
        # Multiply in the compute dtype, then cast once: an fp16 input under GradScaler's 2**16 loss scale must not
        # see the scaled gradient in fp16 before the product is known.
        saved = ctx.saved_tensors
        out: list[Tensor | None] = []
        for k, (grad, dtype) in enumerate(zip(saved, ctx.input_dtypes, strict=True)):
            out.append((grad * grad_loss.to(grad.dtype)).to(dtype) if ctx.needs_input_grad[k] else None)
        return (*out, None, None, None)


def _check_inputs(
    queries: Tensor, candidates: Tensor, spec: MNRSpec, query_ids: Tensor | None, candidate_ids: Tensor | None
) -> Ids | None:
    for name, t in (("queries", queries), ("candidates", candidates)):
        if not isinstance(t, Tensor) or t.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (rows, dim) tensor, got {getattr(t, 'shape', type(t).__name__)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"queries and candidates must have the same embedding dimension, got {queries.shape[1]} and "
            f"{candidates.shape[1]}"
        )
    if queries.shape[0] == 0 or candidates.shape[0] % queries.shape[0] or candidates.shape[0] < queries.shape[0]:
        raise ValueError(
            f"candidates must hold a whole number (>= 1) of columns of {queries.shape[0]} rows "
            f"(positives, then each hard-negative column), got {candidates.shape[0]} rows"
        )
    if spec.offset + spec.local_batch > queries.shape[0]:
        raise ValueError(
            f"spec.offset + spec.local_batch = {spec.offset + spec.local_batch} exceeds the {queries.shape[0]} "
            "query rows"
        )
    for name, ids, rows in (
        ("query_ids", query_ids, queries.shape[0]),
        ("candidate_ids", candidate_ids, candidates.shape[0]),
    ):
        if ids is not None and (not isinstance(ids, Tensor) or ids.shape != (rows,)):
            raise ValueError(f"{name} must be a ({rows},) tensor, got {getattr(ids, 'shape', type(ids).__name__)}")
    if (query_ids is None) != (candidate_ids is None):
        raise ValueError("query_ids and candidate_ids must be given together (or both None)")
    return None if query_ids is None else Ids(query_ids.to(queries.device), candidate_ids.to(queries.device))


def tiled_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Multiple negatives ranking loss on dot products (cosine with ``normalize``), fused and tiled.

    Args:
        queries: ``(B, d)`` anchors (all ranks' when gathered).
        candidates: ``(B * (1 + n), d)`` positives, then each hard-negative column.
        scale: Inverse temperature; a tensor that requires grad gets a gradient.
        spec: What to compute (directions, modes, masks, tiling).
        query_ids: ``(B,)`` identities of the queries (see :func:`row_hashes`), or ``None``.
        candidate_ids: ``(B * (1 + n),)`` identities of the candidates, or ``None``. With both given, candidates
            equal to a row's positive (or queries equal to its anchor) are excluded from its negatives.
        normalize: Score cosine similarities: the normalised copies (``F.normalize``'s, norms clamped at 1e-12)
            are made inside the fused function, with no autograd graph, and the gradients are projected back
            through the normalisation there.

    Returns:
        ``(loss, stats)``: the scalar loss (float32, or float64 for float64 inputs) and a detached tensor of the
        sums named by :data:`STAT_NAMES`. Nothing here waits for the device: read ``stats`` when you need it.
    """
    ids = _check_inputs(queries, candidates, spec, query_ids, candidate_ids)
    return _TiledMNRFunction.apply(queries, candidates, scale, ids, spec, normalize)


def plain_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    similarity_fct: Callable[[Tensor, Tensor], Tensor],
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The same loss with any similarity function, on full ``B x B`` matrices, differentiated by autograd.

    The fallback for a ``similarity_fct`` other than cosine or dot product: one tile of all rows, the same blocks,
    masks and penalties as the tiled path, no memory savings. Arguments and return value as
    :func:`tiled_mnr_loss`, plus ``similarity_fct(x, y) -> (rows_x, rows_y)``.
    """
    ids = _check_inputs(queries, candidates, spec, query_ids, candidate_ids)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        compute = _compute_dtype(queries)
        pool = Pool(queries.to(compute), candidates.to(compute), spec.offset, spec.local_batch)
        positive = positive_similarity(pool, similarity_fct)
        threshold = _thresholds(positive.detach(), spec)
        tile = _tile(pool, ids, threshold, 0, pool.local)
        blocks, stats = _blocks(pool, None, ids, tile, spec, scale, by_rows=True, similarity=similarity_fct)
        # One logsumexp over each softmax's concatenated logits, as MNRL: a block whose row is all masked would
        # give autograd a -inf logsumexp, and NaN gradients, if combined afterwards.
        groups = (
            [blocks]
            if spec.partition_mode == "joint"
            else [[b for b in blocks if b.direction == d] for d in spec.directions]
        )
        parts = [torch.logsumexp(torch.cat([b.logits for b in group], dim=1), dim=1) for group in groups]
        normaliser = torch.stack(parts).mean(dim=0)
        loss = normaliser.mean() - scale * positive.mean()
    return loss, stats.detach()


def mnr_plus_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    similarity: Literal["cos", "dot"] = "cos",
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    backend: Literal["torch", "triton"] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`tiled_mnr_loss` on cosine or dot-product similarity, on the PyTorch path or the GPU path.

    Embeddings in float16/bfloat16 are accepted, also under autocast: logits and accumulation are float32 and the
    gradients flow back in the input dtype. ``backend`` is the path (``None``: :func:`choose_backend` picks it
    from ``spec.backend``); both give the same loss, statistics and gradients, up to float rounding: the GPU
    path's products take :func:`~st_mnr_plus.losses.kernel_config.product_dtype` (the autocast dtype, else the
    embeddings'), the PyTorch path's float32.
    """
    if similarity not in ("cos", "dot"):
        raise ValueError(f"similarity must be 'cos' or 'dot', got {similarity!r}")
    if backend is None:
        backend = choose_backend(spec, queries.device, queries.dtype, similarity).name
    if backend == "triton":
        return _gpu_loss(queries, candidates, scale, spec, query_ids, candidate_ids, similarity == "cos")
    return tiled_mnr_loss(queries, candidates, scale, spec, query_ids, candidate_ids, normalize=similarity == "cos")


def _gpu_loss(queries, candidates, scale, spec, query_ids, candidate_ids, normalize: bool) -> tuple[Tensor, Tensor]:
    """The loss on the GPU path (:mod:`.chunked`): row chunks, products in :func:`.kernel_config.product_dtype`
    (read here, before the path turns autocast off), the element-wise Triton kernels between them."""
    from st_mnr_plus.losses.chunked import chunked_mnr_loss  # imports triton

    ids = _check_inputs(queries, candidates, spec, query_ids, candidate_ids)
    dtype = product_dtype(queries.device.type, torch.promote_types(queries.dtype, candidates.dtype), gpu_path=True)
    return chunked_mnr_loss(
        queries, candidates, scale, spec, ids, lambda positive: _thresholds(positive, spec), dtype, normalize
    )


def diagnostics_from_stats(stats: Tensor, rows: int, scale: float | Tensor) -> dict[str, float]:
    """The per-batch figures :class:`~st_mnr_plus.losses.MNRPlus` reports, from the :data:`STAT_NAMES` sums.

    Returns ``accuracy``, ``positive_similarity``, ``hardest_negative_similarity`` (NaN when no row has a
    negative), ``masked_fraction``, ``masked_duplicates`` and ``scale``, as Python floats.
    """
    values = dict(zip(STAT_NAMES, stats.tolist(), strict=True))
    with_negatives = values["rows_with_negatives"]
    return {
        "accuracy": values["correct"] / rows,
        "positive_similarity": values["positive_similarity_sum"] / rows,
        "hardest_negative_similarity": (
            values["hardest_negative_similarity_sum"] / with_negatives if with_negatives else float("nan")
        ),
        "masked_fraction": values["masked"] / values["negatives"] if values["negatives"] else 0.0,
        "masked_duplicates": values["masked_duplicates"],
        "scale": float(scale),
    }
