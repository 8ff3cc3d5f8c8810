"""The builder's output trains ``SentenceTransformerTrainer`` with sentence-transformers' own MNRL loss.

Mechanics (column order and names as ST's loss reads them), so the tiny model: real text, random weights.
"""

from __future__ import annotations

import math

import pytest
import torch


@pytest.mark.parametrize("output", ["pairs", "triplets"])
def test_builder_output_trains_with_st_mnrl(training_args, tiny_model, snli_dev, output):
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from st_mnr_plus.datasets.nli import build_nli

    dataset = build_nli(snli_dev, output).select(range(48))
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    args = training_args(per_device_train_batch_size=16, learning_rate=1e-4)
    loss = MultipleNegativesRankingLoss(tiny_model)
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert all(math.isfinite(value) and value > 0 for value in losses)
    changed = [n for n, p in tiny_model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "training changed no weight"
