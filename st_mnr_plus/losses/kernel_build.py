"""Ahead-of-time compilation of the GPU path's Triton kernels for named GPUs, on a machine without one.

:func:`configurations` lists every combination of kernel, ``constexpr`` values, warps and dtype that the
launchers of :mod:`.kernels` can launch; :func:`compile_configuration` compiles one for a compute capability with
``triton.compile`` (the ``ptxas`` that ships in the triton wheel: no driver, no GPU) and reads what the cubin
uses with the wheel's ``cuobjdump`` (``--dump-resource-usage``, and ``-sass`` for the kind of matrix instruction:
:func:`mma_kind`); :func:`problems` says what is wrong with a :class:`Record`. ``st-mnr-plus kernels --arch
80,90`` prints one line per configuration, its MMA kind included.

Since the GPU path runs its matrix products on cuBLAS, every kernel here is element-wise: each must compile to no
MMA instruction at all, and a kernel that did products in Triton (:data:`PRODUCT_KERNELS`, empty today) would
have to run its 16-bit products as HGMMA on sm_90. Each configuration is compiled for the specialisation that
production inputs get: every pointer 16-byte aligned (a chunk's sliced vectors that are not compile the same code
again at run time with narrower loads); the integer arguments are never specialised (``kernels._RUNTIME_INTS``).

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
    "mma_kind",
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

# Triton's type of each kernel argument that is not a constexpr ("{dtype}": the products' element type, which only
# the gradient of the logits, G, is stored in).
_ARGUMENT_TYPES = {
    "S": "*fp32",
    "OWN_SIM": "*fp32",
    "G": "*{dtype}",
    "OWN_P": "*fp32",
    "PSIM": "*fp32",
    "IDS": "*i64",
    "COLUMN_IDS": "*i64",
    "THRESHOLD": "*fp32",
    "COLUMN_THRESHOLD": "*fp32",
    "NORM": "*fp32",
    "COLUMN_NORM": "*fp32",
    "SCALE": "*fp32",
    "LSE": "*fp32",
    "HARDEST": "*fp32",
    "MASKED": "*i32",
    "DUPLICATES": "*i32",
    "stride": "i32",
    "g_stride": "i32",
    "row0": "i32",
    "rows": "i32",
    "ncols": "i32",
    "world": "i32",
    "n_own": "i32",
    "alpha": "fp32",
    "PENALTY": "i32",
}
#: The kernels whose matrix products run in Triton (``tl.dot``), which must run on the tensor cores: none since
#: the GPU path moved its products to cuBLAS. A kernel listed here is checked for HGMMA on sm_90 (16-bit).
PRODUCT_KERNELS: frozenset[str] = frozenset()
#: The dtypes a kernel's stores depend on: only ``probabilities`` writes G in the products' dtype.
_DTYPE_KERNELS = {"probabilities"}


def _load_kernels() -> ModuleType:
    """:mod:`.kernels`, imported here (in a worker: without the interpreter, so its kernels compile)."""
    return importlib.import_module("st_mnr_plus.losses.kernels")


@dataclass(frozen=True)
class Configuration:
    """One compiled variant: a kernel of :data:`kernels.KERNELS` with its constexprs and launch options."""

    kernel: str
    dtype: str  # the products' element type: "fp32", "bf16" or "fp16"
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    num_stages: int = 3

    @property
    def name(self) -> str:
        values = " ".join(f"{k}={v}" for k, v in self.constexprs)
        return f"{self.kernel}[{self.dtype} {values} warps={self.num_warps}]"

    @property
    def products(self) -> bool:
        """Whether this kernel does matrix products in Triton (:data:`PRODUCT_KERNELS`)."""
        return self.kernel in PRODUCT_KERNELS

    def to_json(self) -> dict:
        return {**asdict(self), "constexprs": [list(item) for item in self.constexprs]}

    @classmethod
    def from_json(cls, data: dict) -> Configuration:
        return cls(**{**data, "constexprs": tuple(tuple(item) for item in data["constexprs"])})


@dataclass(frozen=True)
class Record:
    """What one configuration costs on one architecture (``ok=False``: it did not compile; ``message`` says why).

    ``local_bytes`` is the per-thread local memory, stack frame included: register spills. ``shared_bytes`` is
    the static shared memory of the cubin plus the dynamic shared memory Triton launches it with. ``mma`` is the
    kind of matrix instruction its SASS holds: ``"HGMMA"`` (sm_90 warpgroup MMA), ``"HMMA"`` (``mma.sync``),
    ``"none"``. ``products``: the kernel's products run in Triton (the configuration's :attr:`~Configuration.
    products`). ``half``: its products' dtype is 16-bit.
    """

    name: str
    arch: int
    registers: int
    local_bytes: int
    shared_bytes: int
    ok: bool
    message: str = ""
    seconds: float = 0.0
    mma: str = "none"
    products: bool = False
    half: bool = False

    def __str__(self) -> str:
        if not self.ok:
            return f"sm_{self.arch} {self.name}: FAILED: {self.message}"
        return (
            f"sm_{self.arch} {self.name}: {self.registers} registers, {self.local_bytes} B local, "
            f"{self.shared_bytes} B shared, MMA {self.mma} ({self.seconds:.1f} s)"
        )


def configurations() -> list[Configuration]:
    """Every configuration the launchers can launch: each kernel of :data:`kernels.KERNELS` with the blocks of
    :data:`.kernel_config.ELEMENTWISE_BLOCKS`, for each products' dtype where the kernel stores in it, and with
    and without the column direction for ``probabilities``."""
    from st_mnr_plus.losses.kernel_config import ELEMENTWISE_BLOCKS

    found = []
    for name in _load_kernels().KERNELS:
        blocks = ELEMENTWISE_BLOCKS[name]
        sizes = {"BM": blocks.BM, "BN": blocks.BN}
        variants = [{**sizes, "COLUMNS": columns} for columns in (False, True)] if name == "probabilities" else [sizes]
        for dtype_name in _DTYPES if name in _DTYPE_KERNELS else ("fp32",):
            for constexprs in variants:
                found.append(Configuration(name, dtype_name, tuple(sorted(constexprs.items())), blocks.num_warps))
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
        if signature[arg].startswith("*"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def _tool(name: str) -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run(
            [_tool("cuobjdump"), *flags, str(path)], capture_output=True, text=True, check=True
        ).stdout


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED``, ``LOCAL``... of the cubin's kernel, from ``cuobjdump --dump-resource-usage``."""
    out = _cuobjdump(cubin, "--dump-resource-usage")
    lines = [line for line in out.splitlines() if "REG:" in line]
    if len(lines) != 1:
        raise RuntimeError(f"expected one kernel in cuobjdump's output, got:\n{out}")
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", lines[0])}


def mma_kind(sass: str) -> str:
    """The matrix instructions of a SASS listing: ``"HGMMA"`` (warpgroup MMA, sm_90), ``"HMMA"`` (``mma.sync``
    on the tensor cores) or ``"none"``; HGMMA wins where both appear."""
    if re.search(r"\bHGMMA\b", sass):
        return "HGMMA"
    if re.search(r"\bHMMA\b", sass):
        return "HMMA"
    return "none"


def _compile_here(config: Configuration, arch: int) -> Record:
    from triton.backends.compiler import GPUTarget

    start = time.perf_counter()
    flags = {"products": config.products, "half": config.dtype != "fp32"}
    try:
        kernels = _load_kernels()
        options = {"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": True}
        compiled = triton.compile(_source(config, kernels), target=GPUTarget("cuda", arch, 32), options=options)
        usage = _resource_usage(compiled.asm["cubin"])
        mma = mma_kind(_cuobjdump(compiled.asm["cubin"], "-sass"))
    except Exception as error:  # a failed compile is a result to report, not a crash of the whole build
        message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        return Record(config.name, arch, 0, 0, 0, False, message, time.perf_counter() - start, **flags)
    return Record(
        config.name,
        arch,
        usage["REG"],
        usage.get("STACK", 0) + usage.get("LOCAL", 0),
        usage.get("SHARED", 0) + compiled.metadata.shared,
        True,
        seconds=time.perf_counter() - start,
        mma=mma,
        **flags,
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
    the architecture's per-block limit, more registers than a thread can address, a 16-bit configuration whose
    products run on ``mma.sync`` alone on sm_90 (not warpgroup MMA), or matrix instructions in an element-wise
    kernel. Empty when it is fine."""
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
    if record.products and record.half and record.arch >= 90 and record.mma != "HGMMA":
        found.append(f"16-bit products on {record.mma}, not HGMMA, on sm_{record.arch}")
    if not record.products and record.mma != "none":
        found.append(f"{record.mma} instructions in an element-wise kernel")
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

    parser = argparse.ArgumentParser(
        description="Compile the GPU path's Triton kernels for named GPUs (no GPU needed)."
    )
    parser.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (default: 80,90)")
    parser.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")
    args = parser.parse_args(argv)
    return 1 if check([int(arch) for arch in args.arch.split(",")], args.processes) else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
