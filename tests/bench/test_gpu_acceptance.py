"""benchmarks/gpu_acceptance.py, the GPU day's one command, runs end to end at tiny sizes on the CPU (the kernels
in Triton's interpreter): its figures mean nothing here, its sections and JSON are what is checked."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("triton")


def _script():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO_ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_times_every_loss_and_writes_the_ratios(tmp_path, capsys):
    output = tmp_path / "results.json"
    assert _script().main(["--smoke", "--skip-steps", "--output", str(output)]) == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["mode"] == "smoke"
    assert {row["loss"] for row in results["loss"]} == {"mnrl", "mnr_plus_torch", "mnr_plus_triton"}
    assert all(row["ok"] for row in results["loss"]), [row for row in results["loss"] if not row["ok"]]
    by_size = {}
    for row in results["loss"]:
        by_size.setdefault((row["batch"], row["negatives"]), {})[row["loss"]] = row["loss_value"]
    for size, values in by_size.items():  # the three compute the same loss (bf16 inputs: to bf16 precision)
        assert values["mnr_plus_triton"] == pytest.approx(values["mnrl"], rel=2e-2), size
        assert values["mnr_plus_torch"] == pytest.approx(values["mnrl"], rel=2e-2), size
    for ratio in results["loss_ratios"]:
        assert ratio["mnr_plus_triton_time_ratio"] > 0
        assert ratio["mnr_plus_torch_time_ratio"] > 0
    assert f"wrote {output}" in capsys.readouterr().out


def test_without_a_gpu_the_full_run_says_so(capsys):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exit_:
        _script().main(["--output", "unused.json"])
    assert exit_.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
