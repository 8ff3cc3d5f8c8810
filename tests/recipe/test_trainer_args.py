"""The recipe's trainer defaults: what it sets when the user does not, and what it leaves alone."""

from __future__ import annotations

import pytest

from st_mnr_plus.recipe import RecipeOptions, trainer_args


@pytest.mark.parametrize("accelerator", [False, True])
def test_pin_memory_follows_the_accelerator(monkeypatch, accelerator):
    # torch warns on every epoch when the trainer pins memory without an accelerator to pin it for.
    monkeypatch.setattr(trainer_args, "accelerator_available", lambda: accelerator)
    values = trainer_args.trainer_values(RecipeOptions(), {}, total_steps=8, output_dir="out")
    assert values["dataloader_pin_memory"] is accelerator


def test_pin_memory_given_by_the_user_is_kept(monkeypatch):
    monkeypatch.setattr(trainer_args, "accelerator_available", lambda: False)
    given = {"dataloader_pin_memory": True}
    values = trainer_args.trainer_values(RecipeOptions(), given, total_steps=8, output_dir="out")
    assert values["dataloader_pin_memory"] is True


def test_accelerator_available_agrees_with_torch():
    import torch

    assert trainer_args.accelerator_available() is torch.accelerator.is_available()


@pytest.mark.parametrize(
    ("world_size", "accelerator", "use_cpu"),
    [
        pytest.param(None, False, None, id="one-process"),
        pytest.param("1", False, None, id="torchrun-one-process"),
        pytest.param("2", False, True, id="torchrun-two-processes-no-accelerator"),
        pytest.param("2", True, None, id="torchrun-two-processes-accelerator"),
    ],
)
def test_several_processes_without_an_accelerator_train_on_the_cpus(monkeypatch, world_size, accelerator, use_cpu):
    # Without use_cpu the trainer sets up no process group there, and each process trains a copy of its own.
    monkeypatch.setattr(trainer_args, "accelerator_available", lambda: accelerator)
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    values = trainer_args.trainer_values(RecipeOptions(), {}, total_steps=8, output_dir="out")
    assert values.get("use_cpu") is use_cpu


def test_use_cpu_given_true_is_kept_on_one_process(monkeypatch):
    monkeypatch.setattr(trainer_args, "accelerator_available", lambda: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    values = trainer_args.trainer_values(RecipeOptions(), {"use_cpu": True}, total_steps=8, output_dir="out")
    assert values["use_cpu"] is True


def test_use_cpu_false_with_several_processes_and_no_accelerator_is_refused(monkeypatch):
    monkeypatch.setattr(trainer_args, "accelerator_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(trainer_args.RecipeError, match=r"WORLD_SIZE=2.*use_cpu is false.*Leave --use_cpu out"):
        trainer_args.trainer_values(RecipeOptions(), {"use_cpu": False}, total_steps=8, output_dir="out")


@pytest.mark.parametrize("value", ["two", "0", "-1", ""])
def test_a_bad_world_size_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(trainer_args.RecipeError, match=f"WORLD_SIZE must be a positive whole number, got '{value}'"):
        trainer_args.launched_processes()
