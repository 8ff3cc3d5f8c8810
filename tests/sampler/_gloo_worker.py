"""One rank of the two-process sampler test: build NoDuplicatesSampler under an initialised gloo group.

Run as ``python -m tests.sampler._gloo_worker --rank R --world-size W --init-file F --out DIR``. The sampler takes
its world size and rank from ``torch.distributed``; the rank writes the batches it yields, in both modes, to
``DIR/rank<R>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.distributed as dist

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.sampler._helpers import duplicated_columns

# Shared with the parent test, which rebuilds the rows to check the batches.
NUM_ROWS, NUM_COLUMNS, POOL, DATA_SEED = 410, 2, 300, 21
BATCH_SIZE, SAMPLER_SEED, EPOCHS = 8, 5, 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo", init_method=f"file://{args.init_file}", rank=args.rank, world_size=args.world_size)
    try:
        data = duplicated_columns(NUM_ROWS, NUM_COLUMNS, POOL, seed=DATA_SEED)
        result: dict[str, object] = {}
        for mode, shard in (("shard", True), ("interleaved", False)):
            sampler = NoDuplicatesSampler(data, BATCH_SIZE, False, seed=SAMPLER_SEED, shard=shard)
            epochs, left_out = [], []
            for epoch in range(EPOCHS):
                sampler.set_epoch(epoch)
                epochs.append(list(sampler))
                left_out.append(sampler.left_out_indices.tolist())
            result[mode] = {
                "num_replicas": sampler.num_replicas,
                "rank": sampler.rank,
                "len": len(sampler),
                "epochs": epochs,
                "left_out": left_out,
            }
        # Every rank must agree on the number of steps, or a collective would hang: check it with one.
        counts = [None] * args.world_size
        dist.all_gather_object(counts, len(result["shard"]["epochs"][0]))
        result["all_counts"] = counts
        args.out.joinpath(f"rank{args.rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
