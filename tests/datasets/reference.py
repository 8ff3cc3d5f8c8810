"""Naive references for the NLI builder: plain loops over Python rows, no Arrow, no hashing."""

from __future__ import annotations

from collections.abc import Iterable


def reference_pairs(rows: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Distinct (premise, hypothesis) of entailment rows with non-blank texts, in order of first appearance."""
    out: dict[tuple[str, str], None] = {}
    for premise, hypothesis, label in rows:
        if label == "entailment" and premise.strip() and hypothesis.strip():
            out.setdefault((premise, hypothesis), None)
    return list(out)


def reference_triplets(rows: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Every (premise, entailment, contradiction) of the same premise, distinct hypotheses, non-blank texts."""
    groups: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
    for premise, hypothesis, label in rows:
        if label not in ("entailment", "contradiction") or not premise.strip() or not hypothesis.strip():
            continue
        ents, cons = groups.setdefault(premise, ({}, {}))
        (ents if label == "entailment" else cons).setdefault(hypothesis, None)
    return {(p, e, c) for p, (ents, cons) in groups.items() for e in ents for c in cons if e != c}
