"""Row identities for duplicate masking: equal inputs -> equal int64, whatever the padding.

A row is identified by everything the model reads from it: its token ids (only those under the attention mask, by
their position among the kept tokens, so left or right padding to any width gives the same hash), and every other
per-row tensor of the features (pixel values, token type ids, audio frames...), compared exactly. Comparing inputs
rather than embeddings is what makes duplicate masking immune to dropout. The hashes are stable across processes
(no salted ``hash()``), so they can be gathered across ranks.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import Tensor

__all__ = ["UnidentifiableRowsError", "column_ids", "row_hashes"]

# Two 31-bit polynomial hashes modulo primes below 2**31, combined into one non-negative int64. Every product
# stays below 2**62, so int64 arithmetic never overflows.
_P1, _P2 = 2_147_483_629, 2_147_483_587
_R1, _R2 = 1_000_003, 998_244_353
_MASK63 = 0x3FFF_FFFF_FFFF_FFFF
# Features that describe the layout of the others rather than content of their own.
_LAYOUT_KEYS = frozenset({"attention_mask", "offsets"})
# Column-level metadata that sentence-transformers may put next to the inputs.
_METADATA_KEYS = frozenset({"prompt_length"})
# Bit patterns of floating-point values, compared exactly.
_BIT_VIEWS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


class UnidentifiableRowsError(ValueError):
    """The features do not tell which inputs belong to which row (so duplicates cannot be found)."""


@cache
def _powers(length: int, base: int, prime: int, device: torch.device) -> Tensor:
    powers = [1] * max(length, 1)
    for i in range(1, length):
        powers[i] = powers[i - 1] * base % prime
    return torch.tensor(powers, dtype=torch.int64, device=device)


def _poly_hash(values: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """``(rows, k)`` int64 values, 0/1 mask and 0-based positions among the kept entries -> ``(rows,)`` int64."""
    width = values.shape[1]
    values = values % _P1 + 1  # + 1 so that a value of 0 still counts
    out = []
    for base, prime in ((_R1, _P1), (_R2, _P2)):
        powers = _powers(width, base, prime, values.device)[positions.clamp(min=0, max=max(width - 1, 0))]
        # A sum of at most `width` terms below 2**31 each cannot overflow int64 for any realistic width.
        out.append(((values % prime) * powers % prime * mask).sum(dim=1) % prime)
    # The number of kept entries is folded in, so sequences that differ only by trailing zero terms differ.
    return (out[0] * _P2 + out[1] + mask.sum(dim=1) * 0x9E3779B1) & _MASK63


def _as_int64(value: Tensor) -> Tensor:
    """Exact integer codes of a tensor's entries: integers as they are, floats by their bit patterns."""
    if value.is_complex():
        value = torch.view_as_real(value)
    if value.is_floating_point():
        value = value.contiguous().view(_BIT_VIEWS.get(value.dtype, torch.int64))
    return value.to(torch.int64)


def _stable_code(text: str) -> int:
    """A 62-bit code of ``text`` that is the same in every process (unlike the salted ``hash()``)."""
    data = text.encode("utf-8")
    return ((zlib.crc32(data) << 31) ^ zlib.adler32(data)) & _MASK63


def _rows_of(features: Mapping[str, Any]) -> int:
    """The number of rows: from the token tensors when there are any (as sentence-transformers counts them)."""
    input_ids = features.get("input_ids")
    if isinstance(input_ids, Tensor) and input_ids.ndim == 1:
        offsets = features.get("offsets")
        if not isinstance(offsets, Tensor) or offsets.ndim != 1:
            raise UnidentifiableRowsError(
                "1-D input_ids need a 1-D 'offsets' tensor (the EmbeddingBag layout of a StaticEmbedding)"
            )
        return offsets.numel()
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, Tensor) and value.ndim >= 2:
            return value.shape[0]
    counts = {key: v.shape[0] for key, v in features.items() if _is_per_row_candidate(key, v)}
    if not counts:
        raise UnidentifiableRowsError(f"the features hold no per-row tensor (keys: {sorted(features)})")
    if len(set(counts.values())) > 1:
        raise UnidentifiableRowsError(f"the features' tensors disagree on the number of rows: {counts}")
    return next(iter(counts.values()))


def _is_per_row_candidate(key: str, value: Any) -> bool:
    # prompt_length is batch metadata in sentence-transformers (an int or a 1-element tensor), never content.
    return isinstance(value, Tensor) and value.ndim >= 1 and key not in _METADATA_KEYS


def _flat_token_hash(features: Mapping[str, Any]) -> Tensor:
    """``StaticEmbedding`` inputs: one flat ``input_ids`` stream cut into rows at ``offsets``."""
    input_ids, offsets = features["input_ids"], features["offsets"]
    rows = offsets.numel()
    ends = torch.cat([offsets[1:], offsets.new_tensor([input_ids.numel()])])
    lengths = (ends - offsets).to(torch.int64)
    width = int(lengths.max()) if rows else 0
    positions = torch.arange(width, device=input_ids.device).expand(rows, width)
    mask = (positions < lengths[:, None]).to(torch.int64)
    index = (offsets[:, None].to(torch.int64) + positions).clamp(max=max(input_ids.numel() - 1, 0))
    ids = input_ids[index].to(torch.int64) if input_ids.numel() else torch.zeros_like(index)
    return _poly_hash(ids, mask, positions)


def _tensor_hash(value: Tensor, rows: int, token_mask: Tensor | None) -> Tensor:
    """``(rows,)`` hash of one feature: padding-invariant for token-level tensors, exact for the rest."""
    if token_mask is not None and value.shape == token_mask.shape:
        positions = token_mask.cumsum(dim=1) - 1
        return _poly_hash(_as_int64(value), token_mask, positions)
    flat = _as_int64(value.reshape(rows, -1))
    width = flat.shape[1]
    positions = torch.arange(width, device=flat.device).expand(rows, width)
    return _poly_hash(flat, torch.ones_like(flat), positions)


def row_hashes(features: Mapping[str, Any]) -> Tensor:
    """One int64 per row of a column's features, equal for rows whose inputs are equal.

    Every per-row tensor counts (token ids, token type ids, pixel values, ...); token-level tensors only where the
    ``attention_mask`` keeps them, so any padding gives the same hash. Column-level metadata that is not a per-row
    tensor (a prompt length, a task name) is the same for every row and is left out; per-row strings are hashed.
    Use it to build the ``row_ids`` of :meth:`MNRPlus.compute_loss_from_embeddings
    <st_mnr_plus.losses.MNRPlus.compute_loss_from_embeddings>`.

    Args:
        features: A column as the model's ``tokenize``/``preprocess`` returns it: 2-D ``input_ids`` with an optional
            ``attention_mask``, 1-D ``input_ids`` with ``offsets`` (``StaticEmbedding``), image or audio tensors, or
            a mix.

    Returns:
        ``(rows,)`` non-negative int64 tensor on the device of the features.

    Raises:
        UnidentifiableRowsError: (a ``ValueError``) the features do not say which inputs belong to which row: no
            per-row tensor, tensors that disagree on the number of rows (e.g. image patches flattened across rows),
            a per-row Python list of objects, or a malformed ``attention_mask``.
    """
    if not isinstance(features, Mapping):
        raise UnidentifiableRowsError(f"features must be a mapping of name -> tensor, got {type(features).__name__}")
    rows = _rows_of(features)
    input_ids = features.get("input_ids")
    if isinstance(input_ids, Tensor) and input_ids.ndim == 1:
        return _flat_token_hash(features)
    token_mask = None
    if isinstance(input_ids, Tensor) and input_ids.ndim == 2:
        mask = features.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        elif not isinstance(mask, Tensor) or mask.shape != input_ids.shape:
            raise UnidentifiableRowsError(
                f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        token_mask = (mask != 0).to(torch.int64)
    codes: list[Tensor] = []
    device = next(v.device for v in features.values() if isinstance(v, Tensor))
    for key in sorted(features):
        value = features[key]
        if key in _LAYOUT_KEYS or key in _METADATA_KEYS:
            continue
        if isinstance(value, Tensor):
            if value.ndim == 0:
                continue  # column-level, the same for every row
            if value.shape[0] != rows:
                raise UnidentifiableRowsError(
                    f"feature {key!r} has {value.shape[0]} entries for {rows} rows (e.g. image patches flattened "
                    "across rows): its entries cannot be told apart by row"
                )
            part = _tensor_hash(value, rows, token_mask)
        elif isinstance(value, list | tuple) and len(value) == rows and rows > 0:
            if not all(isinstance(item, str) for item in value):
                raise UnidentifiableRowsError(
                    f"feature {key!r} is a per-row list of {type(value[0]).__name__}, which cannot be compared"
                )
            part = torch.tensor([_stable_code(item) for item in value], dtype=torch.int64, device=device)
        else:
            continue  # column-level metadata
        codes.append(torch.full((rows,), _stable_code(key), dtype=torch.int64, device=device))
        codes.append(part)
    if not codes:
        raise UnidentifiableRowsError(f"the features hold no per-row input (keys: {sorted(features)})")
    combined = torch.stack(codes, dim=1)  # (rows, 2 * features)
    width = combined.shape[1]
    positions = torch.arange(width, device=device).expand(rows, width)
    return _poly_hash(combined, torch.ones_like(combined), positions)


def column_ids(
    sentence_features: list[Mapping[str, Any]], rank: int = 0
) -> tuple[list[Tensor], dict[int, UnidentifiableRowsError]]:
    """One ``(rows,)`` int64 identity per column, and the error of each column that could not be identified.

    A column :func:`row_hashes` rejects gets identities that match nothing, negative numbers unique per ``rank``,
    column and row, so that none of its rows is masked as a duplicate (MNRL's behaviour for it).
    """
    ids: list[Tensor] = []
    failures: dict[int, UnidentifiableRowsError] = {}
    for k, features in enumerate(sentence_features):
        try:
            ids.append(row_hashes(features))
        except UnidentifiableRowsError as exc:
            failures[k] = exc
            rows = _batch_rows(features)
            first = -1 - (rank * len(sentence_features) + k) * rows
            device = next((v.device for v in features.values() if isinstance(v, Tensor)), None)
            ids.append(torch.arange(first, first - rows, -1, device=device))
    return ids, failures


def _batch_rows(features: Mapping[str, Any]) -> int:
    """The rows of a column that cannot be identified: from its token tensors, its offsets, or its first tensor."""
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, Tensor) and value.ndim == 2:
            return value.shape[0]
    offsets = features.get("offsets")
    if isinstance(offsets, Tensor):
        return offsets.numel()
    return next(v.shape[0] for v in features.values() if isinstance(v, Tensor) and v.ndim > 0)
