"""The fused kernels compile for sm_80 and sm_90 without a GPU (st_mnr_plus.losses.kernel_build), with no spills.

Every configuration the launchers can launch is compiled with the ptxas of the triton wheel, in worker processes
(so this runs whether or not the interpreter tests set TRITON_INTERPRET in this process), and its cubin's
resource usage is checked: no failure, no local memory (spills), shared memory within the architecture's limit,
registers within 255.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
from st_mnr_plus.losses import kernel_build

ARCHS = (80, 90)


@pytest.fixture(scope="module")
def records() -> list[kernel_build.Record]:
    return kernel_build.compile_all(archs=ARCHS)


def test_every_configuration_compiles_without_spills_for_sm80_and_sm90(records: list[kernel_build.Record]):
    configs = kernel_build.configurations()
    assert len(records) == len(configs) * len(ARCHS)
    found = [
        f"{record}: {'; '.join(kernel_build.problems(record))}" for record in records if kernel_build.problems(record)
    ]
    assert not found, "\n".join(found)


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


def test_the_kernels_command_prints_every_configuration_and_its_resources(records, capsys):
    """``st-mnr-plus kernels --arch 80,90``: one line per configuration and architecture, exit status 0 (the
    ``records`` fixture compiled them already: this run reads Triton's cache)."""
    from st_mnr_plus.cli import main

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
