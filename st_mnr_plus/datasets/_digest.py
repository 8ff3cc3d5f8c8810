"""Exact-duplicate detection in little memory: 128-bit digests of text tuples, kept in sorted numpy runs."""

from __future__ import annotations

import hashlib

import numpy as np


def keys2(first: list[str], second: list[str]) -> list[bytes]:
    """128-bit BLAKE2b digests of text pairs: exact-duplicate detection without keeping the texts."""
    blake = hashlib.blake2b
    # 0xff never occurs in UTF-8, so the separator keeps ("a", "bc") and ("ab", "c") apart.
    return [
        blake(a.encode() + b"\xff" + b.encode(), digest_size=16).digest() for a, b in zip(first, second, strict=True)
    ]


def keys3(first: list[str], second: list[str], third: list[str]) -> list[bytes]:
    blake = hashlib.blake2b
    return [
        blake(a.encode() + b"\xff" + b.encode() + b"\xff" + c.encode(), digest_size=16).digest()
        for a, b, c in zip(first, second, third, strict=True)
    ]


class DigestSet:
    """An exact set of 128-bit digests in sorted numpy runs: 16 bytes a key, where a Python set takes about 80.

    Keys are split into two 64-bit halves; runs are sorted by the first half (the second is compared on a hit)
    and merged when a run is no longer than twice the next, so there are O(log n) runs to search.
    """

    def __init__(self) -> None:
        self._hi: list[np.ndarray] = []
        self._lo: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._hi)

    @staticmethod
    def _halves(digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.frombuffer(b"".join(digests), dtype=np.uint64).reshape(len(digests), 2)
        return pairs[:, 0], pairs[:, 1]

    def _contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hi), dtype=bool)
        for run_hi, run_lo in zip(self._hi, self._lo, strict=True):
            left = np.searchsorted(run_hi, hi, "left")
            right = np.searchsorted(run_hi, hi, "right")
            hits = np.flatnonzero(right > left)
            if hits.size == 0:
                continue
            single = right[hits] - left[hits] == 1
            one = hits[single]
            found[one[run_lo[left[one]] == lo[one]]] = True
            for i in hits[~single]:  # keys sharing their first 64 bits: compare the second half of each
                if (run_lo[left[i] : right[i]] == lo[i]).any():
                    found[i] = True
        return found

    def contains(self, digests: list[bytes]) -> np.ndarray:
        """True for each digest in the set."""
        if not digests:
            return np.zeros(0, dtype=bool)
        return self._contains(*self._halves(digests))

    def add_new(self, digests: list[bytes]) -> np.ndarray:
        """Add the digests; True for each one neither in the set before nor earlier in ``digests``."""
        n = len(digests)
        if n == 0:
            return np.zeros(0, dtype=bool)
        hi, lo = self._halves(digests)
        new = ~self._contains(hi, lo)
        order = np.lexsort((lo, hi))  # stable: equal keys stay in input order, the first one leading
        repeat = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
        new[order[1:][repeat]] = False
        fresh = order[new[order]]
        if fresh.size:
            self._hi.append(hi[fresh])
            self._lo.append(lo[fresh])
            while len(self._hi) > 1 and len(self._hi[-2]) <= 2 * len(self._hi[-1]):
                merged_hi = np.concatenate(self._hi[-2:])
                merged_lo = np.concatenate(self._lo[-2:])
                by_hi = np.argsort(merged_hi, kind="stable")
                self._hi[-2:] = [merged_hi[by_hi]]
                self._lo[-2:] = [merged_lo[by_hi]]
        return new


__all__ = ["DigestSet", "keys2", "keys3"]
