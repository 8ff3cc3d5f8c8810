"""What the distributed tests and their worker processes share: the batch, the cases and the step they run.

The parent test process and each worker import this module, so that the rows a worker scores and the rows of
the one-process reference are built by the same code. Nothing here starts a process.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SNLI_DEV = REPO_ROOT / "st_mnr_plus" / "data" / "snli" / "snli_1.0_dev.jsonl.gz"

# Every worker is one of two processes on a 2-core machine: one thread each, or they oversubscribe.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def snli_triplets(n: int, path: Path = SNLI_DEV) -> list[tuple[str, str, str]]:
    """The first ``n`` (premise, entailment, contradiction) triplets of the SNLI dev split, in file order."""
    by_premise: dict[str, dict[str, str]] = {}
    triplets: list[tuple[str, str, str]] = []
    with gzip.open(path, "rt", encoding="utf8") as handle:
        for line in handle:
            row = json.loads(line)
            labels = by_premise.setdefault(row["sentence1"], {})
            labels.setdefault(row["gold_label"], row["sentence2"])
            if "entailment" in labels and "contradiction" in labels and "done" not in labels:
                labels["done"] = ""
                triplets.append((row["sentence1"], labels["entailment"], labels["contradiction"]))
                if len(triplets) == n:
                    return triplets
    raise ValueError(f"{path} holds only {len(triplets)} complete triplets, {n} were asked for.")


def batch_columns(batch_size: int, num_columns: int, duplicates: bool) -> list[list[str]]:
    """The columns (anchor, positive[, negative]) of one global batch of ``batch_size`` rows.

    With ``duplicates``, rows in the second half repeat texts of rows in the first half (a positive, an anchor
    and a negative), so that with two ranks the duplicates sit on different ranks: masking them needs the
    gathered row hashes. The halves also differ in their longest text, so each rank pads to its own width.
    """
    triplets = [list(t) for t in snli_triplets(batch_size)]
    if duplicates:
        half = batch_size // 2
        triplets[half][1] = triplets[0][1]  # positive of a rank-1 row == positive of a rank-0 row
        triplets[half + 1][0] = triplets[1][0]  # anchor of a rank-1 row == anchor of a rank-0 row
        triplets[half + 2][2] = triplets[2][1]  # negative of a rank-1 row == positive of a rank-0 row
    return [[row[c] for row in triplets] for c in range(num_columns)]


@dataclass(frozen=True)
class Case:
    """One loss configuration checked across processes."""

    loss: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_columns: int = 2
    duplicates: bool = False
    batch_size: int = 8


def build_loss(case: Case, model: torch.nn.Module, gather: bool) -> torch.nn.Module:
    """The registered loss of ``case``, built on ``model``, gathering across devices if ``gather``."""
    from st_mnr_plus import registry

    return registry.get("loss", case.loss)(model, gather_across_devices=gather, **case.kwargs)


def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
    """Put ``model`` in the state every distributed comparison uses, and return it.

    Eval mode, because one process could not replay the dropout masks that two ranks draw. Float64, because
    each rank pads to its own longest text and DDP sums in another order: in float32 those roundings reach
    1e-4 relative on gradients summed over every token (the token-type embedding), which would hide nothing
    but would force loose tolerances; in float64 they vanish and the comparison can be tight.

    The BertModel pooler, which mean pooling never uses, is frozen.
    DDP with ``find_unused_parameters=True`` rejects the several forward passes per step that ST losses make
    (one per column group: "marked ready twice"), and without it a trainable unused parameter keeps DDP from
    ever reducing its bucket. So the distributed runs train everything except the pooler, with
    ``find_unused_parameters=False`` (``ddp_find_unused_parameters=False`` in the trainer).
    """
    model.eval().to(torch.float64)
    for name, param in model.named_parameters():
        if ".pooler." in name:
            param.requires_grad_(False)
    return model


def loss_and_grads(
    loss_fn: torch.nn.Module, model: torch.nn.Module, columns: list[list[str]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step's loss and gradients (the model's and the loss's own parameters), without stepping.

    Args:
        loss_fn: The loss; its ``model`` may be a DDP wrapper of ``model``.
        model: The SentenceTransformer whose parameters' gradients are returned.
        columns: The text columns of this process's rows.
    """
    model.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)
    features = [model.preprocess(column) for column in columns]
    loss = loss_fn(features, None)
    loss.backward()
    grads = {f"model.{name}": p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model_params = {id(p) for p in model.parameters()}
    for name, p in loss_fn.named_parameters():
        if id(p) not in model_params and p.grad is not None:
            grads[f"loss.{name}"] = p.grad.detach().clone()
    return loss.detach(), grads


def run_workers(
    module: str, args: list[str], world_size: int, workdir: Path, timeout: float
) -> list[subprocess.CompletedProcess]:
    """Run ``python -m module --rank r ...`` for every rank at once, and wait for all of them.

    Raises:
        RuntimeError: a worker failed or timed out; the message holds every rank's stderr.
    """
    env = {**os.environ, **WORKER_ENV}
    procs = []
    for rank in range(world_size):
        cmd = [sys.executable, "-m", module, "--rank", str(rank), "--world-size", str(world_size), *args]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    failed = False
    for rank, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, err = proc.communicate()
            err += f"\n[rank {rank} timed out after {timeout} s]"
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        failed = failed or proc.returncode != 0
    if failed:
        report = "\n".join(
            f"--- rank {r} (exit {res.returncode}) ---\n{res.stderr[-4000:]}" for r, res in enumerate(results)
        )
        raise RuntimeError(f"Distributed workers of {module} failed:\n{report}")
    return results


# The configurations run across two processes. Ids are the test ids. The ST originals validate the harness.
CASES: dict[str, Case] = {
    "st_mnrl-pairs": Case("mnrl"),
    "st_mnrl-triplets": Case("mnrl", num_columns=3),
    "st_cached_mnrl-triplets": Case("cached_mnrl", {"mini_batch_size": 3}, num_columns=3),
    "mnr_plus-pairs": Case("mnr_plus"),
    # Duplicates sit on different ranks: equal to one process only if the row hashes are gathered too.
    "mnr_plus-triplets-duplicates": Case("mnr_plus", num_columns=3, duplicates=True),
    "mnr_plus-symmetric-learnable-scale": Case(
        "mnr_plus", {"symmetric": True, "learnable_scale": True}, num_columns=3, duplicates=True
    ),
    # 4 rows per rank in mini-batches of 3: a ragged last mini-batch, and DDP's no_sync on all but the last.
    "cached_mnr_plus-triplets-duplicates": Case(
        "cached_mnr_plus", {"mini_batch_size": 3}, num_columns=3, duplicates=True
    ),
    "cached_mnr_plus-learnable-scale": Case(
        "cached_mnr_plus", {"mini_batch_size": 3, "learnable_scale": True}, num_columns=3, duplicates=True
    ),
}

# The configurations trained through SentenceTransformerTrainer under torchrun (global batch = batch_size).
TRAINER_CASES: dict[str, Case] = {
    "st_mnrl": Case("mnrl"),
    # A learnable scale is a parameter of the loss, which DDP does not synchronise: the losses must.
    "mnr_plus-learnable-scale": Case("mnr_plus", {"learnable_scale": True}),
    "cached_mnr_plus-learnable-scale": Case("cached_mnr_plus", {"mini_batch_size": 3, "learnable_scale": True}),
}
