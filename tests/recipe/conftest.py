"""Shared by the recipe's tests and the CLI's: a tiny saved model, a few SNLI rows, a quick run's flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

CLI = str(Path(sys.executable).with_name("st-mnr-plus"))
TEXTS = ["a man is playing a guitar .", "two dogs run across a field ."]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``st-mnr-plus ARGS`` in a subprocess, offline."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False)


def fast_run(model_dir: Path, rows: Path, output_dir: Path, *extra: str) -> list[str]:
    """A few steps of the tiny model on a handful of rows, no evaluators, no checkpoints unless asked."""
    return [
        "--model", str(model_dir), "--source", str(rows), "--max-rows", "64", "--batch-size", "16",
        "--max-steps", "2", "--evaluators", "--save_strategy", "no", "--logging_steps", "1",
        "--use_cpu", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def encode(model_dir: Path) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)
