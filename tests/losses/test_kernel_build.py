"""The fused kernels compile for sm_80 and sm_90 without a GPU (st_mnr_plus.losses.kernel_build), with no spills.

Configurations the launchers can launch are compiled with the ptxas of the triton wheel, in worker processes (so
this runs whether or not the interpreter tests set TRITON_INTERPRET in this process), and each cubin's resource
usage is checked: no failure, no local memory (spills), shared memory within the architecture's limit, registers
within 255. By default the widest of each kernel, dtype and precision (the largest accumulator: the most shared
memory, and the most registers to spill), 24 compiles; every configuration (64, about four times as long on two
cores) with ``-m slow``, and in ``st-mnr-plus kernels``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from st_mnr_plus.losses import kernel_build

ARCHS = (80, 90)


def _key(config: kernel_build.Configuration) -> tuple[str, str, str]:
    return config.kernel, config.dtype, dict(config.constexprs)["PRECISION"]


def widest(configs: list[kernel_build.Configuration]) -> list[kernel_build.Configuration]:
    """Of each kernel, dtype and precision, the configuration with the widest backward accumulator (the forward's
    one)."""
    width = lambda config: dict(config.constexprs).get("BD", 0)  # noqa: E731
    best = {}
    for config in configs:
        if _key(config) not in best or width(config) > width(best[_key(config)]):
            best[_key(config)] = config
    return list(best.values())


@pytest.fixture(scope="module")
def records() -> list[kernel_build.Record]:
    return kernel_build.compile_all(widest(kernel_build.configurations()), archs=ARCHS)


def _assert_fine(records: list[kernel_build.Record]) -> None:
    found = [
        f"{record}: {'; '.join(kernel_build.problems(record))}" for record in records if kernel_build.problems(record)
    ]
    assert not found, "\n".join(found)


def test_the_widest_configurations_compile_without_spills_for_sm80_and_sm90(records: list[kernel_build.Record]):
    configs = widest(kernel_build.configurations())
    assert len(configs) == 12  # forward, by rows, by columns x fp32 ieee, fp32 tf32, bf16, fp16
    assert len(records) == len(configs) * len(ARCHS)
    assert {dict(c.constexprs).get("BD") for c in configs} == {None, 512}
    _assert_fine(records)


@pytest.mark.slow
def test_every_configuration_compiles_without_spills_for_sm80_and_sm90():
    records = kernel_build.compile_all(archs=ARCHS)
    assert len(records) == len(kernel_build.configurations()) * len(ARCHS)
    _assert_fine(records)


def test_configurations_cover_each_dtype_precision_and_kernel():
    configs = kernel_build.configurations()
    kinds = {(config.kernel, config.dtype, dict(config.constexprs)["PRECISION"]) for config in configs}
    for kernel in ("forward", "backward_rows", "backward_columns"):
        assert {
            (kernel, "fp32", "ieee"),
            (kernel, "fp32", "tf32"),
            (kernel, "bf16", "ieee"),
            (kernel, "fp16", "ieee"),
        } <= kinds
    assert all(not dict(config.constexprs)["UPCAST"] for config in configs)  # interpreter-only
    assert len({config.name for config in configs}) == len(configs)


def test_configurations_hold_one_forward_and_a_backward_for_each_accumulator_width():
    """What the launchers can launch (kernels.block_config over every d) is compiled: one forward per dtype and
    precision, and a configuration of each backward kernel per accumulator width BD."""
    from st_mnr_plus.losses import kernels  # here: tests/conftest.py has chosen the interpreter or not by now

    configs = kernel_build.configurations()
    widths = {"fp32": {64, 128, 256, 512}, "bf16": {128, 256, 512}, "fp16": {128, 256, 512}}
    for dtype, expected in widths.items():
        for precision in ("ieee", "tf32") if dtype == "fp32" else ("ieee",):
            mine = [c for c in configs if c.dtype == dtype and dict(c.constexprs)["PRECISION"] == precision]
            assert sum(c.kernel == "forward" for c in mine) == 1, (dtype, precision)
            for kernel in ("backward_rows", "backward_columns"):
                found = sorted(dict(c.constexprs)["BD"] for c in mine if c.kernel == kernel)
                assert found == sorted(expected), (dtype, precision, kernel)
    names = {config.name for config in configs}
    for d in (1, 100, 384, 768, 4096):  # spot checks of the launchers' choice against the compiled names
        blocks = kernels.block_config(torch.bfloat16, d).backward_rows
        name = (
            f"backward_rows[bf16 BD={blocks.BD} BK={blocks.BK} BM={blocks.BM} BN={blocks.BN} PRECISION=ieee "
            f"warps={blocks.num_warps} stages={blocks.num_stages}]"
        )
        assert name in names, d


def test_problems_name_what_is_wrong():
    fine = kernel_build.Record("k", 80, registers=128, local_bytes=0, shared_bytes=32768, ok=True)
    assert kernel_build.problems(fine) == []
    assert "sm_80 k: 128 registers, 0 B local, 32768 B shared" in str(fine)
    spilling = kernel_build.Record("k", 90, registers=255, local_bytes=16, shared_bytes=240_000, ok=True)
    assert kernel_build.problems(spilling) == [
        "spills: 16 bytes of local memory per thread",
        "240000 bytes of shared memory, over sm_90's 232448 per block",
    ]
    failed = kernel_build.Record("k", 80, 0, 0, 0, ok=False, message="ptxas error")
    assert kernel_build.problems(failed) == ["compilation failed: ptxas error"]
    assert "FAILED: ptxas error" in str(failed)


def test_the_kernels_command_prints_every_configuration_and_its_resources(records, capsys, monkeypatch):
    """``st-mnr-plus kernels --arch 80,90``: one line per configuration and architecture, exit status 0. The
    command gets the ``records`` fixture's rather than compiling them again (every configuration: minutes)."""
    from st_mnr_plus.cli import main

    def compile_all(configs=None, archs=(80, 90), processes=None):
        assert configs is None  # every configuration
        assert list(archs) == list(ARCHS)
        return records  # the widest only: the command prints what it gets

    monkeypatch.setattr(kernel_build, "compile_all", compile_all)
    assert main(["kernels", "--arch", "sm_80,90"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(records) + 1
    assert all(" registers, 0 B local, " in line for line in lines[:-1])
    assert lines[-1].startswith(f"{len(records)} configurations in ")
    assert lines[-1].endswith(", 0 with problems")


def test_the_kernels_command_names_a_bad_architecture(capsys):
    from st_mnr_plus.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["kernels", "--arch", "ampere"])
    assert exit_.value.code == 2
    assert "expected compute capabilities such as 80,90, got 'ampere'" in capsys.readouterr().err
