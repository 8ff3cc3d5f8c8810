"""MNRPlus as a module on a model: gradients of every parameter of the real all-MiniLM-L6-v2 vs MNRL on real text,
duplicate masking from token ids under dropout, and training with ``SentenceTransformerTrainer`` (learnable scale,
diagnostics, model card).

The tensor-level equivalence grids, gradcheck and half-precision checks live in ``test_functional.py``.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim

from st_mnr_plus import build_nli
from st_mnr_plus.losses import MNRPlus

DIAGNOSTIC_KEYS = ("accuracy", "positive_similarity", "hardest_negative_similarity", "masked_fraction", "scale")
# Gradients of ~22M parameters summed over a batch: float32 defaults, with atol loosened to 1e-5 -> 2e-5 because
# MNRPlus normalises and accumulates in a different order than MNRL's one matmul (the differences are rounding).
PARAM_TOL = {"rtol": 1e-4, "atol": 2e-5}


def _columns(snli_dev, batch: int, negatives: int) -> list[list[str]]:
    """(premise, entailed hypothesis[, contradicting hypothesis]) columns from the SNLI dev file (stdlib-read),
    one row per premise, so that no text repeats."""
    by_premise: dict[str, dict[str, str]] = {}
    with gzip.open(snli_dev, "rt", encoding="utf8") as handle:
        for line in handle:
            row = json.loads(line)
            by_premise.setdefault(row["sentence1"], {}).setdefault(row["gold_label"], row["sentence2"])
    rows = [
        (p, h["entailment"], h["contradiction"])
        for p, h in by_premise.items()
        if {"entailment", "contradiction"} <= h.keys()
    ]
    rows = rows[:batch]
    return [[row[k] for row in rows] for k in range(2 + negatives)]


def _param_grads(model, loss_module, features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_module(features, None)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("kwargs", "negatives"),
    [
        pytest.param({}, 1, id="q2d-neg1"),
        pytest.param({"symmetric": True}, 0, id="symmetric-neg0"),
        # The rest of the grid is covered on plain tensors in test_functional.py; on the real model it is slow.
        pytest.param({}, 0, id="q2d-neg0", marks=pytest.mark.slow),
        pytest.param({"symmetric": True}, 1, id="symmetric-neg1", marks=pytest.mark.slow),
        pytest.param(
            {"directions": ("query_to_doc", "doc_to_query")}, 0, id="q2d+d2q-joint-neg0", marks=pytest.mark.slow
        ),
        pytest.param(
            {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
            1,
            id="all4-joint-neg1",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"hardness_mode": "all_negatives", "hardness_strength": 2.0}, 1, id="hardness-neg1", marks=pytest.mark.slow
        ),
    ],
)
def test_model_parameter_gradients_match_mnrl_on_minilm(minilm, snli_dev, kwargs, negatives):
    minilm.eval()  # dropout off: both losses must see identical embeddings
    minilm.max_seq_length = 32
    features = [minilm.tokenize(column) for column in _columns(snli_dev, 4, negatives)]
    mnrl_kwargs = dict(kwargs)
    if mnrl_kwargs.pop("symmetric", False):
        mnrl_kwargs.update(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    expected, expected_grads = _param_grads(minilm, MultipleNegativesRankingLoss(minilm, **mnrl_kwargs), features)
    # Default mask_duplicates=True with real row hashes: the texts are distinct, so nothing may be masked.
    plus = MNRPlus(minilm, tile_size=4, **kwargs)
    actual, actual_grads = _param_grads(minilm, plus, features)
    torch.testing.assert_close(actual, expected, msg="loss")
    assert plus.diagnostics["masked_duplicates"] == 0
    assert actual_grads.keys() == expected_grads.keys()
    assert len(actual_grads) > 90  # every parameter on the embedding path (the unused BERT pooler gets none)
    for name, grad in actual_grads.items():
        torch.testing.assert_close(grad, expected_grads[name], msg=name, **PARAM_TOL)
    assert sum(g.abs().sum() for g in actual_grads.values()) > 0


def test_duplicated_positive_counts_for_mnrl_and_is_masked_by_mnr_plus_despite_dropout(tiny_model, snli_dev):
    """Rows 0 and 2 share a positive text: MNRL ranks it as a negative of both rows, MNRPlus masks it even in
    train mode, where dropout gives the two copies different embeddings (token ids are compared)."""
    model = tiny_model.train()
    anchors, positives = _columns(snli_dev, 5, 0)
    positives[2] = positives[0]
    features = [model.tokenize(anchors), model.tokenize(positives)]
    torch.manual_seed(0)
    embedded = model(dict(features[1]))["sentence_embedding"]
    assert not torch.equal(embedded[0], embedded[2]), "dropout is off: this test would prove nothing"
    plus = MNRPlus(model)
    plus(features, None)
    assert plus.diagnostics["masked_duplicates"] == 2.0  # p_2 for row 0, p_0 for row 2
    assert plus.diagnostics["masked_fraction"] == pytest.approx(2 / 20)

    # Same embeddings for both losses (eval mode): MNRL's loss is the one that counts the duplicate.
    model.eval()
    with torch.no_grad():
        mnrl_loss = MultipleNegativesRankingLoss(model)(features, None)
        masked = MNRPlus(model)(features, None)
        unmasked = MNRPlus(model, mask_duplicates=False)(features, None)
        logits = cos_sim(
            model.encode(anchors, convert_to_tensor=True), model.encode(positives, convert_to_tensor=True)
        )
    torch.testing.assert_close(unmasked, mnrl_loss, msg="unmasked MNRPlus equals MNRL")
    # Written out: the same cross-entropy with entries (0, 2) and (2, 0) removed from the candidates.
    logits = 20.0 * logits
    logits[0, 2] = logits[2, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    torch.testing.assert_close(masked, expected, msg="masked loss", rtol=1e-5, atol=1e-5)
    # The duplicate scores exactly as high as the own positive, so MNRL's two rows pay for it.
    assert masked < mnrl_loss


@pytest.mark.parametrize(
    ("output", "hard_negatives"), [("pairs", "shared"), pytest.param("triplets", "own", id="triplets-own")]
)
def test_trainer_trains_the_model_and_the_learnable_scale_and_the_card_names_mnr_plus(
    tiny_model, snli_dev, training_args, tmp_path, output, hard_negatives
):
    """Mechanics on the tiny model: build_nli's columns -> MNRPlus -> SentenceTransformerTrainer."""
    dataset = build_nli(snli_dev, output).select(range(24))
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    loss = MNRPlus(tiny_model, learnable_scale=True, hard_negatives=hard_negatives)
    arguments = training_args(
        learning_rate=5e-4,
        # The learnable scale is trained by the trainer's optimizer; its own rate moves it measurably in 3 steps.
        learning_rate_mapping={r"log_scale_offset": 0.05},
        seed=0,
        data_seed=0,
    )
    trainer = SentenceTransformerTrainer(model=tiny_model, args=arguments, train_dataset=dataset, loss=loss)
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[name]) for name, p in tiny_model.named_parameters()), "nothing trained"
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(loss.log_scale_offset) in optimised
    assert loss.scale != pytest.approx(20.0, abs=1e-3), "the learnable scale was not trained"
    assert set(DIAGNOSTIC_KEYS) <= loss.diagnostics.keys()
    # diagnostics hold the scale of the last forward; the optimizer stepped once since then.
    assert loss.diagnostics["scale"] not in (20.0, loss.scale)

    tiny_model.save(str(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf8")
    assert "MNRPlus" in card
    assert "oord2019representationlearningcontrastivepredictive" in card
    assert '"learnable_scale": true' in card
    assert f'"hard_negatives": "{hard_negatives}"' in card
