"""Baselines that ignore traffic when packing: what "pack by size" gives.

``first_fit``: all blocks onto cores first-fit decreasing by size, cores onto chips in
order. ``metis_first_fit``: METIS chips first, then first-fit by size inside each chip.
The benchmark compares the METIS strategy with both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from partitioner.packing import pack
from partitioner.strategies.common import Packed
from partitioner.strategies.metis import metis_parts, repair_overfull

__all__ = ["first_fit", "metis_first_fit"]


def _no_traffic(n):
    return sp.csr_matrix((n, n))


def first_fit(ctx, k):
    """Pack by size alone, then fill chips with cores in order."""
    g = ctx.graph
    cores, _ = pack(g, np.arange(g.n_blocks), ctx.limits, ctx.keys, _no_traffic(g.n_blocks))
    core_chip = np.arange(len(cores)) // ctx.cores_per_chip
    if core_chip.size and core_chip[-1] >= k:
        return None
    return Packed(ctx, cores, core_chip)


def metis_first_fit(ctx, k):
    """METIS chips, then pack each chip by size alone."""
    g = ctx.graph
    parts = metis_parts(ctx, k)
    cores, core_chip = [], []
    for chip in range(k):
        blocks = np.flatnonzero(parts == chip)
        chip_cores, _ = pack(g, blocks, ctx.limits, ctx.keys, _no_traffic(g.n_blocks))
        cores.extend(chip_cores)
        core_chip.extend([chip] * len(chip_cores))
    packed = Packed(ctx, cores, core_chip)
    return packed if repair_overfull(packed, ctx, k) else None
