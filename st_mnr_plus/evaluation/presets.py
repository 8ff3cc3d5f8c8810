"""Evaluator presets: configured sentence-transformers evaluators for STSb, SICK-R and NLI triplets.

Every preset is a factory returning a ready sentence-transformers evaluator, so it plugs into
``SentenceTransformerTrainer(evaluator=...)`` or is called directly as ``evaluator(model)``. The presets check
their arguments and configure the evaluator (``sts-test``, ``sickr-test``, ...); reading the data (the original
release files, a hub copy, or a ``datasets.Dataset``) and mapping the gold scores to 0-1 is the job of
:mod:`st_mnr_plus.evaluation.readers`.

Score ranges are never guessed silently: a known source has a known range, a ``score_range`` argument declares
one, and otherwise the range is detected from the data with a log line, or refused as ambiguous.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import TripletEvaluator

from st_mnr_plus.evaluation.evaluator import STSEvaluator
from st_mnr_plus.evaluation.readers import SICK, STSB, EvaluatorError, Release, ScoreRange, gold_scores

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

logger = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]

_SPLITS: tuple[str, ...] = ("train", "validation", "test")
_SPLIT_ALIASES = {"dev": "validation", "trial": "validation"}
_SPLIT_NAMES = {"train": "train", "validation": "dev", "test": "test"}


# ---------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_split(split: str) -> str:
    if not isinstance(split, str):
        raise EvaluatorError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}.")
    canonical = _SPLIT_ALIASES.get(split, split)
    if canonical not in _SPLITS:
        raise EvaluatorError(f"split must be one of {', '.join(_SPLITS)} (or 'dev' for validation), got {split!r}.")
    return canonical


def _check_score_range(score_range: Sequence[float] | None) -> ScoreRange | None:
    if score_range is None:
        return None
    try:
        low, high = (float(value) for value in score_range)
    except (TypeError, ValueError):
        raise EvaluatorError(f"score_range must be a pair (low, high) of numbers, got {score_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EvaluatorError(f"score_range must be finite with low < high, got {score_range!r}.")
    return low, high


def _check_columns(columns: Sequence[str] | None) -> tuple[str, str, str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or len(columns) != 3 or not all(isinstance(c, str) for c in columns):
        raise EvaluatorError(f"columns must name three columns (sentence1, sentence2, score), got {columns!r}.")
    return tuple(columns)  # type: ignore[return-value]


def _sts_evaluator(
    release: Release,
    split: str,
    source: Any,
    *,
    score_range: Sequence[float] | None = None,
    columns: Sequence[str] | None = None,
    deduplicate: bool = False,
    name: str | None = None,
    **evaluator_kwargs: Any,
) -> STSEvaluator:
    """What :func:`stsb_evaluator` and :func:`sickr_evaluator` do, for either release: the keyword options of both
    are declared here once."""
    split = _check_split(split)
    declared = _check_score_range(score_range)
    columns = _check_columns(columns)
    pairs = release.read(source, split, columns)
    scores = gold_scores(pairs, declared, release.ranges)
    name = name or f"{release.prefix}-{_SPLIT_NAMES[split]}"
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
    return _sts_evaluator(
        STSB,
        split,
        source,
        score_range=score_range,
        columns=columns,
        deduplicate=deduplicate,
        name=name,
        **evaluator_kwargs,
    )


def sickr_evaluator(
    split: Split | Literal["dev", "trial"] = "test",
    source: str | os.PathLike[str] | Dataset | DatasetDict | None = None,
    **options: Any,
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
        **options: The keyword options of :func:`stsb_evaluator`, with these SICK specifics:

            - ``score_range``: SICK's is ``(1, 5)``, mapped to 0-1 by ``(score - 1) / 4``. A Dataset source
              without it must have detectable scores (0-1); 1-5 vs 0-5 cannot be told apart, so declare it.
            - ``name``: default ``sickr-test``, ``sickr-dev``, ``sickr-train``.
            - ``columns``, ``deduplicate`` and ``EmbeddingSimilarityEvaluator``'s keyword arguments as there.

    Returns:
        A configured ``EmbeddingSimilarityEvaluator`` (an :class:`STSEvaluator`).

    Raises:
        ValueError: As for :func:`stsb_evaluator`.
        FileNotFoundError: A source folder, or the split's file in it, does not exist.
    """
    return _sts_evaluator(SICK, split, source, **options)


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
        raise EvaluatorError(f"max_triplets must be a positive integer or None, got {max_triplets!r}.")
    if isinstance(source, Dataset):
        if build_options:
            raise EvaluatorError("build_options apply only when build_nli builds the triplets; source is a Dataset.")
        dataset, origin = source, "the triplet Dataset"
    else:
        from st_mnr_plus.datasets.nli import build_nli

        dataset = build_nli(source, output="triplets", **(build_options or {}))
        origin = f"build_nli({source!r})"
    missing = [column for column in ("anchor", "positive", "negative") if column not in dataset.column_names]
    if missing:
        raise EvaluatorError(
            f"{origin}: needs the columns anchor, positive, negative; missing {', '.join(missing)} "
            f"(columns: {', '.join(dataset.column_names)})."
        )
    if max_triplets is not None and max_triplets < len(dataset):
        dataset = dataset.select(range(max_triplets))
    if len(dataset) == 0:
        raise EvaluatorError(f"{origin}: no triplets.")
    texts = {column: dataset[column] for column in ("anchor", "positive", "negative")}
    for column, values in texts.items():
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise EvaluatorError(
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
        raise EvaluatorError(
            f"include must list distinct presets among {', '.join(factories)}, got {list(include)!r}."
        )
    for evaluator in extra:
        if not isinstance(evaluator, BaseEvaluator):
            raise EvaluatorError(f"extra must hold sentence-transformers evaluators, got {type(evaluator).__name__}.")
    if not include and not extra:
        raise EvaluatorError("include and extra are both empty: the suite would evaluate nothing.")
    evaluators: list[BaseEvaluator] = []
    for item in include:
        factory, source = factories[item]
        evaluators.append(factory(split, source, deduplicate=deduplicate, **dict(evaluator_kwargs)))
    evaluators.extend(extra)
    return SequentialEvaluator(evaluators, main_score_function=_mean)


__all__ = ["nli_triplet_evaluator", "sickr_evaluator", "sts_suite", "stsb_evaluator"]
