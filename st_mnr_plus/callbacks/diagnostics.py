"""MNRDiagnosticsCallback: MNRPlus's per-batch diagnostics (accuracy, similarities, masking, scale), averaged
between two logging steps and logged with the training loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import TrainerControl, TrainerState, TrainingArguments

from st_mnr_plus.callbacks.base import LogCallback

__all__ = ["MNRDiagnosticsCallback"]


def _as_float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MNRDiagnosticsCallback(LogCallback):
    """Log an MNR loss's diagnostics (in-batch accuracy, similarities, masked fraction, scale) with the training loss.

    After each forward, ``MNRPlus`` leaves a dict of floats in ``loss.diagnostics``: ``accuracy`` (the share of
    anchors whose positive has the highest logit), ``positive_similarity``, ``hardest_negative_similarity``,
    ``masked_fraction``, ``masked_duplicates`` and ``scale``. This callback collects that dict after every training
    forward (every micro-batch under gradient accumulation; forwards for the eval loss are left out), and at each
    logging step adds the mean over the forwards since the previous log as ``<prefix><key>``, e.g.
    ``mnr/accuracy``. The scale is the latest value, not a mean, so that it follows a learned scale. Non-finite
    values (MNRPlus reports a NaN hardest-negative similarity for a batch without negatives) are left out of the
    mean; a key with no finite value since the last log is not logged.

    Args:
        loss: The loss instance given to the trainer, or a dict of name -> loss as given to the trainer for
            several datasets; then each key is logged as ``<prefix><name>/<key>``. Each must set
            ``diagnostics`` after its forward (``MNRPlus``, ``CachedMNRPlus``).
        prefix: Put before every key.

    Raises:
        ValueError: ``loss`` is not an ``nn.Module`` (or a dict of them), or ``prefix`` is not a string.
        TypeError: At the first training step, when a loss ran but left no ``diagnostics`` dict.

    Example:
        ::

            loss = MNRPlus(model)
            trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
            MNRDiagnosticsCallback(loss).attach(trainer)
            trainer.train()
            trainer.state.log_history[0]["mnr/accuracy"]
    """

    def __init__(self, loss: nn.Module | Mapping[str, nn.Module], prefix: str = "mnr/") -> None:
        super().__init__(loss, prefix)
        # Keys are put between the prefix and each figure's name.
        self.losses = {
            (f"{name}/" if isinstance(loss, Mapping) else ""): module for name, module in self._by_dataset.items()
        }
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._latest: dict[str, float] = {}
        # (name, (statistics, rows, scale)) of the forwards since the last log, not yet read from the device.
        self._pending: list[tuple[str, tuple[Any, int, Any]]] = []

    def _collect(self, name: str, module: nn.Module) -> None:
        if not self._in_step:
            return  # an eval-loss forward, or one outside the training loop
        statistics = getattr(module, "statistics", None)
        if statistics is not None:
            # Still on the device: read at the next log, so that a training step never waits for the GPU.
            self._pending.append((name, statistics))
            return
        self._add_diagnostics(name, getattr(module, "diagnostics", None), module)

    def _add_diagnostics(self, name: str, diagnostics: Any, module: nn.Module | None = None) -> None:
        if not isinstance(diagnostics, Mapping):
            raise TypeError(
                f"MNRDiagnosticsCallback: the loss {type(module).__name__} left no `diagnostics` dict after its "
                "forward; use a loss that reports diagnostics, such as st_mnr_plus.MNRPlus."
            )
        for key, value in diagnostics.items():
            number = _as_float(value)
            if number is None or not math.isfinite(number):
                continue  # e.g. no hardest negative in a batch of one pair (NaN): left out of the mean
            full = f"{self.prefix}{name}{key}"
            self._sums[full] = self._sums.get(full, 0.0) + number
            self._counts[full] = self._counts.get(full, 0) + 1
            self._latest[full] = number

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._remove_hooks()
        self._reset()
        for name, module in self.losses.items():
            self._handles.append(
                module.register_forward_hook(lambda mod, _args, _out, name=name: self._collect(name, mod))
            )

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._in_step = True

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._in_step = False

    def _figures(self, args: TrainingArguments) -> dict[str, float] | None:
        from st_mnr_plus.losses.functional import diagnostics_from_stats

        for name, (stats, rows, scale) in self._pending:
            self._add_diagnostics(name, diagnostics_from_stats(stats, rows, scale))
        self._pending.clear()
        if not self._counts:
            return None
        figures = {}
        for key, total in self._sums.items():
            latest = key.endswith("scale")
            figures[key] = self._latest[key] if latest else total / self._counts[key]
        return figures

    def _reset(self) -> None:
        self._sums.clear()
        self._counts.clear()
        self._latest.clear()
        self._pending.clear()
