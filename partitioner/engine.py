"""`partition`: TrafficGraph -> Plan, the engine behind `MinCutAllocator`.

It finds the fewest chips the model fits (starting from the proven lower bound),
runs the chosen strategy, refines the result, and places chips on the board mesh.
"""

from __future__ import annotations

import contextlib
import gc
import re
import sys
import time

import numpy as np

from partitioner.errors import InfeasibleError, PartitionerError
from partitioner.graph import RESOURCES
from partitioner.hardware import get_board
from partitioner.packing import BlockKeys, check_blocks, effective_size
from partitioner.plan import Plan
from partitioner.strategies import greedy, metis
from partitioner.strategies.common import Context, interchip_spikes, projected_chip_count
from partitioner.strategies.entries import fit_entries
from partitioner.strategies.refine import consolidate, refine
from partitioner.strategies.steptime import minimize_step_time

__all__ = ["partition", "STRATEGIES", "OBJECTIVES"]

def _ilp(ctx, n_chips, **options):
    """CP-SAT strategy; OR-Tools is imported only when it is used."""
    from partitioner.strategies.ilp import ilp

    return ilp(ctx, n_chips, **options)


#: Strategy name -> function ``(ctx, n_chips, **options) -> Packed or None``.
STRATEGIES = {
    "metis": metis.metis,
    "ilp": _ilp,
    "first-fit": greedy.first_fit,
    "metis-first-fit": greedy.metis_first_fit,
}
#: What a plan can minimize.
OBJECTIVES = ("spikes", "max_link", "chips", "time")


def register_strategy(name, func):
    """Make ``func(ctx, n_chips) -> Packed or None`` available as ``strategy=name``."""
    STRATEGIES[name] = func


def partition(graph, n_chips=None, board="nahuku32", strategy="metis", seed=0,
              objective="spikes", pins=None, spread=False, refine_plan=None,
              progress=False, improve=None, **options):
    """Place every block of ``graph`` on a core and every core on a chip.

    Parameters
    ----------
    graph : TrafficGraph
        Blocks and traffic (`partitioner.extract`).
    n_chips : int, optional
        Most chips to use (default: the board's). The plan uses the fewest chips that
        fit, unless ``spread`` is set.
    board : str or BoardSpec
        Target board (``"kapoho_bay"``, ``"nahuku8"``, ``"nahuku32"``,
        ``"pohoiki_beach"``, ``"pohoiki_springs"``).
    strategy : str
        A key of `STRATEGIES`: ``"metis"`` (default), ``"ilp"`` (CP-SAT, if
        available), or the baselines ``"first-fit"`` and ``"metis-first-fit"``.
    seed : int
        Seed for METIS and any randomized step; same seed, same plan.
    objective : {"spikes", "max_link", "chips", "time"}
        Minimize inter-chip spikes per step (default), the busiest chip-to-chip link,
        only the number of chips, or the predicted time per step
        (`partitioner.metrics.evaluate`'s ``time_ns``; uses more cores, and more
        chips up to ``n_chips``, when that is faster).
    pins : dict, optional
        ``{block_index: chip}``: blocks that must go on a given chip.
    spread : bool
        Use exactly ``n_chips`` chips, balancing load, instead of the fewest.
    refine_plan : bool, optional
        Run local search after the strategy (default: on for every strategy except
        the first-fit baselines).
    progress : bool
        Report each stage on stderr.
    improve : bool or float, optional
        After refinement, let CP-SAT search for a plan that cuts less traffic
        between chips, hinted with the refined plan (`strategies.improve`). Default:
        on when blocks x (chips - 1) is at most ``strategies.improve.MAX_SIZE`` (200),
        except for ``"ilp"``, the first-fit baselines, ``objective="chips"`` and
        ``spread``.
        A number sets the CP-SAT work budget (deterministic seconds, not wall-clock
        time: the same graph and seed give the same plan on any machine).
    **options
        Passed to the strategy (e.g. ``time_limit`` for ``"ilp"``).

    Returns
    -------
    Plan
        ``plan.info["stage_seconds"]`` holds the seconds spent in each stage
        (``setup``, ``strategy`` with the chip-count search, ``refine``,
        ``consolidate``, ``plan``, ``place``).

    Raises
    ------
    BlockTooLargeError
        A block alone breaks a core rule.
    InfeasibleError
        The model does not fit ``n_chips`` chips of ``board``.
    """
    # Refusals name the first offending block in the model's own order.
    check_blocks(graph, get_board(board).limits)
    order, canonical = _canonical(graph)
    with _collector_paused():
        plan = _partition(canonical, n_chips, board, strategy, seed, objective,
                          _canonical_pins(pins, order), spread, refine_plan, progress,
                          improve, options)
    if canonical is not graph:
        plan = plan.renumbered(order.blocks, block_order=order)
    return plan.remember_graph(graph)


def _canonical(graph):
    """The graph's canonical block order, and the graph renumbered in that order.

    nengo-loihi may number the blocks of one network differently in each process;
    partitioning the canonically numbered graph gives the same plan in every process
    (`partitioner.identity`).
    """
    from partitioner.identity import block_order, reordered

    order = block_order(graph)
    if np.array_equal(order.ranks, np.arange(graph.n_blocks)):
        return order, graph
    return order, reordered(graph, order.blocks)


def _canonical_pins(pins, order):
    """Pins on canonical block numbers (numbers out of range are kept, to be reported)."""
    if not pins:
        return pins
    n = order.ranks.size
    return {int(order.ranks[int(b)]) if 0 <= int(b) < n else b: chip
            for b, chip in pins.items()}


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector for the duration.

    Packing creates millions of small objects and no reference cycles; the collector
    would walk them all again and again (a quarter of the time on large graphs).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _partition(graph, n_chips, board, strategy, seed, objective, pins, spread,
               refine_plan, progress, improve, options):
    t0 = time.perf_counter()
    board = get_board(board)
    if strategy not in STRATEGIES:
        raise PartitionerError(
            f"Unknown strategy {strategy!r}. Choose one of {', '.join(sorted(STRATEGIES))}."
        )
    if objective not in OBJECTIVES:
        raise PartitionerError(
            f"Unknown objective {objective!r}. Choose one of {', '.join(OBJECTIVES)}."
        )
    max_chips = board.n_chips if n_chips is None else int(n_chips)
    if not 1 <= max_chips <= board.n_chips:
        raise InfeasibleError(
            f"n_chips={n_chips} is not possible on {board.name}, which has "
            f"{board.n_chips} chips. Use 1 to {board.n_chips} chips or a larger board."
        )
    say = _reporter(progress)
    clock = _StageClock()
    with clock("setup"):
        limits = board.limits
        check_blocks(graph, limits)
        pins = _check_pins(pins, graph, max_chips)
        weight = "axons" if objective == "chips" else "spikes"
        ctx = Context(
            graph=graph, board=board, limits=limits, keys=BlockKeys(graph),
            traffic=graph.symmetric_traffic(weight), sizes=effective_size(graph, limits),
            pins=pins, seed=int(seed), spread=bool(spread),
        )
        first = _first_chip_count(graph, board, pins, max_chips, spread)
    with clock("strategy"):
        if strategy == "metis":
            first = projected_chip_count(ctx, first, max_chips)
        packed, k = _search_chip_count(ctx, STRATEGIES[strategy], first, max_chips, say,
                                       options)
    do_refine = refine_plan if refine_plan is not None else not strategy.endswith("first-fit")
    info = getattr(packed, "info", None) or {}
    if refine_plan is None and info.get("status") == "OPTIMAL":
        do_refine = False  # proven optimal: local search cannot improve it
    if do_refine and objective != "chips" and k > 1:
        with clock("refine"):
            # Spread plans keep chips balanced: no chip grows past 10% over the mean.
            chip_cap = int(np.ceil(1.1 * len(packed.cores) / k)) if spread else None
            moved = refine(packed, ctx, chip_cap=chip_cap, keep_chips=spread)
        say(f"refinement moved {moved} blocks ({clock.seconds['refine']:.2f} s)")
    if _improves(improve, strategy, objective, spread, graph, k, info):
        with clock("improve"):
            packed, info = _improve(packed, ctx, k, improve, info)
        say(f"CP-SAT improvement: {info['improve']['status'].lower()} "
            f"({clock.seconds['improve']:.2f} s)")
    with clock("consolidate"):
        removed = consolidate(packed)
        packed.compact_chips()
    say(f"consolidation freed {removed} cores ({clock.seconds['consolidate']:.2f} s)")
    if objective == "time":
        with clock("step_time"):
            packed, step_info = minimize_step_time(
                packed, ctx, STRATEGIES[strategy], options, max_chips, do_refine, say)
        info = {**info, "step_time": step_info}
    with clock("entries"):
        # Refinement and consolidation keep entries within the limit move by move;
        # this recount is the guarantee every returned plan gets.
        if fit_entries(packed, keep_chips=spread) is not None:
            packed = _run_strategy(ctx, STRATEGIES[strategy], k, options, say)
            consolidate(packed)
            packed.compact_chips()

    with clock("plan"):
        block_chip = packed.block_chip()
        plan = Plan.from_assignment(
            packed.block_core, packed.core_chip, order=packed.on_core_order(),
            board=board.name, fingerprint=graph.fingerprint(), strategy=strategy,
            objective=objective, seed=int(seed),
        )
    with clock("place"):
        plan.chip_position = _place(plan, graph, board, options)
    say(f"placed {plan.n_chips} chips on the mesh ({clock.seconds['place']:.2f} s)")
    plan.objective_value = _objective_value(graph, plan, board, objective, block_chip)
    # A strategy's bound is on the cut of ctx.traffic: inter-chip spikes, the
    # objective only for "spikes"; refinement may have lowered the objective since.
    bound = info.get("bound")
    if bound is not None and objective == "spikes":
        plan.bound = float(bound)
        plan.gap = float(max(0.0, plan.objective_value - bound) / plan.objective_value) \
            if plan.objective_value > 0 else 0.0
    elif bound is not None:
        plan.info["cut_bound"] = float(bound)
    if plan.n_chips == 1 and objective == "spikes":
        plan.bound, plan.gap = 0.0, 0.0
    if objective == "time":
        from partitioner.metrics import step_time_lower_bound

        plan.bound = step_time_lower_bound(graph, board, max_chips)
        plan.gap = float(max(0.0, plan.objective_value - plan.bound) / plan.objective_value)
    plan.info.update({k_: v for k_, v in info.items() if k_ not in ("bound", "gap")})
    plan.info["stage_seconds"] = dict(clock.seconds)
    plan.runtime_s = time.perf_counter() - t0
    say(f"{plan.n_cores} cores on {plan.n_chips} chips in {plan.runtime_s:.2f} s")
    return plan


def _improves(improve, strategy, objective, spread, graph, k, info):
    """Whether the CP-SAT improvement runs (see `partition`'s ``improve``)."""
    from partitioner.strategies.improve import applies

    if improve is False or improve is None and (
            strategy == "ilp" or strategy.endswith("first-fit") or spread or
            not applies(graph, k)):
        return False
    return objective != "chips" and k > 1 and info.get("status") != "OPTIMAL"


def _improve(packed, ctx, k, improve, info):
    """CP-SAT improvement of ``packed``; the plan to keep and its info."""
    from partitioner.strategies.improve import improve as run

    work = None if isinstance(improve, bool) or improve is None else float(improve)
    better, found = run(packed, ctx, k, work=work)
    if better is not None:
        packed = better
    packed.sync_entries()
    info = dict(info)
    info["improve"] = found
    if found["bound"] is not None:
        info["bound"] = found["bound"]
    if found["status"] == "OPTIMAL":
        info["status"] = "OPTIMAL"
    return packed, info


class _StageClock:
    """Wall-clock seconds spent in each named stage (``with clock("name"): ...``)."""

    def __init__(self):
        self.seconds = {}
        self._name = None

    def __call__(self, name):
        self._name = name
        return self

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self._start
        self.seconds[self._name] = self.seconds.get(self._name, 0.0) + elapsed
        return False


def _reporter(progress):
    if not progress:
        return lambda msg: None
    return lambda msg: print(f"[partitioner] {msg}", file=sys.stderr, flush=True)


def _check_pins(pins, graph, max_chips):
    pins = dict(pins or {})
    for block, chip in pins.items():
        if not 0 <= int(block) < graph.n_blocks:
            raise PartitionerError(
                f"Pinned block {block} does not exist (the model has {graph.n_blocks} "
                f"blocks)."
            )
        if not 0 <= int(chip) < max_chips:
            raise InfeasibleError(
                f"Block {graph.labels[int(block)]} is pinned to chip {chip}, but only "
                f"chips 0 to {max_chips - 1} may be used. Pin it to a lower chip or allow "
                f"more chips."
            )
    return {int(b): int(c) for b, c in pins.items()}


def _pinned_sources(graph, blocks, most=3):
    """The nengo objects the ``blocks`` came from, without their neuron ranges."""
    names = list(dict.fromkeys(re.sub(r"\[[^\]]*\]$", "", graph.sources[b])
                               for b in blocks))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _check_pinned_chips(graph, board, pins):
    """Raise `InfeasibleError` when the blocks pinned to one chip need more cores than
    a chip has (a lower bound: blocks that need a core alone, plus the fullest
    resource of the others)."""
    if not pins:
        return
    cap = board.limits.capacity_vector()
    by_chip = {}
    for block, chip in pins.items():
        by_chip.setdefault(chip, []).append(block)
    for chip, blocks in sorted(by_chip.items()):
        blocks = np.asarray(sorted(blocks), dtype=np.int64)
        alone = graph.alone[blocks]
        totals = graph.resources[blocks[~alone]].sum(axis=0) / cap
        shared = int(np.ceil(totals.max(initial=0.0) - 1e-9))
        need = int(alone.sum()) + shared
        if need <= board.cores_per_chip:
            continue
        why = []
        if alone.any():
            why.append(f"{int(alone.sum())} of them need a core of their own (they learn "
                       f"or send population axons)")
        if shared:
            why.append(f"the others' {RESOURCES[int(totals.argmax())]} fill "
                       f"{shared} core(s)")
        raise InfeasibleError(
            f"The pins put {blocks.size} blocks on chip {chip} (from "
            f"{_pinned_sources(graph, blocks)}), which need at least {need} cores "
            f"({'; '.join(why)}), but a chip of {board.name} has "
            f"{board.cores_per_chip}. Pin them to several chips, or pin fewer."
        )


def _first_chip_count(graph, board, pins, max_chips, spread):
    from partitioner.metrics import chip_lower_bound

    _check_pinned_chips(graph, board, pins)
    if spread and graph.n_blocks < max_chips:
        raise InfeasibleError(
            f"The model has {graph.n_blocks} block(s), fewer than the {max_chips} "
            f"chips asked for: spread=True puts at least one block on every chip. "
            f"Spread over at most {max(graph.n_blocks, 1)} chip(s), or drop "
            f"spread=True to use the fewest chips that fit."
        )
    first = max(chip_lower_bound(graph, board), max(pins.values(), default=-1) + 1)
    if spread and first <= max_chips:
        return max_chips
    if first > max_chips:
        raise InfeasibleError(
            f"The model needs at least {first} chips (proven lower bound) but at most "
            f"{max_chips} were allowed. Allow more chips (n_chips) or a larger board."
        )
    return first


def _search_chip_count(ctx, strategy, first, max_chips, say, options):
    """Run ``strategy`` at increasing chip counts until a plan fits."""
    k = first
    while k <= max_chips:
        say(f"trying {k} chip(s)")
        start = time.perf_counter()
        ctx.notes.clear()
        packed = _run_strategy(ctx, strategy, k, options, say)
        if packed is not None:
            say(f"{k} chip(s) fit ({time.perf_counter() - start:.2f} s)")
            return packed, k
        projected = ctx.notes.get("projected_cores")
        guess = "" if projected is None else \
            f"; cores projected from a sample of chips: {projected[0]:.0f} +- {projected[1]:.0f}"
        say(f"{k} chip(s) do not fit ({time.perf_counter() - start:.2f} s{guess})")
        # A strategy that found its cores cannot fit k chips says how many they need.
        k = max(k + 1, min(ctx.notes.get("min_chips", 0), max_chips))
    if ctx.spread:
        packed = _spread_fallback(ctx, max_chips, say)
        if packed is not None:
            return packed, max_chips
        _raise_for_entries(ctx, max_chips)
        raise InfeasibleError(
            f"Could not spread the model ({ctx.graph.n_blocks} blocks) over exactly "
            f"{max_chips} chip(s) of {ctx.board.name}: every chip needs at least one "
            f"core and chips must stay balanced. Spread over fewer chips, or drop "
            f"spread=True to use the fewest chips that fit."
        )
    _raise_for_entries(ctx, max_chips)
    pinned = ""
    if ctx.pins:
        pinned = (f" The {len(ctx.pins)} pinned block(s) (from "
                  f"{_pinned_sources(ctx.graph, sorted(ctx.pins))}) must stay on their "
                  f"chips; pinning fewer may let the rest fit.")
    raise InfeasibleError(
        f"Could not place the model on {max_chips} chip(s) of {ctx.board.name} "
        f"({ctx.graph.n_blocks} blocks). Allow more chips, use a larger board, or make "
        f"blocks smaller (see partitioner.fit_block_shapes).{pinned}"
    )


def _run_strategy(ctx, strategy, k, options, say):
    """``strategy`` at ``k`` chips, with every core's output axon entries fitted to the
    chip assignment it chose (`strategies.entries.fit_entries`); None if no plan."""
    ctx.keys.set_extra(np.zeros(ctx.graph.n_blocks, dtype=np.int64))
    packed = strategy(ctx, k, **options)
    if packed is None:
        return None
    overflow = fit_entries(packed, keep_chips=ctx.spread)
    if overflow is None:
        return packed
    ctx.notes["entries"] = overflow
    say(f"{k} chip(s): {overflow.text(ctx.graph)}")
    if overflow.pinned:
        _raise_for_entries(ctx, k)
    return None


def _raise_for_entries(ctx, max_chips):
    """`InfeasibleError` for a core whose output axon entries could not be fitted."""
    overflow = ctx.notes.get("entries")
    if overflow is None:
        return
    if ctx.pins:
        fix = ("Pin the blocks it sends to onto the same chip as their sender (or leave "
               "them unpinned), or unpin the sender")
    elif ctx.spread:
        fix = "Spread over fewer chips, or drop spread=True to use the fewest chips"
    else:
        fix = "Allow more chips"
    raise InfeasibleError(
        f"Could not place the model on {max_chips} chip(s) of {ctx.board.name}: "
        f"{overflow.text(ctx.graph)}. {fix}; or split the sending ensemble into "
        f"smaller blocks (nengo_loihi.BlockShape) so that each block's axons fit."
    )


def _spread_fallback(ctx, k, say):
    """A METIS plan whose empty chips get cores split off others (`strategies.spread`),
    for a spread plan the strategy left with empty chips; or None."""
    from partitioner.strategies.spread import spread_fallback

    say(f"filling the empty chips of a cut into {k} chips")
    ctx.keys.set_extra(np.zeros(ctx.graph.n_blocks, dtype=np.int64))
    packed = spread_fallback(ctx, k)
    if packed is None:
        return None
    overflow = fit_entries(packed, keep_chips=True)
    if overflow is not None:
        ctx.notes["entries"] = overflow
        return None
    packed.info = dict(getattr(packed, "info", None) or {}, spread_filled=True)
    return packed


def _place(plan, graph, board, options):
    """Board position of each chip (mesh placement when available)."""
    try:
        from partitioner.placement import place_chips
    except ImportError:
        return np.arange(plan.n_chips)
    return place_chips(graph, plan, board, seed=plan.seed)


def _objective_value(graph, plan, board, objective, block_chip):
    if objective == "chips":
        return float(plan.n_chips)
    if objective in ("max_link", "time"):
        from partitioner.metrics import evaluate

        metrics = evaluate(graph, plan, board)
        return float(metrics.max_link_load if objective == "max_link" else metrics.time_ns)
    return interchip_spikes(graph, block_chip)
