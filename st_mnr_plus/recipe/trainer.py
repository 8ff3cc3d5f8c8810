"""The recipe's trainer: sentence-transformers' own, with its checkpoints and models written by one process."""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformerTrainer


class RecipeTrainer(SentenceTransformerTrainer):
    """``SentenceTransformerTrainer`` whose saves are written by the process that should save (the main one).

    transformers 5 calls ``_save`` on every process and leaves the ``args.should_save`` check to it, but the
    ``_save`` of sentence-transformers that overrides it takes itself to run on the main process alone: under
    ``torchrun`` every process wrote the same checkpoint and final model into the same folder at once.
    """

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        if self.args.should_save:
            super()._save(output_dir, state_dict=state_dict)
