"""METIS chip partition (``pymetis``) decided together with core packing.

1. METIS cuts the block graph into ``k`` chips, edge weights = spikes per step, vertex
   weights = the fraction of a core each block costs (`packing.effective_size`), with
   the imbalance allowed so that no chip is asked for more than its cores.
2. Each chip's blocks are packed onto cores, preferring cores they exchange traffic
   with.
3. A chip that still needs more cores than it has gives whole cores to the chip they
   talk to most that has room (`repair_overfull`).
Refinement (`strategies.refine`) then moves single blocks between chips.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import sys

import numpy as np
import pymetis
from scipy.optimize import linear_sum_assignment

import scipy.sparse as sp

from partitioner.packing import CoreBin, pack
from partitioner.strategies.common import (
    OUT_AXONS,
    ChipRoom,
    Packed,
    _Departure,
    _row_entries,
    _rows_of,
    interchip_spikes,
    pack_by_chip,
)

__all__ = ["metis_parts", "metis_adjacency", "repair_overfull", "chip_first", "core_first",
           "metis"]

#: METIS needs integer weights; sizes are scaled to this many units per core.
SIZE_UNITS = 1000
#: Chips are filled to at most this fraction of their cores, leaving room for packing.
TARGET_FILL = 0.95
#: `core_first` packs globally with traffic affinity, O(blocks x cores): only up to here.
CORE_FIRST_MAX_BLOCKS = 5_000
#: Imbalance allowed between chips when a plan spreads over every chip.
BALANCED = 0.05
#: `repair_overfull` tries to dissolve this many cores of the over-full chip at each
#: step (least attached first, skipping cores it failed to dissolve before).
DISSOLVE_TRIES = 4
#: Rows of a sparse matrix are read by joining their slices up to this many, with
#: arrays of every entry's position up to `MANY_ROWS`, else by indexing the matrix
#: (each the cheapest for its number of rows).
FEW_ROWS = 16
MANY_ROWS = 2048


def metis_adjacency(indptr, indices):
    """Keyword arguments giving `pymetis.part_graph` a graph in CSR form: a
    ``CSRAdjacency`` where pymetis has it (from 2025; it deprecates ``xadj`` and
    ``adjncy``), else ``xadj`` and ``adjncy``."""
    indptr, indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
    if hasattr(pymetis, "CSRAdjacency"):
        return {"adjacency": pymetis.CSRAdjacency(indptr, indices)}
    return {"xadj": indptr, "adjncy": indices}


def _integer_edge_weights(data):
    """Scale traffic to positive int32-safe METIS weights, keeping ratios."""
    if data.size == 0:
        return data.astype(np.int64)
    scale = min(1e6 / max(float(data.max()), 1e-12), 2**30 / max(float(data.sum()), 1e-12))
    return np.maximum(1, np.round(data * scale)).astype(np.int64)


def metis_parts(ctx, k):
    """Chip of every block from one METIS k-way cut (pins honoured).

    Returns
    -------
    (n_blocks,) int64 ndarray
    """
    return metis_call(ctx.traffic, ctx.sizes, k, ctx, ctx.pins, fill=TARGET_FILL)


def metis_call(traffic, sizes, k, ctx, pins, fill):
    """k-way METIS cut of ``traffic`` with vertex ``sizes`` in cores; pins honoured.

    METIS is not called when the answer is trivial (`_trivial_parts`), and the C
    library's messages to stdout are dropped (`_c_stdout_dropped`).
    """
    n = traffic.shape[0]
    if k == 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    trivial = _trivial_parts(traffic, sizes, k)
    if trivial is not None:
        return _apply_pins(trivial, pins, k)
    vweights = np.maximum(1, np.ceil(sizes * SIZE_UNITS)).astype(np.int64)
    per_chip = ctx.cores_per_chip * SIZE_UNITS * fill
    imbalance = per_chip * k / max(float(vweights.sum()), 1.0) - 1.0
    if ctx.spread:
        imbalance = min(imbalance, BALANCED)
    opts = pymetis.Options(seed=int(ctx.seed), ufactor=int(np.clip(imbalance, 0.001, 0.5) * 1000))
    with _c_stdout_dropped():
        _, parts = pymetis.part_graph(
            k,
            **metis_adjacency(traffic.indptr, traffic.indices),
            vweights=vweights,
            eweights=_integer_edge_weights(traffic.data),
            options=opts,
        )
    return _apply_pins(np.asarray(parts, dtype=np.int64), pins, k)


def _trivial_parts(traffic, sizes, k):
    """Parts of a cut METIS is not needed for, or None.

    With at least as many parts as vertices, every vertex gets a part of its own
    (METIS would try to bisect empty graphs). Without edges nothing can be cut:
    vertices go, largest first, to the least-filled part.
    """
    n = traffic.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if traffic.nnz == 0:
        sizes = np.asarray(sizes, dtype=np.float64)
        load = np.zeros(k)
        parts = np.empty(n, dtype=np.int64)
        for v in np.lexsort((np.arange(n), -sizes)).tolist():
            part = int(np.argmin(load))
            parts[v] = part
            load[part] += sizes[v]
        return parts
    return None


@contextlib.contextmanager
def _c_stdout_dropped():
    """Send what C code writes to file descriptor 1 to the null device meanwhile.

    METIS prints warnings (e.g. "***Cannot bisect a graph with 0 vertices!") with
    printf; they would mix with the program's output.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield  # no file descriptor 1 to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _flush_c_stdio()  # what C buffered goes to the null device too
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _flush_c_stdio():
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


def _apply_pins(parts, pins, k):
    """Relabel parts to agree with as many pins as possible, then force the pins."""
    if not pins:
        return parts
    agree = np.zeros((k, k))
    for block, chip in pins.items():
        agree[parts[block], chip] += 1
    rows, cols = linear_sum_assignment(-agree)
    relabel = np.arange(k)
    relabel[rows] = cols
    parts = relabel[parts]
    for block, chip in pins.items():
        parts[block] = chip
    return parts


def repair_overfull(packed, ctx, n_chips):
    """Bring every chip within its core count; False if impossible.

    On the most over-full chip, the core with the least traffic to the rest of its
    chip is dissolved: its blocks go into existing cores with room, on any chip, most
    traffic first. When that fails, a whole core moves to the chip with a free core
    it talks to most. Cores holding pinned blocks stay on their chip. A step costs
    time in proportion to the traffic of the cores it tries and of the blocks that
    changed chips since, plus a few array operations over all chips: each block's
    traffic to its own chip is kept (`_BlockFlow`) rather than read again for the
    whole over-full chip, and the cores a block could join are found in compiled
    code (`bestfit.first_with_room`).

    Every step keeps every core within its output axon entries, which change as
    blocks change chips (an axon to another chip takes one more entry). Blocks, or
    a whole core, only go where they fit with their entries there
    (`Packed.absorb_chips`, `Packed.move_core_checked`), and a core only leaves its
    chip if the blocks it leaves behind that send to it keep their cores within
    their entries (`Packed.can_leave_chip`). Packing fills cores up to their
    entries, so such a core often has none to spare: it first gives one of its
    blocks to another core of the chip that has (`_relieve`; moving a block within
    a chip changes nobody's entries). Only when no core of the chip can go without
    an overflow does the least attached core move regardless (the overflow is left
    to `strategies.entries.fit_entries`). ``packed`` must count entries for its
    chips (as `pack_by_chip` leaves it, or after `Packed.sync_entries`); so it
    still does afterwards.
    """
    cap = ctx.cores_per_chip
    pinned = set(ctx.pins)
    if len(packed.cores) > n_chips * cap:
        ctx.notes["min_chips"] = -(-len(packed.cores) // cap)
        return False
    counts = packed.cores_on_chips(n_chips)
    room = ChipRoom(packed, n_chips)
    # Cores (`CoreBin` objects) each way of shedding failed for. Chips only fill up,
    # and the entries an over-full chip's cores have to spare only shrink, while it
    # sheds cores: a failure is not tried again.
    failed = _Failed()
    flows = _BlockFlow(packed, ctx.traffic)
    # Only over-full chips shed cores (and no chip becomes over-full): their blocks'
    # traffic is read in one go.
    flows.of(np.flatnonzero((counts > cap)[packed.block_chip()]))
    while True:
        over = np.flatnonzero(counts > cap)
        if over.size == 0:
            return True
        chip = int(over[np.argmax(counts[over])])
        movable = packed.chip_cores(chip)
        if pinned:
            movable = [i for i in movable if not pinned.intersection(packed.cores[i].blocks)]
        if not movable:
            return False
        flow = _CoreChipFlow(packed, ctx.traffic, n_chips, movable, flows)
        # Least attached to its own chip first (relative to the mean over chips).
        rank = np.argsort(flow.own - flow.total / n_chips, kind="stable")
        cores = packed.cores
        fresh = [r for r in rank.tolist() if cores[movable[r]] not in failed.dissolved]
        if any(failed.dissolve(packed, movable[r], flow, r, chip, room)
               for r in fresh[:DISSOLVE_TRIES]):
            counts[chip] -= 1
            continue
        has_room = counts < cap
        if not has_room.any():
            return False
        moved = _move_a_core(packed, movable, flow, rank, has_room, failed, room)
        if moved is None:
            # No core can go without an overflow: the least attached goes to the
            # chip with a free core it talks to most, as `fit_entries` may still
            # repair the overflow (a core split onto a free core of its chip).
            i, flow_i = movable[rank[0]], flow.row(rank[0])
            dest = int(np.argmax(np.where(has_room, flow_i, -np.inf)))
            packed.move_core_checked(i, dest, check=False)
        else:
            i, dest = moved
        flows.moved(packed.cores[i].blocks)
        room.update([chip, dest])
        counts[chip] -= 1
        counts[dest] += 1


class _Failed:
    """The cores each way of shedding a core failed for (see `repair_overfull`)."""

    def __init__(self):
        self.dissolved = set()
        self.moved = set()
        self.relieved = set()

    def dissolve(self, packed, i, flow, r, chip, room):
        """`_dissolve` of core ``i`` (row ``r`` of ``flow``, a `_CoreChipFlow`),
        unless it failed for the core before. A core holding a block that must be
        alone cannot be dissolved: its block joins no occupied core."""
        core = packed.cores[i]
        if core in self.dissolved:
            return False
        if not core.alone and _dissolve(packed, i, flow.row(r), chip, room):
            flow.flows.moved(core.blocks)
            return True
        self.dissolved.add(core)
        return False


def _move_a_core(packed, movable, flow, rank, has_room, failed, room):
    """Move one of the ``movable`` cores of an over-full chip, taken in ``rank``
    order, to the chip with a free core it talks to most (``flow``, a
    `_CoreChipFlow`) where every core keeps its output axon entries; the chip it
    went to, or None.

    Cores that may leave their chip as they are come first; then cores whose
    departure would overflow the cores they leave behind, after relief
    (`_relieve`). Relief moves stay made even when the core then finds no chip:
    each keeps every rule and changes nobody's entries.

    Returns
    -------
    (int, int) or None
        The core that moved and its chip.
    """
    for tried, relieved in ((failed.moved, False), (failed.relieved, True)):
        for r in rank.tolist():
            i = movable[r]
            core = packed.cores[i]
            if core in tried:
                continue
            tried.add(core)
            leaving = _Departure(packed, i)
            leaves = leaving.can_leave()
            if relieved:
                if leaves or not _relieve(packed, i, room):
                    continue
                leaving = _Departure(packed, i)  # relief moved blocks of the chip
            elif not leaves:
                continue
            dest = _move_core(packed, leaving, flow.row(r), has_room)
            if dest is not None:
                return i, dest
    return None


def _move_core(packed, leaving, flow, has_room):
    """Move a core whose blocks may leave their chip (``leaving``, a `_Departure`)
    to the chip with a free core it talks to most (``flow``) where it keeps its
    output axon entries; that chip, or None."""
    fits = has_room & (leaving.entries_on_chips(has_room.size) <=
                       packed.ctx.limits.out_axons)
    for chips in _most_first(flow, fits):
        for dest in chips.tolist():
            if leaving.move(dest):
                return dest
    return None


def _most_first(flow, among):
    """The chips of ``among`` (a mask) by ``flow``, most first, lowest index first
    among equals (``np.argsort(-flow, kind="stable")`` restricted to ``among``), in
    two arrays: those with flow, then the others (only sorted if asked for)."""
    some = np.flatnonzero(among & (flow > 0))
    yield some[np.argsort(-flow[some], kind="stable")]
    rest = np.flatnonzero(among & ~(flow > 0))
    yield rest[np.argsort(-flow[rest], kind="stable")]


def _relieve(packed, i, room):
    """Make room for core ``i``'s blocks to leave their chip: every core of the chip
    that their departure would take over its output axon entries (its blocks send to
    them: one more entry per axon) moves one of its blocks to another core of the
    chip, one that keeps both cores within their entries once core ``i`` has gone.
    Moving a block between cores of a chip changes nobody's entries. Whether every
    such core was relieved (``room``, a `ChipRoom`, is updated)."""
    ctx = packed.ctx
    senders, delta = packed.left_behind(i)
    gain = {}
    for s, d in zip(senders.tolist(), delta.tolist()):
        gain[s] = gain.get(s, 0) + d
    change = {}
    for s, d in gain.items():
        j = int(packed.block_core[s])
        change[j] = change.get(j, 0) + d
    cap = ctx.limits.out_axons
    usage = packed.usage()
    over = [j for j, d in change.items() if usage[j, OUT_AXONS] + d > cap]
    chip = packed.core_chip[i]
    others = [j for j in packed.chip_cores(chip) if j != i]
    relieved = all(_relieve_core(packed, j, gain, change, others) for j in over)
    if over:
        room.update([chip])
    return relieved


def _relieve_core(packed, j, gain, change, others):
    """Move the smallest block of core ``j`` that leaves it within its entries (after
    ``change``) to another of the ``others`` cores (its chip) where it fits now and
    after its own ``gain``; whether one moved (``change`` is updated)."""
    ctx = packed.ctx
    g, keys = ctx.graph, ctx.keys
    cap = ctx.limits.out_axons
    blocks = list(packed.cores[j].blocks)
    if len(blocks) < 2:
        return False
    targets = np.array([t for t in others if t != j], dtype=np.int64)
    limit = ctx.limits.capacity_vector()
    for b in sorted(blocks, key=lambda x: (float(ctx.sizes[x]), x)):
        rest = CoreBin.checked(g, ctx.limits, keys, [x for x in blocks if x != b])
        if rest is None or rest.used[OUT_AXONS] + change[j] - gain.get(b, 0) > cap:
            continue
        need = keys.shared_need()[b]
        usage = packed.usage()[targets]
        after = np.array([change.get(t, 0) for t in targets.tolist()], dtype=np.int64)
        room = np.all(usage + need <= limit, axis=1) & \
            (usage[:, OUT_AXONS] + need[OUT_AXONS] + gain.get(b, 0) + after <= cap)
        for t in targets[room].tolist():
            if packed.cores[t].fits(b):
                packed.replace_core(j, rest)
                packed.block_core[b] = -1
                packed.add_block(b, t)
                change[j] -= gain.get(b, 0)
                change[t] = change.get(t, 0) + gain.get(b, 0)
                return True
    return False


class _BlockFlow:
    """Traffic of each block to the blocks of its own chip, and in all, while
    `repair_overfull` moves blocks between chips: read for a block when first
    needed, and again after it or a block it talks to changed chips (`moved`)."""

    def __init__(self, packed, traffic):
        n = traffic.shape[0]
        self.packed = packed
        self.traffic = traffic
        self.own = np.zeros(n)
        self.total = np.zeros(n)
        self.known = np.zeros(n, dtype=bool)
        chips = packed.block_chip()
        # The chip of every block, kept by `moved`; small enough to stay in cache.
        small = np.int16 if chips.max(initial=0) < 2 ** 15 else np.int32
        self.chip = chips.astype(small)

    def of(self, blocks):
        """``(own, total)``: traffic of each of ``blocks`` (int64 array) to its own
        chip, and in all."""
        unknown = blocks[~self.known[blocks]]
        if unknown.size:
            nbrs, weights, owner = _entries(self.traffic, unknown)
            same = self.chip[nbrs] == self.chip[unknown][owner]
            self.own[unknown] = np.bincount(owner[same], weights=weights[same],
                                            minlength=unknown.size)
            self.total[unknown] = np.bincount(owner, weights=weights, minlength=unknown.size)
            self.known[unknown] = True
        return self.own[blocks], self.total[blocks]

    def moved(self, blocks):
        """Record that ``blocks`` changed chips: their flows and those of the blocks
        they talk to (their rows of the symmetric traffic) are read again when next
        needed."""
        blocks = np.asarray(blocks, dtype=np.int64)
        self.chip[blocks] = self.packed.block_chip(blocks)
        self.known[blocks] = False
        self.known[_rows_of(self.traffic, blocks.tolist())[0]] = False


def _entries(m, rows):
    """``(indices, data, owner)``: the stored entries of ``rows`` (int64 array) of
    the compressed matrix ``m``, row after row, and the position in ``rows`` of the
    row of each; read the cheapest way for their number."""
    if rows.size <= FEW_ROWS:
        indices, data, lengths = _rows_of(m, rows.tolist())
    elif rows.size <= MANY_ROWS:
        entry, owner = _row_entries(m.indptr, rows)
        return m.indices[entry], m.data[entry], owner
    else:
        part = m[rows]
        indices, data, lengths = part.indices, part.data, np.diff(part.indptr)
    return indices, data, np.repeat(np.arange(rows.size), lengths)


class _CoreChipFlow:
    """Traffic from the blocks of each of ``cores`` (all on one chip), read as needed.

    ``own`` and ``total`` hold each core's traffic to its chip and in all (from
    ``flows``, a `_BlockFlow`); `row` gives one core's traffic to every chip. So a
    step of `repair_overfull` costs time in proportion to the traffic of the blocks
    that changed chips and of the cores it tries, not to the over-full chip's cores
    times all chips.
    """

    def __init__(self, packed, traffic, n_chips, cores, flows):
        all_cores = packed.cores
        blocks = [all_cores[i].blocks for i in cores]
        sizes = np.fromiter(map(len, blocks), dtype=np.int64, count=len(blocks))
        #: The cores' blocks one after the other, and where each core's start.
        self.blocks = np.fromiter(itertools.chain.from_iterable(blocks), dtype=np.int64,
                                  count=int(sizes.sum()))
        self.bounds = np.concatenate([[0], np.cumsum(sizes)])
        owner = np.repeat(np.arange(len(cores)), sizes)
        own, total = flows.of(self.blocks)
        self.own = np.bincount(owner, weights=own, minlength=len(cores))
        self.total = np.bincount(owner, weights=total, minlength=len(cores))
        self.packed, self.traffic, self.n_chips, self.flows = packed, traffic, n_chips, flows

    def row(self, r):
        """(n_chips,) traffic of core ``cores[r]`` to each chip."""
        nbrs, weights, _ = _rows_of(self.traffic,
                                    self.blocks[self.bounds[r]:self.bounds[r + 1]].tolist())
        return np.bincount(self.packed.block_chip(nbrs), weights=weights,
                           minlength=self.n_chips)


def _dissolve(packed, i, flow, chip, room):
    """Spread core ``i``'s blocks over existing cores of other chips; all or nothing.

    Target chips are taken most traffic first (``room`` is a `ChipRoom`). Once
    every block has a place, the cores of ``chip`` that send to them are relieved
    where their entries would overflow (`_relieve`).
    """
    # The chips it talks to, most traffic first; then the others in index order
    # (traffic is never negative: the order of a stable sort of all chips).
    talks = flow > 0
    talks[chip] = False
    order = np.flatnonzero(talks)
    order = order[np.argsort(-flow[order], kind="stable")]
    others = ~talks
    others[chip] = False
    blocks = np.asarray(packed.cores[i].blocks, dtype=np.int64)
    if not packed.absorb_chips(i, order, room.room, then=others,
                               leave=lambda: _may_leave(packed, i, room)):
        return False
    room.update(packed.block_chip(blocks).tolist() + [chip])
    return True


def _may_leave(packed, i, room):
    """Whether core ``i``'s blocks may leave their chip, after relief if needed."""
    return packed.can_leave_chip(i) or _relieve(packed, i, room)


def core_first(ctx, k):
    """Pack all blocks traffic-aware first, then cut the core graph into ``k`` chips.

    Whenever the packing needs at most ``k * cores_per_chip`` cores this yields a
    feasible plan, so it backs up the chip-first cut when chips are nearly full.
    """
    g = ctx.graph
    cores, _ = pack(g, np.arange(g.n_blocks), ctx.limits, ctx.keys, ctx.traffic)
    if len(cores) > k * ctx.cores_per_chip:
        return None
    packed = Packed(ctx, cores, np.zeros(len(cores), dtype=np.int64))
    if k > 1:
        m = len(cores)
        onehot = sp.csr_matrix(
            (np.ones(g.n_blocks), (np.arange(g.n_blocks), packed.block_core)), shape=(g.n_blocks, m)
        )
        core_traffic = (onehot.T @ ctx.traffic @ onehot).tocsr()
        core_traffic.setdiag(0)
        core_traffic.eliminate_zeros()
        pinned = {int(packed.block_core[b]): c for b, c in ctx.pins.items()}
        sizes = np.ones(m)
        parts = metis_call(core_traffic, sizes, k, ctx, pinned, fill=1.0)
        packed.core_chip = [int(c) for c in parts]
        packed.sync_entries()
    return packed if repair_overfull(packed, ctx, k) else None


def chip_first(ctx, k):
    """Cut blocks into ``k`` chips, pack each chip, repair over-full chips."""
    packed = pack_by_chip(ctx, metis_parts(ctx, k), k, max_cores=k * ctx.cores_per_chip)
    return packed if packed is not None and repair_overfull(packed, ctx, k) else None


def metis(ctx, k, tries=None, **_):
    """METIS strategy: the best of several seeded `chip_first` cuts, else `core_first`.

    Parameters
    ----------
    ctx : Context
    k : int
        Chips to use.
    tries : int, optional
        METIS seeds to try (``ctx.seed``, ``ctx.seed + 1``, ...); default 4 for graphs
        up to 5,000 blocks, 2 up to 20,000, else 1. The best plan (fewest inter-chip spikes, then
        fewest cores) wins, so the result is deterministic for a seed.

    Returns
    -------
    Packed or None
        None when the blocks cannot be placed on ``k`` chips this way.
    """
    g = ctx.graph
    if tries is None:
        tries = 1 if k == 1 else 4 if g.n_blocks <= 5_000 else 2 if g.n_blocks <= 20_000 else 1
    found = []
    for i in range(tries):
        packed = chip_first(dataclasses.replace(ctx, seed=ctx.seed + i), k)
        if packed is not None and _uses_all_chips(packed, ctx, k):
            found.append(packed)
        if ctx.notes.get("min_chips", 0) > k + 1:
            return None  # far too few chips: more seeds will not help
    if not found and g.n_blocks <= CORE_FIRST_MAX_BLOCKS:
        packed = core_first(ctx, k)
        if packed is None or not _uses_all_chips(packed, ctx, k):
            return None
        return packed
    if not found:
        return None
    return min(found, key=lambda p: (interchip_spikes(g, p.block_chip()), len(p.cores)))


def _uses_all_chips(packed, ctx, k):
    """A spread plan must use every one of the ``k`` chips."""
    return not ctx.spread or len(set(packed.core_chip)) == k
