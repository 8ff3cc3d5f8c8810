"""Where each row goes: duplicate-free batches of given sizes, and which rows each epoch places.

* :func:`place_rows` splits a set of rows into duplicate-free batches of given sizes: a random permutation is cut
  into batches, rows that collide with an earlier row of their batch are taken out with one sort, and a short
  randomised repair loop (:class:`_Repair`, proportional to the number of collisions, not to the data) puts them
  back, moving one row at a time (cuckoo-style kicks) when no batch with room takes them directly.
* :class:`Rotation` decides which rows an epoch places in the regular batches when not all of them fit (a text
  held by more rows than there are batches, or only full batches wanted): least recently placed first, so the
  rows left over change from epoch to epoch with a bound on how long any row waits; :class:`EpochLayouts` keeps
  every epoch's batches the same sizes.

The rows' shared values come from :mod:`st_mnr_plus.sampler.index` (a :class:`DuplicateIndex`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from st_mnr_plus.sampler.index import DuplicateIndex

logger = logging.getLogger(__name__)

# Random holes, then random slots, probed before a row counts one failed repair attempt.
_HOLE_PROBES = 8
_SLOT_PROBES = 16


# ---------------------------------------------------------------------------------------------------- placement


def regular_sizes(num_rows: int, batch_size: int) -> np.ndarray:
    """Sizes of ``num_rows`` rows cut into batches of ``batch_size``: all full but the last."""
    full, rest = divmod(num_rows, batch_size)
    return np.array([batch_size] * full + ([rest] if rest else []), dtype=np.int64)


def balanced_sizes(num_rows: int, num_batches: int) -> np.ndarray:
    """Sizes of ``num_rows`` rows spread over ``num_batches`` batches, differing by at most one."""
    if num_batches == 0:
        return np.zeros(0, dtype=np.int64)
    size, rest = divmod(num_rows, num_batches)
    return np.array([size + 1] * rest + [size] * (num_batches - rest), dtype=np.int64)


@dataclass
class Placement:
    """Rows laid out in batches: batch ``b`` is ``slots[starts[b] : starts[b + 1]]``.

    Attributes:
        slots: Flat ``int32`` row ids, batch after batch.
        sizes: ``int64`` size of each batch.
        unplaced: Rows the repair loop could not place within its budget (empty on success; ``slots`` then holds
            ``-1`` where they belong and is not a valid layout).
    """

    slots: np.ndarray
    sizes: np.ndarray
    unplaced: np.ndarray

    @property
    def ok(self) -> bool:
        return len(self.unplaced) == 0

    def batches(self) -> list[np.ndarray]:
        """The batches, in order."""
        return np.split(self.slots, np.cumsum(self.sizes)[:-1]) if len(self.sizes) else []


def _colliding_rows(index: DuplicateIndex, batch_of: np.ndarray) -> np.ndarray:
    """Rows that share a text with an earlier-listed row of their batch (one per collision; sorted, unique)."""
    entry_batch = batch_of[index.text_rows].astype(np.int64)
    live = np.flatnonzero(entry_batch >= 0)
    entry_text = np.repeat(np.arange(index.num_texts, dtype=np.int64), index.text_counts)[live]
    keys = entry_batch[live] * index.num_texts + entry_text
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = order[1:][sorted_keys[1:] == sorted_keys[:-1]]
    return np.unique(index.text_rows[live[repeated]]) if len(repeated) else np.empty(0, dtype=np.int64)


def place_rows(
    index: DuplicateIndex,
    rows: np.ndarray,
    sizes: np.ndarray,
    rng: np.random.Generator,
    budget_per_row: int = 16,
    budget_base: int = 256,
) -> Placement:
    """Lay ``rows`` out in batches of ``sizes`` with no text twice in a batch.

    The layout starts from a random permutation, so it is a uniformly shuffled epoch wherever no duplicate
    interferes.

    Args:
        index: The duplicated texts of the dataset.
        rows: The row ids to place (each once).
        sizes: The size of each batch; they sum to ``len(rows)``.
        rng: The source of randomness; the result is a pure function of its state.
        budget_per_row: Repair attempts allowed per colliding row before giving up...
        budget_base: ...plus this many.

    Returns:
        The :class:`Placement`. If the repair loop ran out of budget, ``unplaced`` holds the rows left over.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if int(sizes.sum()) != len(rows):
        raise ValueError(f"batch sizes sum to {int(sizes.sum())}, not to the {len(rows)} rows to place")
    # int32: half the memory of int64 for the shuffle's random accesses (the same permutation either way).
    slots = rng.permutation(np.asarray(rows).astype(np.int32, copy=False))
    done = np.empty(0, dtype=np.int64)
    if len(slots) == 0 or index.num_texts == 0:
        return Placement(slots, sizes, done)
    slot_batch = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    batch_of = np.full(index.num_rows, -1, dtype=np.int32)
    batch_of[slots] = slot_batch
    evicted = _colliding_rows(index, batch_of)
    if len(evicted) == 0:
        return Placement(slots, sizes, done)
    repair = _Repair(index, slots, sizes, slot_batch, batch_of, rng)
    unplaced = repair.run(evicted, budget_per_row * len(evicted) + budget_base)
    return Placement(slots, sizes, unplaced)


class _Repair:
    """The repair loop of :func:`place_rows`: puts evicted rows back into duplicate-free batches.

    ``slots`` holds ``-1`` at a hole (an evicted row's old slot); ``batch_of[row]`` is the batch of a placed row,
    ``-1`` for a row waiting in the queue. Every move keeps both in step, through :meth:`_move_in`.
    """

    def __init__(
        self,
        index: DuplicateIndex,
        slots: np.ndarray,
        sizes: np.ndarray,
        slot_batch: np.ndarray,
        batch_of: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.index, self.slots, self.slot_batch, self.batch_of, self.rng = index, slots, slot_batch, batch_of, rng
        self.starts = np.concatenate(([0], np.cumsum(sizes)))
        self.queue: deque[int] = deque()
        self.holes: list[int] = []
        self.hole_at: dict[int, int] = {}

    def run(self, evicted: np.ndarray, budget: int) -> np.ndarray:
        """Evict ``evicted`` and place them back; the rows still waiting when ``budget`` attempts are spent."""
        is_evicted = np.zeros(self.index.num_rows, dtype=bool)
        is_evicted[evicted] = True
        self.holes = np.flatnonzero(is_evicted[self.slots]).tolist()
        self.hole_at = {slot: i for i, slot in enumerate(self.holes)}
        self.slots[self.holes] = -1
        self.batch_of[evicted] = -1
        self.queue = deque(self.rng.permutation(evicted).tolist())
        while self.queue:
            if budget <= 0:
                return np.asarray(list(self.queue), dtype=np.int64)
            row = self.queue.pop()
            neighbours = self.index.neighbours(row)
            neighbour_batches = self.batch_of[neighbours]
            slot = self._free_hole(neighbour_batches)
            if slot < 0:
                slot = self._swappable_slot(neighbours, neighbour_batches)
            if slot < 0:
                slot = self._targeted_slot(neighbours, neighbour_batches)
            if slot >= 0:
                self._move_in(slot, row)
            else:
                self.queue.appendleft(row)
            budget -= 1
        return np.empty(0, dtype=np.int64)

    def _move_in(self, slot: int, row: int) -> None:
        """Put ``row`` at ``slot``: a hole is filled, an occupant goes back to the queue."""
        occupant = int(self.slots[slot])
        if occupant == -1:
            i = self.hole_at.pop(slot)
            last = self.holes.pop()
            if last != slot:
                self.holes[i] = last
                self.hole_at[last] = i
        else:
            self.batch_of[occupant] = -1
            self.queue.append(occupant)
        self.slots[slot] = row
        self.batch_of[row] = self.slot_batch[slot]

    def _free_hole(self, neighbour_batches: np.ndarray) -> int:
        """A hole (of a few random ones) in a batch that shares no text with the row, or -1."""
        holes = self.holes
        if len(holes) > _HOLE_PROBES:
            holes = [holes[i] for i in self.rng.integers(len(holes), size=_HOLE_PROBES)]
        for slot in holes:
            if not np.any(neighbour_batches == self.slot_batch[slot]):
                return slot
        return -1

    def _swappable_slot(self, neighbours: np.ndarray, neighbour_batches: np.ndarray) -> int:
        """A random slot whose batch collides with the row at most through the slot's own row, or -1."""
        for slot in self.rng.integers(len(self.slots), size=_SLOT_PROBES).tolist():
            clashing = neighbours[neighbour_batches == self.slot_batch[slot]]
            if len(clashing) == 0 or np.all(clashing == self.slots[slot]):
                return slot
        return -1

    def _targeted_slot(self, neighbours: np.ndarray, neighbour_batches: np.ndarray) -> int:
        """Dense case: a slot found by looking at every batch, or -1 if no batch is one move away.

        Prefers, in order: a hole in a batch the row shares no text with; any slot of such a batch; the slot of
        the only row a batch shares texts with.
        """
        rng, slots, starts = self.rng, self.slots, self.starts
        placed = neighbour_batches >= 0
        clashing_rows, first = np.unique(neighbours[placed], return_index=True)
        clashing_batches = neighbour_batches[placed][first]
        per_batch = np.bincount(clashing_batches, minlength=len(starts) - 1)
        free = np.flatnonzero(per_batch == 0)
        if len(free):
            hole_slots = np.flatnonzero(slots == -1)
            hole_slots = hole_slots[per_batch[self.slot_batch[hole_slots]] == 0]
            if len(hole_slots):
                return int(hole_slots[rng.integers(len(hole_slots))])
            batch = int(free[rng.integers(len(free))])
            return int(starts[batch] + rng.integers(starts[batch + 1] - starts[batch]))
        single = np.flatnonzero(per_batch == 1)
        if len(single):
            batch = int(single[rng.integers(len(single))])
            row = clashing_rows[clashing_batches == batch][0]
            return int(starts[batch] + np.flatnonzero(slots[starts[batch] : starts[batch + 1]] == row)[0])
        return -1


def shuffle_layout(slots: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A valid layout, reshuffled: the rows inside every batch, and the batches among those of the same size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    slot_batch = np.repeat(np.arange(len(sizes)), sizes)
    within = slots[np.lexsort((rng.random(len(slots)), slot_batch))]
    batches = np.split(within, np.cumsum(sizes)[:-1]) if len(sizes) else []
    order = np.arange(len(sizes))
    for size in np.unique(sizes):
        same = np.flatnonzero(sizes == size)
        order[same] = rng.permutation(same)
    return np.concatenate([batches[b] for b in order]) if batches else slots.copy()


# ----------------------------------------------------------------------------------------------------- rotation


def guaranteed_rows(index: DuplicateIndex, capacity: int) -> int:
    """Rows that :class:`Rotation` always keeps with at most ``capacity`` rows per text (for a non-empty index).

    A row is left out only when one of its texts already has ``capacity`` rows kept, so a text ``t`` held by
    ``c_t > capacity`` rows leaves out at most ``c_t - capacity`` of them; at least one row is always kept.
    """
    surplus = int(np.maximum(index.text_counts - capacity, 0).sum())
    return min(index.num_rows, max(1, index.num_rows - surplus))


def plan_batches(index: DuplicateIndex, batch_size: int, partial: bool, max_rows: int) -> tuple[int, int]:
    """``(num_batches, num_rows)`` of the regular batches: the most rows that fit with no text twice in a batch.

    A text can be in at most one row per batch, so a text held by more rows than there are batches leaves some
    out, which can lower the number of batches, and so on: this iterates to the fixed point. ``partial`` allows a
    last short batch (else every batch is full). ``max_rows`` caps the rows (construction lowers it when a
    layout cannot be repaired).
    """

    def batches(rows: int) -> int:
        return -(-rows // batch_size) if partial else rows // batch_size

    num_batches = batches(max_rows)
    while True:
        rows = min(max_rows, guaranteed_rows(index, num_batches)) if num_batches else 0
        fewer = batches(rows)
        if fewer >= num_batches:
            break
        num_batches = fewer
    return num_batches, (rows if partial else num_batches * batch_size)


class Rotation:
    """Which rows each epoch keeps for its regular batches, when not all rows can be kept.

    Rows wait in a queue, least recently kept first (ties in the order of a random permutation drawn from the
    seed). An epoch walks the queue and keeps a row unless one of its over-full texts (held by more rows than
    ``capacity``, the number of batches) already has ``capacity`` rows kept, and stops at ``keep`` rows. The rows
    the epoch yields then move to the back of the queue, in order (:meth:`advance`).

    **Bound.** While a row ``r`` waits, no row behind it overtakes it, and in every epoch that leaves it out,
    either ``capacity`` rows of one of its over-full texts ``t`` ahead of it are kept (which can happen at most
    ``(c_t - 1) // capacity`` times) or ``keep`` rows ahead of it are (at most ``(num_rows - 1) // keep`` times,
    and only when more than ``keep`` rows are admissible). :attr:`max_epochs_left_out` is the largest such sum
    over the rows: no row is left out more epochs in a row, not counting epochs that yield another set than the
    one selected here (a fallback layout), which only delay the queue by one epoch each.
    """

    def __init__(self, index: DuplicateIndex, capacity: int, keep: int, start: np.ndarray) -> None:
        self.num_rows, self.capacity, self.keep = index.num_rows, capacity, keep
        self.start = np.asarray(start, dtype=np.int32)
        """The queue of epoch 0."""
        over = index.text_counts > capacity
        texts = index.row_texts
        # Indexed by text id, with one more entry for the id -1 (no duplicated text) at the end.
        held = np.append(over, False)[texts]
        per_row = held.sum(axis=1)
        self._constrained = per_row > 0
        self._multi = bool((per_row > 1).any())
        self._texts = np.where(held, texts, -1)  # (num_rows, num_columns) over-full texts, -1 elsewhere
        # Exact: every admissible row is kept, so only rows of over-full texts are ever left out.
        self.exact = not self._multi and keep == guaranteed_rows(index, capacity)
        waits = np.append(np.where(over, (index.text_counts - 1) // max(capacity, 1), 0), 0)
        blocked = int(waits[texts].sum(axis=1).max(initial=0))
        cut = 0 if self.exact or keep == 0 else (self.num_rows - 1) // keep
        self.max_epochs_left_out: int | None = blocked + cut
        """The most consecutive epochs any row can be left out (``None`` when no row is ever kept)."""
        if keep >= self.num_rows:
            self.max_epochs_left_out = 0
        elif keep == 0:
            self.max_epochs_left_out = None

    @property
    def rotates(self) -> bool:
        """Whether some rows are left out of the regular batches (else every epoch keeps every row)."""
        return self.keep < self.num_rows

    def select(self, queue: np.ndarray) -> np.ndarray:
        """The rows an epoch with this ``queue`` keeps, sorted (a layout depends on the set, not on its order)."""
        if not self.rotates:
            return np.arange(self.num_rows, dtype=np.int32)
        admissible = np.ones(len(queue), dtype=bool)
        positions = np.flatnonzero(self._constrained[queue])
        if len(positions):
            admissible[positions] = self._admit(queue[positions])
        mask = np.zeros(self.num_rows, dtype=bool)
        mask[queue[np.flatnonzero(admissible)[: self.keep]]] = True
        return np.flatnonzero(mask).astype(np.int32)

    def advance(self, queue: np.ndarray, yielded: np.ndarray) -> np.ndarray:
        """The next epoch's queue: the rows ``yielded`` move to the back, each part keeping its order."""
        moved = np.zeros(self.num_rows, dtype=bool)
        moved[yielded] = True
        moved = moved[queue]
        return np.concatenate([queue[~moved], queue[moved]])

    def _admit(self, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` (constrained rows, in queue order) fit under the capacity of their over-full texts."""
        texts = self._texts[rows]
        if not self._multi:
            # One over-full text per row: a row is admitted when fewer than `capacity` rows of its text precede it.
            text = texts.max(axis=1)
            by_text = np.argsort(text, kind="stable")
            counts = np.bincount(text)
            rank = np.empty(len(rows), dtype=np.int64)
            rank[by_text] = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            return rank < self.capacity
        used: dict[int, int] = {}
        admitted = np.zeros(len(rows), dtype=bool)
        for i, row_texts in enumerate(texts.tolist()):
            mine = [t for t in row_texts if t >= 0]
            if all(used.get(t, 0) < self.capacity for t in mine):
                admitted[i] = True
                for t in mine:
                    used[t] = used.get(t, 0) + 1
        return admitted

    def max_left_counts(self, index: DuplicateIndex) -> np.ndarray:
        """``(num_texts,)`` the most rows of each text that any epoch can leave out of the regular batches."""
        if not self.exact:
            return index.text_counts
        # Only constrained rows are ever left out, and each over-full text leaves out exactly its surplus.
        counts = index.text_counts_in(np.flatnonzero(self._constrained))
        over = index.text_counts > self.capacity
        counts[over] = index.text_counts[over] - self.capacity
        return counts


# ------------------------------------------------------------------------------------------------------ epochs

# Offset of the construction-time random stream, so that it never equals an epoch's stream ``seed + epoch``.
_CONSTRUCTION_STREAM = 0x5EED_CAFE
# Layouts an epoch draws (each with a fresh repair budget) before it falls back to the construction's.
_EPOCH_TRIES = 3


class EpochLayouts:
    """The batches of every epoch, all with the same sizes, so that a sampler's length is exact.

    The shape is decided at construction: ``regular_sizes`` (full batches of ``batch_size``, the last one short
    when ``partial``) for the rows :class:`Rotation` keeps, then, when ``extra``, ``extra_sizes`` (smaller
    batches) for the rows left over, so that every row is in every epoch. Epoch ``e`` draws its own layout from
    PCG64 seeded with ``seed + e``; if three draws in a row run out of repair budget, it falls back to the layout
    drawn at construction, reshuffled (batches and the rows inside them), which has the same shape.

    Which rows an epoch keeps depends on what the epochs before it yielded (:class:`Rotation`'s queue), so the
    queue is carried from epoch to epoch, and replayed from epoch 0 when an earlier epoch is asked for (a
    resumed run): every process, and every resumed run, gets the same batches for the same epoch.

    Args:
        index: The duplicated texts of the dataset.
        batch_size: Rows per (global) batch.
        partial: Allow short batches (the last regular one, and the extra ones).
        extra: Place the rows left over in extra batches (needs ``partial``); else they are left out.
        seed: The seed of every random choice.
    """

    def __init__(self, index: DuplicateIndex, batch_size: int, *, partial: bool, extra: bool, seed: int) -> None:
        self.index, self.batch_size, self.seed = index, batch_size, seed
        rng = np.random.default_rng([seed, _CONSTRUCTION_STREAM])
        start = rng.permutation(index.num_rows).astype(np.int32)
        # The first try of each part uses epoch 0's own stream, as a draw of epoch 0 would: if it succeeds, epoch 0
        # reuses the construction's layout.
        stream, own = self.epoch_rng(0), True
        max_rows = index.num_rows
        while True:
            num_batches, num_rows = plan_batches(index, batch_size, partial, max_rows)
            self.rotation = Rotation(index, num_batches, num_rows, start)
            kept = self.rotation.select(start)
            self.regular_sizes = regular_sizes(num_rows, batch_size)
            level = place_rows(index, kept, self.regular_sizes, stream)
            if level.ok:
                break
            stream, own, max_rows = rng, False, num_rows - len(level.unplaced)
        parts = [level.slots]
        self.extra_sizes = np.zeros(0, dtype=np.int64)
        left = self._left_over(kept)
        if extra and len(left):
            counts = self.rotation.max_left_counts(index)
            num_extra = min(len(left), max(-(-len(left) // batch_size), int(counts.max(initial=0))))
            while True:
                self.extra_sizes = balanced_sizes(len(left), num_extra)
                extras = place_rows(index, left, self.extra_sizes, stream)
                if extras.ok:
                    break
                stream, own = rng, False
                num_extra = min(len(left), num_extra + len(extras.unplaced))
            parts.append(extras.slots)
        self.sizes = np.concatenate([self.regular_sizes, self.extra_sizes])
        self.starts = np.concatenate(([0], np.cumsum(self.sizes)))
        self._kept = kept
        self._fallback = np.concatenate(parts)
        self._epoch_zero = self._fallback if own else None
        self._queues = {0: start}  # the queue at the start of the epochs last drawn, and of the next one

    @property
    def num_rows(self) -> int:
        """Rows every epoch yields."""
        return int(self.starts[-1])

    def epoch_rng(self, epoch: int) -> np.random.Generator:
        """The random stream of ``epoch``'s layout: PCG64 seeded with ``seed + epoch``."""
        return np.random.default_rng(self.seed + epoch)

    def first(self) -> np.ndarray:
        """Epoch 0's layout if construction drew it, else the construction layout: what epoch 0 most likely is."""
        return self._epoch_zero if self._epoch_zero is not None else self._fallback

    def draw(self, epoch: int) -> tuple[np.ndarray, bool]:
        """``(slots, own)``: epoch ``epoch``'s layout, and whether it is its own (``False``: the fallback)."""
        queue = self._queue(epoch)
        slots, own, yielded = self._draw(epoch, queue)
        if self.rotation.rotates:
            self._queues = {epoch: queue, epoch + 1: self.rotation.advance(queue, yielded)}
        return slots, own

    def _queue(self, epoch: int) -> np.ndarray:
        """Rotation's queue at the start of ``epoch``, carried on from the nearest earlier epoch known."""
        if not self.rotation.rotates or epoch in self._queues:
            return self._queues.get(epoch, self.rotation.start)
        known = max([e for e in self._queues if e < epoch], default=0)
        queue = self._queues.get(known, self.rotation.start)
        for e in range(known, epoch):
            queue = self.rotation.advance(queue, self._draw(e, queue)[2])
        return queue

    def _draw(self, epoch: int, queue: np.ndarray) -> tuple[np.ndarray, bool, np.ndarray]:
        """``(slots, own, kept)`` of ``epoch``: its layout, whether it is its own, the rows of its regular batches."""
        if epoch == 0 and self._epoch_zero is not None:
            return self._epoch_zero, True, self._kept
        rng = self.epoch_rng(epoch)
        kept = self.rotation.select(queue)
        for _ in range(_EPOCH_TRIES):
            parts = [place_rows(self.index, kept, self.regular_sizes, rng)]
            if parts[0].ok and len(self.extra_sizes):
                parts.append(place_rows(self.index, self._left_over(kept), self.extra_sizes, rng))
            if all(part.ok for part in parts):
                return np.concatenate([part.slots for part in parts]), True, kept
        return shuffle_layout(self._fallback, self.sizes, rng), False, self._kept

    def _left_over(self, kept: np.ndarray) -> np.ndarray:
        """The rows not in ``kept``, sorted."""
        mask = np.ones(self.index.num_rows, dtype=bool)
        mask[kept] = False
        return np.flatnonzero(mask).astype(np.int32)
