"""Blocks onto cores under every per-core rule.

The rules (see ``docs/rules.md`` and ``../shared/ARCHITECTURE.md``):

* additive resources: compartments, input axon ids, output axon entries, synapse bits
  (a block after the first on a core pays for its widened synapse formats);
* config tables: distinct compartment profiles (< 32), threshold mantissas (< 8),
  synapse formats (15 usable entries), STDP pre-trace configs (<= 3);
* shared settings: equal vmin/vmax; equal noise settings among blocks with noise on
  (blocks with noise off take the core's setting when the board is emitted);
* blocks that learn or send population axons are alone on their core;
* a block receiving pop16 axons must find all its axon ids below ``2**axon_bits``.

`CoreBin` is the incremental feasibility check every strategy shares. `pack` fills
cores first-fit-decreasing, preferring the core a block exchanges most traffic with.
"""

from __future__ import annotations

import numpy as np

from partitioner.errors import BlockTooLargeError, CoreRuleError, InfeasibleError
from partitioner.graph import RESOURCES
from partitioner.hardware import CoreLimits, get_board

__all__ = [
    "CoreBin",
    "BlockKeys",
    "effective_size",
    "pack",
    "core_violations",
    "check_blocks",
    "check_plan",
]

_SYN_BITS = RESOURCES.index("synapse_bits")
_IN_AXONS = RESOURCES.index("in_axons")
#: Config tables and the graph config kind a block uses when it is first on its core /
#: when it sits at an offset.
_TABLES = (
    ("compartment_cfgs", "compartment_cfgs", "compartment_cfgs"),
    ("vth_cfgs", "vth_cfgs", "vth_cfgs"),
    ("synapse_cfgs", "synapse_cfgs", "synapse_cfgs_shared"),
    ("stdp_pre_cfgs", "stdp_pre_cfgs", "stdp_pre_cfgs"),
)


class BlockKeys:
    """Per-block config keys as Python sets, built lazily from the graph's CSR matrices."""

    def __init__(self, graph):
        self._csr = {kind: m.tocsr() for kind, m in graph.configs.items()}
        self._cache = {}

    def get(self, kind, block):
        """The set of ``kind`` keys block ``block`` needs."""
        key = (kind, block)
        out = self._cache.get(key)
        if out is None:
            m = self._csr[kind]
            out = frozenset(m.indices[m.indptr[block]:m.indptr[block + 1]].tolist())
            self._cache[key] = out
        return out


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


class CoreBin:
    """One core being filled: tracks what it holds and answers whether a block fits.

    Blocks are laid out in the order they are added; the first sits at compartment
    offset 0 and keeps its own synapse formats.
    """

    __slots__ = ("graph", "limits", "keys", "blocks", "used", "tables", "core_key",
                 "noise_key", "_cap")

    def __init__(self, graph, limits, keys):
        self.graph = graph
        self.limits = limits
        self.keys = keys
        self.blocks = []
        self.used = np.zeros(len(RESOURCES), dtype=np.int64)
        self.tables = {table: set() for table, _, _ in _TABLES}
        self.core_key = None
        self.noise_key = -1
        self._cap = limits.capacity_vector()

    def need(self, block):
        """Resources ``block`` would use if added now (synapse bits depend on offset)."""
        need = self.graph.resources[block].copy()
        if self.blocks:
            need[_SYN_BITS] = self.graph.shared_synapse_bits[block]
        return need

    def _table_keys(self, block):
        offset = 1 if self.blocks else 0
        for table, first_kind, shared_kind in _TABLES:
            yield table, self.keys.get(shared_kind if offset else first_kind, block)

    def violations(self, block):
        """Rules ``block`` would break if added now, as short strings (empty: it fits)."""
        g = self.graph
        out = []
        alone = g.alone[block]
        if self.blocks and (alone or g.alone[self.blocks[0]]):
            out.append("learning or population-axon blocks need a core of their own")
        if self.core_key is not None and g.core_key[block] != self.core_key:
            out.append("vmin/vmax differ from the blocks already on the core")
        nk = g.noise_key[block]
        if nk >= 0 and self.noise_key >= 0 and nk != self.noise_key:
            out.append("noise settings differ from the noisy blocks already on the core")
        total = self.used + self.need(block)
        for r, name in enumerate(RESOURCES):
            if total[r] > self._cap[r]:
                out.append(f"{name} {total[r]} > {self._cap[r]}")
        for table, keys in self._table_keys(block):
            n = len(self.tables[table] | keys)
            cap = self.limits.config_capacity(table)
            if n > cap:
                out.append(f"{table} {n} > {cap}")
        # Axon ids of blocks added earlier do not move, so a pop16 receiver only
        # needs its own ids (the core's total so far) inside its id range.
        limit = g.pop16_in_limit[block]
        if limit > 0 and total[_IN_AXONS] > limit:
            out.append(f"pop16 axon ids up to {total[_IN_AXONS]} > {limit}")
        return out

    def fits(self, block):
        """Whether ``block`` can be added now without breaking a rule."""
        g = self.graph
        if self.blocks and (g.alone[block] or g.alone[self.blocks[0]]):
            return False
        if self.core_key is not None and g.core_key[block] != self.core_key:
            return False
        nk = g.noise_key[block]
        if nk >= 0 and self.noise_key >= 0 and nk != self.noise_key:
            return False
        total = self.used + self.need(block)
        if np.any(total > self._cap):
            return False
        limit = g.pop16_in_limit[block]
        if limit > 0 and total[_IN_AXONS] > limit:
            return False
        for table, keys in self._table_keys(block):
            if len(self.tables[table] | keys) > self.limits.config_capacity(table):
                return False
        return True

    def add(self, block):
        """Add ``block`` at the end of the core (call `fits` first)."""
        for table, keys in self._table_keys(block):
            self.tables[table] |= keys
        self.used += self.need(block)
        self.blocks.append(int(block))
        if self.core_key is None:
            self.core_key = self.graph.core_key[block]
        if self.graph.noise_key[block] >= 0:
            self.noise_key = self.graph.noise_key[block]

    @property
    def fill(self):
        """Largest used fraction of any additive resource."""
        return float((self.used / self._cap).max())

    def copy(self):
        """An independent copy (blocks, usage and tables)."""
        new = CoreBin(self.graph, self.limits, self.keys)
        new.blocks = list(self.blocks)
        new.used = self.used.copy()
        new.tables = {k: set(v) for k, v in self.tables.items()}
        new.core_key = self.core_key
        new.noise_key = self.noise_key
        return new

    @classmethod
    def of(cls, graph, limits, keys, blocks):
        """A bin holding ``blocks`` in order, without checking rules."""
        core = cls(graph, limits, keys)
        for b in blocks:
            core.add(b)
        return core


def pack(graph, blocks, limits=None, keys=None, traffic=None, max_cores=None):
    """Pack ``blocks`` onto as few cores as possible, keeping heavy traffic together.

    First-fit decreasing by `effective_size`; among cores the block fits, it goes to
    the one it exchanges most traffic with, then the fullest (best fit).

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
    size = effective_size(graph, limits)[blocks]
    order = blocks[np.lexsort((blocks, -size))]

    cores = []
    core_of = {}
    unplaced = []
    cap = limits.capacity_vector()
    for b in order:
        best = _best_core(graph, b, cores, core_of, traffic, cap)
        if best is None:
            if max_cores is not None and len(cores) >= max_cores:
                unplaced.append(int(b))
                continue
            best = CoreBin(graph, limits, keys)
            cores.append(best)
        best.add(b)
        core_of[int(b)] = best
    return cores, unplaced


def _best_core(graph, b, cores, core_of, traffic, cap):
    """The core ``b`` fits best: most traffic to it, then fullest."""
    if not cores or graph.alone[b]:
        return None
    start, stop = traffic.indptr[b], traffic.indptr[b + 1]
    affinity = {}
    for nb, w in zip(traffic.indices[start:stop], traffic.data[start:stop]):
        core = core_of.get(int(nb))
        if core is not None:
            affinity[id(core)] = affinity.get(id(core), 0.0) + w
    need = graph.resources[b]
    # Cheap resource screen over all open cores at once, then full checks in order.
    used = np.array([c.used for c in cores])
    room = np.all(used + need <= cap, axis=1)
    candidates = [cores[i] for i in np.flatnonzero(room)]
    candidates.sort(key=lambda c: (-affinity.get(id(c), 0.0), -c.fill))
    for core in candidates:
        if core.fits(b):
            return core
    return None


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
    suggestion = _suggest_shape(graph, b, value, lim, rule)
    fix = (
        f"Split the ensemble into smaller blocks: nengo_loihi.add_params(net); "
        f"net.config[ens].block_shape = {suggestion!r}"
        if suggestion is not None
        else "Split the ensemble into smaller blocks with nengo_loihi.BlockShape."
    )
    more = f" ({bad.size - 1} more blocks also break a rule.)" if bad.size > 1 else ""
    raise BlockTooLargeError(
        f"Block {graph.labels[b]} from {graph.sources[b]} does not fit on one Loihi core: "
        f"{'; '.join(p.split(': ', 1)[1] for p in problems)}. {fix}.{more}",
        block=graph.labels[b], source=graph.sources[b], rule=rule, value=value,
        limit=lim, suggestion=suggestion,
    )


def _suggest_shape(graph, b, value, limit, rule):
    if value is None or limit is None:
        return None
    try:
        from partitioner.shapes import suggest_block_shape
    except ImportError:  # pragma: no cover - shapes is part of the package
        return None
    return suggest_block_shape(int(graph.compartments[b]), value, limit, rule)


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
    for c in range(plan.n_cores):
        problems = core_violations(graph, plan.core_blocks(c), limits, keys)
        if problems:
            raise CoreRuleError(
                f"Core {c} on chip {plan.core_chip[c]} breaks a per-core rule: "
                f"{'; '.join(problems)}. Move a block to another core or re-plan."
            )
