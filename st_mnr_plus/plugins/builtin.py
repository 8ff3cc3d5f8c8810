"""The built-in components, registered through the same hooks as any third-party plugin.

Imports happen inside the hooks, so that nothing heavy is loaded before a component is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from st_mnr_plus.plugins import hookimpl


@hookimpl
def register_losses() -> dict[str, Callable[..., Any]]:
    from sentence_transformers.sentence_transformer import losses as st_losses

    from st_mnr_plus.losses import CachedMNRPlus, MNRPlus

    return {
        "mnr_plus": MNRPlus,
        "cached_mnr_plus": CachedMNRPlus,
        # The sentence-transformers originals, so that they can be chosen by name (and compared) too.
        "mnrl": st_losses.MultipleNegativesRankingLoss,
        "cached_mnrl": st_losses.CachedMultipleNegativesRankingLoss,
    }


@hookimpl
def register_batch_samplers() -> dict[str, Callable[..., Any]]:
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from st_mnr_plus.sampler import NoDuplicatesSampler, ShuffledBatchSampler

    return {
        # sentence-transformers' default (BATCH_SAMPLER) batches; its DefaultBatchSampler class takes an index
        # sampler, not the dataset the trainer passes, so it cannot be registered as it is.
        "default": ShuffledBatchSampler,
        "st_no_duplicates": NoDuplicatesBatchSampler,
        "no_duplicates": NoDuplicatesSampler,
    }


@hookimpl
def register_dataset_builders() -> dict[str, Callable[..., Any]]:
    from st_mnr_plus.datasets.nli import build_nli

    return {"nli": build_nli}


@hookimpl
def register_evaluators() -> dict[str, Callable[..., Any]]:
    from st_mnr_plus.evaluation import presets

    return {
        "stsb": presets.stsb_evaluator,
        "sickr": presets.sickr_evaluator,
        "nli_triplets": presets.nli_triplet_evaluator,
        "sts_suite": presets.sts_suite,
    }


@hookimpl
def register_callbacks() -> dict[str, Callable[..., Any]]:
    from st_mnr_plus import callbacks

    return {
        "mnr_diagnostics": callbacks.MNRDiagnosticsCallback,
        "throughput": callbacks.ThroughputCallback,
    }
