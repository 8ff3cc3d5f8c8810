"""The GPU path's kernels compile for sm_80 and sm_90 without a GPU (st_mnr_plus.losses.kernel_build).

The configurations the launchers can launch (8: three element-wise kernels, ``probabilities`` in each products'
dtype with and without the column direction) are compiled with the ptxas of the triton wheel, in worker processes
(so this runs whether or not the interpreter tests set TRITON_INTERPRET in this process), and each cubin is
checked: no failure, no local memory (spills), shared memory within the architecture's limit, registers within
255, and no matrix instruction in its SASS (the products run on cuBLAS). The two largest by default (4 compiles);
all 16 under -m slow.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("triton")
from st_mnr_plus.losses import kernel_build

ARCHS = (80, 90)


def _largest(configs: list[kernel_build.Configuration]) -> list[kernel_build.Configuration]:
    """The two configurations with the most live values: ``row_lse`` (statistics and own negatives) and
    ``probabilities`` in bf16 with the column direction (121 registers on sm_90, the most of the 8)."""
    wanted = {("row_lse", "fp32", False), ("probabilities", "bf16", True)}
    return [c for c in configs if (c.kernel, c.dtype, dict(c.constexprs).get("COLUMNS", False)) in wanted]


@pytest.fixture(scope="module")
def records() -> list[kernel_build.Record]:
    """The largest configurations for sm_80 and sm_90 (4 compiles); every one under -m slow and in CI's
    ``st-mnr-plus kernels --arch 80,90``."""
    return kernel_build.compile_all(_largest(kernel_build.configurations()), archs=ARCHS)


def _assert_fine(records: list[kernel_build.Record]) -> None:
    found = [f"{r}: {'; '.join(kernel_build.problems(r))}" for r in records if kernel_build.problems(r)]
    assert not found, "\n".join(found)


def test_the_largest_configurations_compile_for_sm80_and_sm90_with_no_problem(records: list[kernel_build.Record]):
    assert len(records) == 2 * len(ARCHS)
    _assert_fine(records)


@pytest.mark.slow
def test_every_configuration_compiles_for_sm80_and_sm90_with_no_problem():
    records = kernel_build.compile_all(archs=ARCHS)
    assert len(records) == len(kernel_build.configurations()) * len(ARCHS)
    assert {r.mma for r in records} == {"none"}
    _assert_fine(records)


def test_no_kernel_keeps_a_matrix_product_and_none_has_mma_instructions(records: list[kernel_build.Record]):
    assert kernel_build.PRODUCT_KERNELS == frozenset()
    assert {r.mma for r in records} == {"none"}
    assert not any(r.products for r in records)


def test_configurations_cover_each_kernel_and_the_dtypes_g_is_stored_in():
    from st_mnr_plus.losses import kernels  # here: tests/conftest.py has chosen the interpreter or not by now

    configs = kernel_build.configurations()
    assert {c.kernel for c in configs} == set(kernels.KERNELS)
    stored = {(c.dtype, dict(c.constexprs)["COLUMNS"]) for c in configs if c.kernel == "probabilities"}
    assert stored == {(dtype, columns) for dtype in ("fp32", "bf16", "fp16") for columns in (False, True)}
    assert len(configs) == len(set(configs)) == 8


@pytest.mark.parametrize(
    ("sass", "kind"),
    [
        ("        /*0a40*/  HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;", "HGMMA"),
        ("        /*0a40*/  HMMA.16816.F32.BF16 R4, R12, R16, R4 ;", "HMMA"),
        ("HMMA.16816.F32 R4, R12, R16, R4 ;\nHGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;", "HGMMA"),
        ("        /*0a40*/  FFMA R4, R12, R16, R4 ;\n  MUFU.EX2 R2, R2 ;", "none"),
    ],
    ids=["hgmma", "hmma", "both", "none"],
)
def test_mma_kind_reads_the_sass(sass: str, kind: str):
    assert kernel_build.mma_kind(sass) == kind


def _record(**changes) -> kernel_build.Record:
    fields = {"name": "k", "arch": 90, "registers": 64, "local_bytes": 0, "shared_bytes": 1024, "ok": True}
    return kernel_build.Record(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, None),
        ({"ok": False, "message": "boom"}, "compilation failed: boom"),
        ({"local_bytes": 8}, "spills: 8 bytes"),
        ({"shared_bytes": 300 * 1024}, "over sm_90's"),
        ({"registers": 300}, "300 registers"),
        ({"products": True, "half": True, "mma": "HMMA"}, "16-bit products on HMMA, not HGMMA, on sm_90"),
        ({"products": True, "half": True, "mma": "HGMMA"}, None),
        ({"products": True, "half": True, "mma": "HMMA", "arch": 80}, None),
        ({"products": True, "half": False, "mma": "HMMA"}, None),
        ({"mma": "HMMA"}, "HMMA instructions in an element-wise kernel"),
    ],
)
def test_problems_name_what_is_wrong(changes: dict, problem: str | None):
    found = kernel_build.problems(_record(**changes))
    if problem is None:
        assert found == []
    else:
        assert any(problem in line for line in found), found


def test_the_kernels_command_prints_every_configuration_its_mma_kind_and_exits_non_zero_on_a_problem(
    records, capsys, monkeypatch
):
    from st_mnr_plus import cli

    monkeypatch.setattr(kernel_build, "compile_all", lambda archs, processes=None: records)  # what it prints
    assert cli.main(["kernels", "--arch", "sm_80,90"]) == 0
    out = capsys.readouterr().out
    assert out.count("MMA none") == len(records)
    assert f"{len(records)} configurations" in out
    assert "0 with problems" in out
    bad = [dataclasses.replace(records[0], products=True, half=True, mma="HMMA", arch=90)]
    monkeypatch.setattr(kernel_build, "compile_all", lambda archs, processes=None: bad)
    assert cli.main(["kernels", "--arch", "90"]) == 1  # what CI's `st-mnr-plus kernels --arch 80,90` would fail on
    assert "16-bit products on HMMA, not HGMMA" in capsys.readouterr().out


def test_the_kernels_command_names_a_bad_architecture(capsys):
    from st_mnr_plus.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["kernels", "--arch", "ampere"])
    assert exit_.value.code == 2
    assert "expected compute capabilities such as 80,90, got 'ampere'" in capsys.readouterr().err
