"""Time MNRPlus (forward + backward of the loss) and NoDuplicatesSampler (construction + one epoch) from whichever
st_mnr_plus is first on sys.path, one thread, CPU time, best of the later rounds. Run it alternately against two
checkouts to compare versions on one machine (benchmarks/README.md, "Before and after"):

    git archive e44033d | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python benchmarks/compare_before_after.py
    PYTHONPATH=. python benchmarks/compare_before_after.py
"""

from __future__ import annotations

import json
import time

import torch

from st_mnr_plus import MNRPlus, NoDuplicatesSampler
from st_mnr_plus.bench.workloads import make_embeddings, synthetic_pairs

LOSS_CASES = [(4096, 768, 1, False), (4096, 384, 0, True), (1024, 384, 1, False)]  # batch, dim, negatives, symmetric


def main() -> None:
    torch.set_num_threads(1)
    out = {}
    for batch, dim, negatives, symmetric in LOSS_CASES:
        loss = MNRPlus(None, symmetric=symmetric)
        times = []
        for _ in range(4):
            embeddings = [e.detach().clone().requires_grad_() for e in make_embeddings(batch, dim, negatives)]
            start = time.process_time()
            loss.compute_loss_from_embeddings(embeddings).backward()
            times.append(time.process_time() - start)
        out[f"loss B{batch} d{dim} neg{negatives}{' sym' if symmetric else ''}"] = min(times[1:])  # the first warms up
    data = synthetic_pairs(200_000)
    times = []
    for seed in range(3):
        start = time.process_time()
        sampler = NoDuplicatesSampler(data, batch_size=1024, drop_last=False, seed=seed)
        sum(1 for _ in sampler)
        times.append(time.process_time() - start)
    out["sampler 200k b1024"] = min(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
