"""Precision of the GPU path's gradients in bf16: MNRPlus (``backend="triton"``) and sentence-transformers'
MultipleNegativesRankingLoss (MNRL) against float64 from the same inputs (issue 27). Run::

    python benchmarks/precision.py                       # B=256, d=384, seeds 0-2: the table of benchmarks/README.md
    python benchmarks/precision.py --batch 64 --dim 64 --seeds 1 --json precision.json

On CPU tensors the GPU path runs its own code in Triton's interpreter (``TRITON_INTERPRET=1``, set here before
triton is imported when no GPU is present): its element-wise kernels interpreted, its products float32 matmuls of
operands rounded to the products' dtype (:func:`st_mnr_plus.losses.kernel_config.product_dtype`), which is what
cuBLAS computes with float32 accumulation. The figures are therefore the GPU arithmetic's, emulated exactly.

What is measured, per cell (cosine similarity, scale 20, query_to_doc, anchors and positives, no hard negative):

- **the embedding gradients**: ``||g - g64|| / ||g64||`` (Frobenius over the whole ``(B, d)`` gradient) for the
  anchors and for the positives; a cell reports the worse of the two. ``g64`` is MNRPlus's PyTorch path
  (``backend="torch"``, float64 throughout for float64 inputs) on float64 copies of the inputs; it is checked
  against MNRL's float64 loss and gradients.
- **a learnable scale's gradient** (ours only: MNRL's scale is fixed): ``MNRPlus(learnable_scale=True)``'s
  ``log_scale_offset.grad`` against the same loss in float64.
- **the floor**: the float64 gradients of the inputs rounded as the products see them (``bf16(u / ||u||)``, the
  normalisation and its Jacobian exact) against ``g64``. Every implementation whose products take bf16 operands
  carries that error, MNRL under autocast included (its ``cos_sim`` normalises in float32 and ``mm`` casts).

Settings (how a trainer reaches the loss):

- ``bf16, autocast``: bf16 embeddings, the loss called inside ``torch.autocast(dtype=torch.bfloat16)``;
- ``bf16, no autocast``: bf16 embeddings without autocast (a model cast to bf16). Ours takes bf16 products as
  above; MNRL's ``cos_sim`` converts 16-bit inputs to float32, so its products are float32 here;
- ``fp32, autocast``: float32 embeddings under bf16 autocast (a BERT-style model under ``bf16=True``); the reference
  is float64 from the float32 inputs.

Regimes (the mean of ``1 - p_pos`` over the rows, measured in float64, is reported):

- ``random``: anchors and positives independent Gaussian rows (``1 - p_pos`` about ``1 - 1/B``);
- ``confident``: positive = anchor + noise, the noise level tuned so that the mean ``1 - p_pos`` is about 6e-4;
- ``saturated``: about 5e-7. Gaussian anchors cannot get there at B=256, d=384, scale 20: with the positive equal
  to the anchor the mean is ``(B - 1) e^-20 e^(200/d)``, about 8.8e-7. The anchors are a random regular simplex
  (pairwise cosine ``-1/(B - 1)``, the least similar B directions; needs ``d >= B``), positive = anchor + noise.

The noise levels are tuned once on a calibration seed, apart from the measured seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, NamedTuple

import torch

if "TRITON_INTERPRET" not in os.environ:  # read when triton is imported: the kernels below run interpreted on CPU
    os.environ["TRITON_INTERPRET"] = "0" if torch.cuda.is_available() else "1"

from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import dot_score
from torch import Tensor

from st_mnr_plus.losses import MNRPlus

SCALE = 20.0
CALIBRATION_SEED = 1234
#: The regimes' target mean ``1 - p_pos`` (``None``: independent rows) and the issue's aims for the relative error.
TARGETS: dict[str, float | None] = {"random": None, "confident": 6e-4, "saturated": 5e-7}
AIMS = {"random": 5e-3, "confident": 1e-2, "saturated": 5e-2}


class Setting(NamedTuple):
    dtype: torch.dtype  # the embeddings'
    autocast: bool  # the loss called inside torch.autocast("cpu", dtype=torch.bfloat16)


SETTINGS = {
    "bf16, autocast": Setting(torch.bfloat16, True),
    "bf16, no autocast": Setting(torch.bfloat16, False),
    "fp32, autocast": Setting(torch.float32, True),
}


# ---- inputs -------------------------------------------------------------------------------------------------------


def _simplex(batch: int, dim: int, generator: torch.Generator) -> Tensor:
    """``(batch, dim)`` rows of norm ``sqrt(dim)`` with pairwise cosine ``-1 / (batch - 1)``, randomly oriented."""
    if dim < batch:
        raise ValueError(f"the saturated regime needs dim >= batch, got dim={dim}, batch={batch}")
    basis, _ = torch.linalg.qr(torch.randn(dim, batch, generator=generator, dtype=torch.float64))  # (dim, batch)
    rows = basis.T - basis.T.mean(0)
    return (rows / rows.norm(dim=1, keepdim=True) * math.sqrt(dim)).float()


def make_pair(regime: str, batch: int, dim: int, seed: int, noise: float) -> tuple[Tensor, Tensor]:
    """Float32 ``(anchors, positives)``, each ``(batch, dim)``; ``noise`` is the positives' noise level relative
    to the anchors' norm (``cos(anchor, positive)`` about ``1 / sqrt(1 + noise^2)``)."""
    generator = torch.Generator().manual_seed(seed)
    if regime == "saturated":
        anchors = _simplex(batch, dim, generator)
    else:
        anchors = torch.randn(batch, dim, generator=generator)
    if TARGETS[regime] is None:
        return anchors, torch.randn(batch, dim, generator=generator)
    return anchors, anchors + noise * torch.randn(batch, dim, generator=generator)


def one_minus_p_pos(anchors: Tensor, positives: Tensor) -> Tensor:
    """``(B,)`` float64 ``1 - p_pos`` of each row (cosine, scale 20), without cancellation."""
    a, p = (torch.nn.functional.normalize(t.double(), dim=1) for t in (anchors, positives))
    logits = SCALE * a @ p.T  # (B, B)
    log_p_pos = logits.diagonal() - torch.logsumexp(logits, dim=1)
    return -torch.expm1(log_p_pos)


@cache
def noise_level(regime: str, batch: int, dim: int) -> float:
    """The noise level whose mean ``1 - p_pos`` is the regime's target on the calibration seed (bisection on
    ``log(noise)``: more noise, less confident rows)."""
    target = TARGETS[regime]
    if target is None:
        return math.inf
    low, high = math.log(1e-4), math.log(10.0)
    for _ in range(50):
        middle = (low + high) / 2
        pair = make_pair(regime, batch, dim, CALIBRATION_SEED, math.exp(middle))
        if one_minus_p_pos(*pair).mean() < target:
            low = middle
        else:
            high = middle
    return math.exp((low + high) / 2)


# ---- the losses ---------------------------------------------------------------------------------------------------


class Gradients(NamedTuple):
    loss: Tensor
    embeddings: list[Tensor]  # one per input
    scale: Tensor | None  # d loss / d log_scale_offset, for a learnable scale


@cache
def _module(name: str) -> torch.nn.Module:
    """One module per configuration, reused (a learnable scale logs its LossStateCallback warning once)."""
    if name == "mnrl":
        return MultipleNegativesRankingLoss(None, scale=SCALE)
    backend, learnable = name.split(":")
    module = MNRPlus(
        None, scale=SCALE, learnable_scale=learnable == "learnable", mask_duplicates=False, backend=backend
    )
    module.loss_state_managed = True  # what LossStateCallback sets: no trainer here, so no warning about one
    return module.double() if backend == "torch" else module


def _gradients(name: str, embeddings: Sequence[Tensor], autocast: bool = False, transform=None) -> Gradients:
    """Forward inside the autocast context (as a trainer calls the loss), backward outside it."""
    module = _module(name)
    leaves = [e.detach().clone().requires_grad_() for e in embeddings]
    scale = getattr(module, "log_scale_offset", None)
    if scale is not None:
        scale.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        inputs = leaves if transform is None else [transform(leaf) for leaf in leaves]
        loss = module.compute_loss_from_embeddings(inputs, None)
    loss.backward()
    return Gradients(loss.detach(), [leaf.grad for leaf in leaves], None if scale is None else scale.grad.clone())


def ours(embeddings: Sequence[Tensor], autocast: bool, fixed_scale: bool = True) -> Gradients:
    """MNRPlus on the GPU path: the embeddings' gradients with a fixed scale (or, without ``fixed_scale``, from the
    learnable one's run: at 20 the two are bit-identical, as float32 ``exp(log(20))`` is 20), the scale's from a
    learnable one."""
    learnable = _gradients("triton:learnable", embeddings, autocast)
    fixed = _gradients("triton:fixed", embeddings, autocast) if fixed_scale else learnable
    return Gradients(fixed.loss, fixed.embeddings, learnable.scale)


def mnrl(embeddings: Sequence[Tensor], autocast: bool) -> Gradients:
    return _gradients("mnrl", embeddings, autocast)


def reference(embeddings: Sequence[Tensor]) -> Gradients:
    """Float64 from the same values: MNRPlus's PyTorch path, checked against MNRL's float64 loss and gradients."""
    exact = [e.double() for e in embeddings]
    want = _gradients("torch:learnable", exact)
    theirs = mnrl(exact, autocast=False)
    # MNRL forms logsumexp - positive and p_pos - 1 in float64: on saturated rows (both about 5e-7) its rounding of
    # about 1e-16 per logit is a relative 1e-9, hence an absolute tolerance on the loss and 1e-6 on the gradients
    # (a thousand times below the errors measured here).
    torch.testing.assert_close(want.loss, theirs.loss, rtol=0.0, atol=1e-12, msg="float64 loss against MNRL's")
    for k, (g, w) in enumerate(zip(want.embeddings, theirs.embeddings, strict=True)):
        if relative_error(g, w) > 1e-6:
            raise AssertionError(f"float64 gradient {k}: {relative_error(g, w):.2e} from MNRL's")
    return want


def _as_products_see(x: Tensor) -> Tensor:
    """``x`` normalised exactly, its value replaced by the bf16 rounding of its float32 normalisation."""
    exact = torch.nn.functional.normalize(x, dim=1)
    rounded = torch.nn.functional.normalize(x.detach().float(), dim=1).bfloat16().double()
    return exact + (rounded - exact).detach()


@cache
def _dot_module() -> torch.nn.Module:
    module = MNRPlus(
        None, scale=SCALE, similarity_fct=dot_score, learnable_scale=True, mask_duplicates=False, backend="torch"
    )
    module.loss_state_managed = True
    return module.double()


def floor(embeddings: Sequence[Tensor]) -> Gradients:
    """Float64 gradients of the inputs whose normalised rows are rounded to bf16 before the products."""
    module = _dot_module()
    leaves = [e.detach().double().requires_grad_() for e in embeddings]
    module.log_scale_offset.grad = None
    loss = module.compute_loss_from_embeddings([_as_products_see(leaf) for leaf in leaves], None)
    loss.backward()
    return Gradients(loss.detach(), [leaf.grad for leaf in leaves], module.log_scale_offset.grad.clone())


# ---- the measurement ----------------------------------------------------------------------------------------------


def relative_error(got: Tensor, want: Tensor) -> float:
    """``||got - want|| / ||want||`` in float64, Frobenius over the whole tensor."""
    want = want.double()
    return float((got.double() - want).norm() / want.norm())


def _errors(got: Gradients, want: Gradients) -> dict[str, Any]:
    per_input = [relative_error(g, w) for g, w in zip(got.embeddings, want.embeddings, strict=True)]
    out: dict[str, Any] = {"embeddings": max(per_input), "per_input": per_input}
    if got.scale is not None:
        out["scale"] = relative_error(got.scale, want.scale)
    return out


def measure(
    setting: str, regime: str, seed: int, batch: int = 256, dim: int = 384, fixed_scale: bool = True
) -> dict[str, Any]:
    """One cell's errors for one seed: ours, MNRL and the floor against float64 from the same inputs, and ours
    and MNRL against the floor's float64 gradients (what each adds to the rounding of the operands).
    ``fixed_scale=False`` takes our embedding gradients from the learnable scale's run (one run instead of two)."""
    dtype, autocast = SETTINGS[setting]
    anchors, positives = make_pair(regime, batch, dim, seed, noise_level(regime, batch, dim))
    inputs = [anchors.to(dtype), positives.to(dtype)]
    want, rounded = reference(inputs), floor(inputs)
    got = {"ours": ours(inputs, autocast, fixed_scale), "mnrl": mnrl(inputs, autocast)}
    return {
        "one_minus_p_pos": float(one_minus_p_pos(*inputs).mean()),
        "floor": _errors(rounded, want),
        **{name: _errors(g, want) for name, g in got.items()},
        **{f"{name}_vs_floor": _errors(g, rounded) for name, g in got.items()},
    }


def run(batch: int, dim: int, seeds: Sequence[int], settings: Sequence[str] = tuple(SETTINGS)) -> dict[str, Any]:
    """``{setting: {regime: [measure(...) per seed]}}``."""
    return {s: {r: [measure(s, r, seed, batch, dim) for seed in seeds] for r in TARGETS} for s in settings}


# ---- the report ---------------------------------------------------------------------------------------------------


def _cell(runs: list[dict[str, Any]], pick: Callable[[dict[str, Any]], float]) -> str:
    values = [pick(r) for r in runs]
    if len(values) == 1:
        return f"{values[0]:.2e}"
    return f"{statistics.mean(values):.2e} ({max(values):.2e})"


def markdown(results: dict[str, Any]) -> str:
    """Two tables: the errors against float64 from the inputs, then against float64 from the rounded operands."""
    lines = [
        "| setting | regime | mean 1 - p_pos | ours (emb. grad) | MNRL (emb. grad) | ours (scale grad) | aim |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    floor_lines = [
        "| setting | regime | floor (emb. grad) | floor (scale grad) | ours vs floor ref. | MNRL vs floor ref. |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for setting, regimes in results.items():
        for regime, runs in regimes.items():
            p = statistics.mean(r["one_minus_p_pos"] for r in runs)
            lines.append(
                f"| {setting} | {regime} | {p:.3g} | {_cell(runs, lambda r: r['ours']['embeddings'])} | "
                f"{_cell(runs, lambda r: r['mnrl']['embeddings'])} | {_cell(runs, lambda r: r['ours']['scale'])} | "
                f"{AIMS[regime]:.0e} |"
            )
            floor_lines.append(
                f"| {setting} | {regime} | {_cell(runs, lambda r: r['floor']['embeddings'])} | "
                f"{_cell(runs, lambda r: r['floor']['scale'])} | "
                f"{_cell(runs, lambda r: r['ours_vs_floor']['embeddings'])} | "
                f"{_cell(runs, lambda r: r['mnrl_vs_floor']['embeddings'])} |"
            )
    return "\n".join([*lines, "", *floor_lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. n-1; a cell is their mean (max)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()
    results = run(args.batch, args.dim, range(args.seeds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "dim": args.dim, "seeds": args.seeds, "results": results}, f, indent=1)
    print(markdown(results))


if __name__ == "__main__":
    main()
