"""st-mnr-plus: leaner, faster Multiple Negatives Ranking fine-tuning for sentence-transformers, at MNRL's quality.

Importing the package is cheap: components load on first access, and the plugin manager is created on the
first registry look-up, never at import time.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from st_mnr_plus.common.lazy import lazy_attributes
from st_mnr_plus.plugins import hookimpl, registry

# The registry lives in the plugin layer; `import st_mnr_plus.registry`, its module path before 0.1, still works.
sys.modules.setdefault(f"{__name__}.registry", registry)

__version__ = "0.1.0.dev0"

# Public name -> module that defines it; loaded on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "MNRPlus": "st_mnr_plus.losses",
    "CachedMNRPlus": "st_mnr_plus.losses",
    "NoDuplicatesSampler": "st_mnr_plus.sampler",
    "build_nli": "st_mnr_plus.datasets.nli",
    "BuildReport": "st_mnr_plus.datasets.nli",
    "stsb_evaluator": "st_mnr_plus.evaluation.presets",
    "sickr_evaluator": "st_mnr_plus.evaluation.presets",
    "nli_triplet_evaluator": "st_mnr_plus.evaluation.presets",
    "sts_suite": "st_mnr_plus.evaluation.presets",
    "MNRDiagnosticsCallback": "st_mnr_plus.callbacks",
    "ThroughputCallback": "st_mnr_plus.callbacks",
    "LossStateCallback": "st_mnr_plus.callbacks",
}

if TYPE_CHECKING:  # pragma: no cover
    from st_mnr_plus.callbacks import LossStateCallback, MNRDiagnosticsCallback, ThroughputCallback
    from st_mnr_plus.datasets.nli import BuildReport, build_nli
    from st_mnr_plus.evaluation.presets import nli_triplet_evaluator, sickr_evaluator, sts_suite, stsb_evaluator
    from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
    from st_mnr_plus.sampler import NoDuplicatesSampler


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "BuildReport",
    "CachedMNRPlus",
    "LossStateCallback",
    "MNRDiagnosticsCallback",
    "MNRPlus",
    "NoDuplicatesSampler",
    "ThroughputCallback",
    "__version__",
    "build_nli",
    "hookimpl",
    "nli_triplet_evaluator",
    "registry",
    "sickr_evaluator",
    "sts_suite",
    "stsb_evaluator",
]
