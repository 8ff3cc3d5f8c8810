"""The run's parts built by name: data, model (hub, local, GloVe), loss, evaluators, callbacks."""

from __future__ import annotations

import gzip
import json
import logging
import sys
import types

import pytest

from st_mnr_plus.cli import main
from st_mnr_plus.recipe import (
    RecipeError,
    RecipeOptions,
    bundled_snli_path,
    load_model,
)


def test_bundled_snli_rows_ship_with_their_license():
    path = bundled_snli_path()
    assert path.is_file()
    assert (path.parent / "LICENSE.md").read_text().count("CC BY-SA 4.0") >= 1

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 9842


def test_glove_models_come_from_the_glove_module(monkeypatch, tiny_model):
    seen = []

    def load_glove_model(spec: str):
        seen.append(spec)
        return tiny_model

    fake = types.ModuleType("st_mnr_plus.models.glove")
    fake.load_glove_model = load_glove_model
    monkeypatch.setitem(sys.modules, "st_mnr_plus.models.glove", fake)
    assert load_model("glove:path/to/glove.6B.50d.txt", 48) is tiny_model
    assert seen == ["path/to/glove.6B.50d.txt"]
    assert tiny_model.max_seq_length == 48


def test_unreachable_hub_model_says_offline_and_how_to_give_a_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError, match=r"offline.*--model"):
        load_model("sentence-transformers/some-model-that-is-not-cached", None)


def test_missing_local_model_path_is_named(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_model(str(tmp_path / "no-model"), None)


def test_unknown_component_lists_the_registered_names(capsys):
    assert main(["train", "--loss", "no_such_loss", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no_such_loss" in err
    assert "mnrl" in err
    assert "Traceback" not in err


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
