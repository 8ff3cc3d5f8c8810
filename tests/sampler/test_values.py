"""How values that are not plain strings are compared: None, numbers, lists, arrays, images (``value_key``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from st_mnr_plus.sampler import NoDuplicatesSampler
from st_mnr_plus.sampler.index import value_key
from tests.sampler._helpers import duplicates_in, row_texts

Image = pytest.importorskip("PIL.Image")


def images() -> list:
    """Four 4x4 RGB images, and a copy of the first that differs in one pixel."""
    plain = [Image.new("RGB", (4, 4), color) for color in ("red", "green", "blue", "yellow")]
    changed = plain[0].copy()
    changed.putpixel((3, 3), (254, 0, 0))
    return [*plain, changed]


def big_array(changed: bool) -> np.ndarray:
    array = np.arange(10_000)
    if changed:
        array[5_000] = -1  # str() elides the middle of a large array: only the content tells these apart
    return array


# Each group holds values that are equal to one another; values of different groups differ.
EQUAL_GROUPS = [
    ["a sentence"],
    ["5", 5, np.int64(5)],
    ["0.5", 0.5, np.float64(0.5)],
    ["True", True, np.bool_(True)],
    ["None", None],
    [str(["a", "b"]), ["a", "b"]],
    [("a", "b")],
    [[1.0, 0.5]],
    [big_array(False), big_array(False)],
    [big_array(True)],
    [{"bytes": b"\x89PNG...", "path": "a.png"}, {"bytes": b"\x89PNG...", "path": "b.png"}],
    [{"bytes": b"\x89PNG...other", "path": "a.png"}],
    [{"text": "x", "score": [1, 2]}, {"text": "x", "score": [1, 2]}],
    [{"text": "x", "score": [1, 3]}],
]


def test_value_key_keeps_str_for_plain_values() -> None:
    assert value_key("a sentence") == "a sentence"
    assert value_key(5) == "5"
    assert value_key(None) == "None"
    assert value_key(["a", "b"]) == str(["a", "b"])
    assert value_key(np.int64(5)) == value_key(5)


def test_value_key_identifies_equal_values_and_separates_different_ones() -> None:
    keys = [[value_key(value) for value in group] for group in EQUAL_GROUPS]
    for group, group_keys in zip(EQUAL_GROUPS, keys, strict=True):
        assert len(set(group_keys)) == 1, f"equal values with different keys: {group!r}"
    distinct = [group_keys[0] for group_keys in keys]
    assert len(set(distinct)) == len(distinct), "different values with the same key"


def test_value_key_digests_images_by_content() -> None:
    first, *others, changed = images()
    copy = first.copy()
    assert str(first) != str(copy)  # str() holds the object's address
    assert value_key(first) == value_key(copy)
    assert value_key(first) != value_key(changed)
    assert len({value_key(image) for image in [first, *others]}) == 4


def test_value_key_falls_back_to_str_for_what_cannot_be_pickled() -> None:
    def unpicklable() -> None:
        return None

    assert value_key(unpicklable) == str(unpicklable)


def test_value_key_relation_matches_sentence_transformers() -> None:
    """Two values share a key for us exactly when they share one for sentence-transformers."""
    from sentence_transformers.base.sampler import _sample_value_str  # private: fails loudly if it moves

    values = [value for group in EQUAL_GROUPS for value in group] + images()
    # ST digests a {"bytes", "path"} dict by its str(), path included: the one place we knowingly differ.
    values = [value for value in values if not (isinstance(value, dict) and "bytes" in value)]
    for a, b in itertools.combinations(values, 2):
        assert (value_key(a) == value_key(b)) == (_sample_value_str(a) == _sample_value_str(b)), (a, b)


@pytest.mark.parametrize("make", [Dataset.from_dict, dict], ids=["datasets-image-feature", "dict-of-pil"])
def test_rows_with_the_same_image_never_share_a_batch(make) -> None:
    """16 rows, 4 images: a batch of 8 can hold one row of each, so every batch has 4 rows, as in ST."""
    pictures = images()[:4]
    data = {"query": [f"query {i}" for i in range(16)], "image": [pictures[i % 4] for i in range(16)]}
    dataset = make(data)
    theirs = list(NoDuplicatesBatchSampler(Dataset.from_dict(data), 8, False, generator=torch.Generator(), seed=0))
    ours = NoDuplicatesSampler(dataset, 8, False)
    for epoch in range(2):
        ours.set_epoch(epoch)
        batches = list(ours)
        assert len(batches) == len(ours) == len(theirs) == 4
        assert sorted(row for batch in batches for row in batch) == list(range(16))
        for batch in batches:
            assert sorted(i % 4 for i in batch) == [0, 1, 2, 3], f"epoch {epoch}"


def test_none_is_the_text_none() -> None:
    """sentence-transformers compares str(None): rows holding None, or the text "None", conflict."""
    data = {"anchor": [None, None, "None", "a", "b", "c"], "positive": ["p0", "p1", "p2", "p3", "p4", None]}
    sampler = NoDuplicatesSampler(Dataset.from_dict(data), 3, False)
    texts = row_texts(data, ["anchor", "positive"])
    assert texts[0] == {"None", "p0"}
    batches = list(sampler)
    assert sorted(row for batch in batches for row in batch) == list(range(6))
    assert all(duplicates_in(batch, texts) == [] for batch in batches)
    # Rows 0, 1, 2 and 5 hold "None": four batches.
    assert len(batches) == len(sampler) == 4
