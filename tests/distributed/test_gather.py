"""``gather_across_devices=True`` on 2 real gloo processes (CPU) equals one process on the whole batch.

The workers (``tests/distributed/_gather_worker.py``) are started once per module for every case; each test then
compares one case's per-rank loss and DDP-averaged gradients with a one-process run of the same loss on all rows.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.distributed._common import (
    CASES,
    batch_columns,
    build_loss,
    loss_and_grads,
    prepare_model,
    run_workers,
)

# Two gloo processes, about 15 s: under -m slow with the other multi-process runs (CI runs them).
pytestmark = pytest.mark.slow

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def saved_tiny_model(_tiny_model_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_model")
    _tiny_model_session.save(str(path))
    return path


@pytest.fixture(scope="module")
def loaded_tiny_model(saved_tiny_model: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(saved_tiny_model), device="cpu")


@pytest.fixture(scope="module")
def gathered(saved_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run every case on 2 ranks once; return the folder of ``<case>.rank<r>.pt`` results."""
    workdir = tmp_path_factory.mktemp("gather")
    args = [
        "--init-file",
        str(workdir / "rendezvous"),
        "--model-dir",
        str(saved_tiny_model),
        "--out",
        str(workdir),
        "--cases",
        ",".join(CASES),
    ]
    run_workers("tests.distributed._gather_worker", args, WORLD_SIZE, workdir, timeout=240)
    return workdir


@pytest.mark.parametrize("case_id", list(CASES))
def test_two_processes_equal_one(case_id: str, gathered: Path, loaded_tiny_model) -> None:
    case = CASES[case_id]
    ranks = [torch.load(gathered / f"{case_id}.rank{rank}.pt") for rank in range(WORLD_SIZE)]

    model = prepare_model(copy.deepcopy(loaded_tiny_model))
    ref_loss_fn = build_loss(case, model, gather=False)
    ref_loss, ref_grads = loss_and_grads(
        ref_loss_fn, model, batch_columns(case.batch_size, case.num_columns, case.duplicates)
    )
    if case.duplicates and getattr(ref_loss_fn, "mask_duplicates", False):
        # Otherwise equality would not show that masking works across ranks.
        assert ref_loss_fn.diagnostics["masked_duplicates"] > 0, "the batch has no duplicates to mask"

    # Each rank's loss is the mean over its own rows, so the global mean is the mean over ranks.
    # Float64 (see prepare_model): torch's default float64 tolerances.
    tol = {"rtol": 1e-7, "atol": 1e-7}
    torch.testing.assert_close(
        torch.stack([r["loss"] for r in ranks]).mean(), ref_loss, **tol, msg=lambda m: f"loss: {m}"
    )
    for rank, result in enumerate(ranks):
        assert sorted(result["grads"]) == sorted(ref_grads), f"rank {rank} has gradients for other parameters"
        for name, ref in ref_grads.items():
            torch.testing.assert_close(
                result["grads"][name], ref, **tol, msg=lambda m, rank=rank, name=name: f"rank {rank}, {name}: {m}"
            )
    assert any(g.abs().sum() > 0 for g in ref_grads.values()), "the reference gradients are all zero"
