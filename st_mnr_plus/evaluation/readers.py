"""Readers of STS data: the original STSb and SICK release files, their hub copies, and ``datasets.Dataset``s.

They turn a source into :class:`Pairs` (two sentence lists and the raw gold scores, with where each row came from)
and the scores into 0-1: a known source has a known range, a declared ``score_range`` wins, and otherwise the range
is detected from the data with a log line, or refused as ambiguous. The presets in
:mod:`st_mnr_plus.evaluation.presets` build evaluators from what these return.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_mnr_plus.common.errors import ConfigurationError, SourceNotFoundError
from st_mnr_plus.common.sources import is_local_path

logger = logging.getLogger(__name__)


class EvaluatorError(ConfigurationError):
    """An evaluator preset cannot be built from what it was given (source, split, columns, score range, data)."""


ScoreRange = tuple[float, float]

PACKAGED_STSB = Path(__file__).resolve().parent.parent / "data" / "stsbenchmark"
"""The original STS benchmark release (``sts-{train,dev,test}.csv``, CC BY-SA 4.0 scores) shipped in the package."""

_STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
# The single-file SICK release marks each pair's split in a SemEval_set column.
_SICK_SEMEVAL_SET = {"train": "TRAIN", "validation": "TRIAL", "test": "TEST"}

_SENTENCE_COLUMNS = (("sentence1", "sentence2"), ("sentence_A", "sentence_B"), ("sentence_a", "sentence_b"))
_SCORE_COLUMNS = ("score", "label", "relatedness_score", "similarity_score")


@dataclass(frozen=True)
class HubSpec:
    """What we know about a hub copy: where it lives, its columns, its score range and its labelled splits."""

    path: str
    score_range: ScoreRange
    config: str | None = None
    columns: tuple[str, str, str] = ("sentence1", "sentence2", "score")
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"}
    )
    note: str = ""


_GLUE_STSB = HubSpec(
    "nyu-mll/glue",
    (0.0, 5.0),
    config="stsb",
    columns=("sentence1", "sentence2", "label"),
    splits={"train": "train", "validation": "validation"},
    note="GLUE's stsb test split has no labels (they are -1): use sentence-transformers/stsb, "
    "mteb/stsbenchmark-sts or the original release (the default) for the test split.",
)
_STSB_HUB: dict[str, HubSpec] = {
    "sentence-transformers/stsb": HubSpec("sentence-transformers/stsb", (0.0, 1.0)),
    "mteb/stsbenchmark-sts": HubSpec("mteb/stsbenchmark-sts", (0.0, 5.0)),
    "glue": _GLUE_STSB,
    "glue/stsb": _GLUE_STSB,
    "nyu-mll/glue": _GLUE_STSB,
    "nyu-mll/glue/stsb": _GLUE_STSB,
}
_SICKR_HUB: dict[str, HubSpec] = {
    "mteb/sickr-sts": HubSpec(
        "mteb/sickr-sts",
        (1.0, 5.0),
        splits={"test": "test"},
        note="mteb/sickr-sts has only the test split; for train/validation pass a folder holding the SICK release.",
    ),
}


@dataclass
class Pairs:
    """Sentence pairs with raw gold scores, and where each row came from (for error messages)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    source: str
    locate: Callable[[int], str]
    """Row index -> human-readable location, e.g. ``/path/sts-test.csv:17``."""
    score_range: ScoreRange | None
    """The range the source is known to use; ``None`` when it must be declared or detected."""


# ---------------------------------------------------------------------------------------------------------------
# Readers of the original releases


class _ReleaseLines:
    """The pairs of a tab-separated release file, collected line by line, with each pair's line number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sentences1: list[str] = []
        self.sentences2: list[str] = []
        self.scores: list[float] = []
        self.lines: list[int] = []
        self.blank = 0

    def fields(self, handle: Iterable[str], start: int) -> Iterator[tuple[int, list[str]]]:
        """(line number, tab-separated fields) of each line from ``start`` on; blank lines are counted, not given."""
        for line_no, line in enumerate(handle, start=start):
            line = line.rstrip("\r\n")
            if not line.strip():
                self.blank += 1
                continue
            yield line_no, line.split("\t")

    def add(self, line_no: int, sentence1: str, sentence2: str, score: str, field: str) -> None:
        self.scores.append(_parse_score(score, f"{self.path}:{line_no}, {field}"))
        self.sentences1.append(sentence1)
        self.sentences2.append(sentence2)
        self.lines.append(line_no)

    def pairs(self, score_range: ScoreRange) -> Pairs:
        path, lines = self.path, self.lines
        if self.blank:
            logger.info("%s: skipped %d blank line(s).", path, self.blank)
        return Pairs(
            self.sentences1, self.sentences2, self.scores, str(path), lambda i: f"{path}:{lines[i]}", score_range
        )


def read_stsb_csv(path: Path) -> Pairs:
    """Read one file of the original STSb release.

    The format is tab-separated with no header and no quoting: ``genre, file, year, id, score, sentence1,
    sentence2`` and on some lines trailing source notes. Quotes inside sentences and the ragged lines trip
    generic CSV readers, so each line is split on tabs and fields 4-6 (0-based) are taken verbatim.
    """
    rows = _ReleaseLines(path)
    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, fields in rows.fields(handle, start=1):
            if len(fields) < 7:
                raise EvaluatorError(
                    f"{path}:{line_no}: expected at least 7 tab-separated fields (genre, file, year, id, score, "
                    f"sentence1, sentence2), got {len(fields)}."
                )
            rows.add(line_no, fields[5], fields[6], fields[4], "field 5 (score)")
    return rows.pairs((0.0, 5.0))


def read_sick_txt(path: Path, semeval_set: str | None = None) -> Pairs:
    """Read a SICK release file: tab-separated with a header naming ``sentence_A, sentence_B, relatedness_score``.

    Columns are found by their header names, so the per-split files and the single ``SICK.txt`` (which adds
    ``SemEval_set``; rows of other sets are filtered out by ``semeval_set``, and counted) both read.
    """
    rows = _ReleaseLines(path)
    other_set = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header_line = handle.readline().rstrip("\r\n")
        header = header_line.split("\t")
        required = ["sentence_A", "sentence_B", "relatedness_score"] + (["SemEval_set"] if semeval_set else [])
        missing = [name for name in required if name not in header]
        if missing:
            raise EvaluatorError(
                f"{path}:1: the header must name the columns {', '.join(required)}; missing {', '.join(missing)} "
                f"(header: {header_line[:200]!r})."
            )
        col_a, col_b, col_score = (header.index(name) for name in required[:3])
        col_set = header.index("SemEval_set") if semeval_set else None
        for line_no, fields in rows.fields(handle, start=2):
            if len(fields) != len(header):
                raise EvaluatorError(
                    f"{path}:{line_no}: expected {len(header)} tab-separated fields like the header, got {len(fields)}."
                )
            if col_set is not None and fields[col_set] != semeval_set:
                other_set += 1
                continue
            rows.add(line_no, fields[col_a], fields[col_b], fields[col_score], "column relatedness_score")
    pairs = rows.pairs((1.0, 5.0))
    if other_set:
        logger.info(
            "%s: kept %d pairs of SemEval_set %s, left %d of other sets.",
            path,
            len(rows.lines),
            semeval_set,
            other_set,
        )
    return pairs


def _parse_score(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise EvaluatorError(f"{where}: expected a number, got {raw!r}.") from None
    if not math.isfinite(value):
        raise EvaluatorError(f"{where}: expected a finite number, got {raw!r}.")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Sources: a folder, the hub, a datasets.Dataset


def _from_dataset(
    dataset: Any, split: str, source_name: str, columns: tuple[str, str, str] | None, known: HubSpec | None = None
) -> Pairs:
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise EvaluatorError(f"{source_name} has no split {split!r}; its splits are {', '.join(dataset)}.")
        dataset = dataset[split]
    if not isinstance(dataset, Dataset):
        raise EvaluatorError(f"{source_name}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    names = dataset.column_names
    if columns is None and known is not None:
        columns = known.columns
    if columns is None:
        pair = next((pair for pair in _SENTENCE_COLUMNS if set(pair) <= set(names)), None)
        score = next((name for name in _SCORE_COLUMNS if name in names), None)
        if pair is None or score is None:
            raise EvaluatorError(
                f"{source_name}: cannot tell which columns hold the pairs and scores (columns: {', '.join(names)}). "
                "Pass columns=(sentence1, sentence2, score)."
            )
        columns = (*pair, score)
    missing = [name for name in columns if name not in names]
    if missing:
        raise EvaluatorError(
            f"{source_name}: no column {', '.join(map(repr, missing))}; its columns are {', '.join(names)}."
        )
    s1_col, s2_col, score_col = columns
    sentences1, sentences2, raw_scores = dataset[s1_col], dataset[s2_col], dataset[score_col]
    for column, values in ((s1_col, sentences1), (s2_col, sentences2)):
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise EvaluatorError(
                    f"{source_name}, row {row}, column {column!r}: expected a string, got {type(value).__name__}."
                )
    scores = [
        _parse_score(value, f"{source_name}, row {row}, column {score_col!r}") for row, value in enumerate(raw_scores)
    ]
    return Pairs(
        list(sentences1),
        list(sentences2),
        scores,
        source_name,
        lambda i: f"{source_name}, row {i}, column {score_col!r}",
        known.score_range if known is not None else None,
    )


def _from_hub(hub_id: str, split: str, known: HubSpec | None, columns: tuple[str, str, str] | None) -> Pairs:
    import datasets

    if known is not None:
        if split not in known.splits:
            raise EvaluatorError(
                f"{hub_id} has no labelled {split!r} split (it has {', '.join(known.splits)}). {known.note}".strip()
            )
        path, config, hub_split = known.path, known.config, known.splits[split]
    else:
        path, config, hub_split = hub_id, None, split
    try:
        dataset = datasets.load_dataset(path, config, split=hub_split)
    except Exception as exc:
        local = Path(hub_id).expanduser().resolve()
        raise EvaluatorError(
            f"Could not load {hub_id!r} (split {hub_split!r}) from the Hugging Face Hub, and it is not a local folder "
            f"({local} does not exist): {type(exc).__name__}: {exc}"
        ) from exc
    name = f"{hub_id} ({hub_split})"
    return _from_dataset(dataset, split, name, columns, known)


def _resolve(
    source: Any,
    split: str,
    *,
    hub: dict[str, HubSpec],
    read_folder: Callable[[Path, str], Pairs],
    what: str,
    columns: tuple[str, str, str] | None,
) -> Pairs:
    from datasets import Dataset, DatasetDict

    if isinstance(source, Dataset | DatasetDict):
        return _from_dataset(source, split, f"datasets.{type(source).__name__} source", columns)
    if not isinstance(source, str | os.PathLike):
        raise EvaluatorError(
            f"source must be a hub id, a folder holding {what}, or a datasets.Dataset; got {type(source).__name__}."
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path, split)
    if path.exists():
        raise EvaluatorError(f"source {str(source)!r} is a file; pass the folder that holds {what}.")
    text = os.fspath(source)
    if text in hub:
        return _from_hub(text, split, hub[text], columns)
    if is_local_path(source):
        raise SourceNotFoundError(
            f"source folder {str(path.resolve())!r} does not exist (expected a folder holding {what})."
        )
    return _from_hub(text, split, None, columns)


def _stsb_folder(folder: Path, split: str) -> Pairs:
    path = folder / _STSB_FILES[split]
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("sts-*.csv")) or ["no sts-*.csv"]
        raise SourceNotFoundError(
            f"{path} not found: the {split!r} split of STSb is {_STSB_FILES[split]} ({folder} has {', '.join(present)})."
        )
    return read_stsb_csv(path)


def _sick_folder(folder: Path, split: str) -> Pairs:
    path = folder / _SICK_FILES[split]
    if path.is_file():
        return read_sick_txt(path)
    whole = folder / "SICK.txt"
    if whole.is_file():
        return read_sick_txt(whole, semeval_set=_SICK_SEMEVAL_SET[split])
    present = sorted(p.name for p in folder.glob("SICK*.txt")) or ["no SICK*.txt"]
    raise SourceNotFoundError(
        f"{path} not found: the {split!r} split of SICK is {_SICK_FILES[split]} (or SICK.txt with a SemEval_set "
        f"column); {folder} has {', '.join(present)}."
    )


# ---------------------------------------------------------------------------------------------------------------
# Score ranges


def _decide_range(pairs: Pairs, declared: ScoreRange | None, allowed: tuple[ScoreRange, ...]) -> ScoreRange:
    """Return the declared range, else the source's known one, else the one detected from the data (logged)."""
    if declared is not None:
        return declared
    if pairs.score_range is not None:
        return pairs.score_range
    low, high = min(pairs.scores), max(pairs.scores)
    fitting = [r for r in allowed if r[0] <= low and high <= r[1]]
    if not fitting:
        raise EvaluatorError(
            f"{pairs.source}: scores span {low:g}..{high:g}, which fits none of the ranges "
            f"{', '.join(f'{a:g}-{b:g}' for a, b in allowed)}; declare it with score_range=(low, high)."
        )
    if (0.0, 1.0) in fitting:
        chosen = (0.0, 1.0)
    elif len(fitting) == 1:
        chosen = fitting[0]
    else:
        raise EvaluatorError(
            f"{pairs.source}: scores span {low:g}..{high:g}, which fits the ranges "
            f"{' and '.join(f'{a:g}-{b:g}' for a, b in fitting)}; declare which with score_range=(low, high)."
        )
    logger.info(
        "%s: no score range known or declared; scores span %g..%g, so the range is taken as %g-%g "
        "(pass score_range to declare it).",
        pairs.source,
        low,
        high,
        *chosen,
    )
    return chosen


def _normalise(pairs: Pairs, score_range: ScoreRange) -> list[float]:
    low, high = score_range
    outside = [i for i, score in enumerate(pairs.scores) if not low <= score <= high]
    if outside:
        first = outside[0]
        raise EvaluatorError(
            f"{pairs.locate(first)}: score {pairs.scores[first]:g} is outside the range {low:g}-{high:g} "
            f"({len(outside)} score(s) outside in {pairs.source}). Declare the right range with score_range."
        )
    if (low, high) == (0.0, 1.0):
        return list(pairs.scores)
    # (score - 0) / 5 is exactly score / 5, as a hand-built STSb evaluator divides.
    return [(score - low) / (high - low) for score in pairs.scores]


def _check_pairs(pairs: Pairs) -> None:
    if not pairs.scores:
        raise EvaluatorError(f"{pairs.source}: no sentence pairs.")
    if not (len(pairs.sentences1) == len(pairs.sentences2) == len(pairs.scores)):
        raise EvaluatorError(
            f"{pairs.source}: mismatched lengths: {len(pairs.sentences1)} first sentences, "
            f"{len(pairs.sentences2)} second sentences, {len(pairs.scores)} scores."
        )


def gold_scores(pairs: Pairs, declared: ScoreRange | None, allowed: tuple[ScoreRange, ...]) -> list[float]:
    """The pairs' gold scores mapped to 0-1, from the declared, known or detected range (one of ``allowed``).

    Raises:
        ValueError: No pairs, a score outside the range (named by its location), or a range the data cannot tell.
    """
    _check_pairs(pairs)
    return _normalise(pairs, _decide_range(pairs, declared, allowed))


# ---------------------------------------------------------------------------------------------------------------
# The two data sets


@dataclass(frozen=True)
class Release:
    """How one STS data set is read: its default source, its known hub copies, its folder layout, its ranges."""

    prefix: str
    """Evaluator names are ``<prefix>-test``, ``<prefix>-dev``, ``<prefix>-train``."""
    default_source: str | Path
    hub: dict[str, HubSpec]
    read_folder: Callable[[Path, str], Pairs]
    what: str
    """What a folder source must hold, for messages."""
    ranges: tuple[ScoreRange, ...]
    """The score ranges detection may choose among."""

    def read(self, source: Any, split: str, columns: tuple[str, str, str] | None) -> Pairs:
        """Read ``split`` from ``source`` (``None``: the default source): a folder, a hub id or a Dataset."""
        return _resolve(
            self.default_source if source is None else source,
            split,
            hub=self.hub,
            read_folder=self.read_folder,
            what=self.what,
            columns=columns,
        )


STSB = Release("sts", PACKAGED_STSB, _STSB_HUB, _stsb_folder, "the STSb release's sts-*.csv", ((0.0, 1.0), (0.0, 5.0)))
SICK = Release(
    "sickr",
    "mteb/sickr-sts",
    _SICKR_HUB,
    _sick_folder,
    "the SICK release's SICK_*.txt",
    ((0.0, 1.0), (0.0, 5.0), (1.0, 5.0)),
)

__all__ = [
    "PACKAGED_STSB",
    "SICK",
    "STSB",
    "HubSpec",
    "Pairs",
    "Release",
    "ScoreRange",
    "gold_scores",
    "read_sick_txt",
    "read_stsb_csv",
]
