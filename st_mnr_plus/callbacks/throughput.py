"""ThroughputCallback: samples/s, tokens/s and peak memory of the training steps, logged with the training loss."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import TrainerControl, TrainerState, TrainingArguments

from st_mnr_plus.bench.memory import peak_rss_mib
from st_mnr_plus.callbacks.base import LogCallback

__all__ = ["ThroughputCallback"]


def _batch_size(features: Mapping[str, Any]) -> int | None:
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    for value in features.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


class ThroughputCallback(LogCallback):
    """Log training throughput (samples/s, tokens/s) and peak memory with the training loss.

    At each logging step it adds, over the training time since the previous log:

    - ``<prefix>samples_per_second``: training examples (rows of the dataset) per second.
    - ``<prefix>tokens_per_second``: non-padding tokens per second, all text columns together (only when
      ``loss`` is given and the inputs carry an ``attention_mask``).
    - ``<prefix>peak_rss_mib`` on CPU (the process's peak resident set size, from ``getrusage``) or
      ``<prefix>peak_cuda_allocated_mib`` on GPU (``torch.cuda.max_memory_allocated``): peaks since the start of
      the process, or since the previous log with ``reset_peak=True`` on GPU.

    How it counts: with ``loss`` given, a forward pre-hook on the loss sees each training batch as the trainer
    passes it (one feature dict per column): the rows of the first column are the samples, and the sums of the
    columns' ``attention_mask`` are the tokens. Without ``loss`` the samples are counted as
    ``per_device_train_batch_size * gradient_accumulation_steps * world_size`` per optimizer step (the trainer's
    own convention; the last batch of an epoch may be smaller) and tokens are not reported. So under DDP the
    figures with ``loss`` are this process's own (multiply by the world size for all processes), those without it
    are for all processes together. Forwards of the eval loss are not counted. The time is that of the training
    steps plus the data loading between them; evaluation, checkpoint saving and logging are left out.

    Args:
        loss: The loss instance given to the trainer (or a dict of them), to count exact samples and tokens.
        prefix: Put before every key.
        reset_peak: On GPU, reset CUDA's peak memory statistics at each log, so that each figure is the peak of
            its interval.

    Raises:
        ValueError: ``loss`` is neither ``None``, an ``nn.Module`` nor a dict of them, or ``prefix`` is not a string.
    """

    def __init__(
        self,
        loss: nn.Module | Mapping[str, nn.Module] | None = None,
        prefix: str = "throughput/",
        reset_peak: bool = False,
    ) -> None:
        super().__init__(loss, prefix, loss_optional=True)
        self.losses = list(self._by_dataset.values())
        self.reset_peak = reset_peak
        self._device: torch.device | None = None
        self._mark: float | None = None
        self._step_start = 0.0
        self._seconds = 0.0
        self._steps = 0
        self._samples = 0
        self._tokens = 0
        self._tokens_seen = False

    def _count(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._in_step:
            return
        features = args[0] if args else kwargs.get("sentence_features")
        if not isinstance(features, list | tuple) or not features or not isinstance(features[0], Mapping):
            return
        rows = _batch_size(features[0])
        if rows is not None:
            self._samples += rows
        for column in features:
            mask = column.get("attention_mask") if isinstance(column, Mapping) else None
            if isinstance(mask, torch.Tensor):
                self._tokens += int(mask.sum().item())
                self._tokens_seen = True

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._remove_hooks()
        self._device = args.device
        self._mark = None  # the wait for the first batch (workers starting) is not a training step's time
        self._reset()
        for module in self.losses:
            self._handles.append(module.register_forward_pre_hook(self._count, with_kwargs=True))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        now = time.perf_counter()
        if self._mark is not None:
            self._seconds += now - self._mark  # loading the batches of this step
        self._step_start = now
        self._in_step = True

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        now = time.perf_counter()
        self._seconds += now - self._step_start
        self._mark = now
        self._in_step = False
        self._steps += 1

    def _restart_clock(self) -> None:
        # Evaluation, saving and logging happen between steps; leave their time out.
        if self._mark is not None:
            self._mark = time.perf_counter()

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._restart_clock()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._restart_clock()

    def _figures(self, args: TrainingArguments) -> dict[str, float] | None:
        if self._steps == 0 or self._seconds <= 0:
            return None
        figures: dict[str, float] = {}
        if self.losses:
            samples = self._samples
        else:
            samples = (
                self._steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            )
        figures[f"{self.prefix}samples_per_second"] = samples / self._seconds
        if self._tokens_seen:
            figures[f"{self.prefix}tokens_per_second"] = self._tokens / self._seconds
        figures.update(self._memory())
        return figures

    def _after_log(self) -> None:
        self._restart_clock()

    def _memory(self) -> dict[str, float]:
        device = self._device
        if device is not None and device.type == "cuda" and torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            if self.reset_peak:
                torch.cuda.reset_peak_memory_stats(device)
            return {f"{self.prefix}peak_cuda_allocated_mib": peak}
        peak = peak_rss_mib()
        return {f"{self.prefix}peak_rss_mib": peak} if math.isfinite(peak) else {}

    def _reset(self) -> None:
        self._seconds = 0.0
        self._steps = 0
        self._samples = 0
        self._tokens = 0
        self._tokens_seen = False
