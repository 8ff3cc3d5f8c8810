"""Build MNR-ready pairs and triplets from NLI corpora: SNLI, MultiNLI, SICK, all-nli, or your own files.

The output has exactly the columns a Multiple Negatives Ranking loss consumes, in order, because the
sentence-transformers trainer feeds the non-label columns to the loss by position:

* ``output="pairs"``: ``anchor, positive`` (premise, entailed hypothesis);
* ``output="triplets"``: ``anchor, positive, negative`` (premise, entailed hypothesis, contradicting hypothesis of
  the same premise), the construction of ``sentence-transformers/all-nli``'s ``triplet`` subset.

Example:
    ::

        from st_mnr_plus.datasets.nli import NLIBuilder, build_nli

        pairs = build_nli(["snli_1.0_train.jsonl", "multinli_1.0_train.jsonl"])
        print(pairs.build_report)  # rows read, kept and skipped by reason

        builder = NLIBuilder("triplets", max_triplets_per_premise=1)
        triplets = builder.build("snli_1.0_train.jsonl.gz")
        print(builder.report.as_dict())
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

import datasets
from tqdm.auto import tqdm

from st_mnr_plus.common.errors import ConfigurationError
from st_mnr_plus.common.sources import is_local_path
from st_mnr_plus.datasets._build import OUTPUT_COLUMNS, BuildRun, Output
from st_mnr_plus.datasets._labels import check_label_map
from st_mnr_plus.datasets.readers import (
    NLIFormatError,
    OnError,
    Source,
    dataset_source,
    file_source,
    layout_kind,
)
from st_mnr_plus.datasets.report import SKIP_REASONS, BuildReport, EmptyBuildError, empty_message

logger = logging.getLogger(__name__)

SourceLike = str | os.PathLike[str] | datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset


class NLIBuilder:
    """Turn NLI corpora into MNR-ready ``anchor, positive`` pairs or ``anchor, positive, negative`` triplets.

    Sources are streamed in bounded batches and the output is written to an Arrow file in batches, so memory
    does not grow with the input file, only with the duplicate index of pairs (a 16-byte BLAKE2b digest per
    distinct pair, kept in sorted numpy runs: 16 bytes a pair) and, for triplets, with 8 bytes per candidate row.

    Pairs are ``(premise, entailed hypothesis)``, one per distinct entailment row; ``add_reversed=True`` adds
    ``(hypothesis, premise)`` too, after each batch's forward pairs.

    Triplets are ``(premise, entailment, contradiction)`` of the same premise, the construction of
    ``sentence-transformers/all-nli``'s ``triplet`` subset. A premise with ``e`` distinct entailed and ``c``
    distinct contradicting hypotheses yields ``e * c`` triplets (usually 1 for SNLI and MultiNLI), or
    ``min(max_triplets_per_premise, e * c)`` with a cap. The pairs are taken in an order where the first
    ``max(e, c)`` triplets use every hypothesis at least once, so a cap of ``max(e, c)`` loses no hypothesis.
    Each premise's triplets are emitted after its last row (in order of first appearance when, as in SNLI and
    MultiNLI, a premise's rows are adjacent), after the rows of any source that already has triplet columns.
    Triplet candidates wait in a temporary Arrow file, so memory holds only the premises still open.

    Labels may be integers (0 entailment, 1 neutral, 2 contradiction, -1 no consensus, as on the hub), or
    strings in any case (``entailment``, ``ENTAILMENT``, the same digits as strings, and SNLI's ``-`` for no
    consensus). ``label_map`` maps other values. An unknown label raises an error naming the value and the
    file and line (or the dataset row). Rows with a ``-``/-1 label, neutral rows, rows with an empty or
    whitespace-only text and exact duplicate rows are skipped and counted in the :class:`BuildReport`.

    Sources with ``anchor, positive`` columns count as entailment pairs; with ``anchor, positive, negative``
    they are ready triplets (their negatives are dropped when building pairs).

    After :meth:`build`, :attr:`report` holds the :class:`BuildReport`; the returned dataset carries it too,
    as the attribute ``build_report`` (only on that object: ``map``, ``select`` and friends return new
    datasets without it). The report is also logged at INFO.

    Args:
        output: ``"pairs"`` or ``"triplets"``.
        add_reversed: Pairs only: also add each pair reversed, ``(hypothesis, premise)``, unless the output
            already holds it.
        max_triplets_per_premise: Triplets only: at most this many triplets per premise (``None``: all).
        label_map: Extra label values and what they mean: raw value (string, matched after ``strip().lower()``,
            or integer) -> ``"entailment"``, ``"neutral"``, ``"contradiction"``, ``"no_consensus"`` or the codes
            0, 1, 2, -1. It takes precedence over the built-in names.
        columns: Column mapping for sources whose columns are not a known layout: ``{"premise": ...,
            "hypothesis": ..., "label": ...}`` (or ``anchor, positive[, negative]``) -> the source's column
            names; for CSV/TSV files without a header line, 0-based field positions. Used for every source that
            has all the named columns; the others are recognised by their column names.
        split: The split to take from a ``DatasetDict`` or a hub id.
        on_error: ``"raise"`` (default) on a malformed line or row: bad JSON, too few fields, a missing field or
            value, bytes that are not UTF-8. ``"skip"`` skips and counts it as ``malformed``. Missing columns,
            unknown labels and missing files raise either way.
        show_progress: Show a tqdm progress bar per source (bytes for files, rows for datasets).
        cache_dir: Directory of the output Arrow file. ``None``: a temporary directory removed when the process
            ends (as ``datasets`` does with caching disabled); give a directory to keep the file.

    Raises:
        ValueError: An argument is invalid (the message names it).
    """

    def __init__(
        self,
        output: Output = "pairs",
        *,
        add_reversed: bool = False,
        max_triplets_per_premise: int | None = None,
        label_map: Mapping[str | int, str | int] | None = None,
        columns: Mapping[str, str | int] | None = None,
        split: str = "train",
        on_error: OnError = "raise",
        show_progress: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if output not in OUTPUT_COLUMNS:
            raise ConfigurationError(f"output must be 'pairs' or 'triplets', got {output!r}.")
        if not isinstance(add_reversed, bool):
            raise ConfigurationError(f"add_reversed must be True or False, got {add_reversed!r}.")
        if add_reversed and output != "pairs":
            raise ConfigurationError("add_reversed=True applies to output='pairs' only.")
        if max_triplets_per_premise is not None:
            if output != "triplets":
                raise ConfigurationError("max_triplets_per_premise applies to output='triplets' only.")
            if (
                isinstance(max_triplets_per_premise, bool)
                or not isinstance(max_triplets_per_premise, int)
                or max_triplets_per_premise < 1
            ):
                raise ConfigurationError(
                    f"max_triplets_per_premise must be a positive integer or None, got {max_triplets_per_premise!r}."
                )
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        if not isinstance(split, str) or not split:
            raise ConfigurationError(f"split must be a non-empty string, got {split!r}.")
        if columns is not None:
            if not isinstance(columns, Mapping):
                raise ConfigurationError(
                    f"columns must be a mapping of column roles to names, got {type(columns).__name__}."
                )
            layout_kind(columns, "columns")
            for role, value in columns.items():
                if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                    raise ConfigurationError(
                        f"columns[{role!r}] must be a column name or a 0-based position, got {value!r}."
                    )
            if len({isinstance(v, int) for v in columns.values()}) > 1:
                raise ConfigurationError("columns must use either names or positions for every column, not a mix.")
        self.output: Output = output
        self.add_reversed = add_reversed
        self.max_triplets_per_premise = max_triplets_per_premise
        self.label_map = check_label_map(label_map)
        self.columns = dict(columns) if columns is not None else None
        self.split = split
        self.on_error: OnError = on_error
        self.show_progress = show_progress
        self.cache_dir = cache_dir
        self.report: BuildReport | None = None

    # ----------------------------------------------------------------------------------------------- sources

    def _sources(self, sources: SourceLike | Iterable[SourceLike]) -> list[Source]:
        if isinstance(sources, (str, os.PathLike, datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset)):
            items: list[Any] = [sources]
        elif isinstance(sources, datasets.IterableDatasetDict):
            items = [sources]
        elif isinstance(sources, Iterable):
            items = list(sources)
        else:
            raise ConfigurationError(
                "sources must be a path, a hub id, a datasets.Dataset/DatasetDict/IterableDataset or a list of "
                f"them, got {type(sources).__name__}."
            )
        if not items:
            raise ConfigurationError("sources is empty: give at least one file, hub id or dataset.")
        return [self._source(item, index) for index, item in enumerate(items)]

    def _source(self, item: Any, index: int) -> Source:
        if isinstance(item, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if self.split not in item:
                raise ConfigurationError(
                    f"sources[{index}] is a DatasetDict without split {self.split!r} (it has {list(item)}); "
                    "pass split=... to choose one."
                )
            return self._dataset(item[self.split], index)
        if isinstance(item, (datasets.Dataset, datasets.IterableDataset)):
            return self._dataset(item, index)
        if isinstance(item, (str, os.PathLike)):
            if is_local_path(item):
                return file_source(item, self.columns, self.on_error)
            repo, _, config = str(item).partition(":")
            logger.info("Loading %s (config %s, split %s) with datasets.load_dataset", repo, config or "-", self.split)
            dataset = datasets.load_dataset(repo, config or None, split=self.split)
            return dataset_source(dataset, f"{item} [{self.split}]", self.columns, self.on_error)
        raise ConfigurationError(
            f"sources[{index}] must be a path, a hub id or a datasets.Dataset/DatasetDict/IterableDataset, "
            f"got {type(item).__name__}."
        )

    def _dataset(self, dataset: Any, index: int) -> Source:
        name = getattr(getattr(dataset, "info", None), "dataset_name", None) or "dataset"
        split = getattr(dataset, "split", None)
        label = f"sources[{index}] ({name}{f' [{split}]' if split else ''})"
        return dataset_source(dataset, label, self.columns, self.on_error)

    # ----------------------------------------------------------------------------------------------- build

    def build(self, sources: SourceLike | Iterable[SourceLike]) -> datasets.Dataset:
        """Read every source and return the pairs or triplets as an Arrow-backed ``datasets.Dataset``.

        Args:
            sources: One source or a list of them, merged in order: a local file (``.jsonl``/``.json``, ``.txt``/
                ``.tsv``, ``.csv``, each optionally ``.gz``), a hub id (``"stanfordnlp/snli"``, with ``:config``
                for a subset: ``"sentence-transformers/all-nli:pair-class"``) loaded with
                ``datasets.load_dataset(..., split=split)``, or a ``datasets.Dataset``, ``DatasetDict`` or
                ``IterableDataset``.

        Returns:
            The dataset, with columns ``anchor, positive`` or ``anchor, positive, negative``; its
            ``build_report`` attribute (and :attr:`report`) holds the :class:`BuildReport`.

        Raises:
            FileNotFoundError: A file does not exist (the message names the path).
            NLIFormatError: (a ``ValueError``) malformed input, missing columns or an unknown label; the message
                names the file and line, or the dataset row.
            EmptyBuildError: (a ``ValueError``) the filters removed every row; the message says which.
        """
        resolved = self._sources(sources)
        report = BuildReport(output=self.output, sources=[s.name for s in resolved])
        self.report = report
        run = BuildRun(
            self.output,
            report,
            label_map=self.label_map,
            add_reversed=self.add_reversed,
            max_triplets_per_premise=self.max_triplets_per_premise,
            cache_dir=self.cache_dir,
        )
        try:
            for source in resolved:
                before = report.rows_read
                with tqdm(
                    total=source.progress_total,
                    unit=source.progress_unit,
                    unit_scale=True,
                    desc=Path(source.name).name if source.unit == "line" else source.name,
                    disable=not self.show_progress,
                ) as bar:
                    for batch in source.batches(bar.update):
                        run.consume(batch, source)
                report.rows_read_by_source[source.name] = report.rows_read - before
            run.finish()
        except BaseException:
            run.abort()
            raise
        logger.info("%s", report)
        if report.rows_out == 0:
            run.abort()
            raise EmptyBuildError(empty_message(report), report)
        dataset = run.close()
        dataset.build_report = report
        return dataset


_P = ParamSpec("_P")


def _takes_the_options_of(
    builder: Callable[_P, NLIBuilder],
) -> Callable[
    [Callable[..., datasets.Dataset]], Callable[Concatenate[SourceLike | Iterable[SourceLike], _P], datasets.Dataset]
]:
    """Give the decorated function the signature ``(sources, <the builder's parameters>)``.

    The options are declared once, on :class:`NLIBuilder`; type checkers read them through the ``ParamSpec``, and
    ``help()``, ``inspect.signature`` and IDEs through ``__signature__``.
    """

    def decorate(function: Callable[..., datasets.Dataset]) -> Any:
        own = inspect.signature(function)
        sources = next(iter(own.parameters.values()))
        function.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[sources, *inspect.signature(builder).parameters.values()]
        )
        return function

    return decorate


@_takes_the_options_of(NLIBuilder)
def build_nli(
    sources: SourceLike | Iterable[SourceLike], output: Output = "pairs", **options: Any
) -> datasets.Dataset:
    """Build MNR-ready pairs or triplets from NLI sources in one call.

    ``build_nli(sources, output, **options)`` is ``NLIBuilder(output, **options).build(sources)``: the options
    (``add_reversed``, ``max_triplets_per_premise``, ``label_map``, ``columns``, ``split``, ``on_error``,
    ``show_progress``, ``cache_dir``) and what the output holds are documented on :class:`NLIBuilder`, the
    sources on :meth:`NLIBuilder.build`. A premise with ``e`` entailed and ``c`` contradicting hypotheses yields
    ``e * c`` triplets, at most ``max_triplets_per_premise``.

    The build report (rows read, kept, and skipped by reason) is logged at INFO and attached to the returned
    dataset as ``dataset.build_report``.

    Args:
        sources: Files, hub ids or datasets, one or a list (see :meth:`NLIBuilder.build`).
        output: ``"pairs"`` (``anchor, positive``) or ``"triplets"`` (``anchor, positive, negative``).
        **options: The keyword options of :class:`NLIBuilder`.

    Returns:
        An Arrow-backed dataset with exactly the loss columns, carrying ``build_report``.

    Raises:
        ValueError: An option is invalid (the message names it).
        TypeError: An unknown option.
        FileNotFoundError: A file does not exist.
        NLIFormatError: Malformed input, missing columns or an unknown label (names the file and line, or row).
        EmptyBuildError: The filters removed every row (says which).

    Example:
        ::

            pairs = build_nli("snli_1.0_dev.jsonl")
            pairs.column_names  # ['anchor', 'positive']
            print(pairs.build_report)
    """
    return NLIBuilder(output, **options).build(sources)


__all__ = [
    "SKIP_REASONS",
    "BuildReport",
    "EmptyBuildError",
    "NLIBuilder",
    "NLIFormatError",
    "Output",
    "build_nli",
]
