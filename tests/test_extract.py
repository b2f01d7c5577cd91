"""Extraction of traffic graphs from real nengo-loihi builds, and synthetic graphs."""

import json
import re
import warnings

import nengo
import nengo_loihi
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nengo_loihi.hardware.allocators import (
    RoundRobin,
    ensemble_to_block_rates,
    estimate_interblock_activity,
    estimate_interchip_activity,
)

from partitioner import formats
from partitioner.errors import BlockTooLargeError, ExtractionError
from partitioner.extract import block_sources, build_model, extract
from partitioner.graph import CONFIG_KINDS, TrafficGraph
from partitioner.hardware import CoreLimits
from partitioner.shapes import suggest_block_shape
from partitioner.synthetic import random_graph

pytestmark = pytest.mark.filterwarnings("ignore")


# ------------------------------------------------------------------ networks
def net_decoded():
    """Node input, decoded connections, a split ensemble, a function, a probe."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t), label="stim")
        a = nengo.Ensemble(100, 1, label="a")
        b = nengo.Ensemble(1500, 2, label="b")
        c = nengo.Ensemble(50, 1, label="c")
        nengo.Connection(stim, a)
        nengo.Connection(a, b, transform=[[1], [0.5]])
        nengo.Connection(b, c, function=lambda x: x[0] * x[1])
        nengo.Probe(c, synapse=0.01)
    return net


def net_weights():
    """Weight-solver and neuron-to-neuron connections only (no decode neurons)."""
    with nengo.Network(seed=1) as net:
        a = nengo.Ensemble(200, 1, label="a")
        b = nengo.Ensemble(1100, 1, label="b")
        c = nengo.Ensemble(60, 1, label="c")
        nengo.Connection(a, b, solver=nengo.solvers.LstsqL2(weights=True))
        nengo.Connection(b.neurons, c.neurons, transform=np.full((60, 1100), 1e-3))
        nengo.Connection(c.neurons, a.neurons, transform=np.full((200, 60), 1e-3))
        nengo.Connection(c.neurons, c.neurons, transform=np.eye(60) * 0.01)
    return net


def net_learning():
    """PES learning: the decode block of the learned connection has learning synapses."""
    with nengo.Network(seed=2) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre = nengo.Ensemble(100, 1, label="pre")
        post = nengo.Ensemble(80, 1, label="post")
        nengo.Connection(stim, pre)
        conn = nengo.Connection(pre, post, learning_rule_type=nengo.PES(1e-4))
        err = nengo.Node(size_in=1)
        nengo.Connection(post, err)
        nengo.Connection(stim, err, transform=-1)
        nengo.Connection(err, conn.learning_rule)
    return net


def net_conv(pop_type):
    """A population-axon convolution into an ensemble split by a 3-D block shape."""
    relu = {"neuron_type": nengo.SpikingRectifiedLinear(),
            "gain": nengo.dists.Choice([1]), "bias": nengo.dists.Choice([0])}
    with nengo.Network(seed=3) as net:
        nengo_loihi.add_params(net)
        inp = nengo.Node(np.linspace(0, 1, 64))
        a = nengo.Ensemble(64, 1, label="image", **relu)
        nengo.Connection(inp, a.neurons)
        conv = nengo.Convolution(4, (8, 8, 1), kernel_size=(3, 3), padding="same")
        b = nengo.Ensemble(conv.output_shape.size, 1, label="features", **relu)
        conn = nengo.Connection(a.neurons, b.neurons, transform=conv)
        net.config[conn].pop_type = pop_type
        net.config[b].block_shape = nengo_loihi.BlockShape((4, 4, 4), (8, 8, 4))
    return net


NETWORKS = {
    "decoded": net_decoded,
    "weights": net_weights,
    "learning": net_learning,
    "conv16": lambda: net_conv(16),
    "conv32": lambda: net_conv(32),
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def built(request):
    model = build_model(NETWORKS[request.param]())
    return model, extract(model)


# ------------------------------------------------------------------ helpers
def owner_of(blocks):
    return {id(s): i for i, b in enumerate(blocks) for s in b.synapses}


def check_conservation(model, graph):
    blocks = list(model.blocks)
    owner = owner_of(blocks)
    assert graph.n_blocks == len(blocks)
    assert graph.labels == [str(b) for b in blocks]
    assert graph.compartments.sum() == sum(b.compartment.n_compartments for b in blocks)
    assert np.array_equal(graph.compartments, [b.compartment.n_compartments for b in blocks])
    expected = sum(
        ax.n_axons for i, b in enumerate(blocks) for ax in b.axons
        if owner[id(ax.target)] != i
    )
    assert graph.total_axons() == pytest.approx(expected)
    assert graph.axons.diagonal().sum() == 0
    # every input axon lands in a block
    assert graph.input_axons.sum() == pytest.approx(
        sum(ax.n_axons for inp in model.inputs for ax in inp.axons))
    assert graph.n_inputs == len(model.inputs)


def check_against_utilization(model, graph):
    for i, block in enumerate(model.blocks):
        util = {k: v[0] for k, v in block.utilization().items()}
        comps, in_axons, out_entries, bits = graph.resources[i]
        assert comps == util["compartments"]
        assert bits == util["synapses"]
        assert out_entries >= util["out-axons"]
        if not any(s.learning for s in block.synapses):
            assert in_axons == util["in-axons"]
        assert graph.shared_synapse_bits[i] >= bits
        # At an offset, the block's synapses take formats widened to address a core:
        # nengo-loihi's own count with those formats.
        saved = [s.synapse_cfg for s in block.synapses]
        for s in block.synapses:
            s.synapse_cfg = formats.widened_format(s.synapse_cfg,
                                                   CoreLimits().shared_index_bits)
        try:
            assert graph.shared_synapse_bits[i] == block.utilization()["synapses"][0]
        finally:
            for s, cfg in zip(block.synapses, saved):
                s.synapse_cfg = cfg


def round_robin_board(model, n_chips):
    board = RoundRobin()(model, n_chips)
    index = {id(b): i for i, b in enumerate(model.blocks)}
    chip_of = np.zeros(len(model.blocks), dtype=int)
    core_of = {}
    for chip in board.chips:
        for core in chip.cores:
            for block in core.blocks:
                chip_of[index[id(block)]] = board.chip_idxs[chip]
                core_of[index[id(block)]] = core
    return board, chip_of, core_of


# ------------------------------------------------------------ real networks
def test_conservation(built):
    model, graph = built
    check_conservation(model, graph)


def test_resources_match_utilization(built):
    model, graph = built
    check_against_utilization(model, graph)


def test_in_axons_and_configs_match_core_tables(built):
    """Core.add_synapse and the config helpers of a one-block-per-core board agree
    with the per-block resources and config keys."""
    model, graph = built
    _, _, core_of = round_robin_board(model, 2)
    for i, core in core_of.items():
        ids = [x for ids in core.synapse_axons.values() for x in ids if x is not None]
        per = {s: s.idxs_per_synapse() for s in core.synapse_axons}
        used = sum(
            per[s] * sum(x is not None for x in ids) for s, ids in core.synapse_axons.items()
        )
        assert graph.resources[i, 1] == used
        if ids:  # ids are numbered densely from 0
            assert max(ids) < used
        counts = {k: int(graph.configs[k][i].sum()) for k in CONFIG_KINDS}
        assert counts["compartment_cfgs"] == len(core.compartment_cfgs)
        assert counts["vth_cfgs"] == len(core.vth_cfgs)
        assert counts["synapse_cfgs"] == len(core.synapse_cfgs) - 1  # index 0 reserved
        assert counts["stdp_pre_cfgs"] == len(core.stdp_pre_cfgs)


def test_interchip_axons_match_nengo_loihi(built):
    model, graph = built
    board, chip_of, _ = round_robin_board(model, 2)
    src, dst, axons = graph.edge_arrays("axons")
    ours = axons[chip_of[src] != chip_of[dst]].sum()
    theirs = estimate_interchip_activity(board)["interchip"]
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_flags_and_keys(built):
    model, graph = built
    blocks = list(model.blocks)
    for i, block in enumerate(blocks):
        assert graph.learning[i] == any(s.learning for s in block.synapses)
        assert graph.pop_sender[i] == any(ax.target.pop_type in (16, 32) for ax in block.axons)
        has_pop16 = any(s.pop_type == 16 for s in block.synapses)
        assert (graph.pop16_in_limit[i] > 0) == has_pop16
        assert (graph.noise_key[i] >= 0) == bool(np.any(block.compartment.enable_noise))
    vminmax = [(b.compartment.vmin, b.compartment.vmax) for b in blocks]
    for i in range(len(blocks)):
        for j in range(len(blocks)):
            assert (graph.core_key[i] == graph.core_key[j]) == (vminmax[i] == vminmax[j])


def test_learning_block_takes_two_input_ids_per_axon():
    model = build_model(net_learning())
    graph = extract(model)
    (i,) = np.flatnonzero(graph.learning)
    block = list(model.blocks)[i]
    assert graph.resources[i, 1] == 2 * sum(s.n_axons for s in block.synapses)
    assert graph.configs["stdp_pre_cfgs"][i].sum() == 1
    assert "decode neurons of" in graph.sources[i]


def test_pop_senders_and_pop32_entries():
    g16 = extract(net_conv(16))
    g32 = extract(net_conv(32))
    assert g16.pop_sender[0] and g32.pop_sender[0]
    assert not g16.pop_sender[1:].any()
    assert g32.resources[0, 2] == 2 * g16.resources[0, 2]
    assert (g16.pop16_in_limit[1:] == 2 ** 10).all() and g32.pop16_in_limit.max() == 0
    # sparse (compression 0) conv synapses pay for wider indices at a core offset
    assert (g16.shared_synapse_bits[1:] > g16.resources[1:, 3]).all()


def test_decode_block_output_entries_hand_checked():
    """A 1-D decoded connection makes 20 decode neurons (Preset10: 2 x 10) that share
    2 target axons: utilization counts 2 out-axons, build_axon creates 20 axons."""
    with nengo.Network(seed=4) as net:
        a = nengo.Ensemble(50, 1, label="a")
        b = nengo.Ensemble(50, 1, label="b")
        conn = nengo.Connection(a, b)
    model = build_model(net)
    graph = extract(model)
    blocks = list(model.blocks)
    (dec,) = model.objs[conn]["decoded"]
    i, j = blocks.index(dec), blocks.index(model.objs[b]["in"][0])
    assert dec.compartment.n_compartments == 20
    (axon,) = dec.axons
    assert axon.n_axons == 2
    targets = np.asarray(axon.map_axon(np.arange(20)))
    assert (targets >= 0).all() and set(targets.tolist()) == {0, 1}
    assert dec.utilization()["out-axons"][0] == 2
    assert graph.resources[i, 2] == 20
    assert graph.axons[i, j] == 2
    assert graph.sources[i] == f"decode neurons of {conn}"
    assert graph.sources[j] == str(b)


def test_sources_name_split_ensembles():
    model = build_model(net_decoded())
    sources = block_sources(model)
    assert "<Ensemble 'b'>[0:750]" in sources
    assert "<Ensemble 'b'>[750:1500]" in sources
    assert "<Ensemble 'a'>" in sources


def test_host_inputs():
    model = build_model(net_decoded())
    graph = extract(model)
    (inp,) = model.inputs
    (i_a,) = [i for i, s in enumerate(graph.sources) if s == "<Ensemble 'a'>"]
    assert graph.n_inputs == 1
    assert graph.input_axons[0, i_a] == sum(ax.n_axons for ax in inp.axons) == 2
    assert graph.input_spikes[0, i_a] == 2
    assert "<Ensemble 'a'>" in graph.input_labels[0]


def test_accepts_simulator_and_model():
    net = net_weights()
    with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
        from_sim = extract(sim)
        from_model = extract(sim.model)
    assert from_sim.fingerprint() == from_model.fingerprint()
    assert from_sim.dt == sim.dt and from_sim.rates == "axons"
    assert (from_sim.spikes != from_sim.axons).nnz == 0


def test_rejects_bad_input():
    with pytest.raises(ExtractionError, match="nengo.Network"):
        extract("not a network")
    with pytest.raises(ExtractionError, match="rates"):
        extract(net_weights(), rates="fast")


# ------------------------------------------------------------------ rates
def test_ensemble_rates_match_estimate_interblock_activity():
    net = net_weights()
    model = build_model(net)
    rng = np.random.default_rng(0)
    ens_rates = {e: rng.uniform(0, 100, e.n_neurons) for e in net.all_ensembles}
    graph = extract(model, ens_rates)
    assert graph.rates == "ensemble_rates"
    blocks = list(model.blocks)
    block_rates = ensemble_to_block_rates(model, ens_rates)
    activity = estimate_interblock_activity(dict(enumerate(blocks)), block_rates)
    n_edges = 0
    for i, row in activity.items():
        for j, value in row.items():
            assert graph.spikes[i, j] == pytest.approx(value * model.dt, abs=1e-12)
            n_edges += 1
    assert n_edges == graph.axons.nnz


def test_ensemble_rates_default_and_errors():
    net = net_decoded()
    model = build_model(net)
    a = next(e for e in net.all_ensembles if e.label == "a")
    graph = extract(model, {a: np.full(a.n_neurons, 10.0)})
    i_a = graph.sources.index("<Ensemble 'a'>")
    block_a = list(model.blocks)[i_a]
    owner = owner_of(list(model.blocks))
    expected = sum(
        np.count_nonzero(np.asarray(ax.map_axon(np.arange(100))) >= 0) * 10.0 * model.dt
        for ax in block_a.axons if owner[id(ax.target)] != i_a
    )
    assert graph.spikes[i_a].sum() == pytest.approx(expected)
    # blocks without rates keep every axon active
    others = np.setdiff1d(np.arange(graph.n_blocks), [i_a])
    assert (graph.spikes[others] != graph.axons[others]).nnz == 0
    with pytest.raises(ExtractionError, match="shape"):
        extract(model, {a: np.ones(3)})
    with pytest.raises(ExtractionError, match="not part of this model"):
        extract(model, {nengo.Ensemble(5, 1, add_to_container=False): np.ones(5)})
    with pytest.raises(ExtractionError, match="nengo.Ensemble"):
        extract(model, {"a": np.ones(100)})


def low_activity_net():
    with nengo.Network(seed=5) as net:
        stim = nengo.Node(0.3, label="stim")
        a = nengo.Ensemble(120, 1, max_rates=nengo.dists.Uniform(5, 15), label="a")
        b = nengo.Ensemble(80, 1, max_rates=nengo.dists.Uniform(5, 15), label="b")
        nengo.Connection(stim, a)
        nengo.Connection(a, b)
        nengo.Connection(a.neurons, b.neurons, transform=np.full((80, 120), 1e-3))
    return net


def test_measured_rates_are_below_all_axons(capsys):
    net = low_activity_net()
    every = extract(net)
    measured = extract(net, "measured", duration=0.3, seed=0, progress=True)
    assert measured.rates == "measured"
    assert measured.fingerprint() == every.fingerprint()  # same blocks and axons
    assert 0 < measured.spikes.sum() < 0.5 * every.spikes.sum()
    assert 0 < measured.input_spikes.sum() <= every.input_spikes.sum()
    err = capsys.readouterr().err
    assert "100%" in err and "10%" in err


def test_measured_with_simulator_advances_it():
    net = low_activity_net()
    with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
        graph = extract(sim, "measured", duration=0.05, progress=False)
        assert sim.n_steps == 50
        # the input's spike_idxs hook is removed again
        assert all("spike_idxs" not in vars(inp) for inp in sim.model.inputs)
    assert graph.spikes.sum() < graph.axons.sum()
    with pytest.raises(ExtractionError, match="pass the nengo.Network"):
        extract(sim.model, "measured")


# ------------------------------------------------------------ random networks
@st.composite
def random_networks(draw):
    n_ens = draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(5, 300), min_size=n_ens, max_size=n_ens))
    kinds = st.sampled_from(["decoded", "weights", "neurons"])
    conns = draw(st.lists(
        st.tuples(st.integers(0, n_ens - 1), st.integers(0, n_ens - 1), kinds),
        min_size=1, max_size=6,
    ))
    seed = draw(st.integers(0, 2 ** 16))
    with nengo.Network(seed=seed) as net:
        ens = [nengo.Ensemble(n, 1, label=f"e{k}") for k, n in enumerate(sizes)]
        stim = nengo.Node(lambda t: np.sin(5 * t), label="stim")
        nengo.Connection(stim, ens[0])
        for pre, post, kind in conns:
            if kind == "decoded":
                nengo.Connection(ens[pre], ens[post])
            elif kind == "weights":
                nengo.Connection(ens[pre], ens[post],
                                 solver=nengo.solvers.LstsqL2(weights=True))
            else:
                nengo.Connection(ens[pre].neurons, ens[post].neurons,
                                 transform=np.full((sizes[post], sizes[pre]), 1e-3))
    return net


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_networks())
def test_random_networks_conserve(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(net)
    graph = extract(model)
    check_conservation(model, graph)
    check_against_utilization(model, graph)
    assert graph.n_inputs >= 1
    # spikes default to axons
    assert (graph.spikes != graph.axons).nnz == 0


# ------------------------------------------------------------ oversized blocks
def oversized_net():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(800, 1, label="big_pre")
        b = nengo.Ensemble(1000, 1, label="big_post")
        nengo.Connection(a, b, solver=nengo.solvers.LstsqL2(weights=True))
    return net, a, b


def test_oversized_block_raises_with_block_shape():
    net, a, b = oversized_net()
    with pytest.raises(BlockTooLargeError) as info:
        extract(net)
    err = info.value
    message = str(err)
    assert "<Ensemble 'big_pre'>" in message
    assert "BlockShape" in message and "add_params" in message
    assert err.rule == "out_axons" and err.value > err.limit == 4096
    assert isinstance(err.suggestion, nengo_loihi.BlockShape)
    assert err.suggestion.ensemble_shape == (800,)
    # nengo-loihi stops at the first offender; the message lists the others too
    assert "<Ensemble 'big_post'>" in message


def test_following_the_suggestions_builds():
    net, a, b = oversized_net()
    nengo_loihi.add_params(net)
    by_source = {str(a): a, str(b): b}
    for _ in range(3):
        try:
            graph = extract(net)
            break
        except BlockTooLargeError as err:
            ens = by_source[re.sub(r"\[.*\]$", "", err.source)]
            net.config[ens].block_shape = err.suggestion
    else:
        pytest.fail("suggested block shapes did not make the model fit")
    assert (graph.resources <= CoreLimits().capacity_vector()).all()


@pytest.mark.parametrize("n, value, limit, rule", [
    (800, 5600, 4096, "out_axons"),
    (1000, 1075200, 1048576, "synapse_bits"),
    (3000, 3000, 1024, "compartments"),
    (17, 10_000, 4096, "out_axons"),
])
def test_suggest_block_shape_fits(n, value, limit, rule):
    shape = suggest_block_shape(n, value, limit, rule)
    block = min(n, 1024)
    assert shape.ensemble_shape == (n,)
    (k,) = shape.shape
    assert 1 <= k <= 1024
    assert k * value / block <= limit * 0.9 + value / block  # proportional estimate fits
    assert shape.n_splits == -(-n // k)


def test_suggest_block_shape_nd():
    shape = suggest_block_shape((32, 32, 8), 8000, 4096, "out_axons",
                                block_shape=(16, 16, 4), block_size=1024)
    assert shape.ensemble_shape == (32, 32, 8)
    assert np.prod(shape.shape) <= 1024 * 4096 / 8000 * 0.9


# ------------------------------------------------------------ graph export
def test_json_round_trip_and_networkx(built):
    _, graph = built
    again = TrafficGraph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert again.fingerprint() == graph.fingerprint()
    assert again.labels == graph.labels and again.sources == graph.sources
    for name in ("resources", "shared_synapse_bits", "core_key", "noise_key", "learning",
                 "pop_sender", "pop16_in_limit"):
        assert np.array_equal(getattr(again, name), getattr(graph, name))
    for kind in CONFIG_KINDS:
        assert (again.configs[kind] != graph.configs[kind]).nnz == 0
    for name in ("axons", "spikes", "input_axons", "input_spikes"):
        assert abs(getattr(again, name) - getattr(graph, name)).sum() == 0
    g = graph.to_networkx()
    assert g.number_of_nodes() == graph.n_blocks + graph.n_inputs
    assert g.number_of_edges() == graph.axons.nnz + graph.input_axons.nnz


# ------------------------------------------------------------ synthetic graphs
def test_synthetic_sizes_and_limits():
    limits = CoreLimits()
    g = random_graph(3000, avg_degree=8, seed=1)
    assert g.n_blocks == 3000 and g.rates == "synthetic"
    assert (g.resources <= limits.capacity_vector()).all()
    assert (g.resources >= 0).all() and (g.compartments >= 1).all()
    sizes = g.compartments
    assert (sizes <= 200).mean() > 0.6 and (sizes >= 500).mean() > 0.1
    assert 6 <= g.axons.nnz / g.n_blocks <= 8.5
    assert g.axons.diagonal().sum() == 0
    out_sum = np.asarray(g.axons.sum(axis=1)).ravel()
    in_sum = (np.asarray(g.axons.sum(axis=0)).ravel()
              + np.asarray(g.input_axons.sum(axis=0)).ravel())
    assert (g.resources[:, 2] >= out_sum).all() and (g.resources[:, 1] >= in_sum).all()
    assert (g.shared_synapse_bits >= g.resources[:, 3]).all()
    for table in CoreLimits.CONFIG_TABLES:
        assert g.configs[table].sum(axis=1).max() <= limits.config_capacity(table)
    assert set(np.unique(g.core_key)) <= {0, 1}
    assert (g.noise_key == -1).mean() > 0.9
    assert 0 < g.learning.mean() < 0.05 and 0 < g.pop_sender.mean() < 0.05
    assert not (g.learning & g.pop_sender).any()
    assert (g.configs["stdp_pre_cfgs"].sum(axis=1).A.ravel() > 0).sum() == g.learning.sum()
    assert g.n_inputs >= 1 and g.input_axons.nnz > 0
    assert (g.spikes.data <= g.axons.data).all()


def test_synthetic_is_clustered():
    g = random_graph(2000, seed=2)
    cluster = np.array([int(s[len("cluster"):]) for s in g.sources])
    src, dst, _ = g.edge_arrays("axons")
    assert 0.7 < (cluster[src] == cluster[dst]).mean() < 0.95


def test_synthetic_is_deterministic():
    a, b = random_graph(1500, seed=7), random_graph(1500, seed=7)
    c = random_graph(1500, seed=8)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert abs(a.spikes - b.spikes).sum() == 0
    for kind in CONFIG_KINDS:
        assert (a.configs[kind] != b.configs[kind]).nnz == 0


def test_synthetic_large_is_fast_enough():
    g = random_graph(100_000, seed=0)
    assert g.n_blocks == 100_000 and g.axons.nnz > 500_000
