"""One rank of the ``gather_across_devices`` check: ``python -m tests.distributed._gather_worker --rank R ...``.

Each rank joins a gloo process group, wraps the model in DistributedDataParallel (CPU), takes its contiguous
share of the global batch, and saves the loss and the (DDP-averaged) gradients of every case to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.distributed._common import CASES, batch_columns, build_loss, loss_and_grads, prepare_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-file", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", required=True, help="comma-separated ids from CASES")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    from sentence_transformers import SentenceTransformer

    dist.init_process_group("gloo", init_method=f"file://{args.init_file}", rank=args.rank, world_size=args.world_size)
    try:
        base = SentenceTransformer(str(args.model_dir), device="cpu")
        for case_id in args.cases.split(","):
            case = CASES[case_id]
            model = prepare_model(copy.deepcopy(base))
            ddp = DistributedDataParallel(model, find_unused_parameters=False)
            loss_fn = build_loss(case, model, gather=True)
            loss_fn.model = ddp  # what SentenceTransformerTrainer does with the wrapped model
            share = case.batch_size // args.world_size
            columns = [
                column[args.rank * share : (args.rank + 1) * share]
                for column in batch_columns(case.batch_size, case.num_columns, case.duplicates)
            ]
            loss, grads = loss_and_grads(loss_fn, model, columns)
            torch.save({"loss": loss, "grads": grads}, args.out / f"{case_id}.rank{args.rank}.pt")
            dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
