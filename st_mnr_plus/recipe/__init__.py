"""The whole recipe in one call: NLI rows -> MNR loss -> duplicate-free batches -> trainer -> STS scores.

:func:`run_recipe` is what ``st-mnr-plus train`` runs. It takes the recipe's own options (:class:`RecipeOptions`:
what to train on, the model, the loss, the sampler, the evaluators) and the training arguments, any field of
sentence-transformers' ``SentenceTransformerTrainingArguments``, of which the recipe fills in its own defaults
(:data:`RECIPE_TRAINER_DEFAULTS`). Every component is looked up in the registry by name, so a third-party plugin's
loss, sampler, builder, evaluator or callback works here with no code.

Where things are:

- :mod:`.options`: :class:`RecipeOptions` and :class:`RecipeError`;
- :mod:`.config`: the config schema (names, aliases, types, the true/false words), ``--config`` files, merging
  flags over them, writing ``config.yaml``;
- :mod:`.components`: the data, model, loss, evaluators and callbacks, built by name;
- :mod:`.trainer_args`: the trainer's defaults in the recipe and the values derived from the run's length;
- :mod:`.checkpoints`: finding and resuming checkpoints, the one Ctrl-C leaves;
- :mod:`.hub`: recognising an offline machine or a missing hub repository;
- :mod:`.outputs`: the output directory, the trained model's folder and the plot;
- :mod:`.run`: :func:`prepare_recipe` and :func:`run_recipe`.
"""

from __future__ import annotations

from st_mnr_plus.recipe.checkpoints import (
    INTERRUPTED_CHECKPOINT,
    TRAINER_STATE_FILE,
    find_last_checkpoint,
    resolve_resume,
    save_interrupted_checkpoint,
)
from st_mnr_plus.recipe.components import (
    build_callbacks,
    build_evaluators,
    build_loss,
    build_training_data,
    bundled_snli_path,
    default_model_path,
    load_model,
)
from st_mnr_plus.recipe.config import ConfigFileError, load_config_file, resolved_arguments, write_config
from st_mnr_plus.recipe.options import CACHED_VARIANTS, RecipeError, RecipeOptions
from st_mnr_plus.recipe.outputs import FINAL_MODEL_DIR, plot_history, prepare_output_dir
from st_mnr_plus.recipe.run import PreparedRecipe, evaluate, prepare_recipe, run_recipe
from st_mnr_plus.recipe.trainer_args import RECIPE_TRAINER_DEFAULTS, training_argument_names

__all__ = [
    "CACHED_VARIANTS",
    "FINAL_MODEL_DIR",
    "INTERRUPTED_CHECKPOINT",
    "RECIPE_TRAINER_DEFAULTS",
    "TRAINER_STATE_FILE",
    "ConfigFileError",
    "PreparedRecipe",
    "RecipeError",
    "RecipeOptions",
    "build_callbacks",
    "build_evaluators",
    "build_loss",
    "build_training_data",
    "bundled_snli_path",
    "default_model_path",
    "evaluate",
    "find_last_checkpoint",
    "load_config_file",
    "load_model",
    "plot_history",
    "prepare_output_dir",
    "prepare_recipe",
    "resolve_resume",
    "resolved_arguments",
    "run_recipe",
    "save_interrupted_checkpoint",
    "training_argument_names",
    "write_config",
]
