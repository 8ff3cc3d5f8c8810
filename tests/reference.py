"""Naive references, one row at a time in float64: what the fast implementations are checked against.

Importable by tests and benchmarks as ``from tests.reference import ...``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor


def _similarity(x: Tensor, y: Tensor, similarity: str) -> Tensor:
    if similarity == "cos":
        return torch.dot(x, y) / (x.norm().clamp_min(1e-12) * y.norm().clamp_min(1e-12))
    if similarity == "dot":
        return torch.dot(x, y)
    raise ValueError(f"similarity must be 'cos' or 'dot', got {similarity!r}")


def reference_mnr_loss(
    queries: Tensor,
    docs: Sequence[Tensor],
    *,
    scale: float | Tensor = 20.0,
    similarity: str = "cos",
    directions: Sequence[str] = ("query_to_doc",),
    partition_mode: str = "joint",
    hardness_mode: str | None = None,
    hardness_strength: float = 0.0,
    hard_negatives: str = "shared",
    query_ids: Sequence[Hashable] | None = None,
    doc_ids: Sequence[Sequence[Hashable]] | None = None,
    false_negative_margin: float | None = None,
) -> Tensor:
    """MNRPlus's loss, written out entry by entry (and sentence-transformers' MNRL where the extras are off).

    Args:
        queries: ``(B, d)`` anchors.
        docs: Column tensors ``(B, d)``: the positives, then each hard-negative column.
        scale: Inverse temperature (a tensor that requires grad receives a gradient).
        similarity: ``"cos"`` or ``"dot"``.
        directions: Any of ``query_to_doc`` (required), ``query_to_query``, ``doc_to_query``, ``doc_to_doc``.
        partition_mode: ``"joint"`` (one softmax per row over all directions) or ``"per_direction"``.
        hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or ``"all_negatives"``.
        hardness_strength: ``alpha`` of the penalty ``alpha * stop_grad(sim)`` on the chosen negatives.
        hard_negatives: ``"shared"`` (every anchor sees every hard negative) or ``"own"``.
        query_ids: One id per query (e.g. its text); ``None`` disables duplicate masking.
        doc_ids: ``doc_ids[k][j]``: the id of ``docs[k][j]``; given together with ``query_ids``.
        false_negative_margin: Drop negatives whose similarity exceeds the row's positive similarity minus this.

    Returns:
        The scalar loss, differentiable with respect to the inputs.
    """
    B = queries.shape[0]
    n_cols = len(docs)
    alpha = hardness_strength if hardness_mode is not None else 0.0
    masking = query_ids is not None
    row_losses = []
    for i in range(B):
        anchor, positive = queries[i], docs[0][i]
        s_pos = _similarity(anchor, positive, similarity)
        threshold = None if false_negative_margin is None else s_pos.detach() - false_negative_margin

        def excluded(sim: Tensor, duplicate: bool, threshold: Tensor | None = threshold) -> bool:
            return duplicate or (threshold is not None and bool(sim.detach() > threshold))

        logits: dict[str, list[Tensor]] = {direction: [] for direction in directions}
        # query -> every document (positives, then each hard-negative column).
        for k in range(n_cols):
            for j in range(B):
                if hard_negatives == "own" and k >= 1 and j != i:
                    continue
                sim = _similarity(anchor, docs[k][j], similarity)
                is_positive = k == 0 and j == i
                if not is_positive and excluded(sim, masking and doc_ids[k][j] == doc_ids[0][i]):
                    continue
                penalised = {
                    None: False,
                    "in_batch_negatives": j != i,
                    "hard_negatives": j == i and k >= 1,
                    "all_negatives": not is_positive,
                }[hardness_mode]
                logit = scale * sim
                if penalised and alpha > 0:
                    logit = logit + alpha * sim.detach()
                logits["query_to_doc"].append(logit)
        if "query_to_query" in directions:
            for j in range(B):
                if j == i:
                    continue
                sim = _similarity(anchor, queries[j], similarity)
                if excluded(sim, masking and query_ids[j] == query_ids[i]):
                    continue
                logits["query_to_query"].append(scale * sim)
        if "doc_to_query" in directions:
            for j in range(B):
                sim = _similarity(queries[j], positive, similarity)
                if j != i and excluded(sim, masking and query_ids[j] == query_ids[i]):
                    continue
                logits["doc_to_query"].append(scale * sim)
        if "doc_to_doc" in directions:
            for k in range(n_cols):
                if hard_negatives == "own" and k >= 1:
                    continue
                for j in range(B):
                    if j == i:
                        continue
                    sim = _similarity(docs[k][j], positive, similarity)
                    if excluded(sim, masking and doc_ids[k][j] == doc_ids[0][i]):
                        continue
                    logits["doc_to_doc"].append(scale * sim)
        lse = {
            direction: torch.logsumexp(torch.stack(values), dim=0)
            if values
            else torch.tensor(float("-inf"), dtype=queries.dtype)
            for direction, values in logits.items()
        }
        if partition_mode == "joint":
            normaliser = torch.logsumexp(torch.stack(list(lse.values())), dim=0)
        else:
            normaliser = sum(lse.values()) / len(lse)
        row_losses.append(normaliser - scale * s_pos)
    return torch.stack(row_losses).mean()
