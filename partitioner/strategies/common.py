"""What every strategy shares: the packed state (cores with their chips) and helpers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numba import njit

from partitioner.bestfit import first_with_room
from partitioner.graph import RESOURCES
from partitioner.packing import WINDOW, BlockKeys, CoreBin, _row_entries, best_fit_many

SYNAPSE_BITS = RESOURCES.index("synapse_bits")
OUT_AXONS = RESOURCES.index("out_axons")
#: Column of `Packed._rows` after the resources: whether a core holds a block alone.
_ALONE = len(RESOURCES)

__all__ = ["Packed", "Context", "pack_by_chip", "chip_traffic", "interchip_spikes"]


@dataclass
class Context:
    """Inputs every strategy receives.

    Attributes
    ----------
    graph : TrafficGraph
    board : BoardSpec
    limits : CoreLimits
    keys : BlockKeys
        Shared cache of per-block config keys.
    traffic : scipy.sparse.csr_matrix
        Symmetric block traffic being minimized across chips.
    sizes : ndarray
        `packing.effective_size` of every block.
    pins : dict
        ``{block: chip}`` for blocks the user fixed to a chip.
    seed : int
    spread : bool
        Balance load over all chips instead of using the fewest.
    """

    graph: object
    board: object
    limits: object
    keys: BlockKeys
    traffic: sp.csr_matrix
    sizes: np.ndarray
    pins: dict
    seed: int = 0
    spread: bool = False
    #: Strategies may record what they learned, e.g. ``min_chips`` after a failure.
    notes: dict = field(default_factory=dict)

    @property
    def cores_per_chip(self):
        """Cores on each chip of the board."""
        return self.board.cores_per_chip


class Packed:
    """Cores (each a `CoreBin`) and the chip of each core; mutable during refinement.

    The methods keep the chip of each core, the cores of each chip and each core's
    resource usage up to date as they change things, so one change costs time in
    proportion to one chip's cores, not to all cores. Assigning ``cores`` or
    ``core_chip`` as a whole rebuilds these indexes when they are next needed.
    """

    def __init__(self, ctx, cores, core_chip):
        self.ctx = ctx
        #: (resources,) capacities of a core.
        self.capacity = ctx.limits.capacity_vector()
        self.cores = cores
        self.core_chip = core_chip
        self.block_core = np.full(ctx.graph.n_blocks, -1, dtype=np.int64)
        sizes, flat = _core_blocks(self.cores)
        self.block_core[flat] = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)

    # ------------------------------------------------------------ indexes
    @property
    def cores(self):
        """The cores (a list of `CoreBin`; replace a core only through the methods,
        or assign a whole new list)."""
        return self._cores

    @cores.setter
    def cores(self, cores):
        self._cores = list(cores)
        self._usage = None

    @property
    def core_chip(self):
        """Chip of each core (a list; change it through `move_core` or by assigning
        a whole new sequence, so the per-chip index stays right)."""
        return self._core_chip

    @core_chip.setter
    def core_chip(self, chips):
        self._core_chip = [int(c) for c in chips]
        self._chip_array = None
        self._on_chip = None
        self._chip_arrays = {}  # chip -> `chip_core_array`
        self._slots = None  # `chip_slots`
        self._stale_slots = set()  # chips whose row of it is out of date

    def _chips(self):
        """(n_cores,) chip of each core (a view; do not keep it across changes)."""
        n = len(self._core_chip)
        if self._chip_array is None:
            self._chip_array = np.empty(max(2 * n, 16), dtype=np.int64)
            self._chip_array[:n] = self._core_chip
        return self._chip_array[:n]

    def _chip_sets(self):
        """Chip -> set of its core indices."""
        if self._on_chip is None:
            on_chip = {}
            for i, chip in enumerate(self._core_chip):
                on_chip.setdefault(chip, set()).add(i)
            self._on_chip = on_chip
        return self._on_chip

    def usage(self):
        """(n_cores, 4) resources each core uses (a view; do not keep it across
        changes)."""
        return self._rows()[:, :_ALONE]

    def alone_cores(self):
        """(n_cores,) 1 where a core holds a block that must be alone (it takes no
        other block), else 0 (a view; do not keep it across changes)."""
        return self._rows()[:, _ALONE]

    def _rows(self):
        """(n_cores, 5): `usage` and `alone_cores` side by side, kept as cores change."""
        n = len(self._cores)
        if self._usage is None or self._usage.shape[0] < n:
            rows = np.zeros((max(2 * n, 16), _ALONE + 1), dtype=np.int64)
            if n:
                rows[:n, :_ALONE] = np.fromiter(
                    itertools.chain.from_iterable(core.used for core in self._cores),
                    dtype=np.int64, count=n * _ALONE).reshape(n, _ALONE)
                rows[:n, _ALONE] = np.fromiter((core.alone for core in self._cores),
                                               dtype=np.int64, count=n)
            self._usage = rows
        return self._usage[:n]

    def _record(self, i, core):
        """Record core ``i``'s usage after a change."""
        if self._usage is not None:
            self._usage[i, :_ALONE] = core.used
            self._usage[i, _ALONE] = core.alone

    def replace_core(self, i, core):
        """Replace core ``i`` by ``core`` on the same chip and record its usage.

        ``core`` holds some of core ``i``'s blocks; set `block_core` of the others
        before placing them elsewhere."""
        self._cores[i] = core
        self._record(i, core)

    def _append(self, core, chip):
        """Append ``core`` on ``chip``; returns its index."""
        i = len(self._cores)
        self._cores.append(core)
        self._core_chip.append(int(chip))
        if self._chip_array is not None:
            if i == self._chip_array.size:
                self._chip_array = np.concatenate([self._chip_array, self._chip_array])
            self._chip_array[i] = chip
        if self._usage is not None and i == self._usage.shape[0]:
            self._usage = np.concatenate([self._usage, self._usage])
        self._record(i, core)
        if self._on_chip is not None:
            self._on_chip.setdefault(int(chip), set()).add(i)
        self._cores_changed(chip)
        return i

    # ------------------------------------------------------------ queries
    @property
    def n_chips(self):
        """Chips in use (chip ids are 0 .. n_chips - 1)."""
        return int(self._chips().max()) + 1 if self._core_chip else 0

    def block_chip(self, blocks=None):
        """Chip of each block (of ``blocks`` only, if given)."""
        if blocks is None:
            return self._chips()[self.block_core]
        return self._chips()[self.block_core[blocks]]

    def chip_cores(self, chip):
        """Indices of the cores on ``chip``, ascending."""
        return self.chip_core_array(chip).tolist()

    def chip_core_array(self, chip):
        """Indices of the cores on ``chip``, ascending, as an int64 array (kept until
        the chip's cores change: do not modify it)."""
        chip = int(chip)
        found = self._chip_arrays.get(chip)
        if found is None:
            found = self._chip_arrays[chip] = np.array(
                sorted(self._chip_sets().get(chip, ())), dtype=np.int64)
        return found

    def chip_slots(self, n_chips=0):
        """The cores of every chip as arrays: ``(slots, lengths)``.

        ``slots[c, :lengths[c]]`` are the indices of the cores on chip ``c``,
        ascending (the rest of the row is -1). Kept from call to call: only the rows
        of chips whose cores changed are written again (do not modify them).

        Parameters
        ----------
        n_chips : int
            Rows wanted at least (there is one for every chip with cores; chips
            without cores have length 0).
        """
        if self._slots is None or self._slots[0].shape[0] < n_chips:
            n = max(int(n_chips), self.n_chips)
            chips = self._chips()
            order = np.argsort(chips, kind="stable")
            lengths = np.bincount(chips, minlength=n)
            slots = np.full((n, max(int(lengths.max(initial=0)), 1)), -1, dtype=np.int64)
            starts = np.cumsum(lengths) - lengths
            slots[chips[order], np.arange(order.size) - starts[chips[order]]] = order
            self._slots = (slots, lengths)
            self._stale_slots = set()
        slots, lengths = self._slots
        if self._stale_slots and max(self._stale_slots) >= slots.shape[0]:
            self._slots = None  # a chip beyond its rows
            return self.chip_slots(n_chips)
        for chip in self._stale_slots:
            cores = self.chip_core_array(chip)
            if cores.size > slots.shape[1]:
                wider = np.full((slots.shape[0], 2 * cores.size), -1, dtype=np.int64)
                wider[:, :slots.shape[1]] = slots
                slots = wider
                self._slots = (slots, lengths)
            slots[chip, :cores.size] = cores
            slots[chip, cores.size:] = -1
            lengths[chip] = cores.size
        self._stale_slots = set()
        return slots, lengths

    def _cores_changed(self, *chips):
        """Forget the indexes of ``chips``, whose cores changed."""
        for chip in chips:
            self._chip_arrays.pop(chip, None)
        if self._slots is not None:
            self._stale_slots.update(chips)

    def cores_by_chip(self):
        """List, per chip, of the indices of its cores."""
        return [self.chip_cores(c) for c in range(self.n_chips)]

    def on_core_order(self):
        """Position of each block on its core, as packing laid it out.

        Packing checked the rules for exactly this order (the first block keeps its
        own synapse formats; pop16 receivers have their ids in range), so a plan
        keeps it.
        """
        sizes, flat = _core_blocks(self.cores)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        order = np.zeros(self.block_core.size, dtype=np.int64)
        order[flat] = np.arange(flat.size) - starts
        return order

    def cores_on_chips(self, n_chips=None):
        """(n_chips,) number of cores on each chip."""
        n = self.n_chips if n_chips is None else n_chips
        return np.bincount(self._chips(), minlength=n)

    # ------------------------------------------------- output axon entries
    def sync_entries(self):
        """Count every core's output axon entries for the current chips.

        A block's entries depend on which chips its targets are on, so after cores
        or blocks change chips outside `move_block`, this recomputes them (and sets
        ``ctx.keys`` to this assignment, for blocks added from now on).

        Returns
        -------
        (n_cores,) int64 ndarray
            Output axon entries of each core.
        """
        g, keys = self.ctx.graph, self.ctx.keys
        keys.set_chips(self.block_chip())
        n = len(self._cores)
        base = np.bincount(self.block_core, weights=g.resources[:, OUT_AXONS], minlength=n)
        extra = np.bincount(self.block_core, weights=keys.extra, minlength=n)
        total = (base + extra).astype(np.int64)
        for core, t, x in zip(self._cores, total.tolist(), extra.astype(np.int64).tolist()):
            core.used[OUT_AXONS] = t
            core.interchip = x
        if self._usage is not None:
            self._usage[:n, OUT_AXONS] = total
        return total

    def entry_changes(self, b, dest):
        """What moving block ``b`` to chip ``dest`` does to output axon entries.

        Returns
        -------
        extra : int
            ``b``'s extra entries for targets on other chips, once on ``dest``.
        senders : (m,) int64 ndarray
            Blocks with axons into ``b`` whose extra entries change.
        delta : (m,) int64 ndarray
            Their change (+ when ``b`` leaves their chip, - when it joins it).
        """
        g = self.ctx.graph
        m, c = g.interchip_entries, g.interchip_entries_csc
        return _entry_changes(m.indptr, m.indices, m.data, c.indptr, c.indices, c.data,
                              self.block_core, self._chips(), int(b), int(dest))

    def shift_entries(self, senders, delta):
        """Apply the change of `entry_changes` to the senders and their cores."""
        keys = self.ctx.keys
        for s, d in zip(senders.tolist(), delta.tolist()):
            keys.set_block_extra(s, keys.extra_of(s) + d)
            i = int(self.block_core[s])
            self._cores[i].shift_entries(d)
            if self._usage is not None:
                self._usage[i, OUT_AXONS] += d

    def move_block(self, b, dest, choose_core, max_cores):
        """Move block ``b`` to chip ``dest``, keeping every core's output axon entries
        within the limit; returns whether it moved.

        Parameters
        ----------
        b, dest : int
        choose_core : callable
            ``choose_core(b, cores)``: the index of a core among ``cores`` (those of
            ``dest``) that ``b`` fits, with its entries on ``dest``, or None. It must
            be monotone: finding none for ``b`` with fewer entries means none with
            more (a full chip is first asked with no entries for other chips, which
            settles most failing moves before they are counted).
        max_cores : int
            Most cores ``dest`` may hold (a new core opens only below it).
        """
        keys = self.ctx.keys
        before = keys.extra_of(b)
        cores = self.chip_cores(dest)
        full = len(cores) >= max_cores
        if full:
            if before:
                keys.set_block_extra(b, 0)
            found = choose_core(b, cores)
            if before:
                keys.set_block_extra(b, before)
            if found is None:
                return False
        extra, senders, delta = self.entry_changes(b, dest)
        keys.set_block_extra(b, extra)
        # Monotone: the cores ranked before ``found`` do not take b with more entries.
        target = found if full and self._cores[found].fits(b) else choose_core(b, cores)
        if target is None and (full or self.ctx.graph.resources[b, OUT_AXONS] + extra >
                               self.ctx.limits.out_axons):
            keys.set_block_extra(b, before)
            return False
        # The senders' cores are checked last: most moves fail for want of a core.
        if not self.entries_fit(senders, delta):
            keys.set_block_extra(b, before)
            return False
        self.shift_entries(senders, delta)
        target_bin = None if target is None else self._cores[target]
        self.remove_block(b)
        if target_bin is None:
            self.new_core(b, dest)
        else:
            # remove_block may delete b's old core and renumber the last core.
            self.add_block(b, int(self.block_core[target_bin.blocks[0]]))
        return True

    # ------------------------------------------- several blocks changing chips
    def group_entry_changes(self, blocks, dests):
        """What moving ``blocks`` at once, each to its chip in ``dests``, does to output
        axon entries (`entry_changes` for a group: the group's own targets and senders
        count at their new chips).

        Parameters
        ----------
        blocks : (n,) int array
        dests : (n,) int array
            New chip of each block (a chip no block is on, e.g. -1, for "off its
            chip, anywhere": the senders left behind are then counted exactly).

        Returns
        -------
        own : (n,) int64 ndarray
            Change of each moved block's extra entries (from what it counts now).
        senders : (m,) int64 ndarray
            Blocks outside the group, with axons into it, whose extra entries change.
        delta : (m,) int64 ndarray
            Their change (+ for senders the group leaves behind, - for senders on
            the chip a block joins).
        """
        g = self.ctx.graph
        blocks = np.asarray(blocks, dtype=np.int64).reshape(-1)
        dests = np.asarray(dests, dtype=np.int64).reshape(-1)
        order = np.argsort(blocks)
        sorted_blocks = blocks[order]

        def in_group(x):
            pos = np.minimum(np.searchsorted(sorted_blocks, x), sorted_blocks.size - 1)
            return sorted_blocks[pos] == x, order[pos]

        m = g.interchip_entries
        idx, owner = _row_entries(m.indptr, blocks)
        targets = m.indices[idx]
        chips = self.block_chip(targets)
        inside, which = in_group(targets)
        chips[inside] = dests[which[inside]]
        far = m.data[idx] * (chips != dests[owner])
        own = np.bincount(owner, weights=far, minlength=blocks.size).astype(np.int64)
        own -= self.ctx.keys.extra[blocks]
        c = g.interchip_entries_csc
        idx, owner = _row_entries(c.indptr, blocks)
        senders = c.indices[idx].astype(np.int64)
        keep = ~in_group(senders)[0]
        senders, idx, owner = senders[keep], idx[keep], owner[keep]
        if senders.size == 0:
            return own, _NO_SENDERS[0], _NO_SENDERS[1]
        weights = c.data[idx].astype(np.int64)
        chips = self.block_chip(senders)
        before = self.block_chip(blocks)[owner]
        delta = weights * ((chips != dests[owner]).astype(np.int64) -
                           (chips != before).astype(np.int64))
        changed = delta != 0
        return own, senders[changed], delta[changed]

    def entries_fit(self, blocks, delta):
        """Whether every core whose blocks' extra entries grow in all (by ``delta``,
        summed over its ``blocks``) stays within its output axon entries."""
        if blocks.size == 0 or delta.max() <= 0:
            return True
        cap = self.ctx.limits.out_axons
        if blocks.size <= 64:  # a few: one compiled pass, no arrays built
            return _few_entries_fit(blocks, delta, self.block_core, self._rows(),
                                    OUT_AXONS, cap)
        cores, inverse = np.unique(self.block_core[blocks], return_inverse=True)
        change = np.bincount(inverse, weights=delta, minlength=cores.size)
        grow = change > 0
        return bool(np.all(self.usage()[cores[grow], OUT_AXONS] + change[grow] <= cap))

    def left_behind(self, i):
        """``(senders, delta)``: the blocks of core ``i``'s chip, on other cores, with
        axons into core ``i``'s blocks, and the entries each such axon adds to them
        when the blocks leave the chip (wherever they go; a sender may repeat)."""
        return _Departure(self, i).left_behind()

    def can_leave_chip(self, i):
        """Whether all of core ``i``'s blocks may leave its chip: the cores of the
        blocks left behind that send to them (one more entry per axon) stay within
        their output axon entries. Where they go does not matter for these."""
        return _Departure(self, i).can_leave()

    def entries_on_chips(self, i, n_chips):
        """(n_chips,) output axon entries core ``i`` would need on each chip, were it
        moved there whole (its blocks' targets on that chip, or on core ``i``, take
        no extra entry)."""
        return _Departure(self, i).entries_on_chips(n_chips)

    def move_core_checked(self, i, chip, check=True):
        """Put core ``i`` on ``chip`` if every core stays within its output axon
        entries: core ``i`` itself, counted on ``chip``, and the cores of the blocks
        that send to it. Entries are updated; returns whether it moved. With
        ``check=False`` the core moves whatever the entries (they are still
        counted)."""
        return _Departure(self, i).move(int(chip), check)

    # ------------------------------------------------------------ changes
    def move_core(self, i, chip):
        """Put core ``i`` on ``chip``."""
        chip = int(chip)
        old = self._core_chip[i]
        self._core_chip[i] = chip
        if self._chip_array is not None:
            self._chip_array[i] = chip
        if self._on_chip is not None:
            self._on_chip[old].discard(i)
            self._on_chip.setdefault(chip, set()).add(i)
        self._cores_changed(old, chip)

    def remove_block(self, b):
        """Take block ``b`` off its core; an emptied core is deleted."""
        i = int(self.block_core[b])
        rest = [x for x in self._cores[i].blocks if x != b]
        self.block_core[b] = -1
        if rest:
            ctx = self.ctx
            self.replace_core(i, CoreBin.of(ctx.graph, ctx.limits, ctx.keys, rest))
        else:
            self.delete_core(i)

    def delete_core(self, i):
        """Delete core ``i``; the last core takes its index."""
        last = len(self._cores) - 1
        chip, last_chip = self._core_chip[i], self._core_chip[last]
        if self._on_chip is not None:
            self._on_chip[chip].discard(i)
            if i != last:
                self._on_chip[last_chip].discard(last)
                self._on_chip[last_chip].add(i)
        self._cores_changed(chip, last_chip)
        if i != last:
            self._cores[i] = self._cores[last]
            self._core_chip[i] = last_chip
            self.block_core[self._cores[i].blocks] = i
            if self._chip_array is not None:
                self._chip_array[i] = last_chip
            if self._usage is not None:
                self._usage[i] = self._usage[last]
        self._cores.pop()
        self._core_chip.pop()

    def add_block(self, b, core_index):
        """Append block ``b`` to an existing core."""
        core = self._cores[core_index]
        core.add(b)
        self._record(core_index, core)
        self.block_core[b] = core_index

    def new_core(self, b, chip):
        """Open a new core on ``chip`` holding block ``b``."""
        ctx = self.ctx
        core = CoreBin(ctx.graph, ctx.limits, ctx.keys)
        core.add(b)
        self.block_core[b] = self._append(core, chip)

    def absorb(self, i, targets):
        """Move every block of core ``i`` into the cores ``targets``, then delete core i.

        Blocks go largest first, each to the first target (in the given order) it fits,
        among the first `WINDOW` targets with room for its resources. All or nothing:
        returns False, changing nothing, when some block fits no target.
        """
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if not targets.size:
            return False
        used = self.usage()[targets]
        need = self._shared_need(self._cores[i].blocks)
        if np.any(need.sum(axis=0) > (self.capacity - used).clip(min=0).sum(axis=0)):
            return False
        return self._absorb(i, _TargetScan(self, [0], targets[None, :],
                                           np.array([targets.size])))

    def absorb_chips(self, i, chips, room=None, leave=None, then=None):
        """`absorb` into the cores of ``chips``: chip by chip in the given order, each
        chip's cores in index order, as if they were one list of targets.

        Output axon entries are kept within the limit on every core: each block is
        checked on each chip with its entries there (its targets on core ``i``
        counted as on other chips: at most what they will be); once all have a
        place, nothing moves unless the blocks left on core ``i``'s chip that send
        to them keep their cores within their entries (``leave``); then every
        entry is recounted exactly (`group_entry_changes`).

        Parameters
        ----------
        i : int
            Core to empty.
        chips : sequence of int
        room : (n_chips, 4) int array, optional
            For each chip, at least the free room of any of its cores per resource;
            chips without room for a block are skipped for it (they could not take
            it anyway).
        leave : callable, optional
            ``leave()`` -> whether core ``i``'s blocks may leave their chip, asked
            once they all have a place (it may change the other cores of that chip,
            e.g. to make room); default `can_leave_chip`.
        then : (n_chips,) bool array, optional
            Chips taken after ``chips``, in index order.
        """
        chips = np.asarray(chips, dtype=np.int64).reshape(-1)
        n = int(chips.max(initial=-1)) + 1
        if then is not None:
            n = max(n, then.size)
        if room is not None:
            if n > room.shape[0]:
                raise IndexError(f"room has {room.shape[0]} chips, chip {n - 1} asked for")
            n = room.shape[0]
        slots, lengths = self.chip_slots(n)
        if then is not None and then.size < slots.shape[0]:
            then = np.concatenate([then, np.zeros(slots.shape[0] - then.size, dtype=bool)])
        leave = leave or (lambda: self.can_leave_chip(i))
        return self._absorb(i, _TargetScan(self, chips, slots, lengths, room,
                                           entries=True, then=then), leave)

    def _absorb(self, i, scan, ready=None):
        blocks = sorted(self._cores[i].blocks, key=lambda b: -self.ctx.sizes[b])
        need = self._shared_need(blocks)
        for b, res in zip(blocks, need):
            if not scan.place(b, res):
                scan.restore()
                return False
        if ready is not None and not ready():
            scan.restore()
            return False
        if scan.entries:
            dests = [scan.group_of[b] for b in blocks]
            own, senders, delta = self.group_entry_changes(blocks, dests)
        for j, cand in scan.staged.items():
            self.replace_core(j, cand)
            self.block_core[cand.blocks] = j
        self.delete_core(i)
        if scan.entries:
            self.shift_entries(*_nonzero(np.concatenate([blocks, senders]),
                                         np.concatenate([own, delta])))
        return True

    def _shared_need(self, blocks):
        """Resources of ``blocks`` joining occupied cores (widened synapse bits)."""
        return self.ctx.keys.shared_need()[np.asarray(blocks, dtype=np.int64)]

    def compact_chips(self):
        """Renumber chips ``0 .. k-1`` in order of first use, dropping empty chips."""
        used = sorted(set(self.core_chip))
        remap = {c: i for i, c in enumerate(used)}
        self.core_chip = [remap[c] for c in self.core_chip]


_NO_SENDERS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
_NO_GROUPS = np.zeros(0, dtype=bool)
_NO_ROOM = np.zeros((0, len(RESOURCES)), dtype=np.int64)


def _rows_of(m, rows):
    """``(indices, data, lengths)``: the stored entries of a few ``rows`` of the
    compressed matrix ``m``, row after row (slices joined: for a handful of rows
    cheaper than `_row_entries`)."""
    ptr = m.indptr
    spans = [(ptr[r], ptr[r + 1]) for r in rows]
    if not spans:
        return m.indices[:0], m.data[:0], []
    return (np.concatenate([m.indices[a:z] for a, z in spans]),
            np.concatenate([m.data[a:z] for a, z in spans]),
            [int(z - a) for a, z in spans])


def _core_blocks(cores):
    """``(sizes, flat)``: the number of blocks of each of ``cores`` (a list) and all
    their blocks, core after core (an int64 array)."""
    blocks = [core.blocks for core in cores]
    sizes = list(map(len, blocks))
    flat = np.fromiter(itertools.chain.from_iterable(blocks), dtype=np.int64,
                       count=sum(sizes))
    return sizes, flat


@njit(cache=True)
def _entry_changes(indptr, indices, data, c_indptr, c_indices, c_data, block_core,
                   core_chip, b, dest):
    """`Packed.entry_changes` from the inter-chip entry matrix (CSR and CSC) and
    the block -> core -> chip assignment (about a microsecond, where the same in
    numpy costs some 20: a dozen calls on arrays of a few entries)."""
    extra = 0
    for k in range(indptr[b], indptr[b + 1]):
        if core_chip[block_core[indices[k]]] != dest:
            extra += data[k]
    own = core_chip[block_core[b]]
    start, stop = c_indptr[b], c_indptr[b + 1]
    senders = np.empty(stop - start, dtype=np.int64)
    delta = np.empty(stop - start, dtype=np.int64)
    n = 0
    for k in range(start, stop):
        s = c_indices[k]
        chip = core_chip[block_core[s]]
        d = 0
        if chip == own:
            d += c_data[k]
        if chip == dest:
            d -= c_data[k]
        if d != 0:
            senders[n] = s
            delta[n] = d
            n += 1
    return int(extra), senders[:n], delta[:n]


@njit(cache=True)
def _few_entries_fit(blocks, delta, block_core, usage, column, cap):
    """`Packed.entries_fit` for a few ``blocks``: each core's change summed (quadratic
    in the blocks) and checked against ``usage[:, column]``."""
    n = blocks.size
    for i in range(n):
        j = block_core[blocks[i]]
        seen = False
        for k in range(i):
            if block_core[blocks[k]] == j:
                seen = True
                break
        if seen:
            continue
        total = 0
        for k in range(i, n):
            if block_core[blocks[k]] == j:
                total += delta[k]
        if total > 0 and usage[j, column] + total > cap:
            return False
    return True


def _nonzero(blocks, delta):
    """``(blocks, delta)`` without the blocks whose change is 0."""
    keep = delta != 0
    return blocks[keep], delta[keep]


class _Departure:
    """Core ``i`` leaving its chip whole: the axons of its blocks to blocks outside
    it and the axons into them from outside, read once for the questions
    `Packed.can_leave_chip`, `Packed.entries_on_chips` and
    `Packed.move_core_checked` answer (they ask one each; `repair_overfull` keeps
    one for all three)."""

    def __init__(self, packed, i):
        g = packed.ctx.graph
        self.packed, self.i = packed, i
        self.blocks = np.asarray(packed.cores[i].blocks, dtype=np.int64)
        self.chip = packed.core_chip[i]
        targets, weights, lengths = _rows_of(g.interchip_entries, self.blocks.tolist())
        outside = packed.block_core[targets] != i
        self.owner = np.repeat(np.arange(self.blocks.size), lengths)[outside]
        self.weights = weights[outside].astype(np.int64)
        self.target_chips = packed.block_chip(targets[outside])
        senders, weights, _ = _rows_of(g.interchip_entries_csc, self.blocks.tolist())
        outside = packed.block_core[senders] != i
        self.senders = senders[outside].astype(np.int64)
        self.sender_weights = weights[outside].astype(np.int64)
        self.sender_chips = packed.block_chip(self.senders)

    def left_behind(self):
        """`Packed.left_behind`: the senders on the core's chip and their entries."""
        behind = self.sender_chips == self.chip
        return self.senders[behind], self.sender_weights[behind]

    def can_leave(self):
        """`Packed.can_leave_chip`: whether the cores of the senders left behind keep
        their entries."""
        return self.packed.entries_fit(*self.left_behind())

    def entries_on_chips(self, n_chips):
        """`Packed.entries_on_chips`: (n_chips,) the core's entries on each chip."""
        packed = self.packed
        reach = np.bincount(self.target_chips, weights=self.weights, minlength=n_chips)
        base = packed.usage()[self.i, OUT_AXONS] - packed.cores[self.i].interchip
        return (base + self.weights.sum() - reach[:n_chips]).astype(np.int64)

    def move(self, dest, check=True):
        """`Packed.move_core_checked`: move the core to chip ``dest`` if every core
        keeps its entries (counted and updated); whether it moved."""
        packed = self.packed
        far = np.where(self.target_chips != dest, self.weights, 0)
        own = np.bincount(self.owner, weights=far, minlength=self.blocks.size)
        own = own.astype(np.int64) - packed.ctx.keys.extra[self.blocks]
        moving = dest != self.chip  # to its own chip: no sender's entries change
        behind = (self.sender_chips == self.chip) & moving
        joined = (self.sender_chips == dest) & moving
        senders = self.senders[behind | joined]
        delta = np.where(behind, self.sender_weights, -self.sender_weights)[behind | joined]
        if check and (packed.usage()[self.i, OUT_AXONS] + own.sum() >
                      packed.ctx.limits.out_axons or not packed.entries_fit(senders, delta)):
            return False
        packed.move_core(self.i, dest)
        packed.shift_entries(*_nonzero(np.concatenate([self.blocks, senders]),
                                       np.concatenate([own, delta])))
        return True


class _TargetScan:
    """Where `Packed.absorb` puts blocks: groups of target cores in order, with the
    changes staged on copies of the cores.

    Groups are rows of ``slots`` (their cores, ``lengths`` of each row used), taken
    in ``groups`` order and then, if given, those of ``then`` (a mask) in index
    order. A block's candidates, the first `WINDOW` cores with room for its
    resources, are found by `bestfit.first_with_room`; the rules are then checked on
    them one by one (`CoreBin.fits`).
    """

    def __init__(self, packed, groups, slots, lengths, room=None, entries=False,
                 then=None):
        self.packed = packed
        self.groups = np.asarray(groups, dtype=np.int64)
        self.then = _NO_GROUPS if then is None else then
        self.slots, self.lengths = slots, lengths
        self.room = _NO_ROOM if room is None else room
        self.cap = packed.capacity
        self.staged = {}  # core index -> staged copy
        #: Groups are chips other than the blocks' own: each block is charged its
        #: extra output axon entries on the chip it is tried on.
        self.entries = entries
        self.extra_before = {}  # block -> its extra entries before it was staged
        self.group_of = {}  # block -> group it was staged in

    def place(self, b, res):
        """Stage block ``b`` (needing ``res``) on the first target it fits; False if
        none of the first `WINDOW` targets with room for it takes it."""
        packed = self.packed
        keys = packed.ctx.keys
        targets = weights = _NO_SENDERS[0]
        out = 0
        if self.entries:
            # On each chip the block takes an extra entry per axon to another chip;
            # its targets are counted where they are now (so blocks still to be
            # placed count as on other chips: at least what they will be).
            self.extra_before.setdefault(b, keys.extra_of(b))
            m = packed.ctx.graph.interchip_entries
            start, stop = m.indptr[b], m.indptr[b + 1]
            targets = packed.block_chip(m.indices[start:stop])
            weights = m.data[start:stop]
            out = int(packed.ctx.graph.resources[b, OUT_AXONS])
            res = res.copy()
            res[OUT_AXONS] = 0
        if self.staged:
            staged = np.fromiter(self.staged, dtype=np.int64, count=len(self.staged))
            staged_used = np.array([self.staged[j].used for j in staged.tolist()],
                                   dtype=np.int64)
        else:
            staged, staged_used = _NO_SENDERS[0], _NO_ROOM
        cores, groups, extras = first_with_room(
            self.groups, self.then, self.room, res, out, targets, weights, self.slots,
            self.lengths, packed.usage(), packed.alone_cores(), self.cap, staged,
            staged_used, WINDOW)
        last = -1
        for j, group, extra in zip(cores.tolist(), groups.tolist(), extras.tolist()):
            if self.entries and group != last:
                last = group
                keys.set_block_extra(b, extra)
            cand = self.staged.get(j, packed.cores[j])
            if cand.fits(b):
                if j not in self.staged:
                    self.staged[j] = cand = cand.copy()
                cand.add(b)
                self.group_of[b] = group
                return True
        return False

    def restore(self):
        """Give the blocks tried their extra output axon entries back (nothing staged
        is kept)."""
        keys = self.packed.ctx.keys
        for b, extra in self.extra_before.items():
            keys.set_block_extra(b, extra)


class ChipRoom:
    """For each chip, the most free room any of its cores has, per resource.

    A block can only join a core of a chip where it fits this room, so chips
    without it can be skipped before any core of theirs is checked.
    """

    def __init__(self, packed, n_chips):
        self.packed = packed
        self.cap = packed.ctx.limits.capacity_vector()
        self.room = np.full((n_chips, self.cap.size), -1, dtype=np.int64)
        chips = packed._chips()
        if chips.size:
            order = np.argsort(chips, kind="stable")
            first = np.flatnonzero(np.diff(chips[order], prepend=-1))
            self.room[chips[order[first]]] = np.maximum.reduceat(
                self.cap - packed.usage()[order], first, axis=0)

    def update(self, chips):
        """Recompute the room of ``chips`` after their cores changed."""
        usage = self.packed.usage()
        for chip in set(int(c) for c in chips):
            cores = self.packed.chip_core_array(chip)
            self.room[chip] = (self.cap - usage[cores]).max(axis=0) if cores.size else -1


#: `pack_by_chip` projects the cores of all chips from a sample of chips only when
#: there are at least this many chips.
PROJECT_MIN_CHIPS = 64
#: Chips in that sample: at least this many, and at least 1/8 of the chips.
PROJECT_SAMPLE = 16
#: Standard errors of the projection added when it gives the chips to try next.
PROJECT_MARGIN = 2.0


def pack_by_chip(ctx, block_chip, n_chips, max_cores=None):
    """Pack each chip's blocks onto as few cores as possible (best fit by size).

    Traffic inside a chip costs the same whichever core carries it, so only size
    matters here.

    Parameters
    ----------
    ctx : Context
    block_chip : (n_blocks,) int array
    n_chips : int
    max_cores : int, optional
        Cores the chips may use in all. With at least `PROJECT_MIN_CHIPS` chips, a
        random sample of chips is packed first; when the cores they need, projected
        to all chips, exceed ``max_cores``, the rest is not packed: the chips the
        projection needs with `PROJECT_MARGIN` standard errors to spare go to
        ``ctx.notes["min_chips"]`` and the result is None.
        The projection is a best guess, not a bound: packing every chip of a count
        that then fails costs as much as packing one that fits, and each count
        tried costs a cut, so a count the projection puts over (or, with the
        margin, near) its cores is skipped even when it might just fit. At 100,000
        blocks the projection's standard error is 30-40 cores (a third of a chip).

    Returns
    -------
    Packed or None
        Chips may still be over-full.
    """
    order = np.argsort(block_chip, kind="stable")
    bounds = np.searchsorted(block_chip[order], np.arange(n_chips + 1))
    members = [order[bounds[c]:bounds[c + 1]] for c in range(n_chips)]
    ctx.keys.prefetch(order)
    ctx.keys.set_chips(block_chip)
    packed = {}
    if max_cores is not None and n_chips >= PROJECT_MIN_CHIPS:
        rng = np.random.default_rng(ctx.seed)
        sample = rng.permutation(n_chips)[:max(PROJECT_SAMPLE, n_chips // 8)]
        packed.update(_pack_chips(ctx, members, sample.tolist()))
        counts = np.array([len(packed[c]) for c in sample.tolist()], dtype=np.float64)
        projected, error = _projected_cores(ctx, block_chip, n_chips, sample, counts)
        ctx.notes["projected_cores"] = (projected, error)
        if projected > max_cores:
            # The chips the cores need with two standard errors to spare: a count
            # below it would most likely be rejected again after another cut.
            margin = projected + PROJECT_MARGIN * error
            ctx.notes["min_chips"] = int(np.ceil(margin / ctx.cores_per_chip))
            return None
    packed.update(_pack_chips(ctx, members, [c for c in range(n_chips) if c not in packed]))
    cores, core_chip = [], []
    for chip in range(n_chips):
        chip_cores = packed[chip]
        cores.extend(chip_cores)
        core_chip.extend([chip] * len(chip_cores))
    return Packed(ctx, cores, core_chip)


def projected_chip_count(ctx, first, max_chips):
    """Chips worth trying first, projected before any cut; at least ``first``.

    With `PROJECT_MIN_CHIPS` chips or more, the blocks are dealt at random into
    ``first`` groups of equal size (`packing.effective_size`); a sample of the
    groups is packed and the cores of all projected (`_projected_cores`). A METIS cut
    packs a little worse than random groups (its parts are uneven and each leaves a
    core part-filled), so the chips returned leave room for `PROJECT_MARGIN`
    standard errors plus half a core per chip. Like the projection after a cut, this
    is a best guess: it skips counts that most likely fail, each of which would
    cost a METIS cut of the whole graph.
    """
    if first < PROJECT_MIN_CHIPS or ctx.spread:
        return first
    g = ctx.graph
    rng = np.random.default_rng(ctx.seed)
    dealt = rng.permutation(g.n_blocks)
    cum = np.cumsum(ctx.sizes[dealt])
    group = np.empty(g.n_blocks, dtype=np.int64)
    group[dealt] = np.minimum((cum / cum[-1] * first).astype(np.int64), first - 1)
    sample = rng.permutation(first)[:max(PROJECT_SAMPLE, first // 8)]
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(first + 1))
    members = [order[bounds[c]:bounds[c + 1]] for c in range(first)]
    ctx.keys.set_extra(np.zeros(g.n_blocks, dtype=np.int64))
    packed = _pack_chips(ctx, members, sample.tolist())
    counts = np.array([len(packed[c]) for c in sample.tolist()], dtype=np.float64)
    projected, error = _projected_cores(ctx, group, first, sample, counts)
    need = projected + PROJECT_MARGIN * error + 0.5 * first
    return int(min(max(first, np.ceil(need / ctx.cores_per_chip)), max_chips))


def _pack_chips(ctx, members, chips):
    """Chip -> its cores, for ``chips`` (each chip's blocks packed by `best_fit`)."""
    full = [c for c in chips if members[c].size]
    found = {c: [] for c in chips}
    found.update(zip(full, best_fit_many(ctx.graph, [members[c] for c in full],
                                         ctx.limits, ctx.keys)))
    return found


def _projected_cores(ctx, block_chip, n_chips, sample, counts):
    """Cores all chips need, projected from the ``counts`` of the ``sample`` chips,
    and the standard error of that projection.

    Ratio estimate on each chip's resource bound (the largest total of any resource
    over its capacity, plus one core per block that needs its own core), which
    predicts a chip's cores closely.
    """
    g = ctx.graph
    alone = g.alone
    res = g.resources.astype(np.float64)
    res[:, SYNAPSE_BITS] = np.minimum(res[:, SYNAPSE_BITS], g.shared_synapse_bits)
    res[alone] = 0.0
    cap = ctx.limits.capacity_vector()
    bound = np.zeros(n_chips)
    for r in range(res.shape[1]):
        bound = np.maximum(bound, np.bincount(block_chip, res[:, r], n_chips) / cap[r])
    bound += np.bincount(block_chip, alone.astype(np.float64), n_chips)
    in_sample = bound[sample]
    ratio = counts.sum() / max(in_sample.sum(), 1e-12)
    projected = ratio * bound.sum()
    m = sample.size
    residual = counts - ratio * in_sample
    spread = residual.var(ddof=1) if m > 1 else np.inf
    error = n_chips * np.sqrt(max(0.0, 1.0 - m / n_chips) * spread / m)
    return float(projected), float(error)


def chip_traffic(traffic, block_chip, n_chips):
    """(n_blocks, n_chips) sparse traffic from each block to each chip."""
    n = block_chip.size
    onehot = sp.csr_matrix(
        (np.ones(n), (np.arange(n), block_chip)), shape=(n, n_chips)
    )
    return (traffic @ onehot).tocsr()


def interchip_spikes(graph, block_chip, weight="spikes"):
    """Directed traffic between blocks on different chips."""
    src, dst, val = graph.edge_arrays(weight)
    return float(val[block_chip[src] != block_chip[dst]].sum())
