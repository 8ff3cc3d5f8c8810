"""The GPU path's element-wise Triton kernels (st_mnr_plus.losses.kernels) in Triton's interpreter, against a
dense float64 reference built from :mod:`st_mnr_plus.losses.ops`' masks and logits.

The kernels read a chunk's float32 similarities; the reference takes the same matrix in float64, builds every
logit with ``ops.exclusion_mask``, ``ops.penalised_columns`` and ``ops.logits``, and leaves the positive out as
the kernels do. The shapes put rows across program blocks (BM = 4), columns across several column steps (BN =
256), a chunk that starts past row 0, batch 1, and own hard negatives after the columns.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") == "0":  # tests/conftest.py on a GPU machine: the kernels stay compiled
    pytest.skip(
        "TRITON_INTERPRET=0: the kernels are tested on CUDA tensors in test_backend.py", allow_module_level=True
    )
os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton")
from st_mnr_plus.losses import kernels, ops
from st_mnr_plus.losses.kernels import ColumnInputs, RowInputs

if not kernels.interpreting():  # imported earlier in this process without the interpreter: these tests cannot run
    raise RuntimeError("st_mnr_plus.losses.kernels was imported before this module set TRITON_INTERPRET=1")

SCALE = 20.0
# What remains against float64: float32 exp/log and sums in another order (up to ~600 terms): rtol 1e-5.
FP32 = {"rtol": 1e-5, "atol": 1e-6}
G_TOLERANCE = {torch.float32: FP32, torch.bfloat16: {"rtol": 2**-8, "atol": 1e-7}}


class Chunk:
    """A chunk's inputs: ``rows`` rows from global ``row0`` against ``cols`` columns of a pool of ``world``
    queries, with duplicates, false-negative bounds and own hard negatives."""

    def __init__(self, rows: int, cols: int, world: int, row0: int, n_own: int, mode: str | None, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.rows, self.cols, self.world, self.row0, self.n_own, self.mode = rows, cols, world, row0, n_own, mode
        self.alpha = 2.0 if mode else 0.0
        self.sim = (torch.rand(rows, cols, generator=gen) * 1.6 - 0.8).float()
        self.own_sim = (torch.rand(rows, n_own, generator=gen) * 1.6 - 0.8).float() if n_own else None
        total = world * (1 + n_own) if n_own else cols
        self.ids = torch.arange(total, dtype=torch.int64)
        g = torch.arange(row0, row0 + rows)
        if cols > 3 and rows > 1:  # row 0's positive duplicated in two other columns, and an own negative
            self.ids[(g[0] + 1) % cols] = self.ids[g[0]]
            self.ids[(g[0] + 3) % cols] = self.ids[g[0]]
            if n_own:
                self.ids[world + g[1]] = self.ids[g[1]]
        positive = self.sim[torch.arange(rows), g] if cols > g.max() else torch.zeros(rows)
        self.threshold = torch.where(torch.arange(rows) % 2 == 0, positive + 0.3, torch.full((rows,), float("inf")))
        self.scale = torch.tensor([SCALE])

    def inputs(self) -> RowInputs:
        return RowInputs(self.ids, self.threshold.contiguous(), self.scale, (self.mode, self.alpha), self.row0)

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, kept)`` in float64, ``(rows, cols + n_own)``: the own entries last."""
        g = torch.arange(self.row0, self.row0 + self.rows)
        sim = self.sim.double()
        excluded, _ = ops.exclusion_mask(sim, self.ids[g], self.ids[: self.cols], self.threshold.double())
        positive = g[:, None] == torch.arange(self.cols)[None, :]
        excluded = excluded & ~positive
        groups = max(self.cols // self.world, 1)
        penalised = ops.penalised_columns(self.mode, g, self.world, groups)
        dense = ops.logits(sim, SCALE, excluded, penalised, self.alpha)
        kept = ~excluded & ~positive
        if not self.n_own:
            return dense.masked_fill(~kept, float("-inf")), kept
        own = self.own_sim.double()
        own_ids = self.ids[self.world :].view(self.n_own, self.world)[:, g].T
        own_excluded = (own_ids == self.ids[g][:, None]) | (own > self.threshold.double()[:, None])
        uniform = torch.ones_like(own, dtype=torch.bool) if self.mode in ("hard_negatives", "all_negatives") else None
        own_logits = ops.logits(own, SCALE, own_excluded, uniform, self.alpha)
        logits = torch.cat([dense, own_logits], dim=1)
        kept = torch.cat([kept, ~own_excluded], dim=1)
        return logits.masked_fill(~kept, float("-inf")), kept

    def all_sim(self) -> torch.Tensor:
        return self.sim.double() if self.own_sim is None else torch.cat([self.sim, self.own_sim], 1).double()


CHUNKS = [
    pytest.param((9, 600, 600, 5, 0, None), id="3-column-steps-row0-5"),
    pytest.param((1, 1, 1, 0, 0, None), id="batch-1"),
    pytest.param((6, 40, 20, 3, 0, "in_batch_negatives"), id="in-batch-1neg"),
    pytest.param((7, 20, 20, 2, 3, "all_negatives"), id="own-3neg-all"),
    pytest.param((6, 60, 20, 10, 0, "hard_negatives"), id="shared-2neg-hard"),
    pytest.param((5, 20, 20, 0, 2, "hard_negatives"), id="own-2neg-hard"),
]


@pytest.mark.parametrize("shape", CHUNKS)
def test_row_statistics_match_the_float64_reference(shape, one_thread):
    chunk = Chunk(*shape)
    got = kernels.row_statistics(chunk.sim, chunk.own_sim, chunk.inputs(), chunk.world)
    logits, kept = chunk.reference()
    torch.testing.assert_close(got.lse.double(), torch.logsumexp(logits, dim=1), **FP32, msg="lse")
    hardest = chunk.all_sim().masked_fill(~kept, float("-inf")).amax(dim=1)
    torch.testing.assert_close(got.hardest.double(), hardest, **FP32, msg="hardest")
    g = torch.arange(chunk.row0, chunk.row0 + chunk.rows)
    candidates = torch.ones_like(kept)
    candidates[: chunk.rows, : chunk.cols] &= g[:, None] != torch.arange(chunk.cols)[None, :]
    assert got.masked.tolist() == (candidates & ~kept).sum(dim=1).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", CHUNKS)
def test_probabilities_match_the_float64_reference(shape, dtype, one_thread):
    chunk = Chunk(*shape)
    logits, _ = chunk.reference()
    norm = torch.logaddexp(torch.logsumexp(logits, dim=1), torch.zeros(chunk.rows, dtype=torch.float64))
    sim = chunk.sim.clone()  # G is written over it
    out, own_p, psim = kernels.probabilities(sim, chunk.own_sim, chunk.inputs(), norm.float(), dtype, chunk.world)
    assert out.dtype == dtype
    assert out.untyped_storage().data_ptr() == sim.untyped_storage().data_ptr()
    p = torch.exp(logits - norm[:, None])
    torch.testing.assert_close(out.double(), p[:, : chunk.cols], **G_TOLERANCE[dtype], msg="G")
    if chunk.n_own:
        torch.testing.assert_close(own_p.double(), p[:, chunk.cols :], **FP32, msg="own")
    else:
        assert own_p is None
    torch.testing.assert_close(psim.double(), (p * chunk.all_sim()).sum(dim=1), **FP32, msg="sum of p * sim")


def test_columns_read_down_the_positives_block_match_the_reference(one_thread):
    """doc_to_query of positive j is column j of the anchors x positives block: its lse over a chunk's rows, and
    the column probabilities added to G (no penalty, the column's threshold and identity)."""
    world, rows, row0 = 300, 9, 4
    chunk = Chunk(rows, world, world, row0, 0, None, seed=1)
    query_ids = torch.arange(world) + 10_000
    query_ids[row0 + 1] = query_ids[7]  # query 7 duplicates a row's anchor: masked in column 7
    thresholds = torch.where(torch.arange(world) % 3 == 0, torch.tensor(0.2), torch.tensor(float("inf")))
    columns = ColumnInputs(query_ids, thresholds.float())
    got = kernels.column_lse(chunk.sim, chunk.inputs(), columns)
    g = torch.arange(row0, row0 + rows)
    sim = chunk.sim.double()
    excluded, _ = ops.exclusion_mask(sim, query_ids[g], query_ids, thresholds.double(), threshold_by_column=True)
    positive = g[:, None] == torch.arange(world)[None, :]
    logits = (sim * SCALE).masked_fill(excluded | positive, float("-inf"))
    want = torch.logsumexp(logits, dim=0)
    torch.testing.assert_close(got.double(), want, **FP32, msg="column lse")
    column_norm = torch.logaddexp(want, torch.zeros(world, dtype=torch.float64)).float()
    row_norm = torch.full((rows,), 5.0)
    with_columns = ColumnInputs(query_ids, thresholds.float(), column_norm)
    out, _, psim = kernels.probabilities(chunk.sim.clone(), None, chunk.inputs(), row_norm, torch.float32, world,
                                         with_columns)  # fmt: skip
    row_logits, _ = chunk.reference()
    p = torch.exp(row_logits - 5.0) + torch.exp(logits - column_norm.double()[None, :])
    torch.testing.assert_close(out.double(), p, **FP32, msg="G with columns")
    torch.testing.assert_close(psim.double(), (p * sim).sum(dim=1), **FP32, msg="sum of p * sim")


def test_large_logits_do_not_overflow_and_a_row_with_nothing_kept_gives_minus_infinity(one_thread):
    chunk = Chunk(4, 300, 300, 0, 0, None)
    chunk.sim.mul_(50.0)  # logits up to 800: exp would overflow without the running maximum
    chunk.threshold = torch.tensor([float("inf"), -1e9, float("inf"), float("inf")])  # row 1: every entry masked
    got = kernels.row_statistics(chunk.sim, None, chunk.inputs(), chunk.world)
    logits, _ = chunk.reference()
    assert got.lse[1] == float("-inf")
    assert got.hardest[1] == float("-inf")
    torch.testing.assert_close(got.lse[[0, 2, 3]].double(), torch.logsumexp(logits, 1)[[0, 2, 3]], **FP32)
    norm = torch.logaddexp(got.lse, torch.zeros(4))
    out, _, _ = kernels.probabilities(chunk.sim.clone(), None, chunk.inputs(), norm, torch.bfloat16, 300)
    assert torch.isfinite(out).all()
    assert out[1].abs().sum() == 0


def test_interpreting_is_true_under_the_interpreter():
    assert kernels.interpreting()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sim": torch.zeros(3, 5, dtype=torch.float64)}, "float32 matrix"),
        ({"sim": torch.zeros(5, 3).T}, "unit column stride"),
        ({"threshold": torch.zeros(2)}, r"the thresholds must be \(3,\) float32"),
        ({"own_sim": torch.zeros(2, 1)}, r"own_sim must be a contiguous \(3, n\) float32"),
        ({"mode": "hardest"}, "unknown hardness mode 'hardest'"),
    ],
)
def test_bad_inputs_raise_value_error(change: dict, match: str):
    sim = change.get("sim", torch.zeros(3, 5))
    rows = RowInputs(torch.arange(5), change.get("threshold", torch.zeros(3)), torch.tensor([1.0]),
                     (change.get("mode"), 0.0), 0)  # fmt: skip
    with pytest.raises(ValueError, match=match):
        kernels.row_statistics(sim, change.get("own_sim"), rows, 5)


def test_probabilities_refuse_a_dtype_they_cannot_store():
    rows = RowInputs(torch.arange(5), torch.zeros(3), torch.tensor([1.0]), (None, 0.0), 0)
    with pytest.raises(ValueError, match=r"dtype must be float32, bfloat16 or float16, got torch\.float64"):
        kernels.probabilities(torch.zeros(3, 5), None, rows, torch.zeros(3), torch.float64, 5)
