"""Best fit decreasing onto cores, compiled with numba.

Packing is sequential (each block's core depends on every block before it), so it
cannot be written as array operations; in Python each block costs tens of
microseconds of interpreter work (at 100,000 blocks, seconds: more than a METIS cut
of the whole graph). This module runs the same rule checks as `packing.CoreBin.fits`
over flat arrays in compiled code, about a microsecond per block.

The rules checked are those of `CoreBin.fits`: additive resources (a block at an
offset above 0 pays its widened synapse formats), pop16 input axon ids, equal
voltage limits, compatible noise, blocks alone on their core, and the config tables
(a core's table holds the union of its blocks' keys, at most its capacity).

`first_with_room` finds the cores a block is checked against when existing cores
take the blocks of a core being emptied (`strategies.common.Packed.absorb` and
`Packed.absorb_chips`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from partitioner.graph import RESOURCES

__all__ = ["PackInput", "pack_parts", "cores_with_room", "cores_to_try", "first_with_room"]

_SYN_BITS = RESOURCES.index("synapse_bits")
_OUT_AXONS = RESOURCES.index("out_axons")


#: Columns of `PackInput.rows`: resources at compartment offset 0 (`RESOURCES`
#: order), then above it, then the block's settings and where its keys are.
_FIRST = 0
_SHARED = len(RESOURCES)
_CORE_KEY = 2 * len(RESOURCES)
_NOISE_KEY = _CORE_KEY + 1
_ALONE = _CORE_KEY + 2
_POP16 = _CORE_KEY + 3
_KEY_START = _CORE_KEY + 4
#: Then the number of keys per config table: first as at offset 0, then above it.
_KEY_COUNTS = _KEY_START + 1


class PackInput:
    """Per-block facts the compiled packing reads, built once per `BlockKeys` state.

    Each block's facts are one row of ``rows`` and its config keys one run of
    ``keys``: a chip's blocks lie anywhere in the graph, and at a million blocks
    reading a block's facts from a dozen arrays of that length (each a cache and
    page miss) cost more than packing it.

    Parameters
    ----------
    graph : TrafficGraph
    keys : BlockKeys
        Its extra output axon entries (`BlockKeys.set_chips`) are charged.
    tables : sequence of (str, str)
        Per config table, the graph config kind a block uses first on its core and
        at an offset (`packing._TABLES` order).

    Attributes
    ----------
    rows : (n_blocks, columns) int64 ndarray
        Per block: resources at compartment offset 0 and above it, core key, noise
        key, whether it is alone, pop16 id limit, start of its keys in ``keys``,
        and its number of keys per table (first at offset 0, then above it).
    keys : (entries,) int64 ndarray
        Each block's keys, table by table (offset 0, then above it), each table's
        in its config matrix's row order.
    """

    def __init__(self, graph, keys, tables):
        n, n_res = graph.n_blocks, len(RESOURCES)
        ptr, indices = _stacked(keys, [first for first, _ in tables] +
                                [shared for _, shared in tables])
        rows = np.empty((n, _KEY_COUNTS + ptr.shape[0]), dtype=np.int64)
        rows[:, _FIRST:_FIRST + n_res] = graph.resources
        rows[:, _SHARED:_SHARED + n_res] = graph.resources
        rows[:, _SHARED + _SYN_BITS] = graph.shared_synapse_bits
        rows[:, _CORE_KEY] = graph.core_key
        rows[:, _NOISE_KEY] = graph.noise_key
        rows[:, _ALONE] = graph.alone
        rows[:, _POP16] = graph.pop16_in_limit
        self.rows = rows
        self.keys = _block_keys(ptr, indices, rows)
        self.set_extra(graph, keys.extra)

    def set_extra(self, graph, extra):
        """Charge every block ``extra`` output axon entries for other chips."""
        value = graph.resources[:, _OUT_AXONS] + extra
        self.rows[:, _FIRST + _OUT_AXONS] = value
        self.rows[:, _SHARED + _OUT_AXONS] = value


def _stacked(keys, kinds):
    """CSR rows of several config kinds as one (kinds, n + 1) pointer array into one
    index array."""
    ptrs, indices, base = [], [], 0
    for kind in kinds:
        m = keys._csr[kind]
        ptrs.append(m.indptr.astype(np.int64) + base)
        indices.append(m.indices[:m.indptr[-1]].astype(np.int64))
        base += int(m.indptr[-1])
    return np.stack(ptrs), np.concatenate(indices)


@njit(cache=True)
def _block_keys(ptr, indices, rows):
    """Each block's keys of every kind (rows ``ptr[c, b]:ptr[c, b + 1]`` of
    ``indices``), block after block; records where each block's start and how many
    it has of each kind in ``rows``."""
    n_kinds, n = ptr.shape[0], ptr.shape[1] - 1
    out = np.empty(indices.size, dtype=np.int64)
    e = 0
    for b in range(n):
        rows[b, _KEY_START] = e
        for c in range(n_kinds):
            rows[b, _KEY_COUNTS + c] = ptr[c, b + 1] - ptr[c, b]
            for q in range(ptr[c, b], ptr[c, b + 1]):
                out[e] = indices[q]
                e += 1
    return out


def pack_parts(data, orders, cap, table_cap, max_cores=None):
    """Pack each of ``orders`` (blocks in packing order) best fit onto cores of its own.

    Each block goes to the fullest core of its part (largest used fraction of any
    resource; ties to the earliest opened) where every rule holds, else to a new core.

    Parameters
    ----------
    data : PackInput
    orders : list of int arrays
    cap : tuple of int
        Resource capacities (`RESOURCES` order).
    table_cap : tuple of int
        Config table capacities.
    max_cores : int, optional
        Cores a part may open; blocks that need more are left unplaced.

    Returns
    -------
    core_of : (blocks,) int64 ndarray
        Core of each block of the orders, one after another, -1 if unplaced. Cores
        are numbered over all parts, part after part.
    core_start : (parts + 1,) int64 ndarray
        First core of each part (and the number of cores, last).
    cores : PackedCores
        All the cores.
    """
    lengths = np.array([o.size for o in orders], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(orders).astype(np.int64) if orders else np.zeros(0, np.int64)
    table_cap = np.asarray(table_cap, dtype=np.int64)
    table_start = np.concatenate([[0], np.cumsum(table_cap)]).astype(np.int64)
    core_of, core_start, used, noise, alone, keys, n_keys = _pack(
        flat, starts, data.rows, data.keys, np.asarray(cap, dtype=np.int64), table_cap,
        table_start, -1 if max_cores is None else int(max_cores))
    return core_of, core_start, PackedCores(used, noise, alone, keys, n_keys, table_start)


class PackedCores:
    """Cores as the compiled packing left them (arrays, per core)."""

    def __init__(self, used, noise, alone, keys, n_keys, table_start):
        self.used, self.noise, self.alone = used, noise, alone
        self.keys, self.n_keys, self.table_start = keys, n_keys, table_start

    def __len__(self):
        return self.used.shape[0]

    def held_keys(self):
        """``(flat, counts)``: the keys of every core's tables, core after core and
        table after table, each in the order it was added, and how many each table
        holds, as an (n_cores, tables) array."""
        n_tables = self.n_keys.shape[1]
        table_of = np.repeat(np.arange(n_tables), np.diff(self.table_start))
        inside = (np.arange(self.keys.shape[1]) - self.table_start[table_of] <
                  self.n_keys[:, table_of])
        return self.keys[inside], self.n_keys

    def table_sets(self, i):
        """The keys of each config table of core ``i``, as sets (what
        `packing.CoreBin.tables` holds)."""
        row, counts = self.keys[i].tolist(), self.n_keys[i].tolist()
        return [set(row[a:a + n]) for a, n in zip(self.table_start.tolist(), counts)]


@njit(cache=True)
def _pack(flat, starts, rows, block_keys, cap, table_cap, table_start, max_cores):
    n_parts = starts.size - 1
    n_res = cap.size
    n_tables = table_cap.size
    width = table_start[n_tables]
    room = max(16, flat.size // 4)
    used = np.zeros((room, n_res), dtype=np.int64)
    ckey = np.zeros(room, dtype=np.int64)
    cnoise = np.full(room, -1, dtype=np.int64)
    calone = np.zeros(room, dtype=np.bool_)
    score = np.zeros(room, dtype=np.float64)
    keys = np.zeros((room, width), dtype=np.int64)
    n_keys = np.zeros((room, n_tables), dtype=np.int64)
    rejected = np.full(room, -1, dtype=np.int64)
    core_of = np.full(flat.size, -1, dtype=np.int64)
    core_start = np.zeros(n_parts + 1, dtype=np.int64)
    m = 0
    for p in range(n_parts):
        core_start[p] = m
        for i in range(starts[p], starts[p + 1]):
            row = rows[flat[i]]
            core_key = row[_CORE_KEY]
            noise_key = row[_NOISE_KEY]
            pop16 = row[_POP16]
            alone = row[_ALONE] != 0
            first_keys = row[_KEY_START]
            shared_keys = first_keys
            for t in range(n_tables):
                shared_keys += row[_KEY_COUNTS + t]
            best = -1
            if not alone:
                while True:
                    best = -1
                    top = 0.0
                    for j in range(core_start[p], m):
                        s = score[j]
                        if s <= top or rejected[j] == i or ckey[j] != core_key:
                            continue
                        if noise_key >= 0 and cnoise[j] >= 0 and cnoise[j] != noise_key:
                            continue
                        ok = True
                        for r in range(n_res):
                            if used[j, r] + row[_SHARED + r] > cap[r]:
                                ok = False
                                break
                        if not ok:
                            continue
                        if pop16 > 0 and used[j, 1] + row[_SHARED + 1] > pop16:
                            continue
                        best = j
                        top = s
                    if best < 0 or _tables_fit(keys, n_keys, best, block_keys, shared_keys,
                                               row[_KEY_COUNTS + n_tables:], table_cap,
                                               table_start):
                        break
                    rejected[best] = i
            if best < 0:
                if max_cores >= 0 and m - core_start[p] >= max_cores:
                    continue
                if m == used.shape[0]:
                    grow = used.shape[0]
                    used = np.concatenate((used, np.zeros((grow, n_res), dtype=np.int64)))
                    ckey = np.concatenate((ckey, np.zeros(grow, dtype=np.int64)))
                    cnoise = np.concatenate((cnoise, np.full(grow, -1, dtype=np.int64)))
                    calone = np.concatenate((calone, np.zeros(grow, dtype=np.bool_)))
                    score = np.concatenate((score, np.zeros(grow, dtype=np.float64)))
                    keys = np.concatenate((keys, np.zeros((grow, width), dtype=np.int64)))
                    n_keys = np.concatenate((n_keys, np.zeros((grow, n_tables),
                                                              dtype=np.int64)))
                    rejected = np.concatenate((rejected, np.full(grow, -1, dtype=np.int64)))
                best = m
                m += 1
                ckey[best] = core_key
                for r in range(n_res):
                    used[best, r] = row[_FIRST + r]
                _add_keys(keys, n_keys, best, block_keys, first_keys,
                          row[_KEY_COUNTS:_KEY_COUNTS + n_tables], table_start)
            else:
                for r in range(n_res):
                    used[best, r] += row[_SHARED + r]
                _add_keys(keys, n_keys, best, block_keys, shared_keys,
                          row[_KEY_COUNTS + n_tables:], table_start)
            core_of[i] = best
            if noise_key >= 0:
                cnoise[best] = noise_key
            if alone:
                calone[best] = True
            if calone[best]:
                score[best] = 0.0
            else:
                fill = 0.0
                for r in range(n_res):
                    f = used[best, r] / cap[r]
                    if f > fill:
                        fill = f
                score[best] = 1.0 + fill
    core_start[n_parts] = m
    return (core_of, core_start, used[:m], cnoise[:m], calone[:m], keys[:m],
            n_keys[:m])


@njit(cache=True)
def _tables_fit(keys, n_keys, j, block_keys, start, counts, table_cap, table_start):
    """Whether a block's keys (``counts[t]`` per table, from ``block_keys[start]``) fit
    core ``j``."""
    e = start
    for t in range(table_cap.size):
        z = e + counts[t]
        if e == z:
            continue
        n = n_keys[j, t]
        for q in range(e, z):
            if not _holds(keys, n_keys, j, t, table_start[t], block_keys[q]):
                n += 1
        if n > table_cap[t]:
            return False
        e = z
    return True


@njit(cache=True)
def _add_keys(keys, n_keys, j, block_keys, start, counts, table_start):
    """Add a block's keys (as `_tables_fit` reads them) to core ``j``'s tables (call
    `_tables_fit` first)."""
    e = start
    for t in range(n_keys.shape[1]):
        base = table_start[t]
        for q in range(e, e + counts[t]):
            k = block_keys[q]
            if not _holds(keys, n_keys, j, t, base, k):
                keys[j, base + n_keys[j, t]] = k
                n_keys[j, t] += 1
        e += counts[t]


@njit(cache=True)
def _holds(keys, n_keys, j, t, base, k):
    """Whether table ``t`` of core ``j`` (stored from ``base``) holds key ``k``."""
    for q in range(base, base + n_keys[j, t]):
        if keys[j, q] == k:
            return True
    return False


@njit(cache=True)
def cores_with_room(usage, closed, cores, need, capacity):
    """The cores among ``cores`` that are not ``closed`` (nonzero: they take no other
    block) and whose ``usage`` plus ``need`` is within ``capacity`` in every
    resource, in the order given.

    One call screens a chip's cores for a block in about a microsecond, where the
    same numpy expression costs tens (its per-call overhead, on ~128 x 4 arrays).
    """
    out = np.empty(cores.size, dtype=np.int64)
    n = 0
    for c in cores:
        if closed[c]:
            continue
        for r in range(capacity.size):
            if usage[c, r] + need[r] > capacity[r]:
                break
        else:
            out[n] = c
            n += 1
    return out[:n]


@njit(cache=True)
def cores_to_try(usage, closed, cores, need, capacity, near, weights, window):
    """The cores a block may join, in the order to try them: of `cores_with_room`
    (``cores`` ascending), first up to ``window`` of those the block exchanges the
    most traffic with (``weights`` to neighbours on cores ``near``; ties in the order
    the neighbours come), then up to ``window`` of the others in order.

    Returns
    -------
    (m,) int64 ndarray
    """
    roomy = cores_with_room(usage, closed, cores, need, capacity)
    m = roomy.size
    affinity = np.zeros(m)
    slot = np.full(m, -1, dtype=np.int64)  # order in which each core was first met
    met = np.empty(m, dtype=np.int64)
    n_met = 0
    for k in range(near.size):
        pos = np.searchsorted(roomy, near[k])
        if pos < m and roomy[pos] == near[k]:
            if slot[pos] < 0:
                slot[pos] = n_met
                met[n_met] = pos
                n_met += 1
            affinity[pos] += weights[k]
    met = met[:n_met]
    ranked = met[np.argsort(-affinity[met], kind="mergesort")][:window]
    out = np.empty(min(n_met, window) + min(m - n_met, window), dtype=np.int64)
    n = 0
    for pos in ranked:
        out[n] = roomy[pos]
        n += 1
    for pos in range(m):
        if n == out.size:
            break
        if slot[pos] < 0:
            out[n] = roomy[pos]
            n += 1
    return out


@njit(cache=True)
def first_with_room(groups, then, room, res, out, targets, weights, slots, lengths,
                    usage, closed, cap, staged, staged_used, window):
    """The first ``window`` cores with room for a block, taken group by group.

    Groups are visited in ``groups`` order, then every group ``g`` with ``then[g]``
    in index order; the cores of a group in ``slots`` order, except ``closed`` ones.
    A core of group ``g`` has room when its usage plus ``res`` plus ``out`` output
    axon entries, plus one per ``weights`` of the block's ``targets`` (the groups of
    its axons' targets) not in ``g``, stays within ``cap``. A group whose ``room`` row
    (the most any of its cores has free, per resource) already lacks it is skipped;
    ``room`` with no rows skips none.

    With array operations this costs a dozen per group read and as many over all
    groups per block: 0.2-0.4 ms per block at 300,000 blocks (519 chips), most of
    a step of `strategies.metis.repair_overfull`; here some 40 microseconds.

    Parameters
    ----------
    groups : (m,) int64 array
        Rows of ``slots`` (and ``room``) to visit first, in order.
    then : (g,) bool array
        Rows visited next, in index order (length 0: none).
    room : (g, 4) int64 array
    res : (4,) int64 array
    out : int
    targets : (t,) int64 array
    weights : (t,) int64 array
    slots : (g, width) int64 array
        Core indices of each group; ``lengths`` of each row are used.
    lengths : (g,) int64 array
    usage : (n_cores, 4) int64 array
    closed : (n_cores,) int array
        Nonzero for cores that take no other block (they hold one that must be
        alone): never found.
    cap : (4,) int64 array
    staged, staged_used : (s,) and (s, 4) int64 arrays
        Cores whose usage is ``staged_used`` instead of their row of ``usage``.
    window : int

    Returns
    -------
    cores, group, extra : int64 arrays
        The cores found (at most ``window``), the group of each, and the entries
        ``weights`` add on it.
    """
    cores = np.empty(window, np.int64)
    group = np.empty(window, np.int64)
    extra = np.empty(window, np.int64)
    n = 0
    screen = room.shape[0] > 0
    n_res = res.size
    total = 0
    for t in range(weights.size):
        total += weights[t]
    for p in range(groups.size + then.size):
        if p < groups.size:
            g = groups[p]
        else:
            g = p - groups.size
            if not then[g]:
                continue
        far = total
        for t in range(targets.size):
            if targets[t] == g:
                far -= weights[t]
        if screen:
            ok = True
            for r in range(n_res):
                need = res[r] + out + far if r == _OUT_AXONS else res[r]
                if room[g, r] < need:
                    ok = False
                    break
            if not ok:
                continue
        for k in range(lengths[g]):
            c = slots[g, k]
            if closed[c]:
                continue
            s = -1
            for t in range(staged.size):
                if staged[t] == c:
                    s = t
                    break
            ok = True
            for r in range(n_res):
                used = staged_used[s, r] if s >= 0 else usage[c, r]
                need = res[r] + out + far if r == _OUT_AXONS else res[r]
                if used + need > cap[r]:
                    ok = False
                    break
            if ok:
                cores[n] = c
                group[n] = g
                extra[n] = far
                n += 1
                if n == window:
                    return cores, group, extra
    return cores[:n], group[:n], extra[:n]
