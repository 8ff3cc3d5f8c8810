"""MNRPlus and CachedMNRPlus train where MNRL and CMNRL train, to the same weights when nothing is masked:
inside MatryoshkaLoss and AdaptiveLayerLoss, as a dict of losses over several datasets, with a Router and prompts,
and through the legacy ``model.fit``.

Every case trains the tiny model twice from the same weights and seed, once with the sentence-transformers
original and once with ours, on distinct texts (so duplicate masking has nothing to mask), with dropout off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.base.modules import Router
from sentence_transformers.sentence_transformer.losses import (
    AdaptiveLayerLoss,
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus

# Plain SGD, so that the weights differ by the learning rate times the gradients' float32 rounding differences
# (Adam would turn a rounding difference in a near-zero gradient into a full step). The two losses reduce in a
# different order (MNRL: one matrix, ours: tiles), about 1e-7 relative in the loss; through the backward of a deep
# model and three steps of lr 0.5 that grows to a few 1e-6 on the weights, hence 10x float32's default tolerance.
WEIGHTS = {"rtol": 1e-4, "atol": 1e-5}

ANCHORS = [f"anchor sentence number {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "rain", "maps"] * 4)]
POSITIVES = [
    f"a matching text {i} on {topic}" for i, topic in enumerate(["felines", "puppies", "weather", "atlas"] * 4)
]


def _no_dropout(model: SentenceTransformer) -> SentenceTransformer:
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _pairs(offset: int = 0) -> Dataset:
    return Dataset.from_dict(
        {"anchor": ANCHORS[offset:] + ANCHORS[:offset], "positive": POSITIVES[offset:] + POSITIVES[:offset]}
    )


def _train(
    model, make_loss: Callable, train_dataset, make_args: Callable, tmp_path: Path, **args
) -> dict[str, torch.Tensor]:
    loss = make_loss(model)
    arguments = make_args(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        seed=3,
        **args,
    )
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=train_dataset, loss=loss)
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], start) -> None:
    assert actual.keys() == expected.keys()
    moved = [name for name, p in start.items() if not torch.equal(p, expected[name])]
    assert moved, "training changed no weight"
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, **WEIGHTS, msg=lambda m, name=name: f"{name}: {m}")


def _compare(
    tiny_model, make_args: Callable, tmp_path, ours: Callable, theirs: Callable, dataset=None, **args
) -> None:
    start_model = _no_dropout(tiny_model)
    start = {name: p.detach().clone() for name, p in start_model.named_parameters()}
    dataset = _pairs() if dataset is None else dataset
    expected = _train(copy.deepcopy(start_model), theirs, dataset, make_args, tmp_path / "theirs", **args)
    actual = _train(copy.deepcopy(start_model), ours, dataset, make_args, tmp_path / "ours", **args)
    _assert_same_weights(actual, expected, start)


def _plain(model, **_):
    return MNRPlus(model), MultipleNegativesRankingLoss(model)


def _cached(model, mini_batch_size: int = 3):
    return CachedMNRPlus(model, mini_batch_size=mini_batch_size), CachedMultipleNegativesRankingLoss(
        model, mini_batch_size=mini_batch_size
    )


def _pick(pair: Callable, which: int, wrap: Callable = lambda model, loss: loss) -> Callable:
    """A loss factory for the trainer: ours (``which=0``) or theirs (``1``), optionally wrapped."""

    def make(model):
        return wrap(model, pair(model)[which])

    return make


@pytest.mark.parametrize("pair", [_plain, _cached], ids=["plain", "cached"])
def test_inside_matryoshka_loss(tiny_model, training_args, tmp_path, pair):
    def wrap(model, loss):
        return MatryoshkaLoss(model, loss, [32, 16, 8], [1.0, 0.5, 0.25])

    _compare(tiny_model, training_args, tmp_path, _pick(pair, 0, wrap), _pick(pair, 1, wrap))


def test_inside_adaptive_layer_loss(tiny_model, training_args, tmp_path):
    # AdaptiveLayerLoss draws its layers from Python's random, which the trainer seeds: the same draws for both.
    def wrap(model, loss):
        return AdaptiveLayerLoss(model, loss, n_layers_per_step=1)

    _compare(tiny_model, training_args, tmp_path, _pick(_plain, 0, wrap), _pick(_plain, 1, wrap))


@pytest.mark.parametrize("pair", [_plain, _cached], ids=["plain", "cached"])
def test_as_a_dict_of_losses_over_several_datasets(tiny_model, training_args, tmp_path, pair):
    datasets = DatasetDict({"first": _pairs(0).select(range(8)), "second": _pairs(8).select(range(8))})

    def losses(which: int) -> Callable:
        return lambda model: {name: pair(model)[which] for name in datasets}

    _compare(tiny_model, training_args, tmp_path, losses(0), losses(1), dataset=datasets)


def test_with_a_router_and_prompts(tiny_model, training_args, tmp_path):
    query = [copy.deepcopy(module) for module in tiny_model]
    document = [copy.deepcopy(module) for module in tiny_model]
    routed = SentenceTransformer(modules=[Router.for_query_document(query, document)], device="cpu")
    routed.model_card_data.generate_widget_examples = False
    _compare(
        routed,
        training_args,
        tmp_path,
        MNRPlus,
        MultipleNegativesRankingLoss,
        router_mapping={"anchor": "query", "positive": "document"},
        prompts={"anchor": "query: ", "positive": "passage: "},
    )


# fit() builds its own trainer arguments, pin_memory included, which torch warns about on a CPU-only machine.
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
@pytest.mark.parametrize("method", ["fit", "old_fit"])
def test_through_model_fit(tiny_model, training_args, tmp_path, method):
    """``fit`` (the trainer underneath) and the legacy ``old_fit`` loop, the latter with ``use_amp``."""
    from sentence_transformers.sentence_transformer.readers import InputExample
    from torch.utils.data import DataLoader

    examples = [InputExample(texts=[a, p]) for a, p in zip(ANCHORS, POSITIVES, strict=True)]
    start_model = _no_dropout(tiny_model)
    results = {}
    for name, loss_class in (("theirs", MultipleNegativesRankingLoss), ("ours", MNRPlus)):
        model = copy.deepcopy(start_model)
        torch.manual_seed(5)
        loader = DataLoader(examples, batch_size=4, shuffle=True)
        kwargs = {"use_amp": True} if method == "old_fit" else {"output_path": None}
        getattr(model, method)(
            train_objectives=[(loader, loss_class(model))], epochs=1, warmup_steps=0, show_progress_bar=False, **kwargs
        )
        results[name] = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = {name: p.detach().clone() for name, p in start_model.named_parameters()}
    if method == "fit":
        _assert_same_weights(results["ours"], results["theirs"], start)
        return
    # old_fit(use_amp=True) autocasts: MNRL's logits are then bf16 while ours stay float32; same training direction.
    for name, value in results["theirs"].items():
        torch.testing.assert_close(results["ours"][name], value, rtol=5e-2, atol=5e-3, msg=name)
    assert any(not torch.equal(results["ours"][n], start[n]) for n in start)
