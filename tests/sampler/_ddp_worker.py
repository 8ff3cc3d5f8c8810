"""One rank of the two-process NoDuplicatesSampler test: ``python -m tests.sampler._ddp_worker RANK WORLD INIT OUT``.

Joins a gloo group through a shared file, builds the sampler with no explicit rank (it must read them from
``torch.distributed``), and writes the batches it yields for two epochs, as a plain ``DataLoader`` would see them
(``shard=True``) and through accelerate's ``BatchSamplerShard`` (the default mode, as the trainer runs it).
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist
from accelerate.data_loader import BatchSamplerShard

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.sampler._helpers import duplicated_columns

NUM_ROWS, BATCH_SIZE, SEED = 400, 8, 13


def main(rank: int, world_size: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        data = duplicated_columns(NUM_ROWS, 2, 250, seed=SEED)
        sharded = NoDuplicatesSampler(data, BATCH_SIZE, False, seed=SEED, shard=True)
        default = NoDuplicatesSampler(data, BATCH_SIZE, False, seed=SEED)
        result = {"rank": dist.get_rank(), "len": len(sharded), "epochs": [], "accelerate": []}
        for epoch in range(2):
            sharded.set_epoch(epoch)
            default.set_epoch(epoch)
            result["epochs"].append(list(sharded))
            result["accelerate"].append(list(BatchSamplerShard(default, world_size, rank)))
        # Every rank must stop at the same step: a collective per batch would hang otherwise.
        dist.barrier()
        with open(out, "w", encoding="utf8") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
