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
import os
import sys

import numpy as np
import pymetis
from scipy.optimize import linear_sum_assignment

import scipy.sparse as sp

from partitioner.packing import pack
from partitioner.strategies.common import (
    ChipRoom,
    Packed,
    interchip_spikes,
    pack_by_chip,
)

__all__ = ["metis_parts", "repair_overfull", "chip_first", "core_first", "metis"]

#: METIS needs integer weights; sizes are scaled to this many units per core.
SIZE_UNITS = 1000
#: Chips are filled to at most this fraction of their cores, leaving room for packing.
TARGET_FILL = 0.95
#: `core_first` packs globally with traffic affinity, O(blocks x cores): only up to here.
CORE_FIRST_MAX_BLOCKS = 5_000
#: Imbalance allowed between chips when a plan spreads over every chip.
BALANCED = 0.05


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
            xadj=traffic.indptr.astype(np.int64),
            adjncy=traffic.indices.astype(np.int64),
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
    traffic first. When that fails, the whole core moves to the chip with a free core
    it talks to most. Cores holding pinned blocks stay on their chip. Each step costs
    time in proportion to the over-full chip's traffic and the chips it fills.
    """
    cap = ctx.cores_per_chip
    pinned = set(ctx.pins)
    if len(packed.cores) > n_chips * cap:
        ctx.notes["min_chips"] = -(-len(packed.cores) // cap)
        return False
    counts = packed.cores_on_chips(n_chips)
    room = ChipRoom(packed, n_chips)
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
        flow = _core_chip_flow(packed, ctx.traffic, n_chips, movable)
        # Least attached to its own chip first (relative to the mean over chips).
        rank = np.argsort(flow[:, chip] - flow.sum(axis=1) / n_chips, kind="stable")
        if any(_dissolve(packed, movable[r], flow[r], chip, room) for r in rank[:8].tolist()):
            counts[chip] -= 1
            continue
        has_room = counts < cap
        if not has_room.any():
            return False
        i, flow_i = movable[rank[0]], flow[rank[0]]
        dest = int(np.argmax(np.where(has_room, flow_i, -np.inf)))
        packed.move_core(i, dest)
        room.update([chip, dest])
        counts[chip] -= 1
        counts[dest] += 1


def _core_chip_flow(packed, traffic, n_chips, cores):
    """(len(cores), n_chips) dense traffic from each of ``cores``' blocks to each chip."""
    blocks = [packed.cores[i].blocks for i in cores]
    rows = np.fromiter((b for bs in blocks for b in bs), dtype=np.int64)
    owner = np.repeat(np.arange(len(cores)), [len(bs) for bs in blocks])
    start, stop = traffic.indptr[rows], traffic.indptr[rows + 1]
    lengths = stop - start
    # Every stored entry of the rows, without slicing the matrix row by row.
    entry = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    chip = packed.block_chip(traffic.indices[entry])
    flat = np.repeat(owner, lengths) * n_chips + chip
    flow = np.bincount(flat, weights=traffic.data[entry], minlength=len(cores) * n_chips)
    return flow.reshape(len(cores), n_chips)


def _dissolve(packed, i, flow, chip, room):
    """Spread core ``i``'s blocks over existing cores of other chips; all or nothing.

    Target chips are taken most traffic first (``room`` is a `ChipRoom`).
    """
    order = np.argsort(-flow, kind="stable")
    order = order[order != chip]
    blocks = np.asarray(packed.cores[i].blocks, dtype=np.int64)
    if not packed.absorb_chips(i, order, room.room):
        return False
    room.update(packed.block_chip(blocks).tolist() + [chip])
    return True


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
