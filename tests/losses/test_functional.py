"""MNRPlus's math on plain tensors: equivalence with sentence-transformers' MNRL and with the float64 reference."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim, dot_score

from st_mnr_plus.losses import MNRPlus
from st_mnr_plus.losses.functional import MNRSpec, mnr_plus_loss, plain_mnr_loss, row_hashes
from st_mnr_plus.losses.identity import UnidentifiableRowsError
from tests.reference import reference_mnr_loss

# Tolerances by dtype (torch's defaults for float32/float64; bf16 compared against the float32 result).
TOL = {
    torch.float32: {"rtol": 1.3e-6, "atol": 1e-5},
    torch.float64: {"rtol": 1e-7, "atol": 1e-7},
    # bf16 embeddings carry ~3 significant digits; the loss itself is computed in float32.
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}
TILE = 4  # small, so that every batch above 4 rows spans several tiles

DIRECTION_SETS = {
    "q2d": ("query_to_doc",),
    "q2d+d2q": ("query_to_doc", "doc_to_query"),
    "q2d+q2q": ("query_to_doc", "query_to_query"),
    "q2d+d2d": ("query_to_doc", "doc_to_doc"),
    "all4": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


# ---- the option grids: all pairs of option levels --------------------------------------------------------------


def custom_cos(a, b):  # the same function under another name: MNRPlus cannot tile it and takes the plain path
    return cos_sim(a, b)


def custom_dot(a, b):
    return dot_score(a, b)


# Each factor: level id -> value. directions x partition_mode is one factor because per_direction excludes q2q/d2d.
CONFIG = {
    f"{name}-{mode}": (dirs, mode)
    for name, dirs in DIRECTION_SETS.items()
    for mode in ("joint", "per_direction")
    if mode == "joint" or not set(dirs) & {"query_to_query", "doc_to_doc"}
}
HARDNESS = {
    "nohard": (None, 0.0),
    "inbatch": ("in_batch_negatives", 3.0),
    "hardneg": ("hard_negatives", 3.0),
    "allneg": ("all_negatives", 3.0),
}
# (similarity for sentence-transformers and the reference, similarity for MNRPlus, scale): the tiled path for
# cos_sim/dot_score, the plain (untiled) path for any other function.
SIMILARITY = {
    "cos": (cos_sim, cos_sim, 20.0),
    "dot": (dot_score, dot_score, 1.0),
    "plaincos": (cos_sim, custom_cos, 20.0),
    "plaindot": (dot_score, custom_dot, 1.0),
}
MNRL_FACTORS = {
    "config": CONFIG,
    "hardness": HARDNESS,
    "similarity": SIMILARITY,
    "negatives": {"neg0": 0, "neg1": 1, "neg3": 3},
    "batch": {"B1": 1, "B2": 2, "B5": TILE + 1, "B7": 7},  # B5 and B7 end in a ragged tile
    "dtype": {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16},
}
REFERENCE_FACTORS = {
    "config": CONFIG,
    "hardness": HARDNESS,
    "similarity": SIMILARITY,
    "hard_negatives": {"shared": "shared", "own": "own"},
    "margin": {"nomargin": None, "margin0.1": 0.1, "margin-0.2": -0.2},
}


def _pair_key(factors: list[str], a: str, i: str, b: str, j: str) -> tuple[str, str, str, str]:
    return (a, i, b, j) if factors.index(a) < factors.index(b) else (b, j, a, i)


def level_pairs(factors: dict[str, dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Every (factor a, level of a, factor b, level of b) for a before b."""
    return {(a, i, b, j) for a, b in itertools.combinations(factors, 2) for i in factors[a] for j in factors[b]}


def all_pairs(factors: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """A small list of cases (factor -> level id) in which every pair of levels of two factors occurs at least once.

    Greedy and deterministic: each case starts from the first pair not yet covered and gives every other factor
    the level that covers the most new pairs (ties to the first level); larger factors are filled first.
    """
    names = list(factors)
    uncovered = level_pairs(factors)
    cases = []
    while uncovered:
        a, i, b, j = min(uncovered, key=lambda p: (names.index(p[0]), p[1], names.index(p[2]), p[3]))
        case = {a: i, b: j}
        for name in sorted(names, key=lambda n: -len(factors[n])):
            if name not in case:
                levels = list(factors[name])
                case[name] = max(
                    levels,
                    key=lambda level: (
                        sum(_pair_key(names, name, level, g, m) in uncovered for g, m in case.items()),
                        -levels.index(level),
                    ),
                )
        cases.append({name: case[name] for name in names})
        uncovered -= {(a, case[a], b, case[b]) for a, b in itertools.combinations(names, 2)}
    return cases


MNRL_CASES = all_pairs(MNRL_FACTORS)
REFERENCE_CASES = all_pairs(REFERENCE_FACTORS)


def _params(factors: dict[str, dict[str, Any]], cases: list[dict[str, str]]) -> list:
    return [
        pytest.param(*(factors[name][case[name]] for name in factors), id="-".join(case.values())) for case in cases
    ]


@pytest.mark.parametrize(
    ("factors", "cases", "most"),
    [
        pytest.param(MNRL_FACTORS, MNRL_CASES, 40, id="mnrl"),
        pytest.param(REFERENCE_FACTORS, REFERENCE_CASES, 32, id="reference"),
    ],
)
def test_grids_cover_every_pair_of_levels(factors, cases, most):
    """Guards the grids below: every level of every factor meets every level of every other factor in some case,
    every case uses known levels only, and no two cases are equal (the full products: 4032 and 672 cases)."""
    assert all(case.keys() == factors.keys() for case in cases)
    assert all(case[name] in factors[name] for case in cases for name in factors)
    covered = {(a, case[a], b, case[b]) for case in cases for a, b in itertools.combinations(factors, 2)}
    assert level_pairs(factors) - covered == set()
    assert len({tuple(case.values()) for case in cases}) == len(cases)
    assert len(cases) <= most


# ---- equivalence with sentence-transformers and with the float64 reference -------------------------------------


def _embeddings(batch: int, columns: int, dim: int = 8, dtype: torch.dtype = torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator, dtype=dtype) for _ in range(columns)]


def _loss_and_grads(loss_module, embeddings, **kwargs):
    leaves = [e.clone().requires_grad_() for e in embeddings]
    loss = loss_module.compute_loss_from_embeddings(leaves, None, **kwargs)
    loss.backward()
    return loss, [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("config", "hardness", "similarity", "negatives", "batch", "dtype"), _params(MNRL_FACTORS, MNRL_CASES)
)
def test_matches_sentence_transformers_mnrl(config, hardness, similarity, negatives, batch, dtype, device):
    (directions, partition_mode), (hardness_mode, hardness_strength) = config, hardness
    st_similarity, our_similarity, scale = similarity
    kwargs = {
        "scale": scale,
        "directions": directions,
        "partition_mode": partition_mode,
        "hardness_mode": hardness_mode,
        "hardness_strength": hardness_strength,
    }
    embeddings = [e.to(dtype).to(device) for e in _embeddings(batch, 2 + negatives, seed=batch * 10 + negatives)]
    # bf16: MNRPlus computes in float32, so its reference is MNRL on the same rounded values in float32.
    st_embeddings = [e.float() for e in embeddings] if dtype == torch.bfloat16 else embeddings
    st_loss = MultipleNegativesRankingLoss(None, similarity_fct=st_similarity, **kwargs)
    expected, expected_grads = _loss_and_grads(st_loss, st_embeddings)
    # mask_duplicates is on (the default): random rows have no duplicates, and no row ids are passed here.
    ours = MNRPlus(None, similarity_fct=our_similarity, tile_size=TILE, **kwargs)
    actual, actual_grads = _loss_and_grads(ours, embeddings)
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, msg="loss", **TOL[expected.dtype])
    for k, (got, want) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), msg=f"grad of column {k}", **TOL[dtype])
        # A single pair without hard negatives has nothing to rank: its loss is constant (0), and so are the grads.
        if batch > 1 or negatives > 0:
            assert got.abs().sum() > 0, f"grad of column {k} is zero"


@pytest.mark.parametrize(
    ("config", "hardness", "similarity", "hard_negatives", "margin"), _params(REFERENCE_FACTORS, REFERENCE_CASES)
)
def test_masks_and_modes_match_float64_reference(config, hardness, similarity, hard_negatives, margin):
    """Duplicate masking, the margin, own hard negatives and a learnable scale, against the per-row loop."""
    (directions, partition_mode), (hardness_mode, hardness_strength) = config, hardness
    reference_similarity, our_similarity, scale_value = similarity
    batch = 6
    embeddings = _embeddings(batch, 4, dtype=torch.float64, seed=3)
    query_ids = [0, 1, 0, 2, 3, 4]
    doc_ids = [[10, 11, 10, 12, 13, 11], [20, 10, 21, 22, 23, 24], [30, 31, 32, 13, 34, 35]]
    # Equal ids are equal texts: give them equal embeddings, as an eval-mode model would.
    embeddings[0][2] = embeddings[0][0]
    embeddings[1][2] = embeddings[1][0]
    embeddings[1][5] = embeddings[1][1]
    embeddings[2][1] = embeddings[1][0]
    embeddings[3][3] = embeddings[1][4]
    kwargs = {
        "directions": directions,
        "partition_mode": partition_mode,
        "hardness_mode": hardness_mode,
        "hardness_strength": hardness_strength,
    }
    loss_module = MNRPlus(
        None,
        scale=scale_value,
        similarity_fct=our_similarity,
        tile_size=TILE,
        hard_negatives=hard_negatives,
        false_negative_margin=margin,
        learnable_scale=True,
        **kwargs,
    ).double()
    row_ids = [torch.tensor(query_ids)] + [torch.tensor(ids) for ids in doc_ids]
    actual, actual_grads = _loss_and_grads(loss_module, embeddings, row_ids=row_ids)

    leaves = [e.clone().requires_grad_() for e in embeddings]
    scale = torch.tensor(scale_value, dtype=torch.float64, requires_grad=True)
    expected = reference_mnr_loss(
        leaves[0],
        leaves[1:],
        scale=scale,
        similarity="cos" if reference_similarity is cos_sim else "dot",
        hard_negatives=hard_negatives,
        false_negative_margin=margin,
        query_ids=query_ids,
        doc_ids=doc_ids,
        **kwargs,
    )
    expected.backward()
    torch.testing.assert_close(actual, expected, msg="loss", **TOL[torch.float64])
    for k, (got, leaf) in enumerate(zip(actual_grads, leaves, strict=True)):
        torch.testing.assert_close(got, leaf.grad, msg=f"grad of column {k}", **TOL[torch.float64])
        assert got.abs().sum() > 0, f"grad of column {k} is zero"
    # d loss / d log_scale_offset = d loss / d scale * scale.
    torch.testing.assert_close(
        loss_module.log_scale_offset.grad, scale.grad * scale_value, msg="scale grad", **TOL[torch.float64]
    )
    assert loss_module.diagnostics["masked_duplicates"] > 0


def test_reference_matches_mnrl_without_extras():
    """The reference itself agrees with sentence-transformers where it should (guards the reference)."""
    embeddings = _embeddings(5, 3, dtype=torch.float64, seed=11)
    for directions in DIRECTION_SETS.values():
        mnrl = MultipleNegativesRankingLoss(None, directions=directions)
        expected = mnrl.compute_loss_from_embeddings(embeddings, None)
        actual = reference_mnr_loss(embeddings[0], embeddings[1:], directions=directions)
        torch.testing.assert_close(actual, expected, msg=str(directions), **TOL[torch.float64])


def test_duplicate_positive_is_a_negative_for_mnrl_but_masked_for_mnr_plus():
    batch = 4
    embeddings = _embeddings(batch, 2, seed=5)
    # Rows 0 and 1 have the same positive text ("A man is playing.").
    embeddings[1][1] = embeddings[1][0]
    row_ids = [torch.tensor([1, 2, 3, 4]), torch.tensor([7, 7, 8, 9])]
    mnrl_loss = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    plus = MNRPlus(None)
    plus_loss = plus.compute_loss_from_embeddings(embeddings, None, row_ids=row_ids)
    unmasked = MNRPlus(None, mask_duplicates=False).compute_loss_from_embeddings(embeddings, None, row_ids=None)
    # MNRL punishes rows 0 and 1 for the duplicate of their own positive; MNRPlus does not.
    torch.testing.assert_close(unmasked, mnrl_loss, msg="unmasked equals MNRL")
    assert plus_loss < mnrl_loss - 0.1
    expected = reference_mnr_loss(
        embeddings[0].double(),
        [e.double() for e in embeddings[1:]],
        query_ids=[1, 2, 3, 4],
        doc_ids=[[7, 7, 8, 9]],
    )
    torch.testing.assert_close(plus_loss.double(), expected, **TOL[torch.float32])
    assert plus.diagnostics["masked_duplicates"] == 2.0  # row 0 masks p_1, row 1 masks p_0
    assert plus.diagnostics["masked_fraction"] == pytest.approx(2 / (batch * (batch - 1)))


@pytest.mark.parametrize(
    "spec_kwargs",
    [
        pytest.param({}, id="q2d"),
        pytest.param({"directions": ("query_to_doc", "doc_to_query")}, id="symmetric-joint"),
        pytest.param(
            {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}, id="symmetric-perdir"
        ),
        pytest.param(
            {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")}, id="all4-joint"
        ),
        # No hardness penalty here: its stop-gradient makes the analytical gradient differ from the numerical
        # one by design (the penalty's gradient is checked against MNRL and the reference instead).
        pytest.param({"hard_negatives": "own", "directions": DIRECTION_SETS["all4"]}, id="own-all4"),
        pytest.param({"false_negative_margin": 0.3}, id="margin"),
        pytest.param({"offset": 2, "local_batch": 3, "directions": ("query_to_doc", "doc_to_query")}, id="gathered"),
    ],
)
@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_gradcheck_fused_function(spec_kwargs, similarity):
    generator = torch.Generator().manual_seed(7)
    batch, negatives = 5, 1
    spec = MNRSpec.of(**{"local_batch": batch, "tile_size": 2, **spec_kwargs})
    queries = torch.randn(batch, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(batch * (1 + negatives), 6, generator=generator, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    hashes = (torch.tensor([1, 2, 1, 3, 4]), torch.tensor([5, 6, 5, 7, 8, 9, 10, 11, 12, 13]))

    def loss(q, c, s):
        return mnr_plus_loss(q, c, s, spec, similarity, *hashes)[0]

    # fast_mode compares the analytical and numerical derivative along a random direction: for a scalar loss a wrong
    # gradient entry shows there almost surely, at two evaluations per input instead of two per element (91 here).
    assert torch.autograd.gradcheck(loss, (queries, candidates, scale), fast_mode=True)


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_gradients_follow_the_incoming_gradient(similarity):
    # Backward hands the gradients computed in forward straight back for an incoming gradient of 1 (the
    # loss's own backward()) and scales them otherwise (gradient accumulation, AMP's loss scaling).
    spec = MNRSpec.of(local_batch=6, tile_size=4, directions=("query_to_doc", "doc_to_query"))
    inputs = _embeddings(6, 2, dtype=torch.float64, seed=5)
    scale = torch.tensor(5.0, dtype=torch.float64)
    grads = {}
    for factor in (1.0, 0.25):
        leaves = [
            inputs[0].clone().requires_grad_(),
            inputs[1].clone().requires_grad_(),
            scale.clone().requires_grad_(),
        ]
        loss, _ = mnr_plus_loss(*leaves, spec, similarity)
        (loss * factor).backward()
        grads[factor] = [leaf.grad for leaf in leaves]
    for name, full, quarter in zip(("queries", "candidates", "scale"), grads[1.0], grads[0.25], strict=True):
        assert full.abs().sum() > 0, name
        torch.testing.assert_close(quarter, full * 0.25, msg=name)


# bf16 runs through the MNRL grid above; float16 once here.
@pytest.mark.parametrize("negatives", [0, 1], ids=lambda n: f"neg{n}")
@pytest.mark.parametrize("dtype", [torch.float16], ids=["fp16"])
def test_half_precision_embeddings_give_float32_loss_close_to_float32(dtype, negatives):
    embeddings = _embeddings(9, 2 + negatives, dim=16, seed=2)
    low = [e.to(dtype) for e in embeddings]
    reference = [e.float() for e in low]  # the same rounded values, in float32
    loss_module = MNRPlus(None, tile_size=TILE, directions=("query_to_doc", "doc_to_query"))
    expected, expected_grads = _loss_and_grads(loss_module, reference)
    actual, actual_grads = _loss_and_grads(loss_module, low)
    assert actual.dtype == torch.float32
    assert torch.isfinite(actual)
    torch.testing.assert_close(actual, expected, msg="loss", **TOL[torch.float32])
    for k, (got, want) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        assert got.dtype == dtype
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, msg=f"grad of column {k}", **TOL[torch.bfloat16])


@pytest.mark.parametrize("tile_size", [None, 1, 3, 64], ids=lambda t: f"tile{t}")
def test_tile_size_does_not_change_the_result(tile_size):
    embeddings = _embeddings(10, 3, seed=4)
    expected, expected_grads = _loss_and_grads(MultipleNegativesRankingLoss(None), embeddings)
    actual, actual_grads = _loss_and_grads(MNRPlus(None, tile_size=tile_size), embeddings)
    torch.testing.assert_close(actual, expected, **TOL[torch.float32])
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_no_grad_forward_gives_the_same_loss():
    embeddings = _embeddings(7, 3, seed=8)
    loss_module = MNRPlus(None, tile_size=3, symmetric=True)
    with_grad, _ = _loss_and_grads(loss_module, embeddings)
    with torch.no_grad():
        without = loss_module.compute_loss_from_embeddings(embeddings, None)
    torch.testing.assert_close(without, with_grad.detach())


def test_plain_path_masks_like_the_tiled_path():
    embeddings = _embeddings(6, 3, dtype=torch.float64, seed=12)
    embeddings[1][3] = embeddings[1][0]
    spec = MNRSpec.of(
        local_batch=6, directions=DIRECTION_SETS["all4"], false_negative_margin=0.05, hard_negatives="own"
    )
    hashes = (torch.arange(6), torch.tensor([0, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11]) + 100)
    queries = torch.nn.functional.normalize(embeddings[0], dim=1)
    candidates = torch.nn.functional.normalize(torch.cat(embeddings[1:]), dim=1)
    scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    tiled, tiled_stats = mnr_plus_loss(queries, candidates, scale, spec, "dot", *hashes)
    (tiled_scale_grad,) = torch.autograd.grad(tiled, scale)
    plain, plain_stats = plain_mnr_loss(queries, candidates, scale, spec, dot_score, *hashes)
    (plain_scale_grad,) = torch.autograd.grad(plain, scale)
    torch.testing.assert_close(plain, tiled)
    torch.testing.assert_close(plain_stats, tiled_stats)
    torch.testing.assert_close(plain_scale_grad, tiled_scale_grad)
    assert torch.isfinite(plain_scale_grad)


def test_diagnostics_report_accuracy_similarities_and_scale():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 0.2], [1.0, 1.1]])
    loss_module = MNRPlus(None, scale=10.0)
    loss_module.compute_loss_from_embeddings([queries, positives], None)
    sims = cos_sim(queries, positives)
    diag = sims.diagonal()
    off = sims.masked_fill(torch.eye(3, dtype=torch.bool), -2.0).amax(dim=1)
    d = loss_module.diagnostics
    assert set(d) >= {"accuracy", "positive_similarity", "hardest_negative_similarity", "masked_fraction", "scale"}
    assert d["accuracy"] == pytest.approx((diag > off).float().mean().item())
    assert d["accuracy"] == pytest.approx(2 / 3)  # row 1's positive loses to p_2
    assert d["positive_similarity"] == pytest.approx(diag.mean().item(), abs=1e-6)
    assert d["hardest_negative_similarity"] == pytest.approx(off.mean().item(), abs=1e-6)
    assert d["masked_fraction"] == 0.0
    assert d["scale"] == 10.0
    assert d["backend"] == "torch"  # the path it took: the one value that is not a float
    assert all(isinstance(v, float) for name, v in d.items() if name != "backend")


def test_diagnostics_of_a_single_pair_have_no_hardest_negative():
    loss_module = MNRPlus(None)
    loss_module.compute_loss_from_embeddings(_embeddings(1, 2), None)
    assert math.isnan(loss_module.diagnostics["hardest_negative_similarity"])
    assert loss_module.diagnostics["accuracy"] == 1.0


# ---- row hashes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "features",
    [
        pytest.param(
            {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)}, id="mask-shape"
        ),
        pytest.param({"input_ids": torch.zeros(5, dtype=torch.long)}, id="flat-without-offsets"),
        pytest.param({"pixel_values": torch.zeros(6, 3), "input_ids": torch.zeros(2, 3, dtype=torch.long)}, id="rows"),
        pytest.param({"images": [object(), object()], "input_ids": torch.zeros(2, 3, dtype=torch.long)}, id="objects"),
        pytest.param({"prompt_length": 3}, id="no-tensor"),
    ],
)
def test_row_hashes_reject_features_whose_rows_cannot_be_told(features):
    with pytest.raises(UnidentifiableRowsError, match=r"attention_mask|offsets|rows|per-row list|no per-row tensor"):
        row_hashes(features)


# ---- argument validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"scale": 0.0}, "scale", id="scale-zero"),
        pytest.param({"scale": -1.0}, "scale", id="scale-negative"),
        pytest.param({"directions": ()}, "directions", id="no-directions"),
        pytest.param({"directions": ("doc_to_query",)}, "query_to_doc", id="no-q2d"),
        pytest.param({"directions": ("query_to_doc", "sideways")}, "directions", id="bad-direction"),
        pytest.param({"partition_mode": "both"}, "partition_mode", id="bad-partition"),
        pytest.param(
            {"directions": ("query_to_doc", "query_to_query"), "partition_mode": "per_direction"},
            "partition_mode",
            id="perdir-q2q",
        ),
        pytest.param({"hardness_mode": "hardest"}, "hardness_mode", id="bad-hardness"),
        pytest.param({"hardness_strength": -1.0}, "hardness_strength", id="negative-strength"),
        pytest.param({"hard_negatives": "mine"}, "hard_negatives", id="bad-hard-negatives"),
        pytest.param({"false_negative_margin": float("nan")}, "false_negative_margin", id="nan-margin"),
        pytest.param({"max_scale": 0.0}, "max_scale", id="max-scale"),
        pytest.param({"learnable_scale": True, "scale": 200.0}, "max_scale", id="scale-above-max"),
        pytest.param({"tile_size": 0}, "tile_size", id="tile-zero"),
        pytest.param({"symmetric": True, "directions": ("query_to_doc", "query_to_query")}, "symmetric", id="sym"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MNRPlus(None, **kwargs)


@pytest.mark.parametrize(
    ("embeddings", "row_ids", "name"),
    [
        pytest.param([torch.zeros(3, 4)], None, "at least 2", id="one-column"),
        pytest.param([torch.zeros(3, 4), torch.zeros(2, 4)], None, r"embeddings\[1\]", id="ragged-columns"),
        pytest.param([torch.zeros(3, 4), torch.zeros(3, 4)], [torch.zeros(3)], "row_ids", id="row-ids-count"),
        pytest.param(
            [torch.zeros(3, 4), torch.zeros(3, 4)], [torch.zeros(3), torch.zeros(2)], r"row_ids\[1\]", id="row-ids"
        ),
    ],
)
def test_bad_embeddings_raise_value_error(embeddings, row_ids, name):
    with pytest.raises(ValueError, match=name):
        MNRPlus(None).compute_loss_from_embeddings(embeddings, None, row_ids=row_ids)


def test_symmetric_is_the_per_direction_two_way_loss():
    loss_module = MNRPlus(None, symmetric=True)
    assert loss_module.directions == ("query_to_doc", "doc_to_query")
    assert loss_module.partition_mode == "per_direction"


def test_learnable_scale_is_a_parameter_capped_before_each_forward():
    loss_module = MNRPlus(None, scale=20.0, learnable_scale=True, max_scale=30.0)
    assert [name for name, _ in loss_module.named_parameters()] == ["log_scale_offset"]
    assert loss_module.scale == pytest.approx(20.0)
    assert loss_module.temperature == pytest.approx(1 / 20.0)
    with torch.no_grad():
        loss_module.log_scale_offset.fill_(math.log(500.0 / 20.0))
    assert loss_module.scale == pytest.approx(30.0)
    fixed = MNRPlus(None, scale=20.0)
    assert list(fixed.parameters()) == []
    assert fixed.scale == 20.0
    assert isinstance(fixed.scale, float)
