"""Where sentence-transformers rejects an argument, the drop-in rejects it the same way: the same exception type,
with a message that holds sentence-transformers' own (read here by raising it from the installed version), our
detail after it. Code that catches or matches the original's errors keeps working with ours swapped in.

Covered: every argument that ``MultipleNegativesRankingLoss``, ``CachedMultipleNegativesRankingLoss`` and
``NoDuplicatesBatchSampler`` (and ``DefaultBatchSampler``, which ``ShuffledBatchSampler`` stands in for) check in
their constructors. Not covered: ``NoDuplicatesBatchSampler(precompute_hashes=True)`` raises an ``ImportError``
without ``xxhash``; ``NoDuplicatesSampler`` needs no ``xxhash`` and ignores the argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
from st_mnr_plus.sampler import NoDuplicatesSampler, ShuffledBatchSampler

LOSSES = {
    "mnrl": (MultipleNegativesRankingLoss, MNRPlus),
    "cmnrl": (CachedMultipleNegativesRankingLoss, CachedMNRPlus),
}
SAMPLERS = {
    "no_duplicates": (NoDuplicatesBatchSampler, NoDuplicatesSampler),
    "default": (DefaultBatchSampler, ShuffledBatchSampler),
}

# The bad values of each argument the losses check (both check the wrapped MNRL's arguments).
LOSS_CASES = {
    "scale-zero": {"scale": 0},
    "scale-negative": {"scale": -1.5},
    "scale-nan": {"scale": float("nan")},
    "directions-empty": {"directions": ()},
    "directions-unknown": {"directions": ("query_to_doc", "doc_to_nowhere")},
    "directions-a-string": {"directions": "query_to_doc"},
    "directions-without-query-to-doc": {"directions": ("doc_to_query",)},
    "partition-mode": {"partition_mode": "together"},
    "hardness-mode": {"hardness_mode": "hardest"},
    "hardness-strength": {"hardness_strength": -0.5},
}
# Values that are valid alone but not together.
COMBINATIONS = {
    "per-direction-with-a-same-type-direction": {
        "partition_mode": "per_direction",
        "directions": ("query_to_doc", "query_to_query"),
    },
}
CACHED_CASES = {
    "mini-batch-num-tokens-zero": {"mini_batch_num_tokens": 0},
    "mini-batch-num-tokens-negative": {"mini_batch_num_tokens": -64},
}
SAMPLER_CASES = {
    "batch-size-zero": {"batch_size": 0},
    "batch-size-negative": {"batch_size": -4},
    "batch-size-float": {"batch_size": 2.0},
    "batch-size-string": {"batch_size": "4"},
    "batch-size-bool": {"batch_size": True},
    "drop-last-string": {"drop_last": "yes"},
    "drop-last-int": {"drop_last": 1},
    "drop-last-none": {"drop_last": None},
}


def raised(build: Callable[[], Any]) -> BaseException:
    try:
        build()
    except Exception as exc:
        return exc
    raise AssertionError(f"{build} raised nothing")


def assert_same_error(theirs: Callable[[], Any], ours: Callable[[], Any]) -> None:
    original, mine = raised(theirs), raised(ours)
    assert isinstance(mine, type(original)), f"{type(mine).__name__}: {mine} (sentence-transformers: {original!r})"
    assert str(original), "sentence-transformers' message is empty: nothing to compare"
    assert str(mine).startswith(str(original)), f"ours: {mine}\nsentence-transformers': {original}"
    assert len(str(mine)) > len(str(original)), f"ours adds no detail to sentence-transformers': {mine}"


@pytest.mark.parametrize("kwargs", [*LOSS_CASES.values(), *COMBINATIONS.values()], ids=[*LOSS_CASES, *COMBINATIONS])
@pytest.mark.parametrize("classes", LOSSES.values(), ids=LOSSES.keys())
def test_a_loss_rejects_what_sentence_transformers_rejects_with_its_message(tiny_model, classes, kwargs):
    theirs, ours = classes
    assert_same_error(lambda: theirs(tiny_model, **kwargs), lambda: ours(tiny_model, **kwargs))


@pytest.mark.parametrize("kwargs", CACHED_CASES.values(), ids=CACHED_CASES.keys())
def test_the_cached_loss_rejects_what_cmnrl_rejects_with_its_message(tiny_model, kwargs):
    assert_same_error(
        lambda: CachedMultipleNegativesRankingLoss(tiny_model, **kwargs), lambda: CachedMNRPlus(tiny_model, **kwargs)
    )


def test_the_cached_loss_rejects_a_static_embedding_model_with_cmnrl_message(minilm_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    static = StaticEmbedding(Tokenizer.from_file(str(minilm_path / "tokenizer.json")), embedding_dim=8)
    model = SentenceTransformer(modules=[static], device="cpu")
    assert_same_error(lambda: CachedMultipleNegativesRankingLoss(model), lambda: CachedMNRPlus(model))


@pytest.mark.parametrize("kwargs", LOSS_CASES.values(), ids=LOSS_CASES.keys())
def test_an_option_assigned_after_construction_is_rejected_with_the_same_message(tiny_model, kwargs):
    # MNRL takes a bad value assigned later without a word; ours checks it as its constructor does.
    expected = str(raised(lambda: MultipleNegativesRankingLoss(tiny_model, **kwargs)))
    loss = MNRPlus(tiny_model)
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        setattr(loss, name, value)


@pytest.mark.parametrize("kwargs", SAMPLER_CASES.values(), ids=SAMPLER_CASES.keys())
@pytest.mark.parametrize("classes", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_a_sampler_rejects_what_sentence_transformers_rejects_with_its_message(classes, kwargs):
    from datasets import Dataset

    theirs, ours = classes
    data = Dataset.from_dict({"anchor": ["a", "b", "c", "d"], "positive": ["e", "f", "g", "h"]})
    arguments = {"batch_size": 2, "drop_last": False} | kwargs
    original, mine = raised(lambda: theirs(data, **arguments)), raised(lambda: ours(data, **arguments))
    assert isinstance(mine, type(original)), f"{type(mine).__name__}: {mine} (sentence-transformers: {original!r})"
    assert str(mine).startswith(str(original)), f"ours: {mine}\nsentence-transformers': {original}"
