"""Checkpoints of a recipe run: finding the newest one, resolving ``--resume``, and the resumable checkpoint that
Ctrl-C leaves (``checkpoint-interrupted/``)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from st_mnr_plus.recipe.config import as_bool
from st_mnr_plus.recipe.options import RecipeError

logger = logging.getLogger(__name__)


INTERRUPTED_CHECKPOINT = "checkpoint-interrupted"
"""Folder, inside the output directory, that Ctrl-C leaves: a checkpoint the trainer can resume from."""

TRAINER_STATE_FILE = "trainer_state.json"


def checkpoint_step(folder: Path) -> int | None:
    """The global step a resumable checkpoint folder holds, from its ``trainer_state.json``; ``None`` if none."""
    state = folder / TRAINER_STATE_FILE
    if not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    except (ValueError, TypeError, OSError):
        return None


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint in ``output_dir``: a ``checkpoint-<step>`` or ``checkpoint-interrupted``.

    "Newest" is the highest step its ``trainer_state.json`` records (then the latest written). Folders without
    a ``trainer_state.json`` cannot be resumed and are left out.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    candidates = []
    for folder in root.iterdir():
        name = folder.name
        if not folder.is_dir() or not (name == INTERRUPTED_CHECKPOINT or name.removeprefix("checkpoint-").isdigit()):
            continue
        step = checkpoint_step(folder)
        if step is not None:
            candidates.append((step, (folder / TRAINER_STATE_FILE).stat().st_mtime, folder))
    return max(candidates)[2] if candidates else None


def resume_kind(value: Any) -> Literal["no", "last", "path"]:
    """What a ``resume_from_checkpoint`` value asks for: nothing, the newest checkpoint, or a given folder."""
    if value is None or str(value).strip().lower() in ("", "none"):
        return "no"
    if str(value).strip().lower() == "last":
        return "last"
    # An integer is a folder name here, not a boolean: "1" is not "resume from the last checkpoint".
    flag = as_bool(value) if isinstance(value, bool) or str(value).strip().lower() not in ("0", "1") else None
    if flag is not None:
        return "last" if flag else "no"
    return "path"


def resolve_resume(value: Any, output_dir: str | Path) -> Path | None:
    """Turn a ``resume_from_checkpoint`` value into the checkpoint folder to resume from (``None``: start fresh).

    ``true``/``last`` pick :func:`find_last_checkpoint` of ``output_dir``; a path must be a checkpoint folder.
    """
    kind = resume_kind(value)
    if kind == "no":
        return None
    text = str(value).strip()
    if kind == "last":
        found = find_last_checkpoint(output_dir)
        if found is None:
            raise RecipeError(
                f"resume_from_checkpoint={text}: no resumable checkpoint (checkpoint-<step>/ or "
                f"{INTERRUPTED_CHECKPOINT}/ with a {TRAINER_STATE_FILE}) in {str(output_dir)!r}; give the run's "
                "--output_dir, or the checkpoint folder itself."
            )
        return found
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise RecipeError(f"resume_from_checkpoint: checkpoint folder {text!r} does not exist.")
    if checkpoint_step(folder) is None:
        raise RecipeError(
            f"resume_from_checkpoint: {text!r} holds no readable {TRAINER_STATE_FILE}, so the trainer cannot resume "
            "from it (an interrupted run's folder written by st-mnr-plus before 0.1.0 holds only the model: start a "
            "new run from its weights with --model instead)."
        )
    return folder


def save_interrupted_checkpoint(trainer, folder: Path) -> bool:
    """Save what the trainer needs to resume into ``folder``: the model, optimizer, scheduler, RNG and state.

    It writes what ``Trainer._save_checkpoint`` writes into a ``checkpoint-<step>`` folder (without pushing to the
    hub or rotating old checkpoints), under another name. Returns ``False`` when only the model could be saved
    (no optimizer yet, or a transformers release whose private checkpoint helpers differ).
    """
    from transformers.trainer_callback import ExportableState

    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    trainer.save_model(str(partial), _internal_call=True)  # internal: no "Model save" push to the hub
    resumable = True
    if trainer.args.should_save:
        try:
            if not trainer.args.save_only_model:
                trainer._save_optimizer_and_scheduler(str(partial))
                trainer._save_scaler(str(partial))
                trainer._save_rng_state(str(partial))
            trainer.store_flos()
            for callback in [*trainer.callback_handler.callbacks, trainer.control]:
                if isinstance(callback, ExportableState):
                    trainer.state.stateful_callbacks[type(callback).__name__] = callback.state()
            trainer.state.save_to_json(str(partial / TRAINER_STATE_FILE))
        except (AttributeError, TypeError, RuntimeError) as exc:
            logger.warning("Only the model could be saved in %s, not the training state (%s).", folder, exc)
            (partial / TRAINER_STATE_FILE).unlink(missing_ok=True)
            resumable = False
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
    return resumable
