"""The one rule that tells a local path from a Hugging Face Hub id, for data sets, evaluator sources and models.

A hub id is ``name`` or ``owner/name`` (optionally followed by ``:config`` for a data set). Anything else that a
user could only mean as a path is a path, whether it exists or not, so that a mistyped path is reported as a
missing file instead of being sent to the hub (where, offline, it fails with a network error that hides the
typo).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_FILE_SUFFIXES", "is_local_path"]

DATA_FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".gz", ".toml", ".yaml", ".yml")
"""Name endings that only a file has: no hub id ends with one of them."""


def is_local_path(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a local file or folder rather than a hub id.

    True for an ``os.PathLike``, anything that exists on disk, an absolute path or one starting with ``.`` or
    ``~``, a name with a backslash or with more than one ``/`` (a hub id has at most one), and a name ending in a
    data file suffix (:data:`DATA_FILE_SUFFIXES`, also before ``.gz``).
    """
    if isinstance(value, os.PathLike):
        return True
    text = str(value)
    if text.startswith((".", "~")) or os.path.isabs(text) or "\\" in text or text.count("/") > 1:
        return True
    if text.lower().endswith(DATA_FILE_SUFFIXES):
        return True
    return Path(text).expanduser().exists()
