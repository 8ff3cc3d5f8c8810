"""CachedMNRPlus: :class:`~st_mnr_plus.losses.MNRPlus` with GradCache, for batches whose activations do not fit.

The three GradCache steps (embed without graph, loss and embedding gradients, re-embed and backpropagate the
cached gradients), the RNG replay between the two encoder passes and DDP's ``no_sync`` on all but the last
mini-batch come from sentence-transformers' :class:`~sentence_transformers.base.losses.gradcache.CachedLossMixin`,
which ``CachedMultipleNegativesRankingLoss`` (CMNRL) uses too. What differs is step (2): CMNRL scores
``mini_batch_size`` anchor rows at a time, re-normalising the whole candidate pool for every chunk; this class
hands the whole batch to MNRPlus's tiled loss once, which normalises once and computes the loss and every
embedding gradient in one fused pass over large tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from sentence_transformers.util import cos_sim
from torch import Tensor, nn

from st_mnr_plus.losses import options as opt
from st_mnr_plus.losses.grouping import inverse_permutation, sorted_by_length
from st_mnr_plus.losses.mnr_plus import MNRPlus
from st_mnr_plus.losses.options import Delegated, Option

logger = logging.getLogger(__name__)

__all__ = ["CachedMNRPlus"]

_GRADCACHE_CITATION = """
@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""


def _matryoshka_weights(loss: nn.Module) -> dict[int, float]:
    """Embedding width -> weight, when ``MatryoshkaLoss`` has wrapped this loss's ``calculate_loss``.

    sentence-transformers' ``CachedLossDecorator`` calls the original ``calculate_loss`` once per dimension with
    the embeddings truncated to it and multiplies each result by that dimension's weight; it keeps the dimensions
    and weights as attributes. Without such a wrapper every call counts once.
    """
    wrapper = loss.__dict__.get("calculate_loss")
    dims, weights = getattr(wrapper, "matryoshka_dims", None), getattr(wrapper, "matryoshka_weights", None)
    if dims is None or weights is None:
        return {}
    return {int(dim): float(weight) for dim, weight in zip(dims, weights, strict=True)}


@opt.declare_options("cache", delegate=True)
class CachedMNRPlus(CachedLossMixin, nn.Module):
    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        directions: tuple[Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"], ...] = (
            "query_to_doc",
        ),
        partition_mode: Literal["joint", "per_direction"] = "joint",
        show_progress_bar: bool = False,
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
        r""":class:`~st_mnr_plus.losses.MNRPlus` with gradient caching (GradCache): any batch size in the memory
        of one mini-batch, with exactly the loss and gradients of the uncached loss on the whole batch.

        A drop-in for sentence-transformers' ``CachedMultipleNegativesRankingLoss`` (CMNRL): the same positional
        arguments in the same order, followed by MNRPlus's keyword-only options. The loss is MNRPlus's:

        .. math::

            \mathcal{L} = -\frac{1}{B} \sum_i \log \frac{\exp(s \cdot \mathrm{sim}(q_i, p_i))}
                {\sum_{c \in \mathcal{C}_i \setminus \mathcal{M}_i} \exp(s \cdot \mathrm{sim}(q_i, c))}

        with ``s = scale = 1 / temperature`` and :math:`\mathcal{M}_i` the masked false negatives (see MNRPlus).
        It is computed in three steps:

        1. embed every column in mini-batches of ``mini_batch_size`` rows without keeping activations,
           recording each mini-batch's RNG state;
        2. compute the loss on the whole batch with MNRPlus's tiled computation, and its gradients with respect
           to the embeddings (and to a learnable scale);
        3. during the trainer's backward pass, re-embed each mini-batch with gradients, replaying its RNG state
           (so dropout draws the same masks) and back-propagate the cached gradients into the model. Under
           DistributedDataParallel, gradients are synchronised once, after the last mini-batch.

        Args:
            model: The SentenceTransformer model. Models whose inputs cannot be split into mini-batches (a
                ``StaticEmbedding``) are rejected: use :class:`~st_mnr_plus.losses.MNRPlus`, which needs no cache
                for them.
            scale: Inverse temperature, ``scale = 1 / temperature``; with ``learnable_scale`` its initial value.
            similarity_fct: ``cos_sim`` (default) or ``dot_score`` use MNRPlus's tiled path; any other function
                its plain path.
            mini_batch_size: Rows per encoder pass: what bounds the activation memory. Larger is faster.
            mini_batch_num_tokens: If set, pack each encoder mini-batch by its number of non-padding tokens
                instead of by ``mini_batch_size`` rows (as CMNRL).
            gather_across_devices: Gather the embeddings and the token-id hashes of every rank, with gradients,
                and score this rank's rows against the global candidate pool.
            directions: Interaction terms, as MNRL: ``"query_to_doc"`` (required), ``"query_to_query"``,
                ``"doc_to_query"``, ``"doc_to_doc"``.
            partition_mode: ``"joint"`` or ``"per_direction"``, as MNRL.
            show_progress_bar: Show a progress bar over the encoder mini-batches.
            hardness_mode: MNRL's hardness weighting: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"``
                or ``"all_negatives"``.
            hardness_strength: ``alpha`` of the hardness penalty; must be non-negative.
            symmetric: MNRPlus's shorthand for ``directions=("query_to_doc", "doc_to_query")``,
                ``partition_mode="per_direction"``.
            mask_duplicates: Exclude from each anchor's negatives every candidate whose inputs equal its
                positive's (identified from the features before the first encoder pass, so dropout cannot
                matter; see MNRPlus).
            false_negative_margin: Also exclude negatives more similar than the positive minus this margin.
            false_negative_ratio: Also exclude negatives more similar than this fraction of the positive's
                similarity (NV-Retriever's TopK-PercPos).
            learnable_scale: Learn the scale (see MNRPlus). Its gradient is cached in step 2 and applied, scaled
                like every other gradient (gradient accumulation, AMP loss scaling), when the trainer
                back-propagates the returned loss; under ``MatryoshkaLoss`` each dimension's share gets that
                dimension's weight. Across processes it is averaged like DDP averages the model's gradients.
            max_scale: Upper bound of a learnable scale.
            scale_learning_rate: Learning rate of a learnable scale, applied by ``LossStateCallback`` (see
                :class:`MNRPlus`).
            hard_negatives: ``"shared"`` (MNRL: hard negatives are negatives for every anchor) or ``"own"``.
            tile_size: Anchor rows per tile of the loss stage; ``None`` lets MNRPlus choose.
            group_by_length: Sort each column's rows by token count before splitting it into mini-batches (and
                restore the order of the embeddings before the loss). sentence-transformers trims each
                mini-batch to its longest text, so mini-batches of similar lengths embed far fewer padding
                tokens: the same loss and gradients (dropout aside) for less encoder work. Dropout masks are
                drawn per mini-batch, so only ``group_by_length=False`` draws exactly CMNRL's masks.
            backend: Where the loss stage runs: ``"auto"``, ``"torch"`` or ``"triton"``, as in MNRPlus.

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

            Candidates are laid out as in MNRL: all positives, then each hard-negative column, the target of
            row ``i`` being column ``i``.

        Recommendations:
            - Use a large ``per_device_train_batch_size`` with the largest ``mini_batch_size`` that fits.
            - Use :class:`st_mnr_plus.NoDuplicatesSampler` as ``batch_sampler``.

        Relations:
            - :class:`~st_mnr_plus.losses.MNRPlus`: the same loss without the cache: faster when the batch's
              activations fit in memory, and the one to use with a ``StaticEmbedding`` model.
            - ``sentence_transformers.losses.CachedMultipleNegativesRankingLoss``: the same caching around MNRL;
              same loss and gradients when no duplicates are masked (``mask_duplicates=False``, or none in the
              batch).

        References:
            - Gao et al., 2021, Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup
              (GradCache): https://arxiv.org/abs/2101.06983
            - See :class:`~st_mnr_plus.losses.MNRPlus` for the loss itself.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from sentence_transformers.sentence_transformer.training_args import (
                    SentenceTransformerTrainingArguments,
                )
                from st_mnr_plus import CachedMNRPlus

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = CachedMNRPlus(model, mini_batch_size=64)
                args = SentenceTransformerTrainingArguments("out", per_device_train_batch_size=4096)
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        if has_static_embedding_input(model):
            # CMNRL's message first, which code written against it may match on.
            raise opt.OptionError(
                "CachedMultipleNegativesRankingLoss is not compatible with a SentenceTransformer model based on a "
                "StaticEmbedding, whose inputs cannot be split into mini-batches along a batch dimension. Consider "
                "using MultipleNegativesRankingLoss instead. Nor is CachedMNRPlus: a StaticEmbedding's inputs (a flat "
                "token stream with offsets) have no activations worth caching. Use MNRPlus instead."
            )
        # The wrapped loss owns and validates every loss option (this class forwards them to it, see options.py);
        # this class adds the caching and holds only the mini-batching options.
        arguments = locals()
        self.model = model
        self.loss = MNRPlus(model, **{o.name: arguments[o.name] for o in opt.options_of("loss")})
        opt.assign_options(self, arguments, "cache")
        # Set by forward for calculate_loss: per column, the permutation that sorted its rows by length.
        self._orders: list[Tensor | None] = []
        # Set by forward for calculate_loss, which the mixin calls with (reps, labels) only.
        self._row_ids: list[Tensor] | None = None
        # Per calculate_loss call of the last step (2): the embedding width and the gradients of the loss's own
        # parameters (a learnable scale), see forward.
        self._param_grads: list[tuple[int, list[tuple[nn.Parameter, Tensor]]]] = []

    def __setattr__(self, name: str, value: Any) -> None:
        # As in MNRPlus: an option assigned a module or a parameter goes to its descriptor (here: the inner loss),
        # not to nn.Module's registries.
        if isinstance(getattr(type(self), name, None), Option | Delegated | property):
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    @property
    def learnable_scale(self) -> bool:
        return self.loss.learnable_scale

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    @property
    def statistics(self) -> tuple[Tensor, int, Tensor | float] | None:
        """The wrapped MNRPlus's raw statistics of the last batch, still on the device."""
        return self.loss.statistics

    @property
    def diagnostics(self) -> dict[str, float]:
        """The wrapped MNRPlus's diagnostics of the last batch (accuracy, similarities, masking, scale)."""
        return self.loss.diagnostics

    # ---- GradCache -----------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) < 2:
            raise ValueError(
                f"sentence_features must hold at least 2 columns (anchor, positive), got {len(sentence_features)}"
            )
        # Identify the rows before any encoder pass: modules may edit the features in place while embedding.
        self._row_ids = self.loss.row_ids(sentence_features) if self.loss.mask_duplicates else None
        self._orders = [None] * len(sentence_features)
        if self.group_by_length:
            sorted_features = [sorted_by_length(f) for f in sentence_features]
            sentence_features = [f for f, _ in sorted_features]
            self._orders = [order for _, order in sorted_features]
        self._param_grads = []
        try:
            loss = self.forward_cached(sentence_features, labels)
        finally:
            self._row_ids = None
            self._orders = []
        surrogate = self._parameter_surrogate()
        return loss if surrogate is None else loss + (surrogate - surrogate.detach())

    def _parameter_surrogate(self) -> Tensor | None:
        """``sum_calls weight * sum_p p * g_p``: 0 in value, the loss's own parameters' gradients in backward.

        The parameters got their gradients in step (2), but must receive them only when (and scaled as) the
        returned loss is back-propagated. A wrapper may call :meth:`calculate_loss` several times per step:
        ``MatryoshkaLoss`` calls it once per dimension and weighs each call's loss, so each call's gradients get
        that dimension's weight here, as the embeddings' gradients get it in the wrapper.
        """
        calls, self._param_grads = self._param_grads, []
        if not calls:
            return None
        weights = _matryoshka_weights(self)
        return sum(weights.get(width, 1.0) * sum((p * g).sum() for p, g in grads) for width, grads in calls)

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """Step (2): the MNRPlus loss of the whole batch from the per-mini-batch embeddings.

        With ``with_backward``, the gradients with respect to the embeddings are left in each mini-batch's
        ``.grad`` (the mixin caches them from there), those of the loss's own parameters are kept for
        :meth:`forward` (added to those of earlier calls of the same step), and the detached loss is returned.

        Args:
            reps: Per column, the embeddings of each mini-batch, ``(mini_batch, dim)`` leaf tensors.
            labels: Unused (the target of row ``i`` is its own positive).
            with_backward: Compute the gradients too.
        """
        embeddings = [torch.cat(column) for column in reps]  # one (B, dim) tensor per column
        for k, order in enumerate(self._orders):
            if order is not None:  # back to the batch's row order (differentiable: the gradients follow)
                embeddings[k] = embeddings[k][inverse_permutation(order.to(embeddings[k].device))]
        loss = self.loss.compute_loss_from_embeddings(embeddings, labels, row_ids=self._row_ids)
        if not with_backward:
            return loss
        leaves = [rep for column in reps for rep in column]
        model_params = {id(p) for p in self.model.parameters()} if self.model is not None else set()
        params = [p for p in self.loss.parameters() if p.requires_grad and id(p) not in model_params]
        grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
        for rep, grad in zip(leaves, grads[: len(leaves)], strict=True):
            rep.grad = grad
        # Already averaged over the ranks by MNRPlus (see its _scale_value), like DDP averages the model's.
        own = [(p, g) for p, g in zip(params, grads[len(leaves) :], strict=True) if g is not None]
        if own:
            self._param_grads.append((embeddings[0].shape[-1], own))
        return loss.detach()

    # ---- model card -----------------------------------------------------------------------------------------

    def get_config_dict(self) -> dict[str, Any]:
        config = opt.card_values(self, "cache")
        if self.loss.backend_used is not None:  # what the last loss stage ran on, for the model card
            config["backend_used"] = self.loss.backend_used.name
        return config

    @property
    def citation(self) -> str:
        return _GRADCACHE_CITATION + self.loss.citation

    def extra_repr(self) -> str:
        return f"mini_batch_size={self.mini_batch_size}"
