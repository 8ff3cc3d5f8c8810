"""MNRPlus: a drop-in ``MultipleNegativesRankingLoss`` that never builds the ``B x B`` matrix.

The module holds the options (each validated by :mod:`.options`, at construction and at every assignment), the
temperature, the diagnostics and the gathering across devices; the math is :mod:`.functional` over :mod:`.ops`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.distributed as dist
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather, all_gather_with_grad, cos_sim, dot_score, get_rank
from sentence_transformers.util import similarity_fct_name as _similarity_fct_name
from torch import Tensor, nn

from st_mnr_plus.losses import options as opt
from st_mnr_plus.losses.functional import (
    Backend,
    MNRSpec,
    choose_backend,
    diagnostics_from_stats,
    mnr_plus_loss,
    plain_mnr_loss,
)
from st_mnr_plus.losses.grouping import embed_columns_grouped
from st_mnr_plus.losses.identity import column_ids
from st_mnr_plus.losses.options import Option

logger = logging.getLogger(__name__)

__all__ = ["DIAGNOSTIC_KEYS", "MNRPlus"]

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


def similarity_kind(similarity_fct: Callable[[Tensor, Tensor], Tensor]) -> Literal["cos", "dot"] | None:
    """``"cos"``/``"dot"`` for the similarity functions the tiled path implements, else ``None`` (plain path)."""
    if similarity_fct is cos_sim:
        return "cos"
    if similarity_fct is dot_score:
        return "dot"
    # model.similarity bound methods resolve through the model's similarity_fn_name.
    owner = getattr(similarity_fct, "__self__", None)
    if owner is not None and hasattr(owner, "similarity_fn_name"):
        return {"cos_sim": "cos", "dot_score": "dot"}.get(_similarity_fct_name(similarity_fct))
    return None


@opt.declare_options("loss")
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
        false_negative_ratio: float | None = None,
        learnable_scale: bool = False,
        max_scale: float = 100.0,
        scale_learning_rate: float | None = 1e-3,
        hard_negatives: Literal["shared", "own"] = "shared",
        tile_size: int | None = None,
        group_by_length: bool = True,
        backend: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        r"""Multiple negatives ranking (InfoNCE with in-batch negatives), computed in tiles, with false-negative
        masking and an optionally learnable temperature. A drop-in for sentence-transformers'
        ``MultipleNegativesRankingLoss`` (MNRL): same arguments, same inputs, same loss and gradients when nothing
        is masked.

        For each anchor :math:`q_i` with positive :math:`p_i`, over the candidate set :math:`\mathcal{C}_i` (every
        positive and hard negative of the batch, plus the terms of the other ``directions``):

        .. math::

            \mathcal{L} = -\frac{1}{B} \sum_i \log \frac{\exp(s \cdot \mathrm{sim}(q_i, p_i))}
                {\sum_{c \in \mathcal{C}_i \setminus \mathcal{M}_i} \exp(s \cdot \mathrm{sim}(q_i, c)
                + \alpha\, \mathrm{sg}(\mathrm{sim}(q_i, c)) [c \text{ penalised}])}

        with ``s = scale = 1 / temperature``, :math:`\mathcal{M}_i` the masked false negatives (inputs equal to
        the positive's; similarities above the false-negative bound) and :math:`\alpha` the ``hardness_strength``.
        The logits are never materialised as a ``B x B(1+n)`` matrix: anchor rows are processed in tiles, each
        tile computing its exact logsumexp and its gradients at once (saved for backward, as Liger-Kernel's fused
        linear cross-entropy does), so peak extra memory is ``O(B * d + tile)``. Logits and accumulation are
        float32 whatever the embedding dtype, with autocast disabled inside the loss, and the gradients are cast
        to the embeddings' dtype once, at the end (float16 under a GradScaler stays finite).

        Every option is an attribute that can be reassigned later (``loss.scale = 5.0``,
        ``loss.similarity_fct = util.dot_score``, ...) with the same effect and the same checks as in the
        constructor; a new ``similarity_fct`` re-chooses between the tiled and the plain path.

        Args:
            model: The SentenceTransformer model.
            scale: Inverse temperature, ``scale = 1 / temperature``; with ``learnable_scale`` its initial value.
            similarity_fct: ``cos_sim`` (default) or ``dot_score`` (also as the model's ``similarity``) use the
                tiled path. Any other function falls back to a plain path that builds the full similarity
                matrices and lets autograd differentiate them: same results, none of the memory savings.
            gather_across_devices: Gather the embeddings (and row identities) of every rank, with gradients, and
                score this rank's rows against the global candidate pool, as MNRL does.
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
            mask_duplicates: Exclude from each anchor's negatives every candidate whose inputs equal its
                positive's (and, for query_to_query/doc_to_query, every query equal to the anchor). Inputs are
                compared, not embeddings (token ids under the attention mask, and every other per-row tensor such
                as pixel values), so dropout cannot hide a duplicate. A column whose rows cannot be told apart
                from its features is left unmasked, with a warning. ``False`` gives MNRL's behaviour.
            false_negative_margin: Also exclude negatives whose similarity exceeds the positive's similarity
                minus this margin (an absolute bound; a negative margin lets a negative get that much above the
                positive). ``None`` disables it.
            false_negative_ratio: Also exclude negatives whose similarity exceeds this fraction of the positive's
                similarity, in ``(0, 1]`` (NV-Retriever's TopK-PercPos, where 0.95 worked best). ``None``
                disables it. With both bounds set, the lower one applies.
            learnable_scale: Make the scale a parameter, trained with the model. It is stored as the log of its
                ratio to the initial ``scale`` (so weight decay pulls it towards the initial temperature, not
                towards scale 1), capped at ``max_scale`` by clamping the parameter before each forward (so the
                cap never blocks its gradient), and averaged over the ranks under ``torch.distributed``. Use
                :class:`st_mnr_plus.LossStateCallback` with the trainer: it gives the scale its own learning rate
                (``scale_learning_rate``) and keeps it in checkpoints, so ``resume_from_checkpoint`` restores it.
            max_scale: Upper bound of a learnable scale.
            scale_learning_rate: The learning rate of a learnable scale (its own parameter group, without weight
                decay), applied by ``LossStateCallback`` through the trainer's ``learning_rate_mapping``. The
                default, 1e-3, comes from the quality benchmark: at a static model's learning rate (0.1) the scale
                ran from 20 to 51 and the model scored lower; at 1e-3 it trained as well as a fixed scale. ``None``
                trains it with the model's learning rate and weight decay. Without the callback (a plain trainer)
                the model's rate applies.
            hard_negatives: ``"shared"`` (MNRL: hard negatives are negatives for every anchor) or ``"own"``
                (each anchor's hard negatives count only for it; in-batch positives still count for all).
            tile_size: Anchor rows per tile; ``None`` picks it so that a tile holds about four million logits.
            group_by_length: Embed each column in length-sorted chunks, each padded only to its own longest text
                (:func:`st_mnr_plus.losses.grouping.embed_columns_grouped`): the same loss and gradients up to
                float rounding for less encoder work on texts of mixed length. Dropout masks are drawn per chunk,
                so only ``group_by_length=False`` draws exactly MNRL's. Inputs that cannot be grouped
                (StaticEmbedding, images, unpadded batches) are embedded as MNRL embeds them.
            backend: Where the tiled loss runs: ``"torch"`` (the PyTorch tile loop, on any device), ``"triton"``
                (the GPU path, :mod:`st_mnr_plus.losses.chunked`: cuBLAS products in the autocast or embeddings'
                dtype and Triton kernels; needs ``pip install "st-mnr-plus[cuda]"`` and CUDA tensors, or
                ``TRITON_INTERPRET=1`` for Triton's interpreter on the CPU) or ``"auto"`` (the GPU path for CUDA tensors when triton imports and it covers the options, else
                the PyTorch path; options it does not cover are named in one INFO line). ``loss.diagnostics``
                says which ran.

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
            After every forward, ``loss.diagnostics`` gives Python floats for a callback to log (computed when
            read, so a training step that nobody reads them in never waits for the device):

            - ``"accuracy"``: fraction of anchors whose positive is more similar than every unmasked
              query_to_doc negative (in-batch top-1 accuracy);
            - ``"positive_similarity"``: mean anchor-positive similarity;
            - ``"hardest_negative_similarity"``: mean over anchors of the highest unmasked negative similarity
              (NaN when no anchor has a negative, e.g. a batch of one pair);
            - ``"masked_fraction"``: fraction of query_to_doc negatives excluded as duplicates or by a
              false-negative bound; ``"masked_duplicates"``: the number excluded as duplicates;
            - ``"scale"``: the scale used;
            - ``"backend"``: ``"torch"`` or ``"triton"``, the path it took (a string, unlike the others).

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
            - Moreira et al., 2024, NV-Retriever (positive-aware false-negative filtering, TopK-PercPos):
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
                loss = MNRPlus(model)
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        self.model = model
        # Every stored option, checked, from the arguments of the same name (declared once, in options.py).
        opt.assign_options(self, locals(), "loss")
        if opt.check_bool(symmetric, "symmetric"):
            if self.directions != ("query_to_doc",):
                raise ValueError(
                    "symmetric=True sets directions=('query_to_doc', 'doc_to_query'); leave directions at its "
                    f"default or pass the directions you want instead (got directions={self.directions!r})"
                )
            self.symmetric = True
        opt.check_combination(self.directions, self.partition_mode)
        if self.hardness_mode is not None and self.hardness_strength == 0.0:
            logger.warning(
                "hardness_mode=%r is set but hardness_strength=0.0, so hardness weighting has no effect.",
                self.hardness_mode,
            )
        self._learnable = opt.check_bool(learnable_scale, "learnable_scale")
        scale = opt.validate("scale", scale)
        if self._learnable:
            if scale > self.max_scale:
                raise ValueError(
                    f"scale ({scale}) must not exceed max_scale ({self.max_scale}) when learnable_scale=True"
                )
            self._initial_scale = scale
            self._initial_log_scale = math.log(scale)
            self.log_scale_offset = nn.Parameter(torch.zeros((), dtype=torch.float32))
        else:
            self._fixed_scale = scale
        self._stats: Tensor | None = None
        self._last_backend: Backend | None = None
        self._stats_rows = 0
        self._stats_scale: Tensor | float = scale
        self._unidentified_warned: set[int] = set()

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module files a module or a parameter away in its own registries without calling the class's
        # descriptors: an option (checked on assignment) must see every value, a similarity that is a module or a
        # scale that is a parameter included. Such a value is also registered, as MNRL's plain attribute would be,
        # so that it follows .to() and the optimizer sees its parameters.
        if isinstance(getattr(type(self), name, None), Option | property):
            object.__setattr__(self, name, value)
            self._modules.pop(f"{name}_module", None)
            self._parameters.pop(f"{name}_parameter", None)
            if isinstance(value, nn.Parameter):
                self._parameters[f"{name}_parameter"] = value
            elif isinstance(value, nn.Module):
                self._modules[f"{name}_module"] = value
            return
        super().__setattr__(name, value)

    # ---- options that are not a single stored value --------------------------------------------------------

    @property
    def learnable_scale(self) -> bool:
        """Whether the scale is a trained parameter (fixed at construction)."""
        return self._learnable

    @property
    def symmetric(self) -> bool:
        """``directions == ("query_to_doc", "doc_to_query")`` with ``partition_mode == "per_direction"``."""
        return self.directions == ("query_to_doc", "doc_to_query") and self.partition_mode == "per_direction"

    @symmetric.setter
    def symmetric(self, value: bool) -> None:
        if opt.check_bool(value, "symmetric"):
            self.directions, self.partition_mode = ("query_to_doc", "doc_to_query"), "per_direction"
        elif self.symmetric:
            self.directions, self.partition_mode = ("query_to_doc",), "joint"

    # ---- temperature ---------------------------------------------------------------------------------------

    def _scale_value(self) -> Tensor | float:
        """The scale to compute with: a tensor carrying the parameter's gradient, or a float."""
        if not self._learnable:
            return self._fixed_scale
        offset = self.log_scale_offset
        if torch.is_grad_enabled() and offset.requires_grad and not self.__dict__.get("loss_state_managed"):
            self._warn_unmanaged_scale()
        with torch.no_grad():  # the cap, applied to the parameter itself: it never blocks the gradient
            offset.clamp_(max=math.log(self.max_scale) - self._initial_log_scale)
        if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            offset = _AverageGradAcrossRanks.apply(offset)
        return (offset + self._initial_log_scale).exp()

    def _warn_unmanaged_scale(self) -> None:
        if self.__dict__.get("_unmanaged_warned"):
            return
        self._unmanaged_warned = True
        logger.warning(
            "MNRPlus(learnable_scale=True) is training without LossStateCallback: the scale trains at the model's "
            "learning rate and weight decay, not scale_learning_rate=%s, and resume_from_checkpoint restarts it at "
            "%.4g. Pass callbacks=[LossStateCallback(loss)] to the trainer (st_mnr_plus.LossStateCallback).",
            self.scale_learning_rate,
            self._initial_scale,
        )

    @property
    def scale(self) -> float:
        """The current scale (inverse temperature) as a Python float."""
        if not self._learnable:
            fixed = self._fixed_scale
            return float(fixed.detach()) if isinstance(fixed, Tensor) else fixed
        offset = float(self.log_scale_offset.detach())
        return min(self._initial_scale * math.exp(offset), self.max_scale)

    @scale.setter
    def scale(self, value: float | Tensor) -> None:
        if isinstance(value, Tensor) and not self._learnable:
            # A tensor, e.g. an nn.Parameter the user trains (MNRL multiplies by whatever its attribute holds).
            if value.numel() != 1 or not value.is_floating_point():
                raise ValueError(f"scale must be a positive number or a one-element float tensor, got {value!r}")
            opt.validate("scale", float(value.detach()))
            self._fixed_scale = value.reshape(())
            return
        value = opt.validate("scale", value)
        if not self._learnable:
            self._fixed_scale = value
            return
        if value > self.max_scale:
            raise ValueError(f"scale ({value}) must not exceed max_scale ({self.max_scale}) when learnable_scale=True")
        with torch.no_grad():
            self.log_scale_offset.fill_(math.log(value) - self._initial_log_scale)

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    # ---- forward -------------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        # Identify the rows before embedding: modules may edit the features in place.
        row_ids = self.row_ids(sentence_features) if self.mask_duplicates else None
        if self.group_by_length:
            embeddings = embed_columns_grouped(self.model, sentence_features)
        else:
            embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels, row_ids=row_ids)

    def row_ids(self, sentence_features: list[dict[str, Any]]) -> list[Tensor]:
        """One ``(B,)`` int64 identity per column (see :func:`~st_mnr_plus.losses.identity.row_hashes`).

        A column whose rows cannot be identified from its features gets identities that match nothing (negative
        numbers, unique per rank, column and row): its duplicates are not masked, as in MNRL. That is said once
        per column, as a warning.
        """
        rank = get_rank() if self.gather_across_devices else 0
        ids, failures = column_ids(sentence_features, rank)
        for k, exc in failures.items():
            if k not in self._unidentified_warned:
                self._unidentified_warned.add(k)
                logger.warning(
                    "MNRPlus cannot identify the rows of input column %d (%s): duplicates in it are not masked, "
                    "MNRL's loss is computed for it. Pass mask_duplicates=False to silence this.",
                    k,
                    exc,
                )
        return ids

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None = None, *, row_ids: list[Tensor] | None = None
    ) -> Tensor:
        """The loss from the columns' embeddings (anchor, positive, hard negatives...), each ``(B, d)``.

        Args:
            embeddings: One ``(B, d)`` tensor per input column, this rank's rows only; gathering across devices
                happens here when ``gather_across_devices`` is set.
            labels: Unused (the target of row ``i`` is its own positive), kept for the trainer's signature.
            row_ids: One ``(B,)`` int64 tensor per column identifying equal inputs (see :meth:`row_ids`), or
                ``None`` for no duplicate masking.

        Returns:
            The scalar loss.
        """
        embeddings, row_ids, batch = _checked(embeddings, row_ids)
        queries, docs = embeddings[0], embeddings[1:]
        offset = 0
        if self.gather_across_devices:
            queries = all_gather_with_grad(queries)
            docs = [all_gather_with_grad(doc) for doc in docs]
            if row_ids is not None:
                row_ids = [all_gather(ids.to(queries.device)) for ids in row_ids]
            offset = get_rank() * batch
        # (B_world * (1 + n), d): positives, then each negative column; pairs pass their positives as they are
        # (torch.cat of one tensor would copy them: B x d more memory for nothing).
        candidates = docs[0] if len(docs) == 1 else torch.cat(docs, dim=0)
        query_ids = candidate_ids = None
        if row_ids is not None:
            query_ids, candidate_ids = row_ids[0], torch.cat([ids.to(queries.device) for ids in row_ids[1:]])
        spec = _spec(self, batch, offset)
        scale = self._scale_value()
        kind = similarity_kind(self.similarity_fct)
        self._last_backend = choose_backend(spec, queries.device, queries.dtype, kind)
        if kind is not None:
            loss, stats = mnr_plus_loss(
                queries, candidates, scale, spec, kind, query_ids, candidate_ids, backend=self._last_backend.name
            )
        else:
            loss, stats = plain_mnr_loss(
                queries, candidates, scale, spec, self.similarity_fct, query_ids, candidate_ids
            )
        self._stats, self._stats_rows = stats, batch
        self._stats_scale = scale.detach() if isinstance(scale, Tensor) else scale
        return loss

    # ---- diagnostics ---------------------------------------------------------------------------------------

    @property
    def statistics(self) -> tuple[Tensor, int, Tensor | float] | None:
        """The last batch's raw sums (:data:`~st_mnr_plus.losses.ops.STAT_NAMES`), its rows and the scale, still on
        the device (``None`` before the first forward): what :attr:`diagnostics` is computed from, for callers that
        collect them every step and read them later (``MNRDiagnosticsCallback``)."""
        return None if self._stats is None else (self._stats, self._stats_rows, self._stats_scale)

    @property
    def diagnostics(self) -> dict[str, float]:
        """Figures of the last batch (see the class docstring); empty before the first forward.

        Reading them copies a few numbers from the device: the training step itself never waits for it.
        """
        if self._stats is None:
            return {}
        return {
            **diagnostics_from_stats(self._stats, self._stats_rows, self._stats_scale),
            "backend": self._last_backend.name,
        }

    @property
    def backend_used(self) -> Backend | None:
        """The path the last forward took (``"torch"`` or ``"triton"``) and, under ``backend="auto"``, why not the
        kernels; ``None`` before the first forward."""
        return self._last_backend

    # ---- model card ----------------------------------------------------------------------------------------

    def get_config_dict(self) -> dict[str, Any]:
        config = opt.card_values(self, "loss")
        if self._last_backend is not None:  # what the last forward ran on, for the model card
            config["backend_used"] = self._last_backend.name
        return config

    @property
    def citation(self) -> str:
        return _INFOCL_CITATION

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, directions={self.directions}, mask_duplicates={self.mask_duplicates}"


def _spec(loss: MNRPlus, batch: int, offset: int) -> MNRSpec:
    """The options of ``loss`` that shape the computation (checked when set), for ``batch`` rows at ``offset``."""
    return MNRSpec(local_batch=batch, offset=offset, options=MappingProxyType(opt.spec_values(loss)))


def _checked(embeddings: list[Tensor], row_ids: list[Tensor] | None) -> tuple[list[Tensor], list[Tensor] | None, int]:
    """The columns and their identities, checked: ``(embeddings, row_ids, batch)``."""
    embeddings = list(embeddings)
    if len(embeddings) < 2:
        raise ValueError(f"embeddings must hold at least 2 columns (anchor, positive), got {len(embeddings)}")
    batch = embeddings[0].shape[0] if isinstance(embeddings[0], Tensor) and embeddings[0].ndim == 2 else -1
    for k, column in enumerate(embeddings):
        if not isinstance(column, Tensor) or column.ndim != 2 or column.shape[0] != batch:
            raise ValueError(
                f"embeddings[{k}] must be a ({batch}, dim) tensor like embeddings[0], got "
                f"{tuple(column.shape) if isinstance(column, Tensor) else type(column).__name__}"
            )
    if row_ids is not None:
        row_ids = list(row_ids)
        if len(row_ids) != len(embeddings):
            raise ValueError(f"row_ids must hold one tensor per column ({len(embeddings)}), got {len(row_ids)}")
        for k, ids in enumerate(row_ids):
            if not isinstance(ids, Tensor) or ids.shape != (batch,):
                raise ValueError(
                    f"row_ids[{k}] must be a ({batch},) tensor, got "
                    f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}"
                )
    return embeddings, row_ids, batch


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
