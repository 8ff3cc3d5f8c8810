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
from st_mnr_plus.bench.workloads import cached_variant, parse_cached_variant
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
    "--cached-batch-size",
    "16",
    "--mini-batch-size",
    "4",
    "--mini-batch-num-tokens",
    "48",
]
CACHED_VARIANTS = {"cmnrl-mbs4", "cached_mnr_plus-mbs4", "cmnrl-tok48", "cached_mnr_plus-tok48"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny sizes: one thread is as fast, and does not spin-wait on a busy 2-core machine (module-scoped, unlike
    tests/losses' ``one_thread``, because the shared run below is)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.mark.slow  # the shared quick run: ~15 s (the README test runs st-mnr-plus bench --quick too)
def test_quick_run_prints_the_ratio_table(first_run: dict[str, Any]) -> None:
    assert first_run["code"] == 0
    lines = first_run["stdout"].splitlines()
    assert lines[0].startswith("st-mnr-plus bench on ")
    assert "speed-up" in lines[1]
    assert "memory ours/theirs" in lines[1]
    rows = {tuple(line.split()[:2]) for line in lines[3:] if line and not line.startswith(("speed-up", "wrote"))}
    groups = {line.split()[0] for line in lines[3:] if line.startswith(("loss ", "step ", "cached ", "sampler "))}
    assert groups == {"loss", "step", "cached", "sampler"}, rows
    loss_line = next(line for line in lines if line.startswith("loss B=64 d=16 neg=0 float32"))
    assert " mnr_plus " in loss_line
    assert " mnrl " in loss_line
    assert "peak +" in loss_line  # the fresh-process memory figures
    step_line = next(line for line in lines if line.startswith("step "))
    assert "samples/s" in step_line
    cached_line = next(line for line in lines if " cached_mnr_plus-tok48 " in line and " cmnrl-mbs4 " in line)
    assert cached_line.startswith("cached ")
    assert "samples/s" in cached_line
    assert "encoder tokens" in cached_line
    assert "wrote" in lines[-1]


@pytest.mark.slow  # the shared quick run: ~15 s (the README test runs st-mnr-plus bench --quick too)
def test_quick_run_writes_json(first_run: dict[str, Any]) -> None:
    document = json.loads((first_run["dir"] / "results.json").read_text())
    assert document["schema"] == report.SCHEMA
    assert document["machine"]["device"] == "cpu"
    assert document["machine"]["torch"] == torch.__version__
    assert document["settings"]["batch_size"] == 64
    assert document["settings"]["sections"] == ["loss", "step", "cached", "sampler"]
    names = {(r["group"].split()[0], r["name"]) for r in document["results"]}
    assert names == {
        ("loss", "mnrl"),
        ("loss", "mnr_plus"),
        ("step", "mnrl"),
        ("step", "mnr_plus"),
        *(("cached", name) for name in CACHED_VARIANTS),
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
        *(
            ("cached", ours, theirs)
            for ours in ("cached_mnr_plus-mbs4", "cached_mnr_plus-tok48")
            for theirs in ("cmnrl-mbs4", "cmnrl-tok48")
        ),
        ("sampler", "st_hashed", "st_plain"),
        ("sampler", "ours", "st_plain"),
    }
    for row in ratios.values():
        assert row["speedup"] == pytest.approx(row["baseline_median_s"] / row["variant_median_s"])
    loss = ratios[("loss", "mnr_plus", "mnrl")]
    assert loss["memory_ratio"] == pytest.approx(loss["variant_peak_extra_gib"] / loss["baseline_peak_extra_gib"])
    assert ratios[("step", "mnr_plus", "mnrl")]["variant_samples_per_s"] > 0


@pytest.mark.slow  # the shared quick run: ~15 s (the README test runs st-mnr-plus bench --quick too)
def test_quick_run_writes_png(first_run: dict[str, Any]) -> None:
    png = (first_run["dir"] / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5000


@pytest.mark.slow  # the shared quick run: ~15 s (the README test runs st-mnr-plus bench --quick too)
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
    ("argument", "value"),
    [
        ("--batch-size", "0"),
        ("--steps", "-1"),
        ("--sampler-rows", "0"),
        ("--negatives", "-1"),
        ("--cached-batch-size", "0"),
        ("--mini-batch-size", "0"),
        ("--mini-batch-num-tokens", "0"),
    ],
)
def test_bad_sizes_are_refused(tmp_path: Path, capsys, argument: str, value: str) -> None:
    assert main(["bench", "--quick", argument, value, "--output-dir", str(tmp_path)]) == 2
    assert argument in capsys.readouterr().err


def test_cached_section_alone(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """``--only cached`` with two token budgets: every CachedMNRPlus setting against every CMNRL one."""
    argv = ["bench", *TINY, "--only", "cached", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path)]
    assert main([*argv, "--mini-batch-num-tokens", "96", "--rounds", "2", "--no-plot"]) == 0
    assert "cached_mnr_plus-tok96" in capsys.readouterr().out
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["settings"]["sections"] == ["cached"]
    assert document["settings"]["mini_batch_num_tokens"] == [48, 96]
    results = {r["name"]: r for r in document["results"]}
    assert set(results) == {*CACHED_VARIANTS, "cmnrl-tok96", "cached_mnr_plus-tok96"}
    (group,) = {r["group"] for r in results.values()}
    assert group == f"cached {tiny_model_dir.name} B=16 L=128"
    for name, result in results.items():
        _, kwargs = parse_cached_variant(name)
        assert result["params"] == {"batch": 16, "max_seq_length": 128, **kwargs}, name
        assert len(result["times"]) == 2, name  # --rounds 2 of --cached-steps 1
        extra = result["extra"]
        assert extra["encoder_padded_tokens"] >= 2 * extra["real_tokens"] > 0, name  # both passes count
    # 16 rows of 2 columns in mini-batches of 4, each embedded twice.
    assert results["cmnrl-mbs4"]["extra"]["encoder_calls"] == 16
    assert results["cached_mnr_plus-mbs4"]["extra"]["encoder_calls"] == 16
    # Sorted rows split into equal mini-batches never pad more than the same split in the batch's order.
    ours, theirs = results["cached_mnr_plus-mbs4"]["extra"], results["cmnrl-mbs4"]["extra"]
    assert ours["encoder_padded_tokens"] <= theirs["encoder_padded_tokens"]
    ratios = {(r["variant"], r["baseline"]): r for r in document["ratios"]}
    ours_names = ("cached_mnr_plus-mbs4", "cached_mnr_plus-tok48", "cached_mnr_plus-tok96")
    theirs_names = ("cmnrl-mbs4", "cmnrl-tok48", "cmnrl-tok96")
    assert set(ratios) == {(o, t) for o in ours_names for t in theirs_names}
    for (variant, baseline), row in ratios.items():
        assert row["speedup"] == pytest.approx(
            results[baseline]["stats"]["median"] / results[variant]["stats"]["median"]
        )
        assert row["variant_encoder_padded_tokens"] == results[variant]["extra"]["encoder_padded_tokens"]


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


@pytest.mark.parametrize(
    ("loss", "kwargs", "name"),
    [
        ("cmnrl", {"mini_batch_size": 64}, "cmnrl-mbs64"),
        ("cached_mnr_plus", {"mini_batch_num_tokens": 4096}, "cached_mnr_plus-tok4096"),
    ],
)
def test_cached_variant_names_the_setting(loss: str, kwargs: dict[str, int], name: str) -> None:
    assert cached_variant(loss, **kwargs) == name
    assert parse_cached_variant(name) == (loss, kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: cached_variant("mnrl", mini_batch_size=64), "loss must be one of", id="loss"),
        pytest.param(lambda: cached_variant("cmnrl"), "exactly one of", id="neither"),
        pytest.param(
            lambda: cached_variant("cmnrl", mini_batch_size=8, mini_batch_num_tokens=8), "exactly one of", id="both"
        ),
        pytest.param(lambda: cached_variant("cmnrl", mini_batch_size=0), "positive", id="zero"),
        pytest.param(lambda: parse_cached_variant("cmnrl-64"), "'<loss>-mbs<rows>'", id="no-setting"),
        pytest.param(lambda: parse_cached_variant("mnrl-mbs64"), "'<loss>-mbs<rows>'", id="not-cached"),
    ],
)
def test_cached_variant_rejects(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_ratios_against_several_baselines() -> None:
    def result(name: str, median: float) -> dict[str, Any]:
        return Measurement(group="g", name=name, params={}, times=[median]).to_dict()

    results = [result("theirs-a", 4.0), result("ours-a", 2.0), result("theirs-b", 3.0), result("ours-b", 1.0)]
    rows = report.ratios(results, {"g": ["theirs-a", "theirs-b"]})
    speedups = {(row["variant"], row["baseline"]): row["speedup"] for row in rows}
    assert speedups == {
        ("ours-a", "theirs-a"): 2.0,
        ("ours-a", "theirs-b"): 1.5,
        ("ours-b", "theirs-a"): 4.0,
        ("ours-b", "theirs-b"): 3.0,
    }


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


def test_a_case_out_of_memory_is_recorded_by_its_first_line() -> None:
    from st_mnr_plus.bench.cli import _record_error

    measurement = Measurement(group="g", name="n", params={})
    _record_error(measurement, RuntimeError("out of memory: tried to allocate 32 GiB\nmore detail"), "cpu")
    assert measurement.extra["error"] == "RuntimeError: out of memory: tried to allocate 32 GiB"
