"""CachedMNRPlus: the same loss and gradients as MNRPlus on the whole batch, and as ST's CMNRL where they agree."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from sentence_transformers.base.losses.gradcache import _create_minibatch
from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
from st_mnr_plus.losses.functional import row_hashes

# Real sentences, 10 rows, so that a mini-batch of 4 leaves a ragged last mini-batch (4 + 4 + 2).
ANCHORS = [
    "A man is playing a guitar on stage.",
    "Two dogs run across a snowy field.",
    "The chef is slicing onions in the kitchen.",
    "A child rides a red bicycle down the street.",
    "Several people wait at the bus stop in the rain.",
    "A woman is reading a book in the park.",
    "The team celebrates after scoring a goal.",
    "An old man feeds pigeons by the fountain.",
    "A cat sleeps on a sunny windowsill.",
    "Workers repair the road at night.",
]
POSITIVES = [
    "Someone performs music with a guitar.",
    "Dogs are running through snow.",
    "A cook cuts vegetables.",
    "A kid is cycling on a road.",
    "People stand at a bus stop while it rains.",
    "A woman reads outdoors.",
    "Players are happy about a goal.",
    "A man gives food to birds.",
    "A cat is napping in the sun.",
    "A road is being fixed after dark.",
]
NEGATIVES = [
    "The stage is empty and silent.",
    "Cats sleep indoors by the fire.",
    "The kitchen is closed for the day.",
    "A child is sleeping in bed.",
    "The sun shines on an empty street.",
    "A man is swimming in the lake.",
    "The team lost the match badly.",
    "A young girl chases the pigeons away.",
    "A dog barks at the mailman.",
    "The road is empty and quiet.",
]


def columns(num_columns: int, duplicates: bool) -> list[list[str]]:
    """Anchor, positive[, negative] columns; with ``duplicates``, some texts repeat across rows and columns."""
    cols = [list(ANCHORS), list(POSITIVES), list(NEGATIVES)][:num_columns]
    if duplicates:
        cols[1][7] = cols[1][2]  # two rows share a positive: each is a false negative for the other
        cols[0][9] = cols[0][4]  # two rows share an anchor
        if num_columns == 3:
            cols[2][5] = cols[1][0]  # a hard negative equal to another row's positive
    return cols


def step(
    loss_fn: torch.nn.Module, model: torch.nn.Module, cols: list[list[str]], factor: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one backward pass of ``factor * loss`` (see :func:`gradients`)."""
    model.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)
    loss = loss_fn([model.preprocess(c) for c in cols], None)
    (loss * factor).backward()
    return loss.detach(), gradients(loss_fn, model)


def gradients(loss_fn: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's gradients as ``model.<name>`` and the loss's own (a learnable scale) as ``loss.<short name>``."""
    grads = {f"model.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model_params = {id(p) for p in model.parameters()}
    for name, p in loss_fn.named_parameters():
        if id(p) not in model_params and p.grad is not None:
            # MNRPlus holds its scale at "log_scale_offset", CachedMNRPlus at "loss.log_scale_offset": compare by short name.
            grads[f"loss.{name.rsplit('.', 1)[-1]}"] = p.grad.clone()
    return grads


def assert_same(actual: tuple[Any, dict], expected: tuple[Any, dict], **tol: float) -> None:
    torch.testing.assert_close(actual[0], expected[0], **tol, msg=lambda m: f"loss: {m}")
    assert sorted(actual[1]) == sorted(expected[1]), "different sets of parameters got gradients"
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, **tol, msg=lambda m, name=name: f"{name}: {m}")
    assert any(g.abs().sum() > 0 for g in expected[1].values()), "all gradients are zero"


# These batches are tiny: every test runs on one thread (tests/losses/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Turn every dropout off while keeping train mode (what the trainer runs in)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


# Float64 for the real model: the cached passes embed 4 rows at a time, each padded to its own longest text,
# which in float32 moves gradients summed over every token by ~1e-5 relative. In float64 that rounding is gone
# and torch's float64 tolerances apply, so any real difference shows.
F64 = {"rtol": 1e-7, "atol": 1e-9}


@pytest.fixture
def minilm64(minilm):
    minilm.max_seq_length = 32
    return minilm.eval().to(torch.float64)


# ------------------------------------------------------------------------------------------------ vs MNRPlus


@pytest.mark.parametrize(
    ("num_columns", "duplicates", "options"),
    [
        # One real-model case by default; pairs run in float32 below, and every option, the learnable scale
        # included, runs on the tiny model in test_matches_mnr_plus_options.
        pytest.param(3, True, {"learnable_scale": True, "scale": 30.0}, id="triplets-duplicates-learnable-scale"),
        pytest.param(2, False, {}, id="pairs", marks=pytest.mark.slow),
        pytest.param(3, True, {}, id="triplets-duplicates-masked", marks=pytest.mark.slow),
    ],
)
def test_matches_mnr_plus_minilm(minilm64, num_columns: int, duplicates: bool, options: dict[str, Any]) -> None:
    cols = columns(num_columns, duplicates)
    plain_model, cached_model = minilm64, copy.deepcopy(minilm64)
    expected = step(MNRPlus(plain_model, **options), plain_model, cols)
    actual = step(CachedMNRPlus(cached_model, mini_batch_size=4, **options), cached_model, cols)
    assert_same(actual, expected, **F64)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")}, id="all-dirs"),
        pytest.param({"symmetric": True}, id="symmetric"),
        pytest.param({"hardness_mode": "all_negatives", "hardness_strength": 5.0}, id="hardness"),
        pytest.param({"hard_negatives": "own"}, id="own-hard-negatives"),
        pytest.param({"false_negative_margin": 0.1}, id="margin"),
        pytest.param({"mask_duplicates": False}, id="no-masking"),
        pytest.param({"tile_size": 3, "learnable_scale": True}, id="tiny-tiles-learnable"),
    ],
)
@pytest.mark.parametrize("mini_batch_size", [1, 4, 64], ids=lambda m: f"mbs{m}")
def test_matches_mnr_plus_options(tiny_model, options: dict[str, Any], mini_batch_size: int) -> None:
    cols = columns(3, duplicates=True)
    model = tiny_model.eval().to(torch.float64)
    cached_model = copy.deepcopy(model)
    expected = step(MNRPlus(model, **options), model, cols)
    actual = step(CachedMNRPlus(cached_model, mini_batch_size=mini_batch_size, **options), cached_model, cols)
    assert_same(actual, expected, **F64)


def test_matches_mnr_plus_float32(minilm) -> None:
    """The realistic dtype: equal up to float32 rounding of differently padded mini-batches."""
    minilm.max_seq_length = 32
    cols = columns(2, duplicates=False)
    model = minilm.eval()
    cached_model = copy.deepcopy(model)
    expected = step(MNRPlus(model), model, cols)
    actual = step(CachedMNRPlus(cached_model, mini_batch_size=4), cached_model, cols)
    # Loosened from float32's 1.3e-6/1e-5: gradients summed over every token of differently padded batches.
    assert_same(actual, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ vs ST's CMNRL


@pytest.mark.parametrize(
    ("num_columns", "duplicates", "options"),
    [
        pytest.param(3, True, {"mask_duplicates": False}, id="triplets-duplicates-unmasked"),
        # The options below reach CMNRL transitively on every run (CachedMNRPlus = MNRPlus with each option on the
        # tiny model above, MNRPlus = MNRL in test_functional.py's grid); directly on the real model, with -m slow.
        pytest.param(2, False, {}, id="pairs-no-duplicates", marks=pytest.mark.slow),
        pytest.param(
            3,
            False,
            {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
            id="triplets-all-directions",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            3,
            False,
            {"hardness_mode": "in_batch_negatives", "hardness_strength": 9.0},
            id="triplets-hardness",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_matches_st_cmnrl(minilm64, num_columns: int, duplicates: bool, options: dict[str, Any]) -> None:
    cols = columns(num_columns, duplicates)
    st_model, our_model = minilm64, copy.deepcopy(minilm64)
    st_options = {k: v for k, v in options.items() if k != "mask_duplicates"}
    expected = step(CachedMultipleNegativesRankingLoss(st_model, mini_batch_size=4, **st_options), st_model, cols)
    actual = step(CachedMNRPlus(our_model, mini_batch_size=4, **options), our_model, cols)
    assert_same(actual, expected, **F64)


def test_dropout_replayed_like_st_cmnrl(tiny_model) -> None:
    """In train mode (dropout on) both draw the same masks from the same seed, and replay them in step (3)."""
    cols = columns(2, duplicates=False)
    st_model = tiny_model.train().to(torch.float64)
    our_model = copy.deepcopy(st_model)
    torch.manual_seed(123)
    expected = step(CachedMultipleNegativesRankingLoss(st_model, mini_batch_size=3), st_model, cols)
    torch.manual_seed(123)
    # group_by_length=False: CMNRL's mini-batches, so the same rows draw the same masks.
    actual = step(
        CachedMNRPlus(our_model, mini_batch_size=3, mask_duplicates=False, group_by_length=False), our_model, cols
    )
    assert_same(actual, expected, **F64)


@pytest.mark.parametrize("group_by_length", [False, True], ids=["batch-order", "grouped-by-length"])
def test_dropout_replayed_between_passes(tiny_model, group_by_length: bool) -> None:
    """The gradients are those of the embeddings of step (1): its dropout masks are replayed in step (3).

    Reference: the same mini-batches embedded once with gradients, in the same order from the same seed, then
    the uncached loss. Without the RNG replay, step (3) would draw fresh masks and the gradients would differ.
    """
    cols = columns(3, duplicates=True)
    model = tiny_model.train().to(torch.float64)
    ref_model = copy.deepcopy(model)
    features = [ref_model.preprocess(c) for c in cols]
    ref_loss_fn = MNRPlus(ref_model)
    torch.manual_seed(7)
    embeddings = []
    for f in features:
        rows = f["input_ids"].shape[0]
        order = torch.arange(rows)
        if group_by_length:  # longest rows first, ties in batch order
            order = torch.argsort(f["attention_mask"].sum(dim=1), descending=True, stable=True)
            f = {k: v[order] if isinstance(v, torch.Tensor) else v for k, v in f.items()}
        # The mixin's own slicing, which also trims each mini-batch's padding (dropout masks follow the shape).
        parts = [ref_model(_create_minibatch(f, b, b + 4))["sentence_embedding"] for b in range(0, rows, 4)]
        embeddings.append(torch.cat(parts)[torch.argsort(order)])
    row_ids = [row_hashes(ref_model.preprocess(c)) for c in cols]
    ref_loss = ref_loss_fn.compute_loss_from_embeddings(embeddings, None, row_ids=row_ids)
    ref_loss.backward()
    expected = (
        ref_loss.detach(),
        {f"model.{n}": p.grad for n, p in ref_model.named_parameters() if p.grad is not None},
    )

    torch.manual_seed(7)
    actual = step(CachedMNRPlus(model, mini_batch_size=4, group_by_length=group_by_length), model, cols)
    assert_same(actual, expected, **F64)
    # And dropout did act: the eval-mode loss differs.
    with torch.no_grad():
        eval_loss = CachedMNRPlus(model.eval(), mini_batch_size=4)([model.preprocess(c) for c in cols], None)
    assert not math.isclose(eval_loss.item(), actual[0].item(), rel_tol=1e-6)


# ------------------------------------------------------------------------------------------------ mechanics


def test_outer_gradient_scale_reaches_every_parameter(tiny_model) -> None:
    """Gradient accumulation and AMP scale the returned loss: the model's and the scale's gradients follow."""
    cols = columns(2, duplicates=False)
    model = tiny_model.eval().to(torch.float64)
    loss_fn = CachedMNRPlus(model, mini_batch_size=4, learnable_scale=True)
    _, full = step(loss_fn, model, cols)
    _, quarter = step(loss_fn, model, cols, factor=0.25)
    assert "loss.log_scale_offset" in full
    for name, grad in full.items():
        torch.testing.assert_close(quarter[name], grad * 0.25, **F64, msg=lambda m, name=name: f"{name}: {m}")


def test_no_grad_forward_leaves_no_gradients(tiny_model) -> None:
    cols = columns(2, duplicates=False)
    model = tiny_model.eval().to(torch.float64)
    loss_fn = CachedMNRPlus(model, mini_batch_size=4, learnable_scale=True)
    with torch.no_grad():
        evaluated = loss_fn([model.preprocess(c) for c in cols], None)
    assert all(p.grad is None for p in loss_fn.parameters())
    torch.testing.assert_close(evaluated, step(MNRPlus(model, learnable_scale=True), model, cols)[0], **F64)
    assert set(loss_fn.diagnostics) >= {"accuracy", "scale"}


def test_forward_twice_before_backward(tiny_model) -> None:
    """Each returned loss back-propagates its own batch (the hook holds its own cache), as with CMNRL."""
    model = tiny_model.eval().to(torch.float64)
    loss_fn = CachedMNRPlus(model, mini_batch_size=4, learnable_scale=True)
    first, second = columns(2, duplicates=False), columns(2, duplicates=True)
    expected_first, expected_second = step(loss_fn, model, first), step(loss_fn, model, second)
    model.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)
    loss_a = loss_fn([model.preprocess(c) for c in first], None)
    loss_b = loss_fn([model.preprocess(c) for c in second], None)
    loss_a.backward()
    loss_b.backward()
    expected = {name: grad + expected_second[1][name] for name, grad in expected_first[1].items()}
    assert_same(
        (loss_a.detach() + loss_b.detach(), gradients(loss_fn, model)),
        (expected_first[0] + expected_second[0], expected),
        **F64,
    )


def test_equal_weights_through_trainer_with_accumulation(tiny_model, tmp_path, training_args) -> None:
    """Two optimizer steps through SentenceTransformerTrainer with gradient accumulation, learnable scale:
    the cached and uncached losses end with the same weights."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    cols = columns(2, duplicates=False)
    dataset = Dataset.from_dict({"anchor": cols[0] * 2, "positive": cols[1] * 2})
    results = {}
    for name in ("plain", "cached"):
        model = no_dropout(copy.deepcopy(tiny_model))
        if name == "plain":
            loss_fn = MNRPlus(model, learnable_scale=True)
        else:
            loss_fn = CachedMNRPlus(model, mini_batch_size=3, learnable_scale=True)
        args = training_args(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=5,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-2,
            seed=3,
            data_seed=3,
        )
        SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss_fn).train()
        results[name] = (dict(model.named_parameters()), loss_fn.scale)
    assert results["cached"][1] != 20.0, "the learnable scale did not move"
    assert math.isclose(results["cached"][1], results["plain"][1], rel_tol=1e-5)
    for name, param in results["plain"][0].items():
        # float32 training: rounding of differently padded mini-batches, amplified a little by Adam.
        torch.testing.assert_close(
            results["cached"][0][name], param, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


# ------------------------------------------------------------------------------------------------ API


def test_group_by_length_embeds_fewer_tokens_for_the_same_result(minilm64) -> None:
    """Sorted mini-batches are trimmed to shorter widths: fewer tokens through the encoder, same loss and grads."""
    cols = columns(3, duplicates=True)
    cols[0][3] = "A child " + "rides a red bicycle down the long street " * 3  # one long text, mid-batch
    widths: dict[bool, list[int]] = {}
    results = {}
    for group in (False, True):
        model = copy.deepcopy(minilm64)
        seen = widths.setdefault(group, [])
        model[0].register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]["input_ids"].numel()))
        results[group] = step(CachedMNRPlus(model, mini_batch_size=4, group_by_length=group), model, cols)
    assert_same(results[True], results[False], **F64)
    # Both passes embed every mini-batch; the grouped ones hold fewer (padding) tokens.
    assert len(widths[True]) == len(widths[False])
    assert sum(widths[True]) < sum(widths[False])


def test_rejects_static_embedding(minilm_path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    static = StaticEmbedding(Tokenizer.from_file(str(minilm_path / "tokenizer.json")), embedding_dim=8)
    with pytest.raises(ValueError, match=r"StaticEmbedding.*MNRPlus"):
        CachedMNRPlus(SentenceTransformer(modules=[static], device="cpu"))


def test_needs_two_columns(tiny_model) -> None:
    loss_fn = CachedMNRPlus(tiny_model, mini_batch_size=2)
    with pytest.raises(ValueError, match="sentence_features"):
        loss_fn([tiny_model.preprocess(ANCHORS[:3])], None)
