"""The fused Triton kernels (st_mnr_plus.losses.kernels) in Triton's interpreter, against a float64 reference.

The reference builds every matrix of the loss densely in float64 from the very inputs the kernels get (bf16/fp16
inputs already rounded): the logits of both directions with their masks, the logsumexps, the probabilities under
the normalisers and the embedding gradients ``ops.accumulate`` adds up. The cases are a pairwise selection (every
pair of values of two factors appears in some case, see ``test_cases_cover_every_pair``), not the full product:
the interpreter runs each program in Python.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

# Before triton and kernels.py are imported: @triton.jit picks the interpreter when it decorates a function, that
# is when its module is imported (triton.language's own @jit functions included); the launchers then take CPU
# tensors. It stays set for the rest of the test process: triton imports some of its modules lazily and checks
# them against this setting (kernel_build's compile workers drop it from their environment).
if os.environ.get("TRITON_INTERPRET") == "0":  # tests/conftest.py on a GPU machine: the kernels stay compiled
    pytest.skip(
        "TRITON_INTERPRET=0: the compiled kernels are tested on CUDA tensors in tests/losses/test_backend.py",
        allow_module_level=True,
    )
os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton")
from st_mnr_plus.losses import kernel_config, kernels

if not kernels.interpreting():  # imported earlier in this process without the interpreter: these tests cannot run
    raise RuntimeError("st_mnr_plus.losses.kernels was imported before this module set TRITON_INTERPRET=1")

# (rtol, atol) by input dtype, for the logsumexps and similarities as they are and for the gradients divided by
# their largest reference entry. What remains against the float64 reference is float32 accumulation in another
# order (d products per similarity, up to W * (1 + n) terms per sum): torch's fp32 defaults (1.3e-6, 1e-5) are for
# one rounding, so rtol is loosened to 1e-5. 16-bit inputs add the rounding of each probability to a hi + lo pair
# of the inputs' dtype before the second product (2**-16 relative for bfloat16): 1e-4 (torch's bf16 default,
# 1.6e-2, would hide a real error).
TOLERANCES = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1e-4, "atol": 1e-4},
    torch.float16: {"rtol": 1e-4, "atol": 1e-4},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALE = 20.0
MARGIN = 0.1  # the false-negative bound: the row's positive similarity minus this


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The interpreter multiplies tiles with numpy: on matrices this small OpenBLAS's threads mostly wait for each
    other (up to 16 ms instead of 0.02 ms for a (64, 64) x (64, 128) product on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency, so sentence-transformers'
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class Case:
    world: int  # W: every rank's rows
    dim: int
    negatives: int  # n hard-negative columns
    dtype: str
    ids: bool  # identities given: repeated rows are masked as duplicates
    doc_to_query: bool
    own: bool  # hard_negatives="own"
    threshold: bool  # false-negative bound
    gathered: bool  # this rank holds rows offset : offset + local of W

    @property
    def id(self) -> str:
        flags = [name for name in ("ids", "doc_to_query", "own", "threshold", "gathered") if getattr(self, name)]
        return f"W{self.world}-d{self.dim}-n{self.negatives}-{self.dtype}" + "".join(f"-{f}" for f in flags)

    @property
    def rows(self) -> tuple[int, int]:
        """``(offset, local)``."""
        return (self.world // 3, self.world // 2) if self.gathered else (0, self.world)


# Pairwise over W in {1, 7, 64, 130}, d in {16, 50, 384}, n in {0, 1, 3}, the dtype and the five switches (W = 1
# cannot be gathered), generated greedily and checked by test_cases_cover_every_pair; plus a float16 case and d = 1.
PAIRWISE = [
    Case(1, 16, 0, "bf16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=False),
    Case(1, 50, 1, "bf16", ids=True, doc_to_query=True, own=False, threshold=False, gathered=False),
    Case(1, 384, 3, "fp32", ids=False, doc_to_query=False, own=True, threshold=True, gathered=False),
    Case(7, 16, 0, "bf16", ids=False, doc_to_query=True, own=True, threshold=True, gathered=False),
    Case(7, 50, 3, "bf16", ids=True, doc_to_query=True, own=False, threshold=False, gathered=True),
    Case(7, 50, 0, "fp32", ids=False, doc_to_query=False, own=True, threshold=False, gathered=True),
    Case(7, 384, 1, "fp32", ids=True, doc_to_query=True, own=False, threshold=True, gathered=False),
    Case(64, 16, 1, "fp32", ids=False, doc_to_query=False, own=False, threshold=False, gathered=True),
    Case(64, 50, 3, "bf16", ids=False, doc_to_query=False, own=False, threshold=True, gathered=False),
    Case(64, 384, 0, "bf16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=True),
    Case(130, 16, 3, "fp32", ids=False, doc_to_query=True, own=False, threshold=True, gathered=True),
    Case(130, 50, 1, "bf16", ids=False, doc_to_query=True, own=True, threshold=True, gathered=False),
    Case(130, 384, 0, "bf16", ids=True, doc_to_query=False, own=False, threshold=False, gathered=False),
]
# Every backward accumulator width of kernels.block_config, each side of the switch from one program per row (BD >=
# d: d = 1 to 512) to cdiv(d, 512) programs (d = 600: two halves, the second one partly masked; 1100: three).
# d = 384 (the widest accumulator, 16-row tiles) is in PAIRWISE; 16 and 50 take the narrowest blocks.
WIDTHS = [
    Case(5, 100, 1, "fp32", ids=True, doc_to_query=True, own=True, threshold=True, gathered=False),  # BD = 128
    Case(20, 200, 1, "fp32", ids=True, doc_to_query=True, own=False, threshold=True, gathered=True),  # BD = 256
    Case(20, 200, 1, "bf16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=True),  # BD = 256
    Case(20, 600, 1, "bf16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=True),  # 2 x 512
    Case(5, 600, 2, "fp32", ids=True, doc_to_query=False, own=False, threshold=True, gathered=False),  # 2 x 512
    Case(3, 1100, 1, "bf16", ids=False, doc_to_query=True, own=True, threshold=True, gathered=False),  # 3 x 512
]
CASES = [
    *PAIRWISE,
    *WIDTHS,
    Case(64, 50, 1, "fp16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=True),
    Case(7, 1, 1, "fp32", ids=True, doc_to_query=True, own=True, threshold=True, gathered=False),  # d = 1
]


@dataclass
class Problem:
    q: torch.Tensor
    c: torch.Tensor
    scale: torch.Tensor
    kwargs: dict  # the launchers' keyword arguments


def make_problem(case: Case, seed: int = 0) -> Problem:
    """Queries near their positives, with repeated rows: rows of equal identity have equal embeddings.

    Documents come from a pool of about 2W/3 texts, so some negatives repeat a positive; query ``j`` is its
    positive's text plus a fixed noise of that text (similarity about 0.78), so repeated pairs repeat whole.
    """
    gen = torch.Generator().manual_seed(seed)
    world, dim, n = case.world, case.dim, case.negatives
    texts = max(1, 2 * world // 3)
    base = torch.randn(texts, dim, generator=gen)
    query_noise = 0.8 * torch.randn(texts, dim, generator=gen) / math.sqrt(dim)
    doc_ids = torch.randint(0, texts, (world * (1 + n),), generator=gen)
    query_ids = doc_ids[:world] + texts  # another space of identities than the documents'
    q = F.normalize(base[doc_ids[:world]] + query_noise[doc_ids[:world]], dim=1).to(DTYPES[case.dtype])
    c = F.normalize(base[doc_ids], dim=1).to(DTYPES[case.dtype])
    offset, local = case.rows
    threshold = None
    if case.threshold:
        positive = (q[offset : offset + local].double() * c[offset : offset + local].double()).sum(dim=1)
        threshold = (positive - MARGIN).float()
    kwargs = {
        "offset": offset,
        "local": local,
        "own": case.own,
        "doc_to_query": case.doc_to_query,
        "query_ids": query_ids if case.ids else None,
        "candidate_ids": doc_ids if case.ids else None,
        "threshold": threshold,
    }
    return Problem(q.contiguous(), c.contiguous(), torch.tensor(SCALE), kwargs)


def reference(problem: Problem) -> dict[str, torch.Tensor]:
    """Every output of the launchers, from dense float64 matrices (joint normaliser, row weight ``1 / local``)."""
    q, c, scale = problem.q.double(), problem.c.double(), float(problem.scale)
    k = problem.kwargs
    world, columns = q.shape[0], c.shape[0]
    g = torch.arange(k["offset"], k["offset"] + k["local"])  # global index of each local row
    j = torch.arange(columns)
    allowed = torch.ones(len(g), columns, dtype=torch.bool)
    if k["own"]:  # beyond the positives, only the row's own negatives: candidate m * W + g
        allowed[:, world:] = (j[world:] % world)[None, :] == g[:, None]
    bound = torch.full((len(g),), math.inf, dtype=torch.float64)
    if k["threshold"] is not None:
        bound = k["threshold"].double()

    def direction(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None, allowed: torch.Tensor):
        sim = x[g] @ y.T  # (local, cols)
        negative = allowed & (torch.arange(y.shape[0])[None, :] != g[:, None])
        duplicate = negative & (ids[g][:, None] == ids[None, :]) if ids is not None else torch.zeros_like(negative)
        excluded = duplicate | (negative & (sim > bound[:, None]))
        logits = torch.where(allowed & ~excluded, scale * sim, -math.inf)
        return sim, logits, negative & ~excluded, excluded, duplicate

    sim, logits, kept_negative, excluded, duplicate = direction(q, c, k["candidate_ids"], allowed)
    lse_q2d = torch.logsumexp(logits, dim=1)
    out = {
        "lse_q2d": lse_q2d,
        "hardest": torch.where(kept_negative, sim, -math.inf).amax(dim=1),
        "masked": excluded.sum(dim=1),
        "duplicates": duplicate.sum(dim=1),
    }
    weight = 1.0 / len(g)
    grad_q, grad_c = torch.zeros_like(q), torch.zeros_like(c)
    norm = lse_q2d
    if k["doc_to_query"]:
        _, logits_d2q, *_ = direction(c, q, k["query_ids"], torch.ones(len(g), world, dtype=torch.bool))
        out["lse_d2q"] = torch.logsumexp(logits_d2q, dim=1)
        norm = torch.logaddexp(lse_q2d, out["lse_d2q"])  # partition_mode="joint"
        p_d2q = weight * torch.exp(logits_d2q - norm[:, None])
        grad_c[g] += p_d2q @ q
        grad_q += p_d2q.T @ c[g]
    p_q2d = weight * torch.exp(logits - norm[:, None])
    grad_q[g] += p_q2d @ c
    grad_c += p_q2d.T @ q[g]
    out.update(norm=norm, weight=torch.tensor(weight), grad_q=grad_q, grad_c=grad_c)
    return out


def backward(problem: Problem, ref: dict[str, torch.Tensor]) -> kernels.MNRGradients:
    """The launcher's gradients under the reference's normalisers (float32, as a caller would pass them)."""
    norm = ref["norm"].float()
    d2q = norm if problem.kwargs["doc_to_query"] else None
    return kernels.mnr_backward(problem.q, problem.c, problem.scale, norm, d2q, float(ref["weight"]), **problem.kwargs)


def assert_matches(case_id: str, dtype: torch.dtype, name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    tol = TOLERANCES[dtype]
    if name.startswith("grad"):  # relative to the largest entry: the entries span orders of magnitude
        unit = expected.abs().max().clamp_min(1e-30)
        actual, expected = actual.double() / unit, expected / unit
    torch.testing.assert_close(
        actual.double(), expected.double(), **tol, msg=lambda message: f"{case_id}: {name}: {message}"
    )


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_launchers_match_the_float64_reference(case: Case, one_thread):
    problem = make_problem(case)
    ref = reference(problem)
    dtype = DTYPES[case.dtype]
    forward = kernels.mnr_forward(problem.q, problem.c, problem.scale, **problem.kwargs)
    assert forward.lse_q2d.dtype == forward.hardest.dtype == torch.float32
    assert forward.masked.dtype == forward.duplicates.dtype == torch.int32
    for name in ("lse_q2d", "hardest"):
        assert_matches(case.id, dtype, name, getattr(forward, name), ref[name])
    for name in ("masked", "duplicates"):  # counts: exactly
        torch.testing.assert_close(
            getattr(forward, name).long(), ref[name], msg=lambda m, n=name: f"{case.id}: {n}: {m}"
        )
    if case.doc_to_query:
        assert_matches(case.id, dtype, "lse_d2q", forward.lse_d2q, ref["lse_d2q"])
    else:
        assert forward.lse_d2q is None
    if (case.ids or case.threshold) and case.world * (1 + case.negatives) > 1:  # the data exercise the masks
        assert ref["masked"].sum() > 0, f"{case.id}: nothing masked"
    grads = backward(problem, ref)
    for name in ("grad_q", "grad_c"):
        value = getattr(grads, name)
        assert value.dtype == torch.float32
        assert torch.count_nonzero(value) > 0, f"{case.id}: {name} is zero"
        assert_matches(case.id, dtype, name, value, ref[name])


def test_cases_cover_every_pair():
    factors = ["world", "dim", "negatives", "dtype", "ids", "doc_to_query", "own", "threshold", "gathered"]
    values = {f: {getattr(case, f) for case in PAIRWISE} for f in factors}
    assert values["world"] == {1, 7, 64, 130}
    assert values["dim"] == {16, 50, 384}
    assert values["negatives"] == {0, 1, 3}
    missing = []
    for a, b in itertools.combinations(factors, 2):
        seen = {(getattr(case, a), getattr(case, b)) for case in PAIRWISE}
        for pair in itertools.product(values[a], values[b]):
            impossible = (a, b) == ("world", "gathered") and pair == (1, True)
            if pair not in seen and not impossible:
                missing.append(f"{a}={pair[0]}, {b}={pair[1]}")
    assert not missing, "pairs no case covers: " + "; ".join(missing)


@pytest.mark.parametrize(
    "case",
    [
        Case(130, 50, 1, "bf16", ids=True, doc_to_query=True, own=True, threshold=True, gathered=False),
        Case(17, 600, 1, "bf16", ids=True, doc_to_query=False, own=True, threshold=True, gathered=False),  # 2 x 512
    ],
    ids=lambda case: case.id,
)
def test_backward_is_deterministic(case: Case, one_thread):
    problem = make_problem(case)
    ref = reference(problem)
    first, second = backward(problem, ref), backward(problem, ref)
    assert torch.equal(first.grad_q, second.grad_q)
    assert torch.equal(first.grad_c, second.grad_c)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_large_logits_do_not_overflow(dtype: str, one_thread):
    """Scale 100 and similarities near 1: logits near 100, whose exp overflows float32 without the online maximum."""
    gen = torch.Generator().manual_seed(1)
    world, dim = 70, 16  # several column tiles, so that the running maximum moves
    base = torch.randn(1, dim, generator=gen)
    rows = lambda count: F.normalize(base + 0.02 * torch.randn(count, dim, generator=gen), dim=1)  # noqa: E731
    q, c = rows(world).to(DTYPES[dtype]), rows(2 * world).to(DTYPES[dtype])
    kwargs = {"offset": 0, "local": world, "own": False, "doc_to_query": True}
    problem = Problem(
        q, c, torch.tensor(100.0), kwargs | {"query_ids": None, "candidate_ids": None, "threshold": None}
    )
    ref = reference(problem)
    assert ref["lse_q2d"].min() > 95
    forward = kernels.mnr_forward(problem.q, problem.c, problem.scale, **problem.kwargs)
    assert_matches(f"large-{dtype}", DTYPES[dtype], "lse_q2d", forward.lse_q2d, ref["lse_q2d"])
    assert_matches(f"large-{dtype}", DTYPES[dtype], "lse_d2q", forward.lse_d2q, ref["lse_d2q"])
    grads = backward(problem, ref)
    assert_matches(f"large-{dtype}", DTYPES[dtype], "grad_q", grads.grad_q, ref["grad_q"])
    assert_matches(f"large-{dtype}", DTYPES[dtype], "grad_c", grads.grad_c, ref["grad_c"])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_own_negatives_above_every_column_move_the_maximum(dtype: str, one_thread):
    """Own hard negatives closer to their anchor than its positive: the running maximum moves in the row-wise
    loop over own negatives too (after every column tile), and the sum must be rescaled there as well."""
    case = Case(7, 16, 2, dtype, ids=False, doc_to_query=False, own=True, threshold=False, gathered=False)
    problem = make_problem(case)
    gen = torch.Generator().manual_seed(2)
    world, q = case.world, problem.q.float()
    noise = torch.randn(world * case.negatives, case.dim, generator=gen) / math.sqrt(case.dim)
    near = q.repeat(case.negatives, 1) + 0.05 * noise
    problem.c[world:] = F.normalize(near, dim=1).to(problem.c.dtype)
    ref = reference(problem)
    assert (ref["hardest"] > (problem.q.double() * problem.c[:world].double()).sum(dim=1)).all()
    forward = kernels.mnr_forward(problem.q, problem.c, problem.scale, **problem.kwargs)
    assert_matches(case.id, DTYPES[dtype], "lse_q2d", forward.lse_q2d, ref["lse_q2d"])
    assert_matches(case.id, DTYPES[dtype], "hardest", forward.hardest, ref["hardest"])
    grads = backward(problem, ref)
    assert_matches(case.id, DTYPES[dtype], "grad_q", grads.grad_q, ref["grad_q"])
    assert_matches(case.id, DTYPES[dtype], "grad_c", grads.grad_c, ref["grad_c"])


def test_interpreting_is_true_under_the_interpreter():
    assert kernels.interpreting()


def test_compiled_launchers_refuse_cpu_tensors():
    """Without the interpreter (a fresh process, kernels.py loaded from its file) the launchers need CUDA tensors."""
    script = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('kernels', {kernels.__file__!r})\n"
        "kernels = importlib.util.module_from_spec(spec); sys.modules['kernels'] = kernels\n"
        "spec.loader.exec_module(kernels)\n"
        "assert not kernels.interpreting()\n"
        "try:\n"
        "    kernels.mnr_forward(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor(1.0), offset=0, local=2,"
        " own=False, doc_to_query=False)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "need CUDA tensors" in result.stdout


def test_fp32_products_use_tf32_only_where_pytorch_matmul_does(monkeypatch: pytest.MonkeyPatch):
    assert not kernels.matmul_allows_tf32()  # PyTorch's default
    assert kernels.precision(torch.float32) == "ieee"
    monkeypatch.setattr(kernel_config, "matmul_allows_tf32", lambda: True)
    assert kernels.precision(torch.float32) == "tf32"
    assert kernels.precision(torch.bfloat16) == kernels.precision(torch.float16) == "ieee"  # ignored for 16 bits


@pytest.mark.parametrize(
    ("change", "match"),
    [
        pytest.param({"c": "fp16"}, "share a dtype", id="dtypes-differ"),
        pytest.param({"threshold": torch.zeros(3)}, "threshold", id="threshold-shape"),
        pytest.param({"query_ids": torch.arange(4)}, "together", id="ids-alone"),
        pytest.param({"local": 5}, "offset", id="rows-out-of-range"),
        pytest.param({"scale": torch.tensor(1.0, dtype=torch.float64)}, "scale", id="scale-dtype"),
    ],
)
def test_bad_inputs_raise_value_error(change: dict, match: str):
    q, c = torch.zeros(4, 8), torch.zeros(8, 8)
    args = {"q": q, "c": c.half() if change.get("c") == "fp16" else c, "scale": change.get("scale", torch.tensor(1.0))}
    kwargs = {"offset": 0, "local": change.get("local", 4), "own": False, "doc_to_query": False}
    kwargs.update({k: v for k, v in change.items() if k in ("threshold", "query_ids")})
    with pytest.raises(ValueError, match=match):
        kernels.mnr_forward(**args, **kwargs)


@pytest.mark.parametrize(
    ("dtype", "widths"),
    [
        pytest.param(torch.float32, (64, 128, 256, 512), id="fp32"),
        pytest.param(torch.bfloat16, (128, 256, 512), id="bf16"),
    ],
)
def test_the_backward_holds_every_feature_of_a_row_up_to_512_then_splits_them(dtype: torch.dtype, widths: tuple):
    """Up to d = 512 one program owns all features of its rows (BD = the next power of two >= d, at least the
    narrowest width): each similarity tile is computed once. Beyond, 512 features a program: two halves up to 1024."""
    for d in [1, 2, 16, 50, 63, 64, 65, 100, 128, 129, 200, 256, 257, 384, 511, 512, 513, 600, 768, 1024, 1025, 4096]:
        config = kernels.block_config(dtype, d)
        rows, columns = config.backward_rows, config.backward_columns
        assert rows.BD == columns.BD, d
        assert rows.BD == min(max(widths[0], 1 << (d - 1).bit_length()), 512), d
        assert math.ceil(d / rows.BD) == (1 if d <= 512 else math.ceil(d / 512)), d
        # Wider accumulators, fewer owned rows (columns): at most 8192 fp32 entries, 32 registers a thread of 8 warps.
        assert rows.BM * rows.BD <= 8192, d
        assert columns.BN * columns.BD <= 8192, d
        assert config.forward == kernels.block_config(dtype, 1).forward  # one forward configuration per dtype


def test_cost_matches_a_hand_count():
    """batch 20, one own hard negative per anchor, d = 600, bf16: the blocks are forward (BM, BN) = (64, 64), by
    rows (16, 64), by columns (64, 16), BD = 512, so F = 2 feature blocks; L = 20 anchors, N = 20 columns (own: the
    positives), s = 2 bytes, h = 2 products of p."""
    forward_flops = 2 * 20 * 20 * 600 + 2 * 20 * 1 * 600  # similarity tile + own negatives, row-wise
    forward_bytes = (
        (1 * 20 + 20 * 1) * 600 * 2  # the 20 columns, once for the one row tile; the 20 rows, once per column tile
        + 2 * 20 * 600 * 2  # own negatives and their anchors, row-wise
        + 8 * (20 + 20 * 2)  # identities: the columns', the rows' and the own negatives'
        + 4 * 20  # thresholds
        + 4  # the scale, once per program
        + 16 * 20  # logsumexp, hardest, masked, duplicates written
    )
    rows_flops = 2 * 20 * 20 * 600 * (2 + 2) + 2 * 20 * 600 * (2 + 2)  # 2 recomputes, hi + lo; own: 2 + 2
    rows_bytes = (
        2 * (2 * 20 + 20 * 1) * 600 * 2  # per feature block: 2 row tiles read the 20 columns, 20 rows 1 column tile
        + 2 * 20 * 600 * 2  # the columns' feature blocks, for each of the 2 row tiles
        + 8 * 20 * 600  # grad_x read and written, fp32
        + 2 * (16 * 20 + 8 * 2 * 20 + 4 * 2)  # per feature block: rows' scalars, columns' identities, the scale
        + 20 * (2 * (2 * 600 * 2 + 8) + 600 * (2 * 2 + 4))  # own: scored per block; multiplied, gradient written
    )
    columns_flops = 2 * 20 * 20 * 600 * (2 + 2)
    columns_bytes = (
        2 * (2 * 20 + 20 * 1) * 600 * 2  # per feature block: 2 column tiles read the 20 rows, 20 columns 1 row tile
        + 2 * 20 * 600 * 2  # the rows' feature blocks, for each of the 2 column tiles
        + 8 * 20 * 600  # grad_y read and written, fp32
        + 2 * (16 * 2 * 20 + 8 * 20 + 4 * 2)  # per feature block: rows' scalars per column tile, identities, scale
    )
    assert (forward_flops, forward_bytes) == (504_000, 96_884)
    assert (rows_flops, rows_bytes, columns_flops, columns_bytes) == (2_016_000, 481_616, 1_920_000, 289_616)
    got = kernels.cost(20, 1, 600, torch.bfloat16, own=True)
    assert got["launches"] == {
        "forward/query_to_doc": {"flops": forward_flops, "bytes": forward_bytes},
        "backward_rows/query_to_doc": {"flops": rows_flops, "bytes": rows_bytes},
        "backward_columns/query_to_doc": {"flops": columns_flops, "bytes": columns_bytes},
    }
    assert got["flops"] == forward_flops + rows_flops + columns_flops
    assert got["bytes"] == forward_bytes + rows_bytes + columns_bytes
    assert got["gemm_equivalents"] == got["flops"] / (2 * 20 * 40 * 600)


@pytest.mark.parametrize(("dim", "products"), [(384, 7), (768, 9), (1024, 9), (4096, 21)])
def test_cost_in_matrix_products_for_bf16(dim: int, products: int):
    """One forward (1) and the two backward kernels (cdiv(d, BD) + 2 each), in units of the forward's product."""
    assert kernels.cost(256, 1, dim, torch.bfloat16)["gemm_equivalents"] == products


@pytest.mark.parametrize(
    "change",
    [{"batch": 0}, {"negatives": -1}, {"dim": 0}, {"dtype": torch.float64}],
    ids=["batch", "negatives", "dim", "dtype"],
)
def test_cost_rejects_bad_sizes(change: dict):
    args = {"batch": 4, "negatives": 1, "dim": 8, "dtype": torch.float32} | change
    with pytest.raises(ValueError, match="dtype" if "dtype" in change else "batch"):
        kernels.cost(**args)


def test_cost_counts_the_launches_the_launchers_make(monkeypatch: pytest.MonkeyPatch):
    """cost() adds up the launches mnr_forward and mnr_backward make, in their order, with their grids and blocks
    (the kernels are replaced by recorders: nothing runs)."""
    launched = []

    class Recorder:
        def __init__(self, name: str):
            self.name = name

        def __getitem__(self, grid: tuple):
            def launch(*args, **meta):
                sizes = {key: meta[key] for key in ("BM", "BN", "BK", "BD") if key in meta}
                launched.append((self.name, grid, sizes, meta["num_warps"], meta["num_stages"]))

            return launch

    for name, attribute in [
        ("forward", "_mnr_forward_kernel"),
        ("backward_rows", "_mnr_backward_rows_kernel"),
        ("backward_columns", "_mnr_backward_columns_kernel"),
    ]:
        monkeypatch.setattr(kernels, attribute, Recorder(name))
    world, n, d, dtype = 20, 2, 600, torch.bfloat16
    q, c = torch.zeros(world, d, dtype=dtype), torch.zeros(world * (1 + n), d, dtype=dtype)
    kwargs = {"offset": 0, "local": world, "own": True, "doc_to_query": True}
    kernels.mnr_forward(q, c, torch.tensor(1.0), **kwargs)
    norm = torch.zeros(world)
    kernels.mnr_backward(q, c, torch.tensor(1.0), norm, norm, 0.05, **kwargs)

    config = kernels.block_config(dtype, d)
    columns = {"query_to_doc": world, "doc_to_query": world}  # own: the positives; doc_to_query: the queries
    expected = []
    for key in kernels.cost(world, n, d, dtype, doc_to_query=True, own=True)["launches"]:
        kernel, direction = key.split("/")
        blocks = getattr(config, kernel)
        grid = {
            "forward": (math.ceil(world / blocks.BM),),
            "backward_rows": (math.ceil(world / blocks.BM), math.ceil(d / (blocks.BD or 1))),
            "backward_columns": (math.ceil(columns[direction] / blocks.BN), math.ceil(d / (blocks.BD or 1))),
        }[kernel]
        sizes = {key: value for key, value in blocks._asdict().items() if key in ("BM", "BN", "BK", "BD") and value}
        expected.append((kernel, grid, sizes, blocks.num_warps, blocks.num_stages))
    assert launched == expected
