"""``torchrun --nproc_per_node 2 st-mnr-plus train``: every process trains, the main one alone evaluates the test
set, writes the outputs and prints one summary, whose samples/s counts the rows of every process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed._common import REPO_ROOT, WORKER_ENV

pytestmark = pytest.mark.slow  # torchrun running the CLI: ~15 s

CLI = str(Path(sys.executable).with_name("st-mnr-plus"))


def test_the_main_process_alone_evaluates_writes_and_reports_a_global_rate(tiny_model_dir, nli_rows, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    out = tmp_path / "out"
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", CLI, "train",
        "--model", str(tiny_model_dir), "--source", str(nli_rows), "--batch-size", "16", "--max-steps", "3",
        "--use_cpu", "--save_strategy", "no", "--eval_strategy", "no", "--output_dir", str(out),
        "--loss-option", "gather_across_devices=true",
    ]  # fmt: skip
    env = {**os.environ, **WORKER_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    output = proc.stdout + proc.stderr
    assert proc.stdout.count("st-mnr-plus train: done") == 1
    # Once before and once after training, by one process: the test set is not scored twice.
    assert output.count("Evaluating the model on the sts-test dataset") == 2, output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["world_size"] == 2
    assert results["steps"] == 3
    assert results["scores_before"]
    assert results["scores_after"]
    # 3 steps x 16 rows x 2 processes, over the training time.
    assert results["train_samples_per_second"] == pytest.approx(3 * 16 * 2 / results["train_runtime_s"], rel=0.01)
    assert f"{results['train_samples_per_second']:.1f} samples/s over 2 processes" in proc.stdout
    assert (out / "training.png").is_file()
