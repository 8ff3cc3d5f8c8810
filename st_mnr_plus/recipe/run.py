"""The run: :func:`prepare_recipe` builds everything (a dry run stops there), :func:`run_recipe` evaluates, trains,
evaluates again and writes the outputs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_mnr_plus.plugins import registry
from st_mnr_plus.recipe import components
from st_mnr_plus.recipe.checkpoints import (
    INTERRUPTED_CHECKPOINT,
    checkpoint_step,
    resolve_resume,
    save_interrupted_checkpoint,
)
from st_mnr_plus.recipe.config import resolved_arguments, write_config
from st_mnr_plus.recipe.hub import is_offline_error
from st_mnr_plus.recipe.options import RecipeError, RecipeOptions
from st_mnr_plus.recipe.outputs import (
    FINAL_MODEL_DIR,
    name_sampler_in_model_card,
    output_folder,
    plot_history,
    prepare_run_folder,
)
from st_mnr_plus.recipe.trainer_args import (
    check_trainer_numbers,
    check_training_keys,
    make_training_arguments,
    planned_steps,
    trainer_values,
)

logger = logging.getLogger(__name__)


def evaluate(model, evaluators: list[Any]) -> dict[str, float]:
    """Run each evaluator; return ``{primary metric name: value}``."""
    scores: dict[str, float] = {}
    for evaluator in evaluators:
        metrics = evaluator(model)
        key = getattr(evaluator, "primary_metric", None)
        if key in metrics:
            scores[key] = float(metrics[key])
        else:
            scores.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    return scores


def _evaluate_once(trainer, model, evaluators: list[Any], when: str) -> dict[str, float]:
    """The test-set scores, computed by the main process only (under torchrun the others wait for it)."""
    scores: dict[str, float] = {}
    if trainer.is_world_process_zero():
        logger.info("Evaluating %s training ...", when)
        scores = evaluate(model, evaluators)
    trainer.accelerator.wait_for_everyone()
    return scores


def _train(recipe: PreparedRecipe):
    """``trainer.train()``, resuming where asked; on Ctrl-C, a resumable checkpoint of the steps done."""
    trainer, output_dir = recipe.trainer, recipe.output_dir
    if recipe.resume_from is not None:
        logger.info("Resuming from %s ...", recipe.resume_from)
    try:
        return trainer.train(
            resume_from_checkpoint=str(recipe.resume_from) if recipe.resume_from is not None else None
        )
    except KeyboardInterrupt:
        step = trainer.state.global_step
        if step > 0:
            folder = output_dir / INTERRUPTED_CHECKPOINT
            resumable = save_interrupted_checkpoint(trainer, folder)
            if recipe.loss_state is not None:
                recipe.loss_state.save(folder)
            how = f"resume with --resume_from_checkpoint {folder}" if resumable else "only the model was saved"
            logger.warning("Interrupted at step %d: saved in %s (%s).", step, folder, how)
        else:
            logger.warning("Interrupted before the first step: nothing to save.")
        raise
    except Exception:
        logger.error(
            "Training failed at step %d; the partial output (checkpoints, logs) is kept in %s.",
            trainer.state.global_step,
            output_dir,
        )
        raise


def _samples_per_second(trainer, metrics: Mapping[str, Any], first_step: int) -> float | None:
    """Training rows per second over all processes, for the steps run since ``first_step``: every optimizer step
    takes ``per_device_train_batch_size * gradient_accumulation_steps`` rows on each of ``world_size`` processes."""
    runtime = metrics.get("train_runtime")
    if not runtime:
        return metrics.get("train_samples_per_second")
    args = trainer.args
    steps = trainer.state.global_step - first_step
    rows = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return round(rows / runtime, 3)


def loss_settings(loss) -> dict[str, Any]:
    settings = {"class": type(loss).__name__}
    if hasattr(loss, "get_config_dict"):
        for key, value in loss.get_config_dict().items():
            settings[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return settings


@dataclass
class PreparedRecipe:
    """Everything :func:`prepare_recipe` built; ``trainer`` is ``None`` for a dry run."""

    options: RecipeOptions
    args: Any
    train_dataset: Any
    model: Any
    loss: Any
    loss_name: str
    sampler: type
    test_evaluators: list[Any]
    dev_evaluators: list[Any]
    resume_from: Path | None
    summary: dict[str, Any]
    trainer: Any = None
    loss_state: Any = None

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)


def prepare_recipe(options: RecipeOptions, training_args: Mapping[str, Any] | None = None) -> PreparedRecipe:
    """Validate the configuration, build data, model, loss, evaluators, callbacks and the trainer; train nothing.

    Args:
        options: The recipe's own options.
        training_args: Fields of ``SentenceTransformerTrainingArguments`` to set (only those given: the recipe
            fills in its defaults for the others). ``resume_from_checkpoint`` may be a checkpoint folder, or
            ``true``/``"last"`` for the newest checkpoint in ``output_dir`` (``checkpoint-interrupted`` included).

    Raises:
        RecipeError: a configuration that cannot work (unknown component or argument, existing output directory,
            offline hub, a checkpoint that cannot be resumed).
    """
    options.validate()
    given = dict(training_args or {})
    check_training_keys(given)
    components.resolve_components(options)
    resume_value = given.get("resume_from_checkpoint")
    output_path = output_folder(given)
    output_dir = str(output_path)
    # Check the arguments before the data is built; the final ones come once the number of steps is known.
    early = trainer_values(options, given, total_steps=None, output_dir=output_dir)
    check_trainer_numbers(early)
    early_args = make_training_arguments(early, quiet=True)
    resume_from = resolve_resume(resume_value, output_path)
    if not options.dry_run:
        prepare_run_folder(output_path, resume_from, options.overwrite)

    seed = early_args.seed
    logger.info("Building %s with the %r builder ...", options.kind, options.builder)
    train_dataset, build_report = components.build_training_data(options, seed=seed)
    logger.info("Loading model %s ...", options.model or "all-MiniLM-L6-v2 (embedded default)")
    model = components.load_model(options.model, options.max_seq_length)
    loss_name, loss = components.build_loss(options, model)
    sampler_cls = registry.get("batch_sampler", options.sampler)
    test_evaluators = components.build_evaluators(options.evaluators, "test", options.evaluator_options)
    dev_evaluators = components.build_evaluators(options.evaluators, "validation", options.evaluator_options)
    callbacks = components.build_callbacks(options.callbacks, loss)

    # Constructing the sampler as the trainer will (its arguments, the run's seed) validates the data against it
    # (e.g. too few distinct texts for a batch) and tells how many batches an epoch yields.
    batches = len(
        sampler_cls(
            train_dataset,
            batch_size=early_args.per_device_train_batch_size,
            drop_last=early_args.dataloader_drop_last,
            valid_label_columns=[],
            seed=seed,
        )
    )
    total_steps = planned_steps(early, batches, early_args.world_size)
    values = trainer_values(options, given, total_steps=total_steps, output_dir=output_dir)
    values["batch_sampler"] = sampler_cls
    if resume_from is not None:
        # LossStateCallback reads the folder from here; the trainer gets it from train(resume_from_checkpoint=).
        values["resume_from_checkpoint"] = str(resume_from)
    args = make_training_arguments(values)

    summary = _summary(options, train_dataset, build_report, loss_name, loss, args, total_steps, resume_from)
    prepared = PreparedRecipe(
        options=options,
        args=args,
        train_dataset=train_dataset,
        model=model,
        loss=loss,
        loss_name=loss_name,
        sampler=sampler_cls,
        test_evaluators=test_evaluators,
        dev_evaluators=dev_evaluators,
        resume_from=resume_from,
        summary=summary,
    )
    if options.dry_run:
        summary["dry_run"] = True
        return prepared

    _attach_trainer(prepared, callbacks)
    return prepared


def _summary(options, train_dataset, build_report, loss_name, loss, args, total_steps, resume_from) -> dict[str, Any]:
    """The run's description, printed and written to ``results.json``."""
    return {
        "model": options.model or "sentence-transformers/all-MiniLM-L6-v2 (embedded)",
        "data": {
            "kind": options.kind,
            "rows": len(train_dataset),
            "columns": train_dataset.column_names,
            **build_report,
        },
        "loss": {"name": loss_name, **loss_settings(loss)},
        "sampler": options.sampler,
        "batch_size": args.per_device_train_batch_size,
        "planned_steps": total_steps,
        "output_dir": str(args.output_dir),
        "resumed_from": str(resume_from) if resume_from else None,
        "arguments": resolved_arguments(options, args),
    }


def _attach_trainer(prepared: PreparedRecipe, callbacks: list[Any]) -> None:
    """Build the trainer for a prepared recipe, with the callbacks ahead of the reporters and the loss's state."""
    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator

    from st_mnr_plus.callbacks import LossStateCallback, loss_own_parameters
    from st_mnr_plus.recipe.trainer import RecipeTrainer

    options, model, loss = prepared.options, prepared.model, prepared.loss
    # The model card names the data; the loss it names itself, the sampler is added after training.
    sources = components.describe_sources(list(options.sources) or [components.bundled_snli_path()])
    model.model_card_data.train_datasets = [{"name": f"{sources} ({options.kind})"}]
    # Our logging callbacks go ahead of the reporters (attach), so that their figures are reported too.
    attachable = [cb for cb in callbacks if callable(getattr(cb, "attach", None))]
    try:
        trainer = RecipeTrainer(
            model=model,
            args=prepared.args,
            train_dataset=prepared.train_dataset,
            loss=loss,
            evaluator=SequentialEvaluator(prepared.dev_evaluators) if prepared.dev_evaluators else None,
            callbacks=[cb for cb in callbacks if cb not in attachable],
        )
    except Exception as exc:
        if is_offline_error(exc):
            raise RecipeError(
                f"The trainer could not reach the Hugging Face Hub to create the push_to_hub repository "
                f"({type(exc).__name__}): this machine looks offline. Leave --push_to_hub out, or run where the "
                "hub is reachable."
            ) from exc
        if isinstance(exc, (ValueError, ImportError, RuntimeError)):
            # The trainer's checks of its arguments (e.g. a reporter that is not installed).
            raise RecipeError(f"The trainer refused the configuration: {exc}") from exc
        raise
    for callback in reversed(attachable):
        callback.attach(trainer)
    prepared.trainer = trainer
    if loss_own_parameters(loss):
        prepared.loss_state = LossStateCallback(loss).attach(trainer)


def run_recipe(options: RecipeOptions, training_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the recipe end to end and return the results summary (also written to ``results.json``).

    The output directory (the trainer's ``output_dir``) ends up holding the trained model with its model card in
    ``final/``, ``results.json`` (with every resolved argument), ``config.yaml`` (the same arguments, reusable with
    ``--config``), ``training.png``, the trainer's ``checkpoint-<step>`` folders and its reporters' logs. With
    ``push_to_hub`` the folder is uploaded as the trainer does (checkpoints left out).

    Raises:
        RecipeError: a configuration that cannot work (see :func:`prepare_recipe`).
        KeyboardInterrupt: after saving a resumable checkpoint to ``<output_dir>/checkpoint-interrupted``.
        Exception: whatever training raised, unchanged; the partial output (checkpoints, logs) is kept.
    """
    started = time.perf_counter()
    recipe = prepare_recipe(options, training_args)
    summary = recipe.summary
    if options.dry_run:
        return summary
    trainer, model, output_dir = recipe.trainer, recipe.model, recipe.output_dir

    main = trainer.is_world_process_zero()
    if main:
        # Written before training too, so that an interrupted run can be resumed from it (--config ... --resume).
        write_config(output_dir / "config.yaml", summary["arguments"])
    scores_before = _evaluate_once(trainer, model, recipe.test_evaluators, "before")
    first_step = (checkpoint_step(recipe.resume_from) or 0) if recipe.resume_from is not None else 0
    train_output = _train(recipe)
    scores_after = _evaluate_once(trainer, model, recipe.test_evaluators, "after")
    name_sampler_in_model_card(model, recipe.sampler, options.sampler)
    final_dir = output_dir / FINAL_MODEL_DIR
    trainer.save_model(str(final_dir))  # with push_to_hub, push_to_hub() below also saves it into output_dir
    plot = plot_history(trainer.state.log_history, output_dir / "training.png") if main else None

    metrics = train_output.metrics
    summary.update(
        {
            # The trained settings (a learnable scale has moved), not those of before training.
            "loss": {"name": recipe.loss_name, **loss_settings(recipe.loss)},
            "steps": trainer.state.global_step,
            "train_runtime_s": metrics.get("train_runtime"),
            "train_samples_per_second": _samples_per_second(trainer, metrics, first_step),
            "world_size": trainer.args.world_size,
            "train_loss": metrics.get("train_loss"),
            "scores_before": scores_before,
            "scores_after": scores_after,
            "model_dir": str(final_dir),
            "plot": str(plot) if plot else None,
            "hub_model_id": getattr(trainer, "hub_model_id", None) if recipe.args.push_to_hub else None,
            "wall_time_s": round(time.perf_counter() - started, 1),
            "process_index": trainer.args.process_index,
        }
    )
    # What the trainer ran with: attached callbacks may have added to its arguments (a loss's own learning rate).
    summary["arguments"] = resolved_arguments(options, trainer.args)
    if main:
        (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        write_config(output_dir / "config.yaml", summary["arguments"])
    if recipe.args.push_to_hub:
        # As the trainer does it: save the model and its card into output_dir, upload the folder (checkpoints
        # left out) to hub_model_id. results.json, config.yaml and training.png go with it.
        logger.info("Pushing %s to the hub repository %s ...", output_dir, trainer.hub_model_id)
        commit = trainer.push_to_hub(commit_message="st-mnr-plus train: end of training")
        summary["hub_commit"] = str(getattr(commit, "commit_url", commit))
    return summary
