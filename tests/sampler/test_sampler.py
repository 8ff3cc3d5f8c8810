"""NoDuplicatesSampler: equivalence with sentence-transformers' NoDuplicatesBatchSampler, options, errors, wiring."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

from st_mnr_plus.sampler import NoDuplicatesSampler
from st_mnr_plus.sampler.index import encode_duplicates, text_hashes
from st_mnr_plus.sampler.layout import Placement
from tests.sampler._helpers import duplicated_columns, duplicates_in, row_texts, st_value_sets


def epoch_rows(sampler) -> list[int]:
    return [row for batch in sampler for row in batch]


# --- Equivalence with sentence-transformers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(duplicated_columns(40, 2, 25, seed=0), id="pairs-heavy-duplication"),
        pytest.param(duplicated_columns(40, 3, 60, seed=1), id="triplets"),
        pytest.param(
            {"anchor": ["1", "a", "b", "x", "a"], "positive": [1, 2, 3, 4, 5], "label": [0, 0, 0, 1, 1]},
            id="int-column-equals-its-string",
        ),
        pytest.param(
            {"anchor": ["a", "b", "c", "d"], "positive": ["a", "x", "y", "d"], "dataset_name": ["s"] * 4},
            id="text-repeated-inside-a-row-and-dataset-name",
        ),
        pytest.param(
            {"anchor": ["a", None, "None", "b", None], "positive": ["p", "q", "r", None, "s"], "label": [0] * 5},
            id="none-is-the-text-None",
        ),
        pytest.param(
            {"anchor": ["a", "b", "c", "d"], "positive": [[1, 2], [1, 2], [2, 1], None], "label": [0] * 4},
            id="list-values",
        ),
    ],
)
def test_duplicate_relation_matches_sentence_transformers(data: dict[str, list]) -> None:
    """Two rows conflict for us exactly when they conflict for NoDuplicatesBatchSampler (labels excluded)."""
    dataset = Dataset.from_dict(data)
    ours = NoDuplicatesSampler(dataset, 2, False, valid_label_columns=["label"])
    st_sets = st_value_sets(dataset, valid_label_columns=["label"])
    row_texts_ids = ours._index.row_texts
    for i, j in itertools.combinations(range(len(dataset)), 2):
        theirs = not st_sets[i].isdisjoint(st_sets[j])
        mine = bool(np.intersect1d(row_texts_ids[i][row_texts_ids[i] >= 0], row_texts_ids[j]).size)
        assert mine == theirs, f"rows {i} and {j}"


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
@pytest.mark.parametrize("batch_size", [1, 7, 16], ids=lambda b: f"batch{b}")
def test_agrees_with_sentence_transformers_on_duplicate_free_data(batch_size: int, drop_last: bool) -> None:
    """Without duplicates both samplers yield the same number of batches, sizes and rows."""
    dataset = Dataset.from_dict({"anchor": [f"a{i}" for i in range(50)], "positive": [f"p{i}" for i in range(50)]})
    ours = NoDuplicatesSampler(dataset, batch_size, drop_last, seed=3)
    theirs = NoDuplicatesBatchSampler(dataset, batch_size, drop_last, generator=torch.Generator(), seed=3)
    our_batches, their_batches = list(ours), list(theirs)
    assert len(ours) == len(theirs) == len(our_batches) == len(their_batches)
    assert [len(b) for b in our_batches] == [len(b) for b in their_batches]
    if not drop_last:
        assert sorted(epoch_rows(our_batches)) == sorted(epoch_rows(their_batches)) == list(range(50))


def test_batches_are_duplicate_free_for_sentence_transformers_too() -> None:
    """Checked with sentence-transformers' own value sets, on a dataset with labels and many repeats."""
    data = duplicated_columns(300, 2, 150, seed=4) | {"label": [i % 3 for i in range(300)]}
    dataset = Dataset.from_dict(data)
    sets = st_value_sets(dataset, valid_label_columns=["label"])
    sampler = NoDuplicatesSampler(dataset, 16, False, valid_label_columns=["label"])
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert duplicates_in(batch, sets) == [], f"epoch {epoch}"


def test_sentence_transformers_overestimates_where_we_are_exact() -> None:
    """With drop_last, ST's __len__ promises batches a duplicate-free pass cannot fill, and repeats rows."""
    # "same" is in 6 of 12 rows: full batches of 4 without a repeat hold at most 8 rows, in 2 batches.
    data = {"anchor": ["same"] * 6 + [f"a{i}" for i in range(6)], "positive": [f"p{i}" for i in range(12)]}
    dataset = Dataset.from_dict(data)
    theirs = NoDuplicatesBatchSampler(dataset, 4, True, generator=torch.Generator(), seed=0)
    assert len(theirs) == 3
    ours = NoDuplicatesSampler(dataset, 4, True)
    assert len(ours) == len(list(ours)) == 2
    assert ours.num_left_out == 4
    assert all(data["anchor"][row] == "same" for row in ours.left_out_indices)
    rows = epoch_rows(ours)
    assert len(rows) == len(set(rows)) == len(ours) * 4


# --- Options --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalize", "expected_extra"),
    [pytest.param(False, 0, id="exact-strings"), pytest.param(True, 1, id="normalized")],
)
def test_normalize_compares_nfkc_whitespace_and_case_insensitively(normalize: bool, expected_extra: int) -> None:
    # Normalized, rows 0-2 hold one text and rows 3-4 another. Two batches of 3 hold only two of rows 0-2.
    anchors = ["A  man\tsleeps.", "a man sleeps.", " A man sleeps. ", "ＤＯＧ", "dog", "cat"]
    data = {"anchor": anchors, "positive": [f"p{i}" for i in range(6)]}
    sampler = NoDuplicatesSampler(data, 3, False, normalize=normalize)
    assert sampler.num_extra_batches == expected_extra
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(epoch_rows(batches)) == list(range(6))
        for batch in batches:
            if normalize:
                assert len(set(batch) & {0, 1, 2}) <= 1, f"epoch {epoch}"
                assert len(set(batch) & {3, 4}) <= 1, f"epoch {epoch}"


def test_columns_restricts_the_check() -> None:
    data = {"anchor": ["q"] * 4, "positive": ["p1", "p2", "p3", "p4"]}
    assert [len(batch) for batch in NoDuplicatesSampler(data, 4, False)] == [1, 1, 1, 1]
    only_positive = NoDuplicatesSampler(data, 4, False, columns=["positive"])
    assert [sorted(batch) for batch in only_positive] == [[0, 1, 2, 3]]


def test_label_columns_are_not_checked() -> None:
    data = {"anchor": [f"a{i}" for i in range(8)], "positive": [f"p{i}" for i in range(8)], "score": [1.0] * 8}
    assert len(NoDuplicatesSampler(data, 8, False, valid_label_columns=["label", "score"])) == 1
    assert len(NoDuplicatesSampler(data, 8, False)) == 8  # "1.0" in every row: one row per batch


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: Dataset.from_dict(d), id="datasets.Dataset"),
        pytest.param(lambda d: pa.table(d), id="pyarrow.Table"),
        pytest.param(lambda d: d, id="dict"),
    ],
)
def test_input_types_give_the_same_batches(make) -> None:
    data = duplicated_columns(60, 2, 40, seed=5)
    reference = list(NoDuplicatesSampler(data, 8, False, seed=1))
    assert list(NoDuplicatesSampler(make(data), 8, False, seed=1)) == reference


def test_indices_refer_to_rows_of_a_selected_dataset() -> None:
    """After select/shuffle (an indices mapping), ids index the dataset as the DataLoader will."""
    full = Dataset.from_dict(duplicated_columns(80, 2, 50, seed=6))
    subset = full.shuffle(seed=0).select(range(40))
    sampler = NoDuplicatesSampler(subset, 8, False)
    texts = row_texts(subset.to_dict(), ["anchor", "positive"])
    for batch in sampler:
        assert duplicates_in(batch, texts) == []
    assert sorted(epoch_rows(sampler)) == list(range(40))


def test_works_as_a_torch_dataloader_batch_sampler() -> None:
    data = Dataset.from_dict(duplicated_columns(30, 2, 20, seed=7))
    sampler = NoDuplicatesSampler(data, 4, False)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=lambda rows: rows)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler)
    for batch in batches:
        texts = [{row["anchor"], row["positive"]} for row in batch]
        assert sum(map(len, texts)) == len(set().union(*texts)), batch
    assert sum(len(batch) for batch in batches) == len(data)


def test_is_a_default_batch_sampler_with_its_kwargs() -> None:
    generator = torch.Generator()
    sampler = NoDuplicatesSampler(
        {"a": ["x", "y"]}, batch_size=1, drop_last=False, valid_label_columns=None, generator=generator, seed=5
    )
    assert isinstance(sampler, DefaultBatchSampler)
    assert (sampler.batch_size, sampler.drop_last, sampler.generator, sampler.seed) == (1, False, generator, 5)


def test_accepts_sentence_transformers_keywords_in_its_positions() -> None:
    """NoDuplicatesBatchSampler's precompute_* arguments are accepted (and change nothing), by name or position."""
    data = duplicated_columns(40, 2, 25, seed=12)
    reference = list(NoDuplicatesSampler(data, 4, False, seed=3))
    keywords = NoDuplicatesSampler(
        data, 4, False, seed=3, precompute_hashes=True, precompute_num_proc=2, precompute_batch_size=10
    )
    positional = NoDuplicatesSampler(data, 4, False, None, None, 3, True, None, 1000)
    assert list(keywords) == list(positional) == reference
    assert (keywords.precompute_hashes, keywords.precompute_num_proc, keywords.precompute_batch_size) == (True, 2, 10)


def test_accepts_none_where_sentence_transformers_does() -> None:
    data = duplicated_columns(20, 2, 15, seed=13)
    sampler = NoDuplicatesSampler(
        data, 4, False, valid_label_columns=None, generator=None, seed=None, precompute_num_proc=None
    )
    assert sampler.seed == 0
    assert list(sampler) == list(NoDuplicatesSampler(data, 4, False, seed=0))


def test_seed_none_takes_the_generator_seed() -> None:
    data = duplicated_columns(30, 2, 20, seed=8)
    generator = torch.Generator().manual_seed(11)
    assert list(NoDuplicatesSampler(data, 4, False, generator=generator, seed=None)) == list(
        NoDuplicatesSampler(data, 4, False, seed=11)
    )


def test_epochs_follow_seed_plus_epoch() -> None:
    # No text is held by more rows than there are batches, so every epoch keeps every row and only the layout's
    # stream, seed + epoch, tells epochs apart.
    data = duplicated_columns(50, 2, 40, seed=9)
    shifted = NoDuplicatesSampler(data, 4, False, seed=10)
    shifted.set_epoch(2)
    # Epoch 2 is drawn by __iter__; the other sampler's epoch 0 is the layout drawn at its construction.
    assert list(shifted) == list(NoDuplicatesSampler(data, 4, False, seed=12))


@pytest.mark.parametrize("overflow", ["extra", "skip"])
def test_exhausted_repair_falls_back_to_a_valid_reshuffled_layout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, overflow: str
) -> None:
    """If an epoch's repair runs out of budget, the construction layout, reshuffled, keeps every guarantee."""
    # "crowded" is in 14 rows, more than the 11 batches of 4 the other rows fill: 3 rows go to extra batches,
    # or are left out.
    data = duplicated_columns(45, 2, 30, seed=10)
    data["anchor"][:14] = ["crowded"] * 14
    sampler = NoDuplicatesSampler(data, 4, False, overflow=overflow)
    assert sampler.num_left_out == (3 if overflow == "skip" else 0)
    assert sampler.num_extra_batches == (3 if overflow == "extra" else 0)
    construction = sorted(sampler.left_out_indices.tolist())
    texts = row_texts(data, ["anchor", "positive"])

    def exhausted(index, rows, sizes, rng, **kwargs):
        return Placement(np.asarray(rows, dtype=np.int32), sizes, np.asarray(rows[:1], dtype=np.int64))

    monkeypatch.setattr("st_mnr_plus.sampler.layout.place_rows", exhausted)
    epochs = []
    for epoch in (1, 2):  # epoch 0 reuses the layout drawn at construction
        sampler.set_epoch(epoch)
        with caplog.at_level(logging.DEBUG, logger="st_mnr_plus.sampler"):
            batches = list(sampler)
        assert f"epoch {epoch}: repair budget exhausted" in caplog.text
        assert len(batches) == len(sampler)
        assert all(duplicates_in(batch, texts) == [] for batch in batches)
        assert sorted(epoch_rows(batches)) == sorted(set(range(45)) - set(construction))
        assert sorted(sampler.left_out_indices.tolist()) == construction
        epochs.append(batches)
    assert epochs[0] != epochs[1]


def test_empty_dataset_yields_nothing() -> None:
    sampler = NoDuplicatesSampler({"anchor": [], "positive": []}, 4, False)
    assert len(sampler) == 0
    assert list(sampler) == []


def test_encoding_keeps_only_duplicated_texts() -> None:
    index = encode_duplicates(pa.table({"a": ["x", "y", "z"], "b": ["y", "w", "x"]}), ["a", "b"])
    # "x" (rows 0 and 2) and "y" (rows 0 and 1) are duplicated; "z" and "w" are in one row each.
    assert index.num_texts == 2
    assert (index.row_texts[:, 0] >= 0).tolist() == [True, True, False]  # x, y, z
    assert (index.row_texts[:, 1] >= 0).tolist() == [True, False, True]  # y, w, x
    assert sorted(index.neighbours(0).tolist()) == [1, 2]


def _texts_every_length() -> list[str]:
    # Lengths 0..40 (every word count and tail length), texts that differ only in their last byte or only by a
    # trailing NUL, and non-ASCII text; the last ones end at the end of the data buffer.
    texts = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(n)) for i, n in enumerate(range(41))]
    texts += [t[:-1] + "#" for t in texts if t]
    texts += ["a", "a\x00", "a\x00\x00", "\x00", "café ☕", "cafe ☕", "x" * 17, "x" * 16]
    return texts


def _reference_hash(text: str) -> int:
    """The hash of one text, in plain Python integers: the specification ``text_hashes`` vectorises.

    Words are little-endian 8-byte reads at byte offsets 0, 8, 16, ... of the UTF-8 text, the last one at
    ``len - 8`` (overlapping); a text under 8 bytes is one zero-padded word. splitmix64's constants.
    """
    k1, k2, k3, mask = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 2**64 - 1
    data = text.encode()
    n = len(data)

    def mix(h: int, word: bytes) -> int:
        h = (h ^ int.from_bytes(word, "little")) * k2 & mask
        return h ^ (h >> 31)

    h = (n * k1 & mask) ^ k3
    if 0 < n < 8:
        h = mix(h, data.ljust(8, b"\0"))
    elif n >= 8:
        for k in range(-(-n // 8)):
            start = min(8 * k, n - 8)
            h = mix(h, data[start : start + 8])
    h ^= h >> 30
    h = h * k2 & mask
    h ^= h >> 27
    h = h * k3 & mask
    return h ^ (h >> 31)


def test_text_hashes_equal_exactly_for_equal_texts() -> None:
    texts = _texts_every_length()
    hashes = text_hashes(pa.chunked_array([pa.array(texts)]))
    assert hashes.dtype == np.uint64
    assert len(set(hashes.tolist())) == len(set(texts)) == len(texts)
    # The vectorised passes (all texts at once, masked updates, dropping finished texts) meet the plain definition.
    assert hashes.tolist() == [_reference_hash(text) for text in texts]
    # The same texts in large_string, split into chunks, and as slices of a longer array hash the same.
    large = pa.array(["padding", *texts, "more"], pa.large_string())
    chunked = pa.chunked_array([large.slice(1, 10), large.slice(11, len(texts) - 10)])
    np.testing.assert_array_equal(text_hashes(chunked), hashes)
    # A fixed function of the bytes (little-endian words whatever the machine): batches depend on it, so the
    # same seed must give the same batches everywhere. Changing these values changes every user's batches.
    pinned = text_hashes(pa.chunked_array([pa.array(["", "a", "A man is playing a guitar on stage."])]))
    assert pinned.tolist() == [2902805962516761537, 13094629235198641282, 7570576841838521367]


def test_text_hashes_same_on_any_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 1,000 texts: chunks cut mid-way, and a last short block, hashed by 1 or 3 threads.
    monkeypatch.setattr("st_mnr_plus.sampler.index._HASH_BLOCK", 1000)
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) + str(i) for i, n in enumerate(rng.integers(0, 100, size=5500))]
    column = pa.chunked_array([pa.array(texts[:2500]), pa.array(texts[2500:])])
    one = text_hashes(column, threads=1)
    np.testing.assert_array_equal(text_hashes(column, threads=3), one)
    assert one.tolist() == [_reference_hash(text) for text in texts]


def test_hashing_threads_follow_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.get_num_threads() follows OMP_NUM_THREADS (torchrun sets 1 per process) and torch.set_num_threads.
    import st_mnr_plus.sampler.index as sampling

    monkeypatch.setattr(sampling, "_HASH_BLOCK", 2)
    pools = []

    class Recording(sampling.ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(sampling, "ThreadPoolExecutor", Recording)
    column = pa.chunked_array([pa.array([f"text {i}" for i in range(20)])])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    single = text_hashes(column)
    assert pools == []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    np.testing.assert_array_equal(text_hashes(column), single)
    assert pools == [3]


def test_text_hashes_reject_non_strings() -> None:
    with pytest.raises(ValueError, match="string or large_string column, got int64"):
        text_hashes(pa.chunked_array([pa.array([1, 2])]))


def first_appearance_ids(index) -> np.ndarray:
    """``index.row_texts`` with the text ids renumbered in order of first appearance (row by row)."""
    ids = index.row_texts.ravel()
    seen, first = np.unique(ids[ids >= 0], return_index=True)
    renumber = np.empty(len(seen), dtype=np.int64)
    renumber[np.argsort(first)] = np.arange(len(seen))
    return np.where(index.row_texts >= 0, renumber[np.searchsorted(seen, index.row_texts)], -1)


@pytest.mark.parametrize("normalize", [False, True])
def test_equal_hashes_of_different_texts_never_merge_them(monkeypatch: pytest.MonkeyPatch, normalize: bool) -> None:
    """Texts are coded exactly: with a hash that collides for every text, the index is the same."""
    data = duplicated_columns(300, 3, 200, seed=14)
    table = pa.table(data)
    exact = encode_duplicates(table, list(data), normalize)
    monkeypatch.setattr(
        "st_mnr_plus.sampler.index._hash_chunks", lambda chunks: np.zeros(sum(len(c) for c in chunks), dtype=np.uint64)
    )
    colliding = encode_duplicates(table, list(data), normalize)
    # The same texts, numbered in another order: compare with ids renumbered by first appearance.
    np.testing.assert_array_equal(first_appearance_ids(colliding), first_appearance_ids(exact))
    assert sorted(colliding.text_counts.tolist()) == sorted(exact.text_counts.tolist())
    # And the exact index is what the texts say: two rows share an id exactly when they share a text.
    texts = row_texts(data, list(data))
    for i, j in itertools.combinations(range(0, 300, 7), 2):
        shared = bool(np.intersect1d(exact.row_texts[i][exact.row_texts[i] >= 0], exact.row_texts[j]).size)
        assert shared == bool(texts[i] & texts[j]), f"rows {i} and {j}"


# --- Distributed layout without processes (the gloo test lives in test_distributed.py) --------------------------


def test_accelerate_sharding_of_the_default_mode_gives_global_batches() -> None:
    """SentenceTransformerTrainer wraps the sampler in accelerate's BatchSamplerShard; steps are global batches."""
    from accelerate.data_loader import BatchSamplerShard

    data = duplicated_columns(200, 2, 120, seed=11)
    texts = row_texts(data, ["anchor", "positive"])
    shards = [
        list(BatchSamplerShard(NoDuplicatesSampler(data, 8, False, num_replicas=2, rank=r), 2, r)) for r in range(2)
    ]
    unsharded = NoDuplicatesSampler(data, 8, False, num_replicas=2)
    assert len(shards[0]) == len(shards[1]) == len(unsharded) // 2 == 200 // 16
    for step in zip(*shards, strict=True):
        assert [len(b) for b in step] == [8, 8]
        assert duplicates_in(step[0] + step[1], texts) == []


# --- Errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"batch_size": 0}, r"got batch_size=0 \(type int: the rows of each batch", id="batch-size-zero"),
        pytest.param({"batch_size": 2.0}, r"got batch_size=2.0 \(type float", id="batch-size-float"),
        pytest.param({"drop_last": "yes"}, r"got drop_last=yes \(type str: True or False\)", id="drop-last"),
        pytest.param({"seed": -1}, "seed must be a non-negative integer", id="seed"),
        pytest.param({"columns": ["nope"]}, "'nope', which is not a column", id="unknown-column"),
        pytest.param({"columns": "anchor"}, "columns must be a list", id="columns-string"),
        pytest.param({"columns": ["label"], "valid_label_columns": ["label"]}, "is a label column", id="label"),
        pytest.param({"num_replicas": 0}, "num_replicas must be a positive integer", id="replicas"),
        pytest.param({"num_replicas": 2, "rank": 2}, r"rank must be an integer in \[0, num_replicas=2\)", id="rank"),
        pytest.param({"overflow": "drop"}, r"overflow must be one of \('extra', 'skip'\), got 'drop'", id="overflow"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    data = {"anchor": ["a", "b"], "positive": ["c", "d"], "label": [0, 1]}
    arguments = {"batch_size": 2, "drop_last": False} | kwargs
    with pytest.raises(ValueError, match=message):
        NoDuplicatesSampler(data, **arguments)


def test_unsupported_dataset_type_is_named() -> None:
    with pytest.raises(ValueError, match="got list"):
        NoDuplicatesSampler([("a", "b")], 2, False)
