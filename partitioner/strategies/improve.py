"""CP-SAT improvement of a plan, under a deterministic work budget.

After METIS and refinement (`strategies.refine`), small plans (`MAX_SIZE`) get a
second opinion from the exact block model of `strategies.ilp` (a master model
of blocks to chips with packing inequalities, each chip packed exactly, no-good cuts
for chips that do not pack), hinted with the refined plan. The result replaces the
plan only when it cuts strictly less traffic between chips.

CP-SAT is bounded by *work* (its deterministic time, `max_deterministic_time`) with
its workers interleaved and their number fixed, never by wall-clock time, so the same
graph and seed give the same plan however loaded the machine is. A wall-clock limit
far above the expected time is kept only as a safety net.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["improve", "work_budget", "applies", "MAX_SIZE", "WORKERS"]

#: Plans get the CP-SAT improvement when blocks x (chips - 1) is at most this: 200
#: blocks on 2 chips, 100 on 3. Beyond, CP-SAT's time per unit of work grows quickly.
MAX_SIZE = 200
#: CP-SAT workers (fixed, so that the result does not depend on the machine; one
#: worker found the optima of the benchmark's instances with the least work).
WORKERS = 1
#: Work budget: ``WORK_PER_BLOCK`` deterministic seconds per block and per chip
#: beyond the first, clipped to ``[WORK_MIN, WORK_MAX]``.
WORK_PER_BLOCK = 0.02
WORK_MIN = 2.0
WORK_MAX = 4.0
#: CP-SAT parameters of the improvement. Without presolve and without the linear
#: relaxation, CP-SAT reached the proven optima of the benchmark's instances with up
#: to 30 times less work and time (with presolve, the search started far from the
#: hint; without presolve, the relaxation of the cut constraints grows large and
#: takes much time that CP-SAT does not count as work).
SOLVER_OPTIONS = {"cp_model_presolve": False, "linearization_level": 0}
#: Wall-clock safety net: this many seconds per unit of work, plus `SAFETY_BASE`.
SAFETY_PER_WORK = 10.0
SAFETY_BASE = 30.0
_TOL = 1e-9


def applies(graph, k):
    """Whether a plan of ``graph`` on ``k`` chips is small enough for the improvement."""
    return k > 1 and graph.n_blocks * (k - 1) <= MAX_SIZE


def work_budget(graph, k):
    """Deterministic seconds of CP-SAT work for ``graph`` on ``k`` chips.

    Parameters
    ----------
    graph : TrafficGraph
    k : int
        Chips of the plan.

    Returns
    -------
    float
    """
    return float(np.clip(WORK_PER_BLOCK * graph.n_blocks * (k - 1), WORK_MIN, WORK_MAX))


def improve(packed, ctx, k, work=None, workers=WORKERS, search_share=0.7):
    """Search for a plan on ``k`` chips that cuts less traffic than ``packed``.

    Parameters
    ----------
    packed : Packed
        A valid plan (the hint; it is not modified).
    ctx : Context
    k : int
        Chips the plan may use.
    work : float, optional
        CP-SAT work budget in deterministic seconds (default `work_budget`).
    workers : int
        CP-SAT workers (interleaved when more than one; `SOLVER_OPTIONS` then stay
        off, since OR-Tools 9.14 aborts on interleaved workers without presolve).

    Returns
    -------
    better : Packed or None
        A valid plan with strictly less traffic between chips, or None.
    info : dict
        ``status`` (``"OPTIMAL"`` when the returned plan, or ``packed`` if none is
        returned, is proven optimal on ``k`` chips), ``bound`` (a proven lower bound
        on the traffic between chips on ``k`` chips, or None), ``work`` (budget) and
        ``work_used``, ``seconds``, and the block model's statistics.
    """
    from partitioner.strategies.ilp import _Params, _solve_blocks, cut_weight

    t0 = time.perf_counter()
    work = work_budget(ctx.graph, k) if work is None else float(work)
    params = _Params(deadline=t0 + SAFETY_BASE + SAFETY_PER_WORK * work,
                     workers=int(workers), seed=int(ctx.seed), work=work,
                     search_share=float(search_share), lb_search=False,
                     solver_options=dict(SOLVER_OPTIONS) if int(workers) == 1 else {})
    before = cut_weight(ctx.traffic, packed.block_chip())
    result = _solve_blocks(ctx, k, packed, params, seen=[])
    found = result.packed
    better = None
    if found is not None and found is not packed and \
            cut_weight(ctx.traffic, found.block_chip()) < before - _TOL * max(1.0, before):
        better = found
    info = {
        # The returned plan (or ``packed``, if none) is optimal on k chips.
        "status": "OPTIMAL" if result.status == "OPTIMAL" else "FEASIBLE",
        "bound": result.bound,
        "work": work,
        "work_used": work - max(0.0, params.work),
        "seconds": time.perf_counter() - t0,
        "objective_before": before,
    }
    info.update(result.extra)
    return better, info
