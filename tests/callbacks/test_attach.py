from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import TrainerCallback

from st_mnr_plus import MNRDiagnosticsCallback, MNRPlus, ThroughputCallback


def test_attach_puts_the_callback_ahead_of_the_reporters():
    class Handler:
        def __init__(self, callbacks):
            self.callbacks = callbacks

    class Trainer:
        def __init__(self, callbacks):
            self.callback_handler = Handler(callbacks)

    from transformers.trainer_callback import DefaultFlowCallback, PrinterCallback

    reporter, printer = TrainerCallback(), PrinterCallback()
    trainer = Trainer([DefaultFlowCallback(), reporter, printer])
    callback = ThroughputCallback()
    assert callback.attach(trainer) is callback
    assert trainer.callback_handler.callbacks[1] is callback
    callback.attach(trainer)
    assert trainer.callback_handler.callbacks.count(callback) == 1
    with pytest.raises(ValueError, match=r"trainer must be a transformers Trainer, got int"):
        callback.attach(3)


# --- a real short training run ------------------------------------------------------------------------------


class Reporter(TrainerCallback):
    """Stands in for TensorBoard & co.: records the logs its on_log sees."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs or {}))


@pytest.fixture(scope="module")
def pairs(stsb_dir: Path) -> Dataset:
    anchors, positives = [], []
    for line in (stsb_dir / "sts-train.csv").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if float(fields[4]) >= 4.0:
            anchors.append(fields[5])
            positives.append(fields[6])
    return Dataset.from_dict({"anchor": anchors[:48], "positive": positives[:48]})


def test_callbacks_figures_reach_log_history_of_a_real_training_run(training_args, tiny_model, pairs):
    from sentence_transformers import SentenceTransformerTrainer

    args = training_args(gradient_accumulation_steps=2, seed=3)
    loss = MNRPlus(tiny_model, scale=20.0)
    reporter = Reporter()
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, train_dataset=pairs, loss=loss, callbacks=[reporter]
    )
    diagnostics = MNRDiagnosticsCallback(loss).attach(trainer)
    # Passed the usual way, after the reporter: its figures still reach log_history.
    throughput = ThroughputCallback(loss)
    trainer.add_callback(throughput)
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3
    for entry in logged:
        assert 0.0 <= entry["mnr/accuracy"] <= 1.0
        assert -1.0 <= entry["mnr/positive_similarity"] <= 1.0
        assert -1.0 <= entry["mnr/hardest_negative_similarity"] <= 1.0
        assert 0.0 <= entry["mnr/masked_fraction"] <= 1.0
        assert entry["mnr/scale"] == loss.scale == 20.0
        assert entry["throughput/samples_per_second"] > 0
        assert entry["throughput/tokens_per_second"] > entry["throughput/samples_per_second"]
        assert entry["throughput/peak_rss_mib"] > 0
    # The attached callback runs ahead of the reporter, the added one after it.
    reported = [entry for entry in reporter.seen if "loss" in entry]
    assert all("mnr/accuracy" in entry for entry in reported)
    assert not any("throughput/samples_per_second" in entry for entry in reported)
    assert diagnostics in trainer.callback_handler.callbacks
    assert not loss._forward_hooks
    assert not loss._forward_pre_hooks
