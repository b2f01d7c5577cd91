"""Baselines that ignore traffic when packing: what "pack by size" gives.

``first_fit``: all blocks onto cores first-fit decreasing by size, cores onto chips in
order, evenly over the chips tried. ``metis_first_fit``: METIS chips balanced by compartments, then first-fit by
size inside each chip.
The benchmark compares the METIS strategy with both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from partitioner.packing import pack
from partitioner.strategies.common import Packed
from partitioner.strategies.metis import metis_call

__all__ = ["first_fit", "metis_first_fit"]


def _no_traffic(n):
    return sp.csr_matrix((n, n))


def first_fit(ctx, k, **_):
    """Pack by size alone, then give chips runs of cores in order, evenly."""
    g = ctx.graph
    cores, _ = pack(g, np.arange(g.n_blocks), ctx.limits, ctx.keys, _no_traffic(g.n_blocks))
    m = len(cores)
    if ctx.spread and m < k:
        return None
    # Consecutive runs of cores, as equal as possible, over the k chips tried, so that
    # every chip keeps free cores where there are any.
    core_chip = np.arange(m) * min(k, m) // max(m, 1)
    if m > k * ctx.cores_per_chip:
        ctx.notes["min_chips"] = -(-m // ctx.cores_per_chip)
        return None
    return Packed(ctx, cores, core_chip)


def metis_first_fit(ctx, k, **_):
    """METIS chips balanced by compartments alone, then pack each chip by size.

    This is what using METIS without a core model gives: no config-table or axon
    sizes in the vertex weights and no repair, so a chip whose blocks need more cores
    than it has makes the chip count infeasible.
    """
    g = ctx.graph
    sizes = g.compartments / ctx.limits.compartments
    parts = metis_call(ctx.traffic, sizes, k, ctx, ctx.pins, fill=1.0)
    cores, core_chip = [], []
    for chip in range(k):
        blocks = np.flatnonzero(parts == chip)
        chip_cores, _ = pack(g, blocks, ctx.limits, ctx.keys, _no_traffic(g.n_blocks))
        if len(chip_cores) > ctx.cores_per_chip:
            return None
        cores.extend(chip_cores)
        core_chip.extend([chip] * len(chip_cores))
    return Packed(ctx, cores, core_chip)
