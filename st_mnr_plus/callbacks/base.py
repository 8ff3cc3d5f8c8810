"""What the package's callbacks share: checking the ``loss`` argument, finding a trainer's callback list, and
:class:`LogCallback`, the plumbing of the callbacks that add figures to the training logs.

The logging callbacks add their figures to the training logs (the ones holding ``loss``) at each logging step, so
they land in ``trainer.state.log_history`` and reach the reporters (TensorBoard, W&B, ...).

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle
    from transformers import Trainer

logger = logging.getLogger(__name__)

__all__ = ["LogCallback", "losses_by_dataset", "trainer_callbacks"]


def losses_by_dataset(loss: Any, *, optional: bool = False) -> dict[str, nn.Module]:
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


def trainer_callbacks(trainer: Trainer) -> list[TrainerCallback]:
    """The trainer's list of callbacks, which :meth:`attach` methods edit in place."""
    handler = getattr(trainer, "callback_handler", None)
    if handler is None or not isinstance(getattr(handler, "callbacks", None), list):
        raise ValueError(f"trainer must be a transformers Trainer, got {type(trainer).__name__}.")
    return handler.callbacks


class LogCallback(TrainerCallback):
    """Shared plumbing: check the arguments, add figures to a training log, patch ``log_history``, remove the
    forward hooks at the end of training, and :meth:`attach` to a trainer."""

    def __init__(self, loss: Any, prefix: str, *, loss_optional: bool = False) -> None:
        self._by_dataset = losses_by_dataset(loss, optional=loss_optional)
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}.")
        self.prefix = prefix
        self._handles: list[RemovableHandle] = []
        self._in_step = False

    def attach(self, trainer: Trainer) -> LogCallback:
        """Add this callback to ``trainer`` ahead of its reporting callbacks, so that they log its figures too.

        It goes right after transformers' ``DefaultFlowCallback`` (first if there is none). Returns ``self``.
        """
        callbacks = trainer_callbacks(trainer)
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
