"""Placing a plan's chips on the board's chip mesh.

Spikes between chips travel over the board's 2-D mesh of chip-to-chip links, one link
per hop (``BoardSpec.hop_matrix``), routed X then Y (`partitioner.metrics.xy_route`).
Which mesh position each chip takes therefore decides how many link hops the inter-chip
traffic costs and how busy the busiest link is. `place_chips` chooses the positions:

* the *hop-weighted cost* ``sum_ab T[a, b] * hops(pos a, pos b)`` (``T``: spikes per
  step from chip ``a`` to chip ``b``) is a quadratic assignment problem. A greedy
  construction (most-connected chip first, each at the free position nearest its
  placed partners) is followed by best-improvement pairwise swaps (moves to empty
  positions included), vectorized over the chip x chip traffic matrix; small plans
  also search from the identity and two more greedy starts. For small placements
  (`EXACT_MAX_CHIPS`, `EXACT_MAX_VARS`) CP-SAT then solves the problem exactly, hinted
  with that result (positions restricted, without loss, to a window of ``n x n``
  positions: closing up empty rows and columns lengthens no route, and mirrored
  placements are cut);
* the *max link load* is then lowered by moving the chips whose traffic crosses the
  busiest link, as far as that keeps the hop-weighted cost (objective ``"spikes"``), or
  first of all (objective ``"max_link"``).

The result is never worse than the identity placement (chip ``i`` at position ``i``).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from partitioner.errors import PartitionerError, PlanError
from partitioner.hardware import get_board
from partitioner.metrics import chip_traffic, link_loads, xy_route

__all__ = [
    "place_chips",
    "placement_report",
    "placement_cost",
    "EXACT_MAX_CHIPS",
]

#: ``method="auto"`` solves placements exactly for up to this many chips ...
EXACT_MAX_CHIPS = 8
#: ... when chips x window positions (the model's booleans) are at most this many.
EXACT_MAX_VARS = 160
#: ``method="auto"`` gives the exact solver at most this many seconds.
EXACT_SECONDS = 1.0
#: Up to this many chips the heuristic also searches from the identity placement and
#: from two more greedy placements (ties broken at random).
RESTART_MAX_CHIPS = 64
#: Relative tolerance when comparing costs.
_TOL = 1e-9
#: The searches stop after a fixed amount of work, not at a clock time, so that the
#: same plan and seed give the same placement on any machine under any load:
#: ``time_limit`` seconds buy this many elementary array operations (about what one
#: core does in a second) ...
OPS_PER_SECOND = 5e7
#: ... a swap-search step costs ``positions x (chips + positions)`` of them plus
#: this overhead, and scoring a placement ``flows x (mesh rows + columns)`` plus
#: `SCORE_OPS` (measured).
SWAP_OPS = 5e3
SCORE_OPS = 1.5e4
#: A search stops anyway after this many times ``time_limit`` of wall-clock time,
#: plus `WALL_SLACK` seconds (then the placement may differ between runs). Only
#: placements of hundreds of chips on a machine several times slower than one free
#: core come near it; smaller ones reach a local optimum well within the budget.
WALL_FACTOR = 3.0
WALL_SLACK = 1.0


# ===================================================================== public API
def place_chips(graph, plan, board=None, seed=0, method="auto", time_limit=5.0,
                objective=None):
    """Board mesh position of every chip of ``plan``.

    Parameters
    ----------
    graph : TrafficGraph
        The graph ``plan`` places.
    plan : Plan
        Its ``block_chip`` decides the chip-to-chip traffic.
    board : BoardSpec or str, optional
        Board whose mesh the chips go on (default: ``plan.board``).
    seed : int
        Seed for tie-breaking and the random restarts of the heuristic.
    method : {"auto", "exact", "heuristic", "identity"}
        ``"auto"``: the heuristic, then CP-SAT (at most `EXACT_SECONDS`) when the
        placement is small (at most `EXACT_MAX_CHIPS` chips and `EXACT_MAX_VARS`
        chip-position pairs in the model); ``"exact"``: CP-SAT always, for up to
        ``time_limit`` seconds.
    time_limit : float
        Effort, in seconds: the searches stop after a fixed amount of work that takes
        about this long on one unloaded core (`OPS_PER_SECOND`; CP-SAT's
        deterministic time for the exact solver), so the result does not depend on
        the machine's speed or load. A wall-clock guard (`WALL_FACTOR` times this
        plus `WALL_SLACK`) stops them anyway.
    objective : {"spikes", "max_link", "chips", "time"}, optional
        What to minimize first (default: ``plan.objective``). ``"spikes"``: hop-weighted
        cost, then max link load; ``"max_link"``: max link load, then hop-weighted
        cost; ``"chips"``: nothing (identity placement); ``"time"``: of the
        ``"spikes"`` and ``"max_link"`` placements, the one with the shorter predicted
        step (`partitioner.metrics.step_time`: the busiest link and the longest
        route both count), the ``"spikes"`` one on ties.

    Returns
    -------
    (n_chips,) int64 ndarray
        Row-major index into ``board.chip_positions()`` of each chip.

    Raises
    ------
    PlanError
        The plan has more chips than the board has positions.
    PartitionerError
        ``method`` or ``objective`` is unknown.
    """
    board = get_board(plan.board if board is None else board)
    n = plan.n_chips
    objective = plan.objective if objective is None else objective
    if objective == "time":
        return _place_for_time(graph, plan, board, seed, method, time_limit)
    _check_args(n, board, method, objective)
    identity = np.arange(n, dtype=np.int64)
    if n <= 1 or method == "identity" or objective == "chips":
        return identity
    traffic = chip_traffic(graph, plan, "spikes")
    if not np.any(traffic):
        return identity
    return _place(traffic, board, seed, method, time_limit, objective)


def placement_cost(traffic, positions, board):
    """Hop-weighted cost, max link load and max hops of one placement.

    Parameters
    ----------
    traffic : (n, n) array
        Directed spikes per step between chips.
    positions : (n,) int array
        Board position of each chip.
    board : BoardSpec or str

    Returns
    -------
    dict
        ``hop_weighted_cost``, ``max_link_load``, ``max_hops``.
    """
    board = get_board(board)
    traffic = np.asarray(traffic, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.int64)
    hops = board.hop_matrix()[np.ix_(pos, pos)]
    loads = link_loads(traffic, pos, board.mesh_shape)
    talking = traffic > 0
    return {
        "hop_weighted_cost": float((traffic * hops).sum()),
        "max_link_load": float(loads.max()) if loads.size else 0.0,
        "max_hops": int(hops[talking].max()) if talking.any() else 0,
    }


def placement_report(graph, plan, board=None, seed=0, positions=None, time_limit=5.0):
    """Hop-weighted cost and max link load of three placements of ``plan``'s chips.

    Parameters
    ----------
    graph : TrafficGraph
    plan : Plan
    board : BoardSpec or str, optional
        Default ``plan.board``.
    seed : int
        Seed of the random placement and of `place_chips`.
    positions : (n_chips,) int array, optional
        The placement to report as ``"placed"``; default: `place_chips` with the
        plan's objective.
    time_limit : float
        Passed to `place_chips`.

    Returns
    -------
    dict
        ``"identity"`` (chip ``i`` at position ``i``), ``"random"`` (a uniformly random
        placement) and ``"placed"``, each a `placement_cost` dict with ``positions``;
        ``"hop_ratio_vs_identity"`` and ``"hop_ratio_vs_random"`` (placed cost over
        the other; below 1 is better), and ``"link_ratio_vs_identity"``.
    """
    board = get_board(plan.board if board is None else board)
    n = plan.n_chips
    _check_args(n, board, "auto", "spikes")
    traffic = chip_traffic(graph, plan, "spikes")
    if positions is None:
        positions = place_chips(graph, plan, board, seed=seed, time_limit=time_limit)
    rng = np.random.default_rng(seed)
    layouts = {
        "identity": np.arange(n, dtype=np.int64),
        "random": rng.permutation(board.n_chips)[:n].astype(np.int64),
        "placed": np.asarray(positions, dtype=np.int64),
    }
    out = {}
    for name, pos in layouts.items():
        out[name] = placement_cost(traffic, pos, board)
        out[name]["positions"] = pos.tolist()
    out["hop_ratio_vs_identity"] = _ratio(out["placed"]["hop_weighted_cost"],
                                          out["identity"]["hop_weighted_cost"])
    out["hop_ratio_vs_random"] = _ratio(out["placed"]["hop_weighted_cost"],
                                        out["random"]["hop_weighted_cost"])
    out["link_ratio_vs_identity"] = _ratio(out["placed"]["max_link_load"],
                                           out["identity"]["max_link_load"])
    return out


def _ratio(a, b):
    return float(a / b) if b > 0 else (1.0 if a == 0 else float("inf"))


def _check_args(n, board, method, objective):
    if n > board.n_chips:
        raise PlanError(
            f"The plan uses {n} chips but {board.name} has {board.n_chips} positions. "
            f"Place it on a larger board."
        )
    if method not in ("auto", "exact", "heuristic", "identity"):
        raise PartitionerError(
            f"Unknown placement method {method!r}; use 'auto', 'exact', 'heuristic' or "
            f"'identity'."
        )
    if objective not in ("spikes", "max_link", "chips"):
        raise PartitionerError(
            f"Unknown objective {objective!r}; use 'spikes', 'max_link' or 'chips'."
        )


def _place_for_time(graph, plan, board, seed, method, time_limit):
    """Positions for ``objective="time"`` (see `place_chips`)."""
    from partitioner.graph import WORK_TERMS
    from partitioner.metrics import core_work, step_time

    n = plan.n_chips
    _check_args(n, board, method, "spikes")
    identity = np.arange(n, dtype=np.int64)
    traffic = chip_traffic(graph, plan, "spikes")
    if n <= 1 or method == "identity" or not np.any(traffic):
        return identity
    talking = (traffic > 0) | (chip_traffic(graph, plan, "axons") > 0)
    work = core_work(graph, plan)
    peak = dict(zip(WORK_TERMS, work.max(axis=0).tolist()))
    hops = board.hop_matrix()

    def step(pos):
        peak["link_spikes"] = float(link_loads(traffic, pos, board.mesh_shape).max())
        longest = int(hops[np.ix_(pos, pos)][talking].max()) if talking.any() else 0
        return step_time(peak, longest, board.energy)[0]

    candidates = [_place(traffic, board, seed, method, time_limit, o)
                  for o in ("spikes", "max_link")]
    return min(candidates, key=step)


# ======================================================================= driver
class _Scorer:
    """Hop-weighted cost and max link load of placements of one traffic matrix."""

    def __init__(self, traffic, board, objective, hops):
        self.traffic = traffic
        self.board = board
        self.hops = hops
        self.mesh = tuple(board.mesh_shape)
        self.objective = objective
        src, dst = np.nonzero(traffic)
        self.flows = (src, dst, traffic[src, dst])

    def hop_cost(self, pos):
        src, dst, w = self.flows
        return float((w * self.hops[pos[src], pos[dst]]).sum())

    def loads(self, pos):
        return link_loads(self.traffic, pos, self.mesh)

    def key(self, pos):
        """Lexicographic score (smaller is better) for the objective."""
        return self.ordered(self.hop_cost(pos), float(self.loads(pos).max()))

    def ordered(self, hop, link):
        """The score of a placement with hop cost ``hop`` and busiest link ``link``."""
        return (link, hop) if self.objective == "max_link" else (hop, link)


def _better(a, b):
    """Whether score tuple ``a`` is strictly better than ``b`` (with tolerance)."""
    for x, y in zip(a, b):
        tol = _TOL * max(abs(x), abs(y), 1.0)
        if x < y - tol:
            return True
        if x > y + tol:
            return False
    return False


class _Work:
    """A budget of elementary operations (see `OPS_PER_SECOND`), with a wall-clock
    guard."""

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.left = self.seconds * OPS_PER_SECOND
        self.guard = time.perf_counter() + WALL_FACTOR * self.seconds + WALL_SLACK

    def spend(self, ops):
        self.left -= ops

    @property
    def done(self):
        """Whether the budget (or the wall-clock guard) has run out."""
        return self.left <= 0 or time.perf_counter() >= self.guard

    def seconds_left(self):
        """The budget left, in seconds of ``time_limit``."""
        return max(0.0, self.left / OPS_PER_SECOND)


def _place(traffic, board, seed, method, time_limit, objective):
    n = traffic.shape[0]
    work = _Work(time_limit)
    hops = board.hop_matrix()
    scorer = _Scorer(traffic, board, objective, hops)
    sym = traffic + traffic.T
    identity = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    coords = board.chip_positions()
    starts = [_greedy(sym, hops, rng, coords)]
    if n <= RESTART_MAX_CHIPS:
        starts += [identity] + [_greedy(sym, hops, rng, coords) for _ in range(2)]
    candidates = [identity] + [_swap_search(sym, hops, s, work) for s in starts]
    best = min(candidates, key=scorer.hop_cost)
    if method == "exact" or (method == "auto" and _exact_is_small(n, board)):
        limit = work.seconds_left()
        if method == "auto":
            limit = min(limit, EXACT_SECONDS)
        exact = _exact_hops(sym, board, max(0.1, limit), seed, hint=best)
        if exact is not None and scorer.hop_cost(exact) < scorer.hop_cost(best):
            best = exact
    best = _link_polish(scorer, best, work)
    # Never worse than the identity placement.
    return best if not _better(scorer.key(identity), scorer.key(best)) else identity


# =================================================================== exact model
def _window(n, board):
    """Rows and columns of the position window the exact model uses."""
    rows, cols = board.mesh_shape
    return min(rows, n), min(cols, n)


def _exact_is_small(n, board):
    """Whether ``method="auto"`` solves ``n`` chips on ``board`` exactly."""
    n_rows, n_cols = _window(n, board)
    return n <= EXACT_MAX_CHIPS and n * n_rows * n_cols <= EXACT_MAX_VARS


def _normalized(pos, board):
    """``(row, col)`` of each chip with empty rows and columns closed up, translated to
    the corner and mirrored so that chip 0 lies in the first half of each axis.

    Never raises the hop-weighted cost; gives the canonical form the exact model uses.
    """
    cols = board.mesh_shape[1]
    r, c = np.divmod(np.asarray(pos, dtype=np.int64), cols)
    r = np.unique(r, return_inverse=True)[1]
    c = np.unique(c, return_inverse=True)[1]
    if 2 * r[0] > r.max():
        r = r.max() - r
    if 2 * c[0] > c.max():
        c = c.max() - c
    return r, c


def _exact_hops(sym, board, time_limit, seed, hint=None):
    """Positions minimizing the hop-weighted cost, by CP-SAT (None if none found).

    Chips go to a window of ``min(rows, n) x min(columns, n)`` positions; symmetric
    placements are cut by asking for a chip in the first row and the first column and
    for chip 0 in the first half of the occupied rows and columns (`_normalized`).
    """
    from ortools.sat.python import cp_model

    from partitioner.strategies.ilp import scale_weights

    n = sym.shape[0]
    cols = board.mesh_shape[1]
    n_rows, n_cols = _window(n, board)
    window = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    a_idx, b_idx = np.nonzero(np.triu(sym, k=1))
    wi, _, _ = scale_weights(sym[a_idx, b_idx])

    m = cp_model.CpModel()
    p = [[m.new_bool_var("") for _ in window] for _ in range(n)]
    for a in range(n):
        m.add_exactly_one(p[a])
    for q in range(len(window)):
        m.add_at_most_one(p[a][q] for a in range(n))
    row = [m.new_int_var(0, n_rows - 1, "") for _ in range(n)]
    col = [m.new_int_var(0, n_cols - 1, "") for _ in range(n)]
    for a in range(n):
        m.add(row[a] == sum(r * v for (r, _), v in zip(window, p[a]) if r))
        m.add(col[a] == sum(c * v for (_, c), v in zip(window, p[a]) if c))
    for coord, size, axis in ((row, n_rows, 0), (col, n_cols, 1)):
        top = m.new_int_var(0, size - 1, "")
        m.add_max_equality(top, coord)
        m.add(2 * coord[0] <= top)
        m.add(sum(v for a in range(n) for q, v in enumerate(p[a])
                  if window[q][axis] == 0) >= 1)
    terms = []
    for a, b, w in zip(a_idx, b_idx, wi):
        for coord, size in ((row, n_rows), (col, n_cols)):
            dist = m.new_int_var(0, size - 1, "")
            m.add(dist >= coord[a] - coord[b])
            m.add(dist >= coord[b] - coord[a])
            terms.append(int(w) * dist)
    m.minimize(sum(terms))
    if hint is not None:
        hr, hc = _normalized(hint, board)
        for a in range(n):
            for q, (r, c) in enumerate(window):
                m.add_hint(p[a][q], r == hr[a] and c == hc[a])
    from partitioner.strategies.ilp import DETERMINISTIC_TIME_PER_SECOND

    solver = cp_model.CpSolver()
    # One worker and a limit on work, not time: the same answer on every run.
    solver.parameters.max_deterministic_time = (
        float(time_limit) * DETERMINISTIC_TIME_PER_SECOND)
    solver.parameters.max_time_in_seconds = 10 * float(time_limit)
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = int(seed)
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    pos = np.empty(n, dtype=np.int64)
    for a in range(n):
        q = next(q for q, v in enumerate(p[a]) if solver.boolean_value(v))
        r, c = window[q]
        pos[a] = r * cols + c
    return pos


# ================================================================ heuristic
def _greedy(sym, hops, rng, coords):
    """Chips placed one by one, most-connected first, each where it adds least cost.

    ``hops`` is the Manhattan distance between the positions at ``coords`` (row,
    column; `BoardSpec.hop_matrix`), so a chip's cost at every position is a row term
    plus a column term, kept per chip as its traffic to placed chips per row and per
    column (`_ManhattanCost`): each step costs O(rows^2 + columns^2 + positions)
    instead of O(chips x positions).
    """
    n = sym.shape[0]
    hops = hops.astype(np.float64)
    n_pos = hops.shape[0]
    centre = hops.sum(axis=1)
    # Ties go to central positions, then at random.
    tie = (centre / max(centre.max(), 1.0) + 1e-3 * rng.random(n_pos)) * 1e-6
    scale = max(float(sym.max()), 1e-12)
    cost_of = _ManhattanCost(n, coords)
    conn = np.zeros(n)
    strength = sym.sum(axis=1)
    free = np.ones(n_pos, dtype=bool)
    placed = np.zeros(n, dtype=bool)
    pos = np.empty(n, dtype=np.int64)
    for _ in range(n):
        score = np.where(placed, -np.inf, conn + 1e-9 * strength)
        a = int(np.argmax(score))
        cost = np.where(free, cost_of.at(a) / scale + tie, np.inf)
        q = int(np.argmin(cost))
        pos[a], placed[a], free[q] = q, True, False
        nbrs = np.flatnonzero(sym[:, a])
        cost_of.add(nbrs, sym[nbrs, a], q)
        conn[nbrs] += sym[nbrs, a]
    return pos


class _ManhattanCost:
    """Per chip, the hop-weighted traffic to the placed chips at every position, kept
    as its traffic to placed chips in each row and in each column."""

    def __init__(self, n, coords):
        self.row, self.col = coords[:, 0], coords[:, 1]
        rows, cols = int(self.row.max()) + 1, int(self.col.max()) + 1
        span_r, span_c = np.arange(rows), np.arange(cols)
        self.row_dist = np.abs(span_r[:, None] - span_r[None, :]).astype(np.float64)
        self.col_dist = np.abs(span_c[:, None] - span_c[None, :]).astype(np.float64)
        self.by_row = np.zeros((n, rows))
        self.by_col = np.zeros((n, cols))

    def at(self, a):
        """Cost of chip ``a`` at every position."""
        return (self.by_row[a] @ self.row_dist)[self.row] + \
            (self.by_col[a] @ self.col_dist)[self.col]

    def add(self, chips, weights, q):
        """A chip placed at ``q`` exchanges ``weights`` with ``chips``."""
        self.by_row[chips, self.row[q]] += weights
        self.by_col[chips, self.col[q]] += weights


def _swap_search(sym, hops, start, work):
    """Best-improvement pairwise swaps of positions (empty positions included).

    Chips and empty positions form a permutation of all board positions; swapping two
    entries changes the cost by ``M[a,b] + M[b,a] - M[a,a] - M[b,b] + 2 S[a,b] D[a,b]``
    with ``D`` the hop matrix of the current positions and ``M = S @ D``, which is
    updated in O(positions^2) per swap.
    """
    n = sym.shape[0]
    hops = hops.astype(np.float64)
    n_pos = hops.shape[0]
    perm = np.concatenate([start, np.setdiff1d(np.arange(n_pos), start)])
    S = np.zeros((n_pos, n_pos))
    S[:n, :n] = sym
    D = hops[np.ix_(perm, perm)]
    M = np.zeros_like(D)
    M[:n] = S[:n] @ D  # rows past the chips stay 0
    tol = _TOL * max(float((S * D).sum()), 1.0)
    step = SWAP_OPS + n_pos * (n + n_pos)
    while not work.done:
        work.spend(step)
        a, b, best = _best_swap(M, S, D, n)
        if best >= -tol:
            break
        perm[a], perm[b] = perm[b], perm[a]
        M, D = _swap_update(S, M, D, hops, perm, a, b, n)
    return perm[:n].copy()


@njit(cache=True)
def _best_swap(M, S, D, n):
    """``(a, b, delta)``: the swap of entries ``a < n`` and ``b`` of the permutation
    that lowers the cost most (`_swap_search`), the first in row-major order among
    equals, as ``np.argmin`` over the whole delta matrix would find it, without
    building that matrix (chips x positions) at every step."""
    n_pos = M.shape[1]
    best, best_a, best_b = np.inf, 0, 0
    for a in range(n):
        m_aa = M[a, a]
        for b in range(n_pos):
            # Same operations in the same order as the array expression
            # M + M.T - diag[:, None] - diag[None, :] + 2 * S * D.
            delta = M[a, b] + M[b, a] - m_aa - M[b, b] + 2 * S[a, b] * D[a, b]
            if delta < best:
                best, best_a, best_b = delta, a, b
    return best_a, best_b, best


def _swap_update(S, M, D, hops, perm, a, b, n):
    """``M = S @ D`` and ``D`` after entries ``a`` and ``b`` of ``perm`` swapped (both
    updated in place). Only the first ``n`` rows of ``S`` (the chips) are non-zero,
    so only those rows of ``M`` change."""
    new_rows = hops[perm[[a, b]]][:, perm]          # D rows a, b after the swap
    delta_rows = new_rows - D[[a, b]]               # change of rows a, b (and cols)
    M[:n] += S[:n, [a, b]] @ delta_rows             # rows a, b of D changed
    col_change = delta_rows.T.copy()                # columns a, b of D changed ...
    col_change[[a, b]] = 0.0                        # ... except rows a, b (done above)
    M[:n, [a, b]] += S[:n] @ col_change
    D[[a, b]] = new_rows
    D[:, [a, b]] = new_rows.T
    return M, D


# ========================================================== link-load polishing
def _link_polish(scorer, pos, work, max_rounds=200, radius=2):
    """Move chips whose flows cross the busiest link while the score improves.

    Candidates: each endpoint chip of the heaviest flows on the busiest link, moved to
    (or swapped with the chip at) every position within ``radius`` hops. A trial
    re-routes only the flows of the chips it moves (`_Loads`).
    """
    pos = pos.copy()
    loads = _Loads(scorer, pos)
    best = loads.key(pos)
    hops = scorer.hops
    score_ops = SCORE_OPS + scorer.flows[0].size * sum(scorer.mesh)
    for _ in range(max_rounds):
        if work.done:
            break
        hot = int(np.argmax(loads.loads))
        if loads.loads[hot] <= 0:
            break
        improved = False
        for a in _chips_on_link(scorer, pos, hot):
            at = {int(q): i for i, q in enumerate(pos)}
            for q in np.flatnonzero(hops[pos[a]] <= radius):
                if q == pos[a] or work.done:
                    continue
                work.spend(score_ops)
                trial = pos.copy()
                other = at.get(int(q))
                moved = [a] if other is None else [a, other]
                if other is not None:
                    trial[other] = pos[a]
                trial[a] = q
                key, trial_loads, trial_hop = loads.trial(trial, moved)
                if _better(key, best):
                    pos, best, improved = trial, key, True
                    loads.accept(trial, trial_loads, trial_hop)
                    break
            if improved:
                break
        if not improved:
            break
    return pos


class _Loads:
    """Link loads and hop-weighted cost of a placement, updated for trial moves by
    re-routing only the flows of the chips that move."""

    def __init__(self, scorer, pos):
        self.scorer = scorer
        src, dst, _ = scorer.flows
        n = scorer.traffic.shape[0]
        # Flows by source chip and by target chip (CSR-like), for `_flows_of`.
        self.ends = [(np.argsort(end, kind="stable"),
                      np.searchsorted(np.sort(end), np.arange(n + 1))) for end in (src, dst)]
        self.pos = pos.copy()
        self.loads = scorer.loads(pos)
        self.hop = scorer.hop_cost(pos)

    def key(self, pos):
        return self.scorer.ordered(self.hop, float(self.loads.max()))

    def _routed(self, pos, flows):
        src, dst, w = self.scorer.flows
        flow, link = xy_route(pos[src[flows]], pos[dst[flows]], self.scorer.mesh)
        loads = np.bincount(link, weights=w[flows][flow], minlength=self.loads.size)
        hop = float((w[flows] * self.scorer.hops[pos[src[flows]], pos[dst[flows]]]).sum())
        return loads, hop

    def trial(self, trial, moved):
        """``(key, loads, hop cost)`` after the chips ``moved`` go to ``trial``."""
        flows = np.unique(np.concatenate([order[bounds[c]:bounds[c + 1]]
                                          for order, bounds in self.ends for c in moved]))
        old_loads, old_hop = self._routed(self.pos, flows)
        new_loads, new_hop = self._routed(trial, flows)
        loads = self.loads - old_loads + new_loads
        hop = self.hop - old_hop + new_hop
        return self.scorer.ordered(hop, float(loads.max())), loads, hop

    def accept(self, pos, loads, hop):
        self.pos, self.loads, self.hop = pos, loads, hop


def _chips_on_link(scorer, pos, link, top=4):
    """Endpoint chips of the heaviest flows routed over ``link``."""
    src, dst, w = scorer.flows
    through = np.flatnonzero(_uses_link(pos[src], pos[dst], link, scorer.mesh[1]))
    heavy = through[np.argsort(-w[through], kind="stable")[:top]]
    chips = []
    for f in heavy:
        for c in (int(src[f]), int(dst[f])):
            if c not in chips:
                chips.append(c)
    return chips


def _uses_link(src_pos, dst_pos, link, cols):
    """Whether each flow's X-then-Y route (`partitioner.metrics.xy_route`) takes
    ``link`` (``position * 4 + direction``), without routing the flows."""
    (r, c), direction = divmod(link // 4, cols), link % 4
    r0, c0 = np.divmod(src_pos, cols)
    r1, c1 = np.divmod(dst_pos, cols)
    if direction == 0:    # east along row r0, columns c0 .. c1 - 1
        return (r0 == r) & (c0 <= c) & (c < c1)
    if direction == 1:    # west along row r0, columns c0 .. c1 + 1
        return (r0 == r) & (c1 < c) & (c <= c0)
    if direction == 2:    # south along column c1, rows r0 .. r1 - 1
        return (c1 == c) & (r0 <= r) & (r < r1)
    return (c1 == c) & (r1 < r) & (r <= r0)    # north along column c1
