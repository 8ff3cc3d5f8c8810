"""A roofline estimate (not a measurement) of one forward + backward of the MNR loss on a GPU, under bf16 autocast.

For sentence-transformers' MultipleNegativesRankingLoss (MNRL) and MNRPlus's GPU path (``backend="triton"``:
row chunks, cuBLAS products, element-wise Triton kernels), at B in {1,024, 16,384, 65,536} and d in {384, 768,
1024, 4096} (query_to_doc, no hard negative: B x B logits), it adds up the time of each product and of the
element-wise passes on an H100 and an A100. Run::

    python benchmarks/roofline.py          # prints the markdown table of benchmarks/README.md

What is counted, not assumed (``st_mnr_plus.bench.trace`` on this machine's CPU, run by this script first):

- **Matrix products**: 3 for both (MNRL: counted by ``FlopCounterMode``; ours: the same count, equal to
  ``kernel_config.cost``, in ``tests/losses/test_gpu_path.py``), ``2 * B^2 * d`` FLOPs each.
- **Element-wise bytes per logit**: traced under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with float32
  embeddings, the ``B x B`` part alone (``trace.bytes_per_logit``, B = 128 and 256): every op's inputs and
  outputs for MNRL, the kernels' loads and stores for ours (Triton's interpreter). CPU autocast keeps the same
  ops in bf16 as CUDA's for this loss except where noted in benchmarks/README.md; the issue's op trace of CUDA
  autocast found more (about 90 bytes per logit), so MNRL's figure here is the lower one.
- **Peak extra memory**: MNRL's is measured (``trace.peak_bytes``: what the call allocates, alive at once) at B =
  512 and 1,024 (d = 16) and at d = 16 and 64 (B = 512), and extrapolated as ``a * B^2 + b * B * d``; ours is
  its model: the chunk's float32 similarities (G written over them), float32 gradients and 16-bit operands of
  every row (``4 + 2`` bytes a feature) and the projection's float32 rows (4,096 at a time), which
  ``tests/losses/test_gpu_path.py`` checks against the same measurement.

The time of a product is the larger of its FLOPs at 65% of the tensor-core peak and the bytes it reads and
writes at 90% of the memory bandwidth: MNRL's products write or read a ``B x B`` bf16 matrix; ours write the
chunk's float32 similarities, read its 16-bit ``G``, and the ``G^T X`` product reads and writes the float32
gradient of every candidate once per chunk (``8 * B * d`` bytes per chunk: what makes small chunks slow at
large d). Element-wise passes run at 90% of the bandwidth. Peak figures (dense) from NVIDIA's data sheets:
A100 SXM4 80 GB: BF16 312 TFLOPS, HBM2e 2,039 GB/s; H100 SXM5: BF16 989 TFLOPS, HBM3 3,350 GB/s.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: trace the GPU path on this CPU

import torch

from st_mnr_plus.losses import kernel_config

SIZES = (1024, 16384, 65536)
DIMS = (384, 768, 1024, 4096)
GPUS = {"A100": {"bf16": 312e12, "bandwidth": 2039e9}, "H100": {"bf16": 989e12, "bandwidth": 3350e9}}
COMPUTE, BANDWIDTH = 0.65, 0.90


def traced() -> dict[str, float]:
    """MNRL's and the GPU path's element-wise bytes per logit, and MNRL's peak memory per logit, on this CPU."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from st_mnr_plus.bench.trace import bytes_per_logit, peak_bytes
    from st_mnr_plus.losses import MNRPlus

    def embeddings(batch: int, dim: int = 16) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(batch, dim, generator=gen).requires_grad_() for _ in range(2)]

    def step(loss, dim: int = 16):
        def at(batch: int) -> None:
            inputs = embeddings(batch, dim)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = loss.compute_loss_from_embeddings(inputs, None)
            value.backward()

        return at

    mnrl = MultipleNegativesRankingLoss(None)
    ours = MNRPlus(None, backend="triton", mask_duplicates=False)
    # MNRL's peak: a * B^2 + b * B * d; a from B = 512 and 1,024 at d = 16, b from d = 16 and 64 at B = 512.
    small, large, wide = (peak_bytes(lambda b=b, d=d: step(mnrl, d)(b)) for b, d in ((512, 16), (1024, 16), (512, 64)))
    per_feature = (wide - small) / (512 * 48)
    return {
        "mnrl_bytes": bytes_per_logit(step(mnrl)),
        "ours_bytes": bytes_per_logit(step(ours)),
        "mnrl_memory": (large - 2 * small) / (2 * 512**2),
        "mnrl_memory_per_feature": per_feature,
    }


def _product(flops: float, io: float, gpu: str) -> float:
    peak = GPUS[gpu]
    return max(flops / (COMPUTE * peak["bf16"]), io / (BANDWIDTH * peak["bandwidth"]))


def mnrl(batch: int, dim: int, figures: dict[str, float], gpu: str) -> tuple[float, float]:
    """(seconds, peak extra bytes) of MNRL: three products over a bf16 B x B matrix, then its traced passes."""
    logits, flops = batch * batch, 2 * batch * batch * dim
    operands = 2 * batch * dim * 2
    seconds = _product(flops, operands + 2 * logits, gpu) + 2 * _product(flops, operands + 2 * logits, gpu)
    seconds += figures["mnrl_bytes"] * logits / (BANDWIDTH * GPUS[gpu]["bandwidth"])
    return seconds, figures["mnrl_memory"] * logits + figures["mnrl_memory_per_feature"] * batch * dim


def ours(batch: int, dim: int, figures: dict[str, float], gpu: str) -> tuple[float, float]:
    """(seconds, peak extra bytes) of the GPU path: per chunk of R rows, S = X Y^T (writes R x B float32), G Y
    and G^T X (read G; the latter reads and writes the candidates' float32 gradient), and the kernels."""
    rows = kernel_config.chunk_rows(batch, batch * 4)
    seconds = 0.0
    for r0 in range(0, batch, rows):
        r = min(rows, batch - r0)
        flops = 2 * r * batch * dim
        seconds += _product(flops, (r + batch) * dim * 2 + 4 * r * batch, gpu)  # S = X Y^T
        seconds += _product(flops, 2 * r * batch + batch * dim * 2 + 8 * r * dim, gpu)  # grad_X += G Y
        seconds += _product(flops, 2 * r * batch + r * dim * 2 + 8 * batch * dim, gpu)  # grad_Y += G^T X
    seconds += figures["ours_bytes"] * batch * batch / (BANDWIDTH * GPUS[gpu]["bandwidth"])
    # The chunk, float32 gradients and 16-bit operands of both sides and the projection's 4,096 float32 rows at a
    # time: the bound tests/losses/test_gpu_path.py checks against peak_bytes (pairs: the module passes the
    # positives on without the copy MNRL's torch.cat makes).
    memory = min(rows, batch) * batch * 4 + 2 * batch * dim * (4 + 2) + min(4096, 2 * batch) * dim * 4
    return seconds, memory


def table(figures: dict[str, float] | None = None) -> str:
    figures = figures or traced()
    lines = [
        f"Traced on this CPU: element-wise bytes per logit, MNRL {figures['mnrl_bytes']:.1f}, GPU path "
        f"{figures['ours_bytes']:.1f}; MNRL's peak memory {figures['mnrl_memory']:.1f} bytes per logit and "
        f"{figures['mnrl_memory_per_feature']:.1f} per feature of each anchor.",
        "",
        "| B | d | MNRL H100 | ours H100 | ratio | MNRL A100 | ours A100 | ratio | MNRL memory | ours memory | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in SIZES:
        for dim in DIMS:
            cells = []
            for gpu in ("H100", "A100"):
                (theirs, their_memory), (mine, my_memory) = (model(batch, dim, figures, gpu) for model in (mnrl, ours))
                cells += [f"{theirs * 1e3:,.2f} ms", f"{mine * 1e3:,.2f} ms", f"{mine / theirs:.2f}"]
            cells += [f"{their_memory / 2**30:,.2f} GiB", f"{my_memory / 2**30:,.2f} GiB",
                      f"{my_memory / their_memory:.3f}"]  # fmt: skip
            lines.append(f"| {batch:,} | {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
