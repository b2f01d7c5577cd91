"""Tests of partitioner.metrics on real nengo-loihi models and synthetic graphs.

Networks are built by nengo-loihi itself and allocated by its own allocators; our
measures are checked against ``estimate_interchip_activity``.
"""

import json
import math
import time
import warnings

import nengo
import nengo_loihi
import numpy as np
import pytest
import scipy.sparse as sp
from nengo_loihi.hardware.allocators import (
    Greedy,
    GreedyInterchip,
    RoundRobin,
    estimate_interchip_activity,
)
from nengo_loihi.hardware.nxsdk_objects import Board

from partitioner import metrics
from partitioner.errors import PlanError
from partitioner.extract import extract
from partitioner.graph import CONFIG_KINDS, TrafficGraph
from partitioner.hardware import BoardSpec, CoreLimits, get_board
from partitioner.metrics import (
    board_to_plan,
    chip_lower_bound,
    core_lower_bound,
    evaluate,
    interchip_axons,
    lower_bounds,
)
from partitioner.plan import Plan


# ---------------------------------------------------------------- networks
def _transform(rng, n, m):
    return rng.choice([-1, 1], size=(n, m)) * rng.uniform(0.5, 1.0, size=(n, m))


def random_network(n_ens=40, n_conns=60, seed=0):
    """Ensembles of random sizes with random decoded and neuron-to-neuron connections."""
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: np.sin(t * np.arange(1, 3)), label="stim")
        ens = [
            nengo.Ensemble(int(rng.randint(10, 300)), int(rng.randint(1, 3)), label=f"e{i}")
            for i in range(n_ens)
        ]
        for e in ens[:4]:
            nengo.Connection(stim, e, transform=_transform(rng, e.dimensions, 2))
        for _ in range(n_conns):
            a, b = (ens[i] for i in rng.randint(n_ens, size=2))
            nengo.Connection(a, b, transform=_transform(rng, b.dimensions, a.dimensions))
        for _ in range(n_conns // 6):
            a, b = (ens[i] for i in rng.randint(n_ens, size=2))
            nengo.Connection(
                a.neurons, b.neurons, transform=0.01 * _transform(rng, b.n_neurons, a.n_neurons)
            )
    return net


def _relu_ensemble(n):
    return nengo.Ensemble(
        n, 1, neuron_type=nengo.SpikingRectifiedLinear(),
        gain=nengo.dists.Choice([1.0]), bias=nengo.dists.Choice([0.0]),
    )


def conv_network(seed=1):
    """Two convolution layers split into several blocks each, then a decoded output."""
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed) as net:
        nengo_loihi.add_params(net)
        shape0 = nengo.transforms.ChannelShape((12, 12, 1))
        stim = nengo.Node(rng.uniform(0, 1, size=shape0.size), label="image")
        pre = _relu_ensemble(shape0.size)
        net.config[pre].block_shape = nengo_loihi.BlockShape((6, 6, 1), shape0.shape)
        nengo.Connection(stim, pre.neurons)

        conv1 = nengo.Convolution(
            6, shape0, kernel_size=(3, 3), init=nengo.dists.Uniform(-0.5, 0.5)
        )
        a = _relu_ensemble(conv1.output_shape.size)
        net.config[a].block_shape = nengo_loihi.BlockShape((5, 5, 6), conv1.output_shape.shape)
        nengo.Connection(pre.neurons, a.neurons, transform=conv1)

        conv2 = nengo.Convolution(
            8, conv1.output_shape, kernel_size=(3, 3), strides=(2, 2),
            init=nengo.dists.Uniform(-0.5, 0.5),
        )
        b = _relu_ensemble(conv2.output_shape.size)
        net.config[b].block_shape = nengo_loihi.BlockShape((3, 3, 8), conv2.output_shape.shape)
        nengo.Connection(a.neurons, b.neurons, transform=conv2)

        out = nengo.Ensemble(50, 1)
        nengo.Connection(b.neurons, out, transform=rng.uniform(-1e-2, 1e-2, (1, b.n_neurons)))
    return net


def build_model(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
            return sim.model


@pytest.fixture(scope="module")
def models():
    return {"random": build_model(random_network()), "conv": build_model(conv_network())}


@pytest.fixture(scope="module")
def graphs(models):
    return {name: extract(model) for name, model in models.items()}


def allocate(name, model, n_chips):
    """A nengo-loihi allocator of the given name, sized so ``n_chips`` chips are used."""
    cores_per_chip = math.ceil(len(model.blocks) / n_chips)
    allocator = {
        "greedy": lambda: Greedy(cores_per_chip=cores_per_chip),
        "roundrobin": RoundRobin,
        "greedyinterchip": lambda: GreedyInterchip(cores_per_chip=cores_per_chip),
    }[name]()
    return allocator(model, n_chips)


# ------------------------------------------------------ synthetic graphs / plans
def synthetic_graph(n, src, dst, spikes, axons=None, compartments=100, **fields):
    """A TrafficGraph with the given edges and uniform small blocks."""
    axons = spikes if axons is None else axons
    res = np.zeros((n, 4), dtype=np.int64)
    res[:, 0] = compartments
    res[:, 1:3] = 10
    res[:, 3] = 1000
    kwargs = dict(
        labels=[f"b{i}" for i in range(n)],
        sources=[""] * n,
        resources=res,
        shared_synapse_bits=res[:, 3],
        configs={},
        core_key=np.zeros(n),
        noise_key=-np.ones(n),
        learning=np.zeros(n, dtype=bool),
        pop_sender=np.zeros(n, dtype=bool),
        pop16_in_limit=np.zeros(n),
        axons=sp.csr_matrix((axons, (src, dst)), shape=(n, n)),
        spikes=sp.csr_matrix((spikes, (src, dst)), shape=(n, n)),
        rates="synthetic",
    )
    kwargs.update(fields)
    return TrafficGraph(**kwargs)


def line_board(n_chips):
    return BoardSpec(f"line{n_chips}", n_chips, (1, n_chips))


# ------------------------------------------------------- against nengo-loihi
@pytest.mark.parametrize("network", ["random", "conv"])
@pytest.mark.parametrize("allocator", ["greedy", "roundrobin", "greedyinterchip"])
@pytest.mark.parametrize("n_chips", [2, 3, 4])
def test_axons_match_nengo_loihi(models, graphs, network, allocator, n_chips):
    model, graph = models[network], graphs[network]
    board = allocate(allocator, model, n_chips)
    assert board.n_chips == n_chips

    plan = board_to_plan(board, model, graph=graph, strategy=allocator)
    assert plan.n_chips == n_chips
    assert plan.cores_per_chip().tolist() == board.n_cores_per_chip
    assert plan.fingerprint == graph.fingerprint()
    plan.check_matches(graph)

    stats = estimate_interchip_activity(board)
    m = evaluate(graph, plan)
    assert interchip_axons(graph, plan) == pytest.approx(stats["interchip"], rel=1e-6)
    assert m.interchip_axons == pytest.approx(stats["interchip"], rel=1e-6)
    # nengo-loihi's "intrachip" is every on-chip pair; its allocators use one block per core.
    assert m.samecore_axons == 0
    assert m.intrachip_axons == pytest.approx(stats["intrachip"], rel=1e-6)
    assert m.chip_axons.sum() == pytest.approx(m.interchip_axons)
    assert m.link_load.sum() == pytest.approx(m.hop_weighted_cost)


def test_board_with_shared_cores_matches_nengo_loihi(models, graphs):
    """Several blocks per core (a nengo-loihi Board filled by hand): levels still add up."""
    model, graph = models["random"], graphs["random"]
    blocks = list(model.blocks)
    order = np.random.default_rng(5).permutation(len(blocks))
    board = Board()
    for k, start in enumerate(range(0, len(blocks), 3)):
        chip = board.new_chip() if k % 4 == 0 else board.chips[-1]
        core = chip.new_core()
        for i in order[start:start + 3]:
            core.add_block(blocks[i])

    plan = board_to_plan(board, model, graph=graph)
    assert np.diff(plan.core_ptr).max() == 3
    stats = estimate_interchip_activity(board)
    m = evaluate(graph, plan, board="pohoiki_beach")
    assert m.samecore_axons > 0
    assert m.interchip_axons == pytest.approx(stats["interchip"], rel=1e-6)
    assert m.samecore_axons + m.intrachip_axons == pytest.approx(stats["intrachip"], rel=1e-6)


def test_board_to_plan_accepts_block_list_and_keeps_core_order(models):
    model = models["random"]
    board = allocate("greedyinterchip", model, 3)
    plan = board_to_plan(board, list(model.blocks))
    blocks_in_board_order = [
        block for chip in board.chips for core in chip.cores for block in core.blocks
    ]
    blocks = list(model.blocks)
    assert [blocks[i] for i in plan.layout] == blocks_in_board_order
    assert plan.fingerprint == ""
    assert plan.strategy == "nengo-loihi"
    assert get_board(plan.board).n_chips >= 3


def test_board_to_plan_rejects_another_model(models):
    board = allocate("greedy", models["random"], 2)
    with pytest.raises(PlanError, match="not in the given model"):
        board_to_plan(board, models["conv"])
    with pytest.raises(PlanError, match="model has"):
        board_to_plan(board, list(models["random"].blocks) + list(models["conv"].blocks))


def test_real_model_metrics_are_consistent(models, graphs):
    model, graph = models["random"], graphs["random"]
    plan = board_to_plan(allocate("roundrobin", model, 4), model, graph=graph)
    m = evaluate(graph, plan, board="nahuku8")
    assert m.board == "nahuku8"
    assert m.n_blocks == len(model.blocks) == m.n_cores
    total = m.samecore_spikes + m.intrachip_spikes + m.interchip_spikes
    assert total == pytest.approx(graph.spikes.sum())
    assert m.host_input_spikes.sum() == pytest.approx(graph.input_spikes.sum())
    assert m.chip_compartments.sum() == graph.compartments.sum()
    np.testing.assert_allclose(
        m.core_utilization[:, 0], graph.compartments[plan.layout] / 1024
    )
    assert 0 < m.mean_core_load <= m.max_core_load <= 1
    assert m.chip_core_fraction.tolist() == (plan.cores_per_chip() / 128).tolist()
    assert m.energy_pj > 0 and m.time_ns > 0
    json.dumps(m.to_dict(per_core=True))


# ------------------------------------------------------------ mesh routing
def test_three_chip_line_hops_and_link_loads():
    # blocks 0, 1, 2 on chips 0, 1, 2 at positions 0, 1, 2 of a 1 x 3 mesh
    src, dst, spikes = [0, 2, 1, 0], [2, 0, 2, 1], [5.0, 1.0, 3.0, 2.0]
    graph = synthetic_graph(3, src, dst, spikes, axons=[1.0, 1.0, 1.0, 1.0])
    plan = Plan.from_assignment([0, 1, 2], [0, 1, 2], board="line3")
    m = evaluate(graph, plan, board=line_board(3))

    assert m.chip_hops.tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    assert m.hop_weighted_cost == 5 * 2 + 1 * 2 + 3 * 1 + 2 * 1
    assert m.max_hops == 2
    east, west = 0, 1
    expected = np.zeros(3 * 4)
    expected[0 * 4 + east] = 5 + 2  # 0->2 and 0->1 leave chip 0 eastwards
    expected[1 * 4 + east] = 5 + 3  # 0->2 and 1->2
    expected[2 * 4 + west] = 1  # 2->0
    expected[1 * 4 + west] = 1
    np.testing.assert_allclose(m.link_load, expected)
    assert m.max_link_load == 8
    assert m.link_load.sum() == m.hop_weighted_cost
    assert m.links()[0] == {
        "link": 4 + east, "from": [0, 1], "to": [0, 2], "direction": "east", "spikes": 8.0
    }
    assert m.interchip_axons == 4 and m.interchip_spikes == 11
    assert m.chip_spikes[0, 2] == 5 and m.chip_spikes[2, 0] == 1


def test_chip_positions_change_hops():
    graph = synthetic_graph(3, [0], [1], [4.0])
    plan = Plan.from_assignment([0, 1, 2], [0, 1, 2], chip_position=[0, 2, 1])
    m = evaluate(graph, plan, board=line_board(3))
    assert m.chip_hops[0, 1] == 2
    assert m.hop_weighted_cost == 8
    assert m.link_load[0 * 4 + 0] == 4 and m.link_load[1 * 4 + 0] == 4


def test_routing_is_x_then_y():
    # 2 x 2 mesh: position 0 = (0, 0), 3 = (1, 1); XY goes east on row 0, then south.
    flow, link = metrics.xy_route([0, 3], [3, 0], (2, 2))
    route0 = sorted(link[flow == 0].tolist())
    route1 = sorted(link[flow == 1].tolist())
    assert route0 == [0 * 4 + 0, 1 * 4 + 2]  # (0,0) east, then (0,1) south
    assert route1 == [2 * 4 + 3, 3 * 4 + 1]  # (1,1) west, then (1,0) north
    ends = metrics.link_endpoints((2, 2))
    assert ends[0 * 4 + 0].tolist() == [0, 1] and ends[1 * 4 + 2].tolist() == [1, 3]
    assert ends[0 * 4 + 1].tolist() == [0, -1]


def test_link_loads_sum_to_hop_cost_on_random_plan():
    rng = np.random.default_rng(3)
    n, n_edges = 3000, 30000
    graph = synthetic_graph(
        n, rng.integers(n, size=n_edges), rng.integers(n, size=n_edges),
        rng.uniform(0, 2, size=n_edges),
    )
    board = get_board("pohoiki_beach")
    n_chips = 40
    block_core = rng.permutation(np.arange(n) % 600)
    core_chip = np.arange(600) % n_chips
    plan = Plan.from_assignment(
        block_core, core_chip, chip_position=rng.permutation(board.n_chips)[:n_chips]
    )
    m = evaluate(graph, plan, board)
    assert m.hop_weighted_cost > 0
    assert m.link_load.sum() == pytest.approx(m.hop_weighted_cost)
    # every used link is a real mesh link
    ends = metrics.link_endpoints(board.mesh_shape)
    assert np.all(ends[m.link_load > 0, 1] >= 0)


# ------------------------------------------------------------- cost model
def test_energy_and_time_formulas():
    graph = synthetic_graph(4, [0, 0, 1, 3], [1, 2, 3, 0], [1.0, 2.0, 4.0, 8.0])
    # cores: {0, 1}, {2}, {3}; chips: cores 0, 1 on chip 0, core 2 on chip 1
    plan = Plan.from_assignment([0, 0, 1, 2], [0, 0, 1])
    board = line_board(2)
    e = board.energy
    m = evaluate(graph, plan, board)
    assert (m.samecore_spikes, m.intrachip_spikes, m.interchip_spikes) == (1, 2, 12)
    assert m.hop_weighted_cost == 12 and m.max_link_load == 8 and m.max_hops == 1

    ew, ns = metrics.mean_onchip_hops(board.chip.core_mesh)
    route = e.spike_in_tile_pj + ew * e.hop_ew_pj + ns * e.hop_ns_pj
    energy = 15 * e.synop_pj + 1 * e.spike_in_tile_pj + (2 + 12) * route
    energy += 12 * e.interchip_spike_pj
    assert m.energy_pj == pytest.approx(energy)
    assert sum(m.energy_breakdown.values()) == pytest.approx(m.energy_pj)

    # Max-affine step time. Core work (synops, updates, memory words) without
    # fan-out: one op and one word per delivered spike: core 0 {0, 1} gets 8 + 1,
    # core 1 {2} 2, core 2 {3} 4; updates 200, 100, 100. Link 0 -> 1 carries 8.
    assert m.core_work.tolist() == [[9, 200, 9], [2, 100, 2], [4, 100, 4]]
    terms = {
        "synops": 9 * e.synop_ns, "updates": 200 * e.core_update_ns,
        "synmem_reads": 9 * e.synmem_word_ns,
        "link_spikes": 8 * 1000 / e.interchip_link_spikes_per_us,
    }
    assert m.time_terms == pytest.approx(terms)
    time_ns = e.barrier_sync_ns + e.interchip_hop_ns + max(terms.values())
    assert m.time_ns == pytest.approx(time_ns)
    assert sum(m.time_breakdown.values()) == pytest.approx(m.time_ns)
    assert m.bottleneck["kind"] == "core" and m.bottleneck["term"] == "updates"
    assert m.bottleneck["index"] == 0 and m.bottleneck["blocks"] == [0, 1]
    assert m.regime == "compute"
    assert m.synops == 15


def test_one_chip_has_no_link_terms():
    graph = synthetic_graph(3, [0, 1], [1, 2], [3.0, 3.0])
    plan = Plan.from_assignment([0, 1, 2], [0, 0, 0], board="kapoho_bay")
    m = evaluate(graph, plan)
    assert m.interchip_spikes == 0 and m.max_link_load == 0 and m.max_hops == 0
    assert m.time_terms["link_spikes"] == 0
    assert m.time_breakdown["interchip_latency"] == 0
    assert m.energy_breakdown["interchip_links"] == 0


def test_shared_core_uses_widened_synapse_bits_and_formats():
    n = 3
    own = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=bool))
    shared = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=bool))
    vth = sp.csr_matrix(np.eye(3, dtype=bool))
    graph = synthetic_graph(
        n, [0], [1], [1.0], shared_synapse_bits=np.full(n, 5000),
        configs={"synapse_cfgs": own, "synapse_cfgs_shared": shared, "vth_cfgs": vth},
    )
    plan = Plan.from_assignment([0, 0, 0], [0], order=[0, 1, 2])  # block 0 first
    util = metrics.core_utilization(graph, plan)
    names = metrics.UTILIZATION_NAMES
    limits = CoreLimits()
    row = dict(zip(names, util[0]))
    assert row["synapse_bits"] == pytest.approx((1000 + 5000 + 5000) / limits.synapse_bits)
    assert row["synapse_cfgs"] == pytest.approx(2 / limits.synapse_cfgs)  # keys 0 and 2
    assert row["vth_cfgs"] == pytest.approx(3 / limits.vth_cfgs)
    assert row["compartments"] == pytest.approx(300 / 1024)


# ----------------------------------------------------------- lower bounds
@pytest.mark.parametrize("network", ["random", "conv"])
def test_lower_bounds_against_greedy_interchip(models, graphs, network):
    model, graph = models[network], graphs[network]
    board = GreedyInterchip()(model, 1)
    cores_used = sum(board.n_cores_per_chip)
    lb = core_lower_bound(graph)
    assert math.ceil(graph.compartments.sum() / 1024) <= lb <= cores_used
    for n_chips in (2, 3, 4):
        small = allocate("greedyinterchip", model, n_chips)
        assert lb <= sum(small.n_cores_per_chip)
    detail = lower_bounds(graph, "nahuku8")
    assert detail["cores"] == lb
    assert detail["chips"] == chip_lower_bound(graph, "nahuku8") == 1
    assert detail["interchip_spikes"] == 0.0
    assert detail["compartments_total"] <= lb
    assert detail["rules"][detail["binding_rule"]] <= lb
    json.dumps(detail)


def test_lower_bound_rules():
    n = 12
    compartments = np.full(n, 300)
    learning = np.zeros(n, dtype=bool)
    learning[:2] = True  # alone: 2 cores
    core_key = np.array([0, 0] + [1] * 5 + [2] * 5)
    noise_key = np.array([-1, -1] + [-1] * 5 + [0, 1, 2, -1, 0])
    vth = sp.csr_matrix(np.eye(n, dtype=bool))  # every block its own threshold
    graph = synthetic_graph(
        n, [], [], [], compartments=compartments, learning=learning,
        core_key=core_key, noise_key=noise_key, configs={"vth_cfgs": vth},
    )
    limits = CoreLimits()
    # group 1: 1500 compartments -> 2 cores; group 2: 3 noise settings -> 3 cores
    assert core_lower_bound(graph, limits) == 2 + 2 + 3
    detail = lower_bounds(graph, get_board("nahuku8"))
    assert detail["alone_blocks"] == 2 and detail["groups"] == 2
    assert detail["rules"]["noise"] == 2 + 3
    assert detail["rules"]["compartments"] == 2 + 2 + 2
    assert detail["binding"]["noise"] == 1

    tight = CoreLimits(vth_cfgs=2)
    # vth: group 1 needs ceil(5/2) = 3, group 2 ceil(5/2) = 3
    assert core_lower_bound(graph, tight) == 2 + 3 + 3

    board = BoardSpec("tiny", 4, (2, 2), chip=get_board("nahuku8").chip.__class__(cores=2))
    detail = lower_bounds(graph, board)
    assert detail["chips"] == chip_lower_bound(graph, board) == math.ceil(7 / 2)
    assert detail["interchip_spikes"] is None


def test_synapse_format_bound_allows_widened_formats_to_merge():
    # 20 blocks with 20 distinct own formats that all widen to one format: one core
    # holds them all (first block's own format + the shared one), so the bound is 1.
    n = 20
    ones, rows = np.ones(n, dtype=bool), np.arange(n)
    own = sp.csr_matrix((ones, (rows, rows)), shape=(n, n + 1))
    shared = sp.csr_matrix((ones, (rows, np.full(n, n))), shape=(n, n + 1))
    graph = synthetic_graph(
        n, [], [], [], compartments=10,
        configs={"synapse_cfgs": own, "synapse_cfgs_shared": shared},
    )
    assert core_lower_bound(graph) == 1
    # formats that stay distinct when widened bind: 20 keys / (15 + 1 key per block)
    graph2 = synthetic_graph(
        n, [], [], [], compartments=10,
        configs={"synapse_cfgs": own, "synapse_cfgs_shared": own},
    )
    assert core_lower_bound(graph2) == 2


# ---------------------------------------------------------------- errors
def test_evaluate_rejects_mismatched_plans():
    graph = synthetic_graph(3, [0], [1], [1.0])
    with pytest.raises(PlanError, match="places 2 blocks"):
        evaluate(graph, Plan.from_assignment([0, 1], [0, 0]))
    plan = Plan.from_assignment([0, 1, 2], [0, 1, 2])
    with pytest.raises(PlanError, match="only 2 chip positions"):
        evaluate(graph, plan, board="kapoho_bay")


def test_sub_board_names_resolve():
    graph = synthetic_graph(3, [0], [2], [1.0])
    plan = Plan.from_assignment([0, 1, 2], [0, 1, 2], board="nahuku32[3]")
    m = evaluate(graph, plan)
    assert m.board == "nahuku32[3]" and m.mesh_shape == (1, 3)
    assert m.hop_weighted_cost == 2


# ------------------------------------------------------------------ scale
def test_large_synthetic_graph_is_fast():
    rng = np.random.default_rng(0)
    n, n_edges = 200_000, 2_000_000
    src = rng.integers(n, size=n_edges)
    dst = np.clip(src + rng.integers(-2000, 2000, size=n_edges), 0, n - 1)
    n_keys = 64
    keys = sp.csr_matrix(
        (np.ones(n, dtype=bool), (np.arange(n), rng.integers(n_keys, size=n))),
        shape=(n, n_keys),
    )
    graph = synthetic_graph(
        n, src, dst, rng.uniform(0, 1, size=n_edges),
        compartments=rng.integers(10, 200, size=n),
        configs={kind: keys for kind in CONFIG_KINDS},
        noise_key=rng.integers(-1, 3, size=n),
        core_key=rng.integers(0, 4, size=n),
    )
    board = get_board("pohoiki_springs")
    block_core = np.arange(n) // 8
    n_cores = int(block_core.max()) + 1
    core_chip = np.arange(n_cores) // 128
    plan = Plan.from_assignment(block_core, core_chip)

    t0 = time.perf_counter()
    m = evaluate(graph, plan, board)
    t1 = time.perf_counter()
    detail = lower_bounds(graph, board)
    t2 = time.perf_counter()
    print(
        f"\n{n} blocks, {graph.spikes.nnz} edges, {m.n_chips} chips: evaluate "
        f"{t1 - t0:.2f} s, lower_bounds {t2 - t1:.2f} s"
    )
    assert m.n_cores == n_cores
    assert m.link_load.sum() == pytest.approx(m.hop_weighted_cost)
    assert detail["cores"] <= n_cores
