"""A roofline estimate (not a measurement) of one forward + backward of the MNR loss on a GPU, bf16 embeddings.

For sentence-transformers' MultipleNegativesRankingLoss (MNRL), MNRPlus's PyTorch tile path and its fused Triton
kernel, at B in {1,024, 16,384, 65,536} and d in {384, 768} (query_to_doc, no hard negative: C = B columns), it
counts the FLOPs and the bytes moved through GPU memory, and divides them by the peak figures of an A100 and an
H100: the larger quotient is a lower bound on the time, and says which limit binds. Run::

    python benchmarks/roofline.py          # prints the markdown table of benchmarks/README.md

How each is counted (``BC`` = B x C logits, ``b`` bytes per element):

- **MNRL** computes ``cos_sim`` in the embeddings' dtype (bf16: tensor cores) and materialises the B x C
  matrix: three products (the similarities; in backward, the gradients of both sides) = ``6 * BC * d`` FLOPs, and
  the element-wise passes over bf16 matrices: the product's output (write 2), the scale (read 2, write 2),
  log_softmax (read 2, write 2), its backward (read 4, write 2), the scale's backward (read 2, write 2), the two
  backward products reading the gradient (read 4): ``24 * BC`` bytes. Its peak extra memory holds about three
  B x C bf16 matrices.
- **The PyTorch tile path** computes in float32 whatever the input dtype (so its products run at the FP32 rate,
  or TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set): the same ``6 * BC * d`` FLOPs, and per logit
  about 22 float32 reads and writes (the product's output; scale and mask; the statistics; logsumexp's max,
  shift, exp and sum; the probabilities' shift, exp and weight; the two products reading them): ``88 * BC``
  bytes, through tiles of about 4M logits that never make a B x B matrix.
- **The fused kernel**: the FLOPs of every launch from :func:`st_mnr_plus.losses.kernel_config.cost` (the similarity
  tiles the backward recomputes included), for the block configuration the launchers pick. Its operands are
  re-read tile by tile, but programs that run at the same time stream the same column tiles, so most of those
  reads hit L2 (``cost()["bytes"]`` counts them all: the L2 traffic). The DRAM bytes here are each launch reading
  its inputs once and writing its outputs (the three launches of query_to_doc: ``6 * B * d * 2`` bytes of bf16
  operands, ``16 * B * d`` of float32 gradients read and written): a lower bound, as at B = 65,536 the
  candidates (100 MB at d = 768) no longer fit in L2 (40 MB on an A100, 50 MB on an H100) and each wave of
  programs reads them again.
- **Peak extra memory**: MNRL keeps about three B x C bf16 matrices (``6 * BC`` bytes); the PyTorch path a
  few tiles of about 4M float32 logits and float32 copies and gradients of the embeddings (about
  ``50 MB + 16 * (B + C) * d``); the kernel float32 copies and gradients of the embeddings (``16 * (B + C) *
  d``).

Peak figures (dense, no sparsity), from NVIDIA's data sheets: A100 SXM4 80 GB (NVIDIA A100 Tensor Core GPU data
sheet): BF16 312 TFLOPS, FP32 19.5 TFLOPS, TF32 156 TFLOPS, HBM2e 2,039 GB/s; H100 SXM5 (NVIDIA H100 Tensor Core
GPU data sheet): BF16 989 TFLOPS, FP32 67 TFLOPS, TF32 495 TFLOPS, HBM3 3,350 GB/s. Real kernels reach a fraction
of these (often 50-70% of the tensor-core peak), so read the ratios between the rows, not the times themselves.
"""

from __future__ import annotations

import torch

from st_mnr_plus.losses import kernel_config

SIZES = (1024, 16384, 65536)
DIMS = (384, 768)
GPUS = {
    "A100": {"bf16": 312e12, "fp32": 19.5e12, "tf32": 156e12, "bandwidth": 2039e9},
    "H100": {"bf16": 989e12, "fp32": 67e12, "tf32": 495e12, "bandwidth": 3350e9},
}


def mnrl(batch: int, dim: int) -> dict[str, float]:
    logits = batch * batch
    return {
        "flops": 6 * logits * dim,
        "bytes": 24 * logits + 6 * batch * dim * 2,
        "memory": 6 * logits,
        "rate": "bf16",
    }


def torch_path(batch: int, dim: int) -> dict[str, float]:
    logits = batch * batch
    return {
        "flops": 6 * logits * dim,
        "bytes": 88 * logits + 12 * batch * dim * 4,
        "memory": 50e6 + 16 * 2 * batch * dim,
        "rate": "fp32",
    }


def kernel(batch: int, dim: int) -> dict[str, float]:
    figures = kernel_config.cost(batch, 0, dim, torch.bfloat16)
    return {
        "flops": figures["flops"],
        "bytes": 6 * batch * dim * 2 + 16 * batch * dim,
        "l2_bytes": figures["bytes"],
        "memory": 16 * 2 * batch * dim,
        "rate": "bf16",
    }


def seconds(figures: dict[str, float], gpu: str) -> tuple[float, str]:
    """The roofline lower bound on the time, and which limit gives it."""
    peak = GPUS[gpu]
    compute, memory = figures["flops"] / peak[figures["rate"]], figures["bytes"] / peak["bandwidth"]
    return (compute, "compute") if compute >= memory else (memory, "memory")


def table() -> str:
    lines = [
        "| B | d | path | FLOPs | DRAM bytes | peak extra memory | A100 bound | H100 bound |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for batch in SIZES:
        for dim in DIMS:
            for name, model in (("MNRL", mnrl), ("PyTorch tiles (fp32)", torch_path), ("fused kernel", kernel)):
                figures = model(batch, dim)
                bounds = []
                for gpu in GPUS:
                    time, limit = seconds(figures, gpu)
                    bounds.append(f"{time * 1e3:,.2f} ms ({limit})")
                lines.append(
                    f"| {batch:,} | {dim} | {name} | {figures['flops']:.2e} | {figures['bytes']:.2e} | "
                    f"{figures['memory'] / 2**30:,.2f} GiB | {bounds[0]} | {bounds[1]} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
