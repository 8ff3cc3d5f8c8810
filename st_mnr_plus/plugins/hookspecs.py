"""Hook specifications: one ``register_<kind>()`` hook per component kind.

Every hook takes no argument and returns a ``dict`` mapping a registry name (``str``) to a class or a
factory. The registry collects the dicts of all plugins; two plugins returning the same name for one
kind is an error that names both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from st_mnr_plus.plugins import hookspec


@hookspec
def register_losses() -> dict[str, Callable[..., Any]]:
    """Return loss classes by name, e.g. ``{"mnr_plus": MNRPlus}``.

    A loss is called like a sentence-transformers loss: ``cls(model, **options)``.
    """


@hookspec
def register_batch_samplers() -> dict[str, Callable[..., Any]]:
    """Return batch sampler classes by name, e.g. ``{"no_duplicates": NoDuplicatesSampler}``.

    Each must be a ``sentence_transformers.base.sampler.DefaultBatchSampler`` subclass, or a factory taking
    ``dataset, batch_size, drop_last, valid_label_columns, generator, seed`` like the trainer passes.
    """


@hookspec
def register_dataset_builders() -> dict[str, Callable[..., Any]]:
    """Return dataset builders by name, e.g. ``{"nli": build_nli}``.

    A builder takes its sources and options and returns a ``datasets.Dataset`` whose columns are exactly
    the loss inputs, in order.
    """


@hookspec
def register_evaluators() -> dict[str, Callable[..., Any]]:
    """Return evaluator presets by name, e.g. ``{"stsb": stsb_evaluator}``.

    A preset is a factory returning a configured sentence-transformers evaluator.
    """


@hookspec
def register_callbacks() -> dict[str, Callable[..., Any]]:
    """Return ``transformers.TrainerCallback`` classes by name, e.g. ``{"throughput": ThroughputCallback}``."""
