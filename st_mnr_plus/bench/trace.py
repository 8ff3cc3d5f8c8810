"""Counting a loss's work on a CPU, as a GPU would run it: matrix products and element-wise bytes.

:class:`OpTrace` runs a forward and backward under two counters:

- **products**: ``torch.utils.flop_counter.FlopCounterMode`` for PyTorch's matmuls (``mm``, ``addmm``, ``bmm``,
  the ``einsum`` they come from), split into matrix products and row-wise ones (``M == 1`` or ``N == 1``: a dot
  product per row, O(B d)), plus every ``tl.dot`` Triton's interpreter executes (``2 * M * N * K`` each, counted
  by wrapping ``InterpreterBuilder.create_dot``);
- **element-wise bytes**: every other PyTorch op's tensor inputs and outputs (a view, ``empty`` and the metadata
  ops move nothing; an in-place op reads and writes its tensor), plus what Triton's interpreter loads and stores
  (only the elements a mask lets through: ``create_load`` / ``create_masked_load`` / ``create_store`` /
  ``create_masked_store``). Ops inside one of the GPU path's products (:func:`st_mnr_plus.losses.chunked.
  in_product`: on a CPU the float32 copies that emulate a 16-bit cuBLAS call with float32 output) count as the
  product's, not as element-wise passes.

Divided by the logits, these are the figures ``benchmarks/roofline.py`` reads and the tests bound: MNRL's
element-wise passes over its ``B x B`` matrices against the GPU path's kernels. The interpreter must be on
(``TRITON_INTERPRET=1`` before triton is imported) for the kernels' bytes to be seen.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["OpTrace", "bytes_per_logit", "peak_bytes", "trace"]

# Ops that move no data: views, allocation without a write, metadata.
_FREE = {
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::new_empty",
    "aten::new_empty_strided",
    "aten::detach",
    "aten::lift_fresh",
    "aten::alias",
    "aten::_local_scalar_dense",
    "aten::sym_size",
    "aten::sym_stride",
    "aten::sym_numel",
    "aten::is_same_size",
    "aten::set_",
}
_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::_scaled_mm"}


def _tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors in an op's arguments or results (nested tuples, lists and dicts)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def _in_product() -> bool:
    try:
        from st_mnr_plus.losses.chunked import in_product
    except ImportError:  # triton missing: the GPU path cannot run, so nothing is inside its products
        return False
    return in_product()


def _row_wise_flops(name: str, args: tuple) -> int:
    """FLOPs of a product that is row-wise (a matrix-vector or dot product per row: ``M == 1`` or ``N == 1``), 0
    for a matrix product. ``einsum("rd,rd->r")`` and ``einsum("rd,krd->rk")`` reach ``bmm`` this way."""
    tensors = _tensors(args)
    a, b = (tensors[-2], tensors[-1]) if name in ("aten::addmm", "aten::baddbmm") else (tensors[0], tensors[1])
    if a.ndim < 2 or b.ndim < 2:
        return 0
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = a.numel() // (m * k) if m * k else 0
    return 2 * batch * m * k * n if (m == 1 or n == 1) else 0


class _Bytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self.row_wise_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if name in _PRODUCTS:
            self.row_wise_flops += _row_wise_flops(name, args)
            return out
        if name in _FREE or func.is_view or _in_product() or _in_launch():
            return out
        moved = sum(t.numel() * t.element_size() for t in _tensors((args, kwargs)) + _tensors(out))
        self.by_op[name] += moved
        return out


class OpTrace:
    """What one call moved and multiplied: ``product_flops`` (matrix products: every ``M x K x N`` product with ``M``
    and ``N`` above 1), ``row_wise_flops`` (products of one row or column: dot products of matching rows, each
    anchor against its own hard negatives), ``kernel_dot_flops`` (the interpreter's ``tl.dot``),
    ``elementwise_bytes`` (torch ops), ``kernel_bytes`` (the interpreter's loads and stores) and ``by_op`` (bytes by
    torch op name)."""

    def __init__(self) -> None:
        self.product_flops = 0
        self.row_wise_flops = 0
        self.kernel_dot_flops = 0
        self.elementwise_bytes = 0
        self.kernel_bytes = 0
        self.by_op: Counter[str] = Counter()

    @property
    def flops(self) -> int:
        return self.product_flops + self.kernel_dot_flops

    @property
    def bytes(self) -> int:
        return self.elementwise_bytes + self.kernel_bytes

    def per_logit(self, logits: int) -> float:
        return self.bytes / logits


_LAUNCH = threading.local()


def _in_launch() -> bool:
    """Inside an interpreted kernel launch: the interpreter copies the arguments to host arrays and back, work a
    GPU launch does not do (its loads and stores are counted instead)."""
    return getattr(_LAUNCH, "depth", 0) > 0


def _interpreter_hooks(trace: OpTrace) -> list[tuple[Any, str, Any]]:
    """Wrap the interpreter's launch, dot, load and store (restored by the caller); nothing if triton is missing."""
    try:
        from triton.runtime.interpreter import GridExecutor, InterpreterBuilder
    except ImportError:
        return []
    saved = [(GridExecutor, "__call__", GridExecutor.__call__)]

    def launch(self, *args, _original=GridExecutor.__call__, **kwargs):
        _LAUNCH.depth = getattr(_LAUNCH, "depth", 0) + 1
        try:
            return _original(self, *args, **kwargs)
        finally:
            _LAUNCH.depth -= 1

    GridExecutor.__call__ = launch

    def wrap(name: str, count: Callable[..., None]) -> None:
        original = getattr(InterpreterBuilder, name)

        def wrapped(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            count(result, *args)
            return result

        saved.append((InterpreterBuilder, name, original))
        setattr(InterpreterBuilder, name, wrapped)

    def dot(result, a, b, *_):
        m, k = a.data.shape[-2:]
        trace.kernel_dot_flops += 2 * m * k * b.data.shape[-1] * max(1, a.data.size // (m * k))

    def load(result, ptrs, *_):
        trace.kernel_bytes += result.data.size * result.data.itemsize  # a scalar load: size 1

    def masked_load(result, ptrs, mask, *_):
        trace.kernel_bytes += int(mask.data.sum()) * result.data.itemsize

    def store(result, ptrs, value, *_):
        trace.kernel_bytes += value.data.size * value.data.itemsize

    def masked_store(result, ptrs, value, mask, *_):
        trace.kernel_bytes += int(mask.data.sum()) * value.data.itemsize

    wrap("create_dot", dot)
    wrap("create_load", load)
    wrap("create_masked_load", masked_load)
    wrap("create_store", store)
    wrap("create_masked_store", masked_store)
    return saved


def trace(fn: Callable[[], Any]) -> OpTrace:
    """Run ``fn`` (a forward and backward) and count its products and element-wise bytes (:class:`OpTrace`)."""
    result = OpTrace()
    saved = _interpreter_hooks(result)
    try:
        flops = FlopCounterMode(display=False)
        bytes_mode = _Bytes()
        with flops, bytes_mode:
            fn()
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
    result.row_wise_flops = bytes_mode.row_wise_flops
    result.product_flops = flops.get_total_flops() - result.row_wise_flops
    result.by_op = bytes_mode.by_op
    result.elementwise_bytes = sum(bytes_mode.by_op.values())
    return result


def bytes_per_logit(run: Callable[[int], Any], batch: int = 128, columns: int = 1) -> float:
    """Element-wise bytes per logit of ``run(B)`` (a forward and backward at batch ``B``), its ``B x B`` part
    alone: traced at ``batch`` and ``2 * batch``, ``bytes = a * B^2 + b * B`` gives ``a = (bytes(2B) - 2 *
    bytes(B)) / (2 B^2)``, so the per-row work (normalising, projecting, per-row vectors: what no longer counts at
    B = 16,384) drops out. ``columns``: candidate columns per row (``1 + n``), to count per logit."""
    small, large = (trace(lambda size=size: run(size)).bytes for size in (batch, 2 * batch))
    return (large - 2 * small) / (2 * batch * batch * columns)


class _Live(TorchDispatchMode):
    """Bytes of the storages that the ops' outputs hold, alive at once: their peak (a CPU stand-in for
    ``torch.cuda.max_memory_allocated``, counting what the traced ops allocate, not the inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, int] = {}  # storage address -> tensors holding it
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if not self.holders[key]:
            self.live -= self.sizes.pop(key)
            del self.holders[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if _in_launch() or func.is_view or name in _FREE or (_in_product() and name == "aten::_to_copy"):
            return out  # views of what exists; a CPU's float32 copies of a 16-bit product's operands
        for tensor in _tensors(out):
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if not key or not storage.nbytes():
                continue
            if key not in self.holders:
                self.holders[key], self.sizes[key] = 0, storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.holders[key] += 1
            weakref.finalize(tensor, self._release, key)
        return out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """The peak of the bytes held at once by what ``fn`` allocates (its inputs excluded)."""
    mode = _Live()
    with mode:
        fn()
    return mode.peak
