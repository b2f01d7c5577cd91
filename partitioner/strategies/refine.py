"""Local search that never breaks a rule and never worsens the objective.

`refine` moves single blocks to the chip they exchange the most traffic with, when
that strictly lowers inter-chip traffic and the block fits a core there (an existing
core, or a new one on a chip with a free core). `consolidate` empties lightly used
cores into other cores of the same chip, which changes no chip traffic.
"""

from __future__ import annotations

import numpy as np

from partitioner.packing import WINDOW
from partitioner.strategies.common import chip_traffic

__all__ = ["refine", "consolidate"]


def _neighbour_flow(traffic, b, block_chip, n_chips):
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    nbrs = traffic.indices[start:stop]
    return np.bincount(block_chip[nbrs], traffic.data[start:stop], minlength=n_chips)


def _chip_core_lists(packed, n_chips):
    lists = [[] for _ in range(n_chips)]
    for i, chip in enumerate(packed.core_chip):
        lists[chip].append(i)
    return lists


def _target_core(packed, b, cores, traffic):
    """The core among ``cores`` that ``b`` fits, most traffic first; None if none."""
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    affinity = {}
    for nb, w in zip(traffic.indices[start:stop], traffic.data[start:stop]):
        i = int(packed.block_core[nb])
        affinity[i] = affinity.get(i, 0.0) + w
    ranked = sorted(cores, key=lambda i: (-affinity.get(i, 0.0), -packed.cores[i].fill))
    for i in ranked[:WINDOW]:
        if packed.cores[i].fits(b):
            return i
    return None


def refine(packed, ctx, max_passes=10, chip_cap=None, keep_chips=False):
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

    Returns
    -------
    int
        Number of blocks moved.
    """
    traffic = ctx.traffic
    cap = ctx.cores_per_chip if chip_cap is None else min(chip_cap, ctx.cores_per_chip)
    pinned = set(ctx.pins)
    n_chips = packed.n_chips
    total_moves = 0
    for _ in range(max_passes):
        block_chip = packed.block_chip()
        chip_blocks = np.bincount(block_chip, minlength=n_chips)
        to_chip = chip_traffic(traffic, block_chip, n_chips).toarray() if n_chips <= 64 \
            else None
        candidates = _improving_blocks(traffic, block_chip, n_chips, to_chip)
        moves = 0
        for b in candidates:
            if b in pinned or (keep_chips and chip_blocks[block_chip[b]] == 1):
                continue
            flow = _neighbour_flow(traffic, b, block_chip, n_chips)
            own = block_chip[b]
            for dest in np.argsort(-flow, kind="stable"):
                if flow[dest] <= flow[own]:
                    break
                if _move(packed, b, int(dest), traffic, cap):
                    chip_blocks[own] -= 1
                    chip_blocks[dest] += 1
                    block_chip[b] = dest
                    moves += 1
                    break
        total_moves += moves
        if moves == 0:
            break
    return total_moves


def _improving_blocks(traffic, block_chip, n_chips, to_chip):
    """Blocks with another chip they send more traffic to than their own, best first."""
    if to_chip is None:
        to_chip = chip_traffic(traffic, block_chip, n_chips).toarray()
    idx = np.arange(block_chip.size)
    own = to_chip[idx, block_chip]
    to_chip[idx, block_chip] = -np.inf
    gain = to_chip.max(axis=1) - own
    cand = np.flatnonzero(gain > 0)
    return cand[np.argsort(-gain[cand], kind="stable")]


def _move(packed, b, dest, traffic, cap):
    """Move block ``b`` to chip ``dest`` if it fits; returns whether it moved."""
    cores = packed.chip_cores(dest)
    target = _target_core(packed, b, cores, traffic)
    if target is None and len(cores) >= cap:
        return False
    target_bin = None if target is None else packed.cores[target]
    packed.remove_block(b)
    if target_bin is None:
        packed.new_core(b, dest)
    else:
        # remove_block may delete b's old core and renumber the last core.
        packed.add_block(b, int(packed.block_core[target_bin.blocks[0]]))
    return True


def consolidate(packed, max_fill=0.35):
    """Empty lightly used cores into other cores on the same chip where possible.

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
    light = [c for c in packed.cores if c.fill <= max_fill]
    for core in sorted(light, key=lambda c: c.fill):
        i = int(packed.block_core[core.blocks[0]])
        if packed.cores[i] is core and _empty_core(packed, i):
            removed += 1
    return removed


def _empty_core(packed, i):
    """Move every block of core ``i`` into other cores of its chip, or nothing."""
    others = [j for j in packed.chip_cores(packed.core_chip[i]) if j != i]
    others.sort(key=lambda j: -packed.cores[j].fill)
    return packed.absorb(i, others)
