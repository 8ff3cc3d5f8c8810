"""NoDuplicatesSampler as SentenceTransformerTrainer's batch_sampler, on SNLI entailment pairs and the real MiniLM."""

from __future__ import annotations

import collections
import gzip
import json
import math
from pathlib import Path
from typing import ClassVar

import torch
from datasets import Dataset

from st_mnr_plus.sampler import NoDuplicatesSampler
from tests.sampler._helpers import duplicates_in, row_texts


def snli_entailment_pairs(path: Path, num_rows: int) -> dict[str, list[str]]:
    """``num_rows`` (premise, entailed hypothesis) pairs of SNLI dev whose premise has 2+ entailed hypotheses."""
    pairs = []
    with gzip.open(path, "rt", encoding="utf8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["gold_label"] == "entailment":
                pairs.append((row["sentence1"], row["sentence2"]))
    per_premise = collections.Counter(premise for premise, _ in pairs)
    shared = [pair for pair in pairs if per_premise[pair[0]] > 1][:num_rows]
    return {"anchor": [a for a, _ in shared], "positive": [p for _, p in shared]}


class RecordingSampler(NoDuplicatesSampler):
    """Keeps the batches the trainer draws."""

    drawn: ClassVar[list[list[int]]] = []

    def __iter__(self):
        for batch in super().__iter__():
            RecordingSampler.drawn.append(batch)
            yield batch


def test_trains_minilm_with_the_sampler_class_as_batch_sampler(training_args, minilm, snli_dev) -> None:
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    data = snli_entailment_pairs(snli_dev, 48)
    # Every premise repeats: a plain shuffle would often put a pair of them in one batch.
    assert len(set(data["anchor"])) <= len(data["anchor"]) // 2
    dataset = Dataset.from_dict(data)
    minilm.max_seq_length = 32
    before = {n: p.detach().clone() for n, p in minilm.named_parameters()}
    args = training_args(learning_rate=1e-4, batch_sampler=RecordingSampler)
    RecordingSampler.drawn = []
    trainer = SentenceTransformerTrainer(
        model=minilm, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(minilm)
    )
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert all(math.isfinite(value) and value > 0 for value in losses)
    changed = [n for n, p in minilm.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "training changed no weight"
    assert len(RecordingSampler.drawn) >= 3
    texts = row_texts(data, ["anchor", "positive"])
    for batch in RecordingSampler.drawn:
        assert len(batch) == 8
        assert duplicates_in(batch, texts) == []
