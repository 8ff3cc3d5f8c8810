"""Array machinery behind :class:`st_mnr_plus.sampler.NoDuplicatesSampler`.

Two parts, both free of per-row Python work on the common path:

* :func:`encode_duplicates` turns the text columns of an Arrow table into a :class:`DuplicateIndex`: every text
  is hashed once to 64 bits straight from the Arrow buffers (:func:`text_hashes`, in blocks across threads),
  the hashes that can repeat (sharing a bucket in every round of bucketing) are sorted into codes, and only texts
  that occur in two or more rows are kept, as dense ``int32`` ids.
  Texts that occur in one row can never cause a duplicate, so they cost nothing later. Equal texts always get
  equal hashes, so no duplicate can slip through; a collision (about one in 10**7 for 2M texts) could only keep
  two different texts out of the same batch.
* :func:`place_rows` splits a set of rows into duplicate-free batches of a fixed shape: a random permutation is
  cut into batches, rows that collide with an earlier row of their batch are taken out with one sort, and a short
  randomised repair loop (proportional to the number of collisions, not to the data) puts them back, moving one
  row at a time (cuckoo-style kicks) when no batch with room takes them directly.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

logger = logging.getLogger(__name__)

# Random holes, then random slots, probed before a row counts one failed repair attempt.
_HOLE_PROBES = 8
_SLOT_PROBES = 16
# Texts hashed per block: a block's working arrays (1 MiB each) stay in cache; the fastest size measured.
_HASH_BLOCK = 1 << 17


@dataclass(frozen=True)
class DuplicateIndex:
    """Which rows share which texts, restricted to texts that occur in two or more rows.

    Attributes:
        num_rows: Number of rows of the dataset.
        row_texts: ``(num_rows, num_columns)`` ``int32`` ids of duplicated texts, ``-1`` where the text occurs in
            no other row (or repeats a text earlier in the same row).
        text_ptr: ``(num_texts + 1,)`` CSR offsets into ``text_rows``.
        text_rows: ``int32`` rows holding each duplicated text, grouped by text.
        text_counts: ``int64`` number of rows holding each duplicated text.
    """

    num_rows: int
    row_texts: np.ndarray
    text_ptr: np.ndarray
    text_rows: np.ndarray
    text_counts: np.ndarray

    @property
    def num_texts(self) -> int:
        """Number of distinct texts that occur in two or more rows."""
        return len(self.text_counts)

    def neighbours(self, row: int) -> np.ndarray:
        """Rows sharing at least one text with ``row`` (``row`` itself excluded; may repeat a row)."""
        texts = self.row_texts[row]
        texts = texts[texts >= 0]
        if len(texts) == 0:
            return np.empty(0, dtype=np.int32)
        if len(texts) == 1:
            t = int(texts[0])
            rows = self.text_rows[self.text_ptr[t] : self.text_ptr[t + 1]]
        else:
            rows = np.concatenate([self.text_rows[self.text_ptr[t] : self.text_ptr[t + 1]] for t in texts.tolist()])
        return rows[rows != row]


def normalize_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """NFKC-normalise, collapse whitespace runs to one space, trim, and lower-case a string column."""
    column = pc.utf8_normalize(column, form="NFKC")
    column = pc.replace_substring_regex(column, pattern=r"\s+", replacement=" ")
    column = pc.utf8_trim_whitespace(column)
    return pc.utf8_lower(column)


def text_column(table: pa.Table, name: str, normalize: bool) -> pa.ChunkedArray:
    """Column ``name`` of ``table`` as strings, as sentence-transformers compares them.

    String columns are used as they are. Other types go through sentence-transformers' own ``_sample_value_str``
    (per value, in Python), so that numbers, lists or images compare exactly as its ``NoDuplicatesBatchSampler``
    compares them.

    Raises:
        ValueError: If the column holds a null value, naming the column and the first such row.
    """
    column = table.column(name)
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise ValueError(
            f"Column {name!r} has a null value at row {row}; NoDuplicatesSampler expects a value in every row of "
            "every column it checks (drop or fill those rows, or leave the column out with `columns=`)."
        )
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string_view(column.type):
        column = column.cast(pa.large_string())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        from sentence_transformers.base.sampler import _sample_value_str

        logger.debug(
            "Column %r has type %s: comparing its values by str(), as sentence-transformers does.", name, column.type
        )
        column = pa.chunked_array(
            [pa.array([_sample_value_str(v) for v in column.to_pylist()], type=pa.large_string())]
        )
    if normalize:
        column = normalize_text(column)
    return column


# 64-bit mixing constants (splitmix64's): every word of a text goes through a multiply-xorshift round.
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)


def _hash_string_chunk(chunk: pa.Array) -> np.ndarray:
    """``(len(chunk),)`` ``uint64`` hashes of a string/large_string array, from its offsets and data buffers.

    A text of ``n >= 8`` bytes is read as ``ceil(n / 8)`` little-endian 8-byte words, at byte offsets 0, 8, 16,
    ... and the last one at ``n - 8`` (overlapping the word before it rather than masked), so every word lies
    inside its own text. A shorter text is one word, zero-padded. Each word goes through a multiply-xorshift
    round, the length included, then splitmix64's finaliser. Words are read through an unaligned, byte-strided
    view of the data buffer: a handful of vectorised passes per word position, over all texts at once while
    they are all that long.
    """
    _, offsets_buffer, data_buffer = chunk.buffers()
    offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    words = np.ndarray((max(len(data) - 7, 0),), dtype="<u8", buffer=data, strides=(1,))  # words[i]: bytes i..i+7
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    hashes = lengths.astype(np.uint64) * _K1 ^ _K3  # the length is part of the hash
    shifted = np.empty_like(hashes)

    def mix(h: np.ndarray, w: np.ndarray) -> np.ndarray:
        h ^= w
        h *= _K2
        h ^= np.right_shift(h, np.uint64(31), out=shifted[: len(h)])
        return h

    with np.errstate(over="ignore"):
        # Under 8 bytes: one zero-padded word (copied out: its 8 bytes could run past the buffer's end).
        short = np.flatnonzero((lengths > 0) & (lengths < 8))
        if len(short):
            padded = np.zeros((len(short), 8), dtype=np.uint8)
            inside = np.arange(8) < lengths[short, None]
            padded[inside] = data[(starts[short, None] + np.arange(8))[inside]]
            hashes[short] = mix(hashes[short], padded.view("<u8").ravel())
        # 8 bytes or more: word k at min(start + 8k, end - 8) while k < ceil(length / 8). `h` holds the hashes
        # of the texts still being read (`rows` of them, or all of `hashes`, in place, while rows is None).
        # Until the shortest text's last word, every text reads a whole word at start + 8k: no clamp, no check.
        # After that, texts whose words are done keep their hash (a masked update), and when fewer than half are
        # still reading, the finished ones are written back and dropped.
        rows = None if bool((lengths >= 8).all()) else np.flatnonzero(lengths >= 8)
        h = hashes if rows is None else hashes[rows]
        if len(h):
            first = starts if rows is None else starts[rows]
            last = offsets[1:] - 8 if rows is None else offsets[1:][rows] - 8
            num_words = (last - first + 15) // 8
            shortest = int(num_words.min())
            pos = np.empty_like(first)
            for k in range(shortest - 1):
                mix(h, words[np.add(first, 8 * k, out=pos)])
            k = shortest - 1
            while len(h):
                reading = None if k < shortest else num_words > k
                count = len(h) if reading is None else int(np.count_nonzero(reading))
                if count == 0:
                    break
                if 2 * count < len(h):
                    if rows is None:
                        rows = np.flatnonzero(reading)
                    else:
                        hashes[rows] = h
                        rows = rows[reading]
                    h, first, last, num_words = hashes[rows], first[reading], last[reading], num_words[reading]
                    pos = np.empty_like(first)
                w = words[np.minimum(np.add(first, 8 * k, out=pos), last, out=pos)]
                if count == len(h):
                    mix(h, w)
                else:
                    np.copyto(h, mix(h.copy(), w), where=reading)
                k += 1
            if rows is not None:
                hashes[rows] = h
        # splitmix64's finaliser.
        hashes ^= hashes >> np.uint64(30)
        hashes *= _K2
        hashes ^= hashes >> np.uint64(27)
        hashes *= _K3
        hashes ^= hashes >> np.uint64(31)
    return hashes


def text_hashes(column: pa.ChunkedArray, threads: int | None = None) -> np.ndarray:
    """``(len(column),)`` ``uint64`` 64-bit hashes of a string or large_string column: equal texts, equal hashes.

    The hash depends only on the UTF-8 bytes (and so on no chunking, offset type or machine).

    Args:
        column: The texts.
        threads: Threads to hash with (default: ``torch.get_num_threads()``, which follows ``OMP_NUM_THREADS``,
            as torchrun sets it for each process, and ``torch.set_num_threads``).
    """
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValueError(f"text_hashes needs a string or large_string column, got {column.type}")
    return _hash_chunks(column.chunks, threads)


def _hash_chunks(chunks: Sequence[pa.Array], threads: int | None = None) -> np.ndarray:
    """The hashes of the texts of ``chunks`` (string or large_string arrays), concatenated in order.

    The chunks are cut into blocks of ``_HASH_BLOCK`` texts, small enough for a block's working arrays to stay
    in cache, and the blocks are hashed by a pool of threads (NumPy releases the GIL in its passes).
    """
    if threads is None:
        threads = torch.get_num_threads()
    blocks = [chunk.slice(start, _HASH_BLOCK) for chunk in chunks for start in range(0, len(chunk), _HASH_BLOCK)]
    ends = np.cumsum([len(block) for block in blocks], dtype=np.int64)
    hashes = np.empty(int(ends[-1]) if len(blocks) else 0, dtype=np.uint64)

    def hash_block(i: int) -> None:
        hashes[ends[i] - len(blocks[i]) : ends[i]] = _hash_string_chunk(blocks[i])

    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(blocks))) as pool:
            list(pool.map(hash_block, range(len(blocks))))
    else:
        for i in range(len(blocks)):
            hash_block(i)
    return hashes


def _bucket_bits(entries: int) -> int:
    """Bits of a bucket id for ``entries`` hashes: about 2-4 buckets per entry, at most 2**23 buckets (64 MiB)."""
    return max(10, min(23, entries.bit_length() + 1))


def encode_duplicates(table: pa.Table, columns: Sequence[str], normalize: bool = False) -> DuplicateIndex:
    """Dictionary-encode the texts of ``columns`` across all of them and index the duplicated ones.

    Args:
        table: The rows, as an Arrow table.
        columns: The columns whose texts must not repeat within a batch (in any column).
        normalize: Compare texts after :func:`normalize_text`.

    Returns:
        The :class:`DuplicateIndex` of the rows.
    """
    num_rows = table.num_rows
    num_columns = len(columns)
    if num_rows == 0 or num_columns == 0:
        empty = np.empty(0, dtype=np.int32)
        return DuplicateIndex(
            num_rows, np.full((num_rows, 0), -1, np.int32), np.zeros(1, np.int64), empty, np.empty(0, np.int64)
        )
    texts = [text_column(table, name, normalize) for name in columns]
    # One hash per text, then one set of codes over every column: a text in `anchor` of one row equals the same
    # text in `positive` of another.
    hashes = _hash_chunks([chunk for column in texts for chunk in column.chunks])
    del texts
    # Only hashes that share a bucket with another entry can repeat: the other entries are texts of one entry
    # and are dropped at once; the candidates get exact codes from a sort. Each round buckets the candidates left
    # by a different part of their hash (the top bits, then the top bits of the hash times an odd constant) until
    # a round drops few of them, which leaves little more than the true repeats to sort. A bucket's "shared" flag
    # is read from a bool table (a few MiB, cache-friendly) rather than from the counts.
    bits = _bucket_bits(len(hashes))
    bucket = (hashes >> np.uint64(64 - bits)).view(np.int64)  # < 2**23: the same values, no copy
    candidates = np.flatnonzero((np.bincount(bucket, minlength=1 << bits) > 1)[bucket])
    del bucket
    candidate_hashes = hashes[candidates]
    for multiplier in (_K1, _K2, _K3):
        bits = _bucket_bits(len(candidates))
        with np.errstate(over="ignore"):
            bucket = candidate_hashes * multiplier
        bucket >>= np.uint64(64 - bits)
        bucket = bucket.view(np.int64)
        shared = (np.bincount(bucket, minlength=1 << bits) > 1)[bucket]
        before = len(candidates)
        candidates, candidate_hashes = candidates[shared], candidate_hashes[shared]
        if len(candidates) > 0.9 * before:
            break
    # From here on only the candidate entries (flat index = column * num_rows + row) are touched.
    rows = candidates % num_rows
    cols = candidates // num_rows
    # A text repeated inside one row is one text of that row (sentence-transformers compares value sets per row):
    # keep each (text, row) once, at its first column.
    keep = np.ones(len(candidates), dtype=bool)
    for earlier in range(num_columns - 1):
        later = np.flatnonzero(cols > earlier)
        keep[later] &= hashes[earlier * num_rows + rows[later]] != candidate_hashes[later]
    del hashes
    codes = np.unique(candidate_hashes[keep], return_inverse=True)[1]
    rows, cols = rows[keep], cols[keep]
    counts = np.bincount(codes)
    duplicated = counts > 1
    # Dense ids 0..num_texts-1 for the texts held by two or more rows, in the order of their codes.
    remap = np.full(len(counts), -1, dtype=np.int32)
    remap[duplicated] = np.arange(int(duplicated.sum()), dtype=np.int32)
    ids = remap[codes]
    held = ids >= 0
    ids, rows, cols = ids[held], rows[held], cols[held]
    row_texts = np.full((num_rows, num_columns), -1, dtype=np.int32)
    row_texts[rows, cols] = ids
    text_counts = counts[duplicated].astype(np.int64)
    text_rows = rows[np.argsort(ids.astype(np.int64) * num_rows + rows)].astype(np.int32)  # by text, then row
    text_ptr = np.zeros(len(text_counts) + 1, dtype=np.int64)
    np.cumsum(text_counts, out=text_ptr[1:])
    return DuplicateIndex(num_rows, row_texts, text_ptr, text_rows, text_counts)


@dataclass
class Placement:
    """Rows laid out in batches: ``slots[b * batch_size : (b + 1) * batch_size]`` is batch ``b``.

    Attributes:
        slots: Flat ``int32`` row ids; the first ``num_placed`` slots are the batches, the last batch may be short.
        batch_size: Rows per batch.
        unplaced: Rows the repair loop could not place within its budget (empty on success).
    """

    slots: np.ndarray
    batch_size: int
    unplaced: np.ndarray

    @property
    def num_placed(self) -> int:
        return len(self.slots)

    @property
    def ok(self) -> bool:
        return len(self.unplaced) == 0

    def batches(self) -> list[np.ndarray]:
        """The batches, in order; only the last one may be shorter than ``batch_size``."""
        b = self.batch_size
        return [self.slots[start : start + b] for start in range(0, len(self.slots), b)]


def place_rows(
    index: DuplicateIndex,
    rows: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    budget_per_row: int = 16,
    budget_base: int = 256,
) -> Placement:
    """Lay ``rows`` out in ``ceil(len(rows) / batch_size)`` batches with no text twice in a batch.

    Every batch is full but the last, which holds the remainder. The layout starts from a random permutation, so
    it is a uniformly shuffled epoch wherever no duplicate interferes.

    Args:
        index: The duplicated texts of the dataset.
        rows: The row ids to place (each once).
        batch_size: Rows per batch.
        rng: The source of randomness; the result is a pure function of its state.
        budget_per_row: Repair attempts allowed per colliding row before giving up...
        budget_base: ...plus this many.

    Returns:
        The :class:`Placement`. If the repair loop ran out of budget, ``unplaced`` holds the rows left over and
        ``slots`` is not a valid layout.
    """
    num_placed = len(rows)
    # int32: half the memory of int64 for the shuffle's random accesses (the same permutation either way).
    slots = rng.permutation(np.asarray(rows).astype(np.int32, copy=False))
    if num_placed == 0 or index.num_texts == 0:
        return Placement(slots, batch_size, np.empty(0, dtype=np.int64))
    batch_of = np.full(index.num_rows, -1, dtype=np.int32)
    batch_of[slots] = np.arange(num_placed, dtype=np.int32) // np.int32(batch_size)

    # Collisions: (batch, text) pairs held by more than one row. All but one row of each pair leave their slot.
    entry_batch = batch_of[index.text_rows].astype(np.int64)
    live = np.flatnonzero(entry_batch >= 0)
    entry_text = np.repeat(np.arange(index.num_texts, dtype=np.int64), index.text_counts)[live]
    keys = entry_batch[live] * index.num_texts + entry_text
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = order[1:][sorted_keys[1:] == sorted_keys[:-1]]
    evicted = np.unique(index.text_rows[live[repeated]]) if len(repeated) else np.empty(0, dtype=np.int64)
    if len(evicted) == 0:
        return Placement(slots, batch_size, np.empty(0, dtype=np.int64))

    num_batches = -(-num_placed // batch_size)
    is_evicted = np.zeros(index.num_rows, dtype=bool)
    is_evicted[evicted] = True
    holes: list[int] = np.flatnonzero(is_evicted[slots]).tolist()
    hole_at: dict[int, int] = {slot: i for i, slot in enumerate(holes)}
    slots[holes] = -1
    batch_of[evicted] = -1
    queue: deque[int] = deque(rng.permutation(evicted).tolist())
    budget = budget_per_row * len(queue) + budget_base

    def fill(slot: int, row: int) -> None:
        slots[slot] = row
        batch_of[row] = slot // batch_size

    def drop_hole(slot: int) -> None:
        i = hole_at.pop(slot)
        last = holes.pop()
        if last != slot:
            holes[i] = last
            hole_at[last] = i

    while queue:
        if budget <= 0:
            return Placement(slots, batch_size, np.asarray(list(queue), dtype=np.int64))
        row = queue.pop()
        neighbours = index.neighbours(row)
        neighbour_batches = batch_of[neighbours]
        placed = False
        # 1) A hole in a batch that shares no text with the row.
        probes = (
            holes if len(holes) <= _HOLE_PROBES else [holes[i] for i in rng.integers(len(holes), size=_HOLE_PROBES)]
        )
        for slot in probes:
            if not np.any(neighbour_batches == slot // batch_size):
                drop_hole(slot)
                fill(slot, row)
                placed = True
                break
        # 2) A random slot whose batch collides with the row at most through the slot's own row, which moves out.
        if not placed:
            for slot in rng.integers(num_placed, size=_SLOT_PROBES).tolist():
                clashing = neighbours[neighbour_batches == slot // batch_size]
                occupant = int(slots[slot])
                if len(clashing) and not np.all(clashing == occupant):
                    continue
                if occupant == -1:
                    drop_hole(slot)
                else:
                    batch_of[occupant] = -1
                    queue.append(occupant)
                fill(slot, row)
                placed = True
                break
        # 3) Dense case: look at every batch, for one that the row shares no text with (taking its hole, or
        # moving a random row out) or shares texts with through one row only (moving that row out).
        if not placed:
            slot = _targeted_slot(neighbours, neighbour_batches, slots, batch_size, num_batches, rng)
            if slot >= 0:
                occupant = int(slots[slot])
                if occupant == -1:
                    drop_hole(slot)
                else:
                    batch_of[occupant] = -1
                    queue.append(occupant)
                fill(slot, row)
                placed = True
        if not placed:
            queue.appendleft(row)
        budget -= 1
    return Placement(slots, batch_size, np.empty(0, dtype=np.int64))


def _targeted_slot(
    neighbours: np.ndarray,
    neighbour_batches: np.ndarray,
    slots: np.ndarray,
    batch_size: int,
    num_batches: int,
    rng: np.random.Generator,
) -> int:
    """A slot to put a row in, given its neighbours and their batches, or -1 if no batch is one move away.

    Prefers, in order: a hole in a batch the row shares no text with; any slot of such a batch; the slot of the
    only row a batch shares texts with.
    """
    num_placed = len(slots)
    placed = neighbour_batches >= 0
    clashing_rows, first = np.unique(neighbours[placed], return_index=True)
    clashing_batches = neighbour_batches[placed][first]
    per_batch = np.bincount(clashing_batches, minlength=num_batches)
    free = np.flatnonzero(per_batch == 0)
    if len(free):
        hole_slots = np.flatnonzero(slots == -1)
        hole_slots = hole_slots[per_batch[hole_slots // batch_size] == 0]
        if len(hole_slots):
            return int(hole_slots[rng.integers(len(hole_slots))])
        batch = int(free[rng.integers(len(free))])
        size = min(batch_size, num_placed - batch * batch_size)
        return batch * batch_size + int(rng.integers(size))
    single = np.flatnonzero(per_batch == 1)
    if len(single):
        batch = int(single[rng.integers(len(single))])
        row = clashing_rows[clashing_batches == batch][0]
        return int(np.flatnonzero(slots[batch * batch_size : (batch + 1) * batch_size] == row)[0]) + batch * batch_size
    return -1


def skip_overfull_texts(
    index: DuplicateIndex, rows: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows of ``rows`` to skip so that no text is held by more rows than there are batches.

    A text held by more rows than batches cannot avoid sharing a batch, so only as many of its rows as there are
    batches can stay, chosen at random. Skipping rows can lower the number of batches, so this repeats until
    stable.

    Returns:
        The skipped row ids (sorted).
    """
    skipped: list[np.ndarray] = []
    alive = np.zeros(index.num_rows, dtype=bool)
    alive[rows] = True
    entry_text = np.repeat(np.arange(index.num_texts, dtype=np.int64), index.text_counts)
    while True:
        num_alive = int(alive.sum())
        num_batches = -(-num_alive // batch_size)
        live = alive[index.text_rows]
        counts = np.bincount(entry_text[live], minlength=index.num_texts)
        if num_batches == 0 or not np.any(counts > num_batches):
            break
        # Rank the live rows of each text in a random order; ranks >= num_batches are skipped.
        entries = np.flatnonzero(live)
        shuffled = entries[rng.permutation(len(entries))]
        by_text = shuffled[np.argsort(entry_text[shuffled], kind="stable")]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(len(by_text)) - np.repeat(starts, counts)
        over = index.text_rows[by_text[rank >= num_batches]]
        over = np.unique(over)
        alive[over] = False
        skipped.append(over)
    if not skipped:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(skipped)).astype(np.int64)


def as_arrow_table(dataset: Any, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of ``dataset`` as an Arrow table, in the dataset's row order.

    Accepts a ``datasets.Dataset`` (selections and shuffles included), a ``pyarrow.Table``, or a mapping of column
    name to a sequence of values.
    """
    if isinstance(dataset, pa.Table):
        return dataset.select(list(columns))
    if isinstance(dataset, dict):
        return pa.table({name: dataset[name] for name in columns})
    # datasets.Dataset: the arrow format honours an indices mapping (select/shuffle/filter) without Python rows.
    return dataset.with_format("arrow", columns=list(columns))[:]
