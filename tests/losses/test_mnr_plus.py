"""MNRPlus as a module on a real model: gradients of every parameter vs MNRL, duplicate masking from token ids,
and training with ``SentenceTransformerTrainer`` (learnable scale, diagnostics, model card).

The tensor-level equivalence grid, gradcheck and half-precision checks live in ``test_functional.py``.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim

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
    assert len(actual_grads) > 90  # every encoder parameter gets a gradient
    for name, grad in actual_grads.items():
        torch.testing.assert_close(grad, expected_grads[name], msg=name, **PARAM_TOL)
    assert sum(g.abs().sum() for g in actual_grads.values()) > 0


def test_duplicated_positive_counts_for_mnrl_and_is_masked_by_mnr_plus_despite_dropout(minilm, snli_dev):
    """Rows 0 and 2 share a positive text: MNRL ranks it as a negative of both rows, MNRPlus masks it even in
    train mode, where dropout gives the two copies different embeddings (token ids are compared)."""
    minilm.train()
    minilm.max_seq_length = 32
    anchors, positives = _columns(snli_dev, 5, 0)
    positives[2] = positives[0]
    features = [minilm.tokenize(anchors), minilm.tokenize(positives)]
    plus = MNRPlus(minilm)
    plus(features, None)
    assert plus.diagnostics["masked_duplicates"] == 2.0  # p_2 for row 0, p_0 for row 2
    assert plus.diagnostics["masked_fraction"] == pytest.approx(2 / 20)

    # Same embeddings for both losses (eval mode): MNRL's loss is the one that counts the duplicate.
    minilm.eval()
    with torch.no_grad():
        mnrl_loss = MultipleNegativesRankingLoss(minilm)(features, None)
        masked = MNRPlus(minilm)(features, None)
        unmasked = MNRPlus(minilm, mask_duplicates=False)(features, None)
        logits = cos_sim(
            minilm.encode(anchors, convert_to_tensor=True), minilm.encode(positives, convert_to_tensor=True)
        )
    torch.testing.assert_close(unmasked, mnrl_loss, msg="unmasked MNRPlus equals MNRL")
    # Written out: the same cross-entropy with entries (0, 2) and (2, 0) removed from the candidates.
    logits = 20.0 * logits
    logits[0, 2] = logits[2, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    torch.testing.assert_close(masked, expected, msg="masked loss", rtol=1e-5, atol=1e-5)
    # The duplicate scores exactly as high as the own positive: MNRL pays log(1 + ...) >= 0.05 more per such row.
    assert masked < mnrl_loss - 0.05


def _train(model, loss, dataset, tmp_path, **args):
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=5e-5,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        **args,
    )
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=dataset, loss=loss)
    trainer.train()
    return trainer


@pytest.mark.parametrize("output", ["pairs", "triplets"])
def test_trainer_trains_minilm_on_snli_and_the_model_card_names_mnr_plus(minilm, snli_dev, tmp_path, output):
    from st_mnr_plus import build_nli

    dataset = build_nli(snli_dev, output).select(range(24))
    assert dataset.column_names == (
        ["anchor", "positive"] if output == "pairs" else ["anchor", "positive", "negative"]
    )
    minilm.max_seq_length = 32
    before = minilm[0].auto_model.encoder.layer[0].attention.self.query.weight.detach().clone()
    # The learnable scale is trained by the trainer's optimizer: give it its own learning rate so that a few steps
    # move it measurably (the encoder's 5e-5 would change it by ~1e-4).
    loss = MNRPlus(minilm, learnable_scale=True, hard_negatives="own" if output == "triplets" else "shared")
    trainer = _train(minilm, loss, dataset, tmp_path, learning_rate_mapping={r"log_scale_offset": 0.05})

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    after = minilm[0].auto_model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(before, after), "the encoder was not trained"
    assert loss.scale != pytest.approx(20.0, abs=1e-3), "the learnable scale was not trained"
    assert set(DIAGNOSTIC_KEYS) <= loss.diagnostics.keys()
    # diagnostics hold the scale of the last forward; the optimizer stepped once since then
    assert loss.diagnostics["scale"] != 20.0
    assert all(isinstance(v, float) for v in loss.diagnostics.values())
    assert 0.0 <= loss.diagnostics["accuracy"] <= 1.0

    minilm.save(str(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf8")
    assert "MNRPlus" in card
    assert "oord2019representationlearningcontrastivepredictive" in card
    assert '"learnable_scale": true' in card


def test_learnable_scale_gradient_flows_through_forward(tiny_model):
    """One optimizer step on the loss's own parameter moves the scale (mechanics, on the tiny model)."""
    loss = MNRPlus(tiny_model, learnable_scale=True)
    features = [tiny_model.tokenize(["a cat", "a dog", "the sea"]), tiny_model.tokenize(["cats", "dogs", "waves"])]
    loss(features, None).backward()
    assert loss.log_scale_offset.grad is not None
    assert torch.isfinite(loss.log_scale_offset.grad)
    assert loss.log_scale_offset.grad != 0
    torch.optim.SGD([loss.log_scale_offset], lr=0.1).step()
    assert loss.scale != pytest.approx(20.0)
