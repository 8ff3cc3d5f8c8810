"""LossStateCallback: a learnable scale survives checkpoints and resume_from_checkpoint, and gets its own rate."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from transformers import TrainerCallback

from st_mnr_plus import MNRPlus
from st_mnr_plus.callbacks import LOSS_STATE_FILE, LossStateCallback, loss_own_parameters


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def _pairs(rows: int = 64) -> Dataset:
    return Dataset.from_dict(
        {
            "anchor": [f"a sentence about topic {i} and more" for i in range(rows)],
            "positive": [f"another text on subject {i}" for i in range(rows)],
        }
    )


def _trainer(model, make_args, output_dir: Path, *, stop_at: int | None = None, how: str = "attach", **loss_kwargs):
    """A trainer of 8 steps at the model's rate 5e-2, the loss's state kept ``how``: "attach", "callbacks" or "none"."""
    loss = MNRPlus(model, learnable_scale=True, **loss_kwargs)
    args = make_args(
        output_dir=str(output_dir),
        max_steps=8,
        save_strategy="steps",
        save_steps=4,
        learning_rate=5e-2,
        seed=7,
        logging_steps=100,
        disable_tqdm=False,
    )
    callbacks = [_StopAt(stop_at)] if stop_at else []
    if how == "callbacks":
        callbacks.append(LossStateCallback(loss))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=_pairs(), loss=loss, callbacks=callbacks
    )
    if how == "attach":
        LossStateCallback(loss).attach(trainer)
    return trainer, loss


def _scale_rate(trainer, loss) -> float:
    """The initial learning rate of the optimizer's parameter group that holds the scale."""
    (group,) = [g for g in trainer.optimizer.param_groups if any(p is loss.log_scale_offset for p in g["params"])]
    return group.get("initial_lr", group["lr"])


@pytest.mark.parametrize("how", ["attach", "callbacks"])
def test_resumed_run_continues_the_learnable_scale_at_its_own_rate(tiny_model, training_args, tmp_path, how):
    """callbacks=[LossStateCallback(loss)] used to restore the scale but leave it at the model's rate (22.74 vs
    22.15 resumed); now both ways give the scale its rate before the optimizer is built."""
    fresh = copy.deepcopy(tiny_model)
    whole, whole_loss = _trainer(copy.deepcopy(fresh), training_args, tmp_path / "whole", how=how)
    whole.train()

    first, first_loss = _trainer(copy.deepcopy(fresh), training_args, tmp_path / "split", stop_at=4, how=how)
    first.train()
    assert (tmp_path / "split" / "checkpoint-4" / LOSS_STATE_FILE).is_file()
    scale_at_4 = first_loss.scale

    second, second_loss = _trainer(copy.deepcopy(fresh), training_args, tmp_path / "split", how=how)
    assert second_loss.scale == pytest.approx(20.0)
    second.train(resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-4"))

    assert scale_at_4 != 20.0  # the scale moved before the interruption
    assert second_loss.scale == pytest.approx(whole_loss.scale, rel=1e-3)
    rate = whole_loss.scale_learning_rate
    assert _scale_rate(whole, whole_loss) == _scale_rate(second, second_loss) == rate
    # Adam moves a parameter by about its rate a step: 8 steps at 1e-3, not at the model's 5e-2.
    assert abs(math.log(whole_loss.scale / 20.0)) <= 8 * rate * 1.5


def test_without_the_callback_a_learnable_scale_trains_at_the_model_rate_and_says_so(
    tiny_model, training_args, tmp_path, caplog
):
    trainer, loss = _trainer(copy.deepcopy(tiny_model), training_args, tmp_path, how="none")
    with caplog.at_level("WARNING", logger="st_mnr_plus.losses.mnr_plus"):
        trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "without LossStateCallback" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "scale_learning_rate=0.001" in warnings[0]
    assert "resume_from_checkpoint restarts it at 20" in warnings[0]
    assert _scale_rate(trainer, loss) == 5e-2


def test_without_a_saved_state_resume_warns(tiny_model, training_args, tmp_path, caplog):
    first, _ = _trainer(copy.deepcopy(tiny_model), training_args, tmp_path, stop_at=4)
    first.train()
    (tmp_path / "checkpoint-4" / LOSS_STATE_FILE).unlink()
    second, _ = _trainer(copy.deepcopy(tiny_model), training_args, tmp_path)
    with caplog.at_level("WARNING"):
        second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert "no loss_state.pt was found" in caplog.text


def test_loss_own_parameters_leave_the_model_out(tiny_model):
    loss = MNRPlus(tiny_model, learnable_scale=True)
    own = loss_own_parameters(loss)
    assert len(own) == 1
    assert loss_own_parameters({"nli": loss}).keys() == {f"nli.{name}" for name in own}
    assert loss_own_parameters(MNRPlus(tiny_model)) == {}


def test_load_refuses_a_state_of_another_loss(tiny_model, training_args, tmp_path):
    LossStateCallback(MNRPlus(tiny_model, learnable_scale=True)).save(tmp_path)
    other = torch.nn.Module()
    other.weight = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="saved from a loss with other options"):
        LossStateCallback(other).load(tmp_path)


def test_rejects_what_is_not_a_loss():
    with pytest.raises(ValueError, match="must be the loss instance"):
        LossStateCallback("mnr_plus")


def _one_step(model, loss, make_args, output_dir: Path, **args) -> SentenceTransformerTrainer:
    arguments = make_args(
        output_dir=str(output_dir), max_steps=1, learning_rate=5e-2, weight_decay=0.5, logging_steps=500, **args
    )
    data = _pairs(16)
    train = {name: data for name in loss} if isinstance(loss, dict) else data
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=train, loss=loss)
    LossStateCallback(loss).attach(trainer)
    trainer.train()
    return trainer


def _group_of(optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter) -> dict:
    return next(group for group in optimizer.param_groups if any(p is parameter for p in group["params"]))


def test_the_scale_gets_its_own_rate_and_no_weight_decay(tiny_model, training_args, tmp_path):
    loss = MNRPlus(tiny_model, learnable_scale=True)  # scale_learning_rate defaults to 1e-3
    trainer = _one_step(tiny_model, loss, training_args, tmp_path)
    scale_group = _group_of(trainer.optimizer, loss.log_scale_offset)
    assert scale_group["initial_lr"] == pytest.approx(1e-3)
    assert scale_group["weight_decay"] == 0.0
    assert scale_group["params"] == [loss.log_scale_offset]
    model_group = _group_of(trainer.optimizer, tiny_model[0].auto_model.embeddings.word_embeddings.weight)
    assert model_group["initial_lr"] == pytest.approx(5e-2)
    assert model_group["weight_decay"] == 0.5


def test_without_its_own_rate_the_scale_trains_like_the_model(tiny_model, training_args, tmp_path):
    loss = MNRPlus(tiny_model, learnable_scale=True, scale_learning_rate=None)
    trainer = _one_step(tiny_model, loss, training_args, tmp_path)
    assert trainer.args.learning_rate_mapping == {}
    group = _group_of(trainer.optimizer, loss.log_scale_offset)
    assert group["initial_lr"] == pytest.approx(5e-2)
    assert group["weight_decay"] == 0.5


def test_wrapped_and_several_losses_get_the_rate(tiny_model, training_args, tmp_path):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    inner = MNRPlus(tiny_model, learnable_scale=True, scale_learning_rate=2e-3)
    wrapped = MatryoshkaLoss(tiny_model, inner, matryoshka_dims=[32, 16])
    other = MNRPlus(tiny_model, learnable_scale=True, scale_learning_rate=4e-3)
    callback = LossStateCallback({"nli": wrapped, "sts": other})
    assert callback.learning_rates() == {
        r"^(nli\.loss\.log_scale_offset)$": 2e-3,
        r"^(sts\.log_scale_offset)$": 4e-3,
    }
    trainer = _one_step(tiny_model, {"nli": wrapped, "sts": other}, training_args, tmp_path)
    for loss, rate in ((inner, 2e-3), (other, 4e-3)):
        group = _group_of(trainer.optimizer, loss.log_scale_offset)
        assert (group["initial_lr"], group["weight_decay"]) == (pytest.approx(rate), 0.0)
