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

import hashlib
import logging
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from st_mnr_plus.datasets.readers import (
    Batch,
    NLIFormatError,
    OnError,
    Source,
    dataset_source,
    file_source,
    is_file_path,
    layout_kind,
)

logger = logging.getLogger(__name__)

Output = Literal["pairs", "triplets"]

ENTAILMENT, NEUTRAL, CONTRADICTION, NO_CONSENSUS = 0, 1, 2, -1

#: Every reason an input row can be skipped for, in the order reports list them.
SKIP_REASONS: tuple[str, ...] = (
    "malformed",
    "no_consensus",
    "neutral",
    "contradiction",
    "empty_text",
    "duplicate",
    "entailment_without_partner",
    "contradiction_without_partner",
    "over_cap",
)

_SKIP_DOC = {
    "malformed": "malformed line or row (on_error='skip')",
    "no_consensus": "no-consensus label ('-' or -1)",
    "neutral": "neutral label",
    "contradiction": "contradiction label (pairs use entailment rows only)",
    "empty_text": "empty or whitespace-only text",
    "duplicate": "exact duplicate of an earlier row",
    "entailment_without_partner": "entailment whose premise has no contradiction",
    "contradiction_without_partner": "contradiction whose premise has no entailment",
    "over_cap": "left out by max_triplets_per_premise",
}

# Label names accepted (after strip() and lower()) and the codes they stand for; the hub's integer codes too.
_DEFAULT_LABELS: dict[str, int] = {
    "entailment": ENTAILMENT,
    "neutral": NEUTRAL,
    "contradiction": CONTRADICTION,
    "-": NO_CONSENSUS,
    "0": ENTAILMENT,
    "1": NEUTRAL,
    "2": CONTRADICTION,
    "-1": NO_CONSENSUS,
}
_LABEL_TARGETS: dict[str, int] = {
    "entailment": ENTAILMENT,
    "neutral": NEUTRAL,
    "contradiction": CONTRADICTION,
    "no_consensus": NO_CONSENSUS,
    "-": NO_CONSENSUS,
}
_UNKNOWN = np.int8(99)
_OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "pairs": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"),
}
_WRITE_ROWS = 65_536
_RECORD_BATCH_ROWS = 10_000
_SPILL_SCHEMA = pa.schema([("premise", pa.string()), ("hypothesis", pa.string()), ("contradiction", pa.bool_())])


@dataclass
class BuildReport:
    """What a build read, kept and skipped: nothing is dropped without being counted here.

    Every input row is either kept (it contributed to the output) or skipped for exactly one reason, so
    ``rows_read == rows_kept + sum(skipped.values())``. Reasons are checked in the order of
    :data:`SKIP_REASONS`: a neutral row with an empty text counts as ``neutral``.

    Attributes:
        output: ``"pairs"`` or ``"triplets"``.
        sources: How each source was named (file path, hub id or dataset description).
        rows_read: Input rows (lines of a file without header and blank lines, or dataset rows).
        rows_kept: Input rows that contributed to the output.
        rows_out: Rows of the output dataset. For pairs without reversal it equals ``rows_kept``; for triplets a
            premise with several entailments and contradictions yields several rows.
        reversed_added: Reversed pairs added by ``add_reversed=True``.
        reversed_duplicates: Reversed pairs not added because the output already held that exact pair.
        skipped: Input rows skipped, by reason (every key of :data:`SKIP_REASONS`, zeros included).
        rows_read_by_source: Input rows read from each source, keyed like ``sources``.
    """

    output: str = "pairs"
    sources: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    rows_out: int = 0
    reversed_added: int = 0
    reversed_duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    rows_read_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        """All skipped input rows."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain JSON-serialisable values."""
        return {
            "output": self.output,
            "sources": list(self.sources),
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "rows_out": self.rows_out,
            "reversed_added": self.reversed_added,
            "reversed_duplicates": self.reversed_duplicates,
            "skipped": dict(self.skipped),
            "rows_read_by_source": dict(self.rows_read_by_source),
        }

    def __str__(self) -> str:
        n_sources = len(self.sources)
        lines = [
            f"NLI build ({self.output}): read {self.rows_read:,} rows from {n_sources} source"
            f"{'' if n_sources == 1 else 's'}, kept {self.rows_kept:,}, output {self.rows_out:,} rows."
        ]
        if self.reversed_added or self.reversed_duplicates:
            lines.append(
                f"  reversed pairs: {self.reversed_added:,} added, {self.reversed_duplicates:,} already present"
            )
        lines.append(f"  skipped {self.rows_skipped:,} rows:")
        for reason in SKIP_REASONS:
            if self.skipped[reason]:
                lines.append(f"    {reason:<30} {self.skipped[reason]:>10,}  {_SKIP_DOC[reason]}")
        if n_sources > 1:
            lines.append("  rows read by source:")
            lines.extend(f"    {name}: {count:,}" for name, count in self.rows_read_by_source.items())
        return "\n".join(lines)


class EmptyBuildError(ValueError):
    """Every row was filtered out. The message says which filters removed them; ``report`` has the counts."""

    def __init__(self, message: str, report: BuildReport) -> None:
        super().__init__(message)
        self.report = report


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
        if output not in _OUTPUT_COLUMNS:
            raise ValueError(f"output must be 'pairs' or 'triplets', got {output!r}.")
        if not isinstance(add_reversed, bool):
            raise ValueError(f"add_reversed must be True or False, got {add_reversed!r}.")
        if add_reversed and output != "pairs":
            raise ValueError("add_reversed=True applies to output='pairs' only.")
        if max_triplets_per_premise is not None:
            if output != "triplets":
                raise ValueError("max_triplets_per_premise applies to output='triplets' only.")
            if (
                isinstance(max_triplets_per_premise, bool)
                or not isinstance(max_triplets_per_premise, int)
                or max_triplets_per_premise < 1
            ):
                raise ValueError(
                    f"max_triplets_per_premise must be a positive integer or None, got {max_triplets_per_premise!r}."
                )
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}.")
        if columns is not None:
            if not isinstance(columns, Mapping):
                raise ValueError(f"columns must be a mapping of column roles to names, got {type(columns).__name__}.")
            layout_kind(columns, "columns")
            for role, value in columns.items():
                if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                    raise ValueError(f"columns[{role!r}] must be a column name or a 0-based position, got {value!r}.")
            if len({isinstance(v, int) for v in columns.values()}) > 1:
                raise ValueError("columns must use either names or positions for every column, not a mix.")
        self.output: Output = output
        self.add_reversed = add_reversed
        self.max_triplets_per_premise = max_triplets_per_premise
        self.label_map = _check_label_map(label_map)
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
            raise ValueError(
                "sources must be a path, a hub id, a datasets.Dataset/DatasetDict/IterableDataset or a list of "
                f"them, got {type(sources).__name__}."
            )
        if not items:
            raise ValueError("sources is empty: give at least one file, hub id or dataset.")
        return [self._source(item, index) for index, item in enumerate(items)]

    def _source(self, item: Any, index: int) -> Source:
        if isinstance(item, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if self.split not in item:
                raise ValueError(
                    f"sources[{index}] is a DatasetDict without split {self.split!r} (it has {list(item)}); "
                    "pass split=... to choose one."
                )
            return self._dataset(item[self.split], index)
        if isinstance(item, (datasets.Dataset, datasets.IterableDataset)):
            return self._dataset(item, index)
        if isinstance(item, (str, os.PathLike)):
            if is_file_path(item):
                return file_source(item, self.columns, self.on_error)
            repo, _, config = str(item).partition(":")
            logger.info("Loading %s (config %s, split %s) with datasets.load_dataset", repo, config or "-", self.split)
            dataset = datasets.load_dataset(repo, config or None, split=self.split)
            return dataset_source(dataset, f"{item} [{self.split}]", self.columns, self.on_error)
        raise ValueError(
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
        run = _Run(self, report)
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
            raise EmptyBuildError(_empty_message(report), report)
        dataset = run.close()
        dataset.build_report = report
        return dataset


def build_nli(
    sources: SourceLike | Iterable[SourceLike],
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
) -> datasets.Dataset:
    """Build MNR-ready pairs or triplets from NLI sources in one call.

    ``build_nli(sources, output, **options)`` is ``NLIBuilder(output, **options).build(sources)``: see
    :class:`NLIBuilder` for the options and what the output holds, and :meth:`NLIBuilder.build` for the
    sources. A premise
    with ``e`` entailed and ``c`` contradicting hypotheses yields ``e * c`` triplets, at most
    ``max_triplets_per_premise``.

    The build report (rows read, kept, and skipped by reason) is logged at INFO and attached to the returned
    dataset as ``dataset.build_report``.

    Args:
        sources: Files, hub ids or datasets, one or a list (see :meth:`NLIBuilder.build`).
        output: ``"pairs"`` (``anchor, positive``) or ``"triplets"`` (``anchor, positive, negative``).
        add_reversed: Pairs only: add each pair reversed too.
        max_triplets_per_premise: Triplets only: cap per premise (``None``: all ``e * c``).
        label_map: Extra label values -> ``"entailment"``, ``"neutral"``, ``"contradiction"``, ``"no_consensus"``.
        columns: Column mapping for layouts not recognised by name (names, or positions for headerless CSV/TSV).
        split: The split of a ``DatasetDict`` or hub id.
        on_error: ``"raise"`` on a malformed line or row, or ``"skip"`` and count it.
        show_progress: Show a tqdm progress bar per source.
        cache_dir: Where the output Arrow file goes (``None``: a temporary directory).

    Returns:
        An Arrow-backed dataset with exactly the loss columns, carrying ``build_report``.

    Raises:
        FileNotFoundError: A file does not exist.
        NLIFormatError: Malformed input, missing columns or an unknown label (names the file and line, or row).
        EmptyBuildError: The filters removed every row (says which).

    Example:
        ::

            pairs = build_nli("snli_1.0_dev.jsonl")
            pairs.column_names  # ['anchor', 'positive']
            print(pairs.build_report)
    """
    builder = NLIBuilder(
        output,
        add_reversed=add_reversed,
        max_triplets_per_premise=max_triplets_per_premise,
        label_map=label_map,
        columns=columns,
        split=split,
        on_error=on_error,
        show_progress=show_progress,
        cache_dir=cache_dir,
    )
    return builder.build(sources)


# --------------------------------------------------------------------------------------------------- internals


def _check_label_map(label_map: Mapping[str | int, str | int] | None) -> dict[str | int, int]:
    if label_map is None:
        return {}
    if not isinstance(label_map, Mapping):
        raise ValueError(f"label_map must be a mapping of label value -> meaning, got {type(label_map).__name__}.")
    checked: dict[str | int, int] = {}
    for raw, meaning in label_map.items():
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ValueError(f"label_map keys must be strings or integers, got {raw!r}.")
        if isinstance(meaning, str) and meaning.strip().lower() in _LABEL_TARGETS:
            code = _LABEL_TARGETS[meaning.strip().lower()]
        elif isinstance(meaning, int) and not isinstance(meaning, bool) and meaning in (0, 1, 2, -1):
            code = meaning
        else:
            raise ValueError(
                f"label_map[{raw!r}] = {meaning!r}: expected 'entailment', 'neutral', 'contradiction', "
                "'no_consensus', or 0, 1, 2, -1."
            )
        checked[raw.strip().lower() if isinstance(raw, str) else raw] = code
    return checked


def _empty_message(report: BuildReport) -> str:
    reasons = ", ".join(f"{r} {n:,}" for r, n in report.skipped.items() if n) or "none"
    if report.rows_read == 0:
        cause = "the sources hold no rows"
    else:
        cause = f"every row was filtered out (skipped by reason: {reasons})"
    return (
        f"build_nli produced no {report.output} from {', '.join(report.sources)}: read {report.rows_read:,} rows, "
        f"{cause}. Pairs need entailment rows; triplets need a premise with both an entailment and a contradiction."
    )


def _blank(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where a text is empty or whitespace only."""
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0).to_numpy(zero_copy_only=False)


def _keys2(first: list[str], second: list[str]) -> list[bytes]:
    """128-bit BLAKE2b digests of text pairs: exact-duplicate detection without keeping the texts."""
    blake = hashlib.blake2b
    # 0xff never occurs in UTF-8, so the separator keeps ("a", "bc") and ("ab", "c") apart.
    return [
        blake(a.encode() + b"\xff" + b.encode(), digest_size=16).digest() for a, b in zip(first, second, strict=True)
    ]


def _keys3(first: list[str], second: list[str], third: list[str]) -> list[bytes]:
    blake = hashlib.blake2b
    return [
        blake(a.encode() + b"\xff" + b.encode() + b"\xff" + c.encode(), digest_size=16).digest()
        for a, b, c in zip(first, second, third, strict=True)
    ]


class _DigestSet:
    """An exact set of 128-bit digests in sorted numpy runs: 16 bytes a key, where a Python set takes about 80.

    Keys are split into two 64-bit halves; runs are sorted by the first half (the second is compared on a hit)
    and merged when a run is no longer than twice the next, so there are O(log n) runs to search.
    """

    def __init__(self) -> None:
        self._hi: list[np.ndarray] = []
        self._lo: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._hi)

    @staticmethod
    def _halves(digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.frombuffer(b"".join(digests), dtype=np.uint64).reshape(len(digests), 2)
        return pairs[:, 0], pairs[:, 1]

    def _contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hi), dtype=bool)
        for run_hi, run_lo in zip(self._hi, self._lo, strict=True):
            left = np.searchsorted(run_hi, hi, "left")
            right = np.searchsorted(run_hi, hi, "right")
            hits = np.flatnonzero(right > left)
            if hits.size == 0:
                continue
            single = right[hits] - left[hits] == 1
            one = hits[single]
            found[one[run_lo[left[one]] == lo[one]]] = True
            for i in hits[~single]:  # keys sharing their first 64 bits: compare the second half of each
                if (run_lo[left[i] : right[i]] == lo[i]).any():
                    found[i] = True
        return found

    def contains(self, digests: list[bytes]) -> np.ndarray:
        """True for each digest in the set."""
        if not digests:
            return np.zeros(0, dtype=bool)
        return self._contains(*self._halves(digests))

    def add_new(self, digests: list[bytes]) -> np.ndarray:
        """Add the digests; True for each one neither in the set before nor earlier in ``digests``."""
        n = len(digests)
        if n == 0:
            return np.zeros(0, dtype=bool)
        hi, lo = self._halves(digests)
        new = ~self._contains(hi, lo)
        order = np.lexsort((lo, hi))  # stable: equal keys stay in input order, the first one leading
        repeat = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
        new[order[1:][repeat]] = False
        fresh = order[new[order]]
        if fresh.size:
            self._hi.append(hi[fresh])
            self._lo.append(lo[fresh])
            while len(self._hi) > 1 and len(self._hi[-2]) <= 2 * len(self._hi[-1]):
                merged_hi = np.concatenate(self._hi[-2:])
                merged_lo = np.concatenate(self._lo[-2:])
                by_hi = np.argsort(merged_hi, kind="stable")
                self._hi[-2:] = [merged_hi[by_hi]]
                self._lo[-2:] = [merged_lo[by_hi]]
        return new


def _pair_order(e: int, c: int, k: int) -> tuple[int, int]:
    """The ``k``-th (entailment, contradiction) index pair of ``e * c``.

    ``k -> (k mod e, (k + k // lcm(e, c)) mod c)`` is a bijection onto the grid, and its first ``max(e, c)``
    values use every row and every column: a cap of ``max(e, c)`` triplets leaves no hypothesis unused.
    """
    return k % e, (k + k // math.lcm(e, c)) % c


class _Run:
    """The state of one build: report, duplicate index, triplet groups and the output writer."""

    def __init__(self, builder: NLIBuilder, report: BuildReport) -> None:
        self.builder = builder
        self.report = report
        self.columns = _OUTPUT_COLUMNS[builder.output]
        self.schema = pa.schema([(c, pa.string()) for c in self.columns])
        cache_dir = builder.cache_dir
        if cache_dir is None:
            from datasets.fingerprint import get_temporary_cache_files_directory

            cache_dir = get_temporary_cache_files_directory()
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / f"nli-{builder.output}-{uuid.uuid4().hex}.arrow"
        features = datasets.Features({c: datasets.Value("string") for c in self.columns})
        # Few, large record batches: opening the memory-mapped result then touches few pages.
        self.writer = datasets.arrow_writer.ArrowWriter(
            features=features, path=str(self.path), writer_batch_size=_RECORD_BATCH_ROWS
        )
        self.closed = False
        self.seen = _DigestSet()
        self.seen_triplets = _DigestSet()
        # Triplet candidates (premise, hypothesis, is_contradiction) wait in a temporary Arrow stream.
        self.spill_path = self.path.with_suffix(".candidates.arrows")
        self.spill_writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.premise_hashes: list[np.ndarray] = []
        self.label_cache: dict[Any, int | None] = {}

    # --------------------------------------------------------------------------------------------- labels

    def _code(self, value: Any) -> int | None:
        label_map = self.builder.label_map
        if isinstance(value, str):
            key = value.strip().lower()
            if key in label_map:
                return label_map[key]
            return _DEFAULT_LABELS.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if value in label_map:
                return label_map[value]
            return value if value in (0, 1, 2, -1) else None
        return None

    def _codes(self, column: pa.ChunkedArray, batch: Batch, source: Source) -> np.ndarray:
        """Label codes (0, 1, 2, -1) of a batch; an unknown value raises naming it and its line or row."""
        encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        values = encoded.dictionary.to_pylist()
        lut = np.empty(len(values), dtype=np.int8)
        for i, value in enumerate(values):
            if value not in self.label_cache:
                self.label_cache[value] = self._code(value)
            code = self.label_cache[value]
            lut[i] = _UNKNOWN if code is None else code
        codes = lut[encoded.indices.to_numpy(zero_copy_only=False)]
        unknown = np.flatnonzero(codes == _UNKNOWN)
        if unknown.size:
            first = int(unknown[0])
            value = values[encoded.indices[first].as_py()]
            location = int(batch.locations[first])
            column_name = source.layout.mapping["label"]
            raise NLIFormatError(
                f"{source.where(location)}: unknown label {value!r} in column {column_name!r}. Expected "
                "entailment/neutral/contradiction in any case, 0/1/2, or '-'/-1 for no consensus; pass "
                "label_map={...} to map other values.",
                source.name,
                location,
            )
        return codes

    # --------------------------------------------------------------------------------------------- batches

    def consume(self, batch: Batch, source: Source) -> None:
        report = self.report
        table = batch.table
        report.rows_read += table.num_rows + batch.malformed
        report.skipped["malformed"] += batch.malformed
        if table.num_rows == 0:
            return
        kind = source.layout.kind
        if kind == "triplet" and self.builder.output == "triplets":
            self._passthrough_triplets(table)
            return
        if kind == "nli":
            codes = self._codes(table.column("label"), batch, source)
            first, second = table.column("premise"), table.column("hypothesis")
        else:
            codes = np.zeros(table.num_rows, dtype=np.int8)
            first, second = table.column("anchor"), table.column("positive")
        skipped = report.skipped
        skipped["no_consensus"] += int(np.count_nonzero(codes == NO_CONSENSUS))
        skipped["neutral"] += int(np.count_nonzero(codes == NEUTRAL))
        if self.builder.output == "pairs":
            skipped["contradiction"] += int(np.count_nonzero(codes == CONTRADICTION))
            wanted = codes == ENTAILMENT
        else:
            wanted = (codes == ENTAILMENT) | (codes == CONTRADICTION)
        blank = _blank(first) | _blank(second)
        skipped["empty_text"] += int(np.count_nonzero(wanted & blank))
        candidates = pa.array(wanted & ~blank)
        first, second = first.filter(candidates), second.filter(candidates)
        if self.builder.output == "pairs":
            self._pairs(first, second)
        else:
            self._spill(first, second, codes[wanted & ~blank])

    def _pairs(self, anchors: pa.ChunkedArray, positives: pa.ChunkedArray) -> None:
        report = self.report
        keep = self.seen.add_new(_keys2(anchors.to_pylist(), positives.to_pylist()))
        kept = int(keep.sum())
        report.skipped["duplicate"] += len(keep) - kept
        report.rows_kept += kept
        mask = pa.array(keep)
        anchors, positives = anchors.filter(mask), positives.filter(mask)
        self._write([anchors, positives])
        if self.builder.add_reversed:
            back = self.seen.add_new(_keys2(positives.to_pylist(), anchors.to_pylist()))
            added = int(back.sum())
            report.reversed_added += added
            report.reversed_duplicates += kept - added
            mask = pa.array(back)
            self._write([positives.filter(mask), anchors.filter(mask)])

    def _spill(self, premises: pa.ChunkedArray, hypotheses: pa.ChunkedArray, codes: np.ndarray) -> None:
        """Triplet candidates go to a temporary Arrow stream; only a hash of each premise stays in memory."""
        if self.spill_writer is None:
            self.spill_writer = pa.ipc.new_stream(str(self.spill_path), _SPILL_SCHEMA)
        contradiction = pa.array(codes == CONTRADICTION)
        table = pa.Table.from_arrays(
            [premises.cast(pa.string()), hypotheses.cast(pa.string()), contradiction], schema=_SPILL_SCHEMA
        )
        self.spill_writer.write_table(table)
        # Python's str hash: a collision only keeps a premise's group open longer, never merges two premises.
        self.premise_hashes.append(np.fromiter(map(hash, premises.to_pylist()), dtype=np.int64, count=len(premises)))

    def _passthrough_triplets(self, table: pa.Table) -> None:
        report = self.report
        columns = [table.column(c) for c in ("anchor", "positive", "negative")]
        blank = _blank(columns[0]) | _blank(columns[1]) | _blank(columns[2])
        report.skipped["empty_text"] += int(np.count_nonzero(blank))
        mask = pa.array(~blank)
        columns = [c.filter(mask) for c in columns]
        keep = self.seen_triplets.add_new(_keys3(*(c.to_pylist() for c in columns)))
        kept = int(keep.sum())
        report.skipped["duplicate"] += len(keep) - kept
        report.rows_kept += kept
        mask = pa.array(keep)
        self._write([c.filter(mask) for c in columns])

    def finish(self) -> None:
        """Group the spilled triplet candidates by premise and emit each group after its premise's last row.

        The spill is read back in order, one batch at a time; a group is emitted and freed at the last row of its
        premise, so memory holds only the premises still open (few when a corpus keeps a premise's rows
        together, as SNLI and MultiNLI do).
        """
        if self.spill_writer is None:
            return
        self.spill_writer.close()
        self.spill_writer = None
        hashes = np.concatenate(self.premise_hashes)
        self.premise_hashes = []
        # The last row of each premise hash: first occurrences in the reversed array.
        _, from_end = np.unique(hashes[::-1], return_index=True)
        is_last = np.zeros(len(hashes), dtype=bool)
        is_last[len(hashes) - 1 - from_end] = True
        del hashes, from_end
        groups: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
        out: tuple[list[str], list[str], list[str]] = ([], [], [])
        duplicates = 0
        row = 0
        with pa.OSFile(str(self.spill_path), "rb") as spill, pa.ipc.open_stream(spill) as reader:
            for batch in reader:
                premises = batch.column(0).to_pylist()
                hypotheses = batch.column(1).to_pylist()
                contradictions = batch.column(2).to_pylist()
                for premise, hypothesis, contradiction, last in zip(
                    premises, hypotheses, contradictions, is_last[row : row + len(premises)].tolist(), strict=True
                ):
                    group = groups.get(premise)
                    if group is None:
                        group = groups[premise] = ({}, {})
                    side = group[1] if contradiction else group[0]
                    if hypothesis in side:
                        duplicates += 1
                    else:
                        side[hypothesis] = None
                    if last:
                        self._emit(premise, *groups.pop(premise), out)
                row += len(premises)
                if len(out[0]) >= _WRITE_ROWS:
                    self._write([pa.array(col, pa.string()) for col in out])
                    out = ([], [], [])
        for premise, (ents, cons) in groups.items():  # premises whose hash collided with a later premise's
            self._emit(premise, ents, cons, out)
        self._write([pa.array(col, pa.string()) for col in out])
        self.report.skipped["duplicate"] += duplicates
        self.spill_path.unlink(missing_ok=True)

    def _emit(
        self,
        premise: str,
        ent_set: dict[str, None],
        con_set: dict[str, None],
        out: tuple[list[str], list[str], list[str]],
    ) -> None:
        """Append a premise's triplets to ``out``; count its rows as kept or skipped (no partner, cap, duplicate)."""
        report, cap = self.report, self.builder.max_triplets_per_premise
        skipped = report.skipped
        ents, cons = list(ent_set), list(con_set)
        e, c = len(ents), len(cons)
        if e == 0 or c == 0:
            skipped["entailment_without_partner"] += e
            skipped["contradiction_without_partner"] += c
            return
        passthrough = self.seen_triplets if len(self.seen_triplets) else None
        used_e, used_c = [False] * e, [False] * c
        dup_e, dup_c = [False] * e, [False] * c
        emitted, capped = 0, False
        for k in range(e * c):
            if cap is not None and emitted >= cap:
                capped = True
                break
            i, j = _pair_order(e, c, k)
            positive, negative = ents[i], cons[j]
            if positive == negative:  # the same hypothesis labelled both ways: no usable triplet
                continue
            if passthrough and passthrough.contains(_keys3([premise], [positive], [negative]))[0]:
                dup_e[i] = dup_c[j] = True
                continue
            out[0].append(premise)
            out[1].append(positive)
            out[2].append(negative)
            used_e[i] = used_c[j] = True
            emitted += 1
        for used, dup, partner in ((used_e, dup_e, "entailment"), (used_c, dup_c, "contradiction")):
            for was_used, was_dup in zip(used, dup, strict=True):
                if was_used:
                    report.rows_kept += 1
                elif capped:
                    skipped["over_cap"] += 1
                elif was_dup:
                    skipped["duplicate"] += 1
                else:
                    skipped[f"{partner}_without_partner"] += 1

    # ---------------------------------------------------------------------------------------------- output

    def _write(self, arrays: list[pa.Array | pa.ChunkedArray]) -> None:
        if len(arrays[0]) == 0:
            return
        table = pa.Table.from_arrays(arrays, names=list(self.columns)).cast(self.schema)
        self.writer.write_table(table)
        self.report.rows_out += table.num_rows

    def close(self) -> datasets.Dataset:
        self.writer.finalize()
        self.closed = True
        return datasets.Dataset.from_file(str(self.path))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
        if self.spill_writer is not None:
            self.spill_writer.close()
            self.spill_writer = None
        self.path.unlink(missing_ok=True)
        self.spill_path.unlink(missing_ok=True)


__all__ = [
    "SKIP_REASONS",
    "BuildReport",
    "EmptyBuildError",
    "NLIBuilder",
    "NLIFormatError",
    "build_nli",
]
