"""``SentenceTransformerTrainer`` under ``torchrun --nproc_per_node 2`` (gloo, CPU) with ``gather_across_devices``.

A few optimizer steps per loss; both ranks must end with identical weights (the model's and the loss's own
parameters, such as a learnable scale, which DDP does not synchronise), and the weights must have moved.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from tests.distributed._common import REPO_ROOT, TRAINER_CASES, WORKER_ENV

pytestmark = pytest.mark.slow  # two torchrun processes training each loss: ~15 s

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def trained(_tiny_model_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train every case under torchrun once; return the folder of ``<case>.rank<r>.json`` results."""
    import os
    import subprocess

    workdir = tmp_path_factory.mktemp("trainer")
    model_dir = workdir / "model"
    _tiny_model_session.save(str(model_dir))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [
        torchrun,
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        "-m",
        "tests.distributed._trainer_worker",
        "--model-dir",
        str(model_dir),
        "--out",
        str(workdir),
        "--losses",
        ",".join(TRAINER_CASES),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env={**os.environ, **WORKER_ENV}, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return workdir


@pytest.mark.parametrize("case_id", list(TRAINER_CASES))
def test_trainer_ranks_end_identical(case_id: str, trained: Path) -> None:
    ranks = [json.loads((trained / f"{case_id}.rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert [r["world_size"] for r in ranks] == [WORLD_SIZE] * WORLD_SIZE
    assert [r["wrapper"] for r in ranks] == ["DistributedDataParallel"] * WORLD_SIZE
    assert ranks[0]["before"] == ranks[1]["before"], "the ranks started from different weights"
    assert ranks[0]["after"] == ranks[1]["after"], "the ranks ended with different weights"
    assert ranks[0]["after"]["model"] != ranks[0]["before"]["model"], "training did not change the model"
    if ranks[0]["after"]["loss_params"]:
        assert ranks[0]["after"]["loss"] != ranks[0]["before"]["loss"], "training did not change the loss parameters"
    assert len(ranks[0]["losses"]) == 3, "expected one logged loss per step"
    assert all(math.isfinite(x) and x > 0 for x in ranks[0]["losses"])
