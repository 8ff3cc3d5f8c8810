"""One command for the day a GPU is lent: the CUDA tests, then the loss and training-step figures, in one JSON.

On one CUDA GPU, in under 8 minutes::

    python benchmarks/gpu_acceptance.py --output gpu-results.json

1. **tests**: the CUDA-marked tests (``tests/losses/test_backend.py``, ``test_field.py``, ``test_functional.py``
   with ``-k cuda``) in a fresh process with ``TRITON_INTERPRET=0``: the compiled kernels against the PyTorch
   path on CUDA tensors.
2. **loss**: forward + backward of sentence-transformers' ``MultipleNegativesRankingLoss`` (MNRL), MNRPlus on the
   PyTorch path (``backend="torch"``) and on the fused kernels (``backend="triton"``), on bfloat16 embeddings at
   B in {1,024, 16,384, 65,536} and d in {384, 768}, 0 and 1 hard-negative columns: median seconds of the timed
   calls and ``torch.cuda.max_memory_allocated`` above the inputs (an out-of-memory is recorded, not raised).
3. **steps**: training steps of all-MiniLM-L6-v2 (the ``model`` extra) through ``SentenceTransformerTrainer``,
   bf16, batch 256, with MNRPlus (``backend="auto"``: the kernels) and with MNRL: samples per second.

Every section has a time budget; what does not fit is recorded as skipped. ``--smoke`` runs tiny sizes on the
CPU (the kernels in Triton's interpreter) so that the script itself is tested without a GPU
(``tests/bench/test_gpu_acceptance.py``); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = {"full": [1024, 16384, 65536], "smoke": [8, 33]}
DIMS = {"full": [384, 768], "smoke": [16]}
LOSSES = ("mnrl", "mnr_plus_torch", "mnr_plus_triton")
CUDA_TESTS = ["tests/losses/test_backend.py", "tests/losses/test_field.py", "tests/losses/test_functional.py"]


def _loss(name: str) -> Callable[[list[Any]], Any]:
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        module = MultipleNegativesRankingLoss(None)
    else:
        from st_mnr_plus.losses import MNRPlus

        module = MNRPlus(None, backend=name.removeprefix("mnr_plus_"))
    return lambda embeddings: module.compute_loss_from_embeddings(embeddings, None)


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


def time_loss(name: str, batch: int, dim: int, negatives: int, device: str, dtype: Any, repeats: int) -> dict:
    """Median seconds of ``repeats`` timed forward + backward calls after one warm-up, and the peak memory."""
    import torch

    from st_mnr_plus.bench.workloads import loss_step, make_embeddings

    loss_fn = _loss(name)
    try:
        loss_step(loss_fn, make_embeddings(batch, dim, negatives, device=device, dtype=dtype))  # warm-up, compile
        times, peak = [], 0.0
        for seed in range(repeats):
            embeddings = make_embeddings(batch, dim, negatives, seed=seed, device=device, dtype=dtype)
            for embedding in embeddings:
                embedding.grad = torch.zeros_like(embedding)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                baseline = torch.cuda.memory_allocated()
            start = time.perf_counter()
            value = loss_step(loss_fn, embeddings)
            if device == "cuda":
                torch.cuda.synchronize()
                peak = max(peak, (torch.cuda.max_memory_allocated() - baseline) / 2**30)
            times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if device == "cuda":
            torch.cuda.empty_cache()
        return {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    return {"ok": True, "seconds": statistics.median(times), "peak_extra_gib": peak, "loss_value": value}


def run_losses(mode: str, device: str, budget_s: float) -> list[dict[str, Any]]:
    import torch

    rows, start = [], time.perf_counter()
    for batch in SIZES[mode]:
        for dim in DIMS[mode]:
            for negatives in (0, 1):
                for name in LOSSES:
                    row = {"loss": name, "batch": batch, "dim": dim, "negatives": negatives, "dtype": "bfloat16"}
                    if time.perf_counter() - start > budget_s:
                        rows.append({**row, "ok": False, "error": "skipped: over the section's time budget"})
                        continue
                    repeats = 3 if batch <= 16384 else 2
                    rows.append({**row, **time_loss(name, batch, dim, negatives, device, torch.bfloat16, repeats)})
    return rows


def run_steps(mode: str, device: str, budget_s: float) -> list[dict[str, Any]]:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from st_mnr_plus.bench.workloads import fresh_copy, load_model, packaged_text_pairs, trainer_steps
    from st_mnr_plus.losses import MNRPlus

    batch, steps = (256, 12) if mode == "full" else (8, 2)
    model = load_model(device=device)
    rows, start = [], time.perf_counter()
    for name, make in (("mnrl", MultipleNegativesRankingLoss), ("mnr_plus_auto", MNRPlus)):
        if time.perf_counter() - start > budget_s:
            rows.append({"loss": name, "ok": False, "error": "skipped: over the section's time budget"})
            continue
        copy = fresh_copy(model)
        loss = make(copy)
        seconds = trainer_steps(copy, loss, packaged_text_pairs(), batch_size=batch, steps=steps, device=device)
        timed = seconds[1:] or seconds  # the first step compiles the kernels
        rate = batch / statistics.median(timed)
        row = {"loss": name, "ok": True, "batch": batch, "steps": steps, "samples_per_second": rate}
        if hasattr(loss, "backend_used"):
            row["backend_used"] = loss.backend_used.name
        rows.append(row)
    return rows


def ratios(losses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: MNRPlus's time and memory over MNRL's, on each path (lower is better)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for row in losses:
        by_key.setdefault((row["batch"], row["dim"], row["negatives"]), {})[row["loss"]] = row
    out = []
    for (batch, dim, negatives), rows in sorted(by_key.items()):
        base = rows.get("mnrl", {})
        entry: dict[str, Any] = {"batch": batch, "dim": dim, "negatives": negatives}
        for name in ("mnr_plus_torch", "mnr_plus_triton"):
            ours = rows.get(name, {})
            if base.get("ok") and ours.get("ok"):
                entry[f"{name}_time_ratio"] = ours["seconds"] / base["seconds"]
                if base["peak_extra_gib"]:
                    entry[f"{name}_memory_ratio"] = ours["peak_extra_gib"] / base["peak_extra_gib"]
        out.append(entry)
    return out


def machine(device: str) -> dict[str, Any]:
    import sentence_transformers
    import torch

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="gpu-results.json", help="where to write the results (JSON)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to test this script")
    parser.add_argument("--skip-tests", action="store_true", help="leave out section 1 (the CUDA tests)")
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
    results: dict[str, Any] = {"mode": mode, "machine": machine(device)}
    if not args.skip_tests and mode == "full":
        results["tests"] = run_tests(budget_s=150)
    results["loss"] = run_losses(mode, device, budget_s=210 if mode == "full" else 60)
    results["loss_ratios"] = ratios(results["loss"])
    if not args.skip_steps:
        results["steps"] = run_steps(mode, device, budget_s=90 if mode == "full" else 60)
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.output).write_text(json.dumps(results, indent=2), encoding="utf-8")
    for entry in results["loss_ratios"]:
        print(json.dumps(entry))
    print(f"wrote {args.output} in {results['seconds']} s")
    return 0 if results.get("tests", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
