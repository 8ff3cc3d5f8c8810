"""The trainer's arguments in the recipe: its own defaults (:data:`RECIPE_TRAINER_DEFAULTS`), the values derived
from the run's length (evaluation, checkpoint and logging intervals), and their checks."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from st_mnr_plus.recipe.hub import hub_offline
from st_mnr_plus.recipe.options import RecipeError, RecipeOptions

# Where the recipe departs from the trainer's defaults: field -> (value, what --help says). A value of None here
# means that it is computed per run (see trainer_values).
RECIPE_TRAINER_DEFAULTS: dict[str, tuple[Any, str]] = {
    "output_dir": (None, "output/st-mnr-plus-<date>-<time> (the run's folder when resuming from a checkpoint path)"),
    "per_device_train_batch_size": (64, "64"),
    "num_train_epochs": (1.0, "1"),
    "learning_rate": (2e-5, "2e-05"),
    "warmup_steps": (0.1, "0.1, a ratio: 10% of the training steps"),
    "seed": (42, "42"),
    "eval_strategy": (None, "steps when there are evaluators, else no"),
    "eval_steps": (None, "a quarter of the run"),
    "save_steps": (None, "eval_steps"),
    "save_total_limit": (2, "2"),
    "logging_steps": (None, "a tenth of the run, at most 10 steps"),
    "report_to": (None, "none when the hub is offline (HF_HUB_OFFLINE=1), else the trainer's default"),
    "disable_tqdm": (False, "false"),
    "dataloader_pin_memory": (None, "true with a GPU (or another accelerator), else false: pinning needs one"),
    "use_cpu": (
        None,
        "true when torchrun starts several processes on a machine with no GPU (or other accelerator), so that they "
        "train one model over gloo; else false",
    ),
}

# Trainer fields the recipe sets from its own options.
_RECIPE_OWNED_TRAINER_FIELDS = {"batch_sampler": "the recipe's sampler option (a registered name): use --sampler"}


def training_argument_names() -> list[str]:
    """The names of the fields of ``SentenceTransformerTrainingArguments`` (what :func:`run_recipe` accepts)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return [f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init]


def accelerator_available() -> bool:
    """Whether torch sees a GPU or another accelerator (pinned memory is only of use, and torch only stays quiet
    about it, with one)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def launched_processes() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started: its ``WORLD_SIZE``, else 1.

    Raises:
        RecipeError: ``WORLD_SIZE`` is not a positive whole number.
    """
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise RecipeError(f"The environment variable WORLD_SIZE must be a positive whole number, got {value!r}.")
    return count


def check_training_keys(values: Mapping[str, Any]) -> None:
    known = set(training_argument_names())
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(
            f"Unknown training argument(s) {unknown}; SentenceTransformerTrainingArguments has {sorted(known)}."
        )
    for key, reason in _RECIPE_OWNED_TRAINER_FIELDS.items():
        if key in values:
            raise RecipeError(f"The recipe sets {key} from {reason}.")


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Hold back the libraries' log messages (they come again when the arguments are built for the run)."""
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "transformers")]
    levels = [lib.level for lib in loggers]
    for lib in loggers:
        lib.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lib, level in zip(loggers, levels, strict=True):
            lib.setLevel(level)


def make_training_arguments(values: Mapping[str, Any], *, quiet: bool = False):
    from sentence_transformers import SentenceTransformerTrainingArguments

    try:
        with _quiet_libraries() if quiet else contextlib.nullcontext():
            return SentenceTransformerTrainingArguments(**values)
    except (ValueError, TypeError, ImportError) as exc:
        raise RecipeError(f"Invalid training arguments: {exc}") from exc


def trainer_values(
    options: RecipeOptions, given: Mapping[str, Any], *, total_steps: int | None, output_dir: str
) -> dict[str, Any]:
    """The trainer's arguments: what was given, then the recipe's defaults (:data:`RECIPE_TRAINER_DEFAULTS`)."""
    values = {k: v for k, v in given.items() if k != "resume_from_checkpoint"}
    ratio = values.get("warmup_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
            raise RecipeError(f"warmup_ratio must be in [0, 1), got {ratio!r}.")
        if "warmup_steps" not in values:
            # The recipe's --warmup-ratio of old: transformers 5 deprecates the name and takes a ratio (a float
            # below 1) as warmup_steps.
            values["warmup_steps"] = values.pop("warmup_ratio")
    for key, (value, _) in RECIPE_TRAINER_DEFAULTS.items():
        if value is not None and key not in values:
            values[key] = value
    values["output_dir"] = output_dir
    values.setdefault("eval_strategy", "steps" if options.evaluators else "no")
    # In steps, not as a ratio: the trainer compares these with a resumed checkpoint's and warns when they differ.
    values.setdefault("eval_steps", max(1, (total_steps or 4) // 4))
    values.setdefault("save_steps", values["eval_steps"])
    accelerator = accelerator_available()
    values.setdefault("dataloader_pin_memory", accelerator)
    processes = launched_processes()
    if processes > 1 and not accelerator:
        # Without use_cpu the trainer sets up no process group on a machine with no accelerator: every process
        # would train, save and report a copy of its own.
        if values.get("use_cpu") is False:
            raise RecipeError(
                f"The launcher started {processes} processes (WORLD_SIZE={processes}) on a machine with no GPU, "
                "and use_cpu is false: each would train a separate copy. Leave --use_cpu out (or pass --use_cpu) "
                "to train one model on the CPUs over gloo."
            )
        values["use_cpu"] = True
    if "report_to" not in values and hub_offline():
        values["report_to"] = "none"
    if "logging_steps" not in values:
        values["logging_steps"] = max(1, min(10, (total_steps or 10) // 10))
    return values


def check_trainer_numbers(values: Mapping[str, Any]) -> None:
    batch = values.get("per_device_train_batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise RecipeError(f"per_device_train_batch_size (--batch-size) must be a positive integer, got {batch!r}.")
    epochs, max_steps = values.get("num_train_epochs", 1.0), values.get("max_steps", -1)
    if not (isinstance(max_steps, int) and max_steps > 0) and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise RecipeError(f"num_train_epochs (--epochs) must be > 0 (or max_steps set), got {epochs!r}.")
    rate = values.get("learning_rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
        raise RecipeError(f"learning_rate (--lr) must be > 0, got {rate!r}.")
    warmup = values.get("warmup_steps")
    if isinstance(warmup, (int, float)) and not isinstance(warmup, bool) and warmup < 0:
        raise RecipeError(f"warmup_steps must be >= 0 (a number of steps, or a ratio below 1), got {warmup!r}.")


def planned_steps(values: Mapping[str, Any], batches_per_epoch: int, world_size: int = 1) -> int:
    """Optimizer steps of the run as the trainer counts them: ``max_steps``, or the epochs' worth of steps.

    ``batches_per_epoch`` is the length of the batch sampler the trainer will use (a last, partial batch
    included when the sampler yields it); accelerate hands each process every ``world_size``-th batch, and an
    optimizer step takes ``gradient_accumulation_steps`` of them, the last step of an epoch possibly fewer.
    """
    if values.get("max_steps", -1) > 0:
        return values["max_steps"]
    per_process = math.ceil(batches_per_epoch / world_size)
    accumulation = values.get("gradient_accumulation_steps", 1)
    per_epoch = max(per_process // accumulation + int(per_process % accumulation > 0), 1)
    return math.ceil(values["num_train_epochs"] * per_epoch)
