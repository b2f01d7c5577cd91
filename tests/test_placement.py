"""Tests of chip placement on the board mesh (partitioner/placement.py)."""

import itertools
import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.engine import partition
from partitioner.errors import PlanError
from partitioner.graph import TrafficGraph
from partitioner.hardware import ChipSpec, get_board
from partitioner.metrics import chip_traffic, evaluate
from partitioner.placement import (
    WALL_FACTOR,
    WALL_SLACK,
    place_chips,
    placement_cost,
    placement_report,
)
from partitioner.plan import Plan
from partitioner.synthetic import random_graph


# ------------------------------------------------------------------ helpers
def one_block_per_chip(spikes, board="nahuku32", objective="spikes"):
    """A graph of ``n`` one-compartment blocks and a plan with block ``i`` on chip ``i``."""
    spikes = sp.csr_matrix(np.asarray(spikes, dtype=float))
    n = spikes.shape[0]
    empty = sp.csr_matrix((n, 1), dtype=bool)
    graph = TrafficGraph(
        labels=[f"b{i}" for i in range(n)], sources=[f"s{i}" for i in range(n)],
        resources=np.ones((n, 4), dtype=np.int64), shared_synapse_bits=np.ones(n),
        configs={k: empty for k in ("compartment_cfgs", "vth_cfgs", "synapse_cfgs",
                                    "synapse_cfgs_shared", "stdp_pre_cfgs")},
        core_key=np.zeros(n), noise_key=np.full(n, -1), learning=np.zeros(n, bool),
        pop_sender=np.zeros(n, bool), pop16_in_limit=np.zeros(n),
        axons=(spikes > 0).astype(float), spikes=spikes, rates="synthetic",
    )
    plan = Plan.from_assignment(np.arange(n), np.arange(n), board=board,
                                fingerprint=graph.fingerprint(), objective=objective)
    return graph, plan


def random_traffic(n, density, seed):
    rng = np.random.default_rng(seed)
    t = rng.exponential(5.0, (n, n)) * (rng.random((n, n)) < density)
    np.fill_diagonal(t, 0.0)
    return t


def clustered_traffic(n, seed, group=4):
    """Chips talk mostly within groups of ``group``; ids shuffled so identity is poor."""
    rng = np.random.default_rng(seed)
    t = np.zeros((n, n))
    for a in range(n):
        mates = (a // group) * group + np.arange(group)
        t[a, mates] = rng.exponential(20.0, group)
        t[a, rng.integers(0, n, 2)] += rng.exponential(1.0, 2)
    np.fill_diagonal(t, 0.0)
    perm = rng.permutation(n)
    return t[np.ix_(perm, perm)]


def hop_cost(graph, plan, board, positions):
    return placement_cost(chip_traffic(graph, plan), positions, board)["hop_weighted_cost"]


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_placement_matches_brute_force_on_4_chips(seed):
    board = get_board("nahuku8")                         # 2 x 4 mesh
    graph, plan = one_block_per_chip(random_traffic(4, 0.8, seed), "nahuku8")
    traffic = chip_traffic(graph, plan)
    hops = board.hop_matrix()
    best = min(
        (traffic * hops[np.ix_(p, p)]).sum()
        for p in map(list, itertools.permutations(range(board.n_chips), 4))
    )
    pos = place_chips(graph, plan, board, method="exact")
    assert len(set(pos.tolist())) == 4 and pos.max() < board.n_chips
    assert hop_cost(graph, plan, board, pos) == pytest.approx(best)


# ------------------------------------------------------------ never worse
@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 24), density=st.floats(0.05, 1.0), seed=st.integers(0, 10_000),
       board=st.sampled_from(["nahuku8", "nahuku32"]), objective=st.sampled_from(
           ["spikes", "max_link"]))
def test_placement_never_worse_than_identity(n, density, seed, board, objective):
    board = get_board(board)
    if n > board.n_chips:
        n = board.n_chips
    graph, plan = one_block_per_chip(random_traffic(n, density, seed), board.name,
                                     objective)
    pos = place_chips(graph, plan, board, seed=seed, time_limit=1.0)
    assert sorted(set(pos.tolist())) == sorted(pos.tolist())
    assert pos.min() >= 0 and pos.max() < board.n_chips
    traffic = chip_traffic(graph, plan)
    ours = placement_cost(traffic, pos, board)
    ident = placement_cost(traffic, np.arange(n), board)
    key = ("hop_weighted_cost", "max_link_load")
    if objective == "max_link":
        key = key[::-1]
    assert tuple(ours[k] for k in key) <= tuple(ident[k] + 1e-9 * max(1, ident[k])
                                                 for k in key)


def test_placement_lowers_hop_cost_on_clustered_graph_nahuku32():
    board = get_board("nahuku32").replace(chip=ChipSpec(cores=16))
    graph = random_graph(1500, seed=4, cluster_size=(20, 60))
    plan = partition(graph, board=board)
    assert 20 <= plan.n_chips <= 32
    placed = evaluate(graph, plan, board).hop_weighted_cost
    identity = hop_cost(graph, plan, board, np.arange(plan.n_chips))
    assert placed < 0.9 * identity
    report = placement_report(graph, plan, board, positions=plan.chip_position)
    assert report["placed"]["hop_weighted_cost"] == pytest.approx(placed)
    assert report["hop_ratio_vs_identity"] < 0.9
    assert report["hop_ratio_vs_random"] < 1.0


def test_clustered_traffic_heuristic_beats_identity_clearly():
    board = get_board("pohoiki_beach")
    graph, plan = one_block_per_chip(clustered_traffic(64, 0), board.name)
    pos = place_chips(graph, plan, board, method="heuristic", time_limit=3.0)
    ident = hop_cost(graph, plan, board, np.arange(64))
    assert hop_cost(graph, plan, board, pos) < 0.6 * ident


def test_768_chips_on_pohoiki_springs_in_seconds():
    board = get_board("pohoiki_springs")
    graph, plan = one_block_per_chip(clustered_traffic(768, 1, group=8), board.name)
    t0 = time.perf_counter()
    pos = place_chips(graph, plan, board, time_limit=5.0)
    elapsed = time.perf_counter() - t0
    # The searches stop after a fixed amount of work; a wall-clock guard bounds them.
    assert elapsed < WALL_FACTOR * 5.0 + WALL_SLACK + 2.0
    assert len(set(pos.tolist())) == 768
    ident = hop_cost(graph, plan, board, np.arange(768))
    assert hop_cost(graph, plan, board, pos) < 0.5 * ident


# ------------------------------------------------------------- objectives
def test_max_link_objective_lowers_the_busiest_link():
    board = get_board("nahuku32")
    graph, plan = one_block_per_chip(clustered_traffic(24, 3, group=6), board.name)
    traffic = chip_traffic(graph, plan)
    by_hops = place_chips(graph, plan, board, objective="spikes")
    by_link = place_chips(graph, plan, board, objective="max_link")
    link = placement_cost(traffic, by_link, board)
    assert link["max_link_load"] <= placement_cost(traffic, by_hops, board)["max_link_load"]
    assert link["max_link_load"] <= placement_cost(traffic, np.arange(24), board)[
        "max_link_load"]


def test_chips_objective_keeps_identity():
    graph, plan = one_block_per_chip(random_traffic(6, 0.5, 0), "nahuku8", "chips")
    assert np.array_equal(place_chips(graph, plan, "nahuku8"), np.arange(6))


def test_partition_objectives_place_chips():
    board = get_board("nahuku32").replace(chip=ChipSpec(cores=16))
    graph = random_graph(600, seed=5)
    plans = {obj: partition(graph, board=board, objective=obj)
             for obj in ("spikes", "max_link", "chips")}
    spikes, max_link, chips = (plans[o] for o in ("spikes", "max_link", "chips"))
    assert np.array_equal(chips.chip_position, np.arange(chips.n_chips))
    assert chips.objective_value == chips.n_chips
    assert max_link.objective_value == pytest.approx(
        evaluate(graph, max_link, board).max_link_load)
    ident = hop_cost(graph, spikes, board, np.arange(spikes.n_chips))
    assert evaluate(graph, spikes, board).hop_weighted_cost <= ident + 1e-9


def test_placement_report_has_three_placements():
    graph, plan = one_block_per_chip(clustered_traffic(16, 2), "nahuku32")
    report = placement_report(graph, plan, "nahuku32", seed=1)
    for name in ("identity", "random", "placed"):
        assert set(report[name]) >= {"hop_weighted_cost", "max_link_load", "positions"}
    assert report["identity"]["positions"] == list(range(16))
    assert report["hop_ratio_vs_identity"] <= 1.0


def test_plan_larger_than_board_raises():
    graph, plan = one_block_per_chip(random_traffic(4, 0.5, 0), "kapoho_bay")
    with pytest.raises(PlanError, match="positions"):
        place_chips(graph, plan, "kapoho_bay")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 7), n_flows=st.integers(1, 40),
       seed=st.integers(0, 10_000))
def test_links_a_route_takes_are_found_without_routing(rows, cols, n_flows, seed):
    """`_uses_link` agrees with the routed steps of `metrics.xy_route` on every link."""
    from partitioner.metrics import xy_route
    from partitioner.placement import _uses_link

    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, rows * cols, (2, n_flows))
    flow, links = xy_route(src, dst, (rows, cols))
    for link in range(rows * cols * 4):
        expected = np.unique(flow[links == link])
        assert np.array_equal(np.flatnonzero(_uses_link(src, dst, link, cols)), expected)


def test_trial_moves_update_loads_as_a_full_recount():
    """`_Loads.trial` (only the moved chips' flows re-routed) equals routing all flows."""
    from partitioner.placement import _Loads, _Scorer

    board = get_board("nahuku32")
    rng = np.random.default_rng(3)
    n = 12
    traffic = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    np.fill_diagonal(traffic, 0.0)
    scorer = _Scorer(traffic, board, "spikes", board.hop_matrix())
    pos = rng.permutation(board.n_chips)[:n]
    loads = _Loads(scorer, pos)
    for _ in range(20):
        trial = pos.copy()
        a, b = rng.choice(n, 2, replace=False)
        trial[a], trial[b] = pos[b], pos[a]
        key, trial_loads, hop = loads.trial(trial, [a, b])
        assert np.allclose(trial_loads, scorer.loads(trial))
        assert np.isclose(hop, scorer.hop_cost(trial))
        assert np.allclose(key, scorer.key(trial))
        loads.accept(trial, trial_loads, hop)
        pos = trial


@pytest.mark.parametrize("board_name, n", [("nahuku32", 20), ("pohoiki_springs", 150)])
def test_greedy_placement_on_a_mesh_equals_summing_hops(board_name, n):
    """The greedy start keeps each chip's traffic per row and column; it places chips
    exactly where summing hop-weighted traffic over every placed chip would."""
    from partitioner.placement import _greedy

    board = get_board(board_name)
    hops = board.hop_matrix().astype(np.float64)
    rng = np.random.default_rng(7)
    sym = rng.random((n, n)) * (rng.random((n, n)) < 0.2)
    sym = sym + sym.T
    np.fill_diagonal(sym, 0.0)

    def summing_hops(rng):
        n_pos = hops.shape[0]
        centre = hops.sum(axis=1)
        tie = (centre / max(centre.max(), 1.0) + 1e-3 * rng.random(n_pos)) * 1e-6
        scale = max(float(sym.max()), 1e-12)
        acc, conn, strength = np.zeros((n, n_pos)), np.zeros(n), sym.sum(axis=1)
        free, placed = np.ones(n_pos, dtype=bool), np.zeros(n, dtype=bool)
        pos = np.empty(n, dtype=np.int64)
        for _ in range(n):
            a = int(np.argmax(np.where(placed, -np.inf, conn + 1e-9 * strength)))
            q = int(np.argmin(np.where(free, acc[a] / scale + tie, np.inf)))
            pos[a], placed[a], free[q] = q, True, False
            nbrs = np.flatnonzero(sym[:, a])
            acc[nbrs] += sym[nbrs, a][:, None] * hops[q][None, :]
            conn[nbrs] += sym[nbrs, a]
        return pos

    expected = summing_hops(np.random.default_rng(1))
    got = _greedy(sym, hops, np.random.default_rng(1), board.chip_positions())
    assert np.array_equal(got, expected)


def test_best_swap_equals_argmin_of_the_delta_matrix():
    from partitioner.placement import _best_swap

    rng = np.random.default_rng(8)
    for n, n_pos in [(1, 1), (3, 8), (12, 16), (30, 64)]:
        S = np.zeros((n_pos, n_pos))
        S[:n, :n] = rng.integers(0, 4, (n, n)) * 0.5
        D = rng.integers(0, 6, (n_pos, n_pos)).astype(float)
        M = np.zeros((n_pos, n_pos))
        M[:n] = S[:n] @ D
        diag = np.diag(M)
        delta = M[:n] + M.T[:n] - diag[:n, None] - diag[None, :] + 2 * S[:n] * D[:n]
        a, b = divmod(int(np.argmin(delta)), n_pos)
        assert _best_swap(M, S, D, n) == (a, b, delta[a, b])
