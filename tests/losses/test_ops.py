"""The named pieces of the per-tile math (st_mnr_plus.losses.ops), each against autograd or a plain reading.

The end-to-end equivalence with MNRL and the float64 reference is in test_functional.py; these tests pin each
piece on its own, so that a change to one shows where it went wrong.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from st_mnr_plus.losses.ops import (
    STAT_NAMES,
    Block,
    Ids,
    Pool,
    accumulate,
    exclusion_mask,
    finish_gradients,
    logits,
    penalised_columns,
    probabilities_,
    tile_stats,
)

F64 = {"rtol": 1e-7, "atol": 1e-7}


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_pool_views_follow_the_sentence_transformers_layout():
    world, negatives, dim = 4, 2, 3
    queries = torch.arange(world * dim, dtype=torch.float64).reshape(world, dim)
    candidates = 100 + torch.arange(world * (1 + negatives) * dim, dtype=torch.float64).reshape(-1, dim)
    pool = Pool(queries, candidates, offset=1, local=2)
    assert (pool.world, pool.negatives) == (4, 2)
    torch.testing.assert_close(pool.anchors(0, 2), queries[1:3])
    torch.testing.assert_close(pool.positives(1, 2), candidates[2:3])
    torch.testing.assert_close(pool.documents(own=True), candidates[:4])
    own = pool.own_negatives(0, 2)  # (n, rows, d): negative column k of rows 1 and 2
    torch.testing.assert_close(own[0], candidates[5:7])
    torch.testing.assert_close(own[1], candidates[9:11])
    ids = Ids(torch.arange(4), torch.arange(12) + 100)
    torch.testing.assert_close(ids.own_negatives(pool, 0, 2), torch.tensor([[105, 109], [106, 110]]))


def test_exclusion_mask_marks_duplicates_and_similarities_above_the_bound():
    sim = torch.tensor([[0.9, 0.5, 0.7], [0.2, 0.8, 0.85]])
    excluded, duplicates = exclusion_mask(sim, torch.tensor([1, 2]), torch.tensor([1, 2, 1]), torch.tensor([0.8, 0.8]))
    assert duplicates.tolist() == [[True, False, True], [False, True, False]]
    assert excluded.tolist() == [[True, False, True], [False, True, True]]
    by_column, _ = exclusion_mask(sim, None, None, torch.tensor([0.6, 0.9, 0.8]), threshold_by_column=True)
    assert by_column.tolist() == [[True, False, False], [False, False, True]]
    assert exclusion_mask(sim, None, None, None) == (None, None)


@pytest.mark.parametrize(
    ("mode", "inverted", "penalised"),
    [
        # Row 0's own documents are columns 0 and 2 (positive, own negative), row 1's are 1 and 3.
        ("in_batch_negatives", True, [[False, True, False, True], [True, False, True, False]]),
        ("all_negatives", True, [[False, True, True, True], [True, False, True, True]]),
        ("hard_negatives", False, [[False, False, True, False], [False, False, False, True]]),
    ],
)
def test_penalised_columns_follow_mnrl_hardness_modes(mode, inverted, penalised):
    columns = penalised_columns(mode, torch.tensor([0, 1]), world=2, groups=2)
    assert columns[1] is inverted
    selected = torch.zeros(2, 4, dtype=torch.bool).scatter_(1, columns[0], True)
    assert (~selected if inverted else selected).tolist() == penalised
    assert penalised_columns(None, torch.tensor([0, 1]), 2, 2) is None
    assert penalised_columns("hard_negatives", torch.tensor([0, 1]), 2, 1) is None  # no hard-negative column


def test_logits_scale_penalise_and_exclude():
    sim = torch.tensor([[0.5, -0.2], [0.1, 0.3]], requires_grad=True)
    penalised = torch.tensor([[False, True], [True, False]])
    excluded = torch.tensor([[False, False], [False, True]])
    out = logits(sim, 10.0, excluded, penalised, alpha=2.0)
    expected = torch.tensor([[5.0, -2.0 - 0.4], [1.0 + 0.2, float("-inf")]])
    torch.testing.assert_close(out, expected)
    out[torch.isfinite(out)].sum().backward()
    # The penalty is a stop-gradient: d logit / d sim is the scale everywhere it is not excluded.
    torch.testing.assert_close(sim.grad, torch.tensor([[10.0, 10.0], [10.0, 0.0]]))


def test_probabilities_are_the_softmax_gradient_under_a_known_normaliser():
    z = _randn(3, 5).requires_grad_()
    normaliser = torch.logsumexp(z, dim=1)
    (normaliser.sum() * 0.25).backward()
    torch.testing.assert_close(probabilities_(z.detach().clone(), normaliser.detach(), 0.25), z.grad, **F64)
    column = torch.logsumexp(z.detach(), dim=0)
    expected = torch.softmax(z.detach(), dim=0) * 0.5
    torch.testing.assert_close(probabilities_(z.detach().clone(), column, 0.5, by_column=True), expected, **F64)
    masked = torch.tensor([[0.0, float("-inf")]])
    assert probabilities_(masked, torch.tensor([0.0]), 1.0).tolist() == [[1.0, 0.0]]  # no NaN from -inf


@pytest.mark.parametrize("own", [False, True], ids=["dense", "own"])
def test_accumulate_adds_the_two_matrix_products_of_a_block(own):
    x, d_logits = _randn(3, 4, seed=1).requires_grad_(), _randn(3, 2, seed=2)
    y = _randn(2, 3, 4, seed=3) if own else _randn(2, 4, seed=3)
    y = y.requires_grad_()
    sim = torch.einsum("rd,krd->rk", x, y) if own else x @ y.T
    (sim * d_logits).sum().backward()
    block = Block("query_to_doc", sim.detach(), x.detach(), y.detach(), torch.zeros_like(x), torch.zeros_like(y))
    accumulate(block, d_logits)
    torch.testing.assert_close(block.x_grad, x.grad, **F64)
    torch.testing.assert_close(block.y_grad, y.grad, **F64)


@pytest.mark.parametrize("cosine", [False, True], ids=["dot", "cos"])
def test_finish_gradients_adds_the_positive_term_scale_gradient_and_normalisation(cosine):
    """A toy loss sum(g * sim) - mean(sim(q_i, p_i)), scaled, against autograd through F.normalize."""
    raw_q, raw_c = _randn(3, 4, seed=4).requires_grad_(), _randn(6, 4, seed=5).requires_grad_()
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    g = _randn(3, 6, seed=6)  # d loss / d logit of every query x candidate entry
    q, c = (F.normalize(raw_q, dim=1), F.normalize(raw_c, dim=1)) if cosine else (raw_q, raw_c)
    sim = q @ c.T
    loss = (g * scale * sim).sum() - scale * (q * c[:3]).sum(dim=1).mean()
    loss.backward()
    qd, cd = q.detach(), c.detach()
    pool = Pool(qd, cd, 0, 3)
    grads = Pool(g @ cd, g.T @ qd, 0, 3)
    inverse = (1 / raw_q.detach().norm(dim=1), 1 / raw_c.detach().norm(dim=1)) if cosine else None
    d_queries, d_candidates, d_scale = finish_gradients(pool, grads, 7.0, inverse)
    torch.testing.assert_close(d_queries, raw_q.grad, **F64)
    torch.testing.assert_close(d_candidates, raw_c.grad, **F64)
    torch.testing.assert_close(d_scale, scale.grad, **F64)


def test_tile_stats_count_accuracy_similarities_and_masking():
    sim = torch.tensor([[0.9, 0.95, 0.1], [0.2, 0.6, 0.7]])
    positive = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    excluded = torch.tensor([[False, True, False], [False, False, False]])  # row 0's 0.95 is a false negative
    duplicates = excluded.clone()
    stats = dict(zip(STAT_NAMES, tile_stats(sim.clone(), excluded, duplicates, positive).tolist(), strict=True))
    assert stats["correct"] == 1  # row 0 beats its remaining 0.1; row 1 loses to 0.7
    assert stats["positive_similarity_sum"] == pytest.approx(1.5)
    assert stats["hardest_negative_similarity_sum"] == pytest.approx(0.1 + 0.7)
    assert stats["rows_with_negatives"] == 2
    assert (stats["masked"], stats["masked_duplicates"], stats["negatives"]) == (1, 1, 4)
    lone = dict(
        zip(STAT_NAMES, tile_stats(torch.tensor([[0.3]]), None, None, (torch.tensor([0]),) * 2).tolist(), strict=True)
    )
    assert (lone["correct"], lone["rows_with_negatives"], lone["negatives"]) == (1, 0, 0)
