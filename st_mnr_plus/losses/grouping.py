"""Length-grouped embedding of a batch's columns: each chunk padded only to its own longest text.

A padded batch is as wide as its longest text. With sentences of mixed length (NLI, STS: a median of 10-17
tokens, a batch maximum of 40-45 at 128 rows) most of the encoder's work is padding. Sorting the rows by length,
embedding them in chunks trimmed to each chunk's own longest text, and putting the embeddings back in the
batch's order gives the same embeddings (up to floating-point rounding: reductions over a shorter padded width
add the same terms in another order) for far fewer tokens. Unlike a gradient cache the chunks keep their
autograd graph, so the loss backpropagates through them as through one forward pass.

The helpers :func:`sorted_by_length` and :func:`inverse_permutation` are shared with
:class:`~st_mnr_plus.losses.CachedMNRPlus`, which sorts before its mini-batch split.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import _MERGING_DISABLED, embed_columns
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_TOKENS_PER_CHUNK",
    "chunk_ranges",
    "embed_columns_grouped",
    "inverse_permutation",
    "length_order",
    "sorted_by_length",
]

#: Padded tokens (rows x width) per encoder chunk; see :func:`embed_columns_grouped` for how it was chosen.
DEFAULT_MAX_TOKENS_PER_CHUNK = 1024


def length_order(features: dict[str, Any]) -> Tensor | None:
    """The permutation sorting ``features``' rows by decreasing token count (ties in batch order), or ``None``.

    ``None`` means the rows cannot be reordered safely: only padded text batches are, i.e. a 2-D
    ``attention_mask`` and every other tensor shaped like it or ``(rows,)``. Flattened inputs (``cu_seq_lens_q``,
    a StaticEmbedding's flat ``input_ids`` and ``offsets``), image or audio tensors and per-row Python lists are
    left alone rather than guessed at. Non-tensor values (``modality``, an ``int`` ``prompt_length``, a Router's
    ``task``) are per batch and travel unchanged.
    """
    if not _reorderable(features):
        return None
    return torch.argsort(features["attention_mask"].sum(dim=1), descending=True, stable=True)


def _reorderable(features: dict[str, Any]) -> bool:
    """Whether ``features``' rows can be reordered safely (see :func:`length_order`); shapes only, no data read."""
    mask = features.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.ndim != 2 or "cu_seq_lens_q" in features:
        return False
    rows = mask.shape[0]
    for value in features.values():
        if isinstance(value, Tensor) and value.shape not in (mask.shape, (rows,)):
            return False
        if isinstance(value, (list, tuple)) and len(value) == rows:
            return False
    return True


def sorted_by_length(features: dict[str, Any]) -> tuple[dict[str, Any], Tensor | None]:
    """``features`` with its rows sorted by decreasing token count, and the order (``None``: left as it is).

    The order is ``None`` both when the rows cannot be reordered (see :func:`length_order`) and when they are
    already sorted.
    """
    order = length_order(features)
    if order is None or bool((order == torch.arange(order.numel(), device=order.device)).all()):
        return features, None
    return {key: value[order] if isinstance(value, Tensor) else value for key, value in features.items()}, order


def inverse_permutation(order: Tensor) -> Tensor:
    """``inverse`` such that ``sorted[inverse]`` puts the rows of ``sorted = x[order]`` back in ``x``'s order."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return inverse


def chunk_ranges(lengths: list[int], max_tokens_per_chunk: int) -> list[tuple[int, int]]:
    """Split rows sorted by decreasing length into ``(begin, end)`` chunks of at most ``max_tokens_per_chunk``
    padded tokens each (rows x the chunk's first, longest, length); a row longer than the budget gets a chunk
    of its own.
    """
    ranges: list[tuple[int, int]] = []
    begin, rows = 0, len(lengths)
    while begin < rows:
        width = max(int(lengths[begin]), 1)
        end = min(rows, begin + max(1, max_tokens_per_chunk // width))
        ranges.append((begin, end))
        begin = end
    return ranges


def _pooled(features_list: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The columns' rows as one padded batch (right-padded with zeros to the widest column), or ``None``.

    Pooling lets texts of every column share the chunks, so that each length class fills its chunks (two
    columns of 128 rows sort as one pool of 256). Only columns with the same keys, the same per-batch values
    (``modality``, ``prompt_length``, a Router's ``task``: a column embedded otherwise cannot share a forward) and
    integer tensors of the same dtype pool; sentence-transformers' ``merge_feature_batches`` pads the same way,
    with zeros that the attention mask marks as padding.
    """
    first = features_list[0]
    if any(set(features) != set(first) for features in features_list[1:]):
        return None
    width = max(features["attention_mask"].shape[1] for features in features_list)
    pooled: dict[str, Any] = {}
    for key, value in first.items():
        values = [features[key] for features in features_list]
        if isinstance(value, Tensor):
            if value.is_floating_point() or any(v.dtype != value.dtype or v.ndim != value.ndim for v in values):
                return None
            if value.ndim == 2:
                values = [F.pad(v, (0, width - v.shape[1])) for v in values]
            pooled[key] = torch.cat(values)
            continue
        try:
            if any(isinstance(v, Tensor) or v != value for v in values[1:]):
                return None
        except (RuntimeError, ValueError, TypeError):  # values that do not compare as one bool (arrays)
            return None
        pooled[key] = value
    return pooled


def _embed_grouped(
    model: nn.Module, features: dict[str, Any], order: Tensor, lengths: list[int], max_tokens: int
) -> Tensor:
    """Embed a batch in length-sorted, trimmed chunks; the embeddings in the batch's own row order.

    ``order`` sorts the rows by decreasing token count, ``lengths`` are those counts in that order (on the host).
    """
    ordered = {key: value[order] if isinstance(value, Tensor) else value for key, value in features.items()}
    chunks = [
        model(_trimmed_rows(ordered, begin, end, max(lengths[begin], 1)))["sentence_embedding"]
        for begin, end in chunk_ranges(lengths, max_tokens)
    ]
    embeddings = torch.cat(chunks)  # (rows, dim), sorted
    return embeddings[inverse_permutation(order.to(embeddings.device))]


def _trimmed_rows(features: dict[str, Any], begin: int, end: int, width: int) -> dict[str, Any]:
    """Rows ``begin:end`` of right-padded, length-sorted ``features``, cut to ``width`` token positions (the
    chunk's longest text: the columns after it are padding in every row of the chunk)."""
    rows = features["attention_mask"].shape
    chunk: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, Tensor):
            value = value[begin:end, :width] if value.shape == rows else value[begin:end]
        chunk[key] = value
    return chunk


def _padded_tokens(lengths: list[int], max_tokens: int) -> int:
    """Tokens (padding included) the chunks of rows with these sorted ``lengths`` hold: the encoder's work."""
    return sum((end - begin) * max(lengths[begin], 1) for begin, end in chunk_ranges(lengths, max_tokens))


def _on_host(tensors: list[Tensor]) -> list[list[int]]:
    """The 1-D integer ``tensors`` as Python lists, copied in one go: one wait for the device, not one each."""
    values = torch.cat(tensors).tolist()
    starts = list(itertools.accumulate((t.numel() for t in tensors), initial=0))
    return [values[begin:end] for begin, end in itertools.pairwise(starts)]


def embed_columns_grouped(
    model: nn.Module,
    sentence_features: Iterable[dict[str, Any]],
    *,
    max_tokens_per_chunk: int | None = None,
) -> list[Tensor]:
    """Embed the columns like sentence-transformers' ``embed_columns``, in length-sorted trimmed chunks.

    The rows of all columns are pooled, sorted by token count and embedded in chunks of at most
    ``max_tokens_per_chunk`` padded tokens, each chunk trimmed to its own longest text; the embeddings come back
    per column in the batch's row order, with the autograd graph of every chunk. Where pooling would pad more
    tokens than sorting each column on its own (a small batch of one long and one short column), or where the
    columns cannot share a forward (different keys or prompts, another Router ``task``), each column is grouped
    on its own. Either way no chunk holds more padded tokens than ``embed_columns``' forwards would. Loss and gradients equal those
    of ``embed_columns`` up to floating-point rounding (the encoder's reductions run over a shorter padded width
    and the weight gradients sum over other chunks), not bit for bit; dropout draws its masks per chunk, so with
    dropout the two agree in distribution, not draw for draw.

    The chunk rule, a budget of padded tokens (rows x width) rather than a number of rows, keeps every encoder
    call about the same size: short texts go in many at a time, long ones few. The rule and its default
    (:data:`DEFAULT_MAX_TOKENS_PER_CHUNK`, 1,024 tokens: 64 rows of 16 tokens, 8 of 128) were chosen by
    measurement on all-MiniLM-L6-v2 on CPU (``benchmarks/README.md``): smaller budgets leave less padding and on
    a CPU the encoder's time follows its padded tokens; larger ones make fewer, larger calls.

    Falls back to ``embed_columns`` unchanged (same forwards, same dropout draws) when any column cannot be
    grouped or grouping cannot save anything: flattened inputs (a StaticEmbedding's ``input_ids`` + ``offsets``,
    ``cu_seq_lens_q`` from unpadded attention), image/audio features, per-row lists, left-padded text, a column
    of one row, or inside ``column_merging_disabled()`` (wrapper losses such as AdaptiveLayerLoss that pass state
    through the per-column feature dicts).

    Args:
        model: The SentenceTransformer model (anything called as ``model(features)["sentence_embedding"]``).
        sentence_features: One tokenized feature dict per column, as the trainer passes them to the loss.
        max_tokens_per_chunk: Padded tokens (rows x width) per encoder call; a longer single text gets a call
            of its own. ``None``: :data:`DEFAULT_MAX_TOKENS_PER_CHUNK`.

    Returns:
        One ``(rows, dim)`` embedding tensor per column.

    Raises:
        ValueError: If ``max_tokens_per_chunk`` is not a positive integer.
    """
    if max_tokens_per_chunk is None:
        max_tokens_per_chunk = DEFAULT_MAX_TOKENS_PER_CHUNK
    if isinstance(max_tokens_per_chunk, bool) or not isinstance(max_tokens_per_chunk, int) or max_tokens_per_chunk < 1:
        raise ValueError(f"max_tokens_per_chunk must be a positive integer, got {max_tokens_per_chunk!r}")
    features_list = list(sentence_features)
    if (
        _MERGING_DISABLED.get()
        or not features_list
        or not all(_reorderable(features) and features["attention_mask"].shape[0] > 1 for features in features_list)
    ):
        return embed_columns(model, features_list)
    masks = [features["attention_mask"] for features in features_list]
    counts = [mask.sum(dim=1).to(torch.int64) for mask in masks]
    # Pool the columns when that pads fewer tokens than grouping each on its own: a pooled chunk is as wide as its
    # longest row whichever column it comes from, so a small batch of a long and a short column can lose. The
    # pool's rows are the columns' rows, so its token counts are theirs, concatenated.
    pooled = _pooled(features_list) if len(features_list) > 1 else None
    if pooled is not None and not _reorderable(pooled):
        pooled = None
    if pooled is not None:
        counts.append(torch.cat(counts))
    orders = [torch.argsort(count, descending=True, stable=True) for count in counts]
    # Whether each column's rows all start with a real token (right padding: trimming the trailing padding is what
    # grouping saves), read in the same copy to the host as the sorted counts.
    first_tokens = torch.stack([(mask[:, 0] != 0).all() for mask in masks]).to(torch.int64)
    *lengths, right_padded = _on_host(
        [*(count[order] for count, order in zip(counts, orders, strict=True)), first_tokens]
    )
    if not all(right_padded):
        return embed_columns(model, features_list)
    columns = len(features_list)
    if pooled is not None:
        separate = sum(_padded_tokens(column, max_tokens_per_chunk) for column in lengths[:columns])
        if _padded_tokens(lengths[columns], max_tokens_per_chunk) <= separate:
            embeddings = _embed_grouped(model, pooled, orders[columns], lengths[columns], max_tokens_per_chunk)
            return list(embeddings.split([mask.shape[0] for mask in masks]))  # (rows, dim) per column
    return [
        _embed_grouped(model, features, order, column, max_tokens_per_chunk)
        for features, order, column in zip(features_list, orders[:columns], lengths[:columns], strict=True)
    ]
