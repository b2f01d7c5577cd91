"""Minimize the predicted time per step (``objective="time"``).

Loihi advances all cores in lockstep: a step lasts as long as its busiest core or its
busiest chip-to-chip link needs (`partitioner.metrics.step_time`). Dense packing,
which saves cores, adds the synaptic work of every block on a core together and can
make one core the bottleneck of every step. This module spreads that work, using
more cores, and more chips when that is faster, without ever breaking a rule:

1. **Spread each chip** (`spread_chip`). The blocks of a chip whose busiest core is
   slower than what the plan can reach are repacked onto at most all of the chip's
   cores: first packed under a cap on each core's time equal to that floor (best fit
   decreasing: a block joins the open core it fills closest to the cap, if
   `packing.CoreBin.fits` accepts it, else a new core); if that needs too many
   cores, spread over all of them longest-processing-time first (each block to the
   least loaded core it fits); then a bisection on the cap between the floor and the
   time reached looks for a shorter time, or fewer cores. The result replaces the
   chip if it beats the chip's current time.
2. **More chips** (`minimize_step_time`). While the plan is compute-bound by a core
   that holds several blocks, the chips are full, and ``n_chips`` allows, the
   strategy runs again on one more chip, its METIS cut balancing each block's work
   as well as its size, then refinement and step 1; the result is kept if its
   predicted step time (placed on the mesh and measured by
   `partitioner.metrics.evaluate`) is lower. The search stops when it stops falling.

Both steps are deterministic for a seed. Cores are only ever built through
`CoreBin` and the `Packed` methods.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from partitioner.graph import RESOURCES
from partitioner.hardware import CoreLimits
from partitioner.packing import WINDOW, CoreBin
from partitioner.strategies.common import Packed
from partitioner.strategies.refine import consolidate, refine

__all__ = ["minimize_step_time", "spread_chip", "block_times", "packed_step_time"]

_IN_AXONS = RESOURCES.index("in_axons")
#: Config tables, in the order `packing.BlockKeys.info` gives a block's keys.
_TABLES = CoreLimits.CONFIG_TABLES
#: The search on the per-core time cap in `spread_chip` stops when the cap is known
#: to this relative precision.
SEARCH_TOL = 1e-3
_EPS = 1e-9


def block_times(graph, energy):
    """Time each block's work costs its core per step.

    Parameters
    ----------
    graph : TrafficGraph
    energy : EnergyModel

    Returns
    -------
    (n_blocks, 3) float ndarray
        Nanoseconds; columns `partitioner.graph.WORK_TERMS` (synaptic ops, compartment
        updates, synapse memory words) times their costs
        (`partitioner.metrics.term_costs`). A core's time is the largest column of
        the sum over its blocks.
    """
    from partitioner.metrics import term_costs

    return graph.block_work() * term_costs(energy)[:3]


def _core_sums(packed, times):
    """(n_cores, 3) summed term times of each core."""
    sums = np.zeros((len(packed.cores), 3))
    np.add.at(sums, packed.block_core, times)
    return sums


def _chip_floor(times, blocks, n_cores):
    """Lowest time any packing of ``blocks`` onto ``n_cores`` cores can reach."""
    t = times[blocks]
    return float(max(t.max(axis=1).max(), (t.sum(axis=0) / max(n_cores, 1)).max()))


# ------------------------------------------------------------------ step 1
class _CapPacker:
    """Cores being filled under a cap on each core's term times.

    Every open core is screened at once with arrays: shared settings (cores of their
    own, voltage limits, noise), term times and resources (pop16 id ranges included)
    in one matrix, then the config tables, counting the keys a block shares with each
    core exactly; the best candidates then get the full rule check (`CoreBin.fits`).
    """

    def __init__(self, ctx, times, cap, max_cores, spread=False):
        self.ctx = ctx
        self.spread = spread
        self.times = times
        bound = cap * (1 + _EPS) + _EPS
        self.bound = bound
        self.max_cores = max_cores
        limit = ctx.limits.capacity_vector()
        self.in_cap = int(limit[_IN_AXONS])
        # Per core: term times (3) then resources; a block fits where load + need <= cap.
        self.capacity = np.concatenate([np.full(3, bound), limit.astype(np.float64)])
        self.need = np.hstack([times, ctx.keys.shared_need().astype(np.float64)])
        self.table_cap = np.array([ctx.limits.config_capacity(t) for t in _TABLES])
        self.cores = []
        self.load = np.zeros((max_cores, self.capacity.size))
        self.tables = np.zeros((max_cores, len(_TABLES)), dtype=np.int64)
        # vmin/vmax id of each core; -2 for a core that takes no other block.
        self.core_key = np.full(max_cores, -1, dtype=np.int64)
        self.noise_key = np.full(max_cores, -1, dtype=np.int64)
        self.holders = [{} for _ in _TABLES]

    def place(self, b):
        """Put block ``b`` on the best open core or a new one; False if neither.

        Packing (``spread=False``) prefers an open core; spreading opens a new core
        while there are any (an empty core is the least loaded one)."""
        opening = self.spread and len(self.cores) < self.max_cores
        target = None if opening else self._best(b)
        if target is None:
            if len(self.cores) >= self.max_cores or (self.times[b] > self.bound).any():
                return False
            core = CoreBin(self.ctx.graph, self.ctx.limits, self.ctx.keys)
            if not core.fits(b):
                return False
            self.cores.append(core)
            target = len(self.cores) - 1
        self._add(target, b)
        return True

    def _best(self, b):
        m = len(self.cores)
        _, _, alone, core_key, noise_key, pop16, _, keys = self.ctx.keys.info(b)
        if m == 0 or alone:
            return None
        need = self.need[b]
        if 0 < pop16 < self.in_cap:
            # Its axon ids must end below 2**axon_bits: less room for input axons.
            need = need.copy()
            need[3 + _IN_AXONS] += self.in_cap - pop16
        after = self.load[:m] + need
        ok = (self.core_key[:m] == core_key) & (after <= self.capacity).all(axis=1)
        if noise_key >= 0:
            noise = self.noise_key[:m]
            ok &= (noise < 0) | (noise == noise_key)
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return None
        # Exact count of the entries the block would add to each table of each core
        # (also the preference below, so every table is counted).
        new = np.tile(np.array([len(k) for k in keys]), (cand.size, 1))
        for t, want in enumerate(keys):
            holders = self.holders[t]
            for key in want:
                mask = holders.get(key)
                if mask is not None:
                    new[:, t] -= mask[cand]
        fit = (self.tables[cand] + new <= self.table_cap).all(axis=1)
        cand, new = cand[fit], new[fit]
        fill = after[cand, :3].max(axis=1)
        if self.spread:
            # The least loaded core after the block joins, then fewest new entries.
            order = np.lexsort((new.sum(axis=1), fill))
        else:
            # Fewest new config entries first (keeps tables from filling up), then the
            # core this block fills closest to the cap, then the earliest core.
            order = np.lexsort((-fill, new.sum(axis=1)))
        for i in cand[order][:WINDOW].tolist():
            if self.cores[i].fits(b):
                return i
        return None

    def _add(self, i, b):
        core = self.cores[i]
        info = self.ctx.keys.info(b)
        wanted = info[7] if core.blocks else info[6]
        for t, (want, have) in enumerate(zip(wanted, core.tables)):
            for key in want - have:
                mask = self.holders[t].get(key)
                if mask is None:
                    mask = self.holders[t][key] = np.zeros(self.max_cores, dtype=bool)
                mask[i] = True
        core.add(b)
        self.load[i, :3] += self.times[b]
        self.load[i, 3:] = core.used
        self.tables[i] = [len(t) for t in core.tables]
        self.core_key[i] = -2 if core.alone else core.core_key
        self.noise_key[i] = core.noise_key


def _pack_with_cap(packed, blocks, times, cap, max_cores, spread=False):
    """Pack ``blocks``, heaviest first, with every core's term times at most ``cap``.

    ``spread=False``: best fit decreasing (each block to the open core it fills
    closest to the cap). ``spread=True``: longest processing time first (each block
    to the least loaded of ``max_cores`` cores). Returns a list of `CoreBin`, or
    None when the blocks do not fit ``max_cores`` cores.
    """
    work = times[blocks].max(axis=1)
    order = blocks[np.lexsort((blocks, -work))]
    packer = _CapPacker(packed.ctx, times, cap, max_cores, spread=spread)
    for b in order.tolist():
        if not packer.place(b):
            return None
    return packer.cores


def _reached(cores, times):
    """Time of the busiest of ``cores``."""
    return float(max(times[c.blocks].sum(axis=0).max() for c in cores))


def _replace_chip(packed, chip, cores):
    """Put the blocks of ``chip`` on ``cores`` (lists of blocks, in on-core order)."""
    for i in sorted(packed.chip_cores(chip), reverse=True):
        for b in list(packed.cores[i].blocks):
            packed.remove_block(b)
    for blocks in cores:
        packed.new_core(blocks[0], chip)
        index = int(packed.block_core[blocks[0]])
        for b in blocks[1:]:
            packed.add_block(b, index)


def spread_chip(packed, chip, times, floor=0.0, max_cores=None):
    """Repack one chip's blocks so that its busiest core is as fast as possible.

    Parameters
    ----------
    packed : Packed
        Modified in place when a faster packing is found.
    chip : int
    times : (n_blocks, 3) array
        `block_times`.
    floor : float
        Do not aim below this time (ns): some other part of the plan is at least this
        slow, so a faster chip would not shorten the step.
    max_cores : int, optional
        Cores the chip may use (default: all of a chip's).

    Returns
    -------
    bool
        Whether the chip was repacked.
    """
    max_cores = packed.ctx.cores_per_chip if max_cores is None else int(max_cores)
    core_ids = packed.chip_cores(chip)
    if not core_ids:
        return False
    sums = _core_sums(packed, times)[core_ids]
    current = float(sums.max())
    blocks = np.sort(np.concatenate([packed.cores[i].blocks for i in core_ids]))
    lo = max(_chip_floor(times, blocks, max_cores), floor)
    if current <= lo * (1 + SEARCH_TOL):
        return False
    best, best_time = None, current
    # The fewest cores that reach the floor, if any packing finds them.
    cores = _pack_with_cap(packed, blocks, times, lo, max_cores)
    if cores is None:
        # Longest processing time first over every core: close to the shortest time
        # (within 4/3 of the optimum without the other rules).
        cores = _pack_with_cap(packed, blocks, times, np.inf, max_cores, spread=True)
    if cores is not None and _reached(cores, times) < best_time * (1 - _EPS):
        best, best_time = cores, _reached(cores, times)
    hi = min(current, best_time)
    cap = (lo + hi) / 2
    # Then a bisection on the cap for a shorter time (or as short, on fewer cores).
    while hi > lo * (1 + SEARCH_TOL):
        cores = _pack_with_cap(packed, blocks, times, cap, max_cores)
        if cores is not None:
            reached = _reached(cores, times)
            if reached < best_time * (1 - _EPS) or (
                    best is not None and reached <= best_time and len(cores) < len(best)):
                best, best_time = cores, reached
            hi = min(cap, reached)
        else:
            lo = cap
        cap = (lo + hi) / 2
    if best is None:
        return False
    _replace_chip(packed, chip, [c.blocks for c in best])
    return True


def _spread_chips(packed, times, link_ns, keep=None):
    """`spread_chip` on every chip slower than what the whole plan can reach."""
    # Output axon entries depend on the chips of each block's targets: count them
    # for this plan's chips (spreading moves no block to another chip).
    packed.sync_entries()
    per_chip = packed.cores_by_chip()
    cap = packed.ctx.cores_per_chip
    floors = []
    for cores in per_chip:
        blocks = np.concatenate([packed.cores[i].blocks for i in cores]) if cores else \
            np.zeros(0, dtype=np.int64)
        floors.append(_chip_floor(times, blocks, cap) if blocks.size else 0.0)
    floor = max(max(floors, default=0.0), link_ns)
    sums = _core_sums(packed, times)
    chip_of = np.asarray(packed.core_chip, dtype=np.int64)
    chip_time = np.zeros(len(per_chip))
    np.maximum.at(chip_time, chip_of, sums.max(axis=1))
    changed = 0
    for chip in np.argsort(-chip_time, kind="stable").tolist():
        if chip_time[chip] <= floor * (1 + SEARCH_TOL):
            break
        changed += spread_chip(packed, chip, times, floor=floor, max_cores=keep)
    return changed


# ------------------------------------------------------------------ measuring
def _plan(packed, board, seed, strategy):
    """The `Plan` of ``packed``, placed on the board mesh for the shortest step (as
    the engine places a plan made for ``objective="time"``)."""
    from partitioner.placement import place_chips
    from partitioner.plan import Plan

    plan = Plan.from_assignment(packed.block_core, packed.core_chip,
                                order=packed.on_core_order(),
                                board=board.name, strategy=strategy, objective="time",
                                seed=int(seed))
    plan.chip_position = place_chips(packed.ctx.graph, plan, board, seed=int(seed),
                                     objective="time")
    return plan


def packed_step_time(packed, board, seed=0):
    """Predicted step time of a packed plan.

    Chips are compacted (renumbered, in place) and placed on the mesh first
    (`placement.place_chips` with ``objective="time"``).

    Parameters
    ----------
    packed : Packed
    board : BoardSpec
    seed : int
        Seed of the placement.

    Returns
    -------
    time_ns : float
    metrics : PlanMetrics
        `partitioner.metrics.evaluate` of the placed plan.
    """
    from partitioner.metrics import evaluate

    packed.compact_chips()
    metrics = evaluate(packed.ctx.graph, _plan(packed, board, seed, "time"), board)
    return float(metrics.time_ns), metrics


# ------------------------------------------------------------------ step 2
def _work_sizes(ctx, times, n_chips):
    """Vertex sizes for a chip cut that balances work as well as core resources.

    Each block costs the larger of its `packing.effective_size` and its share of the
    time one core may spend if the work were spread evenly over ``n_chips`` chips.
    """
    total = times.sum(axis=0)
    target = max(float((total / (n_chips * ctx.cores_per_chip)).max()),
                 float(times.max(axis=1).max()), _EPS)
    return np.clip(np.maximum(ctx.sizes, times.max(axis=1) / target), 1e-6, 1.0)


def _more_chips(ctx, strategy, options, k, times, do_refine):
    """The strategy's plan on exactly ``k`` chips with work-balanced chips, refined
    and spread; None when it finds none."""
    spread_ctx = dataclasses.replace(ctx, sizes=_work_sizes(ctx, times, k), spread=True,
                                     notes={})
    from partitioner.strategies.entries import fit_entries

    packed = strategy(spread_ctx, k, **options)
    if packed is None:
        return None
    if do_refine and k > 1:
        # Without cluster moves: they move the work of many blocks at once and left
        # chips so unequal in work that no packing reached the heaviest block's time
        # (spa_like, every axon active: 8.6 us instead of 7.4 us on 3 chips).
        refine(packed, spread_ctx, chip_cap=int(np.ceil(1.1 * len(packed.cores) / k)),
               keep_chips=True, clusters=False)
    consolidate(packed)
    packed.compact_chips()
    # Every core within its output axon entries for these chips, as the engine
    # guarantees for its own plans; a plan that cannot be repaired is not tried.
    if fit_entries(packed, keep_chips=True) is not None:
        return None
    return packed


def _room_to_grow(metrics, times, packed):
    """Whether more cores could lower the step time: a core holding several blocks
    is the bottleneck, above the heaviest single block."""
    neck = metrics.bottleneck
    if neck.get("kind") != "core" or len(neck.get("blocks", ())) < 2:
        return False
    return metrics.time_breakdown["work"] > float(times.max()) * (1 + SEARCH_TOL)


def minimize_step_time(packed, ctx, strategy, options=None, max_chips=None,
                       refine_plan=True, say=None):
    """Lower the predicted step time of ``packed``, never breaking a rule.

    Parameters
    ----------
    packed : Packed
        The plan to improve (the default plan of the engine); modified in place when
        its chips are kept.
    ctx : Context
    strategy : callable
        ``strategy(ctx, k, **options) -> Packed or None``, used to try more chips.
    options : dict, optional
        Strategy options.
    max_chips : int, optional
        Most chips the plan may use (default: the plan's own count). Ignored for
        spread plans (``ctx.spread``), which keep their chips.
    refine_plan : bool
        Refine plans made on more chips (as the engine refines its plans).
    say : callable, optional
        Progress messages.

    Returns
    -------
    packed : Packed
        The fastest plan found (``packed`` itself or one on more chips).
    info : dict
        ``time_ns_start`` and ``time_ns`` (predicted step time before and after),
        ``chips_tried`` (chip count -> predicted step time).
    """
    say = say or (lambda msg: None)
    options = dict(options or {})
    board = ctx.board
    times = block_times(ctx.graph, board.energy)
    start, metrics = packed_step_time(packed, board, ctx.seed)
    link_ns = metrics.time_terms.get("link_spikes", 0.0)
    _spread_chips(packed, times, link_ns)
    best_time, metrics = packed_step_time(packed, board, ctx.seed)
    k = packed.n_chips
    tried = {int(k): best_time}
    say(f"step time {start / 1000:.4g} us -> {best_time / 1000:.4g} us on {k} chip(s)")
    max_chips = k if max_chips is None or ctx.spread else int(max_chips)
    best = packed
    while k < max_chips and _room_to_grow(metrics, times, best):
        k += 1
        trial = _more_chips(ctx, strategy, options, k, times, refine_plan)
        if trial is None:
            say(f"{k} chips: no plan")
            break
        _spread_chips(trial, times, 0.0)
        trial_time, trial_metrics = packed_step_time(trial, board, ctx.seed)
        tried[int(k)] = trial_time
        say(f"{k} chips: step time {trial_time / 1000:.4g} us")
        if trial_time >= best_time * (1 - _EPS):
            break
        best, best_time, metrics = trial, trial_time, trial_metrics
    if best is not packed:
        # Keep the caller's context (the trial's balanced sizes were only for the cut).
        best = Packed(ctx, best.cores, best.core_chip)
    info = {"time_ns_start": float(start), "time_ns": float(best_time),
            "chips_tried": {str(c): float(t) for c, t in sorted(tried.items())}}
    return best, info
