"""The recipe's trainer writes its saves from the process that should save, and from no other."""

from __future__ import annotations

import pytest
from datasets import Dataset

from st_mnr_plus.recipe.trainer import RecipeTrainer


@pytest.mark.parametrize("should_save", [True, False], ids=["main-process", "other-process"])
def test_save_model_writes_from_the_saving_process_alone(
    tiny_model, training_args, tmp_path, monkeypatch, should_save
):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = training_args()
    # A process other than the main one (under torchrun): transformers 5 calls _save there too.
    monkeypatch.setattr(SentenceTransformerTrainingArguments, "should_save", property(lambda self: should_save))
    data = Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]})
    trainer = RecipeTrainer(
        model=tiny_model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(tiny_model)
    )
    folder = tmp_path / "final"
    trainer.save_model(str(folder))
    assert folder.is_dir() is should_save
    if should_save:
        assert (folder / "modules.json").is_file()
