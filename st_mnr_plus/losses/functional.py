"""Pure tensor math behind :class:`~st_mnr_plus.losses.MNRPlus`: a fused, tiled in-batch-negatives loss.

Layout (the sentence-transformers one): ``queries`` is ``(B, d)``, ``candidates`` is ``(B * (1 + n), d)``: all
positives first, then each hard-negative column in turn, so that candidate ``k * B + j`` belongs to query ``j``.
Under ``gather_across_devices`` both hold the rows of every rank and ``offset``/``local_batch`` name this rank's
rows.

How it computes (Liger-Kernel's fused linear cross-entropy, applied to contrastive logits): the anchor rows are
processed in tiles; each tile computes its strip of logits against all candidates (``tile_rows x columns``,
bounded by ``tile_elements``), its exact logsumexp, and at once the gradients of the loss with respect to the
embeddings and the scale, which are saved for ``backward`` (the loss is a scalar, so backward only scales them by
``grad_output``). That is three matrix products per tile, the same as the plain computation, but never a
``B x B`` matrix: peak extra memory is ``O(B * d + tile)``. When ``doc_to_query`` is asked for without
cross-device gathering, it reads the columns of the very same query x positive tiles (a first pass streams the
column logsumexp, an online logsumexp over row tiles), instead of computing a second ``B x B`` product.

An Inf-CL-style variant (candidate-column tiles with an online logsumexp, tiles recomputed in backward; Wang et
al. 2024) is kept as :func:`infcl_mnr_loss` for the benchmark that chose between the two: it needs four matrix
products instead of three and was slower here (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DIRECTIONS",
    "STAT_NAMES",
    "MNRSpec",
    "infcl_mnr_loss",
    "mnr_plus_loss",
    "plain_mnr_loss",
    "row_hashes",
    "tiled_mnr_loss",
]

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
DIRECTIONS: tuple[str, ...] = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")

# Elements of one tile of logits (float32: 4 bytes each). A few tile-sized temporaries live at once.
DEFAULT_TILE_ELEMENTS = 1 << 22

# Order of the entries of the statistics tensor returned next to the loss (all sums over local rows).
STAT_NAMES: tuple[str, ...] = (
    "correct",  # rows whose positive beats every unmasked query->doc negative (raw similarity)
    "positive_similarity_sum",
    "hardest_negative_similarity_sum",
    "rows_with_negatives",  # rows that have at least one unmasked query->doc negative
    "masked",  # query->doc negatives excluded by the duplicate mask or the margin
    "masked_duplicates",  # ... of which by the duplicate mask
    "negatives",  # query->doc negatives before masking
)

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class MNRSpec:
    """What to compute; the embeddings come separately.

    Args:
        local_batch: Number of this rank's anchor rows (the batch size without gathering).
        offset: Index of this rank's first row in the (gathered) queries.
        directions: Interaction terms, as in sentence-transformers' ``MultipleNegativesRankingLoss``.
        partition_mode: ``"joint"`` (one softmax over all directions) or ``"per_direction"`` (averaged).
        hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or ``"all_negatives"``.
        hardness_strength: ``alpha`` of the hardness penalty ``alpha * stop_grad(sim)``.
        hard_negatives: ``"shared"``: hard-negative columns are negatives for every anchor (ST's pool);
            ``"own"``: each anchor's hard negatives count only for that anchor.
        false_negative_margin: Exclude negatives whose similarity exceeds the row's positive similarity minus
            this margin; ``None`` disables it.
        tile_rows: Anchor rows per tile; ``None`` derives it from ``tile_elements``.
        tile_elements: Target number of logits per tile when ``tile_rows`` is ``None``.
    """

    local_batch: int
    offset: int = 0
    directions: tuple[str, ...] = ("query_to_doc",)
    partition_mode: Literal["joint", "per_direction"] = "joint"
    hardness_mode: str | None = None
    hardness_strength: float = 0.0
    hard_negatives: Literal["shared", "own"] = "shared"
    false_negative_margin: float | None = None
    tile_rows: int | None = None
    tile_elements: int = DEFAULT_TILE_ELEMENTS

    def __post_init__(self) -> None:
        if self.local_batch < 1:
            raise ValueError(f"local_batch must be at least 1, got {self.local_batch}")
        if self.offset < 0:
            raise ValueError(f"offset must be non-negative, got {self.offset}")
        if not self.directions or "query_to_doc" not in self.directions:
            raise ValueError(f"directions must include 'query_to_doc', got {self.directions!r}")
        unknown = set(self.directions) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"directions has unknown entries {sorted(unknown)}; valid: {DIRECTIONS}")
        if len(set(self.directions)) != len(self.directions):
            raise ValueError(f"directions has repeated entries: {self.directions!r}")
        if self.partition_mode not in ("joint", "per_direction"):
            raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {self.partition_mode!r}")
        if self.partition_mode == "per_direction" and set(self.directions) & {"query_to_query", "doc_to_doc"}:
            raise ValueError(
                "partition_mode='per_direction' needs every direction to contain the positive pair; "
                "'query_to_query' and 'doc_to_doc' do not. Use partition_mode='joint'."
            )
        if self.hardness_mode not in HARDNESS_MODES:
            raise ValueError(f"hardness_mode must be one of {HARDNESS_MODES}, got {self.hardness_mode!r}")
        if not self.hardness_strength >= 0.0:
            raise ValueError(f"hardness_strength must be non-negative, got {self.hardness_strength}")
        if self.hard_negatives not in ("shared", "own"):
            raise ValueError(f"hard_negatives must be 'shared' or 'own', got {self.hard_negatives!r}")
        if self.false_negative_margin is not None and not math.isfinite(self.false_negative_margin):
            raise ValueError(f"false_negative_margin must be a finite float or None, got {self.false_negative_margin}")
        if self.tile_rows is not None and self.tile_rows < 1:
            raise ValueError(f"tile_rows must be a positive integer or None, got {self.tile_rows}")
        if self.tile_elements < 1:
            raise ValueError(f"tile_elements must be positive, got {self.tile_elements}")

    @property
    def penalized(self) -> bool:
        return self.hardness_mode is not None and self.hardness_strength > 0.0


# --------------------------------------------------------------------------------------------------------------
# Row hashes: equal token sequences -> equal int64, whatever the padding.
# --------------------------------------------------------------------------------------------------------------

# Two 31-bit polynomial hashes modulo Mersenne-like primes, combined into one non-negative int64. Every product
# stays below 2**62, so int64 arithmetic never overflows.
_P1, _P2 = 2_147_483_629, 2_147_483_587
_R1, _R2 = 1_000_003, 998_244_353


def _power_table(length: int, base: int, prime: int, device: torch.device) -> Tensor:
    powers = [1] * max(length, 1)
    for i in range(1, length):
        powers[i] = powers[i - 1] * base % prime
    return torch.tensor(powers, dtype=torch.int64, device=device)


def _poly_hash(ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """``(rows, tokens)`` ids, 0/1 mask and 0-based positions among the kept tokens -> ``(rows,)`` int64."""
    length = ids.shape[1]
    values = ids.to(torch.int64) % _P1 + 1  # + 1 so that token id 0 still counts
    out = []
    for base, prime in ((_R1, _P1), (_R2, _P2)):
        powers = _power_table(length, base, prime, ids.device)[positions.clamp(min=0, max=max(length - 1, 0))]
        terms = (values % prime) * powers % prime * mask
        # A sum of at most `length` terms below 2**31 each cannot overflow int64 for any realistic length.
        out.append(terms.sum(dim=1) % prime)
    # Fold the number of kept tokens in too, so that sequences differing only by trailing ids equal to
    # "zero contribution" can never collide.
    lengths = mask.sum(dim=1)
    return (out[0] * _P2 + out[1] + lengths * 0x9E3779B1) & 0x3FFF_FFFF_FFFF_FFFF


def row_hashes(features: Mapping[str, Any]) -> Tensor:
    """One int64 per row of a tokenized column, equal for rows with equal token ids.

    Only the tokens under ``attention_mask`` count, by their position among the kept tokens, so left or right
    padding to any width gives the same hash. Use it to build the ``row_ids`` of
    :meth:`MNRPlus.compute_loss_from_embeddings <st_mnr_plus.losses.MNRPlus.compute_loss_from_embeddings>`
    (the cached loss calls it too): comparing token ids rather than embeddings is what makes duplicate masking
    immune to dropout.

    Args:
        features: A tokenized column as the model's ``tokenize``/collator returns it: 2-D ``input_ids`` (with
            an optional ``attention_mask``), or 1-D ``input_ids`` with ``offsets`` (``StaticEmbedding``).

    Returns:
        ``(rows,)`` int64 tensor on the device of ``input_ids``.

    Raises:
        ValueError: If ``features`` has no usable ``input_ids``.
    """
    input_ids = features.get("input_ids") if isinstance(features, Mapping) else None
    if not isinstance(input_ids, Tensor):
        raise ValueError(
            "row_hashes needs token ids: the features have no 'input_ids' tensor "
            f"(keys: {sorted(features) if isinstance(features, Mapping) else type(features).__name__}). "
            "Pass mask_duplicates=False for models whose inputs are not token ids."
        )
    if input_ids.ndim == 2:
        mask = features.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids, dtype=torch.int64)
        elif not isinstance(mask, Tensor) or mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        mask = (mask != 0).to(torch.int64)
        positions = mask.cumsum(dim=1) - 1
        return _poly_hash(input_ids, mask, positions)
    if input_ids.ndim == 1:
        offsets = features.get("offsets")
        if not isinstance(offsets, Tensor) or offsets.ndim != 1:
            raise ValueError("row_hashes: 1-D input_ids need a 1-D 'offsets' tensor (EmbeddingBag layout)")
        rows = offsets.numel()
        ends = torch.cat([offsets[1:], offsets.new_tensor([input_ids.numel()])])
        lengths = (ends - offsets).to(torch.int64)
        width = int(lengths.max().item()) if rows else 0
        positions = torch.arange(width, device=input_ids.device).expand(rows, width)
        mask = (positions < lengths[:, None]).to(torch.int64)
        index = (offsets[:, None].to(torch.int64) + positions).clamp(max=max(input_ids.numel() - 1, 0))
        ids = input_ids[index] if input_ids.numel() else torch.zeros_like(index)
        return _poly_hash(ids, mask, positions)
    raise ValueError(f"row_hashes: input_ids must be 1-D or 2-D, got shape {tuple(input_ids.shape)}")


# --------------------------------------------------------------------------------------------------------------
# The fused, row-tiled autograd Function.
# --------------------------------------------------------------------------------------------------------------


def _logsumexp_parts(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts), dim=0)


class _Ctx:
    """Everything one call needs, derived once from the inputs and the spec."""

    def __init__(
        self,
        queries: Tensor,
        candidates: Tensor,
        scale: float,
        spec: MNRSpec,
        query_hashes: Tensor | None,
        candidate_hashes: Tensor | None,
        similarity_fct: Any = None,
        normalize: bool = False,
    ) -> None:
        self.spec = spec
        # Cosine on the fused path: normalised copies, made here without an autograd graph; the inverse norms
        # are kept for the gradients' projection through the normalisation (see _finish_gradients).
        self.iq = self.ic = None
        if normalize and similarity_fct is None:
            self.iq, self.ic = _inverse_norms(queries), _inverse_norms(candidates)  # (Bw,), (N,)
            queries, candidates = queries * self.iq[:, None], candidates * self.ic[:, None]
        # None: the fused path (dot products, hand-written gradients, in-place tiles). A callable: the plain
        # path for custom similarity functions, one tile of all rows, differentiated by autograd.
        self.sim = similarity_fct
        self.autograd = similarity_fct is not None
        self.Q, self.C = queries, candidates
        self.Bw = queries.shape[0]
        self.N = candidates.shape[0]
        self.n = self.N // self.Bw - 1
        self.L, self.off = spec.local_batch, spec.offset
        self.A = queries[self.off : self.off + self.L]  # local anchors
        self.P = candidates[self.off : self.off + self.L]  # local positives
        self.scale = scale
        self.dirs = set(spec.directions)
        self.own = spec.hard_negatives == "own" and self.n > 0
        # query_to_doc candidates tiled as a dense block: all of them, or only the positives under "own".
        self.q2d_cols = self.Bw if self.own else self.N
        # doc_to_query read from the columns of the query x positive tiles: only valid without gathering.
        self.shared_d2q = "doc_to_query" in self.dirs and self.off == 0 and self.L == self.Bw
        if self.sim is None:
            self.s_pos = _row_dot(self.A, self.P)  # (L,) raw positive similarities
        else:
            self.s_pos = torch.stack(
                [self.sim(self.A[i : i + 1], self.P[i : i + 1]).reshape(()) for i in range(self.L)]
            )
        self.s_pos_detached = self.s_pos.detach()
        self.margin = spec.false_negative_margin
        if self.margin is not None:
            self.threshold = self.s_pos_detached - self.margin  # (L,)
        qh, ch = query_hashes, candidate_hashes
        self.qh, self.ch = qh, ch
        # Dense duplicate masks only when the batch has duplicates at all: the common case costs nothing.
        self.dup_c = ch is not None and torch.unique(ch).numel() < ch.numel()
        self.dup_q = qh is not None and torch.unique(qh).numel() < qh.numel()
        self.positive_hash = ch[self.off : self.off + self.L] if ch is not None else None
        self.anchor_hash = qh[self.off : self.off + self.L] if qh is not None else None
        self.weight = 1.0 / self.L
        if spec.partition_mode == "per_direction":
            self.weight /= len(self.dirs)
        self.row_dirs = [d for d in DIRECTIONS if d in self.dirs and not (d == "doc_to_query" and self.shared_d2q)]
        width = self.q2d_cols + (self.Bw if self.shared_d2q else 0)
        width += self.Bw * ("query_to_query" in self.dirs)
        width += self.Bw * ("doc_to_query" in self.dirs and not self.shared_d2q)
        width += self.q2d_cols * ("doc_to_doc" in self.dirs)
        rows = spec.tile_rows or max(1, spec.tile_elements // max(width, 1))
        self.tile_rows = self.L if self.autograd else min(rows, self.L)

    def _pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        """``(rows, cols)`` raw similarities."""
        return torch.mm(x, y.T) if self.sim is None else self.sim(x, y)

    # ---- logits of one tile ---------------------------------------------------------------------------------

    @staticmethod
    def _mask_entries(
        raw: Tensor,
        row_hash: Tensor | None,
        col_hash: Tensor | None,
        dup: bool,
        keep_col: Tensor | None,
        threshold: Tensor | None,
        col_threshold: bool = False,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Duplicate and margin masks of a ``(rows, cols)`` tile of raw similarities.

        ``keep_col`` (``(rows,)`` column indices) is the entry that is never masked (the positive / self).
        Returns ``(union mask, duplicate mask)``, each ``None`` when empty by construction.
        """
        dup_mask = None
        if dup and row_hash is not None and col_hash is not None:
            dup_mask = row_hash[:, None] == col_hash[None, :]
        mask = dup_mask
        if threshold is not None:
            margin_mask = raw > (threshold[None, :] if col_threshold else threshold[:, None])
            mask = margin_mask if mask is None else mask | margin_mask
        if mask is not None and keep_col is not None:
            rows = torch.arange(raw.shape[0], device=raw.device)
            mask[rows, keep_col] = False
            if dup_mask is not None and dup_mask is not mask:
                dup_mask[rows, keep_col] = False
        return mask, dup_mask

    def _penalties(self, pos_col: Tensor) -> tuple[tuple[str, Tensor] | None, tuple[str, Tensor] | None]:
        """Which query_to_doc logits get the hardness penalty: ``("except"|"only", cols)`` for the dense block
        (``cols``: ``(rows, k)`` column indices) and ``("uniform", ...)`` or ``None`` for the own-negative block."""
        mode = self.spec.hardness_mode if self.spec.penalized else None
        if mode is None:
            return None, None
        uniform = ("uniform", pos_col)
        if mode == "in_batch_negatives":
            groups = 1 if self.own else self.n + 1
            own_cols = torch.stack([pos_col + k * self.Bw for k in range(groups)], 1)  # (rows, 1 + n)
            return ("except", own_cols), None
        if mode == "all_negatives":
            return ("except", pos_col[:, None]), uniform
        # hard_negatives: only each row's own hard negatives.
        if self.own or self.n == 0:
            return None, uniform
        return ("only", torch.stack([pos_col + k * self.Bw for k in range(1, self.n + 1)], 1)), uniform

    def _apply_masks(self, z: Tensor, mask: Tensor | None, structural: tuple[Tensor, Tensor] | None) -> None:
        """Fused path: set masked raw similarities to -inf in place (the plain path masks after scaling)."""
        if self.autograd:
            return
        if mask is not None:
            z.masked_fill_(mask, _NEG_INF)
        if structural is not None:
            z[structural] = _NEG_INF

    def _to_logits(
        self,
        z: Tensor,
        mask: Tensor | None,
        structural: tuple[Tensor, Tensor] | None,
        penalty: tuple[str, Tensor] | None,
    ) -> Tensor:
        """Raw similarities -> logits ``scale * sim + alpha * stop_grad(sim)`` (penalised entries), masked.

        The fused path works in place on already masked similarities (-inf stays -inf). The plain path
        multiplies by the scale first and masks afterwards, so that autograd never sees ``0 * inf`` in the
        scale's gradient.
        """
        s, alpha = self.scale, self.spec.hardness_strength
        if not self.autograd:
            if penalty is None:
                z.mul_(s)
            elif penalty[0] == "uniform":
                z.mul_(s + alpha)
            else:
                cols = penalty[1]
                picked = z.gather(1, cols)
                if penalty[0] == "except":
                    z.mul_(s + alpha)
                    z.scatter_(1, cols, picked * s)
                else:
                    z.mul_(s)
                    z.scatter_(1, cols, picked * (s + alpha))
            return z
        raw = z.detach()
        logits = z * s
        if penalty is not None:
            if penalty[0] == "uniform":
                pen = raw
            else:
                selected = torch.zeros_like(raw, dtype=torch.bool).scatter_(1, penalty[1], True)
                if penalty[0] == "except":
                    selected = ~selected
                pen = torch.where(selected, raw, torch.zeros_like(raw))
            logits = logits + alpha * pen
        if mask is not None:
            logits = logits.masked_fill(mask, _NEG_INF)
        if structural is not None:
            logits = logits.index_put(structural, torch.tensor(_NEG_INF, dtype=logits.dtype, device=logits.device))
        return logits

    def _masked_copy(self, z: Tensor, mask: Tensor | None) -> Tensor:
        """Detached similarities with the masked entries at -inf, for the statistics."""
        zs = z.detach()
        if not self.autograd:
            return zs  # already masked in place
        return zs.masked_fill(mask, _NEG_INF) if mask is not None else zs.clone()

    def tile(self, r0: int, r1: int, with_stats: bool) -> dict[str, Any]:
        """Logits of anchor rows ``r0:r1`` for every direction.

        ``parts`` lists ``[direction, logits, x_kind, y_kind]``: ``x_kind`` names the row embeddings (``"A"``
        anchors, ``"P"`` positives), ``y_kind`` the column embeddings (``"C"`` all candidates, ``"D0"``
        positives only, ``"Q"`` queries, ``"diag"`` each row's own hard negatives). ``col`` holds the
        doc_to_query logits read down the columns of the query x positive block (rows: queries ``r0:r1``,
        columns: positives), or ``None``.
        """
        out: dict[str, Any] = {"parts": [], "stats": None, "col": None}
        rows = r1 - r0
        g0 = self.off + r0  # global index of the tile's first row
        device = self.A.device
        ar = torch.arange(rows, device=device)
        pos_col = ar + g0  # the positive (query_to_doc) or self (query_to_query) column of each row
        A_t, P_t = self.A[r0:r1], self.P[r0:r1]
        thr = self.threshold[r0:r1] if self.margin is not None else None
        ph = self.positive_hash[r0:r1] if self.positive_hash is not None else None
        ah = self.anchor_hash[r0:r1] if self.anchor_hash is not None else None
        ch_cols = self.ch[: self.q2d_cols] if self.ch is not None else None
        q2d_penalty, own_penalty = self._penalties(pos_col)

        # ---- query_to_doc, and doc_to_query read from the same tile's positive columns --------------------
        z = self._pairwise(A_t, self.C[: self.q2d_cols])  # (rows, q2d_cols) raw similarities
        if self.shared_d2q:
            # (rows = queries k, cols = positives j): doc_to_query logits of rows j, read down the columns.
            zc = z[:, : self.Bw].clone()
            col_thr = self.threshold if self.margin is not None else None
            zc_mask, _ = self._mask_entries(zc.detach(), ah, self.qh, self.dup_q, pos_col, col_thr, col_threshold=True)
            self._apply_masks(zc, zc_mask, None)
            out["col"] = self._to_logits(zc, zc_mask, None, None)
        mask, dup_mask = self._mask_entries(z.detach(), ph, ch_cols, self.dup_c, pos_col, thr)
        self._apply_masks(z, mask, None)
        h = h_mask = h_dup = None
        if self.own:
            # (rows, n): each anchor against its own hard negatives only.
            own_rows = [slice(k * self.Bw + g0, k * self.Bw + g0 + rows) for k in range(1, self.n + 1)]
            negs = torch.stack([self.C[sl] for sl in own_rows], 1)  # (rows, n, d)
            if self.sim is None:
                h = torch.einsum("rd,rkd->rk", A_t, negs)
            else:
                h = torch.cat([self.sim(A_t[i : i + 1], negs[i]) for i in range(rows)])
            if self.ch is not None and self.dup_c:
                h_dup = torch.stack([self.ch[sl] for sl in own_rows], 1) == ph[:, None]
            h_mask = h_dup
            if thr is not None:
                h_margin = h.detach() > thr[:, None]
                h_mask = h_margin if h_mask is None else h_mask | h_margin
            self._apply_masks(h, h_mask, None)
        if with_stats:
            out["stats"] = self._stats(z, mask, dup_mask, h, h_mask, h_dup, ar, pos_col, r0, r1)
        out["parts"].append(
            ["query_to_doc", self._to_logits(z, mask, None, q2d_penalty), "A", "D0" if self.own else "C"]
        )
        if h is not None:
            out["parts"].append(["query_to_doc", self._to_logits(h, h_mask, None, own_penalty), "A", "diag"])

        # ---- query_to_query (never q_i -> q_i) ----------------------------------------------------------------
        if "query_to_query" in self.dirs:
            zq = self._pairwise(A_t, self.Q)  # (rows, Bw)
            qmask, _ = self._mask_entries(zq.detach(), ah, self.qh, self.dup_q, pos_col, thr)
            self._apply_masks(zq, qmask, (ar, pos_col))
            out["parts"].append(["query_to_query", self._to_logits(zq, qmask, (ar, pos_col), None), "A", "Q"])

        # ---- doc_to_query with gathered embeddings (rows: local positives, cols: all queries) ----------------
        if "doc_to_query" in self.dirs and not self.shared_d2q:
            zd = self._pairwise(P_t, self.Q)  # (rows, Bw)
            dmask, _ = self._mask_entries(zd.detach(), ah, self.qh, self.dup_q, pos_col, thr)
            self._apply_masks(zd, dmask, None)
            out["parts"].append(["doc_to_query", self._to_logits(zd, dmask, None, None), "P", "Q"])

        # ---- doc_to_doc (never d_i -> any document of query i: its positive and its hard negatives) ----------
        if "doc_to_doc" in self.dirs:
            zdd = self._pairwise(P_t, self.C[: self.q2d_cols])  # (rows, q2d_cols)
            ddmask, _ = self._mask_entries(zdd.detach(), ph, ch_cols, self.dup_c, None, thr)
            groups = self.q2d_cols // self.Bw
            same = (
                ar[:, None].expand(rows, groups),
                pos_col[:, None] + self.Bw * torch.arange(groups, device=device)[None, :],
            )
            self._apply_masks(zdd, ddmask, same)
            out["parts"].append(
                ["doc_to_doc", self._to_logits(zdd, ddmask, same, None), "P", "D0" if self.own else "C"]
            )
        return out

    def _stats(
        self,
        z: Tensor,
        mask: Tensor | None,
        dup_mask: Tensor | None,
        h: Tensor | None,
        h_mask: Tensor | None,
        h_dup: Tensor | None,
        ar: Tensor,
        pos_col: Tensor,
        r0: int,
        r1: int,
    ) -> Tensor:
        """The :data:`STAT_NAMES` sums of one tile, from the masked raw query_to_doc similarities."""
        rows = r1 - r0
        zs = self._masked_copy(z, mask)
        saved = zs[ar, pos_col].clone()
        zs[ar, pos_col] = _NEG_INF
        hardest = zs.amax(dim=1)
        zs[ar, pos_col] = saved
        if h is not None:
            hardest = torch.maximum(hardest, self._masked_copy(h, h_mask).amax(dim=1))
        raw_pos = self.s_pos_detached[r0:r1]
        has_neg = torch.isfinite(hardest)
        dtype = zs.dtype
        zero = torch.zeros((), dtype=dtype, device=zs.device)
        masked = (mask.sum() if mask is not None else zero) + (h_mask.sum() if h_mask is not None else zero)
        masked_dup = (dup_mask.sum() if dup_mask is not None else zero) + (h_dup.sum() if h_dup is not None else zero)
        negatives = rows * (self.q2d_cols - 1 + (self.n if self.own else 0))
        return torch.stack(
            [
                ((raw_pos > hardest) | ~has_neg).sum().to(dtype),
                raw_pos.sum(),
                torch.where(has_neg, hardest, torch.zeros_like(hardest)).sum(),
                has_neg.sum().to(dtype),
                masked.to(dtype),
                masked_dup.to(dtype),
                torch.tensor(float(negatives), dtype=dtype, device=zs.device),
            ]
        )

    # ---- the two passes ----------------------------------------------------------------------------------------

    def run(self, need_grad: bool) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        L, Bw, R = self.L, self.Bw, self.tile_rows
        dtype, device = self.A.dtype, self.A.device
        per_dir = self.spec.partition_mode == "per_direction"
        row_lse = {d: torch.empty(L, dtype=dtype, device=device) for d in self.row_dirs}
        col_lse = None
        stats = torch.zeros(len(STAT_NAMES), dtype=dtype, device=device)
        two_pass = self.shared_d2q
        if two_pass:
            # Pass 1: row logsumexp of every direction and the streamed column logsumexp of doc_to_query.
            col_lse = torch.full((Bw,), _NEG_INF, dtype=dtype, device=device)
            for r0 in range(0, L, R):
                r1 = min(r0 + R, L)
                t = self.tile(r0, r1, with_stats=not need_grad)
                if t["stats"] is not None:
                    stats += t["stats"]
                by_dir: dict[str, list[Tensor]] = {}
                for direction, z, _, _ in t["parts"]:
                    by_dir.setdefault(direction, []).append(_row_logsumexp_(z))
                for direction, parts in by_dir.items():
                    row_lse[direction][r0:r1] = _logsumexp_parts(parts)
                col_lse = torch.logaddexp(col_lse, _col_logsumexp_(t["col"]))
        lse_by_dir = dict(row_lse)
        if col_lse is not None:
            lse_by_dir["doc_to_query"] = col_lse
        grads = None
        if need_grad:
            # One gradient buffer per input: a tile's row side (its anchors / positives) and column side (the
            # queries / candidates it is scored against) add into the same rows, so the peak extra memory is
            # these two buffers plus a few tiles.
            dQy = torch.zeros_like(self.Q)
            dCy = torch.zeros_like(self.C)
        if two_pass:
            norm = self._normalizer(lse_by_dir) if not per_dir else None
        if need_grad or not two_pass:
            for r0 in range(0, L, R):
                r1 = min(r0 + R, L)
                t = self.tile(r0, r1, with_stats=True)
                stats += t["stats"]
                if two_pass:
                    # Logsumexps known: probabilities straight away, weights uniform.
                    factors = []
                    for direction, z, _, _ in t["parts"]:
                        lse = (lse_by_dir[direction] if per_dir else norm)[r0:r1]
                        z.sub_(lse[:, None]).exp_()
                        factors.append(None)  # uniform weight
                    zc = t["col"]
                    lse_c = lse_by_dir["doc_to_query"] if per_dir else norm
                    zc.sub_(lse_c[None, :]).exp_()
                    t["parts"][0][1][:, :Bw] += zc
                else:
                    factors = self._single_pass_factors(t["parts"], row_lse, r0, r1, need_grad)
                if need_grad:
                    self._accumulate(t["parts"], factors, r0, r1, dQy, dCy)
        # Loss: (1/L) sum_i [normaliser_i - scale * s_pos_i].
        if per_dir:
            total = sum(lse_by_dir[d] for d in self.dirs) / len(self.dirs)
        else:
            total = self._normalizer(lse_by_dir)
        loss = total.mean() - self.scale * self.s_pos.mean()
        if need_grad:
            grads = self._finish_gradients(dQy, dCy)
        return loss, stats, grads

    def _finish_gradients(self, dQy: Tensor, dCy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Accumulated buffers -> gradients of the loss w.r.t. queries, candidates and scale, in place.

        The buffers hold ``G_i = sum_j g_ij y_j`` summed over both sides of every logit, where ``g_ij`` is
        d loss / d logit_ij and ``x``, ``y`` the (normalised, for cosine) embeddings of its row and column. So
        ``x_i . G_i`` summed over every row of both inputs counts each ``g_ij sim_ij`` twice (once per side):
        half of it is d loss / d scale. Through the normalisation ``x = u / ||u||``, d loss / d u_i is
        ``scale * (G_i - (x_i . G_i) x_i) / ||u_i||``.
        """
        L, off = self.L, self.off
        # The positive logit's -1 (query_to_doc only), weight 1/L, on both of its sides.
        dQy[off : off + L].sub_(self.P, alpha=1.0 / L)
        dCy[off : off + L].sub_(self.A, alpha=1.0 / L)
        rq, rc = _row_dot(self.Q, dQy), _row_dot(self.C, dCy)  # (Bw,), (N,)
        dscale = (rq.sum() + rc.sum()) / 2
        if self.iq is not None:
            dQy.addcmul_(self.Q, rq[:, None], value=-1.0).mul_(self.iq[:, None])
            dCy.addcmul_(self.C, rc[:, None], value=-1.0).mul_(self.ic[:, None])
        return dQy.mul_(self.scale), dCy.mul_(self.scale), dscale

    def run_autograd(self) -> tuple[Tensor, Tensor]:
        """The plain path: one tile of all rows, logsumexp and gradients by autograd (custom similarities)."""
        t = self.tile(0, self.L, with_stats=True)
        by_dir: dict[str, list[Tensor]] = {}
        for direction, z, _, _ in t["parts"]:
            by_dir.setdefault(direction, []).append(torch.logsumexp(z, dim=1))
        lse_by_dir = {d: _logsumexp_parts(v) for d, v in by_dir.items()}
        if t["col"] is not None:
            lse_by_dir["doc_to_query"] = torch.logsumexp(t["col"], dim=0)
        if self.spec.partition_mode == "per_direction":
            total = sum(lse_by_dir[d] for d in self.dirs) / len(self.dirs)
        else:
            total = self._normalizer(lse_by_dir)
        loss = total.mean() - self.scale * self.s_pos.mean()
        return loss, t["stats"]

    def _normalizer(self, lse_by_dir: dict[str, Tensor]) -> Tensor:
        return _logsumexp_parts([lse_by_dir[d] for d in DIRECTIONS if d in lse_by_dir])

    def _single_pass_factors(
        self, parts: list[list[Any]], row_lse: dict[str, Tensor], r0: int, r1: int, need_grad: bool
    ) -> list[Tensor]:
        """Exponentiate each part in place (shifted by its row max) and return each part's row factor."""
        maxes, part_lse = [], []
        by_dir: dict[str, list[Tensor]] = {}
        for direction, z, _, _ in parts:
            m = z.amax(dim=1) if z.shape[1] else torch.full((z.shape[0],), _NEG_INF, dtype=z.dtype, device=z.device)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            z.sub_(m[:, None]).exp_()
            lse = m + z.sum(dim=1).log()
            maxes.append(m)
            part_lse.append(lse)
            by_dir.setdefault(direction, []).append(lse)
        dir_lse = {d: _logsumexp_parts(v) for d, v in by_dir.items()}
        for d, v in dir_lse.items():
            row_lse[d][r0:r1] = v
        if not need_grad:
            return []
        per_dir = self.spec.partition_mode == "per_direction"
        joint = None if per_dir else _logsumexp_parts([dir_lse[d] for d in DIRECTIONS if d in dir_lse])
        factors = []
        for (direction, _, _, _), m in zip(parts, maxes, strict=True):
            norm = dir_lse[direction] if per_dir else joint
            factors.append(torch.exp(m - norm) * self.weight)
        return factors

    def _accumulate(
        self,
        parts: list[list[Any]],
        factors: list[Tensor | None],
        r0: int,
        r1: int,
        dQy: Tensor,
        dCy: Tensor,
    ) -> None:
        """Add one tile's contribution to the gradient buffers (see :meth:`_finish_gradients`)."""
        off = self.off
        X = {"A": self.A, "P": self.P}
        dX = {"A": dQy[off : off + self.L], "P": dCy[off : off + self.L]}
        rows = r1 - r0
        for (_, e, x_kind, y_kind), f in zip(parts, factors, strict=True):
            # e: (rows, cols) exp(logit - shift); the gradient of the loss w.r.t. the logit is e * f, where f is
            # (rows,) in the single pass and the uniform weight when the logsumexps came from a first pass.
            f_col = f[:, None] if f is not None else self.weight
            x_t = X[x_kind][r0:r1]
            if y_kind == "diag":
                g = e * f_col  # (rows, n)
                g0 = off + r0
                for k in range(1, self.n + 1):
                    own = slice(k * self.Bw + g0, k * self.Bw + g0 + rows)
                    dX[x_kind][r0:r1].addcmul_(g[:, k - 1 : k], self.C[own])
                    dCy[own].addcmul_(g[:, k - 1 : k], x_t)
                continue
            if y_kind == "Q":
                Y, dY = self.Q, dQy
            elif y_kind == "D0":
                Y, dY = self.C[: self.Bw], dCy[: self.Bw]
            else:
                Y, dY = self.C, dCy
            if f is None:
                dX[x_kind][r0:r1].addmm_(e, Y, alpha=self.weight)
                dY.addmm_(e.T, x_t, alpha=self.weight)
            else:
                dX[x_kind][r0:r1].addcmul_(torch.mm(e, Y), f_col)
                dY.addmm_(e.T, x_t * f_col)


def _inverse_norms(x: Tensor) -> Tensor:
    """``(rows,)`` ``1 / max(||x_i||, 1e-12)``, the factor ``F.normalize`` divides by."""
    return torch.linalg.vector_norm(x, dim=1).clamp_min_(1e-12).reciprocal_()


def _row_dot(x: Tensor, y: Tensor, chunk: int = 4096) -> Tensor:
    """``(rows,)`` dot products of matching rows, in chunks: no ``(rows, d)`` temporary."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for c0 in range(0, x.shape[0], chunk):
        torch.sum(x[c0 : c0 + chunk] * y[c0 : c0 + chunk], dim=1, out=out[c0 : c0 + chunk])
    return out


def _row_logsumexp_(z: Tensor) -> Tensor:
    """Row logsumexp of ``z``, overwriting ``z`` (max shift, exp and sum in place: no tile-sized temporaries)."""
    if z.shape[1] == 0:
        return torch.full((z.shape[0],), _NEG_INF, dtype=z.dtype, device=z.device)
    m = z.amax(dim=1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + z.sub_(m[:, None]).exp_().sum(dim=1).log()


def _col_logsumexp_(z: Tensor) -> Tensor:
    m = z.amax(dim=0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + z.sub_(m[None, :]).exp_().sum(dim=0).log()


class _FusedMNRFunction(torch.autograd.Function):
    """Loss and statistics in forward, with the gradients computed there too and saved for backward."""

    @staticmethod
    def forward(
        ctx: Any,
        queries: Tensor,
        candidates: Tensor,
        scale: Tensor,
        query_hashes: Tensor | None,
        candidate_hashes: Tensor | None,
        spec: MNRSpec,
        normalize: bool,
    ) -> tuple[Tensor, Tensor]:
        compute = torch.float64 if queries.dtype == torch.float64 else torch.float32
        need_grad = any(ctx.needs_input_grad[:3])
        run = _Ctx(
            queries.detach().to(compute),
            candidates.detach().to(compute),
            float(scale),
            spec,
            query_hashes,
            candidate_hashes,
            normalize=normalize,
        )
        loss, stats, grads = run.run(need_grad)
        if grads is not None:
            d_queries, d_candidates, d_scale = grads
            ctx.save_for_backward(
                d_queries.to(queries.dtype), d_candidates.to(candidates.dtype), d_scale.to(scale.dtype)
            )
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_stats: Tensor) -> tuple[Tensor | None, ...]:
        d_queries, d_candidates, d_scale = ctx.saved_tensors
        if not bool(grad_loss == 1):  # the usual backward() of the loss itself needs no (B, d) products
            d_queries = d_queries * grad_loss.to(d_queries.dtype)
            d_candidates = d_candidates * grad_loss.to(d_candidates.dtype)
            d_scale = d_scale * grad_loss.to(d_scale.dtype)
        return (
            d_queries if ctx.needs_input_grad[0] else None,
            d_candidates if ctx.needs_input_grad[1] else None,
            d_scale if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
        )


def _check_inputs(
    queries: Tensor, candidates: Tensor, spec: MNRSpec, query_hashes: Tensor | None, candidate_hashes: Tensor | None
) -> None:
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
    for name, h, rows in (
        ("query_hashes", query_hashes, queries.shape[0]),
        ("candidate_hashes", candidate_hashes, candidates.shape[0]),
    ):
        if h is not None and (not isinstance(h, Tensor) or h.shape != (rows,)):
            raise ValueError(f"{name} must be a ({rows},) tensor, got {getattr(h, 'shape', type(h).__name__)}")
    if (query_hashes is None) != (candidate_hashes is None):
        raise ValueError("query_hashes and candidate_hashes must be given together (or both None)")


def tiled_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    query_hashes: Tensor | None = None,
    candidate_hashes: Tensor | None = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Multiple negatives ranking loss on dot products (cosine with ``normalize``), fused and tiled.

    Args:
        queries: ``(B, d)`` anchors (all ranks' when gathered).
        candidates: ``(B * (1 + n), d)`` positives, then each hard-negative column.
        scale: Inverse temperature; a tensor that requires grad gets a gradient.
        spec: What to compute (directions, modes, masks, tiling).
        query_hashes: ``(B,)`` row hashes of the queries (see :func:`row_hashes`), or ``None``.
        candidate_hashes: ``(B * (1 + n),)`` row hashes of the candidates, or ``None``. With both given,
            duplicates of a row's positive (or anchor) are excluded from its negatives.
        normalize: Score cosine similarities: the normalised copies (``F.normalize``'s, norms clamped at
            1e-12) are made inside the fused function, with no autograd graph, and the gradients are projected
            back through the normalisation there.

    Returns:
        ``(loss, stats)``: the scalar loss (float32, or float64 for float64 inputs) and a detached tensor of the
        sums named by :data:`STAT_NAMES`.
    """
    _check_inputs(queries, candidates, spec, query_hashes, candidate_hashes)
    if not isinstance(scale, Tensor):
        scale = torch.tensor(float(scale), dtype=torch.float32, device=queries.device)
    return _FusedMNRFunction.apply(queries, candidates, scale, query_hashes, candidate_hashes, spec, normalize)


def plain_mnr_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    similarity_fct: Any,
    query_hashes: Tensor | None = None,
    candidate_hashes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The same loss with any similarity function, on full ``B x B`` matrices, differentiated by autograd.

    The fallback for a ``similarity_fct`` other than cosine or dot product: no tiling, no memory savings.
    Arguments and return value as :func:`tiled_mnr_loss`, plus ``similarity_fct(x, y) -> (rows_x, rows_y)``.
    """
    _check_inputs(queries, candidates, spec, query_hashes, candidate_hashes)
    compute = torch.float64 if queries.dtype == torch.float64 else torch.float32
    run = _Ctx(
        queries.to(compute),
        candidates.to(compute),
        scale,
        spec,
        query_hashes,
        candidate_hashes,
        similarity_fct=similarity_fct,
    )
    loss, stats = run.run_autograd()
    return loss, stats.detach()


def mnr_plus_loss(
    queries: Tensor,
    candidates: Tensor,
    scale: float | Tensor,
    spec: MNRSpec,
    similarity: Literal["cos", "dot"] = "cos",
    query_hashes: Tensor | None = None,
    candidate_hashes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`tiled_mnr_loss` on cosine or dot-product similarity.

    Embeddings in float16/bfloat16 are accepted: logits and accumulation are float32 and the gradients flow
    back in the input dtype.
    """
    if similarity not in ("cos", "dot"):
        raise ValueError(f"similarity must be 'cos' or 'dot', got {similarity!r}")
    return tiled_mnr_loss(
        queries, candidates, scale, spec, query_hashes, candidate_hashes, normalize=similarity == "cos"
    )


# --------------------------------------------------------------------------------------------------------------
# Inf-CL-style variant, kept for the benchmark that chose the fused one.
# --------------------------------------------------------------------------------------------------------------


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
    """Inf-CL-style loss (Wang et al. 2024): cosine query_to_doc with a shared pool, tiles recomputed in backward.

    Kept as the measured alternative to the fused kernel, not used by :class:`MNRPlus`: four matrix products
    per tile instead of three.
    """
    if tile_cols < 1:
        raise ValueError(f"tile_cols must be positive, got {tile_cols}")
    compute = torch.float64 if queries.dtype == torch.float64 else torch.float32
    q = F.normalize(queries.to(compute), p=2, dim=1)
    c = F.normalize(candidates.to(compute), p=2, dim=1)
    return _InfCLFunction.apply(q, c, float(scale), tile_cols)
