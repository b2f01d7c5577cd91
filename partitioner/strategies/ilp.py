"""Exact chip partition with OR-Tools CP-SAT: optimal plans, or a proven bound and gap.

The objective is the traffic between blocks on different chips (``ctx.traffic``,
scaled to integers; spikes per step for the ``"spikes"`` objective). Models, chosen
by ``model=`` (``"auto"`` picks ``"blocks"`` up to ``max_blocks`` blocks, else
``"cores"``):

``"blocks"`` (exact, default)
    A decomposition. The *master* model assigns blocks to chips (one boolean per block
    and chip) and knows each chip only through packing inequalities that every valid
    plan satisfies (`add_chip_capacity`: dual feasible functions of bin packing per
    resource, per ``core_key`` group), so its optimum is a lower bound. Each chip of a
    master solution is then packed exactly (`ChipPacker`: first-fit decreasing, else a
    CP-SAT core-slot model of every per-core rule). A chip that cannot be packed gives
    a small set of its blocks that no chip can hold (a deletion filter shrinks it),
    and the master forbids that set on every chip. When the master's optimum packs,
    it is optimal. Time-outs leave the best feasible plan and the master's bound.

``"slots"`` (exact, one model)
    Every block goes to a core slot ``(chip, j)``; every per-core rule is a
    constraint of that slot (`SlotModel`). Slower to prove optimality than
    ``"blocks"``; kept as an independent check of it.

``"cores"``
    For graphs too large for the block models: the cores of the METIS plan stay as
    they are and CP-SAT moves whole cores between chips. The result is optimal only
    among plans with those cores, so its bound goes to ``info["core_model_bound"]``,
    not ``info["bound"]``.

Per-core rules modelled exactly by `SlotModel`: the four additive resources (the
first block of a core pays its own synapse bits and formats, the others their widened
ones, through a "first block" variable per slot), distinct entries of every config
table (a "key used on this core" boolean per key), equal ``core_key``, compatible
``noise_key``, blocks that need a core alone. pop16 id ranges are conservative: the
input axon ids of the whole core must be in range of every pop16 receiver not placed
first. Every returned core is re-checked with `CoreBin.violations`.

The METIS plan (`strategies.metis.metis`), refined (`strategies.refine.refine`), is
the warm start (``AddHint``) and the fallback: when CP-SAT finds nothing better within
``time_limit`` that plan comes back, with the gap from CP-SAT's bound.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from ortools.sat.python import cp_model

from partitioner.errors import PartitionerError
from partitioner.graph import RESOURCES
from partitioner.packing import CoreBin, pack
from partitioner.strategies.common import Packed, pack_by_chip
from partitioner.strategies.metis import metis, repair_overfull
from partitioner.strategies.refine import refine

__all__ = [
    "ilp",
    "SlotModel",
    "ChipPacker",
    "add_chip_capacity",
    "chip_capacity_rows",
    "dff_values",
    "cores_needed_lower_bound",
    "cut_weight",
    "scale_weights",
    "MAX_BLOCKS",
    "MAX_CORE_VARS",
]

#: ``model="auto"`` uses the block models up to this many blocks.
MAX_BLOCKS = 400
#: Largest number of core-to-chip variables the core model is built with.
MAX_CORE_VARS = 400_000
#: Full slot-order symmetry breaking is added below this many block-to-slot variables.
FULL_SYMMETRY_VARS = 30_000
#: Weights are scaled so that the heaviest edge is about this many integer units.
WEIGHT_UNITS = 1e9
#: Share of the time left that the master search spends with CP-SAT's default workers
#: before switching to its objective lower-bound search.
SEARCH_SHARE = 0.6
#: Longest single exact packing check, in seconds.
PACK_CHECK_SECONDS = 2.0
#: With ``deterministic=True``, one second of ``time_limit`` buys this much CP-SAT
#: deterministic time (a count of solver work). CP-SAT calls one unit "about a
#: second", but on this project's models one unit took about 5 s of CPU time.
DETERMINISTIC_TIME_PER_SECOND = 0.2
#: With ``deterministic=True``, a run whose wall-clock time passes this many times
#: its ``time_limit``, plus `DETERMINISTIC_WALL_SLACK` seconds, stops anyway (and
#: ``info["repeatable"]`` says it may not repeat).
DETERMINISTIC_WALL_FACTOR = 10.0
DETERMINISTIC_WALL_SLACK = 30.0
_EPS = 1e-12

_IN, _SYN = RESOURCES.index("in_axons"), RESOURCES.index("synapse_bits")
_OUT = RESOURCES.index("out_axons")
_PLAIN_RESOURCES = tuple(RESOURCES.index(r) for r in ("compartments", "in_axons"))
#: Config tables whose keys do not depend on a block's offset: (table, graph kind).
_PLAIN_TABLES = (
    ("compartment_cfgs", "compartment_cfgs"),
    ("vth_cfgs", "vth_cfgs"),
    ("stdp_pre_cfgs", "stdp_pre_cfgs"),
)


# ==================================================================== entry point
def ilp(ctx, k, time_limit=10.0, workers=2, warm_start=True, model="auto",
        max_blocks=MAX_BLOCKS, deterministic=True, **_):
    """CP-SAT strategy: minimize the traffic between chips on at most ``k`` chips.

    Parameters
    ----------
    ctx : Context
        Graph, board, limits, traffic and pins (see `strategies.common.Context`).
    k : int
        Most chips to use.
    time_limit : float
        Solver limit in seconds (the warm start comes on top). With
        ``deterministic`` a fixed amount of solver work, `DETERMINISTIC_TIME_PER_SECOND`
        units of CP-SAT deterministic time per second, which takes about that long
        on one unloaded core; otherwise wall-clock seconds.
    workers : int
        CP-SAT search workers (threads) when ``deterministic`` is False; a
        deterministic search runs on one.
    warm_start : bool
        Hint the refined METIS plan to CP-SAT. That plan is computed anyway: it is
        the fallback, and the bins of the core model.
    model : {"auto", "blocks", "slots", "cores"}
        Which model to solve (see the module docstring).
    max_blocks : int
        ``model="auto"`` solves the block model up to this many blocks, the core
        model above.
    deterministic : bool
        Repeatable (default): CP-SAT searches on one worker and every limit is
        deterministic time (``max_deterministic_time``), so the same graph, options
        and seed give the same plan on every run, however busy the machine, with the
        same OR-Tools version. ``info["repeatable"]`` is False in the one case this
        cannot hold: the wall-clock guard (`DETERMINISTIC_WALL_FACTOR` x
        ``time_limit`` + `DETERMINISTIC_WALL_SLACK` seconds) stopped a solve first.
        With False, limits are wall-clock seconds and ``workers`` CP-SAT workers
        race: the plan can differ from run to run whenever a limit is reached, and
        between optimal plans of equal cost.

    Returns
    -------
    Packed or None
        The plan, with an ``info`` dict: ``bound`` (proven lower bound on the traffic
        between chips, in the units of ``ctx.traffic``, or None), ``gap``
        (``(objective - bound) / objective``), ``status`` (``"OPTIMAL"`` or
        ``"FEASIBLE"``), ``solver`` (``"cp-sat"``), ``model``, ``objective``,
        ``warm_start_objective``, ``solve_time_s`` and model statistics. None when
        ``k`` chips are proven too few.
    """
    t0 = time.perf_counter()
    if model not in ("auto", "blocks", "slots", "cores"):
        raise PartitionerError(
            f"Unknown CP-SAT model {model!r}. Use 'auto', 'blocks', 'slots' or 'cores'."
        )
    g = ctx.graph
    warm = _warm_start(ctx, k)
    if g.n_blocks == 0:
        return _with_info(Packed(ctx, [], []), _info("OPTIMAL", 0.0, 0.0, "trivial", t0))
    if warm is not None and (k == 1 or g.symmetric_traffic().nnz == 0):
        return _with_info(warm, _info("OPTIMAL", 0.0, 0.0, "trivial", t0))
    if model == "auto":
        model = "blocks" if g.n_blocks <= max_blocks else "cores"
    params = _Params.start(time_limit, workers, ctx.seed, deterministic)
    hint = warm if warm_start else None
    if model == "blocks":
        result = _solve_blocks(ctx, k, hint, params)
    elif model == "slots":
        result = _solve_slots(ctx, k, hint, params)
    else:
        result = _solve_cores(ctx, k, warm, params)
    packed = _finish(ctx, result, warm, model, t0)
    if packed is not None:
        packed.info.update(repeatable=params.deterministic and not params.wall_stopped,
                           deterministic_time=params.spent)
    return packed


def _warm_start(ctx, k):
    """The METIS plan at ``k`` chips, refined (`strategies.refine.refine`); or None."""
    warm = metis(ctx, k)
    if warm is not None and k > 1:
        refine(warm, ctx, keep_chips=getattr(ctx, "spread", False))
    return warm


@dataclass
class _Params:
    """Solver settings shared by every CP-SAT call of one `ilp` run.

    ``remaining`` is the budget left: wall-clock seconds, or with ``work`` set the
    CP-SAT work (deterministic time) left, so that where a run stops does not depend
    on the machine's speed or load.
    """

    deadline: float
    workers: int
    seed: int
    deterministic: bool = False
    #: Work left, in CP-SAT's deterministic seconds, when the solves are bounded by
    #: work rather than wall-clock time (``deadline`` is then only a safety net);
    #: None: wall-clock.
    work: float = None
    #: Share of the time (or work) left that the master search spends with CP-SAT's
    #: default workers before its objective lower-bound search.
    search_share: float = SEARCH_SHARE
    #: Whether the master search goes on with the lower-bound search (else the rest
    #: is left for packing chips).
    lb_search: bool = True
    #: Further CP-SAT parameters, by name.
    solver_options: dict = field(default_factory=dict)
    #: Work spent so far (deterministic seconds).
    spent: float = 0.0
    #: Whether the wall-clock safety net stopped a work-bounded solve.
    wall_stopped: bool = False

    @classmethod
    def start(cls, time_limit, workers, seed, deterministic):
        """Settings of an `ilp` run: wall-clock ``time_limit`` with ``workers``, or
        with ``deterministic`` `DETERMINISTIC_TIME_PER_SECOND` units of work per second
        on one worker (several, even interleaved, overrun the work limit)."""
        now = time.perf_counter()
        if not deterministic:
            return cls(deadline=now + float(time_limit), workers=int(workers),
                       seed=int(seed))
        return cls(deadline=now + DETERMINISTIC_WALL_FACTOR * float(time_limit)
                   + DETERMINISTIC_WALL_SLACK, workers=1, seed=int(seed),
                   deterministic=True,
                   work=float(time_limit) * DETERMINISTIC_TIME_PER_SECOND)

    def remaining(self):
        if self.work is not None:
            return self.work
        return self.deadline - time.perf_counter()

    def spend(self, solver):
        """Charge a finished solve to the work budget (if there is one)."""
        if self.work is not None:
            used = max(0.001, float(solver.response_proto.deterministic_time))
            self.work -= used
            self.spent += used
            self.wall_stopped |= self.deadline - time.perf_counter() <= 0


@dataclass
class _Result:
    """What one model produced."""

    status: str                     # OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN or SKIPPED
    packed: Packed = None           # best solution found (None if none)
    bound: float = None             # proven lower bound on the model's objective
    extra: dict = field(default_factory=dict)


def _finish(ctx, result, warm, model, t0):
    """Choose the plan to return and attach ``info``."""
    warm_obj = None if warm is None else cut_weight(ctx.traffic, warm.block_chip())
    if result.status == "INFEASIBLE":
        if warm is None:
            return None
        # Only pop16 id ranges are modelled conservatively; trust the valid METIS plan.
        info = _info("FEASIBLE", warm_obj, None, model, t0, warm_obj,
                     note="the CP-SAT model found no plan; METIS plan returned")
        return _with_info(warm, info)
    packed = result.packed
    if packed is None or (
        warm_obj is not None and cut_weight(ctx.traffic, packed.block_chip()) > warm_obj
    ):
        packed = warm
    if packed is None:
        return None
    obj = cut_weight(ctx.traffic, packed.block_chip())
    optimal = result.status == "OPTIMAL" and packed is result.packed
    if model == "cores":
        info = _info("FEASIBLE", obj, None, model, t0, warm_obj)
        info["core_model_status"] = result.status
        if result.bound is not None:
            info["core_model_bound"] = result.bound
            info["core_model_gap"] = _gap(obj, result.bound)
    else:
        info = _info("OPTIMAL" if optimal else "FEASIBLE", obj, result.bound, model, t0,
                     warm_obj)
    info.update(result.extra)
    return _with_info(packed, info)


def _info(status, obj, bound, model, t0, warm_obj=None, note=None):
    info = {
        "solver": "cp-sat",
        "status": status,
        "model": model,
        "objective": obj,
        "bound": bound,
        "gap": None if bound is None or obj is None else _gap(obj, bound),
        "warm_start_objective": warm_obj,
        "solve_time_s": time.perf_counter() - t0,
    }
    if note:
        info["note"] = note
    return info


def _with_info(packed, info):
    packed.info = info
    return packed


def _gap(obj, bound):
    return float(max(0.0, obj - bound) / obj) if obj > _EPS else 0.0


# ================================================================ weights, cut
def cut_weight(traffic, block_chip):
    """Weight of the symmetric ``traffic`` between blocks on different chips.

    Each undirected pair counts once, so for ``graph.symmetric_traffic("spikes")``
    this is the directed inter-chip spikes per step.
    """
    coo = sp.triu(traffic, k=1).tocoo()
    return float(coo.data[block_chip[coo.row] != block_chip[coo.col]].sum())


def scale_weights(w):
    """Integer edge weights for CP-SAT.

    Integer weights are kept; others are scaled so that the heaviest is about
    `WEIGHT_UNITS` (each at least 1).

    Returns
    -------
    wi : int64 ndarray
        Integer weights, ``wi ~ w * scale``.
    scale : float
    over : float
        ``sum(max(0, wi - w * scale))``: the most rounding can overstate a cut, in
        integer units; taken off CP-SAT's bound so the bound stays valid.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return np.zeros(0, dtype=np.int64), 1.0, 0.0
    if np.all(w == np.round(w)) and w.sum() < 2**40:
        scale = 1.0
    else:
        scale = min(WEIGHT_UNITS / max(float(w.max()), _EPS), 2**40 / max(float(w.sum()), _EPS))
    wi = np.maximum(1, np.round(w * scale)).astype(np.int64)
    return wi, scale, float(np.maximum(0.0, wi - w * scale).sum())


def _edges(traffic):
    """Undirected edges ``(a, b, w)`` with ``a < b`` of a symmetric matrix."""
    coo = sp.triu(traffic, k=1).tocoo()
    keep = coo.data > 0
    return coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), coo.data[keep]


# ==================================================================== CP-SAT glue
def _solve(model, params, limit=None, subsolvers=None, callback=None):
    """Solve ``model`` until the deadline (or ``limit`` seconds); ``callback``: a
    `cp_model.CpSolverSolutionCallback` called at each solution."""
    solver = cp_model.CpSolver()
    seconds = max(0.01, params.remaining() if limit is None
                  else min(limit, params.remaining()))
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = max(1, params.workers)
    solver.parameters.random_seed = params.seed
    solver.parameters.interleave_search = params.deterministic
    if params.work is not None:  # repeatable: bounded by work, workers interleaved
        solver.parameters.max_deterministic_time = max(0.01, seconds)
        solver.parameters.max_time_in_seconds = max(0.01, params.deadline - time.perf_counter())
        solver.parameters.interleave_search = True
    for name in subsolvers or ():
        solver.parameters.subsolvers.append(name)
    for name, value in params.solver_options.items():
        setattr(solver.parameters, name, value)
    status = solver.solve(model, callback)
    params.spend(solver)
    return solver, _status_name(status)


def _status_name(status):
    return {
        cp_model.OPTIMAL: "OPTIMAL",
        cp_model.FEASIBLE: "FEASIBLE",
        cp_model.INFEASIBLE: "INFEASIBLE",
    }.get(status, "UNKNOWN")


def _true_bound(solver, status, scale, over):
    """CP-SAT's objective bound in unscaled units, kept valid despite rounding."""
    if status == "INFEASIBLE":
        return None
    raw = solver.best_objective_bound
    if not np.isfinite(raw):
        return None
    return max(0.0, (float(raw) - over) / scale)


def _dot(coefs, lits):
    return sum(int(c) * v for c, v in zip(coefs, lits) if c)


def _cut_objective(m, y, a, b, k):
    """Booleans ``d_e`` = edge ``e`` joins two chips (``y[i][c]``: block i on chip c)."""
    d = []
    for ea, eb in zip(a, b):
        v = m.new_bool_var("")
        for c in range(1 if k == 2 else k):
            m.add(v >= y[ea][c] - y[eb][c])
            m.add(v >= y[eb][c] - y[ea][c])
        d.append(v)
    return d


def _prefix_or(m, lits):
    """Literals ``p[i] = OR(lits[:i + 1])``."""
    out, prev = [], None
    for v in lits:
        p = m.new_bool_var("")
        m.add_implication(v, p)
        if prev is None:
            m.add(p <= v)
        else:
            m.add_implication(prev, p)
            m.add(p <= prev + v)
        out.append(p)
        prev = p
    return out


def _order_by_smallest(m, y, k):
    """Chip ``c`` holds item ``i`` only if chip ``c - 1`` holds a smaller item.

    Breaks the symmetry of interchangeable chips: chips are numbered by their smallest
    item, and empty chips come last.
    """
    n = len(y)
    for c in range(1, k):
        pre = _prefix_or(m, [y[i][c - 1] for i in range(n)])
        m.add(y[0][c] == 0)
        for i in range(1, n):
            m.add_implication(y[i][c], pre[i - 1])


def _use_every_chip(ctx, m, y, k):
    """Plans spread over the board (``ctx.spread``) put something on every chip."""
    if getattr(ctx, "spread", False):
        for c in range(k):
            m.add(sum(row[c] for row in y) >= 1)


def _canonical_chips(chips, relabel):
    """Chip labels renumbered by first use in item order (when ``relabel``)."""
    chips = np.asarray(chips, dtype=np.int64)
    if not relabel:
        return chips
    remap = {}
    for c in chips:
        remap.setdefault(int(c), len(remap))
    return np.array([remap[int(c)] for c in chips], dtype=np.int64)


# =========================================================== packing inequalities
def dff_values(sizes, cap, alone):
    """Dual feasible functions of bin packing applied to block ``sizes``.

    Parameters
    ----------
    sizes : (n,) int array
        One resource of each block.
    cap : int
        The core's capacity of that resource.
    alone : (n,) bool array
        Blocks that need a core of their own (they count a full core).

    Returns
    -------
    list of (values, capacity)
        In any one core, the ``values`` of the blocks sum to at most ``capacity``.
        The functions: the identity; Fekete and Schepers' ``u_k`` for ``k = 1..3``
        (scaled by ``k`` to stay integer); Martello and Toth's threshold functions
        (a block above ``cap - eps`` counts a full core, one below ``eps`` nothing).
    """
    sizes = np.minimum(np.asarray(sizes, dtype=np.int64), cap)
    sizes = np.where(alone, cap, sizes)
    out = [(sizes, cap)]
    for k in (1, 2, 3):
        scaled = (k + 1) * sizes
        vals = np.where(scaled % cap == 0, k * sizes, (scaled // cap) * cap)
        out.append((vals, k * cap))
    small = sizes[(sizes > 0) & (sizes <= cap // 2)]
    if small.size:
        for eps in np.unique(np.quantile(small, [0.5, 0.9]).astype(np.int64)):
            if eps > 0:
                vals = np.where(sizes > cap - eps, cap, np.where(sizes < eps, 0, sizes))
                out.append((vals, cap))
    return out


def chip_capacity_rows(graph, limits):
    """``(coefficients, capacity)`` rows that hold for the blocks of every core.

    `dff_values` of each additive resource; synapse memory counts the smaller of a
    block's own and widened bits.
    """
    res = graph.resources.copy()
    res[:, _SYN] = np.minimum(res[:, _SYN], graph.shared_synapse_bits)
    cap = limits.capacity_vector()
    rows = []
    for r in range(res.shape[1]):
        rows += dff_values(res[:, r], int(cap[r]), graph.alone)
    return rows


def add_chip_capacity(m, graph, limits, cores_per_chip, y, k):
    """Add chip-level packing inequalities over block-to-chip literals ``y[b][c]``.

    Blocks of different ``core_key`` never share a core, so each chip has a core
    count per ``core_key`` group: at least 1 when a block of the group is there, at
    least what every row of `chip_capacity_rows` needs for the group's blocks there;
    the counts of a chip sum to at most its cores.

    Returns
    -------
    int
        Rows added.
    """
    rows = chip_capacity_rows(graph, limits)
    groups = [np.flatnonzero(graph.core_key == key) for key in np.unique(graph.core_key)]
    added = 0
    for c in range(k):
        counts = []
        for members in groups:
            if len(groups) == 1:
                count = cores_per_chip
            else:
                count = m.new_int_var(0, cores_per_chip, "")
                for b in members:
                    m.add(count >= y[b][c])
                counts.append(count)
            for coefs, cap in rows:
                part = coefs[members]
                if part.sum() <= cap * (1 if counts else cores_per_chip):
                    continue
                nz = np.flatnonzero(part)
                m.add(sum(int(part[i]) * y[members[i]][c] for i in nz) <= cap * count)
                added += 1
        if counts:
            m.add(sum(counts) <= cores_per_chip)
    return added


def add_star_capacity(m, graph, limits, cores_per_chip, a, b, d):
    """Add "star" inequalities: a block and its same-chip neighbours fit one chip.

    For block ``i``, each row of `chip_capacity_rows` and the cut literals ``d`` of
    the edges ``(a, b)``: ``u_i + sum_j u_j (1 - d_ij) <= cores * cap`` over the
    neighbours ``j`` of ``i``. They tie the cut to the chip capacity, so the LP
    relaxation cannot keep every edge inside a chip.

    Returns
    -------
    int
        Rows added.
    """
    n = graph.n_blocks
    ends = np.concatenate([a, b])
    other = np.concatenate([b, a])
    lits = list(d) + list(d)
    order = np.argsort(ends, kind="stable")
    starts = np.searchsorted(ends[order], np.arange(n + 1))
    added = 0
    for coefs, cap in chip_capacity_rows(graph, limits):
        room = cores_per_chip * cap
        for i in range(n):
            idx = order[starts[i]:starts[i + 1]]
            nbr = coefs[other[idx]]
            if coefs[i] + nbr.sum() <= room:
                continue
            m.add(sum(int(c) * (1 - lits[e]) for c, e in zip(nbr, idx) if c)
                  <= room - int(coefs[i]))
            added += 1
    return added


def cores_needed_lower_bound(graph, limits, blocks):
    """A lower bound on the cores ``blocks`` need, however they are packed.

    The larger of ``ceil(sum / capacity)`` per additive resource (synapse memory at the
    smaller of own and widened bits) and the number of blocks that pairwise cannot
    share a core (blocks needing a core alone, plus the most blocks needing more than
    half of one resource).
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    res = graph.resources[blocks].copy()
    res[:, _SYN] = np.minimum(res[:, _SYN], graph.shared_synapse_bits[blocks])
    cap = limits.capacity_vector()
    alone = graph.alone[blocks]
    by_sum = int(np.max(-(-res.sum(axis=0) // cap)))
    big = (2 * res[~alone] > cap).sum(axis=0)
    return max(by_sum, int(alone.sum()) + int(big.max(initial=0)))


# ===================================================================== slot model
class SlotModel:
    """CP-SAT model of ``blocks`` in core slots ``(chip, j)``, every per-core rule exact.

    Parameters
    ----------
    ctx : Context
    blocks : array of int
        Blocks to place (global ids).
    k : int
        Chips.
    slots : int
        Core slots per chip.
    objective : bool
        Minimize the traffic between chips (else: feasibility only).
    pins : dict, optional
        ``{block: chip}``; chips are interchangeable (and ordered) only without pins.
    entries : {"fixed", "exact"}
        Output axon entries of each block: ``"fixed"`` takes the extra entries of the
        chip assignment ``ctx.keys`` holds (`BlockKeys.set_chips`: right when the
        blocks' chip is decided elsewhere); ``"exact"`` models them: a block pays one
        more entry per inter-chip axon for each target on another chip of the model
        (needs every block with such axons in the model).

    Attributes
    ----------
    m : cp_model.CpModel
    y : list of list of BoolVar
        ``y[i][c]``: block ``blocks[i]`` is on chip ``c``.
    """

    def __init__(self, ctx, blocks, k, slots, objective=True, pins=None, entries="fixed"):
        self.ctx = ctx
        self.entries = entries
        self.g = ctx.graph
        self.blocks = np.asarray(blocks, dtype=np.int64)
        self.k = int(k)
        self.S = int(slots)
        self.m = cp_model.CpModel()
        local = {int(b): i for i, b in enumerate(self.blocks)}
        self.local = np.full(self.g.n_blocks, -1, dtype=np.int64)
        self.local[self.blocks] = np.arange(self.blocks.size)
        self.pins = {local[b]: c for b, c in (pins or {}).items() if b in local}
        self.chip_symmetry = not self.pins and self.k > 1
        self._candidates()
        self.full_symmetry = self.n_x <= FULL_SYMMETRY_VARS
        self._variables()
        self._assignment()
        for s in range(len(self.slot_items)):
            if len(self.slot_items[s]):
                self._slot_rules(s)
        self._symmetry()
        if objective:
            _use_every_chip(ctx, self.m, self.y, self.k)
        self.d = None
        if objective:
            self._objective()

    # ------------------------------------------------------------------ layout
    def _candidates(self):
        """Local block indices each slot may hold (pins and symmetry applied)."""
        n = self.blocks.size
        items = np.arange(n)
        self.slot_items = []
        for c in range(self.k):
            allowed = np.ones(n, dtype=bool)
            for i, chip in self.pins.items():
                allowed[i] = chip == c
            low = c if self.chip_symmetry else 0
            for j in range(self.S):
                self.slot_items.append(items[allowed & (items >= low + j)])
        self.n_x = int(sum(len(it) for it in self.slot_items))

    def _variables(self):
        m = self.m
        self.x = [[m.new_bool_var("") for _ in it] for it in self.slot_items]
        self.used = [m.new_bool_var("") for _ in self.slot_items]
        self.y = [[m.new_bool_var("") for _ in range(self.k)] for _ in range(self.blocks.size)]
        self.f = ([[m.new_bool_var("") for _ in it] for it in self.slot_items]
                  if self._needs_first() else None)

    def _needs_first(self):
        """Whether being first on a core changes a block's bits or formats here."""
        g, b = self.g, self.blocks
        own, shared = g.resources[b, _SYN], g.shared_synapse_bits[b]
        cap = self.ctx.limits.synapse_bits
        bits = np.any(own != shared) and np.maximum(own, shared).sum() > cap
        own_k, shared_k = _same_width(g.configs["synapse_cfgs"][b],
                                      g.configs["synapse_cfgs_shared"][b])
        n_keys = (own_k + shared_k).getnnz(axis=0).astype(bool).sum()
        keys = (own_k != shared_k).nnz > 0 and n_keys > self.ctx.limits.synapse_cfgs
        return bool(bits or keys)

    def _assignment(self):
        """Each block in one slot; ``y`` gives its chip; ``used`` marks open slots."""
        m, S = self.m, self.S
        per_item = [[] for _ in range(self.blocks.size)]
        for s, (items, xs) in enumerate(zip(self.slot_items, self.x)):
            for i, v in zip(items, xs):
                per_item[i].append((s // S, v))
                m.add_implication(v, self.used[s])
            if self.f is not None:
                for v, fv in zip(xs, self.f[s]):
                    m.add_implication(fv, v)
                m.add(sum(self.f[s]) == self.used[s])
            else:
                m.add(sum(xs) >= self.used[s])
        for i, entries in enumerate(per_item):
            for c in range(self.k):
                m.add(self.y[i][c] == sum(v for cc, v in entries if cc == c))
            m.add_exactly_one(self.y[i])

    # ------------------------------------------------------------------- rules
    def _slot_rules(self, s):
        m, g, lim = self.m, self.g, self.ctx.limits
        gb = self.blocks[self.slot_items[s]]
        xs = self.x[s]
        fs = self.f[s] if self.f is not None else None
        cap = lim.capacity_vector()
        for r in _PLAIN_RESOURCES:
            if g.resources[gb, r].sum() > cap[r]:
                m.add(_dot(g.resources[gb, r], xs) <= int(cap[r]))
        self._out_entries(s, gb, xs)
        self._synapse_bits(gb, xs, fs)
        for table, kind in _PLAIN_TABLES:
            keys = [(self.ctx.keys.get(kind, int(b)), v) for b, v in zip(gb, xs)]
            self._table(keys, lim.config_capacity(table))
        self._synapse_table(gb, xs, fs)
        self._same_key(xs, g.core_key[gb], allow_any=False)
        self._same_key(xs, g.noise_key[gb], allow_any=True)
        self._alone(gb, xs)
        self._pop16(gb, xs, fs)

    def _out_entries(self, s, gb, xs):
        """Output axon entries of the slot, with the extra entries of inter-chip axons.

        ``"exact"``: block ``b`` in slot ``s`` (chip ``c``) needs ``E_b + X_b - r``
        entries, where ``X_b`` is its extra entries with every target elsewhere and
        ``r <= X_b * x`` and ``r <= sum_j X_bj y_jc`` (its targets on ``c``).
        """
        g, cap = self.g, self.ctx.limits.out_axons
        base = g.resources[gb, _OUT]
        if self.entries != "exact":
            need = base + self.ctx.keys.extra[gb]
            if need.sum() > cap:
                self.m.add(_dot(need, xs) <= cap)
            return
        worst = base + g.interchip_entry_totals[gb]
        if worst.sum() <= cap:
            return
        chip = s // self.S
        m, rows = self.m, g.interchip_entries
        saved = []
        for b, v, x in zip(gb.tolist(), xs, g.interchip_entry_totals[gb].tolist()):
            if x == 0:
                continue
            start, stop = rows.indptr[b], rows.indptr[b + 1]
            targets = [(int(self.local[t]), int(w)) for t, w in
                       zip(rows.indices[start:stop], rows.data[start:stop])
                       if self.local[t] >= 0]
            if not targets:
                continue
            r = m.new_int_var(0, x, "")
            m.add(r <= x * v)
            m.add(r <= sum(w * self.y[t][chip] for t, w in targets))
            saved.append(r)
        m.add(_dot(worst, xs) - sum(saved) <= cap)

    def _synapse_bits(self, gb, xs, fs):
        g, cap = self.g, self.ctx.limits.synapse_bits
        own, shared = g.resources[gb, _SYN], g.shared_synapse_bits[gb]
        if np.maximum(own, shared).sum() <= cap:
            return
        if fs is None:
            self.m.add(_dot(np.maximum(own, shared), xs) <= cap)
        else:
            self.m.add(_dot(shared, xs) + _dot(own - shared, fs) <= cap)

    def _table(self, uses, cap):
        """At most ``cap`` distinct keys on the slot.

        ``uses`` holds ``(keys, lit)``: the keys are needed when ``lit`` holds; ``lit``
        is a literal, or a pair ``(x, f)`` standing for ``x and not f``.
        """
        by_key = {}
        for keys, lit in uses:
            for key in keys:
                by_key.setdefault(key, []).append(lit)
        if len(by_key) <= cap:
            return
        m = self.m
        used = []
        for lits in by_key.values():
            u = m.new_bool_var("")
            for lit in lits:
                if isinstance(lit, tuple):
                    m.add(u >= lit[0] - lit[1])
                else:
                    m.add_implication(lit, u)
            used.append(u)
        m.add(sum(used) <= cap)

    def _synapse_table(self, gb, xs, fs):
        """Synapse formats: own formats for the first block, widened for the others."""
        keys = self.ctx.keys
        uses = []
        for i, (b, v) in enumerate(zip(gb, xs)):
            own = keys.get("synapse_cfgs", int(b))
            shared = keys.get("synapse_cfgs_shared", int(b))
            if fs is None:
                uses.append((own | shared, v))
            else:
                uses += [(own & shared, v), (own - shared, fs[i]), (shared - own, (v, fs[i]))]
        self._table(uses, self.ctx.limits.synapse_cfgs)

    def _same_key(self, xs, keys, allow_any):
        """Blocks of one slot share ``keys`` (entries < 0 are free if ``allow_any``)."""
        active = keys >= 0 if allow_any else np.ones(len(keys), dtype=bool)
        distinct = np.unique(keys[active])
        if distinct.size <= 1:
            return
        sel = {int(key): self.m.new_bool_var("") for key in distinct}
        self.m.add_at_most_one(sel.values())
        for key, v, a in zip(keys, xs, active):
            if a:
                self.m.add_implication(v, sel[int(key)])

    def _alone(self, gb, xs):
        alone = self.g.alone[gb]
        if alone.any() and len(xs) > 1:
            total = sum(xs)
            for v, a in zip(xs, alone):
                if a:
                    self.m.add(total == 1).only_enforce_if(v)

    def _pop16(self, gb, xs, fs):
        limit = self.g.pop16_in_limit[gb]
        in_ax = self.g.resources[gb, _IN]
        expr = None
        for i in np.flatnonzero((limit > 0) & (limit < in_ax.sum())):
            expr = _dot(in_ax, xs) if expr is None else expr
            cond = [xs[i]] if fs is None else [xs[i], fs[i].Not()]
            self.m.add(expr <= int(limit[i])).only_enforce_if(cond)

    # ---------------------------------------------------------------- symmetry
    def _symmetry(self):
        """Slots of a chip are used in order, and ordered by their smallest block."""
        m = self.m
        for c in range(self.k):
            for j in range(1, self.S):
                s = c * self.S + j
                m.add_implication(self.used[s], self.used[s - 1])
                if self.full_symmetry:
                    self._after(s, s - 1)
        if self.chip_symmetry:
            _order_by_smallest(m, self.y, self.k)

    def _after(self, s, prev):
        """Slot ``s`` holds item ``i`` only if slot ``prev`` holds a smaller item."""
        prev_items = list(self.slot_items[prev])
        pre = _prefix_or(self.m, self.x[prev])
        for i, v in zip(self.slot_items[s], self.x[s]):
            p = bisect.bisect_left(prev_items, i)
            if p == 0:
                self.m.add(v == 0)
            else:
                self.m.add_implication(v, pre[p - 1])

    # --------------------------------------------------------------- objective
    def _objective(self):
        local = np.full(self.g.n_blocks, -1, dtype=np.int64)
        local[self.blocks] = np.arange(self.blocks.size)
        traffic = self.ctx.traffic[self.blocks][:, self.blocks]
        a, b, w = _edges(traffic)
        wi, self.scale, self.over = scale_weights(w)
        self.edges = (a, b)
        self.d = _cut_objective(self.m, self.y, a, b, self.k)
        self.m.minimize(_dot(wi, self.d))

    # -------------------------------------------------------------------- hint
    def add_hint(self, packed):
        """Hint the plan ``packed`` (its chips and cores put in canonical order).

        ``packed`` may place only some of the blocks; the others get no hint.
        """
        cores = _canonical_cores(packed, self.blocks, self.k, keep_chips=not self.chip_symmetry)
        if cores is None or any(len(chip) > self.S for chip in cores):
            return False
        where, first = {}, {}
        for c, chip_cores in enumerate(cores):
            for j, items in enumerate(chip_cores):
                s = c * self.S + j
                for i in items:
                    where[i] = s
                first[s] = items[0]
        m = self.m
        for s, (items, xs) in enumerate(zip(self.slot_items, self.x)):
            for n, (i, v) in enumerate(zip(items, xs)):
                m.add_hint(v, where.get(int(i)) == s)
                if self.f is not None:
                    m.add_hint(self.f[s][n], first.get(s) == int(i))
            m.add_hint(self.used[s], s in first)
        chip = np.array([where.get(i, -self.S) // self.S for i in range(self.blocks.size)])
        for i in np.flatnonzero(chip >= 0):
            for c in range(self.k):
                m.add_hint(self.y[i][c], chip[i] == c)
        if self.d is not None:
            for d, a, b in zip(self.d, *self.edges):
                if chip[a] >= 0 and chip[b] >= 0:
                    m.add_hint(d, chip[a] != chip[b])
        return True

    # ---------------------------------------------------------------- solution
    def solution(self, solver):
        """``(cores, core_chip)``: the solved slots as checked `CoreBin` lists."""
        if self.entries == "exact":
            chips = np.array([[solver.boolean_value(v) for v in row] for row in self.y])
            block_chip = np.zeros(self.g.n_blocks, dtype=np.int64)
            block_chip[self.blocks] = chips.argmax(axis=1)
            self.ctx.keys.set_chips(block_chip)
        cores, core_chip = [], []
        for s, (items, xs) in enumerate(zip(self.slot_items, self.x)):
            on = [int(self.blocks[i]) for i, v in zip(items, xs) if solver.boolean_value(v)]
            if not on:
                continue
            first = on[0]
            if self.f is not None:
                firsts = [int(self.blocks[i]) for i, v in zip(items, self.f[s])
                          if solver.boolean_value(v)]
                first = firsts[0] if firsts else first
            order = [first] + [b for b in on if b != first]
            for core in verified_cores(self.ctx, order):
                cores.append(core)
                core_chip.append(s // self.S)
        return cores, core_chip


def _same_width(a, b):
    """Two key matrices padded to the same number of key columns."""
    width = max(a.shape[1], b.shape[1])
    return (sp.csr_matrix(a, shape=(a.shape[0], width), dtype=bool),
            sp.csr_matrix(b, shape=(b.shape[0], width), dtype=bool))


def verified_cores(ctx, order):
    """Blocks ``order`` as one core if every rule holds in that order, else re-packed.

    The models agree with `CoreBin`, so the re-pack is a safety net only.
    """
    core = CoreBin(ctx.graph, ctx.limits, ctx.keys)
    for b in order:
        if core.violations(b):
            cores, _ = pack(ctx.graph, order, ctx.limits, ctx.keys, _no_traffic(ctx))
            return cores
        core.add(b)
    return [core]


def _no_traffic(ctx):
    n = ctx.graph.n_blocks
    return sp.csr_matrix((n, n))


def _canonical_cores(packed, blocks, k, keep_chips):
    """Cores of ``packed`` as local item lists per chip, in canonical order.

    Cores of a chip are ordered by their smallest item, and chips too unless
    ``keep_chips``. Returns None if ``packed`` uses more than ``k`` chips.
    """
    if packed.n_chips > k:
        return None
    local = {int(b): i for i, b in enumerate(blocks)}
    chips = [[] for _ in range(k)]
    for core, chip in zip(packed.cores, packed.core_chip):
        items = [local[b] for b in core.blocks if b in local]
        if items:
            chips[chip].append(items)
    for cores in chips:
        cores.sort(key=min)
    if not keep_chips:
        chips.sort(key=lambda cores: min((min(c) for c in cores), default=np.inf))
    return chips


def _solve_slots(ctx, k, hint, params):
    """The one-model formulation (`SlotModel` over all blocks)."""
    g = ctx.graph
    sm = SlotModel(ctx, np.arange(g.n_blocks), k, min(ctx.cores_per_chip, g.n_blocks),
                   objective=True, pins=ctx.pins, entries="exact")
    if hint is not None:
        sm.add_hint(hint)
    solver, status = _solve(sm.m, params)
    if status == "INFEASIBLE":
        return _Result("INFEASIBLE")
    bound = _true_bound(solver, status, sm.scale, sm.over)
    packed = None
    if status in ("OPTIMAL", "FEASIBLE"):
        cores, core_chip = sm.solution(solver)
        packed = Packed(ctx, cores, core_chip)
        if np.any(packed.cores_on_chips() > ctx.cores_per_chip):
            packed, status = None, "UNKNOWN"
    return _Result(status, packed, bound, {"slot_vars": sm.n_x})


# =================================================================== chip packer
class ChipPacker:
    """Decides whether a set of blocks fits on one chip, and packs it.

    First-fit decreasing (`packing.pack`) first; when it needs more cores than a chip
    has, the exact `SlotModel` with one chip. Results are cached by block set.
    """

    def __init__(self, ctx, params):
        self.ctx = ctx
        self.params = params
        self.cache = {}
        self.exact_calls = 0

    def pack(self, blocks):
        """``("ok", cores)``, ``("infeasible", None)`` or ``("unknown", None)``.

        Output axon entries are those of the chip assignment ``ctx.keys`` holds
        (`BlockKeys.set_chips`); results are cached by blocks and their entries.
        """
        blocks = np.sort(np.asarray(blocks, dtype=np.int64))
        extra = self.ctx.keys.extra[blocks]
        key = (blocks.tobytes(), extra.tobytes())
        if key not in self.cache:
            self.cache[key] = self._pack(blocks)
        return self.cache[key]

    def needs_chips(self, blocks):
        """Whether the infeasible ``blocks`` would fit one chip without the extra
        entries of their inter-chip axons (so their failure depends on chips)."""
        keys = self.ctx.keys
        extra = keys.extra.copy()
        if not extra[np.asarray(blocks, dtype=np.int64)].any():
            return False
        keys.set_extra(np.zeros_like(extra))
        try:
            return self.pack(blocks)[0] != "infeasible"
        finally:
            keys.set_extra(extra)

    def _pack(self, blocks):
        ctx, cap = self.ctx, self.ctx.cores_per_chip
        if cores_needed_lower_bound(ctx.graph, ctx.limits, blocks) > cap:
            return "infeasible", None
        cores, _ = pack(ctx.graph, blocks, ctx.limits, ctx.keys, _no_traffic(ctx))
        if len(cores) <= cap:
            return "ok", cores
        if self.params.remaining() <= 0:
            return "unknown", None
        self.exact_calls += 1
        sm = SlotModel(ctx, blocks, 1, min(cap, blocks.size), objective=False)
        sm.add_hint(Packed(ctx, cores[:cap], [0] * min(cap, len(cores))))
        solver, status = _solve(sm.m, self.params, limit=PACK_CHECK_SECONDS)
        if status == "INFEASIBLE":
            return "infeasible", None
        if status in ("OPTIMAL", "FEASIBLE"):
            cores, _ = sm.solution(solver)
            if len(cores) <= cap:
                return "ok", cores
        return "unknown", None

    def infeasible_core(self, blocks):
        """A small subset of the infeasible ``blocks`` that still fits no chip.

        Deletion filter: blocks are dropped, smallest first, while the rest is
        proven not to fit.
        """
        ctx = self.ctx
        order = sorted((int(b) for b in blocks), key=lambda b: (ctx.sizes[b], b))
        keep = set(order)
        for b in order:
            trial = keep - {b}
            if trial and self.pack(sorted(trial))[0] == "infeasible":
                keep = trial
        return sorted(keep)


# ================================================================= block model
class _Master:
    """Blocks to chips under the chip packing inequalities, plus no-good cuts."""

    def __init__(self, ctx, k):
        g = ctx.graph
        self.ctx, self.k = ctx, k
        m = self.m = cp_model.CpModel()
        self.y = [[m.new_bool_var("") for _ in range(k)] for _ in range(g.n_blocks)]
        for row in self.y:
            m.add_exactly_one(row)
        for b, c in ctx.pins.items():
            m.add(self.y[b][c] == 1)
        self.symmetric = not ctx.pins and k > 1
        if self.symmetric:
            _order_by_smallest(m, self.y, k)
        _use_every_chip(ctx, m, self.y, k)
        self.n_rows = add_chip_capacity(m, g, ctx.limits, ctx.cores_per_chip, self.y, k)
        a, b, w = _edges(ctx.traffic)
        self.edges = (a, b)
        wi, self.scale, self.over = scale_weights(w)
        self.d = _cut_objective(m, self.y, a, b, k)
        m.minimize(_dot(wi, self.d))
        self.n_star_rows = add_star_capacity(m, g, ctx.limits, ctx.cores_per_chip, a, b,
                                             self.d)
        self.n_entry_rows = self.add_entry_rows()
        self.n_cuts = 0

    def forbid(self, blocks, away=()):
        """No chip holds all of ``blocks`` while every block of ``away`` is elsewhere.

        ``away``: the blocks that ``blocks`` send inter-chip axons to and that were on
        other chips when ``blocks`` did not fit (elsewhere, each costs ``blocks``
        output axon entries; moving them nearer can only help).
        """
        n = len(blocks) + len(away)
        for c in range(self.k):
            self.m.add(sum(self.y[b][c] for b in blocks) +
                       sum(1 - self.y[j][c] for j in away) <= n - 1)
        self.n_cuts += 1

    def add_entry_rows(self):
        """A block's own output axon entries fit a core: where its axons to other chips
        would overflow, enough of its targets share its chip. Returns rows added."""
        g, cap = self.ctx.graph, self.ctx.limits.out_axons
        base, totals = g.resources[:, _OUT], g.interchip_entry_totals
        rows = g.interchip_entries
        added = 0
        for b in np.flatnonzero(base + totals > cap).tolist():
            need = int(base[b] + totals[b] - cap)
            start, stop = rows.indptr[b], rows.indptr[b + 1]
            for c in range(self.k):
                self.m.add(sum(int(w) * self.y[int(t)][c] for t, w in
                               zip(rows.indices[start:stop], rows.data[start:stop]))
                           >= need).only_enforce_if(self.y[b][c])
                added += 1
        return added

    def hint(self, block_chip):
        self.m.clear_hints()
        chip = _canonical_chips(block_chip, relabel=self.symmetric)
        for row, c in zip(self.y, chip):
            for cc, v in enumerate(row):
                self.m.add_hint(v, cc == c)
        for v, a, b in zip(self.d, *self.edges):
            self.m.add_hint(v, chip[a] != chip[b])

    def solve(self, params, seen=None):
        """``(status, block_chip or None, bound)``.

        The search runs first with CP-SAT's default workers (best at proving small
        models optimal); if that has not finished after `SEARCH_SHARE` of the time
        left, the rest goes to CP-SAT's objective lower-bound search, hinted with the
        best solution so far (best at raising the bound of hard ones). ``seen``, a
        list, receives ``(cost, block_chip)`` of every solution found on the way.
        """
        callback = None if seen is None else _Collector(self, seen)
        solver, status = _solve(self.m, params, limit=params.search_share * params.remaining(),
                                callback=callback)
        bound = _true_bound(solver, status, self.scale, self.over)
        chips = self._chips(solver, status)
        if status in ("OPTIMAL", "INFEASIBLE") or params.remaining() < 0.2 or \
                not params.lb_search:
            return status, chips, bound
        if chips is not None:
            self.hint(chips)
        solver2, status2 = _solve(self.m, params, subsolvers=["objective_lb_search"],
                                  callback=callback)
        bound2 = _true_bound(solver2, status2, self.scale, self.over)
        if bound2 is not None:
            bound = bound2 if bound is None else max(bound, bound2)
        chips2 = self._chips(solver2, status2)
        if chips2 is not None and (chips is None or status2 == "OPTIMAL" or
                                   solver2.objective_value <= solver.objective_value):
            chips = chips2
        if status2 in ("OPTIMAL", "INFEASIBLE"):
            return status2, chips, bound
        return ("FEASIBLE" if chips is not None else status), chips, bound

    def _chips(self, solver, status):
        if status not in ("OPTIMAL", "FEASIBLE"):
            return None
        chips = np.array([[solver.boolean_value(v) for v in row] for row in self.y])
        return chips.argmax(axis=1).astype(np.int64)


class _Collector(cp_model.CpSolverSolutionCallback):
    """Records ``(cost, block_chip)`` of each solution of a `_Master`."""

    def __init__(self, master, seen):
        super().__init__()
        self.master, self.seen = master, seen

    def on_solution_callback(self):
        y = self.master.y
        chips = np.array([[self.boolean_value(v) for v in row] for row in y])
        cost = (self.objective_value + self.master.over) / self.master.scale
        self.seen.append((cost, chips.argmax(axis=1).astype(np.int64)))


#: Master solutions found on the way that `_best_seen` tries to pack, best first.
SEEN_TRIES = 12


def _best_seen(ctx, packer, seen, best, best_cost, k):
    """The best of ``best`` and the master solutions ``seen`` whose chips pack
    (``packer``), or that METIS's repair makes valid."""
    tried = set()
    for cost, chips in sorted(seen, key=lambda s: s[0]):
        if len(tried) >= SEEN_TRIES or cost >= best_cost - 1e-9 * max(1.0, best_cost):
            break
        key = chips.tobytes()
        if key in tried:
            continue
        tried.add(key)
        packed, _ = _pack_chips(ctx, packer, chips, k)
        if packed is None:
            packed = _repair(ctx, chips, k)
        if packed is None:
            continue
        real = cut_weight(ctx.traffic, packed.block_chip())
        if real < best_cost:
            return packed, real
    return best, best_cost


def _solve_blocks(ctx, k, hint, params, seen=None):
    """The decomposition: master over chips, exact packing per chip, no-good cuts.

    With ``seen`` (a list), every master solution found on the way is kept there,
    and when the search ends without a proven optimum, the best of them that packs
    is returned if it beats the best plan found.
    """
    master = _Master(ctx, k)
    packer = ChipPacker(ctx, params)
    best, best_cost = hint, np.inf
    if hint is not None:
        best_cost = cut_weight(ctx.traffic, hint.block_chip())
        master.hint(hint.block_chip())
    bound, status, rounds = 0.0, "UNKNOWN", 0
    while params.remaining() > 0:
        rounds += 1
        m_status, chips, m_bound = master.solve(params, seen)
        if m_bound is not None:
            bound = max(bound, m_bound)
        if m_status == "INFEASIBLE":
            status = "INFEASIBLE" if best is None else status
            break
        if chips is None:
            break
        packed, bad = _pack_chips(ctx, packer, chips, k)
        if packed is not None:
            cost = cut_weight(ctx.traffic, chips)
            if cost < best_cost:
                best, best_cost = packed, cost
            if m_status == "OPTIMAL":
                status, bound = "OPTIMAL", max(bound, m_bound)
            break
        if any(res == "unknown" for res, _ in bad):
            break
        for _, blocks in bad:
            core = packer.infeasible_core(blocks)
            master.forbid(core, _away(ctx, core, chips) if packer.needs_chips(core) else ())
        repaired = _repair(ctx, chips, k)
        if repaired is not None:
            cost = cut_weight(ctx.traffic, repaired.block_chip())
            if cost < best_cost:
                best, best_cost = repaired, cost
        master.hint(best.block_chip() if best is not None else chips)
    if seen and status != "OPTIMAL" and status != "INFEASIBLE":
        best, best_cost = _best_seen(ctx, packer, seen, best, best_cost, k)
    if best is not None and status == "UNKNOWN":
        status = "FEASIBLE"
    extra = {"rounds": rounds, "cuts": master.n_cuts, "packing_rows": master.n_rows,
             "exact_packing_checks": packer.exact_calls}
    return _Result(status, best, bound if status != "INFEASIBLE" else None, extra)


def _away(ctx, blocks, chips):
    """Blocks that ``blocks`` (all on one chip of ``chips``) send inter-chip axons to
    on other chips."""
    m = ctx.graph.interchip_entries
    chip = chips[blocks[0]]
    targets = {int(t) for b in blocks for t in m.indices[m.indptr[b]:m.indptr[b + 1]]}
    return sorted(t for t in targets if chips[t] != chip)


def _pack_chips(ctx, packer, chips, k):
    """Pack every chip of ``chips``; ``(Packed, [])`` or ``(None, [(result, blocks)])``."""
    ctx.keys.set_chips(chips)
    cores, core_chip, bad = [], [], []
    for c in range(k):
        blocks = np.flatnonzero(chips == c)
        if blocks.size == 0:
            continue
        res, chip_cores = packer.pack(blocks)
        if res == "ok":
            cores += chip_cores
            core_chip += [c] * len(chip_cores)
        else:
            bad.append((res, blocks))
    if bad:
        return None, bad
    return Packed(ctx, cores, core_chip), []


def _repair(ctx, chips, k):
    """A valid plan near the chip assignment ``chips`` (METIS's repair), or None."""
    packed = pack_by_chip(ctx, chips, k)
    return packed if repair_overfull(packed, ctx, k) else None


# ==================================================================== core model
def _core_entry_rows(ctx, m, z, k, base):
    """Each core's output axon entries fit under the chips of the cores it sends to.

    Core ``i`` on chip ``c`` needs ``E_i + X_i - sum_j X_ij z_jc`` entries (its blocks'
    own entries, plus one per inter-chip axon to a core elsewhere); only cores that
    could overflow get a row per chip.
    """
    g = ctx.graph
    n = len(base.cores)
    onehot = sp.csr_matrix((np.ones(g.n_blocks), (np.arange(g.n_blocks), base.block_core)),
                           shape=(g.n_blocks, n))
    xc = (onehot.T @ g.interchip_entries @ onehot).tocsr()
    xc.setdiag(0)
    xc.eliminate_zeros()
    own = np.bincount(base.block_core, weights=g.resources[:, _OUT], minlength=n)
    worst = own + np.asarray(xc.sum(axis=1)).ravel()
    cap = ctx.limits.out_axons
    for i in np.flatnonzero(worst > cap).tolist():
        start, stop = xc.indptr[i], xc.indptr[i + 1]
        for c in range(k):
            m.add(sum(int(w) * z[int(j)][c] for j, w in
                      zip(xc.indices[start:stop], xc.data[start:stop]))
                  >= int(worst[i] - cap)).only_enforce_if(z[i][c])


def _solve_cores(ctx, k, warm, params):
    """Move the warm start's (or a traffic-aware packing's) cores between chips."""
    g, cap = ctx.graph, ctx.cores_per_chip
    if warm is not None:
        cores, start = [c.copy() for c in warm.cores], list(warm.core_chip)
    else:
        cores, _ = pack(g, np.arange(g.n_blocks), ctx.limits, ctx.keys, ctx.traffic)
        start = None
    n = len(cores)
    if n > k * cap or n * k > MAX_CORE_VARS:
        return _Result("SKIPPED", extra={"note": "too many cores for the core model"})
    base = Packed(ctx, cores, np.zeros(n, dtype=np.int64))
    pinned = {}
    for b, chip in ctx.pins.items():
        i = int(base.block_core[b])
        if pinned.setdefault(i, chip) != chip:
            return _Result("SKIPPED", extra={"note": "a core holds blocks pinned to two chips"})

    onehot = sp.csr_matrix((np.ones(g.n_blocks), (np.arange(g.n_blocks), base.block_core)),
                           shape=(g.n_blocks, n))
    a, b, w = _edges((onehot.T @ ctx.traffic @ onehot).tocsr())
    wi, scale, over = scale_weights(w)
    m = cp_model.CpModel()
    z = [[m.new_bool_var("") for _ in range(k)] for _ in range(n)]
    for i in range(n):
        m.add_exactly_one(z[i])
        if i in pinned:
            m.add(z[i][pinned[i]] == 1)
    for c in range(k):
        m.add(sum(z[i][c] for i in range(n)) <= cap)
    if not pinned and k > 1:
        _order_by_smallest(m, z, k)
    _use_every_chip(ctx, m, z, k)
    _core_entry_rows(ctx, m, z, k, base)
    d = _cut_objective(m, z, a, b, k)
    m.minimize(_dot(wi, d))
    if start is not None:
        chip = _canonical_chips(start, relabel=not pinned)
        for i in range(n):
            for c in range(k):
                m.add_hint(z[i][c], chip[i] == c)
        for v, ea, eb in zip(d, a, b):
            m.add_hint(v, chip[ea] != chip[eb])

    solver, status = _solve(m, params)
    bound = _true_bound(solver, status, scale, over)
    if status not in ("OPTIMAL", "FEASIBLE"):
        return _Result(status, bound=bound)
    core_chip = [next(c for c in range(k) if solver.boolean_value(z[i][c])) for i in range(n)]
    return _Result(status, Packed(ctx, cores, core_chip), bound, {"cores_moved": n})
