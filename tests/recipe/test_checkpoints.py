"""Resuming: the newest checkpoint, Ctrl-C's checkpoint, the same step and model as an uninterrupted run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from st_mnr_plus.cli import main
from st_mnr_plus.recipe import (
    INTERRUPTED_CHECKPOINT,
    RecipeError,
    find_last_checkpoint,
    resolve_resume,
)
from tests.plugins.conftest import write_plugin_dist
from tests.recipe.conftest import encode, fast_run


def test_interrupted_run_resumes_to_the_same_step_and_model(tmp_path, monkeypatch, tiny_model_dir, nli_rows):
    """Ctrl-C (a plugin callback raises KeyboardInterrupt at step 2 of 4) leaves checkpoint-interrupted/; --resume
    with the run's config.yaml continues it to step 4 and ends with the model of an uninterrupted run, which it
    reaches only if the learnable scale, the optimizer, the scheduler and the RNG all come back."""
    from st_mnr_plus.plugins.manager import reset_plugin_manager

    plugin = write_plugin_dist(
        tmp_path / "plugin",
        "st-mnr-plus-interrupt",
        "interrupt_plugin_resume",
        """
        from transformers import TrainerCallback
        from st_mnr_plus import hookimpl

        class InterruptAtStep2(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    raise KeyboardInterrupt

        @hookimpl
        def register_callbacks():
            return {"interrupt_at_2": InterruptAtStep2}
        """,
    )
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.delenv("ST_MNR_PLUS_DISABLE_PLUGINS", raising=False)
    reset_plugin_manager()
    try:
        # A learning rate this high moves the learnable scale visibly in two steps.
        common = ["--max-steps", "4", "--loss-option", "learnable_scale=true", "--lr", "0.05"]
        whole, split = tmp_path / "whole", tmp_path / "split"
        assert main(["train", *fast_run(tiny_model_dir, nli_rows, whole), *common]) == 0

        interrupted = fast_run(tiny_model_dir, nli_rows, split)
        assert main(["train", *interrupted, *common, "--callbacks", "mnr_diagnostics", "interrupt_at_2"]) == 130
        folder = split / INTERRUPTED_CHECKPOINT
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "loss_state.pt"):
            assert (folder / name).is_file(), name
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 2
        assert not (split / "results.json").exists()

        # The config.yaml written at the start of the run, without the interrupting callback.
        resume = ["--config", str(split / "config.yaml"), "--callbacks", "mnr_diagnostics", "--resume"]
        assert main(["train", *resume]) == 0
    finally:
        sys.modules.pop("interrupt_plugin_resume", None)
        reset_plugin_manager()
    summary = json.loads((split / "results.json").read_text())
    assert summary["steps"] == 4
    assert summary["resumed_from"] == str(folder)
    torch.testing.assert_close(encode(split / "final"), encode(whole / "final"))


def test_last_checkpoint_is_the_highest_step_interrupted_included(tmp_path):
    def checkpoint(name: str, step: int | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if step is not None:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return folder

    checkpoint("checkpoint-2", 2)
    interrupted = checkpoint(INTERRUPTED_CHECKPOINT, 3)
    checkpoint("checkpoint-5", None)  # no trainer state: not resumable
    checkpoint("other-9", 9)
    assert find_last_checkpoint(tmp_path) == interrupted
    assert resolve_resume("last", tmp_path) == interrupted
    assert resolve_resume(True, tmp_path) == interrupted
    assert resolve_resume("false", tmp_path) is None
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(RecipeError, match=r"no readable trainer_state\.json"):
        resolve_resume(str(tmp_path / "checkpoint-5"), tmp_path)


def test_resume_without_a_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "no resumable checkpoint" in err
