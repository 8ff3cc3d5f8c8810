"""The event sequence of transformers' training loop, driven by hand, and a loss that reports given diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class FakeLoss(nn.Module):
    """Sets ``diagnostics`` from a queue of dicts, one per forward, like MNRPlus does."""

    def __init__(self, queue: list[dict[str, float]] | None = None) -> None:
        super().__init__()
        self.queue = list(queue or [])
        self.calls = 0

    def forward(self, sentence_features, labels=None):
        self.calls += 1
        if self.queue:
            self.diagnostics = self.queue.pop(0)
        return torch.tensor(0.0)


def features(rows: int, lengths: list[int], columns: int = 2) -> list[dict[str, torch.Tensor]]:
    """``columns`` feature dicts of ``rows`` rows, padded to max(lengths); row i has lengths[i] real tokens."""
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return [{"input_ids": torch.ones(rows, width, dtype=torch.long), "attention_mask": mask} for _ in range(columns)]


@pytest.fixture
def loop(tmp_path: Path):
    """args, state, control as the trainer holds them, plus a log() that appends to log_history as Trainer.log does."""
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True)
    state = TrainerState()
    control = TrainerControl()

    def log(callback: TrainerCallback, logs: dict[str, Any]) -> dict[str, Any]:
        state.log_history.append({**logs, "step": state.global_step})
        callback.on_log(args, state, control, logs=logs)
        return logs

    return args, state, control, log
