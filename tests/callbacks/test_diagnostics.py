from __future__ import annotations

import pytest
import torch

from st_mnr_plus import MNRDiagnosticsCallback, MNRPlus, ThroughputCallback
from tests.callbacks.conftest import FakeLoss, features


def test_diagnostics_are_averaged_per_forward_and_scale_is_the_latest(loop):
    args, state, control, log = loop
    queue = [
        {"accuracy": 0.5, "positive_similarity": 0.8, "hardest_negative_similarity": 0.4, "scale": 20.0},
        {"accuracy": 1.0, "positive_similarity": 0.6, "hardest_negative_similarity": float("nan"), "scale": 21.0},
        {"accuracy": 0.0, "positive_similarity": 0.7, "hardest_negative_similarity": 0.2, "scale": 22.0},
    ]
    loss = FakeLoss(queue)
    callback = MNRDiagnosticsCallback(loss)
    callback.on_train_begin(args, state, control)
    # One optimizer step of two micro-batches (gradient accumulation), then one of one.
    callback.on_step_begin(args, state, control)
    loss(features(2, [3, 2]))
    callback.on_substep_end(args, state, control)
    loss(features(2, [3, 2]))
    state.global_step = 1
    callback.on_step_end(args, state, control)
    callback.on_step_begin(args, state, control)
    loss(features(2, [3, 2]))
    state.global_step = 2
    callback.on_step_end(args, state, control)
    # A forward outside a training step (the eval loss) is not counted.
    loss.queue.append({"accuracy": 123.0, "scale": 99.0})
    loss(features(2, [3, 2]))

    logs = log(callback, {"loss": 1.5, "learning_rate": 1e-4})
    expected = {
        "mnr/accuracy": 0.5,
        "mnr/positive_similarity": pytest.approx(0.7),
        "mnr/hardest_negative_similarity": pytest.approx(0.3),  # the NaN is left out
        "mnr/scale": 22.0,
    }
    for key, value in expected.items():
        assert logs[key] == value, key
        assert state.log_history[-1][key] == value, key
    # Eval logs get nothing, and the window starts afresh after a log.
    eval_logs = log(callback, {"eval_loss": 1.0})
    assert not any(key.startswith("mnr/") for key in eval_logs)
    later = log(callback, {"loss": 1.0})
    assert not any(key.startswith("mnr/") for key in later)
    callback.on_train_end(args, state, control)
    assert not loss._forward_hooks


def test_mnr_plus_diagnostics_are_read_from_the_device_only_when_logged(loop, tiny_model, monkeypatch):
    """Collecting every step must not make the step wait for the GPU: the statistics stay tensors until on_log."""
    args, state, control, log = loop
    # No dropout: both steps see the same batch the same way. Length grouping reads the texts' lengths on the host
    # to cut its chunks (tests/losses/test_grouping.py); what is checked here is the diagnostics' collection.
    loss = MNRPlus(tiny_model.eval(), group_by_length=False)
    callback = MNRDiagnosticsCallback(loss)
    callback.on_train_begin(args, state, control)
    batch = [tiny_model.tokenize(["a cat sat", "dogs bark loudly", "rain falls"]) for _ in range(2)]
    batch[1] = tiny_model.tokenize(["a feline", "noisy dogs", "wet weather"])
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or original(self))
    for step in (1, 2):
        callback.on_step_begin(args, state, control)
        loss(batch, None)
        state.global_step = step
        callback.on_step_end(args, state, control)
    assert reads == []
    logs = log(callback, {"loss": 1.0})
    assert len(reads) == 2  # one per forward, at the log
    monkeypatch.undo()
    assert logs["mnr/accuracy"] == pytest.approx(loss.diagnostics["accuracy"])  # the same batch twice
    assert logs["mnr/scale"] == 20.0


def test_dict_of_losses_logs_each_under_its_name(loop):
    args, state, control, log = loop
    nli, sts = FakeLoss([{"accuracy": 1.0}]), FakeLoss([{"accuracy": 0.25}])
    callback = MNRDiagnosticsCallback({"nli": nli, "sts": sts}, prefix="diag/")
    callback.on_train_begin(args, state, control)
    callback.on_step_begin(args, state, control)
    nli(features(1, [2]))
    sts(features(1, [2]))
    callback.on_step_end(args, state, control)
    logs = log(callback, {"loss": 0.1})
    assert logs["diag/nli/accuracy"] == 1.0
    assert logs["diag/sts/accuracy"] == 0.25


def test_loss_without_diagnostics_is_named_at_the_first_step(loop, tiny_model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args, state, control, _ = loop
    loss = MultipleNegativesRankingLoss(tiny_model)
    callback = MNRDiagnosticsCallback(loss)
    callback.on_train_begin(args, state, control)
    callback.on_step_begin(args, state, control)
    batch = [tiny_model.preprocess(["a b", "c"]), tiny_model.preprocess(["d", "e f"])]
    with pytest.raises(TypeError, match=r"MultipleNegativesRankingLoss left no `diagnostics` dict.*MNRPlus"):
        loss(batch, None)


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        pytest.param(
            lambda: MNRDiagnosticsCallback(MNRPlus), r"loss must be the loss instance", id="class_not_instance"
        ),
        pytest.param(lambda: MNRDiagnosticsCallback({}), r"non-empty dict", id="empty_dict"),
        pytest.param(
            lambda: MNRDiagnosticsCallback({"a": 1}), r"loss\['a'\] must be the loss instance", id="dict_value"
        ),
        pytest.param(lambda: MNRDiagnosticsCallback(FakeLoss(), prefix=None), r"prefix must be a string", id="prefix"),
        pytest.param(
            lambda: ThroughputCallback(loss="mnr"), r"loss must be None or the loss instance", id="throughput_loss"
        ),
        pytest.param(lambda: ThroughputCallback(prefix=3), r"prefix must be a string", id="throughput_prefix"),
    ],
)
def test_bad_arguments_are_named(factory, error):
    with pytest.raises(ValueError, match=error):
        factory()
