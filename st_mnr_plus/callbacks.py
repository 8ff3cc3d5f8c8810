"""Trainer callbacks that put MNR diagnostics and throughput figures into the trainer's logs.

Both add their figures to the training logs (the ones holding ``loss``) at each logging step, so they land in
``trainer.state.log_history`` and reach the reporters (TensorBoard, W&B, ...).

Where a callback sits matters for the reporters: transformers' ``Trainer.log`` appends the logs to
``state.log_history`` and then calls every callback's ``on_log`` in order, and the reporting callbacks are added
before the ones passed as ``callbacks=``. The figures reach ``log_history`` (patched in place) and the callbacks
after ours (the progress bar or printer) either way; to have them reach the reporters too, add the callback with
:meth:`attach`, which puts it ahead of them::

    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    MNRDiagnosticsCallback(loss).attach(trainer)
    ThroughputCallback(loss).attach(trainer)
    trainer.train()

Evaluating a preset every N steps and keeping the best checkpoint needs no callback: pass the evaluator to the
trainer with ``eval_strategy="steps"``, ``eval_steps=N``, ``load_best_model_at_end=True`` and
``metric_for_best_model="eval_sts-dev_spearman_cosine"``; add transformers' ``EarlyStoppingCallback`` to stop
when that metric stalls.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle
    from transformers import Trainer

logger = logging.getLogger(__name__)


def _losses(loss: Any, *, optional: bool = False) -> dict[str, nn.Module]:
    """Check a callback's ``loss`` argument: the loss instance given to the trainer, or a dict of them by dataset.

    Returns the losses by dataset name, a single loss under ``""``; with ``optional``, ``None`` gives ``{}``.

    Raises:
        ValueError: Naming ``loss`` (or ``loss['<dataset>']``) and what it must be.
    """
    if loss is None and optional:
        return {}
    if not isinstance(loss, Mapping):
        if not isinstance(loss, nn.Module):
            either = "None or " if optional else ""
            raise ValueError(
                f"loss must be {either}the loss instance given to the trainer (an nn.Module) or a dict of them, "
                f"got {type(loss).__name__}."
            )
        return {"": loss}
    if not loss:
        raise ValueError("loss must be an nn.Module or a non-empty dict of them, got an empty dict.")
    for name, module in loss.items():
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"loss[{name!r}] must be the loss instance given to the trainer (an nn.Module), "
                f"got {type(module).__name__}."
            )
    return dict(loss)


def _callbacks_of(trainer: Trainer) -> list[TrainerCallback]:
    """The trainer's list of callbacks, which :meth:`attach` methods edit in place."""
    handler = getattr(trainer, "callback_handler", None)
    if handler is None or not isinstance(getattr(handler, "callbacks", None), list):
        raise ValueError(f"trainer must be a transformers Trainer, got {type(trainer).__name__}.")
    return handler.callbacks


class _LogCallback(TrainerCallback):
    """Shared plumbing: check the arguments, add figures to a training log, patch ``log_history``, remove the
    forward hooks at the end of training, and :meth:`attach` to a trainer."""

    def __init__(self, loss: Any, prefix: str, *, loss_optional: bool = False) -> None:
        self._by_dataset = _losses(loss, optional=loss_optional)
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}.")
        self.prefix = prefix
        self._handles: list[RemovableHandle] = []
        self._in_step = False

    def attach(self, trainer: Trainer) -> _LogCallback:
        """Add this callback to ``trainer`` ahead of its reporting callbacks, so that they log its figures too.

        It goes right after transformers' ``DefaultFlowCallback`` (first if there is none). Returns ``self``.
        """
        callbacks = _callbacks_of(trainer)
        if any(callback is self for callback in callbacks):
            return self
        position = 0
        for index, callback in enumerate(callbacks):
            if isinstance(callback, DefaultFlowCallback):
                position = index + 1
        callbacks.insert(position, self)
        return self

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if self._is_training_log(logs):
            figures = self._figures(args)
            if figures is not None:
                self._add(state, logs, figures)
                self._reset()
        self._after_log()

    def _figures(self, args: TrainingArguments) -> dict[str, float] | None:
        """The figures of the interval since the last training log; ``None`` when there are none to log yet."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Start a new interval."""
        raise NotImplementedError

    def _after_log(self) -> None:
        """Called after every log, training or not."""

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._remove_hooks()
        self._in_step = False

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _is_training_log(logs: Mapping[str, Any] | None) -> bool:
        return logs is not None and "loss" in logs

    @staticmethod
    def _add(state: TrainerState, logs: dict[str, Any], figures: Mapping[str, float]) -> None:
        """Add ``figures`` to ``logs`` (for the callbacks after us) and to the matching ``log_history`` entry.

        ``Trainer.log`` appended ``{**logs, "step": ...}`` to ``log_history`` before calling ``on_log``.
        """
        if not figures:
            return
        history = state.log_history
        entry = history[-1] if history else None
        matches = (
            entry is not None
            and entry.get("step") == state.global_step
            and all(key in entry and (entry[key] is value or entry[key] == value) for key, value in logs.items())
        )
        logs.update(figures)
        if matches:
            entry.update(figures)
        else:
            logger.debug(
                "No log_history entry matches the logs at step %d; figures went to the logs only.", state.global_step
            )


def _as_float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MNRDiagnosticsCallback(_LogCallback):
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


def _batch_size(features: Mapping[str, Any]) -> int | None:
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    for value in features.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux it reads ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives ``execve``,
    so a process started by a large one (pytest, a launcher) would report its parent's peak. Elsewhere it falls
    back to ``getrusage`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class ThroughputCallback(_LogCallback):
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


LOSS_STATE_FILE = "loss_state.pt"
"""Name of the file :class:`LossStateCallback` writes into each checkpoint folder."""


def loss_own_parameters(loss: nn.Module | Mapping[str, nn.Module]) -> dict[str, nn.Parameter]:
    """The parameters a loss holds besides its model's (a learnable scale), by name.

    For a dict of losses (several datasets) the names are ``"<dataset>.<parameter>"``, as the trainer's
    optimizer sees them. Parameters shared with ``loss.model`` (or with any model a loss wraps) are left out.
    """
    own: dict[str, nn.Parameter] = {}
    for prefix, module in _losses(loss).items():
        model = getattr(module, "model", None)
        model_ids = {id(p) for p in model.parameters()} if isinstance(model, nn.Module) else set()
        for name, parameter in module.named_parameters():
            if id(parameter) not in model_ids and not name.startswith("model."):
                own[f"{prefix}.{name}" if prefix else name] = parameter
    return own


class LossStateCallback(TrainerCallback):
    """Save a loss's own parameters (a learnable scale) with every checkpoint, restore them on resume, and give
    them their own learning rate.

    ``SentenceTransformerTrainer`` puts the loss's parameters into its optimizer, but a checkpoint holds only the
    model, the optimizer's state and the scheduler: ``resume_from_checkpoint`` would restart a learnable scale from
    its initial value. This callback writes ``loss_state.pt`` (the loss's own parameters, see
    :func:`loss_own_parameters`) into every checkpoint folder and, when training resumes from a checkpoint, copies
    the values back into the same parameters before the first step, so a resumed run continues from where the
    interrupted one stopped.

    With :meth:`attach`, parameters that ask for their own learning rate get it: a loss that has a
    ``scale_learning_rate`` attribute (``MNRPlus`` with ``learnable_scale=True``) gets an entry in the trainer's
    ``args.learning_rate_mapping`` (sentence-transformers' per-parameter learning rates) for its own parameters,
    unless the mapping already names them.

    Args:
        loss: The loss instance given to the trainer, or a dict of them (several datasets).

    Raises:
        ValueError: ``loss`` is not an ``nn.Module`` or a dict of them.

    Example:
        ::

            loss = MNRPlus(model, learnable_scale=True)
            trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
            LossStateCallback(loss).attach(trainer)
            trainer.train(resume_from_checkpoint=True)
    """

    def __init__(self, loss: nn.Module | Mapping[str, nn.Module]) -> None:
        _losses(loss)
        self.loss = loss

    def attach(self, trainer: Trainer) -> LossStateCallback:
        """Add this callback to ``trainer`` and put the learning rates the loss asks for into its arguments.

        Call it before ``trainer.train()``: the optimizer, built there, reads ``args.learning_rate_mapping``.
        Returns ``self``.
        """
        callbacks = _callbacks_of(trainer)
        if not any(callback is self for callback in callbacks):
            callbacks.append(self)
        mapping = getattr(trainer.args, "learning_rate_mapping", None)
        if isinstance(mapping, dict):
            for pattern, rate in self.learning_rates().items():
                mapping.setdefault(pattern, rate)
        return self

    def learning_rates(self) -> dict[str, float]:
        """Regular expression -> learning rate for the loss parameters that ask for their own rate."""
        names_by_rate: dict[float, list[str]] = {}
        for name, _, rate in self._own_rates():
            names_by_rate.setdefault(rate, []).append(name)
        return {f"^({'|'.join(re.escape(name) for name in names)})$": rate for rate, names in names_by_rate.items()}

    def _own_rates(self) -> list[tuple[str, nn.Parameter, float]]:
        """``(name as the optimizer sees it, parameter, rate)`` of each loss parameter with a rate of its own.

        The loss itself or any module inside it (``MatryoshkaLoss`` wraps MNRPlus as ``.loss``) may ask for one
        with a ``scale_learning_rate``; its own parameters (not its model's) get that rate.
        """
        found: dict[int, tuple[str, nn.Parameter, float]] = {}
        for prefix, loss in _losses(self.loss).items():
            own = {id(p): name for name, p in loss_own_parameters(loss).items()}
            for module in loss.modules():
                rate = getattr(module, "scale_learning_rate", None)
                if rate is None:
                    continue
                for parameter in module.parameters():
                    if id(parameter) in own and id(parameter) not in found:
                        name = f"{prefix}.{own[id(parameter)]}" if prefix else own[id(parameter)]
                        found[id(parameter)] = (name, parameter, float(rate))
        return list(found.values())

    def save(self, directory: str | os.PathLike[str]) -> Path | None:
        """Write the loss's own parameters to ``directory/loss_state.pt``; ``None`` when it has none."""
        parameters = loss_own_parameters(self.loss)
        if not parameters:
            return None
        path = Path(directory) / LOSS_STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({name: p.detach().cpu().clone() for name, p in parameters.items()}, path)
        return path

    def load(self, directory: str | os.PathLike[str]) -> bool:
        """Copy the values saved in ``directory/loss_state.pt`` into the loss's parameters; ``False`` if absent.

        Raises:
            ValueError: The file names parameters the loss does not have, or has shapes that differ.
        """
        path = Path(directory) / LOSS_STATE_FILE
        if not path.is_file():
            return False
        saved = torch.load(path, map_location="cpu", weights_only=True)
        parameters = loss_own_parameters(self.loss)
        if set(saved) != set(parameters):
            raise ValueError(
                f"{path} holds the loss parameters {sorted(saved)}, but the loss has {sorted(parameters)}: "
                "it was saved from a loss with other options."
            )
        with torch.no_grad():
            for name, value in saved.items():
                if value.shape != parameters[name].shape:
                    raise ValueError(
                        f"{path}: parameter {name!r} has shape {tuple(value.shape)}, the loss's has "
                        f"{tuple(parameters[name].shape)}."
                    )
                parameters[name].copy_(value)
        return True

    def _exempt_from_weight_decay(self, optimizer: Any) -> None:
        # A parameter with its own learning rate (a learnable scale) has a parameter group of its own, built by
        # the trainer from learning_rate_mapping with the model's weight decay. A temperature is not a weight to
        # shrink: that group gets none. Only the groups' hyper-parameters change, never their layout, so an
        # optimizer state saved in a checkpoint still loads.
        own = {id(parameter) for _, parameter, _ in self._own_rates()}
        for group in getattr(optimizer, "param_groups", ()):
            params = group.get("params", ())
            if params and all(id(p) in own for p in params):
                group["weight_decay"] = 0.0

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if state.is_world_process_zero:
            self.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._exempt_from_weight_decay(kwargs.get("optimizer"))
        if state.global_step == 0 or not loss_own_parameters(self.loss):
            return  # a fresh run
        # The trainer does not tell callbacks which checkpoint it resumed from: an explicit
        # args.resume_from_checkpoint folder, else the one of the restored step in output_dir.
        candidates = []
        if isinstance(args.resume_from_checkpoint, str) and os.path.isdir(args.resume_from_checkpoint):
            candidates.append(Path(args.resume_from_checkpoint))
        candidates.append(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        for folder in candidates:
            if self.load(folder):
                logger.info("Restored the loss's own parameters from %s.", folder / LOSS_STATE_FILE)
                return
        logger.warning(
            "Resuming at step %d, but no %s was found in %s: the loss's own parameters (a learnable scale) start "
            "from their initial values.",
            state.global_step,
            LOSS_STATE_FILE,
            " or ".join(str(folder) for folder in candidates),
        )


__all__ = [
    "LOSS_STATE_FILE",
    "LossStateCallback",
    "MNRDiagnosticsCallback",
    "ThroughputCallback",
    "loss_own_parameters",
    "peak_rss_mib",
]
