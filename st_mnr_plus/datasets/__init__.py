"""Dataset builders: turn NLI corpora into the exact columns an MNR loss consumes."""

from __future__ import annotations

from st_mnr_plus.datasets.nli import SKIP_REASONS, BuildReport, EmptyBuildError, NLIBuilder, build_nli
from st_mnr_plus.datasets.readers import NLIFormatError

__all__ = ["SKIP_REASONS", "BuildReport", "EmptyBuildError", "NLIBuilder", "NLIFormatError", "build_nli"]
