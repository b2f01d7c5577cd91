"""Core packing against its proven lower bound where a config table sets the bound.

When blocks need few resources but many distinct threshold mantissas (7 per core),
what a core can hold is set by the keys it holds; `packing.best_fit` then packs
blocks with equal keys together (`packing.pack_groups`).
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitioner import packing
from partitioner.engine import partition
from partitioner.graph import TrafficGraph
from partitioner.hardware import CoreLimits
from partitioner.metrics import core_lower_bound, lower_bounds
from partitioner.packing import BlockKeys, CoreBin, best_fit, check_plan, core_violations, pack_groups
from partitioner.synthetic import random_graph


def threshold_bound_graph(group_sizes, compartments=20, seed=0):
    """Blocks with one threshold mantissa each, ``group_sizes[i]`` blocks sharing key i.

    Resources stay far below a core, so the 7-entry threshold table sets the bound.
    """
    rng = np.random.default_rng(seed)
    sizes = np.asarray(group_sizes)
    n = int(sizes.sum())
    key = rng.permutation(np.repeat(np.arange(sizes.size), sizes))
    res = np.zeros((n, 4), dtype=np.int64)
    res[:, :3] = compartments
    res[:, 3] = 200 * compartments

    def one_key(cols, width):
        return sp.csr_matrix((np.ones(n, bool), (np.arange(n), cols)), shape=(n, width))

    zero = np.zeros(n, dtype=np.int64)
    configs = {
        "compartment_cfgs": one_key(zero, 1), "vth_cfgs": one_key(key, sizes.size),
        "synapse_cfgs": one_key(zero, 1), "synapse_cfgs_shared": one_key(zero, 1),
        "stdp_pre_cfgs": sp.csr_matrix((n, 1), dtype=bool),
    }
    spikes = sp.csr_matrix((n, n))
    return TrafficGraph(
        labels=[f"b{i}" for i in range(n)], sources=[f"ens{k}" for k in key],
        resources=res, shared_synapse_bits=res[:, 3].copy(), configs=configs,
        core_key=zero.copy(), noise_key=np.full(n, -1), learning=np.zeros(n, bool),
        pop_sender=np.zeros(n, bool), pop16_in_limit=zero.copy(),
        axons=spikes, spikes=spikes, rates="synthetic",
    )


def assert_cores_valid(graph, cores, limits):
    placed = sorted(b for core in cores for b in core.blocks)
    assert placed == list(range(graph.n_blocks))
    for core in cores:
        assert core_violations(graph, core.blocks, limits) == []


@pytest.mark.parametrize("group_sizes", [
    [32] * 8 + [8] * 32 + [1] * 120,
    [20] * 10 + [5] * 40 + [1] * 150,
])
def test_key_groups_reach_the_threshold_table_bound(group_sizes):
    graph = threshold_bound_graph(group_sizes)
    limits = CoreLimits()
    bound = core_lower_bound(graph, limits)
    assert lower_bounds(graph, "nahuku32")["binding_rule"] == "vth_cfgs"
    cores, unplaced = best_fit(graph, np.arange(graph.n_blocks), limits, BlockKeys(graph))
    assert unplaced == []
    assert_cores_valid(graph, cores, limits)
    assert len(cores) == bound


def test_pack_groups_fails_cleanly_below_the_bound():
    graph = threshold_bound_graph([32] * 8 + [8] * 32 + [1] * 120)
    limits = CoreLimits()
    bound = core_lower_bound(graph, limits)
    assert pack_groups(graph, np.arange(graph.n_blocks), limits, BlockKeys(graph),
                       bound - 1) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(5, 120), seed=st.integers(0, 10_000), slack=st.integers(0, 3))
def test_pack_groups_never_breaks_a_rule(n, seed, slack):
    """Every rule (noise, voltage limits, blocks alone, pop16 ids, tables) holds."""
    graph = random_graph(n, seed=seed, learning_fraction=0.05, pop_sender_fraction=0.05,
                         pop16_fraction=0.1, noise_fraction=0.2,
                         second_core_key_fraction=0.3)
    limits = CoreLimits()
    keys = BlockKeys(graph)
    first, _ = best_fit(graph, np.arange(n), limits, keys)
    cores = pack_groups(graph, np.arange(n), limits, keys, max(1, len(first) - slack))
    if cores is not None:
        assert len(cores) <= len(first)
        assert_cores_valid(graph, cores, limits)


def test_spa_like_cores_within_5_percent_of_the_bound():
    """The bundled SPA-like model, whose bound the threshold table sets."""
    from partitioner.extract import extract
    from partitioner.scenario import load_scenario

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scenario = load_scenario("spa_like")
        graph = extract(scenario.network, rates=scenario.ensemble_rates, progress=False)
    bounds = lower_bounds(graph, "nahuku32")
    assert bounds["binding_rule"] == "vth_cfgs"
    plan = partition(graph, board="nahuku32")
    check_plan(graph, plan)
    assert plan.n_cores <= 1.05 * bounds["cores"]


def _parts(graph, n_parts, seed):
    """Blocks split into ``n_parts`` random parts of uneven sizes (some empty)."""
    rng = np.random.default_rng(seed)
    part = rng.integers(0, n_parts, graph.n_blocks)
    part[part == n_parts - 1] = 0  # leave the last part empty
    return [np.flatnonzero(part == p) for p in range(n_parts)]


@pytest.mark.parametrize("graph", [
    random_graph(3000, seed=21, second_core_key_fraction=0.3, noise_fraction=0.2,
                 pop16_fraction=0.1, learning_fraction=0.03, pop_sender_fraction=0.03),
    random_graph(2000, seed=22),
    threshold_bound_graph([9] * 40, seed=23),
])
def test_best_fit_many_packs_each_part_as_best_fit_does(graph):
    limits = CoreLimits()
    keys = BlockKeys(graph)
    # Output axon entries of some chip assignment, as the chip packing counts them.
    keys.set_chips(np.random.default_rng(0).integers(0, 4, graph.n_blocks))
    parts = _parts(graph, 37, seed=1)
    many = packing.best_fit_many(graph, parts, limits, keys)
    for blocks, cores in zip(parts, many):
        one = best_fit(graph, blocks, limits, keys)[0]
        assert [c.blocks for c in cores] == [c.blocks for c in one]
        assert all(core_violations(graph, c.blocks, limits, keys) == [] for c in cores)


def _reference_best_fit(graph, order, limits, keys):
    """Best fit with `CoreBin` alone: each block of ``order`` to the fullest core that
    `CoreBin.fits` it (ties to the earliest), else a new core."""
    cores = []
    for b in order.tolist():
        fitting = [c for c in cores if c.fits(b)]
        if fitting:
            core = max(fitting, key=lambda c: 1.0 + c.fill)
        else:
            core = CoreBin(graph, limits, keys)
            cores.append(core)
        core.add(b)
    return cores


@pytest.mark.parametrize("graph", [
    random_graph(1500, seed=31, second_core_key_fraction=0.3, noise_fraction=0.3,
                 pop16_fraction=0.2, learning_fraction=0.03, pop_sender_fraction=0.03),
    random_graph(800, seed=32),
    threshold_bound_graph([9] * 30 + [3] * 20, seed=33),
])
def test_compiled_best_fit_equals_best_fit_with_corebin(graph):
    """The compiled packing makes the same cores, in the same order, with the same
    usage and tables as best fit written with `CoreBin.fits` and `CoreBin.add`."""
    limits = CoreLimits()
    keys = BlockKeys(graph)
    keys.set_chips(np.random.default_rng(1).integers(0, 3, graph.n_blocks))
    parts = _parts(graph, 5, seed=2)
    orders = [packing._decreasing(p, keys.sizes(limits)) for p in parts]
    for order, (cores, unplaced, _) in zip(
            orders, packing._CompiledParts(graph, limits, keys, orders).parts):
        expected = _reference_best_fit(graph, order, limits, keys)
        assert unplaced == []
        assert [c.blocks for c in cores] == [c.blocks for c in expected]
        for got, want in zip(cores, expected):
            assert (got.used, got.tables, got.core_key, got.noise_key, got.alone,
                    got.interchip) == (want.used, want.tables, want.core_key,
                                       want.noise_key, want.alone, want.interchip)


def test_fits_agrees_with_violations():
    graph = random_graph(1500, seed=24, second_core_key_fraction=0.3, noise_fraction=0.3,
                         pop16_fraction=0.2, learning_fraction=0.05,
                         pop_sender_fraction=0.05)
    limits = CoreLimits()
    keys = BlockKeys(graph)
    keys.set_chips(np.random.default_rng(1).integers(0, 3, graph.n_blocks))
    rng = np.random.default_rng(2)
    checked = broken = 0
    for _ in range(300):
        core = packing.CoreBin(graph, limits, keys)
        for b in rng.permutation(graph.n_blocks)[:40].tolist():
            fits = core.fits(b)
            assert fits == (core.violations(b) == [])
            checked += 1
            broken += not fits
            if fits:
                core.add(b)
    assert 0 < broken < checked
