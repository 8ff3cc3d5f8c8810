from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from st_mnr_plus import MNRDiagnosticsCallback, MNRPlus, ThroughputCallback
from st_mnr_plus import callbacks as callbacks_module

# --- the event sequence of transformers' training loop, driven by hand -----------------------------------------


class FakeLoss(nn.Module):
    """Sets ``diagnostics`` from a queue of dicts, one per forward, like MNRPlus does."""

    def __init__(self, queue: list[dict[str, float]] | None = None) -> None:
        super().__init__()
        self.queue = list(queue or [])
        self.calls = 0

    def forward(self, sentence_features, labels=None):
        self.calls += 1
        if self.queue:
            self.diagnostics = self.queue.pop(0)
        return torch.tensor(0.0)


def features(rows: int, lengths: list[int], columns: int = 2) -> list[dict[str, torch.Tensor]]:
    """``columns`` feature dicts of ``rows`` rows, padded to max(lengths); row i has lengths[i] real tokens."""
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return [{"input_ids": torch.ones(rows, width, dtype=torch.long), "attention_mask": mask} for _ in range(columns)]


@pytest.fixture
def loop(tmp_path: Path):
    """args, state, control as the trainer holds them, plus a log() that appends to log_history as Trainer.log does."""
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True)
    state = TrainerState()
    control = TrainerControl()

    def log(callback: TrainerCallback, logs: dict[str, Any]) -> dict[str, Any]:
        state.log_history.append({**logs, "step": state.global_step})
        callback.on_log(args, state, control, logs=logs)
        return logs

    return args, state, control, log


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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throughput_counts_rows_and_real_tokens_over_training_time_only(loop, monkeypatch):
    args, state, control, log = loop
    clock = Clock()
    monkeypatch.setattr(callbacks_module.time, "perf_counter", clock)
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
    assert logs["throughput/peak_rss_mib"] == pytest.approx(callbacks_module.peak_rss_mib(), rel=0.05)
    assert state.log_history[-1]["throughput/samples_per_second"] == logs["throughput/samples_per_second"]
    callback.on_train_end(args, state, control)
    assert not loss._forward_pre_hooks


def test_throughput_without_a_loss_counts_batch_size_and_no_tokens(loop, monkeypatch):
    args, state, control, log = loop
    clock = Clock()
    monkeypatch.setattr(callbacks_module.time, "perf_counter", clock)
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


def test_callbacks_figures_reach_log_history_of_a_real_training_run(tmp_path: Path, tiny_model, pairs):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=3,
        disable_tqdm=True,
    )
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


def test_peak_rss_is_this_process_not_the_parent():
    """ru_maxrss survives exec: a small child of a large parent must still report its own peak."""
    import subprocess
    import sys

    ballast = bytearray(512 * 2**20)  # the parent's peak RSS grows by 512 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from st_mnr_plus.callbacks import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert callbacks_module.peak_rss_mib() > 512
    assert child < callbacks_module.peak_rss_mib() - 256, child
    del ballast
