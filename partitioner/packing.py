"""Blocks onto cores under every per-core rule.

The rules (see ``docs/rules.md``, which gives where each comes from):

* additive resources: compartments, input axon ids, output axon entries, synapse bits
  (a block after the first on a core pays for its widened synapse formats; a block's
  output axon entries grow by one per axon whose target is on another chip, so they
  are counted for a chip assignment: `BlockKeys.set_chips`);
* config tables: distinct compartment profiles (< 32), threshold mantissas (< 8),
  synapse formats (15 usable entries), STDP pre-trace configs (<= 3);
* shared settings: equal vmin/vmax; equal noise settings among blocks with noise on
  (blocks with noise off take the core's setting when the board is emitted);
* blocks that learn or send population axons are alone on their core;
* a block receiving pop16 axons must find all its axon ids below ``2**axon_bits``.

`CoreBin` is the incremental feasibility check every strategy shares. `pack` fills
cores first-fit-decreasing, preferring the core a block exchanges most traffic with;
`best_fit` packs by size alone, screening all open cores at once with arrays.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np

from partitioner.bestfit import PackInput, pack_parts
from partitioner.errors import BlockTooLargeError, CoreRuleError, InfeasibleError
from partitioner.graph import RESOURCES
from partitioner.hardware import CoreLimits, get_board

__all__ = [
    "CoreBin",
    "BlockKeys",
    "effective_size",
    "pack",
    "best_fit",
    "pack_groups",
    "core_violations",
    "check_blocks",
    "check_plan",
    "core_entries",
    "entry_overflow_text",
]

_SYN_BITS = RESOURCES.index("synapse_bits")
_IN_AXONS = RESOURCES.index("in_axons")
_OUT_AXONS = RESOURCES.index("out_axons")
#: Config tables and the graph config kind a block uses when it is first on its core /
#: when it sits at an offset.
_TABLES = (
    ("compartment_cfgs", "compartment_cfgs", "compartment_cfgs"),
    ("vth_cfgs", "vth_cfgs", "vth_cfgs"),
    ("synapse_cfgs", "synapse_cfgs", "synapse_cfgs_shared"),
    ("stdp_pre_cfgs", "stdp_pre_cfgs", "stdp_pre_cfgs"),
)


#: `BlockKeys.prefetch` reads the facts of all blocks as columns when asked for at
#: least this share of them.
BULK_SHARE = 0.25


class BlockKeys:
    """Per-block facts the packing rules read, as Python objects, built lazily.

    Reading numpy scalars and CSR rows once per block (instead of at every fit test)
    keeps packing fast. `prefetch` reads many blocks at once; equal key sets are
    shared between blocks, so a million blocks cost little memory.
    """

    def __init__(self, graph):
        self.graph = graph
        self._csr = {kind: m.tocsr() for kind, m in graph.configs.items()}
        self._info = {}
        #: Every block's facts as columns (`_read_columns`), once read.
        self._columns = None
        self._sets = {}
        self._sizes = {}
        self._need = None
        #: Extra output axon entries of each block for its targets on other chips,
        #: under the chip assignment last given to `set_chips` (none before).
        self.extra = np.zeros(graph.n_blocks, dtype=np.int64)
        self._extra = [0] * graph.n_blocks
        self._pack_input = None
        self._pack_stale = False

    def set_chips(self, block_chip):
        """Count output axon entries for the chip assignment ``block_chip``.

        Cores built afterwards charge each block its entries under that assignment
        (`TrafficGraph.interchip_extra`); cores built before keep what they counted.

        Parameters
        ----------
        block_chip : (n_blocks,) int array
        """
        self.set_extra(self.graph.interchip_extra(block_chip))

    def set_extra(self, extra):
        """Set every block's extra output axon entries (see `set_chips`)."""
        extra = np.asarray(extra, dtype=np.int64)
        if np.array_equal(extra, self.extra):
            return
        self.extra = extra.copy()
        self._extra = extra.tolist()
        if self._need is not None:
            self._need[:, _OUT_AXONS] = self.graph.resources[:, _OUT_AXONS] + extra
        self._pack_stale = True

    def set_block_extra(self, block, value):
        """Set one block's extra output axon entries."""
        self.extra[block] = value
        self._extra[block] = int(value)
        if self._need is not None:
            self._need[block, _OUT_AXONS] = self.graph.resources[block, _OUT_AXONS] + value
        self._pack_stale = True

    def pack_input(self):
        """The `bestfit.PackInput` of the blocks (kept up to date with the extra
        output axon entries)."""
        if self._pack_input is None:
            self._pack_input = PackInput(self.graph, self,
                                         [(first, shared) for _, first, shared in _TABLES])
        elif self._pack_stale:
            self._pack_input.set_extra(self.graph, self.extra)
        self._pack_stale = False
        return self._pack_input

    def extra_of(self, block):
        """Extra output axon entries of ``block`` under the current assignment."""
        return self._extra[block]

    def get(self, kind, block):
        """The set of ``kind`` keys block ``block`` needs."""
        m = self._csr[kind]
        return frozenset(m.indices[m.indptr[block]:m.indptr[block + 1]].tolist())

    def info(self, block):
        """``(resources, shared_bits, alone, core_key, noise_key, pop16_limit,
        first_keys, shared_keys)`` of ``block``; keys are per table in `_TABLES` order."""
        out = self._info.get(block)
        if out is None:
            if self._columns is None:
                self.prefetch([block])  # may read every block's columns (small graphs)
                out = self._info.get(block)
            if out is None:
                out = self._info[block] = self._assembled(block)
        return out

    def prefetch(self, blocks):
        """Read the facts of many ``blocks`` at once (those not read yet).

        When ``blocks`` are a large share of the graph (at least `BULK_SHARE`),
        every block's facts are read as columns of Python objects, and `info`
        assembles a block's tuple from them when first asked: a plan reads few
        blocks' facts after packing (a sixth at 100,000 blocks), and columns cost
        a fraction of a tuple per block.

        Parameters
        ----------
        blocks : array of int
        """
        blocks = np.asarray(blocks, dtype=np.int64).reshape(-1)
        if self._columns is not None:
            return
        if blocks.size >= BULK_SHARE * self.graph.n_blocks:
            self._columns = self._read_columns()
            return
        if len(self._info):
            blocks = np.array([b for b in blocks.tolist() if b not in self._info],
                              dtype=np.int64)
        if blocks.size == 0:
            return
        g = self.graph
        kinds = {kind for t in _TABLES for kind in t[1:]}
        keys = {kind: self._key_sets(kind, blocks) for kind in kinds}
        facts = zip(
            map(tuple, g.resources[blocks].tolist()),
            g.shared_synapse_bits[blocks].tolist(),
            g.alone[blocks].tolist(),
            g.core_key[blocks].tolist(),
            g.noise_key[blocks].tolist(),
            g.pop16_in_limit[blocks].tolist(),
            zip(*(keys[first] for _, first, _ in _TABLES)),
            zip(*(keys[shared] for _, _, shared in _TABLES)),
        )
        self._info.update(zip(blocks.tolist(), facts))

    def _read_columns(self):
        """Every block's facts (`info`), one list per fact (one per resource, and
        one per table for the keys), indexed by block."""
        g = self.graph
        blocks = np.arange(g.n_blocks)
        kinds = {kind for t in _TABLES for kind in t[1:]}
        keys = {kind: self._key_sets(kind, blocks) for kind in kinds}
        return (g.resources.T.tolist(), g.shared_synapse_bits.tolist(), g.alone.tolist(),
                g.core_key.tolist(), g.noise_key.tolist(), g.pop16_in_limit.tolist(),
                [keys[first] for _, first, _ in _TABLES],
                [keys[shared] for _, _, shared in _TABLES])

    def _assembled(self, b):
        """`info` of block ``b`` from `_read_columns` (each column named: a third of
        the time of tuples built in loops)."""
        (r0, r1, r2, r3), shared_bits, alone, core_key, noise_key, pop16, \
            (f0, f1, f2, f3), (s0, s1, s2, s3) = self._columns
        return ((r0[b], r1[b], r2[b], r3[b]), shared_bits[b], alone[b], core_key[b],
                noise_key[b], pop16[b], (f0[b], f1[b], f2[b], f3[b]),
                (s0[b], s1[b], s2[b], s3[b]))

    def _key_sets(self, kind, blocks):
        """The ``kind`` key set of each of ``blocks``, equal sets shared."""
        m = self._csr[kind]
        lengths = m.indptr[blocks + 1] - m.indptr[blocks]
        if blocks.size >= 1024 and (m.shape[1] + 1) ** int(lengths.max()) < 2 ** 62:
            return self._key_sets_bulk(m, blocks, lengths)
        start = m.indptr[blocks].tolist()
        stop = m.indptr[blocks + 1].tolist()
        total = int(np.sum(lengths))
        if total * 4 < m.indices.size:  # a few blocks: read their rows only
            rows = [tuple(m.indices[a:z].tolist()) for a, z in zip(start, stop)]
        else:
            indices = m.indices.tolist()
            rows = [tuple(indices[a:z]) for a, z in zip(start, stop)]
        sets = self._sets
        out = []
        for row in rows:
            found = sets.get(row)
            if found is None:
                found = sets[row] = frozenset(row)
            out.append(found)
        return out

    def _key_sets_bulk(self, m, blocks, lengths):
        """`_key_sets` of many blocks whose rows, read as numbers in base (keys + 1),
        fit 62 bits: equal rows found with arrays."""
        start = m.indptr[blocks]
        last = max(int(m.indptr[-1]) - 1, 0)
        code = np.zeros(blocks.size, dtype=np.int64)
        for p in range(int(lengths.max())):
            digit = np.where(lengths > p, m.indices[np.minimum(start + p, last)] + 1, 0)
            code = code * (m.shape[1] + 1) + digit
        distinct, inverse = _distinct(code)
        # One block of each distinct row (equal codes: equal rows).
        first = np.empty(distinct.size, dtype=np.int64)
        first[inverse] = np.arange(blocks.size)
        sets = self._sets
        found = []
        for a, z in zip(start[first].tolist(), (start + lengths)[first].tolist()):
            row = tuple(m.indices[a:z].tolist())
            key_set = sets.get(row)
            if key_set is None:
                key_set = sets[row] = frozenset(row)
            found.append(key_set)
        return list(map(found.__getitem__, inverse.tolist()))

    def sizes(self, limits):
        """`effective_size` of every block under ``limits`` (computed once)."""
        found = self._sizes.get(limits)
        if found is None:
            found = self._sizes[limits] = effective_size(self.graph, limits)
        return found

    def shared_need(self):
        """(n_blocks, 4) int64 resources of each block at an offset above 0 on a core
        (synapse bits of its widened formats; output axon entries with the extra
        entries of the current chip assignment)."""
        if self._need is None:
            need = self.graph.resources.copy()
            need[:, _SYN_BITS] = self.graph.shared_synapse_bits
            need[:, _OUT_AXONS] += self.extra
            self._need = need
        return self._need


def _distinct(values):
    """``(distinct, inverse)`` of non-negative int ``values`` as `np.unique` gives
    them; without sorting when the values span at most a few times their number."""
    if values.size and int(values.max()) < 4 * values.size + 1024:
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        rank = np.cumsum(present) - 1
        return np.flatnonzero(present), rank[values]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1)


def effective_size(graph, limits=None):
    """Fraction of a core each block costs, counting config tables as well as resources.

    Parameters
    ----------
    graph : TrafficGraph
    limits : CoreLimits, optional

    Returns
    -------
    (n_blocks,) float ndarray
        In (0, 1]; 1 for blocks that need a core of their own.
    """
    limits = CoreLimits() if limits is None else limits
    size = graph.core_fraction(limits)
    for table, kind, _ in _TABLES:
        counts = np.diff(graph.configs[kind].tocsr().indptr)
        size = np.maximum(size, counts / limits.config_capacity(table))
    return np.clip(size, 1e-6, 1.0)


_CAPACITIES = {}


def _capacities(limits):
    """``(resource capacities, config table capacities)`` of ``limits`` as tuples."""
    found = _CAPACITIES.get(limits)
    if found is None:
        found = _CAPACITIES[limits] = (
            tuple(int(c) for c in limits.capacity_vector()),
            tuple(limits.config_capacity(t) for t, _, _ in _TABLES),
        )
    return found


class CoreBin:
    """One core being filled: tracks what it holds and answers whether a block fits.

    Blocks are laid out in the order they are added; the first sits at compartment
    offset 0 and keeps its own synapse formats.
    """

    __slots__ = ("graph", "limits", "keys", "blocks", "used", "_tables", "core_key",
                 "noise_key", "alone", "interchip", "_cap", "_table_cap")

    def __init__(self, graph, limits, keys):
        self.graph = graph
        self.limits = limits
        self.keys = keys
        self.blocks = []
        self.used = [0] * len(RESOURCES)
        self.tables = [set() for _ in _TABLES]
        self.core_key = None
        self.noise_key = -1
        self.alone = False
        #: Output axon entries of ``used`` that are extra for targets on other chips.
        self.interchip = 0
        self._cap, self._table_cap = _capacities(limits)

    @property
    def tables(self):
        """Per config table (`_TABLES` order), the set of keys the core holds."""
        tables = self._tables
        if type(tables) is tuple:  # (PackedCores, index): read when first needed
            packed, i = tables
            tables = self._tables = packed.table_sets(i)
        return tables

    @tables.setter
    def tables(self, tables):
        self._tables = tables

    def need(self, block):
        """Resources ``block`` would use if added now (synapse bits depend on offset,
        output axon entries on where its targets are: `BlockKeys.set_chips`)."""
        (comp, in_ax, out_ax, bits), shared_bits = self.keys.info(block)[:2]
        out_ax += self.keys.extra_of(block)
        if self.blocks:
            return (comp, in_ax, out_ax, shared_bits)
        return (comp, in_ax, out_ax, bits)

    def _problems(self, block):
        """Yield each rule ``block`` would break if added now (cheapest checks first)."""
        res, _, alone, core_key, noise_key, pop16, first_keys, shared_keys = \
            self.keys.info(block)
        if self.blocks and (alone or self.alone):
            yield "learning or population-axon blocks need a core of their own"
        if self.core_key is not None and core_key != self.core_key:
            yield "vmin/vmax differ from the blocks already on the core"
        if noise_key >= 0 and self.noise_key >= 0 and noise_key != self.noise_key:
            yield "noise settings differ from the noisy blocks already on the core"
        total = list(map(operator.add, self.used, self.need(block)))
        if any(map(operator.gt, total, self._cap)):
            for r, name in enumerate(RESOURCES):
                if total[r] > self._cap[r]:
                    yield f"{name} {total[r]} > {self._cap[r]}" + (
                        self._interchip_note(block) if r == _OUT_AXONS else "")
        # Axon ids of blocks added earlier do not move, so a pop16 receiver only
        # needs its own ids (the core's total so far) inside its id range.
        if pop16 > 0 and total[_IN_AXONS] > pop16:
            yield f"pop16 axon ids up to {total[_IN_AXONS]} > {pop16}"
        keys = shared_keys if self.blocks else first_keys
        for (table, _, _), have, want, cap in zip(_TABLES, self.tables, keys, self._table_cap):
            if want:
                n = len(have) + len(want - have)
                if n > cap:
                    yield f"{table} {n} > {cap}"

    def _interchip_note(self, block):
        extra = self.interchip + self.keys.extra_of(block)
        return f" ({extra} of them for axons to other chips)" if extra else ""

    def violations(self, block):
        """Rules ``block`` would break if added now, as short strings (empty: it fits)."""
        return list(self._problems(block))

    def fits(self, block):
        """Whether ``block`` can be added now without breaking a rule (the checks of
        `violations`, stopping at the first broken rule)."""
        keys = self.keys
        (comp, in_ax, out_ax, bits), shared_bits, alone, core_key, noise_key, pop16, \
            first_keys, shared_keys = keys.info(block)
        if self.blocks:
            if alone or self.alone:
                return False
            bits, wanted = shared_bits, shared_keys
        else:
            wanted = first_keys
        if self.core_key is not None and core_key != self.core_key:
            return False
        if noise_key >= 0 and self.noise_key >= 0 and noise_key != self.noise_key:
            return False
        used, cap = self.used, self._cap
        in_total = used[1] + in_ax
        if (used[0] + comp > cap[0] or in_total > cap[1] or
                used[2] + out_ax + keys.extra_of(block) > cap[2] or
                used[3] + bits > cap[3]):
            return False
        if pop16 > 0 and in_total > pop16:
            return False
        for have, want, most in zip(self.tables, wanted, self._table_cap):
            if want and len(have) + len(want - have) > most:
                return False
        return True

    def add(self, block):
        """Add ``block`` at the end of the core (call `fits` first); returns the keys it
        added to each config table."""
        info = self.keys.info(block)
        (comp, in_ax, out_ax, bits), shared_bits = info[0], info[1]
        extra = self.keys.extra_of(block)
        if self.blocks:
            keys, bits = info[7], shared_bits
        else:
            keys = info[6]
        added = []
        for have, want in zip(self.tables, keys):
            if want:
                want = want - have
                have |= want
            added.append(want)
        used = self.used
        self.used = [used[0] + comp, used[1] + in_ax, used[2] + out_ax + extra,
                     used[3] + bits]
        self.interchip += extra
        self.blocks.append(int(block))
        if self.core_key is None:
            self.core_key = info[3]
        if info[4] >= 0:
            self.noise_key = info[4]
        self.alone = self.alone or info[2]
        return added

    @property
    def fill(self):
        """Largest used fraction of any additive resource."""
        return max(map(operator.truediv, self.used, self._cap))

    def copy(self):
        """An independent copy (blocks, usage and tables)."""
        new = CoreBin(self.graph, self.limits, self.keys)
        new.blocks = list(self.blocks)
        new.used = list(self.used)
        new.tables = [set(t) for t in self.tables]
        new.core_key = self.core_key
        new.noise_key = self.noise_key
        new.alone = self.alone
        new.interchip = self.interchip
        return new

    def shift_entries(self, delta):
        """Change the core's output axon entries by ``delta`` extra inter-chip entries
        (a target of one of its blocks moved between chips)."""
        self.used[_OUT_AXONS] += delta
        self.interchip += delta

    @classmethod
    def restored(cls, graph, limits, keys, blocks, used, tables, core_key, noise_key,
                 alone, interchip):
        """A bin in a known state (as `bestfit.pack_parts` leaves it), unchecked."""
        return cls.restored_many(graph, limits, keys, [(blocks, used, tables, core_key,
                                                        noise_key, alone, interchip)])[0]

    @classmethod
    def restored_many(cls, graph, limits, keys, states):
        """`restored` of many bins: one per ``(blocks, used, tables, core_key,
        noise_key, alone, interchip)`` of ``states``."""
        cap, table_cap = _capacities(limits)
        new = cls.__new__
        cores = []
        for blocks, used, tables, core_key, noise_key, alone, interchip in states:
            core = new(cls)
            core.graph, core.limits, core.keys = graph, limits, keys
            core.blocks, core.used, core.tables = blocks, used, tables
            core.core_key, core.noise_key, core.alone = core_key, noise_key, alone
            core.interchip = interchip
            core._cap, core._table_cap = cap, table_cap
            cores.append(core)
        return cores

    @classmethod
    def of(cls, graph, limits, keys, blocks):
        """A bin holding ``blocks`` in order, without checking rules."""
        core = cls(graph, limits, keys)
        for b in blocks:
            core.add(b)
        return core

    @classmethod
    def checked(cls, graph, limits, keys, blocks):
        """A bin holding ``blocks`` in order, or None when one breaks a rule there."""
        core = cls(graph, limits, keys)
        for b in blocks:
            if not core.fits(b):
                return None
            core.add(b)
        return core


def pack(graph, blocks, limits=None, keys=None, traffic=None, max_cores=None):
    """Pack ``blocks`` onto as few cores as possible, keeping heavy traffic together.

    First-fit decreasing by `effective_size`; among cores the block fits, it goes to
    the one it exchanges most traffic with, then the fullest (best fit). Without
    traffic (an empty ``traffic`` matrix) every block goes to the fullest core it
    fits (`best_fit`).

    Parameters
    ----------
    graph : TrafficGraph
    blocks : array of int
        Blocks to pack.
    limits : CoreLimits, optional
    keys : BlockKeys, optional
        Shared key cache.
    traffic : scipy.sparse.csr_matrix, optional
        Symmetric block traffic (``graph.symmetric_traffic()`` if omitted).
    max_cores : int, optional
        Stop opening cores past this many and return the rest unplaced.

    Returns
    -------
    cores : list of CoreBin
    unplaced : list of int
        Blocks that did not fit within ``max_cores``.
    """
    limits = CoreLimits() if limits is None else limits
    keys = BlockKeys(graph) if keys is None else keys
    traffic = graph.symmetric_traffic() if traffic is None else traffic
    blocks = np.asarray(blocks, dtype=np.int64)
    if traffic.nnz == 0:
        return best_fit(graph, blocks, limits, keys, max_cores)
    return _pack_near(graph, blocks, limits, keys, traffic, max_cores)


def _pack_near(graph, blocks, limits, keys, traffic, max_cores):
    """`pack` with traffic: each block to the open core it talks to most (of the
    `WINDOW` best screened candidates), then the fullest."""
    order = _decreasing(blocks, keys.sizes(limits))
    keys.prefetch(order)

    open_cores = _OpenCores(graph, limits, keys)
    core_of = {}
    unplaced = []
    for b in order.tolist():
        i = open_cores.best(b, core_of, traffic)
        if i is None:
            if max_cores is not None and len(open_cores.cores) >= max_cores:
                unplaced.append(b)
                continue
            i = open_cores.open()
        open_cores.add(i, b)
        core_of[b] = i
    return open_cores.cores, unplaced


def _decreasing(blocks, sizes):
    """``blocks`` by decreasing size, ties by block id."""
    return blocks[np.lexsort((blocks, -sizes[blocks]))]


def best_fit(graph, blocks, limits=None, keys=None, max_cores=None):
    """Pack ``blocks`` by size alone: best fit decreasing.

    Blocks go largest first (`effective_size`, ties by id) to the fullest open core
    (largest used fraction of any resource, ties to the earliest core) where
    `CoreBin.fits` accepts them, else to a new core (compiled: `partitioner.bestfit`).
    When a config table sets the cores' lower bound, packing whole key groups
    (`pack_groups`) is tried on fewer cores.

    Parameters
    ----------
    graph : TrafficGraph
    blocks : array of int
    limits : CoreLimits, optional
    keys : BlockKeys, optional
    max_cores : int, optional
        Stop opening cores past this many and return the rest unplaced.

    Returns
    -------
    cores : list of CoreBin
    unplaced : list of int
    """
    limits = CoreLimits() if limits is None else limits
    keys = BlockKeys(graph) if keys is None else keys
    order = _decreasing(np.asarray(blocks, dtype=np.int64), keys.sizes(limits))
    packing = _CompiledParts(graph, limits, keys, [order], max_cores)
    (cores, unplaced, full), = packing.parts
    if not full:
        return cores, unplaced
    most = len(cores) if not unplaced else max_cores + 1
    bound, = packing.table_bounds([most])
    return _fewer_by_groups(graph, order, limits, keys, cores, most, bound), unplaced


def best_fit_many(graph, parts, limits=None, keys=None):
    """`best_fit` of each of ``parts`` (arrays of blocks), in one compiled call.

    Returns
    -------
    list of (list of CoreBin)
    """
    limits = CoreLimits() if limits is None else limits
    keys = BlockKeys(graph) if keys is None else keys
    sizes = keys.sizes(limits)
    orders = [_decreasing(np.asarray(p, dtype=np.int64), sizes) for p in parts]
    packing = _CompiledParts(graph, limits, keys, orders)
    bounds = packing.table_bounds([len(cores) for cores, _, _ in packing.parts])
    return [_fewer_by_groups(graph, order, limits, keys, cores, len(cores), bound)
            if full else cores
            for order, (cores, _, full), bound in zip(orders, packing.parts, bounds)]


#: Config tables whose keys can set the cores' lower bound: those a block uses
#: alike at every offset (the synapse formats widen at an offset above 0).
_BOUNDING = [t for t, (_, kind, _) in enumerate(_TABLES) if kind != "synapse_cfgs"]


class _CompiledParts:
    """Several parts packed best fit in one compiled call (`bestfit.pack_parts`).

    The cores of all parts become `CoreBin` objects together, and the key-group
    bounds of all parts are computed together (`table_bounds`), so the time is in
    proportion to the blocks, not to the blocks times the parts.

    Attributes
    ----------
    parts : list of (list of CoreBin, list of int, bool)
        Per part (in the order of ``orders``): its cores, its blocks left unplaced
        (``max_cores``), and whether some core filled a config table that can set
        the cores' bound (`_BOUNDING`).
    """

    def __init__(self, graph, limits, keys, orders, max_cores=None):
        self.graph, self.limits, self.keys = graph, limits, keys
        cap, table_cap = _capacities(limits)
        core_of, self.core_start, arrays = pack_parts(keys.pack_input(), orders, cap,
                                                      table_cap, max_cores)
        self.arrays = arrays
        lengths = np.array([o.size for o in orders], dtype=np.int64)
        #: Part of each block of ``flat``.
        self.flat = np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)
        self.part_of = np.repeat(np.arange(len(orders)), lengths)
        n_cores, n_parts = len(arrays), len(orders)
        placed = core_of >= 0
        blocks, owner = self.flat[placed], core_of[placed]
        members = blocks[np.argsort(owner, kind="stable")]
        counts = np.bincount(owner, minlength=n_cores)
        ends = np.cumsum(counts)
        starts = ends - counts
        interchip = np.bincount(owner, keys.extra[blocks], n_cores).astype(np.int64)
        #: Voltage-limit setting of each core (that of its first block).
        self.core_key = graph.core_key[members[starts]] if n_cores else \
            np.zeros(0, dtype=np.int64)
        members = members.tolist()
        cores = CoreBin.restored_many(graph, limits, keys, zip(
            map(members.__getitem__, map(slice, starts.tolist(), ends.tolist())),
            # Most cores' tables are never read again: each is read when first needed.
            arrays.used.tolist(), zip(itertools.repeat(arrays), range(n_cores)),
            self.core_key.tolist(),
            arrays.noise.tolist(), arrays.alone.tolist(), interchip.tolist()))
        filled = (arrays.n_keys[:, _BOUNDING] >= np.asarray(table_cap)[_BOUNDING]).any(axis=1)
        core_part = np.repeat(np.arange(n_parts), np.diff(self.core_start))
        #: (parts,) bool: `parts`' ``full``.
        self.full = np.bincount(core_part, filled, n_parts) > 0
        left = ~placed
        left_bounds = np.searchsorted(self.part_of[left], np.arange(n_parts + 1)).tolist()
        left = self.flat[left].tolist()
        core_bounds = self.core_start.tolist()
        self.parts = [
            (cores[core_bounds[p]:core_bounds[p + 1]],
             left[left_bounds[p]:left_bounds[p + 1]], bool(full))
            for p, full in enumerate(self.full.tolist())
        ]

    def table_bounds(self, most):
        """Per part, a lower bound on the cores its blocks need, when a config table
        sets it (it exceeds what their resources need) and it is below ``most[p]``;
        else None.

        Cheap unless a config table filled some core of the part (``full``) and the
        keys its cores hold exceed the resources' bound times the table's size: only
        then are the distinct keys of the part's blocks counted (per voltage-limit
        group, blocks that need a core of their own aside). Each group's bound is the
        largest of its resources' bound, its noise settings and, so counted, its keys
        per table; a part's bound adds up its groups' and its blocks alone.

        Parameters
        ----------
        most : sequence of int
            Per part, the cores its bound must stay below.

        Returns
        -------
        list of (int or None)
        """
        g, keys = self.graph, self.keys
        n_parts = self.full.size
        out = [None] * n_parts
        inside = self.full[self.part_of]
        blocks, part = self.flat[inside], self.part_of[inside]
        alone = g.alone[blocks]
        rest, part = blocks[~alone], part[~alone]
        if rest.size == 0:
            return out
        cap, table_cap = _capacities(self.limits)
        # Groups: the blocks (not alone) of one part with one voltage-limit setting.
        settings = np.unique(g.core_key[rest])
        group_code, group = np.unique(
            part * settings.size + np.searchsorted(settings, g.core_key[rest]),
            return_inverse=True)
        group = group.reshape(-1)
        n_groups = group_code.size
        group_part = group_code // settings.size
        need = keys.shared_need()[rest].astype(np.float64)
        need[:, _SYN_BITS] = np.minimum(need[:, _SYN_BITS], g.resources[rest, _SYN_BITS])
        totals = np.stack([np.bincount(group, need[:, r], n_groups)
                           for r in range(need.shape[1])], axis=1)
        res = np.ceil(totals / np.asarray(cap, dtype=np.float64)).max(axis=1)
        res = res.astype(np.int64)
        noise = g.noise_key[rest]
        noisy = noise >= 0
        bound = np.maximum(np.maximum(res, _distinct_per_group(
            group[noisy], noise[noisy], n_groups)), 1)
        # Keys held by each group's cores (blocks alone included): an upper bound;
        # where it exceeds the resources' bound, the blocks' keys are counted.
        held, counts = self.arrays.held_keys()
        held_core = np.repeat(np.arange(counts.shape[0]), counts.sum(axis=1))
        held_table = np.repeat(np.tile(np.arange(counts.shape[1]), counts.shape[0]),
                               counts.ravel())
        held_group = self._core_groups(settings, group_code)[held_core]
        counted = np.zeros(n_groups, dtype=bool)
        for t in _BOUNDING:
            mine = (held_table == t) & (held_group >= 0)
            n_held = _distinct_per_group(held_group[mine], held[mine], n_groups)
            counted |= -(-n_held // table_cap[t]) > res
        by_table = np.zeros(n_parts, dtype=bool)
        blocks = rest[counted[group]]
        owner = group[counted[group]]
        for t in _BOUNDING:
            m = keys._csr[_TABLES[t][1]]
            idx, row = _row_entries(m.indptr, blocks)
            n_keys = _distinct_per_group(owner[row], m.indices[idx], n_groups)
            need_t = np.where(counted, -(-n_keys // table_cap[t]), 0)
            by_table[group_part[counted & (need_t > res)]] = True
            bound = np.maximum(bound, need_t)
        n_alone = np.bincount(self.part_of[inside][alone], minlength=n_parts)
        total = n_alone + np.bincount(group_part, bound, n_parts).astype(np.int64)
        for p in np.flatnonzero(by_table).tolist():
            if total[p] < most[p]:
                out[p] = int(total[p])
        return out

    def _core_groups(self, settings, group_code):
        """(n_cores,) the group (of `table_bounds`) of each core, -1 for none."""
        n_parts = self.full.size
        core_part = np.repeat(np.arange(n_parts), np.diff(self.core_start))
        pos = np.minimum(np.searchsorted(settings, self.core_key), settings.size - 1)
        code = core_part * settings.size + pos
        at = np.minimum(np.searchsorted(group_code, code), group_code.size - 1)
        found = (settings[pos] == self.core_key) & (group_code[at] == code)
        return np.where(found, at, -1)


def _distinct_per_group(group, values, n_groups):
    """(n_groups,) number of distinct ``values`` in each group (``group``: the group
    of each value)."""
    if group.size == 0:
        return np.zeros(n_groups, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    low = int(values.min())
    width = int(values.max()) - low + 1
    if width * n_groups >= 2 ** 62:
        _, values = np.unique(values, return_inverse=True)
        low, width = 0, int(values.max()) + 1
    pairs = np.unique(group * width + (values.reshape(-1) - low))
    return np.bincount(pairs // width, minlength=n_groups)


def _row_entries(indptr, rows):
    """Positions of every stored entry of ``rows`` of a compressed matrix, and the
    index in ``rows`` each belongs to."""
    if rows.size == 1:
        start, stop = indptr[rows[0]], indptr[rows[0] + 1]
        return np.arange(start, stop), np.zeros(stop - start, dtype=np.int64)
    start = indptr[rows]
    lengths = indptr[rows + 1] - start
    total = int(lengths.sum())
    owner = np.repeat(np.arange(rows.size), lengths)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(start, lengths) + offsets, owner


def _fewer_by_groups(graph, order, limits, keys, cores, most, bound):
    """``cores``, or fewer from `pack_groups` when a config table sets the bound
    (``bound``, from `_CompiledParts.table_bounds`)."""
    if bound is not None:
        found = _fewest_groups(graph, order, limits, keys, bound, most - 1)
        if found is not None:
            return found
    return cores


def _fewest_groups(graph, blocks, limits, keys, low, high):
    """`pack_groups` on the fewest cores in ``[low, high]``; None if none.

    The bound and the count after it are tried first (where packing by key groups
    usually lands); then ``high``, and if that packs, fewer by bisection.
    """
    for n in range(low, min(low + 2, high + 1)):
        found = pack_groups(graph, blocks, limits, keys, n)
        if found is not None:
            return found
    low += 2
    if low > high:
        return None
    best = pack_groups(graph, blocks, limits, keys, high)
    if best is None:
        return None
    high = len(best) - 1
    while low <= high:
        mid = (low + high) // 2
        found = pack_groups(graph, blocks, limits, keys, mid)
        if found is None:
            low = mid + 1
        else:
            best, high = found, len(found) - 1
    return best


#: Cores a block is fully checked against (best candidates first) before a new core
#: opens; bounds packing to O(blocks x WINDOW) rule checks.
WINDOW = 16


# ==================================================== packing whole key groups
def pack_groups(graph, blocks, limits, keys, n_cores):
    """Pack ``blocks`` onto at most ``n_cores`` cores, blocks with equal config keys
    together; None if this does not fit them.

    For blocks whose config tables (7 threshold mantissas, 31 compartment profiles)
    bind before their resources do, what matters is how many distinct keys each core
    holds: a key split over two cores takes an entry on both. Blocks with the same
    keys, voltage limits and noise setting form a group; groups go largest first
    (largest fraction of a core they need, counting resources and table entries),
    each whole to the core with the most room left (worst fit: with the number of
    cores fixed, this spreads resources evenly and leaves every core room for its
    share of keys). A group that no core takes whole is placed block by block.

    Parameters
    ----------
    graph : TrafficGraph
    blocks : array of int
    limits : CoreLimits
    keys : BlockKeys
    n_cores : int

    Returns
    -------
    list of CoreBin or None
    """
    cap, table_cap = _capacities(limits)
    cap = np.asarray(cap, dtype=np.float64)
    table_cap = np.asarray(table_cap, dtype=np.float64)
    need = keys.shared_need()
    groups = {}
    for b in np.asarray(blocks, dtype=np.int64).tolist():
        info = keys.info(b)
        key = ("alone", b) if info[2] else (info[3], info[4], info[7])
        groups.setdefault(key, []).append(b)
    items = []
    for members in groups.values():
        total = need[members].sum(axis=0) / cap
        tables = np.array([len(k) for k in keys.info(members[0])[7]]) / table_cap
        size = 1.0 if keys.info(members[0])[2] else max(total.max(), tables.max())
        items.append((-size, members[0], members))
    items.sort()
    bins = _Bins(graph, limits, keys, n_cores)
    for _, _, members in items:
        if bins.place(members):
            continue
        for b in members:
            if not bins.place([b]):
                return None
    return [core for core in bins.cores if core.blocks]


class _Bins:
    """A fixed number of cores filled worst fit (`pack_groups`), screened with arrays."""

    def __init__(self, graph, limits, keys, n):
        self.graph, self.keys = graph, keys
        self.cores = [CoreBin(graph, limits, keys) for _ in range(n)]
        self.cap = limits.capacity_vector().astype(np.float64)
        self.used = np.zeros((n, self.cap.size))
        self.core_key = np.full(n, -1, dtype=np.int64)
        self.noise = np.full(n, -1, dtype=np.int64)
        self.closed = np.zeros(n, dtype=bool)
        self.need = keys.shared_need()
        self.table_cap = np.array(_capacities(limits)[1])
        self.tables = np.zeros((n, len(_TABLES)), dtype=np.int64)
        self.holders = [{} for _ in _TABLES]  # per table: key -> cores holding it

    def _new_keys(self, want):
        """(n, tables) keys ``want`` (per table) would add to each core."""
        new = np.tile(np.array([len(w) for w in want], dtype=np.int64), (len(self.cores), 1))
        for t, keys in enumerate(want):
            holders = self.holders[t]
            for key in keys:
                mask = holders.get(key)
                if mask is not None:
                    new[:, t] -= mask
        return new

    def place(self, members):
        """Put all of ``members`` on one core, the one with the most room left that
        takes them; False (nothing changed) if none does."""
        info = self.keys.info(members[0])
        need = self.need[members].sum(axis=0)
        ok = ~self.closed & ((self.core_key < 0) | (self.core_key == info[3]))
        if info[4] >= 0:
            ok &= (self.noise < 0) | (self.noise == info[4])
        if info[2]:
            ok &= self.core_key < 0
        after = (self.used + need) / self.cap
        ok &= (after <= 1.0).all(axis=1)
        ok &= (self.tables + self._new_keys(info[7]) <= self.table_cap).all(axis=1)
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            return False
        order = rows[np.argsort(after[rows].max(axis=1), kind="stable")]
        for i in order[:WINDOW].tolist():
            core = self.cores[i]
            trial = core.copy()
            for b in members:
                if not trial.fits(b):
                    break
                trial.add(b)
            else:
                for t, table in enumerate(trial.tables):
                    self.tables[i, t] = len(table)
                    for key in table - core.tables[t]:
                        mask = self.holders[t].get(key)
                        if mask is None:
                            mask = self.holders[t][key] = np.zeros(len(self.cores), dtype=bool)
                        mask[i] = True
                self.cores[i] = trial
                self.used[i] = trial.used
                self.core_key[i] = trial.core_key
                self.noise[i] = trial.noise_key
                self.closed[i] = trial.alone
                return True
        return False


class _OpenCores:
    """The cores `pack` is filling, with their usage as arrays for fast screening."""

    def __init__(self, graph, limits, keys):
        self.graph, self.limits, self.keys = graph, limits, keys
        self.cores = []
        self.cap = limits.capacity_vector()
        self.table_cap = np.array([limits.config_capacity(t) for t, _, _ in _TABLES])
        self.used = np.zeros((16, len(RESOURCES)), dtype=np.int64)
        self.tables = np.zeros((16, len(_TABLES)), dtype=np.int64)
        # Shared settings of each core: whether it takes no more blocks (it holds a
        # block that must be alone), its core_key and noise_key (-1: none yet).
        self.closed = np.zeros(16, dtype=bool)
        self.core_key = np.full(16, -1, dtype=np.int64)
        self.noise_key = np.full(16, -1, dtype=np.int64)
        # Per config table: key -> boolean mask of the cores whose table holds it.
        self.holders = [{} for _ in _TABLES]
        # What each block needs on an occupied core (synapse bits of widened formats).
        self.need = keys.shared_need()

    def open(self):
        """Open a new empty core; returns its index."""
        self.cores.append(CoreBin(self.graph, self.limits, self.keys))
        i = len(self.cores) - 1
        if i == self.used.shape[0]:
            self.used = np.concatenate([self.used, np.zeros_like(self.used)])
            self.tables = np.concatenate([self.tables, np.zeros_like(self.tables)])
            self.closed = np.concatenate([self.closed, np.zeros_like(self.closed)])
            self.core_key = np.concatenate([self.core_key, np.full_like(self.core_key, -1)])
            self.noise_key = np.concatenate(
                [self.noise_key, np.full_like(self.noise_key, -1)])
            for holders in self.holders:
                for key, mask in holders.items():
                    holders[key] = np.concatenate([mask, np.zeros_like(mask)])
        return i

    def add(self, i, b):
        core = self.cores[i]
        info = self.keys.info(b)
        wanted = info[7] if core.blocks else info[6]
        for holders, want, have in zip(self.holders, wanted, core.tables):
            for key in want - have:
                mask = holders.get(key)
                if mask is None:
                    mask = holders[key] = np.zeros(self.used.shape[0], dtype=bool)
                mask[i] = True
        core.add(b)
        self.used[i] = core.used
        self.tables[i] = [len(t) for t in core.tables]
        self.closed[i] = core.alone
        self.core_key[i] = core.core_key
        self.noise_key[i] = core.noise_key

    def best(self, b, core_of, traffic):
        """Index of the core ``b`` fits best: most traffic to it, then fullest."""
        m = len(self.cores)
        if m == 0 or self.graph.alone[b]:
            return None
        # Shared-setting, resource and config-table screen over all open cores at
        # once, then full checks of the best few. (Without the shared-setting screen
        # the best few can all be cores that take no other block, e.g. those of
        # population-axon senders, and every block would open a new core.)
        used = self.used[:m]
        ok = ~self.closed[:m] & (self.core_key[:m] == self.graph.core_key[b])
        noise_key = self.graph.noise_key[b]
        if noise_key >= 0:
            ok &= (self.noise_key[:m] < 0) | (self.noise_key[:m] == noise_key)
        room = np.flatnonzero(ok & ((used + self.need[b]) <= self.cap).all(axis=1))
        if room.size == 0:
            return None
        new = self._new_keys(b, room)
        if new is not None:
            room = room[((self.tables[room] + new) <= self.table_cap).all(axis=1)]
            if room.size == 0:
                return None
        fill = (used[room] / self.cap).max(axis=1)
        affinity = self._affinity(b, room, core_of, traffic)
        order = np.argsort(-fill, kind="stable") if affinity is None else \
            np.lexsort((-fill, -affinity))
        for i in room[order[:WINDOW]].tolist():
            if self.cores[i].fits(b):
                return i
        return None

    def _new_keys(self, b, room):
        """Keys ``b`` would add to each table of each core in ``room`` (None: no table
        could overflow, so there is nothing to screen)."""
        keys = self.keys.info(b)[7]  # an occupied core: b sits at an offset
        n_keys = np.array([len(k) for k in keys])
        tight = ((self.tables[room] + n_keys) > self.table_cap).any(axis=0)
        if not tight.any():
            return None
        new = np.tile(n_keys, (room.size, 1))
        for t in np.flatnonzero(tight).tolist():
            holders = self.holders[t]
            for key in keys[t]:
                mask = holders.get(key)
                if mask is not None:
                    new[:, t] -= mask[room]
        return new

    @staticmethod
    def _affinity(b, room, core_of, traffic):
        start, stop = traffic.indptr[b], traffic.indptr[b + 1]
        if stop == start:
            return None
        near = [(core_of.get(nb), w) for nb, w in zip(
            traffic.indices[start:stop].tolist(), traffic.data[start:stop].tolist())]
        near = [(i, w) for i, w in near if i is not None]
        if not near:
            return None
        cores, weights = np.array(near).T
        affinity = np.zeros(room.size)
        pos = np.searchsorted(room, cores)
        hit = pos < room.size
        hit[hit] = room[pos[hit]] == cores[hit]
        np.add.at(affinity, pos[hit], weights[hit])
        return affinity


def core_violations(graph, blocks, limits=None, keys=None):
    """Every rule broken by placing ``blocks`` on one core in this order.

    Returns
    -------
    list of str
        Empty when the core is valid.
    """
    limits = CoreLimits() if limits is None else limits
    keys = BlockKeys(graph) if keys is None else keys
    core = CoreBin(graph, limits, keys)
    problems = []
    for b in blocks:
        for v in core.violations(b):
            problems.append(f"adding {graph.labels[b]} ({graph.sources[b]}): {v}")
        core.add(b)
    return problems


def check_blocks(graph, limits=None):
    """Raise `BlockTooLargeError` for the first block that alone breaks a core rule."""
    limits = CoreLimits() if limits is None else limits
    cap = limits.capacity_vector()
    over = graph.resources > cap
    limit = graph.pop16_in_limit
    pop16_over = (limit > 0) & (graph.resources[:, _IN_AXONS] > limit)
    config_over = np.zeros(graph.n_blocks, dtype=bool)
    for table, kind, _ in _TABLES:
        counts = np.diff(graph.configs[kind].tocsr().indptr)
        config_over |= counts > limits.config_capacity(table)
    bad = np.flatnonzero(over.any(axis=1) | pop16_over | config_over)
    if bad.size == 0:
        return
    b = int(bad[0])
    problems = core_violations(graph, [b], limits)
    if over[b].any():
        r = int(np.flatnonzero(over[b])[0])
        rule, value, lim = RESOURCES[r], int(graph.resources[b, r]), int(cap[r])
    else:
        rule, value, lim = problems[0], None, None
    more = f" ({bad.size - 1} more blocks also break a rule.)" if bad.size > 1 else ""
    raise BlockTooLargeError(
        f"Block {graph.labels[b]} from {graph.sources[b]} does not fit on one Loihi core: "
        f"{'; '.join(p.split(': ', 1)[1] for p in problems)}. "
        f"{_split_advice(graph, b, value, lim)}{more}",
        block=graph.labels[b], source=graph.sources[b], rule=rule, value=value,
        limit=lim,
    )


def _split_advice(graph, b, value, limit):
    """How to split the block's ensemble (the graph alone does not know its shape)."""
    size = ""
    if value and limit:
        most = max(1, int(graph.compartments[b] * limit / value * 0.9))
        size = f" of at most about {most} neurons"
    return (
        f"Split its ensemble into smaller blocks{size} with nengo_loihi.BlockShape "
        f"(nengo_loihi.add_params(net); net.config[ens].block_shape = ...); "
        f"partitioner.fit_block_shapes(net) or `partitioner fit SCENARIO` choose a "
        f"verified shape."
    )


def check_plan(graph, plan, board=None, limits=None):
    """Raise unless ``plan`` places every block once and obeys every per-core rule.

    Raises
    ------
    PlanError
        The plan was made for another model.
    InfeasibleError
        More chips than the board has, or more cores on a chip than it has.
    CoreRuleError
        Blocks sharing a core break a rule; the message names the core and blocks.
    """
    board = get_board(board if board is not None else plan.board)
    limits = board.limits if limits is None else limits
    plan.check_matches(graph)
    if plan.n_chips > board.n_chips:
        raise InfeasibleError(
            f"The plan uses {plan.n_chips} chips but {board.name} has {board.n_chips}. "
            f"Use a larger board or re-plan with n_chips <= {board.n_chips}."
        )
    per_chip = plan.cores_per_chip()
    if per_chip.max(initial=0) > board.cores_per_chip:
        chip = int(per_chip.argmax())
        raise InfeasibleError(
            f"Chip {chip} holds {per_chip[chip]} cores but a chip has "
            f"{board.cores_per_chip}. Re-plan with more chips."
        )
    keys = BlockKeys(graph)
    keys.prefetch(np.arange(graph.n_blocks))
    keys.set_chips(plan.block_chip)
    for c in range(plan.n_cores):
        problems = core_violations(graph, plan.core_blocks(c), limits, keys)
        if problems:
            advice = ENTRY_ADVICE if any("out_axons" in p for p in problems) else ""
            raise CoreRuleError(
                f"Core {c} on chip {plan.core_chip[c]} breaks a per-core rule: "
                f"{'; '.join(problems)}. Move a block to another core{advice} or re-plan."
            )


#: How to bring a core's output axon entries down, for messages.
ENTRY_ADVICE = (
    ", put the blocks it sends to on its chip (each axon to another chip takes one "
    "more output axon entry)"
)


def core_entries(graph, block_core, block_chip, n_cores):
    """Output axon config entries of every core under a chip assignment.

    Parameters
    ----------
    graph : TrafficGraph
    block_core, block_chip : (n_blocks,) int arrays
    n_cores : int

    Returns
    -------
    total, interchip : (n_cores,) int64 ndarrays
        Entries of each core, and how many of them are the extra entries of axons to
        blocks on other chips.
    """
    extra = graph.interchip_extra(block_chip)
    base = graph.resources[:, _OUT_AXONS]
    total = np.bincount(block_core, weights=base + extra, minlength=n_cores)
    interchip = np.bincount(block_core, weights=extra, minlength=n_cores)
    return total.astype(np.int64), interchip.astype(np.int64)


def entry_overflow_text(graph, blocks, chip, total, interchip, limit):
    """One sentence on a core whose output axon entries exceed ``limit``."""
    names = ", ".join(f"{graph.labels[b]} (from {graph.sources[b]})" for b in blocks[:3])
    if len(blocks) > 3:
        names += f" and {len(blocks) - 3} more block(s)"
    return (
        f"the core on chip {chip} holding {names} needs {total} output axon entries, "
        f"{interchip} of them because its axons reach blocks on other chips (one more "
        f"entry each), but a core has {limit}"
    )
