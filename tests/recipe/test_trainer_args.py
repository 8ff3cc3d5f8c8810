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
