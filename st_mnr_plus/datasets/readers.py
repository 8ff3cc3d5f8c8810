"""Streaming readers that turn NLI sources into Arrow batches with one canonical layout.

Every source (a JSON-lines file, a tab-separated release file, a CSV/TSV file, any of them ``.gz``-compressed,
or a ``datasets.Dataset`` / ``IterableDataset``) is read in bounded batches. Each batch carries the layout's
columns under canonical names (``premise, hypothesis, label`` for NLI sources; ``anchor, positive[, negative]``
for sources that are already pairs or triplets) and, for every row, its location: the 1-based line number in a
file, or the 0-based row index in a dataset. Errors name that location.

JSON lines are parsed with pyarrow's JSON reader, a few MB at a time; a block that it cannot parse cleanly
(malformed JSON, a missing field, a wrong type, blank lines, bytes that are not UTF-8) is re-read line by line
with the standard library, which finds the exact line and says what is wrong with it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from st_mnr_plus.common.errors import ConfigurationError, SourceNotFoundError

OnError = Literal["raise", "skip"]
LayoutKind = Literal["nli", "pair", "triplet"]

NLI_COLUMNS: tuple[str, ...] = ("premise", "hypothesis", "label")
PAIR_COLUMNS: tuple[str, ...] = ("anchor", "positive")
TRIPLET_COLUMNS: tuple[str, ...] = ("anchor", "positive", "negative")

#: The layouts recognised from column names, most specific first: (description, canonical -> source column).
KNOWN_LAYOUTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("SNLI/MultiNLI 1.0 release", {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}),
    (
        "hub NLI (stanfordnlp/snli, nyu-mll/multi_nli, glue)",
        {"premise": "premise", "hypothesis": "hypothesis", "label": "label"},
    ),
    ("SICK", {"premise": "sentence_A", "hypothesis": "sentence_B", "label": "entailment_judgment"}),
    ("all-nli triplet", {"anchor": "anchor", "positive": "positive", "negative": "negative"}),
    ("all-nli pair", {"anchor": "anchor", "positive": "positive"}),
)

JSON_SUFFIXES = (".jsonl", ".json")
TAB_SUFFIXES = (".txt", ".tsv")
CSV_SUFFIXES = (".csv",)
FILE_SUFFIXES = JSON_SUFFIXES + TAB_SUFFIXES + CSV_SUFFIXES

_BOM = b"\xef\xbb\xbf"
# Stands for a CSV record the csv module rejected (on_error="skip"): a field no real line can hold.
_CSV_ERROR = "\x00<malformed CSV record>"
_DEFAULT_CHUNK_BYTES = 8 << 20
_DEFAULT_BATCH_ROWS = 65_536


class NLIFormatError(ConfigurationError):
    """A source does not have the expected format. The message names the file and line (or dataset and row).

    Attributes:
        source: The file path or dataset description.
        location: The 1-based line number (files) or 0-based row index (datasets); ``None`` when the problem
            concerns the whole source (its columns, for example).
    """

    def __init__(self, message: str, source: str, location: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.location = location


@dataclass(frozen=True)
class Layout:
    """Which source columns hold which canonical column.

    Attributes:
        kind: ``"nli"`` (premise, hypothesis, label), ``"pair"`` (anchor, positive) or ``"triplet"``.
        mapping: Canonical column -> source column name, or 0-based field position for files without a header.
        description: A human name for the layout, used in messages.
    """

    kind: LayoutKind
    mapping: Mapping[str, str | int]
    description: str

    @property
    def canonical(self) -> tuple[str, ...]:
        return {"nli": NLI_COLUMNS, "pair": PAIR_COLUMNS, "triplet": TRIPLET_COLUMNS}[self.kind]

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.canonical if c != "label")

    @property
    def positional(self) -> bool:
        return all(isinstance(v, int) for v in self.mapping.values())


def layout_kind(columns: Iterable[str], argument: str = "columns") -> LayoutKind:
    """Return the layout kind of a user column mapping's keys, or raise naming ``argument``."""
    keys = set(columns)
    for kind, canonical in (("nli", NLI_COLUMNS), ("triplet", TRIPLET_COLUMNS), ("pair", PAIR_COLUMNS)):
        if keys == set(canonical):
            return kind  # type: ignore[return-value]
    raise ConfigurationError(
        f"{argument} must map exactly the keys {list(NLI_COLUMNS)}, {list(TRIPLET_COLUMNS)} or {list(PAIR_COLUMNS)} "
        f"to source column names (or 0-based positions for files without a header); got keys {sorted(keys)}."
    )


def resolve_layout(found: list[str], columns: Mapping[str, str | int] | None, source: str) -> Layout:
    """Pick the layout of a source from its column names: the user mapping if given, else a known layout.

    Raises:
        NLIFormatError: The user mapping names a column the source lacks, or (without a mapping) no known layout
            fits; the message lists the columns found and the ones expected.
    """
    if columns is not None:
        # A mapping the user gave is the layout: a column it names that the source lacks is an error, never a
        # reason to fall back to a recognised layout the user did not ask for.
        missing = [f"{role}={name!r}" for role, name in columns.items() if isinstance(name, str) and name not in found]
        if missing:
            raise NLIFormatError(
                f"{source}: columns= names {', '.join(missing)}, which the source does not have. Found columns "
                f"{found}.",
                source,
            )
        return Layout(layout_kind(columns), dict(columns), "user column mapping")
    for description, mapping in KNOWN_LAYOUTS:
        if all(name in found for name in mapping.values()):
            return Layout(layout_kind(mapping), mapping, description)
    expected = "; ".join(f"{', '.join(m.values())} ({d})" for d, m in KNOWN_LAYOUTS)
    raise NLIFormatError(
        f"{source}: missing columns. Found columns {found}; expected one of: {expected}. "
        "Pass columns={'premise': ..., 'hypothesis': ..., 'label': ...} to map other names.",
        source,
    )


@dataclass
class Batch:
    """A bounded slice of one source in canonical columns.

    Attributes:
        table: The layout's canonical columns (texts as strings; ``label`` as read, strings or integers).
        locations: Per row: the 1-based line number (files) or 0-based row index (datasets), int64.
        malformed: Rows of this slice skipped as malformed (only with ``on_error="skip"``).
    """

    table: pa.Table
    locations: np.ndarray
    malformed: int = 0


@dataclass
class Source:
    """One input, ready to be streamed.

    Attributes:
        name: How messages name it: the file path, or a description of the dataset.
        unit: ``"line"`` for files, ``"row"`` for datasets.
        layout: Its column layout.
        read: The reader: ``read(source, advance)`` yields the batches and calls ``advance(n)`` for progress.
        on_error: ``"raise"`` on a malformed line or row, or ``"skip"`` it and count it in the batch.
        progress_total: The total for a progress bar (bytes for files, rows for datasets), if known.
        progress_unit: The unit of that total.
    """

    name: str
    unit: Literal["line", "row"]
    layout: Layout
    read: Callable[[Source, Callable[[int], None]], Iterator[Batch]]
    on_error: OnError = "raise"
    progress_total: int | None = None
    progress_unit: str = "B"

    def batches(self, advance: Callable[[int], None] | None = None) -> Iterator[Batch]:
        """Stream the source's batches; ``advance(n)`` is told of progress (bytes or rows)."""
        return self.read(self, advance or (lambda n: None))

    def where(self, location: int) -> str:
        """``"<file>, line 17"`` or ``"<dataset>, row 16"``."""
        return f"{self.name}, {self.unit} {location}"


def _fail(source: Source, location: int, problem: str) -> NLIFormatError:
    return NLIFormatError(f"{source.where(location)}: {problem}", source.name, location)


# --------------------------------------------------------------------------------------------------- files


def _split_compression(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), gz


class _ByteCounter:
    """Reports bytes read from the underlying (compressed) file to a progress callback."""

    def __init__(self, raw: io.BufferedReader, advance: Callable[[int], None]) -> None:
        self.raw = raw
        self.advance = advance
        self.seen = 0

    def tick(self) -> None:
        pos = self.raw.tell()
        if pos > self.seen:
            self.advance(pos - self.seen)
            self.seen = pos


@contextlib.contextmanager
def _open_binary(path: Path, gz: bool) -> Iterator[tuple[io.BufferedIOBase, io.BufferedReader]]:
    """The decompressed stream and the raw file under it (whose position measures progress)."""
    with open(path, "rb") as raw:
        if gz:
            # GzipFile.close() leaves the file object it was given open: the outer ``with`` closes it.
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, raw
        else:
            yield raw, raw


def file_source(
    path: str | os.PathLike[str],
    columns: Mapping[str, str | int] | None,
    on_error: OnError,
    *,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    batch_rows: int = _DEFAULT_BATCH_ROWS,
) -> Source:
    """Open a local NLI file as a :class:`Source`, reading only its first line to find the layout.

    Raises:
        FileNotFoundError: The path does not exist (the message names it).
        NLIFormatError: Unknown suffix, missing columns, or a first line that cannot be read.
    """
    path = Path(path).expanduser()
    name = str(path)
    if not path.is_file():
        raise SourceNotFoundError(
            f"NLI source file not found: {name}" + (" (it is a directory)" if path.exists() else "")
        )
    suffix, gz = _split_compression(path)
    size = path.stat().st_size
    if suffix in JSON_SUFFIXES:
        first = _first_nonblank_line(path, gz)
        found: list[str] = []
        label_type = pa.string()
        if first is not None:
            line_no, text = first
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                if on_error == "raise":
                    raise NLIFormatError(
                        f"{name}, line {line_no}: malformed JSON: {exc.msg} at column {exc.colno}", name, line_no
                    ) from None
                obj = None
            if isinstance(obj, dict):
                found = list(obj)
        layout = resolve_layout(found, columns, name)
        if layout.positional:
            raise ConfigurationError(
                f"columns: positions (integers) only apply to CSV/TSV files without a header, not to {name}."
            )
        if first is not None and layout.kind == "nli" and isinstance(obj, dict):
            value = obj.get(layout.mapping["label"])
            if isinstance(value, int) and not isinstance(value, bool):
                label_type = pa.int64()
        read = functools.partial(_iter_jsonl, path=path, gz=gz, label_type=label_type, chunk_bytes=chunk_bytes)
        return Source(name, "line", layout, read, on_error, size, "B")
    if suffix in TAB_SUFFIXES or suffix in CSV_SUFFIXES:
        delimiter = "," if suffix in CSV_SUFFIXES else "\t"
        quoting = suffix in CSV_SUFFIXES
        if columns is not None and all(isinstance(v, int) for v in columns.values()):
            layout = Layout(layout_kind(columns), dict(columns), "user column positions")
        else:
            first = _first_nonblank_line(path, gz)
            header = [] if first is None else _split_fields(first[1], delimiter, quoting)
            layout = resolve_layout(header, columns, name)
        read = functools.partial(
            _iter_delimited, path=path, gz=gz, delimiter=delimiter, quoting=quoting, batch_rows=batch_rows
        )
        return Source(name, "line", layout, read, on_error, size, "B")
    raise NLIFormatError(
        f"{name}: unsupported file type {suffix or '(no suffix)'!r}; expected one of {', '.join(FILE_SUFFIXES)}, "
        "optionally followed by .gz.",
        name,
    )


def _first_nonblank_line(path: Path, gz: bool) -> tuple[int, str] | None:
    with _open_binary(path, gz) as (stream, _):
        for line_no, raw in enumerate(stream, start=1):
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.strip():
                # Only the column names are taken from this line; the reader checks the values' encoding.
                return line_no, raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
    return None


def _split_fields(text: str, delimiter: str, quoting: bool) -> list[str]:
    if quoting:
        return next(csv.reader([text], delimiter=delimiter), [])
    return text.split(delimiter)


def _iter_jsonl(
    src: Source, advance: Callable[[int], None], *, path: Path, gz: bool, label_type: pa.DataType, chunk_bytes: int
) -> Iterator[Batch]:
    mapping = src.layout.mapping
    fields = [(str(mapping[c]), label_type if c == "label" else pa.string()) for c in src.layout.canonical]
    options = pa_json.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
    read_options = pa_json.ReadOptions(use_threads=True, block_size=1 << 20)
    with _open_binary(path, gz) as (stream, raw):
        counter = _ByteCounter(raw, advance)
        # One reusable buffer: fresh multi-MB bytes objects per chunk fragment the heap and grow the peak RSS
        # with the file, which is what streaming must avoid.
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        filled = 0  # bytes carried over from the previous chunk (a partial line)
        line_no = 1  # the number of the first line of the next block
        first = True
        while True:
            if filled == len(buf):  # one line longer than the buffer: grow it
                view.release()
                buf = buf + bytes(len(buf))
                view = memoryview(buf)
            n_read = stream.readinto(view[filled:])
            if first:
                first = False
                if buf.startswith(_BOM):
                    buf[: n_read - len(_BOM)] = buf[len(_BOM) : n_read]
                    n_read -= len(_BOM)
            end = filled + n_read
            eof = n_read == 0
            if eof:
                if end == 0:
                    break
                if buf[end - 1] != 0x0A:  # a last line without a newline
                    if end == len(buf):
                        view.release()
                        buf = buf + b"\n"
                        view = memoryview(buf)
                    else:
                        buf[end] = 0x0A
                    end += 1
                cut = end
            else:
                cut = buf.rfind(b"\n", 0, end) + 1
                if cut == 0:
                    filled = end
                    continue
            n_lines = buf.count(b"\n", 0, cut)
            batch = _parse_json_fast(src, view[:cut], n_lines, line_no, options, read_options)
            if batch is None:
                batch = _parse_json_slow(src, bytes(view[:cut]), line_no, label_type)
            counter.tick()
            yield batch
            line_no += n_lines
            if eof:
                break
            filled = end - cut
            buf[:filled] = bytes(view[cut:end])  # a copy: the two ranges may overlap
        view.release()


def _parse_json_fast(
    src: Source,
    block: memoryview,
    n_lines: int,
    line_no: int,
    options: pa_json.ParseOptions,
    read_options: pa_json.ReadOptions,
) -> Batch | None:
    """pyarrow's reader on a block of whole lines; ``None`` unless every line is one clean object.

    The parser copies what it reads into new arrays, so the caller may reuse ``block``'s memory afterwards.
    """
    try:
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(block)), read_options=read_options, parse_options=options
        )
        # Only the fields read are checked for UTF-8: the others are never decoded (the slow path agrees).
        table.validate(full=True)
    except pa.ArrowInvalid:
        return None
    # A row count other than the line count means blank lines or several objects on a line: the slow path
    # tells those apart. Nulls are missing fields or JSON nulls: the slow path names the line.
    if table.num_rows != n_lines or any(column.null_count for column in table.columns):
        return None
    table = table.rename_columns(list(src.layout.canonical))
    return Batch(table, np.arange(line_no, line_no + n_lines, dtype=np.int64))


def _parse_json_slow(src: Source, block: bytes, line_no: int, label_type: pa.DataType) -> Batch:
    """Line by line with the standard library: exact line numbers and messages for every problem."""
    layout = src.layout
    names = [(c, str(layout.mapping[c])) for c in layout.canonical]
    values: dict[str, list[Any]] = {c: [] for c in layout.canonical}
    locations: list[int] = []
    malformed = 0
    for offset, raw in enumerate(block.split(b"\n")[:-1]):
        where = line_no + offset
        problem = None
        if not raw.strip():
            continue
        # Bytes that are not UTF-8 become lone surrogates: an error only in a field that is used (as in the
        # fast path, which checks only the fields it reads).
        text = raw.decode("utf-8", "surrogateescape")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"malformed JSON: {exc.msg} at column {exc.colno}"
        else:
            problem = _check_record(obj, names)
        if problem is not None:
            if src.on_error == "raise":
                raise _fail(src, where, problem)
            malformed += 1
            continue
        for canonical, column in names:
            values[canonical].append(obj[column])
        locations.append(where)
    return Batch(_to_table(values, layout), np.asarray(locations, dtype=np.int64), malformed)


def _check_record(obj: Any, names: list[tuple[str, str]]) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for canonical, column in names:
        if column not in obj:
            return f"missing field {column!r} (fields present: {list(obj)})"
        value = obj[column]
        if canonical == "label":
            if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
                return f"field {column!r} must be a string or an integer label, got {value!r}"
        elif not isinstance(value, str):
            return f"field {column!r} must be a string, got {type(value).__name__} {value!r}"
        if isinstance(value, str):
            problem = _utf8_problem(value, column)
            if problem is not None:
                return problem
    return None


def _utf8_problem(value: str, column: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        shown = (
            f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"code point U+{ord(char):04X}"
        )
        return f"not valid UTF-8: {shown} in field {column!r} at character {exc.start + 1}"
    return None


def _to_table(values: dict[str, list[Any]], layout: Layout) -> pa.Table:
    arrays = {}
    for canonical in layout.canonical:
        column = values[canonical]
        if canonical == "label":
            # Mixed integer and string labels become strings: "0" and 0 mean the same label.
            if all(isinstance(v, int) for v in column):
                arrays[canonical] = pa.array(column, pa.int64())
            else:
                arrays[canonical] = pa.array([str(v) for v in column], pa.string())
        else:
            arrays[canonical] = pa.array(column, pa.string())
    return pa.table(arrays)


def _iter_delimited(
    src: Source,
    advance: Callable[[int], None],
    *,
    path: Path,
    gz: bool,
    delimiter: str,
    quoting: bool,
    batch_rows: int,
) -> Iterator[Batch]:
    layout = src.layout
    malformed = 0

    def decoded_lines(stream: io.BufferedIOBase) -> Iterator[tuple[int, str | None]]:
        nonlocal malformed
        for line_no, data in enumerate(stream, start=1):
            if line_no == 1 and data.startswith(_BOM):
                data = data[len(_BOM) :]
            try:
                yield line_no, data.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = f"not valid UTF-8 (byte {data[exc.start : exc.start + 1]!r} at column {exc.start + 1})"
                if src.on_error == "raise":
                    raise _fail(src, line_no, problem) from None
                malformed += 1
                yield line_no, None

    with _open_binary(path, gz) as (stream, raw):
        counter = _ByteCounter(raw, advance)
        lines = decoded_lines(stream)
        if quoting:
            records = _csv_records(src, lines, delimiter)
        else:
            records = ((n, None if t is None else t.rstrip("\r\n").split(delimiter)) for n, t in lines)
        if layout.positional:
            positions = {c: int(layout.mapping[c]) for c in layout.canonical}
        else:
            header: list[str] | None = None
            for _line_no, fields in records:
                if fields is not None and any(f.strip() for f in fields):
                    header = fields
                    break
            if header is None:
                return
            positions = {c: header.index(str(layout.mapping[c])) for c in layout.canonical}
        needed = max(positions.values()) + 1
        values: dict[str, list[Any]] = {c: [] for c in layout.canonical}
        locations: list[int] = []
        for line_no, fields in records:
            if fields is None or not any(f.strip() for f in fields):
                continue  # a blank line, or a line already counted as malformed
            if fields == [_CSV_ERROR]:
                malformed += 1
                continue
            if len(fields) < needed:
                problem = (
                    f"{len(fields)} field(s), expected at least {needed} "
                    f"({', '.join(f'{c} in field {p + 1}' for c, p in positions.items())})"
                )
                if src.on_error == "raise":
                    raise _fail(src, line_no, problem)
                malformed += 1
                continue
            for canonical, position in positions.items():
                values[canonical].append(fields[position])
            locations.append(line_no)
            if len(locations) >= batch_rows:
                counter.tick()
                yield Batch(_to_table(values, layout), np.asarray(locations, dtype=np.int64), malformed)
                values = {c: [] for c in layout.canonical}
                locations = []
                malformed = 0
        counter.tick()
        if locations or malformed:
            yield Batch(_to_table(values, layout), np.asarray(locations, dtype=np.int64), malformed)


def _csv_records(
    src: Source, lines: Iterator[tuple[int, str | None]], delimiter: str
) -> Iterator[tuple[int, list[str] | None]]:
    """CSV records with the number of the line each starts on (a quoted field may span lines).

    A record the csv module rejects is raised, or with ``on_error="skip"`` yielded as ``None`` after counting
    it through ``src`` (the caller counts ``None`` records it did not already count: see ``_iter_delimited``).
    """
    current = 0

    def texts() -> Iterator[str]:
        nonlocal current
        for line_no, text in lines:
            current = line_no
            yield "\n" if text is None else text

    reader = csv.reader(texts(), delimiter=delimiter)
    while True:
        start = current + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if src.on_error == "raise":
                raise _fail(src, start, f"malformed CSV: {exc}") from None
            yield start, [_CSV_ERROR]
            continue
        yield start, fields


# ------------------------------------------------------------------------------------------------ datasets


def dataset_source(
    dataset: Any,
    name: str,
    columns: Mapping[str, str | int] | None,
    on_error: OnError,
    *,
    batch_rows: int = _DEFAULT_BATCH_ROWS,
) -> Source:
    """Wrap a ``datasets.Dataset`` or ``IterableDataset`` as a :class:`Source`, read in Arrow batches."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        found = list(dataset.column_names or [])
        if not found:
            first = next(iter(dataset), None)
            found = list(first) if first else []
        total = None
    else:
        found = list(dataset.column_names)
        total = len(dataset)
    layout = resolve_layout(found, columns, name)
    if layout.positional:
        raise ConfigurationError(
            f"columns: positions (integers) only apply to CSV/TSV files without a header, not to {name}."
        )
    read = functools.partial(_iter_dataset, dataset=dataset, batch_rows=batch_rows)
    return Source(name, "row", layout, read, on_error, total, "rows")


def _iter_dataset(src: Source, advance: Callable[[int], None], *, dataset: Any, batch_rows: int) -> Iterator[Batch]:
    import datasets

    layout = src.layout
    source_columns = [str(layout.mapping[c]) for c in layout.canonical]
    if isinstance(dataset, datasets.IterableDataset):
        tables: Iterable[pa.Table] = (
            pa.table({c: batch[c] for c in source_columns})
            for batch in dataset.select_columns(source_columns).iter(batch_size=batch_rows)
        )
    else:
        tables = dataset.select_columns(source_columns).with_format("arrow").iter(batch_size=batch_rows)
    start = 0
    for table in tables:
        table = table.select(source_columns).rename_columns(list(layout.canonical))
        locations = np.arange(start, start + table.num_rows, dtype=np.int64)
        start += table.num_rows
        advance(table.num_rows)
        yield _check_arrow_batch(src, table, locations)


def _check_arrow_batch(src: Source, table: pa.Table, locations: np.ndarray) -> Batch:
    """Column types and nulls of a batch that did not come through the line-by-line checks."""
    mapping = src.layout.mapping
    bad = np.zeros(table.num_rows, dtype=bool)
    for canonical in src.layout.canonical:
        column = table.column(canonical)
        kind = column.type
        if canonical == "label":
            ok = pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            expected = "integers or strings"
        else:
            ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
            expected = "strings"
        if not ok:
            raise NLIFormatError(
                f"{src.name}: column {mapping[canonical]!r} ({canonical}) holds {kind}, expected {expected}.",
                src.name,
            )
        if column.null_count:
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            if src.on_error == "raise":
                first = int(np.flatnonzero(nulls)[0])
                raise _fail(src, int(locations[first]), f"missing value (null) in column {mapping[canonical]!r}")
            bad |= nulls
    if bad.any():
        keep = ~bad
        table = table.filter(pa.array(keep))
        return Batch(table, locations[keep], int(bad.sum()))
    return Batch(table, locations)
