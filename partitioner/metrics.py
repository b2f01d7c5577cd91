"""Quality measures of a plan, a time (max-affine) and energy cost model, and lower
bounds.

Everything works on a `TrafficGraph` and a `Plan` with numpy / scipy.sparse only, so a
plan of a million blocks and ten million edges is measured in seconds. The only dense
arrays are chip x chip (at most 768 x 768) and per mesh link.

Traffic levels
    Every directed block-to-block edge of the graph is *same-core* (both blocks on one
    core), *intra-chip* (different cores of one chip) or *inter-chip*.

Mesh routing
    Chips sit on the board's 2-D mesh at ``plan.chip_position`` (row-major index into
    ``board.mesh_shape``). A spike from chip ``a`` to chip ``b`` is routed
    dimension-ordered: first along the row (X, east or west) to ``b``'s column, then
    along the column (Y, south or north) to ``b``'s row. A mesh link is identified by
    ``position * 4 + direction`` with directions `DIRECTIONS` (east = column + 1,
    west = column - 1, south = row + 1, north = row - 1); see `link_endpoints`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from partitioner.errors import PlanError
from partitioner.graph import RESOURCES, WORK_TERMS
from partitioner.hardware import BOARDS, CoreLimits, get_board
from partitioner.packing import core_entries
from partitioner.plan import Plan

__all__ = [
    "PlanMetrics",
    "evaluate",
    "board_to_plan",
    "interchip_axons",
    "traffic_levels",
    "chip_traffic",
    "xy_route",
    "link_loads",
    "link_endpoints",
    "core_utilization",
    "mean_onchip_hops",
    "core_lower_bound",
    "chip_lower_bound",
    "lower_bounds",
    "BOUND_RULES",
    "DIRECTIONS",
    "UTILIZATION_NAMES",
    "LEVELS",
    "TIME_TERMS",
    "REGIMES",
    "term_costs",
    "core_work",
    "core_times",
    "step_time",
    "step_time_lower_bound",
    "time_constants",
    "TERM_CONSTANTS",
]

#: Mesh link directions; a link id is ``position * 4 + DIRECTIONS.index(direction)``.
DIRECTIONS = ("east", "west", "south", "north")
#: Config tables counted per core (``synapse_cfgs`` mixes own and widened formats).
CONFIG_TABLES = CoreLimits.CONFIG_TABLES
#: Columns of the per-core utilization matrix.
UTILIZATION_NAMES = tuple(RESOURCES) + tuple(CONFIG_TABLES)
#: Traffic levels, in the order `traffic_levels` numbers them.
LEVELS = ("samecore", "intrachip", "interchip")
#: Terms of the max-affine step time: per core, synaptic operations, compartment
#: updates and synapse memory words read; per chip-to-chip link, spikes carried.
TIME_TERMS = WORK_TERMS + ("link_spikes",)
#: The regime a plan is in when each term is its bottleneck (after Yik et al. 2025).
REGIMES = {"synops": "compute", "updates": "compute", "synmem_reads": "memory",
           "link_spikes": "traffic"}
_TERM_TEXT = {"synops": "synaptic ops", "updates": "compartment updates",
              "synmem_reads": "synapse memory words read", "link_spikes": "spikes"}

# Flow-hops expanded at once by `link_loads`; bounds its temporary memory.
_ROUTE_CHUNK = 4_000_000


# ---------------------------------------------------------------------- result
@dataclass(eq=False)
class PlanMetrics:
    """Measures of one plan on one board (see `evaluate`).

    Traffic values are per time step: ``*_spikes`` are expected spikes, ``*_axons``
    are axon counts (the traffic when every axon is active, the measure
    ``nengo_loihi.hardware.allocators.estimate_interchip_activity`` reports).

    Attributes
    ----------
    board : str
        Board the plan was measured on.
    mesh_shape : tuple of int
        Chip mesh (rows, columns) of that board.
    n_blocks, n_cores, n_chips : int
        Sizes of the plan.
    rates : str
        Where the graph's spike rates came from (`TrafficGraph.rates`).
    samecore_axons, samecore_spikes : float
        Traffic between blocks on one core.
    intrachip_axons, intrachip_spikes : float
        Traffic between different cores of one chip.
    interchip_axons, interchip_spikes : float
        Traffic between chips.
    host_input_axons, host_input_spikes : (n_chips,) float ndarray
        Traffic from host inputs into each chip.
    chip_axons, chip_spikes : (n_chips, n_chips) float ndarray
        Directed inter-chip traffic, source chip (row) to target chip (column); the
        diagonal is 0 (intra-chip traffic uses no chip-to-chip link).
    chip_hops : (n_chips, n_chips) int ndarray
        Mesh hops between the chips' board positions.
    hop_weighted_cost : float
        ``sum(chip_spikes * chip_hops)``: spike-hops per step on chip-to-chip links.
    max_hops : int
        Largest hop count of any chip pair with traffic.
    link_load : (rows * columns * 4,) float ndarray
        Spikes per step on every directed mesh link (see `link_endpoints`); sums to
        ``hop_weighted_cost``.
    max_link_load : float
        Largest entry of ``link_load``.
    core_utilization : (n_cores, 8) float ndarray
        Fraction of each `CoreLimits` capacity used per core, columns
        `UTILIZATION_NAMES` (above 1 where a core breaks a limit, as nengo-loihi's
        own plans can).
    core_out_entries, core_interchip_entries : (n_cores,) int ndarray
        Output axon config entries of each core, and how many of them are the extra
        entries of axons to blocks on other chips.
    cores_over_limit : int
        Cores over any capacity (such a plan would not build on Loihi).
    mean_core_utilization, max_core_utilization : dict of str -> float
        Mean / max of each column of ``core_utilization`` over cores.
    mean_core_load, max_core_load : float
        Mean / max over cores of the core's fullest resource.
    chip_core_fraction : (n_chips,) float ndarray
        Cores used / cores per chip.
    chip_compartments : (n_chips,) float ndarray
        Compartments on each chip.
    chip_compartment_fraction : (n_chips,) float ndarray
        Compartments / (cores per chip * compartments per core).
    synops : float
        Synaptic operations per step used by the energy estimate.
    synops_estimate : str
        How ``synops`` was obtained.
    energy_pj : float
        Estimated energy per step in pJ (formula in `evaluate`).
    energy_breakdown : dict of str -> float
        The terms of ``energy_pj``.
    time_ns : float
        Estimated time per step in ns (formula in `evaluate`).
    time_breakdown : dict of str -> float
        ``barrier_sync``, ``interchip_latency`` and ``work`` (the largest of
        ``time_terms``), which sum to ``time_ns``.
    assumptions : list of str
        Cost-model constants that are assumptions rather than published numbers.
    core_work : (n_cores, 3) float ndarray
        Work of each core per step, columns `WORK_TERMS` (synaptic ops, compartment
        updates, synapse memory words read).
    core_time_ns : (n_cores,) float ndarray
        Time each core needs per step: its largest work term times that term's cost.
    peak_work : dict of str -> float
        For each of `TIME_TERMS`, the largest count of any core (or, for
        ``link_spikes``, of any chip-to-chip link) per step.
    time_terms : dict of str -> float
        ``peak_work`` times each term's cost (ns): the pieces of the max-affine step
        time, whose largest is ``time_breakdown["work"]``.
    bottleneck : dict
        What sets the step time: ``kind`` (``"core"``, ``"link"`` or ``"none"``),
        ``term`` (one of `TIME_TERMS`), ``index`` (core index or link id), ``chip``
        (the core's chip, or the link's source chip position), ``value`` (count per
        step), ``ns``, ``blocks`` (blocks on the core), ``regime`` and ``text``; a
        link also has ``from`` and ``to`` (mesh positions, row and column).
    regime : str
        ``"compute"`` (a core's synaptic ops or updates), ``"memory"`` (a core's
        synapse memory reads), ``"traffic"`` (a chip-to-chip link) or ``"sync"``
        (no work at all).
    block_bound_ns : float
        Step time no plan can beat: barrier synchronization plus the largest work
        term of the heaviest single block (only smaller blocks go below it).
    time_constants : dict
        The cost of each step-time term, its constant and source (`time_constants`).
    """

    board: str
    mesh_shape: tuple
    n_blocks: int
    n_cores: int
    n_chips: int
    rates: str
    samecore_axons: float
    samecore_spikes: float
    intrachip_axons: float
    intrachip_spikes: float
    interchip_axons: float
    interchip_spikes: float
    host_input_axons: np.ndarray
    host_input_spikes: np.ndarray
    chip_axons: np.ndarray
    chip_spikes: np.ndarray
    chip_hops: np.ndarray
    hop_weighted_cost: float
    max_hops: int
    link_load: np.ndarray
    max_link_load: float
    core_utilization: np.ndarray
    core_out_entries: np.ndarray
    core_interchip_entries: np.ndarray
    cores_over_limit: int
    mean_core_utilization: dict
    max_core_utilization: dict
    mean_core_load: float
    max_core_load: float
    chip_core_fraction: np.ndarray
    chip_compartments: np.ndarray
    chip_compartment_fraction: np.ndarray
    synops: float
    synops_estimate: str
    energy_pj: float
    energy_breakdown: dict
    time_ns: float
    time_breakdown: dict
    assumptions: list = field(default_factory=list)
    core_work: np.ndarray = None
    core_time_ns: np.ndarray = None
    peak_work: dict = field(default_factory=dict)
    time_terms: dict = field(default_factory=dict)
    bottleneck: dict = field(default_factory=dict)
    regime: str = ""
    block_bound_ns: float = 0.0
    time_constants: dict = field(default_factory=dict)

    def links(self):
        """Mesh links that carry traffic, heaviest first.

        Returns
        -------
        list of dict
            ``link`` id, ``from`` and ``to`` position (row, column), ``direction``
            and ``spikes`` per step.
        """
        ends = link_endpoints(self.mesh_shape)
        cols = self.mesh_shape[1]
        used = np.flatnonzero(self.link_load)
        used = used[np.argsort(-self.link_load[used], kind="stable")]
        return [
            {
                "link": int(k),
                "from": list(divmod(int(ends[k, 0]), cols)),
                "to": list(divmod(int(ends[k, 1]), cols)),
                "direction": DIRECTIONS[k % 4],
                "spikes": float(self.link_load[k]),
            }
            for k in used
        ]

    def chip_pairs(self):
        """Chip pairs with traffic as dicts (``src``, ``dst``, ``spikes``, ``axons``, ``hops``)."""
        src, dst = np.nonzero((self.chip_spikes > 0) | (self.chip_axons > 0))
        return [
            {
                "src": int(a),
                "dst": int(b),
                "spikes": float(self.chip_spikes[a, b]),
                "axons": float(self.chip_axons[a, b]),
                "hops": int(self.chip_hops[a, b]),
            }
            for a, b in zip(src, dst)
        ]

    def to_dict(self, per_core=False):
        """A JSON-serializable dict.

        Parameters
        ----------
        per_core : bool
            Also include the per-core utilization matrix (``n_cores`` rows; large for
            big plans).
        """
        out = {
            "board": self.board,
            "mesh_shape": list(self.mesh_shape),
            "n_blocks": self.n_blocks,
            "n_cores": self.n_cores,
            "n_chips": self.n_chips,
            "rates": self.rates,
        }
        for level in LEVELS:
            for kind in ("axons", "spikes"):
                name = f"{level}_{kind}"
                out[name] = float(getattr(self, name))
        out.update(
            host_input_axons=self.host_input_axons.tolist(),
            host_input_spikes=self.host_input_spikes.tolist(),
            hop_weighted_cost=float(self.hop_weighted_cost),
            max_hops=int(self.max_hops),
            max_link_load=float(self.max_link_load),
            chip_pairs=self.chip_pairs(),
            links=self.links(),
            max_core_out_entries=int(self.core_out_entries.max(initial=0)),
            max_core_interchip_entries=int(self.core_interchip_entries.max(initial=0)),
            cores_over_limit=int(self.cores_over_limit),
            mean_core_utilization=dict(self.mean_core_utilization),
            max_core_utilization=dict(self.max_core_utilization),
            mean_core_load=float(self.mean_core_load),
            max_core_load=float(self.max_core_load),
            chip_core_fraction=self.chip_core_fraction.tolist(),
            chip_compartments=self.chip_compartments.tolist(),
            chip_compartment_fraction=self.chip_compartment_fraction.tolist(),
            synops=float(self.synops),
            synops_estimate=self.synops_estimate,
            energy_pj=float(self.energy_pj),
            energy_breakdown=dict(self.energy_breakdown),
            time_ns=float(self.time_ns),
            time_breakdown=dict(self.time_breakdown),
            assumptions=list(self.assumptions),
            peak_work=dict(self.peak_work),
            time_terms=dict(self.time_terms),
            bottleneck=dict(self.bottleneck),
            regime=self.regime,
            block_bound_ns=float(self.block_bound_ns),
            time_constants={k: dict(v) for k, v in self.time_constants.items()},
        )
        if per_core:
            out["utilization_names"] = list(UTILIZATION_NAMES)
            out["core_utilization"] = self.core_utilization.tolist()
            out["core_out_entries"] = self.core_out_entries.tolist()
            out["core_interchip_entries"] = self.core_interchip_entries.tolist()
            if self.core_work is not None:
                out["work_names"] = list(WORK_TERMS)
                out["core_work"] = self.core_work.tolist()
                out["core_time_ns"] = self.core_time_ns.tolist()
        return out


# ------------------------------------------------------------------- helpers
def _resolve_board(board, plan):
    """A `BoardSpec` from a spec, a name, or (if None) the plan's board name.

    Names of sub-boards written by `BoardSpec.with_chips` (``"nahuku32[5]"``) are
    understood.
    """
    board = plan.board if board is None else board
    if isinstance(board, str):
        match = re.fullmatch(r"(.+)\[(\d+)\]", board.strip())
        if match:
            return get_board(match.group(1)).with_chips(int(match.group(2)))
    return get_board(board)


def _check_plan(graph, plan, board):
    if plan.n_blocks != graph.n_blocks:
        raise PlanError(
            f"The plan places {plan.n_blocks} blocks but the graph has {graph.n_blocks}. "
            f"Measure a plan made for this graph."
        )
    if plan.n_chips and int(plan.chip_position.max()) >= board.n_chips:
        raise PlanError(
            f"The plan puts a chip at board position {int(plan.chip_position.max())}, but "
            f"{board.name} has only {board.n_chips} chip positions. Measure it on a "
            f"larger board (board=...) or re-place the plan's chips."
        )


def _edges(matrix):
    coo = matrix.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data


def _first_on_core(plan):
    """(n_blocks,) bool: block sits at compartment offset 0 of its core."""
    first = np.zeros(plan.n_blocks, dtype=bool)
    first[plan.layout[plan.core_ptr[:-1]]] = True
    return first


def _indicator(groups, n_groups, rows=None):
    """Sparse (n_groups, n_items) 0/1 matrix mapping items to their group."""
    n = groups.size
    rows = np.ones(n, dtype=bool) if rows is None else rows
    idx = np.flatnonzero(rows)
    return sp.csr_matrix(
        (np.ones(idx.size, dtype=np.float64), (groups[idx], idx)), shape=(n_groups, n)
    )


def _with_width(matrix, n_cols):
    """``matrix`` (CSR) seen with ``n_cols`` columns (>= its own)."""
    m = matrix.tocsr()
    return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n_cols))


def _synapse_key_matrices(graph):
    """Own and widened synapse-format key matrices, float, on one column space."""
    own = graph.configs["synapse_cfgs"]
    shared = graph.configs["synapse_cfgs_shared"]
    width = max(own.shape[1], shared.shape[1])
    return (
        _with_width(own, width).astype(np.float64),
        _with_width(shared, width).astype(np.float64),
    )


def _distinct_per_group(indicator, keys):
    """Distinct keys (columns) used per group: row nnz of ``indicator @ keys``."""
    if keys.shape[1] == 0:
        return np.zeros(indicator.shape[0], dtype=np.int64)
    prod = (indicator @ keys.astype(np.float64)).tocsr()
    prod.eliminate_zeros()
    return np.diff(prod.indptr).astype(np.int64)


def _column_sums(values, groups, n_groups):
    """(n_groups, n_columns) sums of the columns of ``values`` per group."""
    return np.stack(
        [np.bincount(groups, weights=col, minlength=n_groups) for col in values.T], axis=1
    )


def _group_max(values, groups, n_groups):
    """Maximum of ``values`` per group (0 for empty groups)."""
    out = np.zeros(n_groups, dtype=np.result_type(values, np.int64))
    np.maximum.at(out, groups, values)
    return out


# ------------------------------------------------------------------- traffic
def traffic_levels(graph, plan, weight="spikes"):
    """Total traffic at each level (`LEVELS`).

    Parameters
    ----------
    graph : TrafficGraph
    plan : Plan
    weight : {"spikes", "axons"}
        Spikes per step or axon counts.

    Returns
    -------
    dict of str -> float
        ``{"samecore": ..., "intrachip": ..., "interchip": ...}``.
    """
    src, dst, val = _edges(graph.traffic(weight))
    block_core = plan.block_core
    block_chip = plan.core_chip[block_core]
    level = np.where(
        block_core[src] == block_core[dst], 0, np.where(block_chip[src] == block_chip[dst], 1, 2)
    )
    sums = np.bincount(level, weights=val, minlength=3)
    return {name: float(s) for name, s in zip(LEVELS, sums)}


def interchip_axons(graph, plan):
    """Axons between blocks on different chips.

    Comparable to ``estimate_interchip_activity(board)["interchip"]`` of nengo-loihi
    (which also adds 1e-16 per connected block pair).
    """
    return traffic_levels(graph, plan, "axons")["interchip"]


def chip_traffic(graph, plan, weight="spikes"):
    """Directed chip x chip inter-chip traffic (diagonal 0) as a dense array."""
    src, dst, val = _edges(graph.traffic(weight))
    block_chip = plan.block_chip
    a, b = block_chip[src], block_chip[dst]
    cross = a != b
    n = plan.n_chips
    flat = np.bincount(a[cross] * n + b[cross], weights=val[cross], minlength=n * n)
    return flat.reshape(n, n)


def _host_input(graph, plan, weight):
    mat = graph.input_spikes if weight == "spikes" else graph.input_axons
    per_block = np.asarray(mat.sum(axis=0)).ravel()
    return np.bincount(plan.block_chip, weights=per_block, minlength=plan.n_chips)


# ---------------------------------------------------------------------- mesh
def link_endpoints(mesh_shape):
    """Source and target position of every directed mesh link.

    Parameters
    ----------
    mesh_shape : tuple of int
        (rows, columns).

    Returns
    -------
    (rows * columns * 4, 2) int ndarray
        Row ``position * 4 + d`` holds ``(position, neighbour)`` for direction
        ``DIRECTIONS[d]``; the neighbour is -1 where the link leaves the mesh.
    """
    rows, cols = mesh_shape
    pos = np.arange(rows * cols)
    r, c = np.divmod(pos, cols)
    nbr = np.stack(
        [
            np.where(c + 1 < cols, pos + 1, -1),
            np.where(c > 0, pos - 1, -1),
            np.where(r + 1 < rows, pos + cols, -1),
            np.where(r > 0, pos - cols, -1),
        ],
        axis=1,
    )
    return np.stack([np.repeat(pos, 4), nbr.ravel()], axis=1)


def _steps(lengths):
    """For runs of the given lengths: run index and step within run of every step."""
    run = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    return run, np.arange(run.size) - starts[run]


def xy_route(src_pos, dst_pos, mesh_shape):
    """Links on the dimension-ordered (X then Y) routes of many flows.

    Parameters
    ----------
    src_pos, dst_pos : (n_flows,) int array
        Board positions (row-major) of each flow's source and target chip.
    mesh_shape : tuple of int
        (rows, columns).

    Returns
    -------
    flow : (n_hops,) int ndarray
        The flow each route step belongs to.
    link : (n_hops,) int ndarray
        The link id (``position * 4 + direction``) of that step.
    """
    cols = mesh_shape[1]
    r0, c0 = np.divmod(np.asarray(src_pos, dtype=np.int64), cols)
    r1, c1 = np.divmod(np.asarray(dst_pos, dtype=np.int64), cols)
    dx, dy = c1 - c0, r1 - r0

    fx, kx = _steps(np.abs(dx))
    sx = np.sign(dx[fx])
    link_x = (r0[fx] * cols + c0[fx] + sx * kx) * 4 + np.where(sx > 0, 0, 1)

    fy, ky = _steps(np.abs(dy))
    sy = np.sign(dy[fy])
    link_y = ((r0[fy] + sy * ky) * cols + c1[fy]) * 4 + np.where(sy > 0, 2, 3)

    return np.concatenate([fx, fy]), np.concatenate([link_x, link_y])


def link_loads(chip_load, chip_position, mesh_shape):
    """Load on every directed mesh link under X-then-Y routing.

    Parameters
    ----------
    chip_load : (n_chips, n_chips) float array
        Directed traffic between chips (the diagonal is ignored).
    chip_position : (n_chips,) int array
        Board position of each chip.
    mesh_shape : tuple of int
        (rows, columns) of the board.

    Returns
    -------
    (rows * columns * 4,) float ndarray
        Load per link id (see `link_endpoints`).
    """
    n_links = mesh_shape[0] * mesh_shape[1] * 4
    chip_load = np.asarray(chip_load, dtype=np.float64)
    chip_position = np.asarray(chip_position, dtype=np.int64)
    a, b = np.nonzero(chip_load)
    keep = a != b
    a, b = a[keep], b[keep]
    w = chip_load[a, b]
    src, dst = chip_position[a], chip_position[b]
    cols = mesh_shape[1]
    hops = np.abs(src // cols - dst // cols) + np.abs(src % cols - dst % cols)

    loads = np.zeros(n_links)
    # Expand at most ~_ROUTE_CHUNK route steps at a time.
    bounds = np.searchsorted(np.cumsum(hops), np.arange(_ROUTE_CHUNK, hops.sum(), _ROUTE_CHUNK))
    for part in np.split(np.arange(a.size), bounds):
        flow, link = xy_route(src[part], dst[part], mesh_shape)
        loads += np.bincount(link, weights=w[part][flow], minlength=n_links)
    return loads


# --------------------------------------------------------------- utilization
def core_utilization(graph, plan, limits=None):
    """Fraction of each core capacity used, per core.

    Output axon entries count one more entry for every axon whose target block is on
    another chip (`TrafficGraph.block_out_entries`). A block after the first on its
    core counts its widened synapse memory
    (``graph.shared_synapse_bits``) and widened synapse formats
    (``configs["synapse_cfgs_shared"]``); config tables count distinct keys. Own and
    widened synapse formats are taken to share one key space (equal column, equal
    format), as `partitioner.packing` does.

    Parameters
    ----------
    graph : TrafficGraph
    plan : Plan
    limits : CoreLimits, optional
        Loihi 1 defaults if omitted.

    Returns
    -------
    (n_cores, 8) float ndarray
        Columns `UTILIZATION_NAMES`.
    """
    limits = CoreLimits() if limits is None else limits
    block_core = plan.block_core
    n_cores = plan.n_cores
    first = _first_on_core(plan)

    res = graph.resources.astype(np.float64).copy()
    syn = RESOURCES.index("synapse_bits")
    res[:, syn] = np.where(first, res[:, syn], graph.shared_synapse_bits)
    out = RESOURCES.index("out_axons")
    res[:, out] = graph.block_out_entries(plan.block_chip)
    used = _column_sums(res, block_core, n_cores)
    frac = [used / limits.capacity_vector()]

    member = _indicator(block_core, n_cores)
    own, shared = _synapse_key_matrices(graph)
    keys = {
        "compartment_cfgs": graph.configs["compartment_cfgs"],
        "vth_cfgs": graph.configs["vth_cfgs"],
        "synapse_cfgs": sp.diags(first.astype(np.float64)) @ own
        + sp.diags((~first).astype(np.float64)) @ shared,
        "stdp_pre_cfgs": graph.configs["stdp_pre_cfgs"],
    }
    for table in CONFIG_TABLES:
        count = _distinct_per_group(member, keys[table])
        frac.append((count / limits.config_capacity(table))[:, None])
    return np.hstack(frac)


def mean_onchip_hops(core_mesh):
    """Mean east-west and north-south hops between two uniformly random cores.

    For ``n`` positions on a line the mean distance of two independent uniform
    positions is ``(n**2 - 1) / (3 n)``.

    Parameters
    ----------
    core_mesh : tuple of int
        (rows, columns) of the core grid in a chip.

    Returns
    -------
    (float, float)
        Mean east-west (column) hops and mean north-south (row) hops.
    """
    rows, cols = core_mesh
    return (cols**2 - 1) / (3 * cols), (rows**2 - 1) / (3 * rows)


# --------------------------------------------------------------- cost model
def _energy(levels, synops, spike_hops, board):
    e = board.energy
    ew, ns = mean_onchip_hops(board.chip.core_mesh)
    route_pj = e.spike_in_tile_pj + ew * e.hop_ew_pj + ns * e.hop_ns_pj
    parts = {
        "synops": synops * e.synop_pj,
        "samecore_spikes": levels["samecore"] * e.spike_in_tile_pj,
        "intrachip_spikes": levels["intrachip"] * route_pj,
        "interchip_onchip": levels["interchip"] * route_pj,
        "interchip_links": spike_hops * e.interchip_spike_pj,
    }
    return float(sum(parts.values())), parts


def term_costs(energy):
    """Nanoseconds per unit of each of `TIME_TERMS`.

    Parameters
    ----------
    energy : EnergyModel

    Returns
    -------
    (4,) float ndarray
        ``synop_ns``, ``core_update_ns``, ``synmem_word_ns`` and the time one
        chip-to-chip link needs per spike, ``1000 / interchip_link_spikes_per_us``.
    """
    return np.array([
        energy.synop_ns, energy.core_update_ns, energy.synmem_word_ns,
        1000.0 / energy.interchip_link_spikes_per_us,
    ], dtype=np.float64)


#: The `EnergyModel` constant behind each of `TIME_TERMS`.
TERM_CONSTANTS = {"synops": "synop_ns", "updates": "core_update_ns",
                  "synmem_reads": "synmem_word_ns",
                  "link_spikes": "interchip_link_spikes_per_us"}


def time_constants(energy):
    """Each step-time term's cost, the constant it comes from and that constant's source.

    Parameters
    ----------
    energy : EnergyModel

    Returns
    -------
    dict of str -> dict
        For each of `TIME_TERMS` and for ``barrier_sync`` and ``interchip_latency``:
        ``constant`` (the `EnergyModel` field), ``value`` (of that field), ``ns``
        (per unit of the term: per synaptic op, update, memory word, link spike or
        hop) and ``source``.
    """
    costs = dict(zip(TIME_TERMS, term_costs(energy).tolist()))
    costs["barrier_sync"] = float(energy.barrier_sync_ns)
    costs["interchip_latency"] = float(energy.interchip_hop_ns)
    fields = dict(TERM_CONSTANTS, barrier_sync="barrier_sync_ns",
                  interchip_latency="interchip_hop_ns")
    return {
        term: {"constant": fields[term], "value": float(getattr(energy, fields[term])),
               "ns": costs[term], "source": energy.TIME_SOURCES[fields[term]]}
        for term in fields
    }


def core_work(graph, plan=None, block_core=None, n_cores=None):
    """Work each core does per time step (`TrafficGraph.block_work` summed per core).

    Parameters
    ----------
    graph : TrafficGraph
    plan : Plan, optional
        The placement; or give ``block_core`` and ``n_cores``.
    block_core : (n_blocks,) int array, optional
    n_cores : int, optional

    Returns
    -------
    (n_cores, 3) float ndarray
        Columns `WORK_TERMS`.
    """
    if plan is not None:
        block_core, n_cores = plan.block_core, plan.n_cores
    return _column_sums(graph.block_work(), np.asarray(block_core, dtype=np.int64),
                        int(n_cores))


def core_times(work, energy):
    """Time (ns) each core needs per step: the largest of its work terms times cost.

    Parameters
    ----------
    work : (n_cores, 3) array
        `core_work`.
    energy : EnergyModel

    Returns
    -------
    (n_cores,) float ndarray
    """
    work = np.asarray(work, dtype=np.float64)
    if work.size == 0:
        return np.zeros(work.shape[0])
    return (work * term_costs(energy)[:3]).max(axis=1)


def step_time(peak_work, max_hops, energy):
    """The max-affine time per step from the peak of each term.

    ``T = barrier_sync_ns + max_hops * interchip_hop_ns + max(S * synop_ns,
    U * core_update_ns, M * synmem_word_ns, L * 1000 / interchip_link_spikes_per_us)``
    where ``S``, ``U`` and ``M`` are the most synaptic ops, compartment updates and
    synapse memory words of any core, and ``L`` the most spikes of any chip-to-chip
    link, per step.

    Parameters
    ----------
    peak_work : dict of str -> float
        Peak count of each of `TIME_TERMS` (missing terms count 0).
    max_hops : int
        Most chip-to-chip hops between two chips that exchange spikes.
    energy : EnergyModel

    Returns
    -------
    time_ns : float
    breakdown : dict of str -> float
        ``barrier_sync``, ``interchip_latency`` and ``work`` (the largest term), which
        sum to ``time_ns``.
    terms : dict of str -> float
        Each term in ns.
    binding : str or None
        The largest term (first of `TIME_TERMS` on ties), None when all are 0.
    """
    costs = term_costs(energy)
    terms = {t: float(peak_work.get(t, 0.0)) * float(c) for t, c in zip(TIME_TERMS, costs)}
    binding = max(TIME_TERMS, key=lambda t: (terms[t], -TIME_TERMS.index(t)))
    if terms[binding] <= 0:
        binding = None
    breakdown = {
        "barrier_sync": float(energy.barrier_sync_ns),
        "interchip_latency": float(max_hops) * energy.interchip_hop_ns,
        "work": terms[binding] if binding else 0.0,
    }
    return float(sum(breakdown.values())), breakdown, terms, binding


def step_time_lower_bound(graph, board, n_chips=None):
    """A lower bound on the step time of any valid plan on at most ``n_chips`` chips.

    Barrier synchronization plus, for each core term, the larger of the heaviest
    single block's work and the total work spread evenly over every core of the
    chips (link terms and inter-chip latency are bounded by 0).

    Parameters
    ----------
    graph : TrafficGraph
    board : BoardSpec or str
    n_chips : int, optional
        Chips allowed (default: the board's).

    Returns
    -------
    float
        Nanoseconds.
    """
    board = get_board(board)
    n_chips = board.n_chips if n_chips is None else int(n_chips)
    work = graph.block_work()
    if work.shape[0] == 0:
        return float(board.energy.barrier_sync_ns)
    cores = max(1, n_chips * board.cores_per_chip)
    peak = np.maximum(work.max(axis=0), work.sum(axis=0) / cores)
    return float(board.energy.barrier_sync_ns + (peak * term_costs(board.energy)[:3]).max())


def _bottleneck(binding, terms, work, plan, loads, board):
    """Description of what sets the step time (see `PlanMetrics.bottleneck`)."""
    if binding is None:
        return {"kind": "none", "term": None, "index": None, "chip": None, "value": 0.0,
                "ns": 0.0, "blocks": [], "regime": "sync",
                "text": "no work: barrier synchronization only"}
    ns = terms[binding]
    if binding == "link_spikes":
        k = int(np.argmax(loads))
        ends = link_endpoints(board.mesh_shape)
        cols = board.mesh_shape[1]
        src, dst = (divmod(int(p), cols) for p in ends[k])
        value = float(loads[k])
        return {
            "kind": "link", "term": binding, "index": k, "chip": int(ends[k, 0]),
            "from": list(src), "to": list(dst),
            "value": value, "ns": ns, "blocks": [], "regime": REGIMES[binding],
            "text": (f"chip-to-chip link {src}->{dst} ({DIRECTIONS[k % 4]}): "
                     f"{value:,.1f} spikes/step x {ns / max(value, 1e-300):.3g} ns = "
                     f"{ns / 1000:.3g} us"),
        }
    j = WORK_TERMS.index(binding)
    c = int(np.argmax(work[:, j]))
    value = float(work[c, j])
    blocks = plan.core_blocks(c).tolist()
    alone = (" (one block alone on its core: only a smaller block shape lowers it)"
             if len(blocks) == 1 else f" ({len(blocks)} blocks)")
    return {
        "kind": "core", "term": binding, "index": c, "chip": int(plan.core_chip[c]),
        "value": value, "ns": ns, "blocks": blocks, "regime": REGIMES[binding],
        "text": (f"core {c} on chip {int(plan.core_chip[c])}{alone}: {value:,.0f} "
                 f"{_TERM_TEXT[binding]}/step x {ns / max(value, 1e-300):.3g} ns = "
                 f"{ns / 1000:.3g} us"),
    }


_ASSUMPTIONS = [
    "interchip_spike_pj, interchip_hop_ns and interchip_link_spikes_per_us are not "
    "published; they are EnergyModel defaults (vary them in what-if studies)",
    "core_update_ns (time per compartment update) and synmem_word_ns (time per synapse "
    "memory word read) are assumptions",
    "the chip mesh shape of the board is not published; it is a BoardSpec default",
    "on-chip routes are charged the mean hop count of two random cores of the chip",
]


_SYNOPS_ESTIMATE = {
    "synapses": "spikes x fan-out (synapses each spike reaches, from the synapse "
                "weights and axon maps)",
    "spikes": "spikes delivered (one synaptic op per spike: this graph holds no "
              "fan-out; extract it from a nengo-loihi model for real counts)",
}


# ------------------------------------------------------------------ evaluate
def evaluate(graph, plan, board=None):
    """Measure a plan: traffic by level, mesh load, utilization, time and energy.

    Parameters
    ----------
    graph : TrafficGraph
        The graph the plan places (block ``i`` of both is the same block).
    plan : Plan
        The placement to measure.
    board : BoardSpec or str, optional
        Board (or its name, see `partitioner.hardware.get_board`) providing the mesh,
        hop counts, core limits and cost constants. Defaults to ``plan.board``.

    Returns
    -------
    PlanMetrics

    Notes
    -----
    Cost model, per time step, with the constants of ``board.energy``
    (`partitioner.hardware.EnergyModel`) and the traffic of the graph:

    * synaptic operations: every spike delivered to a block triggers one op per
      synapse its target axon reaches, ``synops = sum(graph.synops) +
      sum(graph.input_synops)`` (spikes x fan-out, from extraction; a graph without
      fan-out, ``graph.work == "spikes"``, counts one op per spike);
    * on-chip route energy ``E_route = spike_in_tile_pj + h_ew * hop_ew_pj
      + h_ns * hop_ns_pj``, with ``h_ew, h_ns`` = `mean_onchip_hops` of the chip's
      core mesh;
    * energy ``E = synops * synop_pj + S_same * spike_in_tile_pj
      + (S_intra + S_inter) * E_route + spike_hops * interchip_spike_pj``, where
      ``spike_hops`` = ``hop_weighted_cost`` (an inter-chip spike is charged one
      on-chip route plus each chip-to-chip link it crosses);
    * time, a max-affine model (`step_time`): all cores advance in lockstep, so a
      step lasts as long as the busiest core or the busiest chip-to-chip link needs,
      plus synchronization::

          T = barrier_sync_ns + max_hops * interchip_hop_ns
              + max(max_c S_c * synop_ns, max_c U_c * core_update_ns,
                    max_c M_c * synmem_word_ns,
                    max_link_load * 1000 / interchip_link_spikes_per_us)

      with ``S_c``, ``U_c``, ``M_c`` the synaptic ops, compartment updates and
      synapse memory words read by core ``c`` per step (`core_work`). The largest
      term is the bottleneck (``PlanMetrics.bottleneck``, ``regime``).

    ``S_*`` are the spike totals per level. Several constants are assumptions, listed
    in ``PlanMetrics.assumptions``.
    """
    board = _resolve_board(board, plan)
    _check_plan(graph, plan, board)
    limits = board.limits

    spikes = traffic_levels(graph, plan, "spikes")
    axons = traffic_levels(graph, plan, "axons")
    chip_spikes = chip_traffic(graph, plan, "spikes")
    chip_axons = chip_traffic(graph, plan, "axons")
    host_spikes = _host_input(graph, plan, "spikes")
    host_axons = _host_input(graph, plan, "axons")

    pos = plan.chip_position
    chip_hops = board.hop_matrix()[np.ix_(pos, pos)]
    hop_cost = float((chip_spikes * chip_hops).sum())
    talking = (chip_spikes > 0) | (chip_axons > 0)
    max_hops = int(chip_hops[talking].max()) if talking.any() else 0
    loads = link_loads(chip_spikes, pos, board.mesh_shape)
    max_link = float(loads.max()) if loads.size else 0.0

    util = core_utilization(graph, plan, limits)
    core_load = util.max(axis=1) if util.size else np.zeros(0)
    core_out, core_inter = core_entries(graph, plan.block_core, plan.block_chip,
                                        plan.n_cores)
    compartments = graph.compartments.astype(np.float64)
    chip_comp = np.bincount(plan.block_chip, weights=compartments, minlength=plan.n_chips)

    block_work = graph.block_work()
    work = _column_sums(block_work, plan.block_core, plan.n_cores)
    synops = float(block_work[:, 0].sum())
    energy, energy_parts = _energy(spikes, synops, hop_cost, board)
    peak = work.max(axis=0) if work.size else np.zeros(len(WORK_TERMS))
    peak_work = dict(zip(WORK_TERMS, peak.tolist()))
    peak_work["link_spikes"] = max_link
    time, time_parts, terms, binding = step_time(peak_work, max_hops, board.energy)
    bottleneck = _bottleneck(binding, terms, work, plan, loads, board)
    block_peak = block_work.max(axis=0) if block_work.size else np.zeros(len(WORK_TERMS))
    block_bound = board.energy.barrier_sync_ns + float(
        (block_peak * term_costs(board.energy)[:3]).max())

    def stat(fn, arr):
        return float(fn(arr)) if arr.size else 0.0

    return PlanMetrics(
        board=board.name,
        mesh_shape=tuple(board.mesh_shape),
        n_blocks=plan.n_blocks,
        n_cores=plan.n_cores,
        n_chips=plan.n_chips,
        rates=graph.rates,
        samecore_axons=axons["samecore"],
        samecore_spikes=spikes["samecore"],
        intrachip_axons=axons["intrachip"],
        intrachip_spikes=spikes["intrachip"],
        interchip_axons=axons["interchip"],
        interchip_spikes=spikes["interchip"],
        host_input_axons=host_axons,
        host_input_spikes=host_spikes,
        chip_axons=chip_axons,
        chip_spikes=chip_spikes,
        chip_hops=chip_hops,
        hop_weighted_cost=hop_cost,
        max_hops=max_hops,
        link_load=loads,
        max_link_load=max_link,
        core_utilization=util,
        core_out_entries=core_out,
        core_interchip_entries=core_inter,
        cores_over_limit=int((util > 1 + 1e-12).any(axis=1).sum()) if util.size else 0,
        mean_core_utilization={
            n: stat(np.mean, util[:, j]) for j, n in enumerate(UTILIZATION_NAMES)
        },
        max_core_utilization={
            n: stat(np.max, util[:, j]) for j, n in enumerate(UTILIZATION_NAMES)
        },
        mean_core_load=stat(np.mean, core_load),
        max_core_load=stat(np.max, core_load),
        chip_core_fraction=plan.cores_per_chip() / board.cores_per_chip,
        chip_compartments=chip_comp,
        chip_compartment_fraction=chip_comp / (board.cores_per_chip * limits.compartments),
        synops=synops,
        synops_estimate=_SYNOPS_ESTIMATE.get(graph.work, graph.work),
        energy_pj=energy,
        energy_breakdown=energy_parts,
        time_ns=time,
        time_breakdown=time_parts,
        assumptions=list(_ASSUMPTIONS),
        core_work=work,
        core_time_ns=core_times(work, board.energy),
        peak_work=peak_work,
        time_terms=terms,
        bottleneck=bottleneck,
        regime=bottleneck["regime"],
        block_bound_ns=block_bound,
        time_constants=time_constants(board.energy),
    )


# ------------------------------------------------------------- board_to_plan
def _smallest_board_name(n_chips):
    fitting = [b for b in BOARDS.values() if b.n_chips >= n_chips]
    if not fitting:
        raise PlanError(
            f"No known board has {n_chips} chips. Pass board_name= for a custom board."
        )
    return min(fitting, key=lambda b: b.n_chips).name


def board_to_plan(board, model_or_blocks, graph=None, strategy="nengo-loihi", board_name=None):
    """Convert a nengo-loihi ``Board`` (from any nengo-loihi allocator) into a `Plan`.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board
        Result of an allocator such as ``Greedy()(model, n_chips)``.
    model_or_blocks : nengo_loihi.builder.Model or list of LoihiBlock
        The model (or its ``blocks``) the board was allocated for; block ``i`` of the
        plan is ``blocks[i]``. Blocks are matched by identity.
    graph : TrafficGraph, optional
        Graph of the same model; gives the plan its fingerprint.
    strategy : str
        Recorded as ``Plan.strategy``.
    board_name : str, optional
        Board the plan targets; defaults to the smallest known board with enough
        chips. Chip ``k`` of the nengo-loihi board goes to board position ``k``.

    Returns
    -------
    Plan
        Cores in the board's order (chip by chip), blocks on each core in their
        on-core order.
    """
    blocks = getattr(model_or_blocks, "blocks", model_or_blocks)
    index = {id(block): i for i, block in enumerate(blocks)}
    layout, core_sizes, core_chip = [], [], []
    for chip_idx, chip in enumerate(board.chips):
        for core in chip.cores:
            try:
                layout.extend(index[id(block)] for block in core.blocks)
            except KeyError:
                raise PlanError(
                    "The board holds a block that is not in the given model. Pass the "
                    "model the board was allocated for."
                ) from None
            core_sizes.append(len(core.blocks))
            core_chip.append(chip_idx)
    if len(layout) != len(blocks) or len(set(layout)) != len(layout):
        raise PlanError(
            f"The board places {len(layout)} blocks ({len(set(layout))} distinct) but the "
            f"model has {len(blocks)}. Pass the model the board was allocated for."
        )
    if graph is not None and graph.n_blocks != len(blocks):
        raise PlanError(
            f"The graph has {graph.n_blocks} blocks but the model has {len(blocks)}. "
            f"Extract the graph from the same model."
        )
    n_chips = max(core_chip) + 1 if core_chip else 0
    return Plan(
        layout=np.asarray(layout, dtype=np.int64),
        core_ptr=np.concatenate([[0], np.cumsum(core_sizes, dtype=np.int64)]),
        core_chip=np.asarray(core_chip, dtype=np.int64),
        board=board_name or _smallest_board_name(max(n_chips, 1)),
        fingerprint=graph.fingerprint() if graph is not None else "",
        strategy=strategy,
    )


# -------------------------------------------------------------- lower bounds
#: Rules `core_lower_bound` applies to each core-key group.
BOUND_RULES = tuple(RESOURCES) + tuple(CONFIG_TABLES) + ("noise",)


def _group_bounds(graph, limits):
    """Per core-key group, the cores each rule alone requires.

    Returns
    -------
    n_alone : int
    bounds : (n_groups, len(BOUND_RULES)) int64 ndarray
        One row per core-key group that has blocks not counted alone.
    """
    alone = graph.alone
    rest = ~alone
    keys, group = np.unique(graph.core_key, return_inverse=True)
    group = group.astype(np.int64)
    n_groups = keys.size
    member = _indicator(group, n_groups, rest)

    res = graph.resources.astype(np.float64).copy()
    syn = RESOURCES.index("synapse_bits")
    res[:, syn] = np.minimum(res[:, syn], graph.shared_synapse_bits)
    res[alone] = 0
    totals = _column_sums(res, group, n_groups)
    columns = [np.ceil(totals / limits.capacity_vector()).astype(np.int64)]

    for table in CONFIG_TABLES:
        cap = limits.config_capacity(table)
        if table == "synapse_cfgs":
            columns.append(_synapse_cfg_bound(graph, member, group, rest, cap))
        else:
            distinct = _distinct_per_group(member, graph.configs[table])
            columns.append(-(-distinct // cap))

    noisy = rest & (graph.noise_key >= 0)
    pairs = np.unique(np.stack([group[noisy], graph.noise_key[noisy]]), axis=1)
    columns.append(np.bincount(pairs[0], minlength=n_groups).astype(np.int64))

    bounds = np.column_stack(columns)
    nonempty = np.bincount(group[rest], minlength=n_groups) > 0
    return int(alone.sum()), bounds[nonempty]


def _group_cores(bounds):
    """Cores per group: the largest rule, and at least one."""
    if bounds.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.maximum(bounds.max(axis=1), 1)


def _synapse_cfg_bound(graph, member, group, rest, cap):
    """Cores needed by the synapse-format table, per group.

    A core uses its first block's own formats and the widened formats of the others.
    With ``k`` cores at most ``k`` blocks are first, each dropping at most ``m`` keys
    (``m`` = most widened keys of one block) from the ``D`` distinct widened keys of
    the group, so ``k * cap >= D - k * m``, i.e. ``k >= D / (cap + m)``. This holds
    whatever the relation between own and widened key ids.
    """
    shared = graph.configs["synapse_cfgs_shared"]
    distinct = _distinct_per_group(member, shared)
    per_block = np.where(rest, np.diff(shared.indptr), 0)
    m = _group_max(per_block, group, member.shape[0])
    return -(-distinct // (cap + m))


def core_lower_bound(graph, limits=None):
    """A lower bound on the cores any valid plan of ``graph`` uses.

    Blocks that need a core of their own (`TrafficGraph.alone`) count one core each.
    The other blocks are grouped by ``core_key`` (blocks of different groups cannot
    share a core); each group needs at least the largest of

    * ``ceil(sum / capacity)`` for each additive resource (synapse memory at the
      smaller of a block's own and widened size);
    * ``ceil(distinct keys / table size)`` for the compartment, threshold and STDP
      tables, and the bound of `_synapse_cfg_bound` for the synapse-format table;
    * the number of distinct enabled noise settings (``noise_key >= 0``).

    Parameters
    ----------
    graph : TrafficGraph
    limits : CoreLimits, optional
        Loihi 1 defaults if omitted.

    Returns
    -------
    int
    """
    limits = CoreLimits() if limits is None else limits
    n_alone, bounds = _group_bounds(graph, limits)
    return n_alone + int(_group_cores(bounds).sum())


def chip_lower_bound(graph, board):
    """``ceil(core_lower_bound / cores per chip)`` for ``board`` (BoardSpec or name)."""
    board = get_board(board)
    return -(-core_lower_bound(graph, board.limits) // board.cores_per_chip)


def lower_bounds(graph, board):
    """Lower bounds on cores, chips and inter-chip spikes, with the rule detail.

    Parameters
    ----------
    graph : TrafficGraph
    board : BoardSpec or str

    Returns
    -------
    dict
        ``cores``, ``chips``: the bounds (see `core_lower_bound`);
        ``interchip_spikes``: 0.0 when the bound is one chip, else None (no cheap bound;
        exact solvers provide one);
        ``alone_blocks``: blocks counted one core each; ``groups``: core-key groups
        of the other blocks;
        ``rules``: for each rule of `BOUND_RULES`, the core bound that rule alone gives
        (alone blocks included); ``binding``: for each rule, the groups in which it
        gives the group's bound; ``binding_rule``: the rule with the largest bound;
        ``compartments_total``: ``ceil(total compartments / compartments per core)``;
        ``cores_per_chip``, ``board``, ``board_chips`` and ``fits_board``
        (``chips <= board_chips``).
    """
    board = get_board(board)
    limits = board.limits
    n_alone, bounds = _group_bounds(graph, limits)
    group_bound = _group_cores(bounds)
    cores = n_alone + int(group_bound.sum())
    chips = -(-cores // board.cores_per_chip)
    rules = {r: n_alone + int(bounds[:, j].sum()) for j, r in enumerate(BOUND_RULES)}
    binding = {
        r: int((bounds[:, j] == group_bound).sum())
        for j, r in enumerate(BOUND_RULES)
    }
    return {
        "cores": cores,
        "chips": chips,
        "interchip_spikes": 0.0 if chips <= 1 else None,
        "alone_blocks": n_alone,
        "groups": int(bounds.shape[0]),
        "rules": rules,
        "binding": binding,
        "binding_rule": max(rules, key=rules.get),
        "compartments_total": math.ceil(graph.compartments.sum() / limits.compartments),
        "cores_per_chip": board.cores_per_chip,
        "board": board.name,
        "board_chips": board.n_chips,
        "fits_board": chips <= board.n_chips,
    }
