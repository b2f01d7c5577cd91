"""Every core within its output axon entries under the plan's own chip assignment.

An axon whose target block is on another chip takes one more output axon config entry
on its core (``docs/rules.md``). A core packed for one chip assignment can therefore
overflow when a block it sends to moves to another chip. Strategies pack each chip for
the assignment they chose (`BlockKeys.set_chips`), and the repair of over-full chips
(`metis.repair_overfull`) and refinement check every core a move touches
(`Packed.move_core_checked`, `Packed.move_block`), but a few steps change chips after
packing unchecked (cores cut across chips after packing, the baselines, a repair of
over-full chips where no core could leave without an overflow).
`fit_entries` is the last word: it recounts every core for the final assignment and
repairs what overflows.

1. A block that alone needs more entries than a core has (its axons reach too many
   blocks on other chips) moves to the chip its axons reach most, where it fits.
2. An over-full core keeps its blocks in order while they fit; the others go to other
   cores of the same chip, or to new cores while the chip has free cores. Moving a
   block between cores of one chip changes nobody's entries, so this creates no new
   overflow. On a full chip a block moves to the chip it exchanges most traffic with
   that takes it, checked like a refinement move; failing that, another core of the
   chip moves, whole, to a chip with a free core where every core keeps its entries,
   and the block takes the core freed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partitioner.packing import CoreBin, entry_overflow_text
from partitioner.strategies.common import OUT_AXONS

__all__ = ["EntryOverflow", "fit_entries"]


@dataclass
class EntryOverflow:
    """A core whose output axon entries could not be brought within the limit.

    Attributes
    ----------
    blocks : list of int
        Blocks on the core.
    chip : int
        Its chip.
    total, interchip : int
        Entries it needs, and how many are for axons to blocks on other chips.
    limit : int
        Entries a core has.
    pinned : bool
        Every block involved (the core's and those they send to across chips) is
        pinned, so no other chip count or assignment can fix it.
    """

    blocks: list
    chip: int
    total: int
    interchip: int
    limit: int
    pinned: bool = False

    def text(self, graph):
        """The overflow in words (see `packing.entry_overflow_text`)."""
        return entry_overflow_text(graph, self.blocks, self.chip, self.total,
                                   self.interchip, self.limit)


def fit_entries(packed, max_cores=None, keep_chips=False, choose_core=None):
    """Repair ``packed`` in place so that every core's output axon entries fit.

    Parameters
    ----------
    packed : Packed
    max_cores : int, optional
        Most cores a chip may hold (default: a chip's cores).
    keep_chips : bool
        Never move the last block off a chip (plans spread over every chip).
    choose_core : callable, optional
        ``choose_core(b, cores)`` -> index of a core among ``cores`` that block ``b``
        fits, or None; default: the first that fits.

    Returns
    -------
    EntryOverflow or None
        None when every core fits; else the first core that could not be repaired
        (``packed`` is then partly changed and should be discarded).
    """
    ctx = packed.ctx
    cap = ctx.limits.out_axons
    max_cores = ctx.cores_per_chip if max_cores is None else max_cores
    choose_core = choose_core or (lambda b, cores: _first_fit(packed, b, cores))
    total = packed.sync_entries()
    if total.max(initial=0) <= cap:
        return None
    need = ctx.graph.resources[:, OUT_AXONS] + ctx.keys.extra
    for b in np.flatnonzero(need > cap).tolist():
        if not _move_alone(packed, b, max_cores, keep_chips, choose_core):
            return _overflow(packed, int(packed.block_core[b]))
    usage = packed.usage()[:, OUT_AXONS]
    for i in np.flatnonzero(usage > cap).tolist():
        if _evict(packed, i, max_cores, keep_chips, choose_core):
            continue
        before = _overflow(packed, i)
        if not _split(packed, i, max_cores, keep_chips, choose_core):
            return before
    return None


#: Chips `_evict_one` tries for a block it moves off its chip (most traffic first).
EVICT_CHIPS = 8


def _evict(packed, i, max_cores, keep_chips, choose_core):
    """Move blocks of core ``i`` elsewhere, smallest first, until the blocks left fit
    their entries; whether they do. On full chips (no free core to split onto) this
    is often the only repair: a core is over by a few entries, and moving one small
    block within its chip changes no other core's entries. Every move keeps every
    rule, so a partial result is a valid plan still to be repaired."""
    cap = packed.ctx.limits.out_axons
    while packed.usage()[i, OUT_AXONS] > cap:
        if not _evict_one(packed, i, max_cores, keep_chips, choose_core):
            return False
    return True


def _evict_one(packed, i, max_cores, keep_chips, choose_core):
    """Move the smallest block of core ``i`` whose departure leaves the other blocks
    valid: to another core of its chip, else to another chip (`Packed.move_block`,
    senders' entries counted). False (nothing changed) when no block can go."""
    ctx = packed.ctx
    blocks = list(packed.cores[i].blocks)
    if len(blocks) < 2:
        return False
    chip = int(packed.core_chip[i])
    others = [j for j in packed.chip_cores(chip) if j != i]
    movable = []
    for b in sorted(blocks, key=lambda x: (float(ctx.sizes[x]), x)):
        rest = CoreBin.checked(ctx.graph, ctx.limits, ctx.keys,
                               [x for x in blocks if x != b])
        if rest is None:
            continue
        j = _first_fit(packed, b, others)
        if j is not None:
            packed.replace_core(i, rest)
            packed.block_core[b] = -1
            packed.add_block(b, j)
            return True
        movable.append(b)
    if keep_chips and len(packed.chip_cores(chip)) <= 1:
        return False
    traffic = ctx.traffic
    for b in movable:
        if b in ctx.pins:
            continue
        chips = packed.block_chip()
        start, stop = traffic.indptr[b], traffic.indptr[b + 1]
        flow = np.bincount(chips[traffic.indices[start:stop]],
                           weights=traffic.data[start:stop], minlength=packed.n_chips)
        flow[chip] = -np.inf
        order = np.lexsort((np.arange(flow.size), -flow))[:EVICT_CHIPS]
        if any(packed.move_block(b, int(dest), choose_core, max_cores)
               for dest in order.tolist()):
            return True
    return False


def _first_fit(packed, b, cores):
    """The first of ``cores`` that block ``b`` fits (resources screened first)."""
    if not cores:
        return None
    need = packed.ctx.keys.shared_need()[b]
    cap = packed.ctx.limits.capacity_vector()
    room = np.all(packed.usage()[cores] + need <= cap, axis=1)
    for i, ok in zip(cores, room.tolist()):
        if ok and packed.cores[i].fits(b):
            return i
    return None


def _move_alone(packed, b, max_cores, keep_chips, choose_core):
    """Move block ``b``, which overflows a core by itself, to a chip where it fits."""
    ctx = packed.ctx
    if b in ctx.pins:
        return False
    chips = packed.block_chip()
    own = int(chips[b])
    if keep_chips and np.count_nonzero(chips == own) == 1:
        return False
    m = ctx.graph.interchip_entries
    start, stop = m.indptr[b], m.indptr[b + 1]
    reach = np.bincount(chips[m.indices[start:stop]], weights=m.data[start:stop],
                        minlength=packed.n_chips)
    reach[own] = -1.0
    for dest in np.argsort(-reach, kind="stable").tolist():
        if reach[dest] <= 0:
            break
        if packed.move_block(b, dest, choose_core, max_cores):
            return True
    return False


def _split(packed, i, max_cores, keep_chips, choose_core):
    """Keep core ``i``'s blocks in order while they fit; the rest go to other cores of
    its chip, or new ones, or, on a full chip, to another chip. False when a block
    finds no place."""
    ctx = packed.ctx
    core = packed.cores[i]
    chip = packed.core_chip[i]
    kept = CoreBin(ctx.graph, ctx.limits, ctx.keys)
    evicted = []
    for b in core.blocks:
        if kept.fits(b):
            kept.add(b)
        else:
            evicted.append(b)
    packed.replace_core(i, kept)
    for b in evicted:
        packed.block_core[b] = -1
        others = [j for j in packed.chip_cores(chip) if j != i]
        j = _first_fit(packed, b, others)
        if j is not None:
            packed.add_block(b, j)
            continue
        full = len(packed.chip_cores(chip)) >= max_cores
        packed.new_core(b, chip)
        if full and not _move_elsewhere(packed, b, chip, max_cores, keep_chips,
                                        choose_core) and \
                not _make_room(packed, chip, {i, int(packed.block_core[b])}, max_cores):
            return False
    return True


def _make_room(packed, chip, keep, max_cores):
    """Free a core of ``chip``, which holds one more than ``max_cores``: one of its
    other cores (not in ``keep``, no pinned block) moves, whole, to the chip with a
    free core it exchanges most traffic with where every core keeps its output axon
    entries (`Packed.can_leave_chip`, `Packed.move_core_checked`); cores least
    attached to ``chip`` first. Whether one moved."""
    ctx = packed.ctx
    n = packed.n_chips
    has_room = packed.cores_on_chips(n) < max_cores
    if not has_room.any():
        return False
    traffic, chips = ctx.traffic, packed.block_chip()
    cap = ctx.limits.out_axons
    candidates = []
    for j in packed.chip_cores(chip):
        blocks = packed.cores[j].blocks
        if j in keep or any(b in ctx.pins for b in blocks):
            continue
        rows = [slice(traffic.indptr[b], traffic.indptr[b + 1]) for b in blocks]
        neighbours = np.concatenate([traffic.indices[r] for r in rows])
        weights = np.concatenate([traffic.data[r] for r in rows])
        flow = np.bincount(chips[neighbours], weights=weights, minlength=n)
        candidates.append((float(flow[chip]), j, flow))
    for _, j, flow in sorted(candidates, key=lambda c: c[:2]):
        if not packed.can_leave_chip(j):
            continue
        fits = has_room & (packed.entries_on_chips(j, n) <= cap)
        order = np.lexsort((np.arange(n), -flow))
        for dest in order[fits[order]].tolist():
            if packed.move_core_checked(j, dest):
                return True
    return False


def _move_elsewhere(packed, b, chip, max_cores, keep_chips, choose_core):
    """Move block ``b`` off its full ``chip`` to the chip it exchanges most traffic
    with where it fits (entries of every core it touches included)."""
    ctx = packed.ctx
    if b in ctx.pins or keep_chips and len(packed.chip_cores(chip)) <= 1:
        return False
    traffic = ctx.traffic
    chips = packed.block_chip()
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    flow = np.bincount(chips[traffic.indices[start:stop]], weights=traffic.data[start:stop],
                       minlength=packed.n_chips)
    order = np.lexsort((np.arange(flow.size), -flow))
    return any(packed.move_block(b, int(dest), choose_core, max_cores)
               for dest in order.tolist() if dest != chip)


def _overflow(packed, i):
    """`EntryOverflow` of core ``i`` as it stands."""
    ctx = packed.ctx
    core = packed.cores[i]
    pins = ctx.pins
    m = ctx.graph.interchip_entries
    reached = {int(t) for b in core.blocks for t in m.indices[m.indptr[b]:m.indptr[b + 1]]}
    involved = set(core.blocks) | reached
    return EntryOverflow(
        blocks=list(core.blocks), chip=int(packed.core_chip[i]),
        total=int(core.used[OUT_AXONS]), interchip=int(core.interchip),
        limit=int(ctx.limits.out_axons),
        pinned=bool(pins) and all(b in pins for b in involved),
    )
