"""Evaluator presets: configured sentence-transformers evaluators for STSb, SICK-R and NLI triplets.

Every preset is a factory returning a ready sentence-transformers evaluator, so it plugs into
``SentenceTransformerTrainer(evaluator=...)`` or is called directly as ``evaluator(model)``. The presets do the
part everyone re-writes: reading the data (the original release files, a hub copy, or a ``datasets.Dataset``),
checking it, mapping the gold scores to 0-1 and naming the evaluator (``sts-test``, ``sickr-test``, ...).

Score ranges are never guessed silently: a known source has a known range, a ``score_range`` argument declares
one, and otherwise the range is detected from the data with a log line, or refused as ambiguous.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator, TripletEvaluator

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]
ScoreRange = tuple[float, float]

PACKAGED_STSB = Path(__file__).resolve().parent.parent / "data" / "stsbenchmark"
"""The original STS benchmark release (``sts-{train,dev,test}.csv``, CC BY-SA 4.0 scores) shipped in the package."""

_SPLITS: tuple[str, ...] = ("train", "validation", "test")
_SPLIT_ALIASES = {"dev": "validation", "trial": "validation"}
_STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
# The single-file SICK release marks each pair's split in a SemEval_set column.
_SICK_SEMEVAL_SET = {"train": "TRAIN", "validation": "TRIAL", "test": "TEST"}
_SPLIT_NAMES = {"train": "train", "validation": "dev", "test": "test"}

_SENTENCE_COLUMNS = (("sentence1", "sentence2"), ("sentence_A", "sentence_B"), ("sentence_a", "sentence_b"))
_SCORE_COLUMNS = ("score", "label", "relatedness_score", "similarity_score")


@dataclass(frozen=True)
class _HubSpec:
    """What we know about a hub copy: where it lives, its columns, its score range and its labelled splits."""

    path: str
    config: str | None
    columns: tuple[str, str, str]
    score_range: ScoreRange
    splits: dict[str, str]
    note: str = ""


_GLUE_STSB = _HubSpec(
    "nyu-mll/glue",
    "stsb",
    ("sentence1", "sentence2", "label"),
    (0.0, 5.0),
    {"train": "train", "validation": "validation"},
    note="GLUE's stsb test split has no labels (they are -1): use sentence-transformers/stsb, "
    "mteb/stsbenchmark-sts or the original release (the default) for the test split.",
)
_STSB_HUB: dict[str, _HubSpec] = {
    "sentence-transformers/stsb": _HubSpec(
        "sentence-transformers/stsb",
        None,
        ("sentence1", "sentence2", "score"),
        (0.0, 1.0),
        {"train": "train", "validation": "validation", "test": "test"},
    ),
    "mteb/stsbenchmark-sts": _HubSpec(
        "mteb/stsbenchmark-sts",
        None,
        ("sentence1", "sentence2", "score"),
        (0.0, 5.0),
        {"train": "train", "validation": "validation", "test": "test"},
    ),
    "glue": _GLUE_STSB,
    "glue/stsb": _GLUE_STSB,
    "nyu-mll/glue": _GLUE_STSB,
    "nyu-mll/glue/stsb": _GLUE_STSB,
}
_SICKR_HUB: dict[str, _HubSpec] = {
    "mteb/sickr-sts": _HubSpec(
        "mteb/sickr-sts",
        None,
        ("sentence1", "sentence2", "score"),
        (1.0, 5.0),
        {"test": "test"},
        note="mteb/sickr-sts has only the test split; for train/validation pass a folder holding the SICK release.",
    ),
}


@dataclass
class _Pairs:
    """Sentence pairs with raw gold scores, and where each row came from (for error messages)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    source: str
    locate: Callable[[int], str]
    """Row index -> human-readable location, e.g. ``/path/sts-test.csv:17``."""
    score_range: ScoreRange | None
    """The range the source is known to use; ``None`` when it must be declared or detected."""


class STSEvaluator(EmbeddingSimilarityEvaluator):
    """An ``EmbeddingSimilarityEvaluator`` that can encode each unique sentence once.

    With ``deduplicate=False`` (the default) it is exactly ``EmbeddingSimilarityEvaluator``. With
    ``deduplicate=True`` the union of both sides is encoded once, without repeats (STSb test: 2,552 unique
    sentences instead of 2,758), then looked up per pair. The embeddings then come from differently composed
    batches, so they can differ from the plain evaluator's in the last float bits (about 1e-7 on CPU); the
    correlations agree to about 1e-6, not bit for bit. Quantized ``precision`` settings always take the plain
    path, because sentence-transformers calibrates them over both sides together.

    Args:
        sentences1: The first sentence of each pair.
        sentences2: The second sentence of each pair.
        scores: The gold score of each pair, already normalised to 0-1.
        deduplicate: Encode each unique sentence once.
        **kwargs: Passed to ``EmbeddingSimilarityEvaluator`` (``batch_size``, ``main_similarity``, ``name``, ...).
    """

    def __init__(
        self,
        sentences1: list[str],
        sentences2: list[str],
        scores: list[float],
        *,
        deduplicate: bool = False,
        **kwargs: Any,
    ) -> None:
        if not (len(sentences1) == len(sentences2) == len(scores)):
            raise ValueError(
                f"sentences1, sentences2 and scores must have the same length, got {len(sentences1)}, "
                f"{len(sentences2)} and {len(scores)}."
            )
        super().__init__(sentences1, sentences2, scores, **kwargs)
        self.deduplicate = deduplicate
        self._unique_embeddings: tuple[dict[str, int], np.ndarray] | None = None

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        if not self.deduplicate or self.precision is not None:
            return super().__call__(model, output_path, epoch, steps)
        unique = list(dict.fromkeys([*self.sentences1, *self.sentences2]))
        embeddings = super().embed_inputs(model, unique)
        self._unique_embeddings = ({sentence: i for i, sentence in enumerate(unique)}, embeddings)
        try:
            # The parent asks embed_inputs for each side; those calls now read the table.
            return super().__call__(model, output_path, epoch, steps)
        finally:
            self._unique_embeddings = None

    def embed_inputs(self, model: SentenceTransformer, sentences: Any, **kwargs: Any) -> np.ndarray:
        table = self._unique_embeddings
        if table is not None and not kwargs and isinstance(sentences, list):
            index, embeddings = table
            rows = [index.get(sentence) if isinstance(sentence, str) else None for sentence in sentences]
            if None not in rows:
                return embeddings[rows]
        return super().embed_inputs(model, sentences, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        if self.deduplicate:
            config["deduplicate"] = True
        return config


# ---------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_split(split: str, allowed: Iterable[str] = _SPLITS) -> str:
    if not isinstance(split, str):
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}.")
    canonical = _SPLIT_ALIASES.get(split, split)
    allowed = tuple(allowed)
    if canonical not in allowed:
        raise ValueError(f"split must be one of {', '.join(allowed)} (or 'dev' for validation), got {split!r}.")
    return canonical


def _check_score_range(score_range: Sequence[float] | None) -> ScoreRange | None:
    if score_range is None:
        return None
    try:
        low, high = (float(value) for value in score_range)
    except (TypeError, ValueError):
        raise ValueError(f"score_range must be a pair (low, high) of numbers, got {score_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"score_range must be finite with low < high, got {score_range!r}.")
    return low, high


def _check_columns(columns: Sequence[str] | None) -> tuple[str, str, str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or len(columns) != 3 or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"columns must name three columns (sentence1, sentence2, score), got {columns!r}.")
    return tuple(columns)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Readers of the original releases


def _read_stsb_csv(path: Path) -> _Pairs:
    """Read one file of the original STSb release.

    The format is tab-separated with no header and no quoting: ``genre, file, year, id, score, sentence1,
    sentence2`` and on some lines trailing source notes. Quotes inside sentences and the ragged lines trip
    generic CSV readers, so each line is split on tabs and fields 4-6 (0-based) are taken verbatim.
    """
    sentences1: list[str] = []
    sentences2: list[str] = []
    scores: list[float] = []
    lines: list[int] = []
    blank = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                blank += 1
                continue
            fields = line.split("\t")
            if len(fields) < 7:
                raise ValueError(
                    f"{path}:{line_no}: expected at least 7 tab-separated fields (genre, file, year, id, score, "
                    f"sentence1, sentence2), got {len(fields)}."
                )
            scores.append(_parse_score(fields[4], f"{path}:{line_no}, field 5 (score)"))
            sentences1.append(fields[5])
            sentences2.append(fields[6])
            lines.append(line_no)
    if blank:
        logger.info("%s: skipped %d blank line(s).", path, blank)
    return _Pairs(sentences1, sentences2, scores, str(path), lambda i: f"{path}:{lines[i]}", (0.0, 5.0))


def _read_sick_txt(path: Path, semeval_set: str | None = None) -> _Pairs:
    """Read a SICK release file: tab-separated with a header naming ``sentence_A, sentence_B, relatedness_score``.

    Columns are found by their header names, so the per-split files and the single ``SICK.txt`` (which adds
    ``SemEval_set``; rows of other sets are filtered out by ``semeval_set``, and counted) both read.
    """
    sentences1: list[str] = []
    sentences2: list[str] = []
    scores: list[float] = []
    lines: list[int] = []
    other_set = blank = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header_line = handle.readline().rstrip("\r\n")
        header = header_line.split("\t")
        required = ["sentence_A", "sentence_B", "relatedness_score"] + (["SemEval_set"] if semeval_set else [])
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(
                f"{path}:1: the header must name the columns {', '.join(required)}; missing {', '.join(missing)} "
                f"(header: {header_line[:200]!r})."
            )
        col_a, col_b, col_score = (header.index(name) for name in required[:3])
        col_set = header.index("SemEval_set") if semeval_set else None
        for line_no, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                blank += 1
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{line_no}: expected {len(header)} tab-separated fields like the header, got {len(fields)}."
                )
            if col_set is not None and fields[col_set] != semeval_set:
                other_set += 1
                continue
            scores.append(_parse_score(fields[col_score], f"{path}:{line_no}, column relatedness_score"))
            sentences1.append(fields[col_a])
            sentences2.append(fields[col_b])
            lines.append(line_no)
    if blank:
        logger.info("%s: skipped %d blank line(s).", path, blank)
    if other_set:
        logger.info(
            "%s: kept %d pairs of SemEval_set %s, left %d of other sets.", path, len(lines), semeval_set, other_set
        )
    return _Pairs(sentences1, sentences2, scores, str(path), lambda i: f"{path}:{lines[i]}", (1.0, 5.0))


def _parse_score(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {raw!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {raw!r}.")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Sources: a folder, the hub, a datasets.Dataset


def _from_dataset(
    dataset: Any, split: str, source_name: str, columns: tuple[str, str, str] | None, known: _HubSpec | None = None
) -> _Pairs:
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{source_name} has no split {split!r}; its splits are {', '.join(dataset)}.")
        dataset = dataset[split]
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{source_name}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    names = dataset.column_names
    if columns is None and known is not None:
        columns = known.columns
    if columns is None:
        pair = next((pair for pair in _SENTENCE_COLUMNS if set(pair) <= set(names)), None)
        score = next((name for name in _SCORE_COLUMNS if name in names), None)
        if pair is None or score is None:
            raise ValueError(
                f"{source_name}: cannot tell which columns hold the pairs and scores (columns: {', '.join(names)}). "
                "Pass columns=(sentence1, sentence2, score)."
            )
        columns = (*pair, score)
    missing = [name for name in columns if name not in names]
    if missing:
        raise ValueError(
            f"{source_name}: no column {', '.join(map(repr, missing))}; its columns are {', '.join(names)}."
        )
    s1_col, s2_col, score_col = columns
    sentences1, sentences2, raw_scores = dataset[s1_col], dataset[s2_col], dataset[score_col]
    for column, values in ((s1_col, sentences1), (s2_col, sentences2)):
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(
                    f"{source_name}, row {row}, column {column!r}: expected a string, got {type(value).__name__}."
                )
    scores = [
        _parse_score(value, f"{source_name}, row {row}, column {score_col!r}") for row, value in enumerate(raw_scores)
    ]
    return _Pairs(
        list(sentences1),
        list(sentences2),
        scores,
        source_name,
        lambda i: f"{source_name}, row {i}, column {score_col!r}",
        known.score_range if known is not None else None,
    )


def _from_hub(hub_id: str, split: str, known: _HubSpec | None, columns: tuple[str, str, str] | None) -> _Pairs:
    import datasets

    if known is not None:
        if split not in known.splits:
            raise ValueError(
                f"{hub_id} has no labelled {split!r} split (it has {', '.join(known.splits)}). {known.note}".strip()
            )
        path, config, hub_split = known.path, known.config, known.splits[split]
    else:
        path, config, hub_split = hub_id, None, split
    try:
        dataset = datasets.load_dataset(path, config, split=hub_split)
    except Exception as exc:
        local = Path(hub_id).expanduser().resolve()
        raise ValueError(
            f"Could not load {hub_id!r} (split {hub_split!r}) from the Hugging Face Hub, and it is not a local folder "
            f"({local} does not exist): {type(exc).__name__}: {exc}"
        ) from exc
    name = f"{hub_id} ({hub_split})"
    return _from_dataset(dataset, split, name, columns, known)


def _looks_like_path(text: str) -> bool:
    return (
        os.path.isabs(text)
        or text.startswith((".", "~"))
        or "\\" in text
        or text.endswith((".csv", ".txt", ".tsv", ".jsonl"))
    )


def _resolve(
    source: Any,
    split: str,
    *,
    hub: dict[str, _HubSpec],
    read_folder: Callable[[Path, str], _Pairs],
    what: str,
    columns: tuple[str, str, str] | None,
) -> _Pairs:
    from datasets import Dataset, DatasetDict

    if isinstance(source, Dataset | DatasetDict):
        return _from_dataset(source, split, f"datasets.{type(source).__name__} source", columns)
    if not isinstance(source, str | os.PathLike):
        raise ValueError(
            f"source must be a hub id, a folder holding {what}, or a datasets.Dataset; got {type(source).__name__}."
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path, split)
    if path.exists():
        raise ValueError(f"source {str(source)!r} is a file; pass the folder that holds {what}.")
    text = os.fspath(source)
    if text in hub:
        return _from_hub(text, split, hub[text], columns)
    if isinstance(source, os.PathLike) or _looks_like_path(text):
        raise FileNotFoundError(
            f"source folder {str(path.resolve())!r} does not exist (expected a folder holding {what})."
        )
    return _from_hub(text, split, None, columns)


def _stsb_folder(folder: Path, split: str) -> _Pairs:
    path = folder / _STSB_FILES[split]
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("sts-*.csv")) or ["no sts-*.csv"]
        raise FileNotFoundError(
            f"{path} not found: the {split!r} split of STSb is {_STSB_FILES[split]} ({folder} has {', '.join(present)})."
        )
    return _read_stsb_csv(path)


def _sick_folder(folder: Path, split: str) -> _Pairs:
    path = folder / _SICK_FILES[split]
    if path.is_file():
        return _read_sick_txt(path)
    whole = folder / "SICK.txt"
    if whole.is_file():
        return _read_sick_txt(whole, semeval_set=_SICK_SEMEVAL_SET[split])
    present = sorted(p.name for p in folder.glob("SICK*.txt")) or ["no SICK*.txt"]
    raise FileNotFoundError(
        f"{path} not found: the {split!r} split of SICK is {_SICK_FILES[split]} (or SICK.txt with a SemEval_set "
        f"column); {folder} has {', '.join(present)}."
    )


# ---------------------------------------------------------------------------------------------------------------
# Score ranges


def _decide_range(pairs: _Pairs, declared: ScoreRange | None, allowed: tuple[ScoreRange, ...]) -> ScoreRange:
    """Return the declared range, else the source's known one, else the one detected from the data (logged)."""
    if declared is not None:
        return declared
    if pairs.score_range is not None:
        return pairs.score_range
    low, high = min(pairs.scores), max(pairs.scores)
    fitting = [r for r in allowed if r[0] <= low and high <= r[1]]
    if not fitting:
        raise ValueError(
            f"{pairs.source}: scores span {low:g}..{high:g}, which fits none of the ranges "
            f"{', '.join(f'{a:g}-{b:g}' for a, b in allowed)}; declare it with score_range=(low, high)."
        )
    if (0.0, 1.0) in fitting:
        chosen = (0.0, 1.0)
    elif len(fitting) == 1:
        chosen = fitting[0]
    else:
        raise ValueError(
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


def _normalise(pairs: _Pairs, score_range: ScoreRange) -> list[float]:
    low, high = score_range
    outside = [i for i, score in enumerate(pairs.scores) if not low <= score <= high]
    if outside:
        first = outside[0]
        raise ValueError(
            f"{pairs.locate(first)}: score {pairs.scores[first]:g} is outside the range {low:g}-{high:g} "
            f"({len(outside)} score(s) outside in {pairs.source}). Declare the right range with score_range."
        )
    if (low, high) == (0.0, 1.0):
        return list(pairs.scores)
    # (score - 0) / 5 is exactly score / 5, as a hand-built STSb evaluator divides.
    return [(score - low) / (high - low) for score in pairs.scores]


def _check_pairs(pairs: _Pairs) -> None:
    if not pairs.scores:
        raise ValueError(f"{pairs.source}: no sentence pairs.")
    if not (len(pairs.sentences1) == len(pairs.sentences2) == len(pairs.scores)):
        raise ValueError(
            f"{pairs.source}: mismatched lengths: {len(pairs.sentences1)} first sentences, "
            f"{len(pairs.sentences2)} second sentences, {len(pairs.scores)} scores."
        )


def _similarity_evaluator(
    pairs: _Pairs,
    score_range: ScoreRange | None,
    allowed: tuple[ScoreRange, ...],
    name: str,
    deduplicate: bool,
    evaluator_kwargs: dict[str, Any],
) -> STSEvaluator:
    _check_pairs(pairs)
    scores = _normalise(pairs, _decide_range(pairs, score_range, allowed))
    evaluator_kwargs.setdefault("main_similarity", "cosine")
    logger.debug("%s: %d pairs from %s", name, len(scores), pairs.source)
    return STSEvaluator(
        pairs.sentences1, pairs.sentences2, scores, deduplicate=deduplicate, name=name, **evaluator_kwargs
    )


# ---------------------------------------------------------------------------------------------------------------
# Public presets


def stsb_evaluator(
    split: Split | Literal["dev"] = "test",
    source: str | os.PathLike[str] | Dataset | DatasetDict | None = None,
    *,
    score_range: tuple[float, float] | None = None,
    columns: tuple[str, str, str] | None = None,
    deduplicate: bool = False,
    name: str | None = None,
    **evaluator_kwargs: Any,
) -> STSEvaluator:
    """Build the STS benchmark evaluator: Spearman correlation of cosine similarity with the gold scores.

    The published figure for all-MiniLM-L6-v2 (Spearman cosine 0.8203 on the test split) comes out of
    ``stsb_evaluator("test")(model)["sts-test_spearman_cosine"]``.

    Args:
        split: ``"train"``, ``"validation"`` (alias ``"dev"``) or ``"test"``.
        source: Where the pairs come from:

            - ``None``: the original release shipped in this package (works offline).
            - a folder holding the original release's ``sts-train.csv``, ``sts-dev.csv``, ``sts-test.csv``.
            - a hub id loaded with ``datasets.load_dataset``: ``"sentence-transformers/stsb"`` (scores 0-1),
              ``"mteb/stsbenchmark-sts"`` (0-5), ``"glue"``/``"nyu-mll/glue"`` (its ``stsb`` config, 0-5;
              train and validation only). Another hub id needs ``score_range`` or detectable scores.
            - a ``datasets.Dataset`` (or a ``DatasetDict``, from which ``split`` is taken) with columns
              ``sentence1, sentence2, score`` (or ``label``), or those named by ``columns``.
        score_range: The gold scores' range, e.g. ``(0, 5)``; scores are mapped to 0-1 by
            ``(score - low) / (high - low)``. Known sources bring their range; otherwise it is detected (0-1 or
            0-5), logged, and refused when the data cannot tell.
        columns: ``(sentence1, sentence2, score)`` column names of a Dataset or hub source.
        deduplicate: Encode each unique sentence once (see :class:`STSEvaluator`).
        name: The evaluator's name, prefixed to its metrics; default ``sts-test``, ``sts-dev``, ``sts-train``.
        **evaluator_kwargs: Passed to ``EmbeddingSimilarityEvaluator`` (``batch_size``, ``show_progress_bar``,
            ``main_similarity`` (default ``"cosine"``), ``similarity_fn_names``, ``precision``, ...).

    Returns:
        A configured ``EmbeddingSimilarityEvaluator`` (an :class:`STSEvaluator`); its primary metric is
        ``<name>_spearman_cosine`` unless ``main_similarity`` says otherwise.

    Raises:
        ValueError: An unknown split, a split the source lacks, scores outside the range, an unreadable line
            (named by file and line), unknown columns, or a hub source that cannot be loaded.
        FileNotFoundError: A source folder, or the split's file in it, does not exist.

    Example:
        ::

            from st_mnr_plus import stsb_evaluator

            dev_evaluator = stsb_evaluator("validation")
            trainer = SentenceTransformerTrainer(model=model, ..., evaluator=dev_evaluator)
            stsb_evaluator("test")(model)["sts-test_spearman_cosine"]
    """
    split = _check_split(split)
    declared = _check_score_range(score_range)
    columns = _check_columns(columns)
    pairs = _resolve(
        PACKAGED_STSB if source is None else source,
        split,
        hub=_STSB_HUB,
        read_folder=_stsb_folder,
        what="the STSb release's sts-*.csv",
        columns=columns,
    )
    return _similarity_evaluator(
        pairs, declared, ((0.0, 1.0), (0.0, 5.0)), name or f"sts-{_SPLIT_NAMES[split]}", deduplicate, evaluator_kwargs
    )


def sickr_evaluator(
    split: Split | Literal["dev", "trial"] = "test",
    source: str | os.PathLike[str] | Dataset | DatasetDict | None = None,
    *,
    score_range: tuple[float, float] | None = None,
    columns: tuple[str, str, str] | None = None,
    deduplicate: bool = False,
    name: str | None = None,
    **evaluator_kwargs: Any,
) -> STSEvaluator:
    """Build the SICK-R evaluator: Spearman correlation of cosine similarity with SICK's relatedness (1-5).

    SICK is CC BY-NC-SA 3.0 (non-commercial), so it is not shipped: pass the release's folder or use the hub.

    Args:
        split: ``"train"``, ``"validation"`` (aliases ``"dev"``, ``"trial"``: SICK's trial set) or ``"test"``.
        source: Where the pairs come from:

            - ``None``: the hub copy ``"mteb/sickr-sts"`` (test split only; needs the hub).
            - a folder holding the SICK release: ``SICK_train.txt``, ``SICK_trial.txt``,
              ``SICK_test_annotated.txt``, or the single ``SICK.txt`` with its ``SemEval_set`` column.
            - a hub id (``"mteb/sickr-sts"`` is known: scores 1-5), or a ``datasets.Dataset``/``DatasetDict``
              with ``sentence1, sentence2, score`` or ``sentence_A, sentence_B, relatedness_score`` columns.
        score_range: The gold scores' range; SICK's is ``(1, 5)``, mapped to 0-1 by ``(score - 1) / 4``. A Dataset
            source without it must have detectable scores (0-1); 1-5 vs 0-5 cannot be told apart, so declare it.
        columns: ``(sentence1, sentence2, score)`` column names of a Dataset or hub source.
        deduplicate: Encode each unique sentence once (see :class:`STSEvaluator`).
        name: The evaluator's name; default ``sickr-test``, ``sickr-dev``, ``sickr-train``.
        **evaluator_kwargs: Passed to ``EmbeddingSimilarityEvaluator``.

    Returns:
        A configured ``EmbeddingSimilarityEvaluator`` (an :class:`STSEvaluator`).

    Raises:
        ValueError: As for :func:`stsb_evaluator`.
        FileNotFoundError: A source folder, or the split's file in it, does not exist.
    """
    split = _check_split(split)
    declared = _check_score_range(score_range)
    columns = _check_columns(columns)
    pairs = _resolve(
        "mteb/sickr-sts" if source is None else source,
        split,
        hub=_SICKR_HUB,
        read_folder=_sick_folder,
        what="the SICK release's SICK_*.txt",
        columns=columns,
    )
    return _similarity_evaluator(
        pairs,
        declared,
        ((0.0, 1.0), (0.0, 5.0), (1.0, 5.0)),
        name or f"sickr-{_SPLIT_NAMES[split]}",
        deduplicate,
        evaluator_kwargs,
    )


def nli_triplet_evaluator(
    source: Any,
    *,
    name: str = "nli-triplets",
    max_triplets: int | None = None,
    build_options: dict[str, Any] | None = None,
    **evaluator_kwargs: Any,
) -> TripletEvaluator:
    """Build a ``TripletEvaluator`` (accuracy of ``sim(anchor, positive) > sim(anchor, negative)``) on NLI triplets.

    Args:
        source: A ``datasets.Dataset`` with ``anchor, positive, negative`` columns (e.g. from
            ``build_nli(..., output="triplets")``), or the sources of :func:`st_mnr_plus.build_nli`, which then
            builds the triplets (premise, entailed hypothesis, contradicting hypothesis).
        name: The evaluator's name, prefixed to its metrics (``nli-triplets_cosine_accuracy``).
        max_triplets: Keep only the first this many triplets (a fast check during training).
        build_options: Keyword arguments for ``build_nli`` when ``source`` is not a Dataset, e.g.
            ``{"split": "validation", "max_triplets_per_premise": 1}``.
        **evaluator_kwargs: Passed to ``TripletEvaluator`` (``batch_size``, ``margin``,
            ``main_similarity_function`` (default ``"cosine"``), ``similarity_fn_names``, ...).

    Returns:
        A configured ``TripletEvaluator``.

    Raises:
        ValueError: ``max_triplets`` is not a positive integer, the triplets lack a column, hold a non-string
            value (named by row and column), or there are none.
    """
    from datasets import Dataset

    if max_triplets is not None and (
        isinstance(max_triplets, bool) or not isinstance(max_triplets, int) or max_triplets < 1
    ):
        raise ValueError(f"max_triplets must be a positive integer or None, got {max_triplets!r}.")
    if isinstance(source, Dataset):
        if build_options:
            raise ValueError("build_options apply only when build_nli builds the triplets; source is a Dataset.")
        dataset, origin = source, "the triplet Dataset"
    else:
        from st_mnr_plus.datasets.nli import build_nli

        built = build_nli(source, output="triplets", **(build_options or {}))
        # Tolerate a builder that returns (dataset, report).
        dataset = built[0] if isinstance(built, tuple) else built
        origin = f"build_nli({source!r})"
    missing = [column for column in ("anchor", "positive", "negative") if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{origin}: needs the columns anchor, positive, negative; missing {', '.join(missing)} "
            f"(columns: {', '.join(dataset.column_names)})."
        )
    if max_triplets is not None and max_triplets < len(dataset):
        dataset = dataset.select(range(max_triplets))
    if len(dataset) == 0:
        raise ValueError(f"{origin}: no triplets.")
    texts = {column: dataset[column] for column in ("anchor", "positive", "negative")}
    for column, values in texts.items():
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(
                    f"{origin}, row {row}, column {column!r}: expected a string, got {type(value).__name__}."
                )
    evaluator_kwargs.setdefault("main_similarity_function", "cosine")
    return TripletEvaluator(texts["anchor"], texts["positive"], texts["negative"], name=name, **evaluator_kwargs)


def _mean(scores: list[float]) -> float:
    return float(sum(scores) / len(scores))


def sts_suite(
    split: Split | Literal["dev"] = "test",
    *,
    include: Sequence[Literal["stsb", "sickr"]] = ("stsb", "sickr"),
    stsb_source: str | os.PathLike[str] | Dataset | DatasetDict | None = None,
    sickr_source: str | os.PathLike[str] | Dataset | DatasetDict | None = None,
    extra: Sequence[BaseEvaluator] = (),
    deduplicate: bool = False,
    **evaluator_kwargs: Any,
) -> SequentialEvaluator:
    """Run several STS presets in one ``SequentialEvaluator``, scored by the mean of their primary metrics.

    Args:
        split: The split for every preset included.
        include: Which presets to run, in order: ``"stsb"`` (:func:`stsb_evaluator`) and ``"sickr"``
            (:func:`sickr_evaluator`).
        stsb_source: The ``source`` of the STSb preset (default: the shipped release).
        sickr_source: The ``source`` of the SICK-R preset (default: the hub's ``mteb/sickr-sts``).
        extra: More ready evaluators to run after the presets (their primary metric joins the mean).
        deduplicate: Encode each unique sentence once in each preset.
        **evaluator_kwargs: Passed to every preset (``batch_size``, ``show_progress_bar``, ...).

    Returns:
        A ``SequentialEvaluator``; its metrics are all the presets' metrics plus ``sequential_score``, the mean
        of their primary metrics (e.g. the mean Spearman cosine), which is its primary metric.

    Raises:
        ValueError: ``include`` is empty or names an unknown preset, or a preset's own error.
    """
    factories: dict[str, tuple[Callable[..., BaseEvaluator], Any]] = {
        "stsb": (stsb_evaluator, stsb_source),
        "sickr": (sickr_evaluator, sickr_source),
    }
    if isinstance(include, str):
        include = (include,)
    unknown = [item for item in include if item not in factories]
    if unknown or len(set(include)) != len(include):
        raise ValueError(f"include must list distinct presets among {', '.join(factories)}, got {list(include)!r}.")
    for evaluator in extra:
        if not isinstance(evaluator, BaseEvaluator):
            raise ValueError(f"extra must hold sentence-transformers evaluators, got {type(evaluator).__name__}.")
    if not include and not extra:
        raise ValueError("include and extra are both empty: the suite would evaluate nothing.")
    evaluators: list[BaseEvaluator] = []
    for item in include:
        factory, source = factories[item]
        evaluators.append(factory(split, source, deduplicate=deduplicate, **dict(evaluator_kwargs)))
    evaluators.extend(extra)
    return SequentialEvaluator(evaluators, main_score_function=_mean)


__all__ = [
    "PACKAGED_STSB",
    "STSEvaluator",
    "nli_triplet_evaluator",
    "sickr_evaluator",
    "sts_suite",
    "stsb_evaluator",
]
