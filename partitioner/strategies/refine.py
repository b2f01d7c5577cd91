"""Local search that never breaks a rule and never worsens the objective.

`refine` moves single blocks to the chip they exchange the most traffic with, when
that strictly lowers inter-chip traffic and the block fits a core there (an existing
core, or a new one on a chip with a free core). `consolidate` empties lightly used
cores into other cores of the same chip, which changes no chip traffic.

On graphs up to `FM_MAX_BLOCKS` blocks, `refine` then runs `fm_refine`:
Fiduccia-Mattheyses passes (moves and swaps, allowed to get worse within a pass)
from the plan and from a few random starts, keeping the result only if it is better.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from partitioner.bestfit import cores_to_try, cores_with_room
from partitioner.graph import RESOURCES
from partitioner.packing import WINDOW
from partitioner.strategies.common import chip_traffic
from partitioner.strategies.entries import fit_entries

__all__ = ["refine", "consolidate", "fm_refine", "cluster_refine"]

OUT_AXONS = RESOURCES.index("out_axons")


def _better_chips(traffic, b, block_chip, n_chips):
    """Chips ``b`` exchanges more traffic with than with its own, most first (ties in
    chip order)."""
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    flow = np.bincount(block_chip[traffic.indices[start:stop]], traffic.data[start:stop],
                       minlength=n_chips)
    better = np.flatnonzero(flow > flow[block_chip[b]])
    return better[np.argsort(-flow[better], kind="stable")].tolist()


def _better_in_row(to_chip, b, own):
    """`_better_chips` from row ``b`` of a block x chip traffic matrix with sorted
    indices (valid while none of ``b``'s neighbours has moved)."""
    start, stop = to_chip.indptr[b], to_chip.indptr[b + 1]
    chips = to_chip.indices[start:stop].tolist()
    flows = to_chip.data[start:stop].tolist()
    mine = next((f for c, f in zip(chips, flows) if c == own), 0.0)
    better = [(c, f) for c, f in zip(chips, flows) if f > mine]
    better.sort(key=lambda cf: -cf[1])
    return [c for c, _ in better]


def _target_core(packed, b, cores, traffic):
    """The core among ``cores`` (those of one chip) that ``b`` fits, most traffic
    first; None if none.

    Only cores with room for ``b``'s resources that may take another block are
    tried (on full chips most cores have too few compartments left, and on models
    with learning many hold a block alone): those it talks to most, then the others
    in order, up to `WINDOW` of each.
    """
    # A block that must be alone joins no core that has blocks.
    if not cores or packed.ctx.keys.info(b)[2]:
        return None
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    bins = packed.cores
    for i in cores_to_try(packed.usage(), packed.alone_cores(),
                          packed.chip_core_array(packed.core_chip[cores[0]]),
                          packed.ctx.keys.shared_need()[b], packed.capacity,
                          packed.block_core[traffic.indices[start:stop]],
                          traffic.data[start:stop], WINDOW).tolist():
        if bins[i].fits(b):
            return i
    return None


def refine(packed, ctx, max_passes=10, chip_cap=None, keep_chips=False, clusters=True):
    """Move blocks between chips while each move strictly lowers inter-chip traffic.

    Parameters
    ----------
    packed : Packed
        Modified in place.
    ctx : Context
    max_passes : int
        Passes over the improving blocks.
    chip_cap : int, optional
        Most cores a chip may hold (default: all cores of a chip); lower it to keep
        chips balanced.
    keep_chips : bool
        Never move the last block off a chip (plans spread over every chip).
    clusters : bool
        Also move whole clusters of blocks (`cluster_refine`).

    Returns
    -------
    int
        Number of blocks moved.
    """
    cap = ctx.cores_per_chip if chip_cap is None else min(chip_cap, ctx.cores_per_chip)
    total_moves = _block_passes(packed, ctx, cap, keep_chips, max_passes)
    clustered = clusters and cluster_refine(packed, ctx, chip_cap=chip_cap,
                                            keep_chips=keep_chips)
    if clustered:
        total_moves += clustered + _block_passes(packed, ctx, cap, keep_chips, max_passes)
    total_moves += fm_refine(packed, ctx, chip_cap=chip_cap, keep_chips=keep_chips)
    return total_moves


#: On graphs larger than `CLUSTER_MAX_BLOCKS`, single-block passes stop after one that
#: moves fewer than this fraction of the blocks it tried: each later pass costs about
#: as much as the one before (every move invalidates the failed moves into its two
#: chips) and moves a handful of blocks (100,000 blocks: 630, 117, 30, then 20, 5, 0
#: moves per pass).
PASS_MIN_MOVES = 0.01


def _block_passes(packed, ctx, cap, keep_chips, max_passes):
    """Passes of single-block moves that strictly lower inter-chip traffic; moves."""
    traffic = ctx.traffic
    pinned = set(ctx.pins)
    n_chips = packed.n_chips
    total_moves = 0
    packed.sync_entries()
    # A move that failed fails again until the destination chip changes: each chip's
    # version counts the moves into and out of it (and core renumbering, all chips).
    version = [0] * (n_chips + 1)
    failed = {}
    no_room = _NoRoom(packed, cap)
    to_chip = changed = None
    better_of = {}  # block -> its better chips, while its row of to_chip holds
    for _ in range(max_passes):
        block_chip = packed.block_chip()
        chip_blocks = np.bincount(block_chip, minlength=n_chips)
        if to_chip is None:
            to_chip = chip_traffic(traffic, block_chip, n_chips)
        else:
            # Only the rows of blocks that moved or have a neighbour that moved
            # changed (after the first pass, a small share of all rows).
            rows = np.flatnonzero(changed)
            to_chip = _with_rows(to_chip, rows,
                                 chip_traffic(traffic[changed], block_chip, n_chips))
            for b in rows.tolist():
                better_of.pop(b, None)
        to_chip.sort_indices()
        candidates = _improving_blocks(to_chip, block_chip)
        # Blocks moved in this pass or next to one: their row of to_chip is stale.
        stale = np.zeros(block_chip.size, dtype=bool)
        moves = 0
        for b in candidates.tolist():
            own = int(block_chip[b])
            if b in pinned or (keep_chips and chip_blocks[own] == 1):
                continue
            if stale[b]:
                better = _better_chips(traffic, b, block_chip, n_chips)
            else:
                better = better_of.get(b)
                if better is None:
                    better = better_of[b] = _better_in_row(to_chip, b, own)
            for dest in better:
                state = (version[dest], version[n_chips])
                if failed.get((b, dest)) == state:
                    continue
                if no_room(b, dest):
                    failed[(b, dest)] = state
                    continue
                total_cores = len(packed.cores)
                if _move(packed, b, dest, traffic, cap):
                    chip_blocks[own] -= 1
                    chip_blocks[dest] += 1
                    block_chip[b] = dest
                    stale[traffic.indices[traffic.indptr[b]:traffic.indptr[b + 1]]] = True
                    stale[b] = True
                    moves += 1
                    version[own] += 1
                    version[dest] += 1
                    if len(packed.cores) < total_cores:
                        version[n_chips] += 1
                    break
                failed[(b, dest)] = state
        changed = stale
        total_moves += moves
        if moves == 0 or (ctx.graph.n_blocks > CLUSTER_MAX_BLOCKS and
                          moves < PASS_MIN_MOVES * candidates.size):
            break
    return total_moves


class _NoRoom:
    """Whether a block certainly cannot move to a chip: the chip is full and none of
    its cores has room for the block's resources with no inter-chip entries (the
    least the block can need there; `Packed.move_block` asks the same first).

    Most failing moves end here, in one compiled screen of the chip's cores, without
    the bookkeeping of a move attempt.
    """

    def __init__(self, packed, cap):
        self.packed, self.cap = packed, cap
        keys = packed.ctx.keys
        self.need = keys.shared_need().copy()
        self.need[:, OUT_AXONS] = packed.ctx.graph.resources[:, OUT_AXONS]
        self.alone = packed.ctx.graph.alone

    def __call__(self, b, chip):
        packed = self.packed
        cores = packed.chip_core_array(chip)
        if cores.size < self.cap:
            return False
        return bool(self.alone[b]) or cores_with_room(
            packed.usage(), packed.alone_cores(), cores, self.need[b],
            packed.capacity).size == 0


# ================================================================ cluster moves
#: `refine` moves whole clusters of blocks first on graphs up to this many blocks.
CLUSTER_MAX_BLOCKS = 10_000
#: Cluster granularities, coarse to fine: METIS parts per chip of the plan.
CLUSTER_PARTS = (4, 16)
#: Passes over the clusters of one granularity.
CLUSTER_PASSES = 4


def cluster_refine(packed, ctx, chip_cap=None, keep_chips=False, parts=CLUSTER_PARTS,
                   max_blocks=CLUSTER_MAX_BLOCKS):
    """Move whole clusters of blocks between chips while each move strictly lowers
    inter-chip traffic.

    Single-block moves stop where a group of blocks that talk mostly to each other
    would have to move together: moving any one of them alone raises the traffic.
    Clusters are METIS parts of the block graph (``parts`` per chip, coarse to fine)
    split by the chips of the plan; a cluster moves to the chip it exchanges the most
    traffic with when that lowers the traffic, block by block (each move checked like
    a single-block move, output axon entries included), and moves back entirely if
    one of its blocks does not fit there.

    Parameters
    ----------
    packed : Packed
        Modified in place.
    ctx : Context
    chip_cap : int, optional
        Most cores a chip may hold.
    keep_chips : bool
        Never empty a chip.
    parts : sequence of int
        METIS parts per chip of each granularity.
    max_blocks : int
        Do nothing on larger graphs.

    Returns
    -------
    int
        Number of blocks moved.
    """
    from partitioner.strategies.metis import metis_call

    g = ctx.graph
    k = packed.n_chips
    if k < 2 or g.n_blocks > max_blocks or g.n_blocks < 4:
        return 0
    cap = ctx.cores_per_chip if chip_cap is None else min(chip_cap, ctx.cores_per_chip)
    before = _cut(ctx.traffic, packed.block_chip())
    saved = ([core.copy() for core in packed.cores], list(packed.core_chip))
    packed.sync_entries()
    moved = 0
    for per_chip in parts:
        n_parts = min(k * per_chip, g.n_blocks // 2)
        if n_parts < 2:
            continue
        fine = metis_call(ctx.traffic, ctx.sizes, n_parts, ctx, {}, fill=1.0)
        for _ in range(CLUSTER_PASSES):
            step = _cluster_pass(packed, ctx, fine, cap, keep_chips)
            moved += step
            if step == 0:
                break
    if _cut(ctx.traffic, packed.block_chip()) > before + _FM_TOL:
        _restore(packed, *saved)  # not expected: every kept move lowers the traffic
        return 0
    return moved


def _cluster_pass(packed, ctx, fine, cap, keep_chips):
    """One pass of cluster moves over the clusters ``fine`` x chips; blocks moved."""
    traffic = ctx.traffic
    chips = packed.block_chip()
    k = int(chips.max()) + 1
    label = fine * k + chips
    _, cluster = np.unique(label, return_inverse=True)
    n_cl = int(cluster.max()) + 1
    n = chips.size
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), cluster)), shape=(n, n_cl))
    between = (onehot.T @ traffic @ onehot).tocsc()          # cluster x cluster
    between.setdiag(0.0)
    between.eliminate_zeros()
    cl_chip = np.zeros(n_cl, dtype=np.int64)
    cl_chip[cluster] = chips
    flow = np.asarray((between @ sp.csr_matrix(
        (np.ones(n_cl), (np.arange(n_cl), cl_chip)), shape=(n_cl, k))).todense())
    members = [[] for _ in range(n_cl)]
    for b in np.argsort(-ctx.sizes, kind="stable").tolist():
        members[cluster[b]].append(b)
    pinned = set(ctx.pins)
    chip_blocks = np.bincount(chips, minlength=k)
    # Free room of each chip (its cores' room plus free cores), to skip clusters that
    # cannot fit before trying their blocks one by one.
    capacity = ctx.limits.capacity_vector()
    need = np.zeros((n_cl, capacity.size))
    np.add.at(need, cluster, ctx.keys.shared_need())
    room = np.zeros((k, capacity.size))
    np.add.at(room, packed._chips(), capacity - packed.usage())
    room += np.maximum(0, cap - np.bincount(packed._chips(), minlength=k))[:, None] * capacity
    moved = 0
    rows = np.arange(n_cl)
    gain = flow - flow[rows, cl_chip][:, None]
    gain[rows, cl_chip] = -np.inf
    best = gain.max(axis=1)
    for cl in np.argsort(-best, kind="stable").tolist():
        if best[cl] <= _FM_TOL:
            break
        src = int(cl_chip[cl])
        own = flow[cl, src]
        order = np.argsort(-flow[cl], kind="stable")
        blocks = members[cl]
        if pinned.intersection(blocks) or keep_chips and chip_blocks[src] <= len(blocks):
            continue
        for dest in order.tolist():
            if dest == src or flow[cl, dest] - own <= _FM_TOL:
                break
            if np.any(need[cl] > room[dest]):
                continue
            if _move_cluster(packed, ctx, blocks, src, dest, cap):
                room[dest] -= need[cl]
                room[src] += need[cl]
                cl_chip[cl] = dest
                start, stop = between.indptr[cl], between.indptr[cl + 1]
                rows, w = between.indices[start:stop], between.data[start:stop]
                flow[rows, src] -= w
                flow[rows, dest] += w
                chip_blocks[src] -= len(blocks)
                chip_blocks[dest] += len(blocks)
                moved += len(blocks)
                break
    return moved


def _move_cluster(packed, ctx, blocks, src, dest, cap):
    """Move every block of ``blocks`` from chip ``src`` to ``dest``, or none."""
    done = []
    for b in blocks:
        if not _move(packed, b, dest, ctx.traffic, cap):
            for x in reversed(done):
                _move(packed, x, src, ctx.traffic, ctx.cores_per_chip)
            return False
        done.append(b)
    return True


def _with_rows(m, rows, new_rows):
    """CSR matrix ``m`` with its ``rows`` (ascending) replaced by the rows of
    ``new_rows``, in one pass over the entries."""
    n = m.shape[0]
    lengths = np.diff(m.indptr)
    new_lengths = np.diff(new_rows.indptr)
    replaced = np.zeros(n, dtype=bool)
    replaced[rows] = True
    kept = np.flatnonzero(~np.repeat(replaced, lengths))
    lengths[rows] = new_lengths
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # An entry keeps its offset in its row; rows move by the change of their start.
    kept_row = np.repeat(np.arange(n), np.diff(m.indptr))[kept]
    new_row = np.repeat(rows, new_lengths)
    position = np.concatenate([
        kept + (indptr[kept_row] - m.indptr[kept_row]),
        np.arange(new_row.size) + np.repeat(indptr[rows] - new_rows.indptr[:-1],
                                            new_lengths)])
    indices = np.empty(indptr[-1], dtype=m.indices.dtype)
    data = np.empty(indptr[-1], dtype=m.data.dtype)
    indices[position] = np.concatenate([m.indices[kept], new_rows.indices])
    data[position] = np.concatenate([m.data[kept], new_rows.data])
    return sp.csr_matrix((data, indices, indptr), shape=m.shape)


def _improving_blocks(to_chip, block_chip):
    """Blocks with another chip they send more traffic to than their own, best first
    (``to_chip``: block x chip traffic, `chip_traffic`)."""
    n = block_chip.size
    rows = np.repeat(np.arange(n), np.diff(to_chip.indptr))
    own = to_chip.indices == block_chip[rows]
    own_flow = np.zeros(n)
    own_flow[rows[own]] = to_chip.data[own]
    # Largest flow to another chip (0 where none: every other chip gets at least 0).
    other = np.where(own, 0.0, to_chip.data)
    busy = np.flatnonzero(np.diff(to_chip.indptr))
    best = np.zeros(n)
    if busy.size:
        best[busy] = np.maximum.reduceat(other, to_chip.indptr[busy])
    gain = np.maximum(best, 0.0) - own_flow
    cand = np.flatnonzero(gain > 0)
    return cand[np.argsort(-gain[cand], kind="stable")]


def _move(packed, b, dest, traffic, cap):
    """Move block ``b`` to chip ``dest`` if it fits (its own cores' and its senders'
    output axon entries included); returns whether it moved."""
    return packed.move_block(
        b, dest, lambda blk, cores: _target_core(packed, blk, cores, traffic), cap)


#: `consolidate` tries every core up to this full (largest used fraction of any
#: resource). Trying only cores up to 35% full left cores that refinement had half
#: emptied (modular_large on 8 chips: 1,014 cores instead of 997, the same traffic);
#: the tries cost about 0.1 s at 100,000 blocks.
MAX_FILL = 0.9


def consolidate(packed, max_fill=MAX_FILL):
    """Empty lightly used cores into other cores on the same chip where possible.

    The lightest cores are tried first; each goes into the other cores of its chip,
    fullest first (`Packed.absorb`). Most tries fail on the core's largest block,
    which is checked first against the few cores it could go to; the chip's cores
    in that order are kept from one try to the next until a core of the chip changes
    (`_ChipTargets`), so a try costs time in proportion to one chip's cores.

    Parameters
    ----------
    packed : Packed
        Modified in place.
    max_fill : float
        Only cores at most this full are tried.

    Returns
    -------
    int
        Number of cores removed.
    """
    removed = 0
    fill = (packed.usage() / packed.capacity).max(axis=1, initial=0.0)
    # A core holding a block that must be alone cannot be emptied into another.
    alone = np.zeros(fill.size, dtype=bool)
    alone[packed.block_core[packed.ctx.graph.alone]] = True
    light = np.flatnonzero((fill <= max_fill) & ~alone)
    light = light[_may_empty(packed, light, alone)]
    light = light[np.argsort(fill[light], kind="stable")]
    targets = _ChipTargets(packed)
    for core in [packed.cores[i] for i in light.tolist()]:
        i = int(packed.block_core[core.blocks[0]])
        if packed.cores[i] is core and _empty_core(packed, i, targets):
            removed += 1
    return removed


def _may_empty(packed, cores, closed):
    """Of ``cores``, those whose every block may fit another core of its chip: per
    resource, the most any of its blocks needs is within the most room any other
    core of the chip that takes blocks (not ``closed``) has free, and all its blocks
    need is within the room those cores have free together.

    Emptying cores only fills the cores that stay, so a core this rejects at the
    start of `consolidate` could never be emptied later either; the screen leaves
    the result unchanged and spares the tries (most cores, when ``max_fill`` is
    high).
    """
    if cores.size == 0:
        return np.zeros(0, dtype=bool)
    chips = packed._chips()
    n_cores = chips.size
    free = (packed.capacity - packed.usage()).clip(min=0)
    free[closed] = 0
    # Per chip and resource: the most free room of a core, which core has it, and
    # the second most (the most of the other cores, for that core).
    starts = np.searchsorted(np.sort(chips), np.arange(packed.n_chips + 1))
    best = np.zeros((packed.n_chips, free.shape[1]), dtype=free.dtype)
    second = np.zeros_like(best)
    owner = np.full(best.shape, -1, dtype=np.int64)
    size = np.diff(starts)
    has, two = size > 0, size > 1
    for r in range(free.shape[1]):
        order = np.lexsort((-free[:, r], chips))
        top = order[starts[:-1][has]]
        best[has, r], owner[has, r] = free[top, r], top
        second[two, r] = free[order[starts[:-1][two] + 1], r]
    # The most each core's blocks need, per resource.
    blocks = np.flatnonzero(np.isin(packed.block_core, cores))
    blocks = blocks[np.argsort(packed.block_core[blocks], kind="stable")]
    need = packed.ctx.keys.shared_need()[blocks]
    core_of = packed.block_core[blocks]
    first = np.flatnonzero(np.r_[True, core_of[1:] != core_of[:-1]])
    most = np.zeros((n_cores, free.shape[1]), dtype=need.dtype)
    most[core_of[first]] = np.maximum.reduceat(need, first, axis=0)
    total = np.zeros((n_cores, free.shape[1]), dtype=need.dtype)
    total[core_of[first]] = np.add.reduceat(need, first, axis=0)
    chip_free = np.zeros_like(best)
    np.add.at(chip_free, chips, free)
    chip = chips[cores]
    room = np.where(owner[chip] == cores[:, None], second[chip], best[chip])
    return (np.all(most[cores] <= room, axis=1) &
            np.all(total[cores] <= chip_free[chip] - free[cores], axis=1))


def _empty_core(packed, i, targets=None):
    """Move every block of core ``i`` into other cores of its chip, or nothing.

    The other cores are taken fullest first (``targets``, a `_ChipTargets`, holds
    them in that order; it is updated when the move happens).
    """
    targets = _ChipTargets(packed) if targets is None else targets
    chip = packed.core_chip[i]
    cores, used, free, closed = targets.of(chip)
    others = cores != i
    blocks = packed.cores[i].blocks
    if packed.cores[i].alone or not others.any():
        return False
    need = packed.ctx.keys.shared_need()[blocks]
    # The checks `Packed.absorb` starts with, on arrays kept for the chip: the room
    # left on the chip, then the largest block against its first `WINDOW` cores.
    if np.any(need.sum(axis=0) > free[others].sum(axis=0)):
        return False
    first = int(np.argmax(packed.ctx.sizes[blocks]))
    room = np.flatnonzero(others & np.all(used + need[first] <= packed.capacity, axis=1))
    room = room[:WINDOW]
    b = blocks[first]
    # A core with a block that must be alone takes no other (as `CoreBin.fits` says).
    if not any(packed.cores[j].fits(b) for j in cores[room[~closed[room]]].tolist()):
        return False
    last = len(packed.cores) - 1
    moved_chip = packed.core_chip[last]  # the last core takes core i's index
    if not packed.absorb(i, cores[others]):
        return False
    targets.changed((chip, moved_chip))
    return True


class _ChipTargets:
    """The cores of each chip in the order `_empty_core` offers them (fullest first,
    by index among equals), with their usage, free room and whether they hold a
    block that must be alone; read per chip when first needed and again after its
    cores change."""

    def __init__(self, packed):
        self.packed = packed
        self.found = {}

    def of(self, chip):
        """``(cores, usage, free room, alone)`` of ``chip``'s cores, fullest first."""
        found = self.found.get(chip)
        if found is None:
            packed = self.packed
            cores = packed.chip_core_array(chip)
            used = packed.usage()[cores]
            fill = (used / packed.capacity).max(axis=1, initial=0.0)
            order = np.argsort(-fill, kind="stable")
            cores, used = cores[order], used[order]
            alone = packed.alone_cores()[cores].astype(bool)
            found = self.found[chip] = (cores, used, (packed.capacity - used).clip(min=0),
                                        alone)
        return found

    def changed(self, chips):
        """Forget what was read of ``chips``, whose cores changed."""
        for chip in chips:
            self.found.pop(chip, None)


# ======================================================= Fiduccia-Mattheyses search
#: `refine` also runs `fm_refine` on graphs up to this many blocks.
FM_MAX_BLOCKS = 400
#: Random starts `fm_refine` tries besides the plan itself, by graph size.
FM_STARTS = ((60, 8), (150, 3), (FM_MAX_BLOCKS, 1))
#: Up to this many blocks, a move that no core takes may repack the chip afresh.
FM_REPACK_BLOCKS = 120
#: An FM pass stops after this many moves without a new best.
FM_PATIENCE = 25
#: Moves tried per FM step before the step gives up.
FM_TRIES = 8
_FM_TOL = 1e-9


class _ChipSpace:
    """The cores that hold each set of blocks one chip may take (None: it cannot).

    Sets are derived from sets already known by removing and adding blocks: a removed
    block's core is rebuilt without it, an added block joins the first core it fits
    or a new core while the chip has one free. When that fails the set is packed
    afresh with `packing.pack`, first-fit decreasing, on at most ``cap`` cores. The
    chips of the plan being refined are known from the start. Cores are never
    changed in place, so every set keeps valid cores.
    """

    def __init__(self, packed, ctx, cap):
        from partitioner.packing import CoreBin, pack

        self.ctx, self.cap = ctx, cap
        self._pack, self._bin = pack, CoreBin
        #: Whether single moves may repack a chip afresh (small graphs only).
        self.repack = ctx.graph.n_blocks <= FM_REPACK_BLOCKS
        g = ctx.graph
        self._res = g.resources.astype(np.float64)
        self._res[:, 3] = np.minimum(g.resources[:, 3], g.shared_synapse_bits)
        self._room = cap * ctx.limits.capacity_vector().astype(np.float64)
        self._none = sp.csr_matrix((g.n_blocks, g.n_blocks))
        self.known = {frozenset(): []}
        for cores in _cores_by_chip(packed):
            key = frozenset(b for i in cores for b in packed.cores[i].blocks)
            self.known[key] = [packed.cores[i] for i in cores]

    def changed(self, members, remove=None, add=None, repack=True):
        """Cores of ``members`` (a known set) less ``remove`` plus ``add``, or None.

        With ``repack=False`` only the incremental change is tried (cheap; a None
        then means "not found", not "impossible").
        """
        key = frozenset(members)
        cores = self.known[key]
        if remove is not None:
            key = key - {remove}
        if add is not None:
            key = key | {add}
        if key in self.known:
            return self.known[key]
        if cores is not None and remove is not None:
            cores = self._without(cores, remove)
        if cores is not None and add is not None:
            cores = self._with(cores, add)
        if cores is None:
            if not repack:
                return None
            cores = self._fresh(key)
        self.known[key] = cores
        return cores

    def fits(self, members, remove=None, add=None, repack=True):
        """Whether ``members`` less ``remove`` plus ``add`` fit one chip."""
        return self.changed(members, remove, add, repack) is not None

    def _without(self, cores, b):
        out = []
        for core in cores:
            if b not in core.blocks:
                out.append(core)
                continue
            rest = self._bin(core.graph, core.limits, core.keys)
            for x in core.blocks:
                if x == b:
                    continue
                if not rest.fits(x):
                    return None
                rest.add(x)
            if rest.blocks:
                out.append(rest)
        return out

    def _with(self, cores, b):
        for i, core in enumerate(cores):
            if core.fits(b):
                grown = core.copy()
                grown.add(b)
                return cores[:i] + [grown] + cores[i + 1:]
        if len(cores) < self.cap:
            ctx = self.ctx
            return cores + [self._bin.of(ctx.graph, ctx.limits, ctx.keys, [b])]
        return None

    def _fresh(self, key):
        blocks = np.fromiter(sorted(key), dtype=np.int64)
        if np.any(self._res[blocks].sum(axis=0) > self._room) or \
                self.ctx.graph.alone[blocks].sum() > self.cap:
            return None
        cores, unplaced = self._pack(self.ctx.graph, blocks, self.ctx.limits, self.ctx.keys,
                                     self._none, max_cores=self.cap)
        return None if unplaced else cores

    def cores(self, members):
        """The cores of a known set."""
        return self.known[frozenset(members)]


def _cores_by_chip(packed):
    lists = [[] for _ in range(packed.n_chips)]
    for i, chip in enumerate(packed.core_chip):
        lists[chip].append(i)
    return lists


def fm_refine(packed, ctx, chip_cap=None, keep_chips=False, starts=None,
              max_blocks=FM_MAX_BLOCKS):
    """Fiduccia-Mattheyses search over chip assignments, from the plan and random starts.

    Each pass moves every block at most once, always taking the best move (or, when
    the destination chip is full, the best swap with a block there) even when it
    raises the traffic between chips, then rolls back to the best point of the pass.
    This climbs out of the local minima that improving moves alone stop in. Chips
    are repacked first-fit decreasing where their blocks changed; the plan changes
    only if its inter-chip traffic strictly drops.

    Parameters
    ----------
    packed : Packed
        Modified in place.
    ctx : Context
    chip_cap : int, optional
        Most cores a chip may hold (default: all cores of a chip).
    keep_chips : bool
        Never empty a chip.
    starts : int, optional
        Random starting assignments tried besides the plan (default by graph size,
        `FM_STARTS`); seeded by ``ctx.seed``.
    max_blocks : int
        Do nothing on larger graphs.

    Returns
    -------
    int
        Number of blocks whose chip changed.
    """
    g = ctx.graph
    k = packed.n_chips
    if k < 2 or g.n_blocks > max_blocks or g.n_blocks < 2:
        return 0
    cap = ctx.cores_per_chip if chip_cap is None else min(chip_cap, ctx.cores_per_chip)
    space = _ChipSpace(packed, ctx, cap)
    current = packed.block_chip()
    best = _fm(space, ctx, current, k, keep_chips)
    if starts is None:
        starts = next((s for limit, s in FM_STARTS if g.n_blocks <= limit), 0)
    rng = np.random.default_rng(ctx.seed)
    for _ in range(starts):
        start = _random_start(space, ctx, k, rng, keep_chips)
        if start is not None:
            found = _fm(space, ctx, start, k, keep_chips)
            if _cut(ctx.traffic, found) < _cut(ctx.traffic, best) - _FM_TOL:
                best = found
    if _cut(ctx.traffic, best) >= _cut(ctx.traffic, current) - _FM_TOL:
        return 0
    # The chips were packed with the entries of the plan's own assignment; recount
    # them for the new one, and keep the plan unless the result is valid and better.
    saved = ([core.copy() for core in packed.cores], list(packed.core_chip))
    _rebuild(packed, space, best, k)
    if fit_entries(packed, cap, keep_chips) is not None or \
            _cut(ctx.traffic, packed.block_chip()) >= _cut(ctx.traffic, current) - _FM_TOL:
        _restore(packed, *saved)
        return 0
    return int((packed.block_chip() != current).sum())


def _restore(packed, cores, core_chip):
    """Put back ``cores`` on ``core_chip`` (a state saved before a rebuild)."""
    packed.cores = cores
    packed.core_chip = core_chip
    for i, core in enumerate(cores):
        packed.block_core[core.blocks] = i
    packed.sync_entries()


def _cut(traffic, block_chip):
    coo = sp.triu(traffic, k=1).tocoo()
    return float(coo.data[block_chip[coo.row] != block_chip[coo.col]].sum())


def _rebuild(packed, space, block_chip, k):
    """Replace ``packed``'s cores with a packing of each chip of ``block_chip``."""
    cores, core_chip = [], []
    for chip in range(k):
        members = np.flatnonzero(block_chip == chip).tolist()
        if members:
            chip_cores = space.cores(members)
            cores += chip_cores
            core_chip += [chip] * len(chip_cores)
    packed.cores = cores
    packed.core_chip = core_chip
    for i, core in enumerate(cores):
        packed.block_core[core.blocks] = i


def _random_start(space, ctx, k, rng, keep_chips):
    """A random assignment every chip can hold (pins kept), or None."""
    n = ctx.graph.n_blocks
    chip = np.full(n, -1, dtype=np.int64)
    members = [set() for _ in range(k)]
    for b, c in ctx.pins.items():
        if not space.fits(members[c], add=b):
            return None
        chip[b] = c
        members[c].add(b)
    for b in rng.permutation(n).tolist():
        if chip[b] >= 0:
            continue
        order = rng.permutation(k).tolist()
        # Cheap incremental fits first; a fresh packing only when none accepts it.
        dest = next((c for c in order if space.fits(members[c], add=b, repack=False)),
                    None)
        if dest is None:
            dest = next((c for c in order if space.fits(members[c], add=b)), None)
        if dest is None:
            return None
        chip[b] = dest
        members[dest].add(b)
    if keep_chips and not all(members):
        return None
    return chip


def _fm(space, ctx, block_chip, k, keep_chips, passes=10):
    """FM passes from ``block_chip`` until a pass gains nothing; the final assignment."""
    traffic = ctx.traffic
    chip = np.asarray(block_chip, dtype=np.int64).copy()
    members = [set(np.flatnonzero(chip == c).tolist()) for c in range(k)]
    pinned = np.zeros(chip.size, dtype=bool)
    pinned[list(ctx.pins)] = True
    for _ in range(passes):
        flow = chip_traffic(traffic, chip, k).toarray()
        history, gained = _fm_pass(space, traffic, chip, members, flow, pinned, keep_chips)
        for ops in reversed(history):
            for b, src, dst in reversed(ops):
                members[dst].discard(b)
                members[src].add(b)
                chip[b] = src
        if gained <= _FM_TOL:
            break
    return chip


def _fm_pass(space, traffic, chip, members, flow, pinned, keep_chips):
    """One pass; applies its best prefix and returns the moves past it, and the gain."""
    n = flow.shape[0]
    locked = pinned.copy()
    history, total, best, best_len = [], 0.0, 0.0, 0
    for _ in range(n):
        step = _best_step(space, traffic, chip, members, flow, locked, keep_chips)
        if step is None:
            break
        ops, gain = step
        for b, src, dst in ops:
            members[src].discard(b)
            members[dst].add(b)
            chip[b] = dst
            start, stop = traffic.indptr[b], traffic.indptr[b + 1]
            nbrs, w = traffic.indices[start:stop], traffic.data[start:stop]
            flow[nbrs, src] -= w
            flow[nbrs, dst] += w
            locked[b] = True
        history.append(ops)
        total += gain
        if total > best + _FM_TOL:
            best, best_len = total, len(history)
        if len(history) - best_len > FM_PATIENCE:
            break
    return history[best_len:], best


def _best_step(space, traffic, chip, members, flow, locked, keep_chips):
    """The best feasible move or swap of an unlocked block, and its gain; or None."""
    n, k = flow.shape
    rows = np.arange(n)
    own = flow[rows, chip]
    gain = flow - own[:, None]
    gain[rows, chip] = -np.inf
    gain[locked] = -np.inf
    if keep_chips:
        sizes = np.array([len(m) for m in members])
        gain[sizes[chip] <= 1] = -np.inf
    flat = gain.ravel()
    top = np.argsort(-flat, kind="stable")[:FM_TRIES]
    for idx in top.tolist():
        if not np.isfinite(flat[idx]):
            return None
        a, dst = divmod(idx, k)
        src = int(chip[a])
        if space.fits(members[dst], add=a, repack=space.repack) and \
                space.fits(members[src], remove=a, repack=space.repack):
            return [(a, src, dst)], float(flat[idx])
        swap = _best_swap(space, traffic, chip, members, flow, own, locked, a, src, dst)
        if swap is not None:
            b, partner_gain = swap
            return [(a, src, dst), (b, dst, src)], float(flat[idx]) + partner_gain
    return None


def _best_swap(space, traffic, chip, members, flow, own, locked, a, src, dst, tries=5):
    """The partner on ``dst`` that ``a`` can swap with, and the partner's gain."""
    cand = np.array([b for b in members[dst] if not locked[b]], dtype=np.int64)
    if cand.size == 0:
        return None
    start, stop = traffic.indptr[a], traffic.indptr[a + 1]
    w_a = dict(zip(traffic.indices[start:stop].tolist(), traffic.data[start:stop].tolist()))
    between = np.array([w_a.get(int(b), 0.0) for b in cand])
    partner = flow[cand, src] - own[cand] - 2 * between
    for i in np.argsort(-partner, kind="stable")[:tries].tolist():
        b = int(cand[i])
        if space.fits(members[dst], b, a, repack=False) and \
                space.fits(members[src], a, b, repack=False):
            return b, float(partner[i])
    return None
