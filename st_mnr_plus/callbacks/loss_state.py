"""LossStateCallback: a loss's own parameters (a learnable scale) in every checkpoint, restored on resume, with
their own learning rate."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from st_mnr_plus.callbacks.base import losses_by_dataset, trainer_callbacks

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)

__all__ = ["LOSS_STATE_FILE", "LossStateCallback", "loss_own_parameters"]


LOSS_STATE_FILE = "loss_state.pt"
"""Name of the file :class:`LossStateCallback` writes into each checkpoint folder."""


def loss_own_parameters(loss: nn.Module | Mapping[str, nn.Module]) -> dict[str, nn.Parameter]:
    """The parameters a loss holds besides its model's (a learnable scale), by name.

    For a dict of losses (several datasets) the names are ``"<dataset>.<parameter>"``, as the trainer's
    optimizer sees them. Parameters shared with ``loss.model`` (or with any model a loss wraps) are left out.
    """
    own: dict[str, nn.Parameter] = {}
    for prefix, module in losses_by_dataset(loss).items():
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
        losses = losses_by_dataset(loss)
        self.loss = loss
        # Tell the losses that their state is looked after: MNRPlus warns when a learnable scale trains without.
        for module in (m for one in losses.values() for m in one.modules()):
            if hasattr(module, "scale_learning_rate"):
                module.loss_state_managed = True

    def attach(self, trainer: Trainer) -> LossStateCallback:
        """Add this callback to ``trainer`` and put the learning rates the loss asks for into its arguments.

        The same as passing it in ``callbacks=[...]`` when the trainer is built: call it before
        ``trainer.train()``, where the optimizer reads ``args.learning_rate_mapping``. Returns ``self``.
        """
        callbacks = trainer_callbacks(trainer)
        if not any(callback is self for callback in callbacks):
            callbacks.append(self)
        self._add_learning_rates(trainer.args)
        return self

    def _add_learning_rates(self, args: TrainingArguments) -> None:
        mapping = getattr(args, "learning_rate_mapping", None)
        if isinstance(mapping, dict):
            for pattern, rate in self.learning_rates().items():
                mapping.setdefault(pattern, rate)

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # Passed as callbacks=[...]: the trainer calls this at the end of its __init__, before train() builds the
        # optimizer from args.learning_rate_mapping, so the scale gets its own rate as with attach().
        self._add_learning_rates(args)

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
        for prefix, loss in losses_by_dataset(self.loss).items():
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
