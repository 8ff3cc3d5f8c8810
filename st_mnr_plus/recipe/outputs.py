"""What a run leaves in its output directory: the folder itself (empty, or resumed in place), the trained model's
folder, the training plot and the model card's line about the batch sampler."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_mnr_plus.recipe.checkpoints import resume_kind
from st_mnr_plus.recipe.options import RecipeError

logger = logging.getLogger(__name__)


FINAL_MODEL_DIR = "final"
"""Folder under the output directory that holds the trained model and its model card."""


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RecipeError(
                f"Output directory {str(path)!r} exists and is not empty; pass --overwrite to replace it, or "
                "--resume_from_checkpoint to continue the run it holds."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def prepare_run_folder(output_path: Path, resume_from: Path | None, overwrite: bool) -> None:
    if resume_from is not None and output_path.resolve() in resume_from.resolve().parents:
        # The run continues in its own folder: nothing is deleted, --overwrite (kept in a config.yaml) or not.
        logger.info("Resuming in %s from %s.", output_path, resume_from)
    else:
        prepare_output_dir(output_path, overwrite)


def output_folder(given: Mapping[str, Any]) -> Path:
    """The run's folder: ``output_dir``, else the folder of the checkpoint it resumes, else a fresh one."""
    resume_value = given.get("resume_from_checkpoint")
    if given.get("output_dir"):
        return Path(str(given["output_dir"])).expanduser()
    if resume_kind(resume_value) == "path":
        return Path(str(resume_value)).expanduser().parent  # continue in the run's own folder
    # A fresh directory per run by default, like the sentence-transformers training scripts.
    return Path(f"output/st-mnr-plus-{time.strftime('%Y%m%d-%H%M%S')}")


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


def name_sampler_in_model_card(model, sampler_cls: type, name: str) -> None:
    # sentence-transformers drops a batch sampler class from the hyperparameters it lists (to_dict() leaves
    # callables out); put it back so that the card says which sampler made the batches.
    described = f"{sampler_cls.__module__}.{sampler_cls.__qualname__} (registry name {name!r})"
    for hyperparameters in (
        model.model_card_data.non_default_hyperparameters,
        model.model_card_data.all_hyperparameters,
    ):
        hyperparameters["batch_sampler"] = described
