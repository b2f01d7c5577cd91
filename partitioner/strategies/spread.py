"""Plans that use every one of ``k`` chips (``spread=True``), when a cut leaves some
chips empty.

A cut of a small model can leave chips without a block: METIS leaves parts empty
when the vertex weights are tiny, and packing a chip's blocks can need fewer cores
than there are chips. `fill_empty_chips` gives each empty chip a core: a whole core
from the chip with the most cores, or, when every chip has one core, a block split
off a core that holds several. A split-off block opens a core of its own, which no
per-core rule forbids (each block fits a core alone), and the core it leaves is
re-checked rule by rule in its new order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from partitioner.packing import CoreBin
from partitioner.strategies.metis import chip_first, core_first

__all__ = ["fill_empty_chips", "spread_fallback"]


def spread_fallback(ctx, k, tries=4):
    """A plan on exactly ``k`` chips from a METIS cut whose empty chips are filled.

    Parameters
    ----------
    ctx : Context
    k : int
        Chips to use, all of them.
    tries : int
        METIS seeds (``ctx.seed``, ``ctx.seed + 1``, ...) to cut with; the first cut
        that fits is filled.

    Returns
    -------
    Packed or None
        None when no cut fits ``k`` chips, or a chip cannot be given a core (more
        chips than blocks, or pins leave none to move).
    """
    if ctx.graph.n_blocks < k:
        return None
    free = dataclasses.replace(ctx, spread=False)
    packed = None
    for i in range(tries):
        packed = chip_first(dataclasses.replace(free, seed=ctx.seed + i), k)
        if packed is not None:
            break
    if packed is None:
        packed = core_first(free, k)
    if packed is None:
        return None
    packed.ctx = ctx
    return packed if fill_empty_chips(packed, ctx, k) else None


def fill_empty_chips(packed, ctx, k):
    """Give every chip ``0 .. k - 1`` of ``packed`` at least one core, in place.

    Each empty chip takes, from the chip with the most cores, the core with the least
    traffic to the rest of its chip; when every chip holds one core, a block split
    off a core of several blocks (the block with the least traffic to its core-mates)
    opens a new core on the empty chip. Cores with pinned blocks stay where they are.
    No core ever breaks a per-core rule, and no chip gets more cores than it has.

    Returns
    -------
    bool
        True when every chip has a core.
    """
    pinned = set(ctx.pins)
    while True:
        counts = packed.cores_on_chips(k)
        empty = np.flatnonzero(counts == 0)
        if empty.size == 0:
            return True
        chip = int(empty[0])
        if not (_move_a_core(packed, ctx, counts, chip, pinned)
                or _split_a_core(packed, ctx, chip, pinned)):
            return False


def _outside_traffic(ctx, core_blocks):
    """For each core (a list of blocks), its traffic to the other cores given."""
    blocks = np.fromiter((b for bs in core_blocks for b in bs), dtype=np.int64)
    owner = np.repeat(np.arange(len(core_blocks)), [len(bs) for bs in core_blocks])
    local = ctx.traffic[blocks][:, blocks].tocoo()
    across = owner[local.row] != owner[local.col]
    return np.bincount(owner[local.row][across], weights=local.data[across],
                       minlength=len(core_blocks))


def _move_a_core(packed, ctx, counts, chip, pinned):
    """Move a core from the fullest chip with two or more cores to ``chip``: the one
    with the least traffic to the rest of its chip."""
    donors = np.flatnonzero(counts >= 2)
    for donor in donors[np.argsort(-counts[donors], kind="stable")].tolist():
        cores = packed.chip_cores(donor)
        flow = _outside_traffic(ctx, [packed.cores[i].blocks for i in cores])
        movable = [(f, i) for f, i in zip(flow.tolist(), cores)
                   if not pinned.intersection(packed.cores[i].blocks)]
        if movable:
            packed.move_core(min(movable)[1], chip)
            return True
    return False


def _split_a_core(packed, ctx, chip, pinned):
    """Split one block off a core of several blocks into a new core on ``chip``: from
    the core with the most blocks, the block with the least traffic to the others,
    provided the blocks left behind still obey every rule in their new order."""
    candidates = sorted(
        (i for i, core in enumerate(packed.cores) if len(core.blocks) >= 2),
        key=lambda i: (-len(packed.cores[i].blocks), i),
    )
    for i in candidates:
        blocks = list(packed.cores[i].blocks)
        flow = _outside_traffic(ctx, [[b] for b in blocks])
        for _, b in sorted(zip(flow.tolist(), blocks)):
            if b in pinned or not _obeys_rules(ctx, [x for x in blocks if x != b]):
                continue
            packed.remove_block(b)
            packed.new_core(b, chip)
            return True
    return False


def _obeys_rules(ctx, blocks):
    """Whether ``blocks`` on one core, in this order, obey every per-core rule."""
    return CoreBin.checked(ctx.graph, ctx.limits, ctx.keys, blocks) is not None
