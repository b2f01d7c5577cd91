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
take the blocks of a core being emptied (`strategies.common.Packed.absorb_chips`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from partitioner.graph import RESOURCES

__all__ = ["PackInput", "pack_parts", "cores_with_room", "first_with_room"]

_SYN_BITS = RESOURCES.index("synapse_bits")
_OUT_AXONS = RESOURCES.index("out_axons")


class PackInput:
    """Per-block arrays the compiled packing reads, built once per `BlockKeys` state.

    Parameters
    ----------
    graph : TrafficGraph
    keys : BlockKeys
        Its extra output axon entries (`BlockKeys.set_chips`) are charged.
    tables : sequence of (str, str)
        Per config table, the graph config kind a block uses first on its core and
        at an offset (`packing._TABLES` order).
    """

    def __init__(self, graph, keys, tables):
        self.first = graph.resources.astype(np.int64)
        self.shared = self.first.copy()
        self.shared[:, _SYN_BITS] = graph.shared_synapse_bits
        self.set_extra(graph, keys.extra)
        self.core_key = np.asarray(graph.core_key, dtype=np.int64)
        self.noise_key = np.asarray(graph.noise_key, dtype=np.int64)
        self.alone = np.asarray(graph.alone, dtype=np.bool_)
        self.pop16 = np.asarray(graph.pop16_in_limit, dtype=np.int64)
        self.first_ptr, self.first_keys = _stacked(keys, [f for f, _ in tables])
        self.shared_ptr, self.shared_keys = _stacked(keys, [s for _, s in tables])

    def set_extra(self, graph, extra):
        """Charge every block ``extra`` output axon entries for other chips."""
        value = graph.resources[:, _OUT_AXONS] + extra
        self.first[:, _OUT_AXONS] = value
        self.shared[:, _OUT_AXONS] = value


def _stacked(keys, kinds):
    """CSR rows of several config kinds as one (kinds, n + 1) pointer array into one
    index array."""
    ptrs, indices, base = [], [], 0
    for kind in kinds:
        m = keys._csr[kind]
        ptrs.append(m.indptr.astype(np.int64) + base)
        indices.append(m.indices.astype(np.int64))
        base += m.indices.size
    return np.stack(ptrs), np.concatenate(indices) if indices else np.zeros(0, np.int64)


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
    list of (core_of, cores)
        Per part: the core (within the part) of each block of its order, -1 if
        unplaced, and a `PackedCores` of its cores.
    """
    lengths = np.array([o.size for o in orders], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(orders).astype(np.int64) if orders else np.zeros(0, np.int64)
    table_cap = np.asarray(table_cap, dtype=np.int64)
    table_start = np.concatenate([[0], np.cumsum(table_cap)]).astype(np.int64)
    core_of, core_start, used, noise, alone, keys, n_keys = _pack(
        flat, starts, data.first, data.shared, data.core_key, data.noise_key,
        data.alone, data.pop16, data.first_ptr, data.first_keys, data.shared_ptr,
        data.shared_keys, np.asarray(cap, dtype=np.int64), table_cap, table_start,
        -1 if max_cores is None else int(max_cores))
    out = []
    for p in range(len(orders)):
        a, z = int(core_start[p]), int(core_start[p + 1])
        part = core_of[starts[p]:starts[p + 1]]
        out.append((np.where(part >= 0, part - a, -1),
                    PackedCores(used[a:z], noise[a:z], alone[a:z], keys[a:z],
                                n_keys[a:z], table_start)))
    return out


class PackedCores:
    """The cores of one part as the compiled packing left them (arrays, per core)."""

    def __init__(self, used, noise, alone, keys, n_keys, table_start):
        self.used, self.noise, self.alone = used, noise, alone
        self.keys, self.n_keys, self.table_start = keys, n_keys, table_start

    def __len__(self):
        return self.used.shape[0]

    def all_tables(self):
        """Per core, the keys of each config table, as sets."""
        starts = self.table_start.tolist()[:-1]
        return [[set(row[a:a + n]) for a, n in zip(starts, counts)]
                for row, counts in zip(self.keys.tolist(), self.n_keys.tolist())]


@njit(cache=True)
def _pack(flat, starts, first, shared, core_key, noise_key, alone, pop16, first_ptr,
          first_keys, shared_ptr, shared_keys, cap, table_cap, table_start, max_cores):
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
            b = flat[i]
            best = -1
            if not alone[b]:
                while True:
                    best = -1
                    top = 0.0
                    for j in range(core_start[p], m):
                        s = score[j]
                        if s <= top or rejected[j] == i or ckey[j] != core_key[b]:
                            continue
                        if noise_key[b] >= 0 and cnoise[j] >= 0 and cnoise[j] != noise_key[b]:
                            continue
                        ok = True
                        for r in range(n_res):
                            if used[j, r] + shared[b, r] > cap[r]:
                                ok = False
                                break
                        if not ok:
                            continue
                        if pop16[b] > 0 and used[j, 1] + shared[b, 1] > pop16[b]:
                            continue
                        best = j
                        top = s
                    if best < 0 or _tables_fit(keys, n_keys, best, shared_ptr,
                                               shared_keys, b, table_cap, table_start):
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
                ckey[best] = core_key[b]
                for r in range(n_res):
                    used[best, r] = first[b, r]
                _add_keys(keys, n_keys, best, first_ptr, first_keys, b, table_start)
            else:
                for r in range(n_res):
                    used[best, r] += shared[b, r]
                _add_keys(keys, n_keys, best, shared_ptr, shared_keys, b, table_start)
            core_of[i] = best
            if noise_key[b] >= 0:
                cnoise[best] = noise_key[b]
            if alone[b]:
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
def _tables_fit(keys, n_keys, j, ptr, indices, b, table_cap, table_start):
    """Whether block ``b``'s keys (rows ``ptr[t, b]:ptr[t, b + 1]``) fit core ``j``."""
    for t in range(table_cap.size):
        a, z = ptr[t, b], ptr[t, b + 1]
        if a == z:
            continue
        n = n_keys[j, t]
        for e in range(a, z):
            if not _holds(keys, n_keys, j, t, table_start[t], indices[e]):
                n += 1
        if n > table_cap[t]:
            return False
    return True


@njit(cache=True)
def _add_keys(keys, n_keys, j, ptr, indices, b, table_start):
    """Add block ``b``'s keys to core ``j``'s tables (call `_tables_fit` first)."""
    for t in range(n_keys.shape[1]):
        base = table_start[t]
        for e in range(ptr[t, b], ptr[t, b + 1]):
            k = indices[e]
            if not _holds(keys, n_keys, j, t, base, k):
                keys[j, base + n_keys[j, t]] = k
                n_keys[j, t] += 1


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
def first_with_room(groups, then, room, res, out, targets, weights, slots, lengths,
                    usage, cap, staged, staged_used, window):
    """The first ``window`` cores with room for a block, taken group by group.

    Groups are visited in ``groups`` order, then every group ``g`` with ``then[g]``
    in index order; the cores of a group in ``slots`` order. A core of group ``g``
    has room when its usage plus ``res`` plus ``out`` output axon entries, plus one
    per ``weights`` of the block's ``targets`` (the groups of its axons' targets)
    not in ``g``, stays within ``cap``. A group whose ``room`` row (the most any of
    its cores has free, per resource) already lacks it is skipped; ``room`` with no
    rows skips none.

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
