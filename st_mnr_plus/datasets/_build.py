"""One NLI build: filter and deduplicate the batches, group triplet candidates by premise, write the output.

:class:`BuildRun` consumes the readers' batches and counts every row in the report; :class:`TripletGroups` keeps
the triplet candidates in a temporary Arrow stream and emits each premise's triplets after its last row;
:class:`ArrowOutput` writes the output with pyarrow's IPC stream writer (the format ``datasets`` memory-maps) and
opens it with ``datasets.Dataset.from_file``.
"""

from __future__ import annotations

import math
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from st_mnr_plus.datasets._digest import DigestSet, keys2, keys3
from st_mnr_plus.datasets._labels import CONTRADICTION, ENTAILMENT, NEUTRAL, NO_CONSENSUS, LabelCoder
from st_mnr_plus.datasets.readers import Batch, Source
from st_mnr_plus.datasets.report import BuildReport

Output = Literal["pairs", "triplets"]

OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "pairs": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"),
}
_WRITE_ROWS = 65_536
_RECORD_BATCH_ROWS = 10_000
_SPILL_SCHEMA = pa.schema([("premise", pa.string()), ("hypothesis", pa.string()), ("contradiction", pa.bool_())])

_temporary: tempfile.TemporaryDirectory[str] | None = None
_temporary_lock = threading.Lock()


def temporary_directory() -> Path:
    """A directory for output files, made on first use and removed when the process ends."""
    global _temporary
    with _temporary_lock:
        if _temporary is None:
            _temporary = tempfile.TemporaryDirectory(prefix="st_mnr_plus-", ignore_cleanup_errors=True)
        return Path(_temporary.name)


def _blank(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where a text is empty or whitespace only."""
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0).to_numpy(zero_copy_only=False)


def pair_order(e: int, c: int, k: int) -> tuple[int, int]:
    """The ``k``-th (entailment, contradiction) index pair of ``e * c``.

    ``k -> (k mod e, (k + k // lcm(e, c)) mod c)`` is a bijection onto the grid, and its first ``max(e, c)``
    values use every row and every column: a cap of ``max(e, c)`` triplets leaves no hypothesis unused.
    """
    return k % e, (k + k // math.lcm(e, c)) % c


class ArrowOutput:
    """The output Arrow file: string columns, written in record batches of at most 10,000 rows.

    The schema carries the ``datasets`` features in its metadata (``Features.arrow_schema``), as ``datasets``
    writes its own files. Few, large record batches: opening the memory-mapped result then touches few pages.
    """

    def __init__(self, columns: tuple[str, ...], path: Path) -> None:
        self.columns = columns
        self.path = path
        self.schema = datasets.Features({c: datasets.Value("string") for c in columns}).arrow_schema
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._open = True

    def write(self, arrays: list[pa.Array | pa.ChunkedArray]) -> int:
        """Write one batch of columns; return its row count."""
        if len(arrays[0]) == 0:
            return 0
        table = pa.Table.from_arrays(arrays, names=list(self.columns)).cast(self.schema).combine_chunks()
        self._writer.write_table(table, max_chunksize=_RECORD_BATCH_ROWS)
        return table.num_rows

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()
            self._sink.close()

    def finish(self) -> datasets.Dataset:
        """Close the file and open it as a memory-mapped ``datasets.Dataset``."""
        self._close()
        return datasets.Dataset.from_file(str(self.path))

    def abort(self) -> None:
        """Close and delete the file."""
        self._close()
        self.path.unlink(missing_ok=True)


class TripletGroups:
    """Triplet candidates grouped by premise, spilled to a temporary Arrow stream until every row is read.

    Args:
        report: Where rows are counted as kept or skipped.
        output: Where the triplets go.
        passthrough: The digests of the ready triplets already written, so that a built triplet is not repeated.
        cap: ``max_triplets_per_premise``.
    """

    def __init__(self, report: BuildReport, output: ArrowOutput, passthrough: DigestSet, cap: int | None) -> None:
        self.report = report
        self.output = output
        self.passthrough = passthrough
        self.cap = cap
        # Candidates (premise, hypothesis, is_contradiction) wait in a temporary Arrow stream.
        self.path = output.path.with_suffix(".candidates.arrows")
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._premise_hashes: list[np.ndarray] = []

    def add(self, premises: pa.ChunkedArray, hypotheses: pa.ChunkedArray, codes: np.ndarray) -> None:
        """Spill candidates; only a hash of each premise stays in memory."""
        if self._writer is None:
            self._writer = pa.ipc.new_stream(str(self.path), _SPILL_SCHEMA)
        contradiction = pa.array(codes == CONTRADICTION)
        table = pa.Table.from_arrays(
            [premises.cast(pa.string()), hypotheses.cast(pa.string()), contradiction], schema=_SPILL_SCHEMA
        )
        self._writer.write_table(table)
        # Python's str hash: a collision only keeps a premise's group open longer, never merges two premises.
        self._premise_hashes.append(np.fromiter(map(hash, premises.to_pylist()), dtype=np.int64, count=len(premises)))

    def _last_rows(self) -> np.ndarray:
        """True at the last row of each premise hash."""
        hashes = np.concatenate(self._premise_hashes)
        self._premise_hashes = []
        # The first occurrences in the reversed array.
        _, from_end = np.unique(hashes[::-1], return_index=True)
        is_last = np.zeros(len(hashes), dtype=bool)
        is_last[len(hashes) - 1 - from_end] = True
        return is_last

    def finish(self) -> None:
        """Emit each premise's triplets after its last row.

        The spill is read back in order, one batch at a time; a group is emitted and freed at the last row of its
        premise, so memory holds only the premises still open (few when a corpus keeps a premise's rows
        together, as SNLI and MultiNLI do).
        """
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        is_last = self._last_rows()
        groups: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
        out: tuple[list[str], list[str], list[str]] = ([], [], [])
        duplicates = 0
        row = 0
        with pa.OSFile(str(self.path), "rb") as spill, pa.ipc.open_stream(spill) as reader:
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
                    self._write(out)
                    out = ([], [], [])
        for premise, (ents, cons) in groups.items():  # premises whose hash collided with a later premise's
            self._emit(premise, ents, cons, out)
        self._write(out)
        self.report.skipped["duplicate"] += duplicates
        self.path.unlink(missing_ok=True)

    def _write(self, out: tuple[list[str], list[str], list[str]]) -> None:
        self.report.rows_out += self.output.write([pa.array(col, pa.string()) for col in out])

    def _emit(
        self,
        premise: str,
        ent_set: dict[str, None],
        con_set: dict[str, None],
        out: tuple[list[str], list[str], list[str]],
    ) -> None:
        """Append a premise's triplets to ``out``; count its rows as kept or skipped (no partner, cap, duplicate)."""
        report, cap = self.report, self.cap
        skipped = report.skipped
        ents, cons = list(ent_set), list(con_set)
        e, c = len(ents), len(cons)
        if e == 0 or c == 0:
            skipped["entailment_without_partner"] += e
            skipped["contradiction_without_partner"] += c
            return
        passthrough = self.passthrough if len(self.passthrough) else None
        used_e, used_c = [False] * e, [False] * c
        dup_e, dup_c = [False] * e, [False] * c
        emitted, capped = 0, False
        for k in range(e * c):
            if cap is not None and emitted >= cap:
                capped = True
                break
            i, j = pair_order(e, c, k)
            positive, negative = ents[i], cons[j]
            if positive == negative:  # the same hypothesis labelled both ways: no usable triplet
                continue
            if passthrough and passthrough.contains(keys3([premise], [positive], [negative]))[0]:
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

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)


class BuildRun:
    """The state of one build: the report, the duplicate indexes, the triplet groups and the output.

    Args:
        output: ``"pairs"`` or ``"triplets"``.
        report: Filled in as the batches come.
        label_map: A checked label map (raw value -> code).
        add_reversed: Pairs only: also write each pair reversed, unless the output already holds it.
        max_triplets_per_premise: Triplets only: the cap per premise.
        cache_dir: The output file's directory (``None``: :func:`temporary_directory`).
    """

    def __init__(
        self,
        output: Output,
        report: BuildReport,
        *,
        label_map: Mapping[str | int, int],
        add_reversed: bool,
        max_triplets_per_premise: int | None,
        cache_dir: str | Path | None,
    ) -> None:
        self.kind = output
        self.report = report
        self.add_reversed = add_reversed
        self.labels = LabelCoder(label_map)
        directory = temporary_directory() if cache_dir is None else Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.output = ArrowOutput(OUTPUT_COLUMNS[output], directory / f"nli-{output}-{uuid.uuid4().hex}.arrow")
        self.seen = DigestSet()
        self.seen_triplets = DigestSet()
        self.triplets = TripletGroups(report, self.output, self.seen_triplets, max_triplets_per_premise)

    def consume(self, batch: Batch, source: Source) -> None:
        """Count a batch's rows, and write (pairs) or spill (triplet candidates) the ones kept."""
        report = self.report
        table = batch.table
        report.rows_read += table.num_rows + batch.malformed
        report.skipped["malformed"] += batch.malformed
        if table.num_rows == 0:
            return
        kind = source.layout.kind
        if kind == "triplet" and self.kind == "triplets":
            self._passthrough_triplets(table)
            return
        if kind == "nli":
            codes = self.labels.codes(table.column("label"), batch, source)
            first, second = table.column("premise"), table.column("hypothesis")
        else:
            codes = np.zeros(table.num_rows, dtype=np.int8)
            first, second = table.column("anchor"), table.column("positive")
        skipped = report.skipped
        skipped["no_consensus"] += int(np.count_nonzero(codes == NO_CONSENSUS))
        skipped["neutral"] += int(np.count_nonzero(codes == NEUTRAL))
        if self.kind == "pairs":
            skipped["contradiction"] += int(np.count_nonzero(codes == CONTRADICTION))
            wanted = codes == ENTAILMENT
        else:
            wanted = (codes == ENTAILMENT) | (codes == CONTRADICTION)
        blank = _blank(first) | _blank(second)
        skipped["empty_text"] += int(np.count_nonzero(wanted & blank))
        candidates = pa.array(wanted & ~blank)
        first, second = first.filter(candidates), second.filter(candidates)
        if self.kind == "pairs":
            self._pairs(first, second)
        else:
            self.triplets.add(first, second, codes[wanted & ~blank])

    def _pairs(self, anchors: pa.ChunkedArray, positives: pa.ChunkedArray) -> None:
        report = self.report
        keep = self.seen.add_new(keys2(anchors.to_pylist(), positives.to_pylist()))
        kept = int(keep.sum())
        report.skipped["duplicate"] += len(keep) - kept
        report.rows_kept += kept
        mask = pa.array(keep)
        anchors, positives = anchors.filter(mask), positives.filter(mask)
        report.rows_out += self.output.write([anchors, positives])
        if self.add_reversed:
            back = self.seen.add_new(keys2(positives.to_pylist(), anchors.to_pylist()))
            added = int(back.sum())
            report.reversed_added += added
            report.reversed_duplicates += kept - added
            mask = pa.array(back)
            report.rows_out += self.output.write([positives.filter(mask), anchors.filter(mask)])

    def _passthrough_triplets(self, table: pa.Table) -> None:
        report = self.report
        columns = [table.column(c) for c in ("anchor", "positive", "negative")]
        blank = _blank(columns[0]) | _blank(columns[1]) | _blank(columns[2])
        report.skipped["empty_text"] += int(np.count_nonzero(blank))
        mask = pa.array(~blank)
        columns = [c.filter(mask) for c in columns]
        keep = self.seen_triplets.add_new(keys3(*(c.to_pylist() for c in columns)))
        kept = int(keep.sum())
        report.skipped["duplicate"] += len(keep) - kept
        report.rows_kept += kept
        mask = pa.array(keep)
        report.rows_out += self.output.write([c.filter(mask) for c in columns])

    def finish(self) -> None:
        """Emit the triplets still waiting for their premise's last row."""
        self.triplets.finish()

    def close(self) -> datasets.Dataset:
        """Close the output and open it as a ``datasets.Dataset``."""
        return self.output.finish()

    def abort(self) -> None:
        """Close and delete every file of the build."""
        self.output.abort()
        self.triplets.abort()


__all__ = ["OUTPUT_COLUMNS", "ArrowOutput", "BuildRun", "Output", "TripletGroups", "pair_order", "temporary_directory"]
