"""The fused Triton kernels behind MNRPlus: ``backend="triton"`` gives the PyTorch path's loss, statistics and
gradients (the embeddings' and a learnable scale's), and ``backend="auto"`` chooses between them.

On a machine without CUDA the kernels run in Triton's interpreter on CPU tensors (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``); the CUDA parameters run the compiled kernels where a GPU is present.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from sentence_transformers.util import dot_score

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
from st_mnr_plus.losses import functional as fn
from st_mnr_plus.losses.functional import MNRSpec, choose_backend, mnr_plus_loss
from st_mnr_plus.losses.options import OptionError

triton = pytest.importorskip("triton")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA)]
# Both paths accumulate in float32, in other orders: fp32's default rtol loosened to 2e-5. bf16 embeddings: the
# kernels read the bf16-rounded normalised embeddings, the PyTorch path normalises in float32 (torch's bf16 rtol).
TOLERANCE = {torch.float32: {"rtol": 2e-5, "atol": 2e-5}, torch.bfloat16: {"rtol": 1.6e-2, "atol": 2e-3}}

CASES = [
    pytest.param({}, 2, id="defaults"),
    pytest.param({"symmetric": True}, 2, id="symmetric"),
    pytest.param({"directions": ("query_to_doc", "doc_to_query")}, 3, id="q2d+d2q-joint"),
    pytest.param({"hard_negatives": "own"}, 4, id="own-3neg"),
    pytest.param({"hard_negatives": "shared", "false_negative_ratio": 0.9}, 3, id="shared-ratio"),
    pytest.param({"false_negative_margin": 0.05, "symmetric": True, "hard_negatives": "own"}, 3, id="margin-sym-own"),
    pytest.param({"learnable_scale": True, "scale": 15.0}, 3, id="learnable"),
    pytest.param({"similarity_fct": dot_score, "scale": 1.0}, 2, id="dot"),
    pytest.param({"hardness_mode": "in_batch_negatives", "hardness_strength": 2.0}, 3, id="hard-in-batch"),
    pytest.param(
        {"hardness_mode": "all_negatives", "hardness_strength": 1.5, "hard_negatives": "own"}, 3, id="hard-all-own"
    ),
    pytest.param(
        {"hardness_mode": "hard_negatives", "hardness_strength": 3.0, "symmetric": True}, 3, id="hard-neg-sym"
    ),
    pytest.param(
        {"hardness_mode": "hard_negatives", "hardness_strength": 3.0, "hard_negatives": "own"}, 4, id="hard-neg-own"
    ),
    pytest.param(
        {"partition_mode": "per_direction", "symmetric": True, "learnable_scale": True}, 2, id="per-direction"
    ),
]


def _embeddings(batch: int, columns: int, dim: int, dtype: torch.dtype, device: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator).to(device=device, dtype=dtype) for _ in range(columns)]


def _with_duplicates(embeddings: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Rows 0 and 3 share their positive (and embedding), rows 1 and 4 their anchor: the masks have work."""
    embeddings = [e.clone() for e in embeddings]
    embeddings[1][3] = embeddings[1][0]
    embeddings[0][4] = embeddings[0][1]
    batch = embeddings[0].shape[0]
    row_ids = [torch.arange(batch) + 1000 * k for k in range(len(embeddings))]
    row_ids[1][3] = row_ids[1][0]
    row_ids[0][4] = row_ids[0][1]
    return embeddings, row_ids


def _run(loss_fn: MNRPlus, embeddings, row_ids) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, Any]]:
    leaves = [e.detach().clone().requires_grad_() for e in embeddings]
    loss = loss_fn.compute_loss_from_embeddings(leaves, None, row_ids=row_ids)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves], loss_fn.diagnostics


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("options", "columns"), CASES)
def test_the_kernels_give_the_pytorch_path_loss_statistics_and_gradients(options, columns, dtype, device):
    embeddings, row_ids = _with_duplicates(_embeddings(7, columns, 24, dtype, device))
    results = {}
    for backend in ("torch", "triton"):
        loss_fn = MNRPlus(None, backend=backend, **options).to(device)
        results[backend] = (*_run(loss_fn, embeddings, row_ids), loss_fn)
    (want, want_grads, want_diag, ref), (got, got_grads, got_diag, ours) = results["torch"], results["triton"]
    assert (want_diag.pop("backend"), got_diag.pop("backend")) == ("torch", "triton")
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(got, want, **tolerance, msg="loss")
    for k, (g, w) in enumerate(zip(got_grads, want_grads, strict=True)):
        assert w.abs().max() > 0, f"zero gradient of column {k}"
        torch.testing.assert_close(g.float(), w.float(), **tolerance, msg=f"gradient of column {k}")
    for key in ("masked_duplicates", "masked_fraction", "accuracy"):
        assert got_diag[key] == want_diag[key], key
    for key in ("positive_similarity", "hardest_negative_similarity"):
        torch.testing.assert_close(got_diag[key], want_diag[key], **tolerance, msg=key)
    if options.get("learnable_scale"):
        want_scale, got_scale = ref.log_scale_offset.grad, ours.log_scale_offset.grad
        assert want_scale.abs() > 0
        torch.testing.assert_close(got_scale, want_scale, **tolerance, msg="scale gradient")


@pytest.mark.parametrize(("offset", "symmetric"), [(0, False), (4, False), (4, True)], ids=["rank0", "rank1", "sym"])
def test_gathered_candidates_score_this_ranks_rows(offset, symmetric):
    """Under gather_across_devices the kernels take every rank's rows and score this rank's (offset, local)."""
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(8, 16, generator=generator, requires_grad=True)
    candidates = torch.randn(16, 16, generator=generator, requires_grad=True)
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    grads = {}
    for backend in ("torch", "triton"):
        spec = MNRSpec.of(4, offset, directions=directions, backend=backend)
        loss, stats = mnr_plus_loss(queries, candidates, 20.0, spec, "cos")
        grads[backend] = (loss.detach(), stats, *torch.autograd.grad(loss, [queries, candidates]))
    for name, got, want in zip(
        ("loss", "stats", "queries", "candidates"), grads["triton"], grads["torch"], strict=True
    ):
        torch.testing.assert_close(got, want, **TOLERANCE[torch.float32], msg=name)


def test_the_cached_loss_runs_its_loss_stage_on_the_kernels(tiny_model):
    tiny_model.eval()  # no dropout: the two runs embed alike
    features = [
        tiny_model.preprocess(["a man plays", "two dogs", "a chef cooks", "rain falls"]),
        tiny_model.preprocess(["music", "dogs outside", "food", "weather"]),
    ]
    results = {}
    for backend in ("torch", "triton"):
        loss_fn = CachedMNRPlus(tiny_model, mini_batch_size=2, backend=backend, group_by_length=False)
        tiny_model.zero_grad()
        torch.manual_seed(0)
        loss = loss_fn([dict(f) for f in features], None)
        loss.backward()
        grads = [p.grad.clone() for p in tiny_model.parameters() if p.grad is not None]
        results[backend] = (loss.detach(), grads, loss_fn.get_config_dict())
    torch.testing.assert_close(results["triton"][0], results["torch"][0], **TOLERANCE[torch.float32])
    # Parameter gradients sum many float32 products (some are ~0): compared relative to the largest of them all.
    largest = max(float(want.abs().max()) for want in results["torch"][1])
    for got, want in zip(results["triton"][1], results["torch"][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * largest)
    assert results["triton"][2]["backend_used"] == "triton"
    assert results["torch"][2]["backend"] == "torch"


# ---- the choice -------------------------------------------------------------------------------------------------


def _spec(**options: Any) -> MNRSpec:
    return MNRSpec.of(4, **options)


def test_auto_takes_the_kernels_for_cuda_tensors_only(monkeypatch):
    monkeypatch.setattr(fn, "triton_available", lambda: True)
    assert choose_backend(_spec(), "cuda", torch.bfloat16, "cos") == ("triton", None)
    assert choose_backend(_spec(), "cpu", torch.float32, "cos") == ("torch", "cpu tensors")
    monkeypatch.setattr(fn, "triton_available", lambda: False)
    assert choose_backend(_spec(), "cuda", torch.float32, "cos").name == "torch"


@pytest.mark.parametrize(
    ("options", "similarity", "dtype", "named"),
    [
        pytest.param({"directions": ("query_to_doc", "query_to_query")}, "cos", torch.float32, "directions=", id="q2q"),
        pytest.param({}, None, torch.float32, "similarity_fct", id="euclidean"),
        pytest.param({}, "cos", torch.float64, "dtype torch.float64", id="float64"),
    ],
)  # fmt: skip
def test_what_the_kernels_do_not_compute_falls_back_with_one_info_line_or_is_refused(
    monkeypatch, caplog, options, similarity, dtype, named
):
    monkeypatch.setattr(fn, "triton_available", lambda: True)
    monkeypatch.setattr(fn, "_LOGGED_FALLBACKS", set())
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.losses.functional"):
        for _ in range(3):
            choice = choose_backend(_spec(**options), "cuda", dtype, similarity)
    assert choice.name == "torch"
    assert named in choice.reason
    assert [r.getMessage() for r in caplog.records].count(f"MNRPlus runs on the PyTorch path: {choice.reason}.") == 1
    with pytest.raises(OptionError, match=f'backend="triton" does not compute .*{named}'):
        choose_backend(_spec(backend="triton", **options), "cuda", dtype, similarity)


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(OptionError, match=r"runs on CUDA tensors, got cpu ones.*TRITON_INTERPRET=1"):
        choose_backend(_spec(backend="triton"), "cpu", torch.float32, "cos")
    monkeypatch.setattr(fn, "triton_available", lambda: False)
    with pytest.raises(OptionError, match=r'needs triton: pip install "st-mnr-plus\[cuda\]"'):
        choose_backend(_spec(backend="triton"), "cuda", torch.float32, "cos")


def test_auto_on_a_cpu_is_the_pytorch_path_as_before():
    loss_fn = MNRPlus(None)
    _run(loss_fn, *_with_duplicates(_embeddings(6, 2, 8, torch.float32, "cpu")))
    assert loss_fn.backend_used == ("torch", "cpu tensors")
    assert loss_fn.diagnostics["backend"] == "torch"
    assert loss_fn.get_config_dict()["backend"] == "auto"
    assert loss_fn.get_config_dict()["backend_used"] == "torch"
