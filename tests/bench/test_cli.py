"""``st-mnr-plus bench``: the table, the JSON, the PNG and ``--compare``, at tiny sizes (the tiny model)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from st_mnr_plus.bench import report
from st_mnr_plus.bench.harness import Measurement, time_call
from st_mnr_plus.cli import main

TINY = [
    "--quick",
    "--device",
    "cpu",
    "--batch-size",
    "64",
    "--dim",
    "16",
    "--step-batch-size",
    "8",
    "--steps",
    "1",
    "--sampler-rows",
    "300",
    "--sampler-batch-size",
    "16",
    "--repeats",
    "2",
]


@pytest.fixture(scope="module")
def tiny_model_dir(_tiny_model_session, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    _tiny_model_session.save(str(path))
    return path


@pytest.fixture(scope="module")
def first_run(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Any]:
    """One full quick run (every section, memory included), shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()  # a module-scoped fixture cannot use capsys
    with contextlib.redirect_stdout(stdout):
        code = main(["bench", *TINY, "--model", str(tiny_model_dir), "--output-dir", str(out)])
    return {"code": code, "stdout": stdout.getvalue(), "dir": out}


def test_quick_run_prints_the_ratio_table(first_run: dict[str, Any]) -> None:
    assert first_run["code"] == 0
    lines = first_run["stdout"].splitlines()
    assert lines[0].startswith("st-mnr-plus bench on ")
    assert "speed-up" in lines[1]
    assert "memory ours/theirs" in lines[1]
    rows = {tuple(line.split()[:2]) for line in lines[3:] if line and not line.startswith(("speed-up", "wrote"))}
    groups = {line.split()[0] for line in lines[3:] if line.startswith(("loss ", "step ", "sampler "))}
    assert groups == {"loss", "step", "sampler"}, rows
    loss_line = next(line for line in lines if line.startswith("loss B=64 d=16 neg=0 float32"))
    assert " mnr_plus " in loss_line
    assert " mnrl " in loss_line
    assert "peak +" in loss_line  # the fresh-process memory figures
    step_line = next(line for line in lines if line.startswith("step "))
    assert "samples/s" in step_line
    assert "wrote" in lines[-1]


def test_quick_run_writes_json(first_run: dict[str, Any]) -> None:
    document = json.loads((first_run["dir"] / "results.json").read_text())
    assert document["schema"] == report.SCHEMA
    assert document["machine"]["device"] == "cpu"
    assert document["machine"]["torch"] == torch.__version__
    assert document["settings"]["batch_size"] == 64
    assert document["settings"]["sections"] == ["loss", "step", "sampler"]
    names = {(r["group"].split()[0], r["name"]) for r in document["results"]}
    assert names == {
        ("loss", "mnrl"),
        ("loss", "mnr_plus"),
        ("step", "mnrl"),
        ("step", "mnr_plus"),
        ("sampler", "st_plain"),
        ("sampler", "st_hashed"),
        ("sampler", "ours"),
    }
    for result in document["results"]:
        assert result["stats"]["rounds"] == len(result["times"]) >= 1, result["name"]
        assert all(t > 0 for t in result["times"])
    loss_rows = [r for r in document["results"] if r["group"].startswith("loss")]
    assert all(r["extra"]["peak_extra_gib"] >= 0 and r["extra"]["memory"] == "peak_rss" for r in loss_rows)
    assert all(len(r["times"]) == 2 for r in loss_rows)  # --repeats 2 after one warm-up
    sampler_rows = [r for r in document["results"] if r["group"].startswith("sampler")]
    assert all(r["extra"]["rows_yielded"] > 0 for r in sampler_rows)
    ratios = {(r["group"].split()[0], r["variant"], r["baseline"]): r for r in document["ratios"]}
    assert set(ratios) == {
        ("loss", "mnr_plus", "mnrl"),
        ("step", "mnr_plus", "mnrl"),
        ("sampler", "st_hashed", "st_plain"),
        ("sampler", "ours", "st_plain"),
    }
    for row in ratios.values():
        assert row["speedup"] == pytest.approx(row["baseline_median_s"] / row["variant_median_s"])
    loss = ratios[("loss", "mnr_plus", "mnrl")]
    assert loss["memory_ratio"] == pytest.approx(loss["variant_peak_extra_gib"] / loss["baseline_peak_extra_gib"])
    assert ratios[("step", "mnr_plus", "mnrl")]["variant_samples_per_s"] > 0


def test_quick_run_writes_png(first_run: dict[str, Any]) -> None:
    png = (first_run["dir"] / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5000


def test_compare_with_an_earlier_run(first_run: dict[str, Any], tmp_path: Path, capsys) -> None:
    old = first_run["dir"] / "results.json"
    code = main(
        ["bench", *TINY, "--only", "loss", "--no-memory", "--output-dir", str(tmp_path), "--compare", str(old)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"compared with {old}" in out
    compared = json.loads((tmp_path / "results.json").read_text())["compared_with"]
    assert compared["path"] == str(old)
    rows = {(r["group"].split()[0], r["variant"]): r for r in compared["rows"]}
    loss = rows[("loss", "mnr_plus")]
    assert loss["old_speedup"] > 0
    assert loss["new_speedup"] > 0
    assert loss["old_memory_ratio"] is not None
    assert loss["new_memory_ratio"] is None  # --no-memory this time
    # A comparison the new run did not make is listed, not dropped.
    assert rows[("step", "mnr_plus")]["new_speedup"] is None
    assert rows[("step", "mnr_plus")]["old_speedup"] > 0
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{not json", "not a readable JSON file", id="not-json"),
        pytest.param('{"a": 1}', "not a result of st-mnr-plus bench", id="not-bench"),
    ],
)
def test_compare_rejects_a_bad_file(tmp_path: Path, capsys, content: str, message: str) -> None:
    bad = tmp_path / "old.json"
    bad.write_text(content)
    assert main(["bench", "--quick", "--compare", str(bad), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--compare" in err
    assert message in err
    assert not (tmp_path / "out").exists()  # refused before running anything


@pytest.mark.parametrize(
    ("argument", "value"), [("--batch-size", "0"), ("--steps", "-1"), ("--sampler-rows", "0"), ("--negatives", "-1")]
)
def test_bad_sizes_are_refused(tmp_path: Path, capsys, argument: str, value: str) -> None:
    assert main(["bench", "--quick", argument, value, "--output-dir", str(tmp_path)]) == 2
    assert argument in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--device", "cuda", "--output-dir", str(tmp_path)]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ pieces


def test_time_call_counts_warmup_and_repeats() -> None:
    calls: list[int] = []
    times, result = time_call(lambda x: calls.append(x) or len(calls), setup=lambda: ((7,), {}), warmup=2, repeats=3)
    assert calls == [7] * 5
    assert len(times) == 3
    assert result == 5
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_ratios_and_compare_by_hand() -> None:
    def result(group: str, name: str, times: list[float], **extra: Any) -> dict[str, Any]:
        return Measurement(group=group, name=name, params={}, times=times, extra=extra).to_dict()

    results = [
        result("loss x", "mnrl", [4.0, 2.0, 3.0], peak_extra_gib=2.0),
        result("loss x", "mnr_plus", [1.0, 1.5, 0.5], peak_extra_gib=0.5),
    ]
    (row,) = report.ratios(results, {"loss x": "mnrl"})
    assert row["speedup"] == pytest.approx(3.0)  # medians 3.0 / 1.0
    assert row["memory_ratio"] == pytest.approx(0.25)
    old = {"ratios": [{**row, "speedup": 2.0, "variant_median_s": 2.0}]}
    (compared,) = report.compare({"ratios": [row]}, old)
    assert compared["old_speedup"] == 2.0
    assert compared["new_speedup"] == pytest.approx(3.0)
    assert compared["time_change"] == pytest.approx(0.5)
