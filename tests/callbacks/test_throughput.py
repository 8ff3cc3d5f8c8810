from __future__ import annotations

import pytest

from st_mnr_plus import ThroughputCallback
from st_mnr_plus.bench.memory import peak_rss_mib
from st_mnr_plus.callbacks import throughput as throughput_module
from tests.callbacks.conftest import FakeLoss, features


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throughput_counts_rows_and_real_tokens_over_training_time_only(loop, monkeypatch):
    args, state, control, log = loop
    clock = Clock()
    monkeypatch.setattr(throughput_module.time, "perf_counter", clock)
    loss = FakeLoss()
    callback = ThroughputCallback(loss)
    callback.on_train_begin(args, state, control)
    clock.now += 50.0  # waiting for the first batch: not counted
    callback.on_step_begin(args, state, control)
    loss(features(2, [3, 1], columns=2), None)  # 2 samples, (3 + 1) * 2 = 8 tokens
    clock.now += 2.0
    callback.on_substep_end(args, state, control)
    loss(features(3, [2, 2, 1], columns=3), None)  # 3 samples, 5 * 3 = 15 tokens
    clock.now += 2.0
    callback.on_step_end(args, state, control)
    clock.now += 1.0  # loading the next batch: counted
    callback.on_step_begin(args, state, control)
    loss(features(1, [4], columns=2), None)  # 1 sample, 8 tokens
    clock.now += 3.0
    callback.on_step_end(args, state, control)
    clock.now += 30.0  # evaluation: not counted
    callback.on_evaluate(args, state, control)
    loss(features(5, [9] * 5), None)  # the eval loss: not counted
    clock.now += 2.0  # loading: counted
    callback.on_step_begin(args, state, control)
    clock.now += 2.0
    callback.on_step_end(args, state, control)

    logs = log(callback, {"loss": 0.3})
    seconds = 2 + 2 + 1 + 3 + 2 + 2
    assert logs["throughput/samples_per_second"] == pytest.approx(6 / seconds)
    assert logs["throughput/tokens_per_second"] == pytest.approx(31 / seconds)
    assert logs["throughput/peak_rss_mib"] == pytest.approx(peak_rss_mib(), rel=0.05)
    assert state.log_history[-1]["throughput/samples_per_second"] == logs["throughput/samples_per_second"]
    callback.on_train_end(args, state, control)
    assert not loss._forward_pre_hooks


def test_throughput_without_a_loss_counts_batch_size_and_no_tokens(loop, monkeypatch):
    args, state, control, log = loop
    clock = Clock()
    monkeypatch.setattr(throughput_module.time, "perf_counter", clock)
    callback = ThroughputCallback()
    callback.on_train_begin(args, state, control)
    for _ in range(3):
        callback.on_step_begin(args, state, control)
        clock.now += 0.5
        callback.on_step_end(args, state, control)
    clock.now += 0.5
    logs = log(callback, {"loss": 0.3})
    # 3 steps of per_device_train_batch_size 4 over 1.5 s of steps (the loading before each step after the first
    # is 0 s here).
    assert logs["throughput/samples_per_second"] == pytest.approx(12 / 1.5)
    assert "throughput/tokens_per_second" not in logs
