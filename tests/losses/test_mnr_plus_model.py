"""MNRPlus on the real all-MiniLM-L6-v2: parameter gradients equal MNRL's, and SentenceTransformerTrainer trains it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus.losses import MNRPlus

ANCHORS = [
    "A man is playing a guitar on stage.",
    "Two dogs run across a snowy field.",
    "A woman slices vegetables in a kitchen.",
    "Children are playing soccer in the park.",
    "A chef is cooking pasta.",
    "An old man reads a newspaper on a bench.",
]
POSITIVES = [
    "Someone performs music.",
    "Animals are outside in the snow.",
    "A person is preparing food.",
    "Kids play a ball game outdoors.",
    "Food is being made.",
    "A man is reading.",
]
NEGATIVES = [
    "The stage is empty.",
    "The dogs sleep indoors.",
    "The kitchen is closed.",
    "The children are asleep.",
    "Nobody is cooking.",
    "The bench is empty.",
]


def _features(model, columns):
    return [model.preprocess(texts) for texts in columns]


def _parameter_grads(model, loss_module, columns) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_module(_features(model, columns), None)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("negatives", "directions"),
    [
        pytest.param(1, ("query_to_doc",), id="triplets-q2d"),
        pytest.param(0, ("query_to_doc", "doc_to_query"), id="pairs-symmetric-joint"),
    ],
)
def test_model_parameter_gradients_match_mnrl(minilm, negatives, directions):
    minilm.eval()  # no dropout: both losses see the same embeddings
    minilm.max_seq_length = 32
    columns = [ANCHORS, POSITIVES, NEGATIVES][: 2 + negatives]
    expected = _parameter_grads(minilm, MultipleNegativesRankingLoss(minilm, directions=directions), columns)
    actual = _parameter_grads(minilm, MNRPlus(minilm, directions=directions, tile_size=4), columns)
    assert actual.keys() == expected.keys()
    assert len(actual) > 100  # every parameter on the embedding path (the unused BERT pooler gets none)
    for name, grad in actual.items():
        # float32 tolerances: the two losses sum the same terms in a different order.
        torch.testing.assert_close(grad, expected[name], rtol=1.3e-6, atol=1e-5, msg=name)
    assert any(grad.abs().sum() > 0 for grad in actual.values())


def _snli_rows(snli_dev: Path, limit: int) -> list[dict[str, str]]:
    """Premises with one entailment and one contradiction hypothesis, first come, from SNLI dev."""
    by_premise: dict[str, dict[str, str]] = {}
    with gzip.open(snli_dev, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["gold_label"] in ("entailment", "contradiction"):
                by_premise.setdefault(row["sentence1"], {}).setdefault(row["gold_label"], row["sentence2"])
    rows = [
        {"anchor": premise, "positive": labels["entailment"], "negative": labels["contradiction"]}
        for premise, labels in by_premise.items()
        if len(labels) == 2
    ]
    return rows[:limit]


def _train(model, loss, dataset, output_dir: Path, steps: int = 3) -> SentenceTransformerTrainer:
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=steps,
        learning_rate=1e-3,  # large, so that three steps visibly move the scale
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_drop_last=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("columns", "hard_negatives"),
    [
        pytest.param(("anchor", "positive"), "shared", id="pairs"),
        pytest.param(("anchor", "positive", "negative"), "own", id="triplets-own"),
    ],
)
def test_trainer_trains_minilm_and_the_learnable_scale(minilm, snli_dev, tmp_path, columns, hard_negatives):
    minilm.max_seq_length = 32
    rows = _snli_rows(snli_dev, limit=24)
    dataset = Dataset.from_list([{column: row[column] for column in columns} for row in rows])
    loss = MNRPlus(minilm, learnable_scale=True, hard_negatives=hard_negatives)
    before = {name: p.detach().clone() for name, p in minilm.named_parameters()}
    trainer = _train(minilm, loss, dataset, tmp_path / "out")

    # The trainer's optimizer holds the loss's log-scale and moved it.
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(loss.log_scale_offset) in optimised
    assert abs(loss.scale - 20.0) > 1e-3
    diagnostics = loss.diagnostics
    assert diagnostics["scale"] != 20.0  # the scale of the last step, after earlier updates
    assert 0.0 <= diagnostics["accuracy"] <= 1.0
    assert -1.0 <= diagnostics["positive_similarity"] <= 1.0
    assert any(not torch.equal(p, before[name]) for name, p in minilm.named_parameters())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))

    # The saved model card names the loss, its configuration and its citation.
    minilm.save(str(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "MNRPlus" in card
    assert "oord2019representationlearningcontrastivepredictive" in card
    assert f'"hard_negatives": "{hard_negatives}"' in card
