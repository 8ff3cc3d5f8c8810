"""Drop-in under real training: autocast, GradScaler, option assignment, wrappers, non-text inputs, edge cases.

Each test names the failure of the first version it guards against (issue 15 of the project's tracker): where
sentence-transformers' MNRL / CMNRL survive a setting, MNRPlus / CachedMNRPlus must too.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import cos_sim, dot_score, euclidean_sim

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA)]
LOW_PRECISION = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]
F32 = {"rtol": 1.3e-6, "atol": 1e-5}
# bf16/fp16 inputs: ~3 significant digits (torch's bf16 default rtol), compared against float32 on the same values.
LOW = {"rtol": 1.6e-2, "atol": 1e-3}
SENTENCES = [
    ["A man plays a guitar.", "Two dogs run in the snow.", "A chef slices onions.", "A child rides a bike."],
    ["Someone makes music.", "Dogs are outside.", "A cook cuts vegetables.", "A kid is cycling."],
]


def _embeddings(batch: int, columns: int, dim: int = 16, seed: int = 0, **kwargs: Any) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator).to(**kwargs) for _ in range(columns)]


def _loss_and_grads(loss_fn, embeddings, **kwargs):
    leaves = [e.detach().clone().requires_grad_() for e in embeddings]
    loss = loss_fn.compute_loss_from_embeddings(leaves, None, **kwargs)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def _eval_copy(model, dtype=torch.float32):
    model = copy.deepcopy(model).to(dtype)
    for module in model.modules():  # no dropout: equal losses must give equal gradients
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


# ---- 1. autocast, 2. GradScaler ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("symmetric", [False, True], ids=["q2d", "symmetric"])
def test_forward_under_autocast_equals_float32_math_on_the_same_embeddings(device, dtype, symmetric):
    """Autocast used to make the fused function's matrix products fail on mixed dtypes."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 16).to(device)
    inputs = [x.to(device) for x in _embeddings(9, 3)]
    loss_fn = MNRPlus(None, symmetric=symmetric, tile_size=4)
    with torch.autocast(device_type=device, dtype=dtype):
        embeddings = [layer(x) for x in inputs]
        assert embeddings[0].dtype == dtype
        for embedding in embeddings:
            embedding.retain_grad()
        loss = loss_fn.compute_loss_from_embeddings(embeddings, None)
    assert loss.dtype == torch.float32
    loss.backward()
    reference = MultipleNegativesRankingLoss(
        None,
        **({"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"} if symmetric else {}),
    )
    expected, expected_grads = _loss_and_grads(reference, [e.detach().float() for e in embeddings])
    torch.testing.assert_close(loss.detach(), expected, **F32, msg="loss")
    for k, (embedding, want) in enumerate(zip(embeddings, expected_grads, strict=True)):
        assert embedding.grad.dtype == dtype
        torch.testing.assert_close(embedding.grad.float(), want, **LOW, msg=f"grad {k}")
    assert torch.isfinite(layer.weight.grad).all()
    assert layer.weight.grad.abs().sum() > 0
    # MNRL under the same autocast computes its logits in low precision: the same loss to that precision.
    with torch.autocast(device_type=device, dtype=dtype):
        mnrl = reference.compute_loss_from_embeddings([layer(x) for x in inputs], None)
    torch.testing.assert_close(loss.detach(), mnrl.detach().float(), rtol=5e-2, atol=5e-2, msg="vs MNRL autocast")


@pytest.mark.parametrize("device", DEVICES)
def test_cached_loss_under_autocast_matches_the_plain_loss(tiny_model, device):
    model = _eval_copy(tiny_model).to(device)
    features = [model.tokenize(column) for column in SENTENCES]
    features = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
    results = []
    for loss_fn in (MNRPlus(model), CachedMNRPlus(model, mini_batch_size=2)):
        model.zero_grad()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = loss_fn(copy.deepcopy(features), None)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (plain, plain_grads), (cached, cached_grads) = results
    torch.testing.assert_close(cached, plain, **LOW)
    assert plain_grads.keys() == cached_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=5e-2, atol=5e-3, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_gradients_stay_finite_under_grad_scaler(device):
    """Backward used to cast GradScaler's 2**16 incoming gradient to fp16 (inf) before multiplying."""
    embeddings = [e.to(device) for e in _embeddings(8, 2, dtype=torch.float16)]
    leaves = [e.clone().requires_grad_() for e in embeddings]
    scaler = torch.amp.GradScaler(device)
    loss = MNRPlus(None).compute_loss_from_embeddings(leaves, None)
    scaler.scale(loss).backward()
    _, expected = _loss_and_grads(MNRPlus(None), [e.float() for e in embeddings])
    for leaf, want in zip(leaves, expected, strict=True):
        assert leaf.grad.dtype == torch.float16
        assert torch.isfinite(leaf.grad).all()
        torch.testing.assert_close(leaf.grad.float() / scaler.get_scale(), want, **LOW)


# ---- 3. option assignment ------------------------------------------------------------------------------------

ASSIGNMENTS = [
    pytest.param({"scale": 5.0}, id="scale"),
    pytest.param({"similarity_fct": dot_score, "scale": 1.0}, id="dot"),
    pytest.param({"similarity_fct": euclidean_sim, "scale": 1.0}, id="euclidean-plain-path"),
    pytest.param({"directions": ("query_to_doc", "doc_to_query")}, id="directions"),
    pytest.param({"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}, id="partition"),
    pytest.param({"hardness_mode": "all_negatives", "hardness_strength": 3.0}, id="hardness"),
]


@pytest.mark.parametrize("changes", ASSIGNMENTS)
def test_assigned_options_take_effect_as_on_mnrl(changes):
    """`loss.scale = 5.0` used to raise, and `loss.similarity_fct = dot_score` was accepted and ignored."""
    ours, theirs = MNRPlus(None, tile_size=3), MultipleNegativesRankingLoss(None)
    for name, value in changes.items():
        setattr(ours, name, value)
        setattr(theirs, name, value)
    embeddings = _embeddings(7, 3, seed=3)
    actual, actual_grads = _loss_and_grads(ours, embeddings)
    expected, expected_grads = _loss_and_grads(theirs, embeddings)
    torch.testing.assert_close(actual, expected, **F32, msg="loss")
    for k, (got, want) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        torch.testing.assert_close(got, want, **F32, msg=f"grad {k}")
    config = ours.get_config_dict()
    for name, value in changes.items():
        assert config[name] == (value.__name__ if callable(value) else value)


@pytest.mark.parametrize("changes", [p for p in ASSIGNMENTS if p.id != "euclidean-plain-path"])
def test_cached_loss_forwards_assignments_to_its_inner_loss(tiny_model, changes):
    model = _eval_copy(tiny_model)
    ours = CachedMNRPlus(model, mini_batch_size=2, group_by_length=False)
    theirs = CachedMultipleNegativesRankingLoss(model, mini_batch_size=2)
    for name, value in changes.items():
        setattr(ours, name, value)
        setattr(theirs, name, value)
        assert getattr(ours.loss, name) == getattr(ours, name)
    features = [model.tokenize(column) for column in SENTENCES]
    with torch.no_grad():
        torch.testing.assert_close(ours(copy.deepcopy(features), None), theirs(copy.deepcopy(features), None), **F32)


class _Dot(torch.nn.Module):
    """A similarity that is a module, as sentence-transformers' tests use one."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T


@pytest.mark.parametrize("how", ["constructor", "assignment"])
def test_a_module_similarity_is_used_like_mnrl_uses_it(tiny_model, how):
    """nn.Module.__setattr__ used to file a module similarity away without our option ever seeing it."""
    embeddings = _embeddings(5, 2, seed=8)
    expected, expected_grads = _loss_and_grads(
        MultipleNegativesRankingLoss(None, scale=1.0, similarity_fct=_Dot()), embeddings
    )
    for loss_fn in (MNRPlus(None, scale=1.0), CachedMNRPlus(tiny_model, scale=1.0)):
        if how == "constructor":
            loss_fn = type(loss_fn)(loss_fn.model, scale=1.0, similarity_fct=_Dot())
        else:
            loss_fn.similarity_fct = _Dot()
        assert isinstance(loss_fn.similarity_fct, _Dot)
        assert loss_fn.get_config_dict()["similarity_fct"] == "_Dot"
        inner = loss_fn.loss if isinstance(loss_fn, CachedMNRPlus) else loss_fn
        actual, actual_grads = _loss_and_grads(inner, embeddings)
        torch.testing.assert_close(actual, expected, **F32)
        for got, want in zip(actual_grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, **F32)


def test_a_parameter_assigned_as_scale_is_trained_like_mnrl_trains_it():
    embeddings = _embeddings(6, 2, seed=9)
    grads = []
    for loss_fn in (MultipleNegativesRankingLoss(None), MNRPlus(None)):
        loss_fn.scale = torch.nn.Parameter(torch.tensor(5.0))
        assert len(list(loss_fn.parameters())) == 1  # the optimizer sees it
        _loss_and_grads(loss_fn, embeddings)
        grads.append(next(loss_fn.parameters()).grad)
    torch.testing.assert_close(grads[1], grads[0], **F32)
    assert grads[0] != 0


# ---- 5. learnable scale under MatryoshkaLoss, 7. its cap -------------------------------------------------------


def test_matryoshka_weights_the_cached_scale_gradient_like_the_plain_loss(tiny_model):
    """CachedMNRPlus used to keep only the last dimension's unweighted scale gradient."""
    model = _eval_copy(tiny_model, torch.float64)
    features = [model.tokenize(column) for column in SENTENCES]
    dims, weights = [32, 16, 8], [1.0, 0.5, 0.25]
    grads = {}
    for name, inner in (
        ("plain", MNRPlus(model, learnable_scale=True)),
        ("cached", CachedMNRPlus(model, mini_batch_size=3, learnable_scale=True)),
    ):
        inner.double()
        wrapper = MatryoshkaLoss(model, inner, dims, weights)
        model.zero_grad()
        wrapper(copy.deepcopy(features), None).backward()
        grads[name] = (inner.loss if name == "cached" else inner).log_scale_offset.grad.clone()
    assert grads["plain"] != 0
    torch.testing.assert_close(grads["cached"], grads["plain"], rtol=1e-7, atol=1e-9)


def test_the_scale_cap_does_not_block_its_gradient():
    """`exp().clamp(max=...)` in the graph used to give a scale above the cap a zero gradient, for good."""
    loss_fn = MNRPlus(None, scale=20.0, learnable_scale=True, max_scale=30.0)
    with torch.no_grad():
        loss_fn.log_scale_offset.fill_(math.log(60.0 / 20.0))  # an optimizer step overshot the cap
    _loss_and_grads(loss_fn, _embeddings(6, 2, seed=1))
    assert loss_fn.scale == pytest.approx(30.0)
    assert loss_fn.log_scale_offset.item() == pytest.approx(math.log(30.0 / 20.0))
    assert loss_fn.log_scale_offset.grad.abs() > 0


def test_weight_decay_pulls_the_scale_towards_its_initial_value():
    loss_fn = MNRPlus(None, scale=20.0, learnable_scale=True)
    with torch.no_grad():
        loss_fn.log_scale_offset.fill_(0.5)
    optimizer = torch.optim.AdamW(loss_fn.parameters(), lr=0.1, weight_decay=1.0)
    loss_fn.log_scale_offset.grad = torch.zeros(())
    optimizer.step()
    assert 20.0 < loss_fn.scale < 20.0 * math.exp(0.5)


# ---- 6. non-text inputs --------------------------------------------------------------------------------------


# ---- 8. NaN edge -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity_fct", [dot_score, cos_sim], ids=["dot", "cos"])
@pytest.mark.parametrize(
    "directions", [("query_to_doc", "query_to_query"), ("query_to_doc", "doc_to_doc")], ids=["q2q", "d2d"]
)
def test_a_batch_of_one_gives_mnrl_zero_gradients_not_nan(similarity_fct, directions):
    """A last batch of one (drop_last=False) used to give NaN gradients with query_to_query and dot products.

    The row's only query_to_query entry is masked; with a positive logit far below 0 (dot products are not
    bounded) the old kernel's exp(max - normaliser) overflowed to inf and met the masked entry's 0.
    """
    (anchor,) = _embeddings(1, 1, seed=6)
    embeddings = [anchor, -2.0 * anchor]  # a dot product of about -2 * 16: scaled, far below exp's range
    kwargs = {"similarity_fct": similarity_fct, "directions": directions}
    actual, actual_grads = _loss_and_grads(MNRPlus(None, **kwargs), embeddings)
    expected, expected_grads = _loss_and_grads(MultipleNegativesRankingLoss(None, **kwargs), embeddings)
    torch.testing.assert_close(actual, expected, **F32)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, **F32)


# ---- 11. no host synchronisation ------------------------------------------------------------------------------


@contextmanager
def no_host_sync():
    """Fail on every Python-level way our code could wait for the device: reading a value or a shape from data.

    On CPU nothing really waits, so this checks the design: on CUDA each of these calls would synchronise.
    """

    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"host synchronisation: {name}")

        return call

    patched = {
        (torch.Tensor, name): refuse(f"Tensor.{name}")
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "numpy")
    }
    patched.update({(torch, name): refuse(f"torch.{name}") for name in ("unique", "nonzero", "masked_select")})
    saved = {key: getattr(*key) for key in patched}
    for (owner, name), replacement in patched.items():
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for (owner, name), original in saved.items():
            setattr(owner, name, original)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="default"),
        pytest.param({"learnable_scale": True, "false_negative_ratio": 0.95, "symmetric": True}, id="all-extras"),
        pytest.param(
            {
                "false_negative_margin": 0.1,
                "hard_negatives": "own",
                "hardness_mode": "all_negatives",
                "hardness_strength": 1.0,
            },
            id="own",
        ),
        pytest.param({"similarity_fct": euclidean_sim}, id="plain-path"),
    ],
)
def test_forward_and_backward_never_wait_for_the_device(options):
    """float(scale), torch.unique, bool(grad == 1) and stats.tolist() used to run on every step."""
    loss_fn = MNRPlus(None, **options)
    columns = [
        {"input_ids": torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(k))} for k in range(3)
    ]
    leaves = [e.requires_grad_() for e in _embeddings(6, 3, seed=7)]
    with no_host_sync():
        row_ids = loss_fn.row_ids(columns)
        loss = loss_fn.compute_loss_from_embeddings(leaves, None, row_ids=row_ids)
        (loss * 0.5).backward()
    assert set(loss_fn.diagnostics) == {
        "accuracy",
        "positive_similarity",
        "hardest_negative_similarity",
        "masked_fraction",
        "masked_duplicates",
        "scale",
        "backend",
    }


@CUDA
def test_no_synchronisation_on_cuda():
    embeddings = [e.cuda().requires_grad_() for e in _embeddings(64, 3)]
    loss_fn = MNRPlus(None, learnable_scale=True, symmetric=True).cuda()
    row_ids = [torch.arange(64, device="cuda") + 100 * k for k in range(3)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn.compute_loss_from_embeddings(embeddings, None, row_ids=row_ids)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(loss_fn.diagnostics["accuracy"])
