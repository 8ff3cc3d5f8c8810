"""Which rows share a value: :func:`encode_duplicates` turns the value columns of a table into a
:class:`DuplicateIndex`, the input of :mod:`st_mnr_plus.sampler.layout`.

Every text is hashed once to 64 bits straight from the Arrow buffers (:func:`text_hashes`, in blocks across
threads), the entries whose hash can repeat (sharing a bucket in every round of bucketing) are checked against their
texts and coded exactly, and only texts that occur in two or more rows are kept, as dense ``int32`` ids. Texts that
occur in one row can never cause a duplicate, so they cost nothing later. Values that are not strings are first
turned into text by :func:`value_key`. No per-row Python work on the common path.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

logger = logging.getLogger(__name__)

# Texts hashed per block: a block's working arrays (1 MiB each) stay in cache; the fastest size measured.
_HASH_BLOCK = 1 << 17
# Entries compared per block when checking that equal hashes hold equal texts (the fastest size measured).
_VERIFY_BLOCK = 1 << 14

# Values compared by their str(), as sentence-transformers has always compared them (numpy scalars print like the
# Python number they hold, so the two compare equal).
_PLAIN_TYPES = (str, int, float, bool, bytes, type(None), np.integer, np.floating, np.bool_)


# ------------------------------------------------------------------------------------------------------ values


def value_key(value: Any) -> str:
    """The text a dataset value is compared by: equal values give equal keys, different values different ones.

    Strings, numbers, booleans, bytes and ``None`` give their ``str()`` (so ``None`` is the text ``"None"`` and
    the integer ``1`` equals the text ``"1"``), as do lists and tuples of such values: the comparison
    sentence-transformers' ``NoDuplicatesBatchSampler`` makes. Any other object (an image, an audio array, a
    nested structure) is identified by a digest of its pickled content, because its ``str()`` can hold a memory
    address (different on every read) or elide the middle of a large array. A ``{"bytes", "path"}`` dict, the
    way ``datasets`` stores images and audio, is identified by its bytes when it has them. An object that cannot
    be pickled falls back to its ``str()``.

    Args:
        value: One value of a dataset column.

    Returns:
        The comparison key.
    """
    if isinstance(value, _PLAIN_TYPES):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, _PLAIN_TYPES) for item in value):
        return str(value)
    if isinstance(value, dict) and value.keys() <= {"bytes", "path"} and value.get("bytes") is not None:
        value = value["bytes"]  # an encoded media file: the same file under another path is the same value
    try:
        payload = pickle.dumps(value, protocol=4)
    except Exception:  # any failure to pickle means "compare by str()", as for an object with no content
        return str(value)
    return "<digest " + hashlib.blake2b(payload, digest_size=16).hexdigest() + ">"


def values_as_text(values: Sequence[Any]) -> pa.Array:
    """A column of Python values as an Arrow ``large_string`` array of their :func:`value_key`."""
    return pa.array([value_key(value) for value in values], type=pa.large_string())


def normalize_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """NFKC-normalise, collapse whitespace runs to one space, trim, and lower-case a string column."""
    column = pc.utf8_normalize(column, form="NFKC")
    column = pc.replace_substring_regex(column, pattern=r"\s+", replacement=" ")
    column = pc.utf8_trim_whitespace(column)
    return pc.utf8_lower(column)


def text_column(table: pa.Table, name: str, normalize: bool) -> pa.ChunkedArray:
    """Column ``name`` of ``table`` as ``large_string`` texts, compared as sentence-transformers compares them.

    String columns are used as they are, a null being the text ``"None"`` (sentence-transformers compares
    ``str(None)``). Other types go through :func:`value_key`, per value, in Python.
    """
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if (
        pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
        or pa.types.is_string_view(column.type)
    ):
        column = column.cast(pa.large_string())
        if column.null_count:
            column = pc.fill_null(column, "None")
    else:
        logger.debug("Column %r has type %s: comparing its values by value_key().", name, column.type)
        column = pa.chunked_array([values_as_text(column.to_pylist())], type=pa.large_string())
    if normalize:
        column = normalize_text(column)
    return column


def as_arrow_table(dataset: Any, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of ``dataset`` as an Arrow table, in the dataset's row order.

    Accepts a ``datasets.Dataset`` (selections and shuffles included), a ``pyarrow.Table``, or a mapping of column
    name to a sequence of values. A mapping's column that Arrow cannot type (mixed types, images) is read through
    :func:`value_key`.
    """
    if isinstance(dataset, pa.Table):
        return dataset.select(list(columns))
    if isinstance(dataset, dict):
        arrays = {}
        for name in columns:
            try:
                arrays[name] = pa.array(dataset[name])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[name] = values_as_text(dataset[name])
        return pa.table(arrays) if arrays else pa.table({})
    # datasets.Dataset: the arrow format honours an indices mapping (select/shuffle/filter) without Python rows.
    return dataset.with_format("arrow", columns=list(columns))[:]


# ----------------------------------------------------------------------------------------------------- encoding


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

    def text_counts_in(self, rows: np.ndarray) -> np.ndarray:
        """``(num_texts,)`` number of rows of ``rows`` holding each duplicated text."""
        ids = self.row_texts[rows].ravel()
        return np.bincount(ids[ids >= 0], minlength=self.num_texts)


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


def _exact_codes(texts: pa.ChunkedArray) -> np.ndarray:
    """One ``int32`` code per text, equal exactly when the texts are equal (Arrow's ``dictionary_encode``)."""
    encoded = pc.dictionary_encode(texts)
    if encoded.num_chunks == 0:
        return np.empty(0, dtype=np.int32)
    # A chunked column is encoded against one dictionary, so the chunks' indices are codes of the whole.
    return np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks])


def _repeat_candidates(hashes: np.ndarray) -> np.ndarray:
    """The entries whose hash can repeat: a superset of every entry whose text is held by another entry.

    Only hashes that share a bucket with another entry can repeat: the other entries are texts of one entry and
    are dropped at once. Each round buckets the candidates left by a different part of their hash (the top bits,
    then the top bits of the hash times an odd constant) until a round drops few of them, which leaves little
    more than the true repeats. A bucket's "shared" flag is read from a bool table (a few MiB, cache-friendly)
    rather than from the counts.
    """
    bits = _bucket_bits(len(hashes))
    bucket = (hashes >> np.uint64(64 - bits)).view(np.int64)  # < 2**23: the same values, no copy
    candidates = np.flatnonzero((np.bincount(bucket, minlength=1 << bits) > 1)[bucket])
    del bucket
    for multiplier in (_K1, _K2, _K3):
        bits = _bucket_bits(len(candidates))
        with np.errstate(over="ignore"):
            bucket = hashes[candidates] * multiplier
        bucket >>= np.uint64(64 - bits)
        bucket = bucket.view(np.int64)
        shared = (np.bincount(bucket, minlength=1 << bits) > 1)[bucket]
        before = len(candidates)
        candidates = candidates[shared]
        if len(candidates) > 0.9 * before:
            break
    return candidates


def _take_sorted(flat: pa.ChunkedArray, entries: np.ndarray) -> pa.Array:
    """The texts of ``flat`` at the sorted ``entries``, as one array, taken chunk by chunk.

    (``ChunkedArray.take`` would first concatenate every chunk: a copy of all the texts.)
    """
    bounds = np.cumsum([0] + [len(chunk) for chunk in flat.chunks])
    cuts = np.searchsorted(entries, bounds)
    parts = [
        chunk.take(pa.array(entries[cuts[i] : cuts[i + 1]] - bounds[i]))
        for i, chunk in enumerate(flat.chunks)
        if cuts[i + 1] > cuts[i]
    ]
    return pa.concat_arrays(parts) if parts else pa.array([], type=flat.type)


def _verified_codes(flat: pa.ChunkedArray, entries: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Codes of the sorted ``entries`` of ``flat`` that are equal exactly when their texts are, given ``hashes``.

    Codes from the hashes are checked against the texts, a block of entries at a time (little memory): every text
    is compared with the first text of its code. Only if two different texts share a 64-bit hash (about one
    chance in 10**7 for 2M texts) are the entries encoded exactly instead, by Arrow's ``dictionary_encode``.
    """
    _, first, codes = np.unique(hashes, return_index=True, return_inverse=True)
    for start in range(0, len(entries), _VERIFY_BLOCK):
        block = slice(start, start + _VERIFY_BLOCK)
        firsts = entries[first[codes[block]]]
        order = np.argsort(firsts, kind="stable")
        theirs = _take_sorted(flat, firsts[order]).take(pa.array(np.argsort(order)))
        if not pc.all(pc.equal(_take_sorted(flat, entries[block]), theirs)).as_py():
            logger.debug("Two different texts share a 64-bit hash: encoding the repeated texts exactly.")
            return _exact_codes(pa.chunked_array([_take_sorted(flat, entries)])).astype(np.int64)
    return codes


def encode_duplicates(table: pa.Table, columns: Sequence[str], normalize: bool = False) -> DuplicateIndex:
    """Encode the texts of ``columns`` across all of them and index the duplicated ones.

    Every text is hashed once (:func:`text_hashes`); the entries whose hash can repeat get exact codes
    (:func:`_verified_codes`), and only texts held by two or more rows are kept.

    Args:
        table: The rows, as an Arrow table.
        columns: The columns whose texts must not repeat within a batch (in any column).
        normalize: Compare texts after :func:`normalize_text`.

    Returns:
        The :class:`DuplicateIndex` of the rows.
    """
    num_rows, num_columns = table.num_rows, len(columns)
    if num_rows == 0 or num_columns == 0:
        empty = np.empty(0, dtype=np.int32)
        return DuplicateIndex(
            num_rows, np.full((num_rows, 0), -1, np.int32), np.zeros(1, np.int64), empty, np.empty(0, np.int64)
        )
    # One set of codes over every column: a text in `anchor` of one row equals the same text in `positive` of
    # another. Entry e = column * num_rows + row.
    flat = pa.chunked_array(
        [chunk for name in columns for chunk in text_column(table, name, normalize).chunks], type=pa.large_string()
    )
    hashes = _hash_chunks(flat.chunks)
    candidates = _repeat_candidates(hashes)
    codes = _verified_codes(flat, candidates, hashes[candidates])
    del hashes, flat
    rows, cols = candidates % num_rows, candidates // num_rows
    # A text repeated inside one row is one text of that row (sentence-transformers compares value sets per row):
    # keep each (text, row) once, at its first column. An equal text in an earlier column is a candidate too.
    keep = np.ones(len(candidates), dtype=bool)
    for earlier in range(num_columns - 1):
        later = np.flatnonzero(cols > earlier)
        entry = earlier * num_rows + rows[later]
        at = np.minimum(np.searchsorted(candidates, entry), len(candidates) - 1)
        keep[later] &= (candidates[at] != entry) | (codes[at] != codes[later])
    return _index_from_codes(num_rows, num_columns, rows[keep], cols[keep], codes[keep])


def _index_from_codes(
    num_rows: int, num_columns: int, rows: np.ndarray, cols: np.ndarray, codes: np.ndarray
) -> DuplicateIndex:
    """The :class:`DuplicateIndex` of (row, column, text code) entries, each (text, row) once; codes are small ints."""
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
