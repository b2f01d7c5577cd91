"""What every strategy shares: the packed state (cores with their chips) and helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from partitioner.graph import RESOURCES
from partitioner.packing import WINDOW, BlockKeys, CoreBin, pack

SYNAPSE_BITS = RESOURCES.index("synapse_bits")

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
    """Cores (each a `CoreBin`) and the chip of each core; mutable during refinement."""

    def __init__(self, ctx, cores, core_chip):
        self.ctx = ctx
        self.cores = list(cores)
        self.core_chip = core_chip
        self.block_core = np.full(ctx.graph.n_blocks, -1, dtype=np.int64)
        for i, core in enumerate(self.cores):
            self.block_core[core.blocks] = i

    @property
    def core_chip(self):
        """Chip of each core (a list; change it through `move_core` or by assigning
        a whole new sequence, so the per-chip index stays right)."""
        return self._core_chip

    @core_chip.setter
    def core_chip(self, chips):
        self._core_chip = [int(c) for c in chips]
        self._chip_array = None

    def move_core(self, i, chip):
        """Put core ``i`` on ``chip``."""
        self._core_chip[i] = int(chip)
        self._chip_array = None

    def _chips(self):
        if self._chip_array is None:
            self._chip_array = np.asarray(self._core_chip, dtype=np.int64)
        return self._chip_array

    @property
    def n_chips(self):
        """Chips in use (chip ids are 0 .. n_chips - 1)."""
        return max(self.core_chip) + 1 if self.core_chip else 0

    def block_chip(self):
        """(n_blocks,) chip of each block."""
        return self._chips()[self.block_core]

    def chip_cores(self, chip):
        """Indices of the cores on ``chip``."""
        return np.flatnonzero(self._chips() == chip).tolist()

    def cores_by_chip(self):
        """List, per chip, of the indices of its cores."""
        chips = self._chips()
        order = np.argsort(chips, kind="stable")
        bounds = np.searchsorted(chips[order], np.arange(self.n_chips + 1))
        return [order[bounds[c]:bounds[c + 1]].tolist() for c in range(self.n_chips)]

    def cores_on_chips(self):
        """(n_chips,) number of cores on each chip."""
        return np.bincount(self._chips(), minlength=self.n_chips)

    def remove_block(self, b):
        """Take block ``b`` off its core; an emptied core is deleted."""
        i = int(self.block_core[b])
        rest = [x for x in self.cores[i].blocks if x != b]
        self.block_core[b] = -1
        if rest:
            ctx = self.ctx
            self.cores[i] = CoreBin.of(ctx.graph, ctx.limits, ctx.keys, rest)
        else:
            self.delete_core(i)

    def delete_core(self, i):
        """Delete core ``i``; the last core takes its index."""
        last = len(self.cores) - 1
        if i != last:
            self.cores[i] = self.cores[last]
            self._core_chip[i] = self._core_chip[last]
            self.block_core[self.cores[i].blocks] = i
        self.cores.pop()
        self._core_chip.pop()
        self._chip_array = None

    def add_block(self, b, core_index):
        """Append block ``b`` to an existing core."""
        self.cores[core_index].add(b)
        self.block_core[b] = core_index

    def new_core(self, b, chip):
        """Open a new core on ``chip`` holding block ``b``."""
        ctx = self.ctx
        core = CoreBin(ctx.graph, ctx.limits, ctx.keys)
        core.add(b)
        self.cores.append(core)
        self._core_chip.append(int(chip))
        self._chip_array = None
        self.block_core[b] = len(self.cores) - 1

    def absorb(self, i, targets):
        """Move every block of core ``i`` into the cores ``targets``, then delete core i.

        Blocks go largest first, each to the first target (in the given order) it fits.
        All or nothing: returns False, changing nothing, when some block fits no target.
        """
        targets = list(targets)
        if not targets:
            return False
        cap = self.ctx.limits.capacity_vector()
        used = np.array([self.cores[j].used for j in targets], dtype=np.int64)
        blocks = sorted(self.cores[i].blocks, key=lambda b: -self.ctx.sizes[b])
        need = self.ctx.graph.resources[blocks].copy()
        need[:, SYNAPSE_BITS] = self.ctx.graph.shared_synapse_bits[blocks]
        if np.any(need.sum(axis=0) > (cap - used).clip(min=0).sum(axis=0)):
            return False
        staged = {}
        for b, res in zip(blocks, need):
            for pos in np.flatnonzero(np.all(used + res <= cap, axis=1))[:WINDOW].tolist():
                j = targets[pos]
                cand = staged.get(j, self.cores[j])
                if cand.fits(b):
                    if j not in staged:
                        staged[j] = cand.copy()
                    staged[j].add(b)
                    used[pos] = staged[j].used
                    break
            else:
                return False
        for j, cand in staged.items():
            self.cores[j] = cand
            self.block_core[cand.blocks] = j
        self.delete_core(i)
        return True

    def compact_chips(self):
        """Renumber chips ``0 .. k-1`` in order of first use, dropping empty chips."""
        used = sorted(set(self.core_chip))
        remap = {c: i for i, c in enumerate(used)}
        self.core_chip = [remap[c] for c in self.core_chip]


def pack_by_chip(ctx, block_chip, n_chips):
    """Pack each chip's blocks onto as few cores as possible (best fit by size).

    Traffic inside a chip costs the same whichever core carries it, so only size
    matters here. Returns a `Packed`; chips may still be over-full.
    """
    cores, core_chip = [], []
    no_traffic = sp.csr_matrix((ctx.graph.n_blocks, ctx.graph.n_blocks))
    for chip in range(n_chips):
        blocks = np.flatnonzero(block_chip == chip)
        if blocks.size == 0:
            continue
        chip_cores, _ = pack(ctx.graph, blocks, ctx.limits, ctx.keys, no_traffic)
        cores.extend(chip_cores)
        core_chip.extend([chip] * len(chip_cores))
    return Packed(ctx, cores, core_chip)


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
