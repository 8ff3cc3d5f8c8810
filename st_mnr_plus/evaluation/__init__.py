"""Evaluator presets: ready sentence-transformers evaluators for STSb, SICK-R and NLI triplets."""

from __future__ import annotations

from st_mnr_plus.evaluation.presets import (
    PACKAGED_STSB,
    STSEvaluator,
    nli_triplet_evaluator,
    sickr_evaluator,
    sts_suite,
    stsb_evaluator,
)

__all__ = [
    "PACKAGED_STSB",
    "STSEvaluator",
    "nli_triplet_evaluator",
    "sickr_evaluator",
    "sts_suite",
    "stsb_evaluator",
]
