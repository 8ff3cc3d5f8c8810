"""benchmarks/gpu_acceptance.py, the GPU day's one command, runs end to end at tiny sizes on the CPU (the kernels
in Triton's interpreter, autocast on the CPU): its figures mean nothing here, its sections and JSON are what is
checked."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("triton")

LOSS_KEYS = {"loss", "batch", "dim", "negatives", "symmetric", "precision", "embeddings", "autocast", "ok"}
STEP_KEYS = {"loss", "batch", "autocast_scope", "steps", "ok"}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO_ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_times_every_loss_and_writes_the_ratios(script, tmp_path, capsys):
    output = tmp_path / "results.json"
    assert script.main(["--smoke", "--skip-steps", "--output", str(output)]) == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["mode"] == "smoke"
    assert "steps" not in results
    rows = results["loss"]
    assert all(LOSS_KEYS <= row.keys() for row in rows)
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    assert {row["loss"] for row in rows} == {"mnrl", "mnr_plus_torch", "mnr_plus_triton"}
    assert {(row["precision"], row["embeddings"], row["autocast"]) for row in rows} == {
        ("bf16", "bfloat16", None),
        ("fp32_autocast_bf16", "float32", "bfloat16"),
    }
    assert {(row["negatives"], row["symmetric"]) for row in rows} == {(0, False), (1, False), (0, True)}
    by_case = {}
    for row in rows:
        key = (row["batch"], row["negatives"], row["symmetric"], row["precision"])
        by_case.setdefault(key, {})[row["loss"]] = row["loss_value"]
    for case, values in by_case.items():  # the three compute the same loss, to bf16 precision
        assert values["mnr_plus_triton"] == pytest.approx(values["mnrl"], rel=2e-2), case
        assert values["mnr_plus_torch"] == pytest.approx(values["mnrl"], rel=2e-2), case
    assert len(results["loss_ratios"]) == len(by_case)
    for ratio in results["loss_ratios"]:
        assert ratio["mnr_plus_triton_time_ratio"] > 0
        assert ratio["mnr_plus_torch_time_ratio"] > 0
    assert f"wrote {output}" in capsys.readouterr().out


def test_a_case_over_the_budget_is_recorded_as_skipped(script, tiny_model_dir):
    losses = script.run_losses("smoke", "cpu", budget_s=0)
    steps = script.run_steps("smoke", "cpu", budget_s=0, model_path=str(tiny_model_dir))
    for row in losses + steps:
        assert not row["ok"]
        assert row["error"].startswith("skipped:"), row
    assert len(losses) == len(list(script.loss_cases("smoke")))
    assert [(row["batch"], row["autocast_scope"], row["loss"]) for row in steps] == list(script.step_cases("smoke"))
    assert all(STEP_KEYS <= row.keys() for row in steps)


def test_the_budget_estimates_a_case_from_the_largest_size_run(script):
    budget = script.Budget(100)
    assert budget.skip_reason(1, calls=3) is None  # nothing run yet: no estimate
    budget.record(10, seconds_per_call=2.0)
    budget.record(10, seconds_per_call=1.0)  # the slowest loss at a size sets its rate
    assert budget.skip_reason(40, calls=12) is None  # 0.2 s per unit: 96 s
    assert "about 104 s estimated" in budget.skip_reason(40, calls=13)


@pytest.mark.slow
def test_the_smoke_run_steps_every_loss_in_both_autocast_scopes(script, tiny_model_dir, tmp_path):
    output = tmp_path / "results.json"
    argv = ["--smoke", "--skip-loss", "--model", str(tiny_model_dir), "--output", str(output)]
    assert script.main(argv) == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert "loss" not in results
    rows = results["steps"]
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    assert [(row["batch"], row["autocast_scope"], row["loss"]) for row in rows] == list(script.step_cases("smoke"))
    for row in rows:
        assert row["samples_per_second"] > 0, row
        assert ("mini_batch_size" in row) == (row["loss"] in script.CACHED_LOSSES), row
        assert ("backend_used" in row) == (row["loss"] in ("mnr_plus", "cached_mnr_plus")), row
        assert 0 < row["loss_value"] < 10, row  # dropout is on, as in training: the losses' values differ a little
    assert {(entry["batch"], entry["autocast_scope"]) for entry in results["step_ratios"]} == {
        (batch, scope) for batch, scope, _ in script.step_cases("smoke")
    }
    assert all(entry["cached_mnr_plus_speedup"] > 0 for entry in results["step_ratios"])


def test_without_a_gpu_the_full_run_says_so(script, capsys):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exit_:
        script.main(["--output", "unused.json"])
    assert exit_.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
