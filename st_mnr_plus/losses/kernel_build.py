"""Ahead-of-time compilation of the fused MNR kernels for named GPUs, on a machine without one.

:func:`configurations` lists every combination of kernel, ``constexpr`` values, warps, stages and dtype that the
launchers of :mod:`.kernels` can launch; :func:`compile_configuration` compiles one for a compute capability with
``triton.compile`` (the ``ptxas`` that ships in the triton wheel: no driver, no GPU) and reads what the cubin
uses with the wheel's ``cuobjdump --dump-resource-usage``; :func:`problems` says what is wrong with a
:class:`Record`. ``python kernel_build.py --arch 80,90`` prints one line per configuration.

Each configuration is compiled for the specialisation that production inputs get: every pointer 16-byte aligned
and ``d`` a multiple of 16. Triton's JIT specialises on both, so other inputs (``d = 50``, a sliced threshold)
compile the same code again at run time with narrower loads, and ``d = 1`` as a constant; the other integer
arguments are never specialised (``kernels._RUNTIME_INTS``).

Why the compiler runs in worker processes: ``@triton.jit`` decides at decoration time whether it builds a
compilable ``JITFunction`` or an ``InterpretedFunction``, from ``TRITON_INTERPRET``; with the interpreter on, the
kernels of :mod:`.kernels` and the ``@jit`` functions of ``triton.language`` itself (``tl.sum``, ``tl.max``) are
interpreted and cannot be compiled. The interpreter tests set it for the whole test process. So compilation runs
in fresh processes (``python -m st_mnr_plus.losses.kernel_build --worker``, jobs as JSON on stdin, records on
stdout) whose environment has ``TRITON_INTERPRET`` removed; they import :mod:`.kernels` and nothing heavy
(``st_mnr_plus.losses`` loads its loss modules, and with them sentence-transformers, only when they are asked
for). That also spreads the compiles over the machine's cores. Only where this process's kernels are compilable
does :func:`compile_configuration` compile in place.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
import triton

__all__ = [
    "MAX_REGISTERS",
    "SHARED_MEMORY_LIMITS",
    "Configuration",
    "Record",
    "check",
    "compile_all",
    "compile_configuration",
    "configurations",
    "problems",
]

#: Opt-in shared memory per thread block, in bytes, by compute capability: CUDA C++ Programming Guide, "Technical
#: Specifications per Compute Capability" ("Maximum amount of shared memory per thread block"): 163 KB on 8.0 and
#: 8.7, 99 KB on 8.6 and 8.9, 227 KB on 9.0 and 10.0, 99 KB on 12.0.
SHARED_MEMORY_LIMITS: dict[int, int] = {
    80: 163 * 1024,
    86: 99 * 1024,
    87: 163 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,
    100: 227 * 1024,
    120: 99 * 1024,
}
#: Registers a thread can address (``maxrregcount``), every architecture since sm_35.
MAX_REGISTERS = 255

#: Feature sizes over which :func:`configurations` collects the block configurations the launchers choose.
MAX_FEATURES = 1 << 14

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Triton's type of each kernel argument that is not a constexpr ("{dtype}": the inputs' element type).
_ARGUMENT_TYPES = {
    "X": "*{dtype}",
    "Y": "*{dtype}",
    "IDS": "*i64",
    "THRESHOLD": "*fp32",
    "SCALE": "*fp32",
    "LSE": "*fp32",
    "HARDEST": "*fp32",
    "MASKED": "*i32",
    "DUPLICATES": "*i32",
    "NORM": "*fp32",
    "GRAD_X": "*fp32",
    "GRAD_OWN": "*fp32",
    "GRAD_Y": "*fp32",
    "weight": "fp32",
    "offset": "i32",
    "local": "i32",
    "ncols": "i32",
    "world": "i32",
    "n_own": "i32",
    "d": "i32",
}
_ALIGNED = "d"  # the one integer argument specialised on divisibility by 16 (see kernels._RUNTIME_INTS)
# The fields of kernels.Blocks that are launch options; the others are the kernel's block-size constexprs.
_LAUNCH_OPTIONS = ("num_warps", "num_stages")


def _load_kernels() -> ModuleType:
    """:mod:`.kernels`, imported here (in a worker: without the interpreter, so its kernels compile)."""
    return importlib.import_module("st_mnr_plus.losses.kernels")


@dataclass(frozen=True)
class Configuration:
    """One compiled variant: a kernel of :data:`kernels.KERNELS` with its constexprs and launch options."""

    kernel: str
    dtype: str  # the inputs' element type: "fp32", "bf16" or "fp16"
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        values = " ".join(f"{k}={v}" for k, v in self.constexprs if k != "UPCAST")  # UPCAST: always False
        return f"{self.kernel}[{self.dtype} {values} warps={self.num_warps} stages={self.num_stages}]"

    def to_json(self) -> dict:
        return {**asdict(self), "constexprs": [list(item) for item in self.constexprs]}

    @classmethod
    def from_json(cls, data: dict) -> Configuration:
        return cls(**{**data, "constexprs": tuple(tuple(item) for item in data["constexprs"])})


@dataclass(frozen=True)
class Record:
    """What one configuration costs on one architecture (``ok=False``: it did not compile; ``message`` says why).

    ``local_bytes`` is the per-thread local memory, stack frame included: register spills. ``shared_bytes`` is
    the static shared memory of the cubin plus the dynamic shared memory Triton launches it with.
    """

    name: str
    arch: int
    registers: int
    local_bytes: int
    shared_bytes: int
    ok: bool
    message: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        if not self.ok:
            return f"sm_{self.arch} {self.name}: FAILED: {self.message}"
        return (
            f"sm_{self.arch} {self.name}: {self.registers} registers, {self.local_bytes} B local, "
            f"{self.shared_bytes} B shared ({self.seconds:.1f} s)"
        )


def configurations() -> list[Configuration]:
    """Every configuration the launchers can launch: for each dtype and each ``input_precision`` of that dtype,
    each kernel's distinct blocks among the :class:`kernels.BlockConfig` that :func:`kernels.block_config` returns
    for ``d`` up to :data:`MAX_FEATURES` (one forward, and a backward per accumulator width). ``UPCAST`` is
    interpreter-only and never compiled."""
    kernels = _load_kernels()
    found = []
    for dtype_name, dtype in _DTYPES.items():
        chosen = dict.fromkeys(kernels.block_config(dtype, d) for d in range(1, MAX_FEATURES + 1))
        for precision in kernels.precisions(dtype):
            for name in kernels.KERNELS:
                for blocks in dict.fromkeys(getattr(config, name) for config in chosen):
                    sizes = {k: v for k, v in blocks._asdict().items() if k not in _LAUNCH_OPTIONS and v is not None}
                    constexprs = tuple(sorted({"UPCAST": False, "PRECISION": precision, **sizes}.items()))
                    found.append(Configuration(name, dtype_name, constexprs, blocks.num_warps, blocks.num_stages))
    return found


def _source(config: Configuration, kernels: ModuleType):
    """The ``ASTSource`` of a configuration, specialised as the launchers' calls are (see the module docstring)."""
    from triton.compiler import ASTSource

    fn = kernels.KERNELS[config.kernel]
    constexprs = dict(config.constexprs)
    signature, attrs = {}, {}
    for index, arg in enumerate(fn.arg_names):
        if arg in constexprs:
            signature[arg] = "constexpr"
            continue
        signature[arg] = _ARGUMENT_TYPES[arg].format(dtype=config.dtype)
        if signature[arg].startswith("*") or arg == _ALIGNED:
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED``, ``LOCAL``... of the cubin's kernel, from ``cuobjdump --dump-resource-usage``."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run(
            [str(tool), "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
        )
    lines = [line for line in out.stdout.splitlines() if "REG:" in line]
    if len(lines) != 1:
        raise RuntimeError(f"expected one kernel in cuobjdump's output, got:\n{out.stdout}")
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", lines[0])}


def _compile_here(config: Configuration, arch: int) -> Record:
    from triton.backends.compiler import GPUTarget

    start = time.perf_counter()
    try:
        kernels = _load_kernels()
        options = {"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": True}
        compiled = triton.compile(_source(config, kernels), target=GPUTarget("cuda", arch, 32), options=options)
        usage = _resource_usage(compiled.asm["cubin"])
    except Exception as error:  # a failed compile is a result to report, not a crash of the whole build
        message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        return Record(config.name, arch, 0, 0, 0, False, message, time.perf_counter() - start)
    return Record(
        config.name,
        arch,
        usage["REG"],
        usage.get("STACK", 0) + usage.get("LOCAL", 0),
        usage.get("SHARED", 0) + compiled.metadata.shared,
        True,
        seconds=time.perf_counter() - start,
    )


def compile_configuration(config: Configuration, arch: int) -> Record:
    """Compile one configuration for ``sm_<arch>`` and read its resource usage; a failure is a record with
    ``ok=False``. In a worker process when this process's kernels are interpreted (see the module docstring)."""
    if _load_kernels().interpreting():
        return compile_all([config], [arch], processes=1)[0]
    return _compile_here(config, arch)


def compile_all(
    configs: Sequence[Configuration] | None = None,
    archs: Iterable[int] = (80, 90),
    processes: int | None = None,
) -> list[Record]:
    """Compile ``configs`` (default: :func:`configurations`) for each of ``archs``, in ``processes`` worker
    processes (default: one per core), and return the records in the order of ``archs`` then ``configs``."""
    configs = configurations() if configs is None else list(configs)
    jobs = [(config.to_json(), arch) for arch in archs for config in configs]
    processes = max(1, min(processes or os.cpu_count() or 1, len(jobs)))
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    # The package as this process sees it, installed or not (the workers import st_mnr_plus.losses.kernels).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "st_mnr_plus.losses.kernel_build", "--worker"]
    results: list[list[dict]] = []
    with contextlib.ExitStack() as stack:
        workers = []
        for index in range(processes):  # job i goes to worker i % processes: neighbours differ in cost
            # Files, not pipes, for the outputs: a worker never blocks on a full pipe that is read later.
            out, err = (stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True, env=env)
            worker.stdin.write(json.dumps(jobs[index::processes]))
            worker.stdin.close()
            workers.append((worker, out, err))
        for worker, out, err in workers:
            if worker.wait() != 0:
                err.seek(0)
                raise RuntimeError(f"a kernel compile worker failed (exit {worker.returncode}):\n{err.read()[-4000:]}")
            out.seek(0)
            results.append(json.loads(out.read()))
    ordered = [results[i % processes][i // processes] for i in range(len(jobs))]
    return [Record(**record) for record in ordered]


def problems(record: Record) -> list[str]:
    """What is wrong with a compiled configuration: a failed compile, spills (local memory), shared memory over
    the architecture's per-block limit, or more registers than a thread can address. Empty when it is fine."""
    if not record.ok:
        return [f"compilation failed: {record.message}"]
    found = []
    if record.local_bytes > 0:
        found.append(f"spills: {record.local_bytes} bytes of local memory per thread")
    limit = SHARED_MEMORY_LIMITS.get(record.arch)
    if limit is None:
        found.append(f"no shared-memory limit is known for sm_{record.arch}")
    elif record.shared_bytes > limit:
        found.append(f"{record.shared_bytes} bytes of shared memory, over sm_{record.arch}'s {limit} per block")
    if record.registers > MAX_REGISTERS:
        found.append(f"{record.registers} registers, over {MAX_REGISTERS}")
    return found


def _worker() -> None:
    """Compile the jobs read from stdin (JSON ``[[configuration, arch], ...]``), print the records as JSON."""
    jobs = json.loads(sys.stdin.read())
    records = [asdict(_compile_here(Configuration.from_json(config), arch)) for config, arch in jobs]
    sys.stdout.write(json.dumps(records))


def check(archs: Sequence[int], processes: int | None = None, write=None) -> int:
    """Compile every configuration for each of ``archs``, write one line per configuration (its resources, and
    ``<--`` with what is wrong) and a total; return the number of configurations with a problem."""
    write = write or sys.stdout.write
    start = time.perf_counter()
    records = compile_all(archs=list(archs), processes=processes)
    bad = 0
    for record in records:
        found = problems(record)
        bad += bool(found)
        write(f"{record}\n" if not found else f"{record}  <-- {'; '.join(found)}\n")
    write(f"{len(records)} configurations in {time.perf_counter() - start:.1f} s, {bad} with problems\n")
    return bad


def _main(argv: Sequence[str]) -> int:
    if list(argv) == ["--worker"]:
        _worker()
        return 0
    import argparse

    parser = argparse.ArgumentParser(description="Compile the fused MNR kernels for named GPUs (no GPU needed).")
    parser.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (default: 80,90)")
    parser.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")
    args = parser.parse_args(argv)
    return 1 if check([int(arch) for arch in args.arch.split(",")], args.processes) else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
