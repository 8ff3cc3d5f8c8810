"""Evaluator presets: ready sentence-transformers evaluators for STSb, SICK-R and NLI triplets.

:mod:`~st_mnr_plus.evaluation.readers` reads the STS data (release files, hub copies, Datasets) and maps the scores
to 0-1; :mod:`~st_mnr_plus.evaluation.presets` holds the factories; :mod:`~st_mnr_plus.evaluation.evaluator` the
evaluator they return.
"""

from __future__ import annotations

from st_mnr_plus.evaluation.evaluator import STSEvaluator
from st_mnr_plus.evaluation.presets import nli_triplet_evaluator, sickr_evaluator, sts_suite, stsb_evaluator
from st_mnr_plus.evaluation.readers import PACKAGED_STSB, EvaluatorError

__all__ = [
    "PACKAGED_STSB",
    "EvaluatorError",
    "STSEvaluator",
    "nli_triplet_evaluator",
    "sickr_evaluator",
    "sts_suite",
    "stsb_evaluator",
]
