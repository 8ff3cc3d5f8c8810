from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from st_mnr_plus.datasets._digest import DigestSet


def reference_add_new(seen: set[bytes], digests: list[bytes]) -> list[bool]:
    out = []
    for d in digests:
        out.append(d not in seen)
        seen.add(d)
    return out


# Few distinct first halves, so that keys sharing their first 64 bits (the rare path) are common here.
digest = st.tuples(st.sampled_from([b"A" * 8, b"B" * 8, b"\x00" * 8]), st.binary(min_size=8, max_size=8)).map(
    lambda t: t[0] + t[1]
)
small_digest = st.tuples(st.sampled_from([b"A" * 8, b"B" * 8]), st.sampled_from([b"x" * 8, b"y" * 8, b"z" * 8])).map(
    lambda t: t[0] + t[1]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(digest, small_digest), max_size=12), max_size=12))
def test_matches_a_python_set(batches):
    ours, reference = DigestSet(), set()
    for batch in batches:
        assert ours.add_new(batch).tolist() == reference_add_new(reference, batch)
    assert len(ours) == len(reference)
    probe = [*reference, b"C" * 16]
    assert ours.contains(probe).tolist() == [True] * len(reference) + [False]


@pytest.mark.parametrize("batch_size", [1, 7, 1000], ids=["batch-1", "ragged-7", "batch-1000"])
def test_many_random_batches(batch_size):
    rng = random.Random(3)
    pool = [rng.randbytes(16) for _ in range(3000)]
    ours, reference = DigestSet(), set()
    for start in range(0, 6000, batch_size):
        batch = [rng.choice(pool) for _ in range(min(batch_size, 6000 - start))]
        assert ours.add_new(batch).tolist() == reference_add_new(reference, batch)
    assert len(ours) == len(reference)
