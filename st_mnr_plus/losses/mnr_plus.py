"""MNRPlus: a drop-in ``MultipleNegativesRankingLoss`` that never builds the ``B x B`` matrix."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.distributed as dist
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather, all_gather_with_grad, cos_sim, dot_score, get_rank
from sentence_transformers.util import similarity_fct_name as _similarity_fct_name
from torch import Tensor, nn

from st_mnr_plus.losses.functional import (
    DEFAULT_TILE_ELEMENTS,
    DIRECTIONS,
    HARDNESS_MODES,
    MNRSpec,
    mnr_plus_loss,
    plain_mnr_loss,
    row_hashes,
)
from st_mnr_plus.losses.grouping import embed_columns_grouped

logger = logging.getLogger(__name__)

__all__ = ["MNRPlus"]

DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "accuracy",
    "positive_similarity",
    "hardest_negative_similarity",
    "masked_fraction",
    "masked_duplicates",
    "scale",
)

_INFOCL_CITATION = """
@misc{oord2019representationlearningcontrastivepredictive,
      title={Representation Learning with Contrastive Predictive Coding},
      author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
      year={2019},
      eprint={1807.03748},
      archivePrefix={arXiv},
      primaryClass={cs.LG},
      url={https://arxiv.org/abs/1807.03748},
}

@misc{cheng2024breakingmemorybarriernearinfinite,
      title={Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss},
      author={Zesen Cheng and Hang Zhang and Kehan Li and Sicong Leng and Zhiqiang Hu and Fei Wu and Deli Zhao and Xin Li and Lidong Bing},
      year={2024},
      eprint={2410.17243},
      archivePrefix={arXiv},
      primaryClass={cs.CV},
      url={https://arxiv.org/abs/2410.17243},
}
"""


def _similarity_kind(similarity_fct: Callable[[Tensor, Tensor], Tensor]) -> Literal["cos", "dot"] | None:
    """``"cos"``/``"dot"`` for the similarity functions the tiled path implements, else ``None``."""
    if similarity_fct is cos_sim:
        return "cos"
    if similarity_fct is dot_score:
        return "dot"
    # model.similarity bound methods resolve through the model's similarity_fn_name.
    name = _similarity_fct_name(similarity_fct)
    owner = getattr(similarity_fct, "__self__", None)
    if owner is not None and hasattr(owner, "similarity_fn_name"):
        if name == "cos_sim":
            return "cos"
        if name == "dot_score":
            return "dot"
    return None


class MNRPlus(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"], ...] = (
            "query_to_doc",
        ),
        partition_mode: Literal["joint", "per_direction"] = "joint",
        hardness_mode: Literal["in_batch_negatives", "hard_negatives", "all_negatives"] | None = None,
        hardness_strength: float = 0.0,
        *,
        symmetric: bool = False,
        mask_duplicates: bool = True,
        false_negative_margin: float | None = None,
        learnable_scale: bool = False,
        max_scale: float = 100.0,
        hard_negatives: Literal["shared", "own"] = "shared",
        tile_size: int | None = None,
        group_by_length: bool = True,
    ) -> None:
        r"""Multiple negatives ranking (InfoNCE with in-batch negatives), computed in tiles, with false-negative
        masking and an optionally learnable temperature. A drop-in for sentence-transformers'
        ``MultipleNegativesRankingLoss`` (MNRL): same arguments, same inputs, same loss and gradients when no
        duplicates are masked.

        For each anchor :math:`q_i` with positive :math:`p_i`, over the candidate set :math:`\mathcal{C}_i` (every
        positive and hard negative of the batch, plus the terms of the other ``directions``):

        .. math::

            \mathcal{L} = -\frac{1}{B} \sum_i \log \frac{\exp(s \cdot \mathrm{sim}(q_i, p_i))}
                {\sum_{c \in \mathcal{C}_i \setminus \mathcal{M}_i} \exp(s \cdot \mathrm{sim}(q_i, c)
                + \alpha\, \mathrm{sg}(\mathrm{sim}(q_i, c)) [c \text{ penalised}])}

        with ``s = scale = 1 / temperature``, :math:`\mathcal{M}_i` the masked false negatives (texts equal to the
        positive; similarities above the positive's minus ``false_negative_margin``) and :math:`\alpha` the
        ``hardness_strength``. The logits are never materialised as a ``B x B(1+n)`` matrix: anchor rows are
        processed in tiles, each tile computing its exact logsumexp and its gradients at once (saved for
        backward, as Liger-Kernel's fused linear cross-entropy does), so peak extra memory is
        ``O(B * d + tile)``. Logits and accumulation are float32 whatever the embedding dtype.

        Args:
            model: The SentenceTransformer model.
            scale: Inverse temperature, ``scale = 1 / temperature``; with ``learnable_scale`` its initial value.
            similarity_fct: ``cos_sim`` (default) or ``dot_score`` (also as the model's ``similarity``) use the
                tiled path. Any other function falls back to a plain path that builds the full similarity
                matrices and lets autograd differentiate them: same results, none of the memory savings.
            gather_across_devices: Gather the embeddings (and row hashes) of every rank, with gradients, and score
                this rank's rows against the global candidate pool, as MNRL does.
            directions: Interaction terms, as MNRL: ``"query_to_doc"`` (required), ``"query_to_query"``,
                ``"doc_to_query"``, ``"doc_to_doc"``.
            partition_mode: ``"joint"`` (one softmax over all directions) or ``"per_direction"`` (one per
                direction, averaged; only with query_to_doc and doc_to_query).
            hardness_mode: MNRL's hardness weighting: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or
                ``"all_negatives"``.
            hardness_strength: ``alpha`` of the hardness penalty; must be non-negative.
            symmetric: Shorthand for ``directions=("query_to_doc", "doc_to_query")`` with
                ``partition_mode="per_direction"`` (MNRL's symmetric variant). Both directions are read from the
                same tiles. Leave ``directions`` at its default when using it.
            mask_duplicates: Exclude from each anchor's negatives every candidate whose token ids equal its
                positive's (and, for query_to_query/doc_to_query, every query equal to the anchor). Token ids,
                not embeddings, are compared, so dropout cannot hide a duplicate.
            false_negative_margin: Also exclude negatives whose similarity exceeds the positive's similarity
                minus this margin (positive-aware false-negative filtering; a negative margin lets a negative
                get that much above the positive). ``None`` disables it.
            learnable_scale: Make the scale an ``nn.Parameter`` (log-parametrised, clamped at ``max_scale``) that
                the trainer's optimizer updates with the model. ``SentenceTransformerTrainer`` puts the loss's
                parameters into its optimizer; with a non-zero ``weight_decay`` the log-scale is decayed towards
                ``scale = 1`` too, so use ``learning_rate_mapping``/a parameter group to exempt it if needed.
                Under ``torch.distributed`` its gradient is averaged over the ranks (DDP averages only the
                model's), so every rank keeps the same scale.
            max_scale: Upper bound of a learnable scale.
            hard_negatives: ``"shared"`` (MNRL: hard negatives are negatives for every anchor) or ``"own"``
                (each anchor's hard negatives count only for it; in-batch positives still count for all).
            tile_size: Anchor rows per tile; ``None`` picks it so that a tile holds about four million logits.
            group_by_length: Embed each column in length-sorted chunks, each padded only to its own longest text
                (:func:`st_mnr_plus.losses.grouping.embed_columns_grouped`): the same loss and gradients up to
                float rounding for less encoder work on texts of mixed length. Dropout masks are drawn per chunk,
                so only ``group_by_length=False`` draws exactly MNRL's. Inputs that cannot be grouped
                (StaticEmbedding, images, unpadded batches) are embedded as MNRL embeds them.

        Inputs:
            +-------------------------------------------------+--------+
            | Inputs                                          | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative) triplets           | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

            The candidates are laid out as in MNRL: all positives, then each hard-negative column, the target of
            row ``i`` being column ``i``.

        Diagnostics:
            After every forward, ``loss.diagnostics`` holds detached Python floats for a callback to log:

            - ``"accuracy"``: fraction of anchors whose positive is more similar than every unmasked
              query_to_doc negative (in-batch top-1 accuracy);
            - ``"positive_similarity"``: mean anchor-positive similarity;
            - ``"hardest_negative_similarity"``: mean over anchors of the highest unmasked negative similarity
              (NaN when no anchor has a negative, e.g. a batch of one pair);
            - ``"masked_fraction"``: fraction of query_to_doc negatives excluded by the duplicate mask or the
              margin; ``"masked_duplicates"``: the number excluded as duplicates;
            - ``"scale"``: the scale used.

        Recommendations:
            - Use :class:`st_mnr_plus.NoDuplicatesSampler` as ``batch_sampler``: masking keeps duplicates from
              hurting, but a batch without them has more useful negatives.

        Relations:
            - ``sentence_transformers.losses.MultipleNegativesRankingLoss``: the same loss, computed on the full
              matrix, without masking or a learnable scale.
            - :class:`st_mnr_plus.CachedMNRPlus`: this loss with GradCache, for batches whose activations do not
              fit in memory.

        References:
            - van den Oord et al., 2018, Representation Learning with Contrastive Predictive Coding (InfoNCE):
              https://arxiv.org/abs/1807.03748
            - Cheng et al., 2024, Breaking the Memory Barrier (Inf-CL), tiled contrastive loss:
              https://arxiv.org/abs/2410.17243
            - Moreira et al., 2024, NV-Retriever (positive-aware false-negative filtering):
              https://arxiv.org/abs/2407.15831

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from st_mnr_plus import MNRPlus

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = MNRPlus(model, learnable_scale=True)
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        self.model = model
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0 or math.isinf(scale):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        if not callable(similarity_fct):
            raise ValueError(f"similarity_fct must be callable, got {similarity_fct!r}")
        if symmetric:
            if tuple(directions) != ("query_to_doc",):
                raise ValueError(
                    "symmetric=True sets directions=('query_to_doc', 'doc_to_query'); leave directions at its "
                    f"default or pass the directions you want instead (got directions={tuple(directions)!r})"
                )
            directions = ("query_to_doc", "doc_to_query")
            partition_mode = "per_direction"
        directions = tuple(directions)
        if not directions:
            raise ValueError("directions must name at least one direction")
        unknown = set(directions) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"directions has invalid entries {sorted(unknown)}; valid: {DIRECTIONS}")
        if "query_to_doc" not in directions:
            raise ValueError("directions must include 'query_to_doc' (it contains the positive pair)")
        if len(set(directions)) != len(directions):
            raise ValueError(f"directions has repeated entries: {directions!r}")
        if partition_mode not in ("joint", "per_direction"):
            raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {partition_mode!r}")
        if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
            raise ValueError(
                "partition_mode='per_direction' requires every direction's candidate pool to include the positive "
                "pair; 'query_to_query' and 'doc_to_doc' do not. Use partition_mode='joint'."
            )
        if hardness_mode not in HARDNESS_MODES:
            raise ValueError(f"hardness_mode must be one of {HARDNESS_MODES}, got {hardness_mode!r}")
        if not hardness_strength >= 0.0:
            raise ValueError(f"hardness_strength must be non-negative, got {hardness_strength!r}")
        if hardness_mode is not None and hardness_strength == 0.0:
            logger.warning(
                "hardness_mode=%r is set but hardness_strength=0.0, so hardness weighting has no effect.",
                hardness_mode,
            )
        if hard_negatives not in ("shared", "own"):
            raise ValueError(f"hard_negatives must be 'shared' or 'own', got {hard_negatives!r}")
        if false_negative_margin is not None and (
            isinstance(false_negative_margin, bool) or not math.isfinite(float(false_negative_margin))
        ):
            raise ValueError(f"false_negative_margin must be a finite float or None, got {false_negative_margin!r}")
        if not max_scale > 0 or math.isinf(max_scale):
            raise ValueError(f"max_scale must be a positive finite number, got {max_scale!r}")
        if learnable_scale and scale > max_scale:
            raise ValueError(f"scale ({scale}) must not exceed max_scale ({max_scale}) when learnable_scale=True")
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1):
            raise ValueError(f"tile_size must be a positive integer or None, got {tile_size!r}")

        self.similarity_fct = similarity_fct
        self._similarity_kind = _similarity_kind(similarity_fct)
        self.gather_across_devices = gather_across_devices
        self.directions = directions
        self.partition_mode = partition_mode
        self.hardness_mode = hardness_mode
        self.hardness_strength = float(hardness_strength)
        self.symmetric = symmetric
        self.mask_duplicates = mask_duplicates
        self.false_negative_margin = None if false_negative_margin is None else float(false_negative_margin)
        self.learnable_scale = learnable_scale
        self.max_scale = float(max_scale)
        self.hard_negatives = hard_negatives
        self.tile_size = tile_size
        self.group_by_length = bool(group_by_length)
        self._initial_scale = float(scale)
        if learnable_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))
        else:
            self._fixed_scale = float(scale)
        self.diagnostics: dict[str, float] = {}

    # ---- temperature ---------------------------------------------------------------------------------------

    def _scale_tensor(self) -> Tensor | float:
        """The scale to compute with: a tensor carrying the log-scale's gradient, or a float."""
        if not self.learnable_scale:
            return self._fixed_scale
        log_scale = self.log_scale
        if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            log_scale = _AverageGradAcrossRanks.apply(log_scale)
        return log_scale.exp().clamp(max=self.max_scale)

    @property
    def scale(self) -> float:
        """The current scale (inverse temperature) as a Python float."""
        if not self.learnable_scale:
            return self._fixed_scale
        return float(self._scale_tensor().detach())

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    # ---- forward -------------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        row_ids = [row_hashes(features) for features in sentence_features] if self.mask_duplicates else None
        if self.group_by_length:
            embeddings = embed_columns_grouped(self.model, sentence_features)
        else:
            embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels, row_ids=row_ids)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None = None, *, row_ids: list[Tensor] | None = None
    ) -> Tensor:
        """The loss from the columns' embeddings (anchor, positive, hard negatives...), each ``(B, d)``.

        Args:
            embeddings: One ``(B, d)`` tensor per input column, this rank's rows only; gathering across devices
                happens here when ``gather_across_devices`` is set.
            labels: Unused (the target of row ``i`` is its own positive), kept for the trainer's signature.
            row_ids: One ``(B,)`` int64 tensor per column identifying equal inputs (see
                :func:`st_mnr_plus.losses.functional.row_hashes`), or ``None`` for no duplicate masking.

        Returns:
            The scalar loss.
        """
        embeddings = list(embeddings)
        if len(embeddings) < 2:
            raise ValueError(f"embeddings must hold at least 2 columns (anchor, positive), got {len(embeddings)}")
        batch = embeddings[0].shape[0] if embeddings[0].ndim == 2 else -1
        for k, column in enumerate(embeddings):
            if not isinstance(column, Tensor) or column.ndim != 2 or column.shape[0] != batch:
                raise ValueError(
                    f"embeddings[{k}] must be a ({batch}, dim) tensor like embeddings[0], got "
                    f"{tuple(column.shape) if isinstance(column, Tensor) else type(column).__name__}"
                )
        if row_ids is not None:
            if len(row_ids) != len(embeddings):
                raise ValueError(f"row_ids must hold one tensor per column ({len(embeddings)}), got {len(row_ids)}")
            for k, ids in enumerate(row_ids):
                if not isinstance(ids, Tensor) or ids.shape != (batch,):
                    raise ValueError(
                        f"row_ids[{k}] must be a ({batch},) tensor, got "
                        f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}"
                    )
        queries, docs = embeddings[0], embeddings[1:]
        offset = 0
        if self.gather_across_devices:
            queries = all_gather_with_grad(queries)
            docs = [all_gather_with_grad(doc) for doc in docs]
            if row_ids is not None:
                row_ids = [all_gather(ids.to(queries.device)) for ids in row_ids]
            offset = get_rank() * batch
        candidates = torch.cat(docs, dim=0)  # (B_world * (1 + n), d): positives, then each negative column
        query_hashes = candidate_hashes = None
        if row_ids is not None:
            query_hashes = row_ids[0].to(queries.device)
            candidate_hashes = torch.cat([ids.to(queries.device) for ids in row_ids[1:]])
        spec = MNRSpec(
            local_batch=batch,
            offset=offset,
            directions=self.directions,
            partition_mode=self.partition_mode,
            hardness_mode=self.hardness_mode,
            hardness_strength=self.hardness_strength,
            hard_negatives=self.hard_negatives,
            false_negative_margin=self.false_negative_margin,
            tile_rows=self.tile_size,
            tile_elements=DEFAULT_TILE_ELEMENTS,
        )
        scale = self._scale_tensor()
        if self._similarity_kind is not None:
            loss, stats = mnr_plus_loss(
                queries, candidates, scale, spec, self._similarity_kind, query_hashes, candidate_hashes
            )
        else:
            loss, stats = plain_mnr_loss(
                queries, candidates, scale, spec, self.similarity_fct, query_hashes, candidate_hashes
            )
        self._update_diagnostics(stats, batch, scale)
        return loss

    def _update_diagnostics(self, stats: Tensor, batch: int, scale: Tensor | float) -> None:
        correct, pos_sum, hardest_sum, rows_with_neg, masked, masked_dup, negatives = stats.tolist()
        self.diagnostics = {
            "accuracy": correct / batch,
            "positive_similarity": pos_sum / batch,
            "hardest_negative_similarity": hardest_sum / rows_with_neg if rows_with_neg else float("nan"),
            "masked_fraction": masked / negatives if negatives else 0.0,
            "masked_duplicates": masked_dup,
            "scale": float(scale.detach()) if isinstance(scale, Tensor) else float(scale),
        }

    # ---- model card --------------------------------------------------------------------------------------

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": _similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
            "mask_duplicates": self.mask_duplicates,
            "false_negative_margin": self.false_negative_margin,
            "learnable_scale": self.learnable_scale,
            "max_scale": self.max_scale,
            "hard_negatives": self.hard_negatives,
            "group_by_length": self.group_by_length,
        }

    @property
    def citation(self) -> str:
        return _INFOCL_CITATION

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, directions={self.directions}, mask_duplicates={self.mask_duplicates}"


class _AverageGradAcrossRanks(torch.autograd.Function):
    """Identity whose backward averages the gradient over the ranks, as DDP does for the model's parameters.

    A learnable scale is a parameter of the loss, not of the DDP-wrapped model: without this each rank would
    step it by the gradient of its own rows and the ranks' scales would drift apart.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad / dist.get_world_size()
