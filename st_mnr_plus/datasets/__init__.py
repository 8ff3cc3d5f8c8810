"""Dataset builders: turn NLI corpora into the exact columns an MNR loss consumes.

:mod:`~st_mnr_plus.datasets.nli` holds the public builder (``NLIBuilder``, ``build_nli``);
:mod:`~st_mnr_plus.datasets.readers` streams the sources; :mod:`~st_mnr_plus.datasets.report` counts the rows.
"""

from __future__ import annotations

from st_mnr_plus.datasets.nli import NLIBuilder, build_nli
from st_mnr_plus.datasets.readers import NLIFormatError
from st_mnr_plus.datasets.report import SKIP_REASONS, BuildReport, EmptyBuildError

__all__ = ["SKIP_REASONS", "BuildReport", "EmptyBuildError", "NLIBuilder", "NLIFormatError", "build_nli"]
