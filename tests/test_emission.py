"""Emission of cores that hold several blocks (`partitioner.emit`) on real models.

The config tables `partitioner.emit` computes by grouping equal settings must be the
tables nengo-loihi's own helpers (``core_compartment_cfgs``, ``core_vth_cfgs``,
``core_stdp_pre_cfgs``) compute for the same core: the same config objects' values
and types, in the same order, and the same per-block index arrays. Whole cores are
compared with a reference filled by nengo-loihi's helpers and a per-axon loop that
follows ``Core.add_synapse``; boards are built with nengo-loihi's real
``build_board`` on the NxSDK stand-in. Every model is built by nengo-loihi.
"""

import warnings

import nengo
import nengo_loihi
import numpy as np
import pytest
from nengo_loihi.builder import Model
from nengo_loihi.decode_neurons import NoisyDecodeNeurons
from nengo_loihi.hardware.allocators import (
    Allocator,
    core_compartment_cfgs,
    core_stdp_pre_cfgs,
    core_vth_cfgs,
)
from nengo_loihi.hardware.nxsdk_objects import Board
from nengo_loihi.hardware.validate import validate_board

from partitioner import emit
from partitioner.allocator import MinCutAllocator, board_from_plan, restore_model
from partitioner.engine import partition
from partitioner.extract import extract
from partitioner.nxsdk_standin import build_on_standin
from partitioner.scenario import load_scenario


# ---------------------------------------------------------------- networks
def mixed_network(seed=3):
    """Ensembles of several neuron types, time constants, radii and rates (so
    different decays, refractory delays and thresholds), decoded connections with
    different synapses, a neuron-to-neuron connection, and three PES-learned
    connections (two with the same pre-synaptic ensemble and time constant, so the
    same STDP pre-trace config)."""
    kinds = [
        nengo.LIF(tau_rc=0.02, tau_ref=0.002),
        nengo.LIF(tau_rc=0.05, tau_ref=0.001),
        nengo.SpikingRectifiedLinear(),
        nengo.LIF(tau_rc=0.03, tau_ref=0.004),
    ]
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: [np.sin(5 * t), np.cos(3 * t)], label="stim")
        ens = [
            nengo.Ensemble(
                30 + 7 * i, 2, radius=0.5 + 0.4 * i, neuron_type=kinds[i % 4],
                max_rates=nengo.dists.Uniform(80 + 10 * i, 150 + 10 * i), label=f"e{i}",
            )
            for i in range(8)
        ]
        nengo.Connection(stim, ens[0], synapse=0.005)
        for i, (a, b) in enumerate(zip(ens[:-1], ens[1:])):
            nengo.Connection(a, b, synapse=0.003 + 0.004 * i)
        nengo.Connection(ens[2].neurons, ens[5].neurons,
                         transform=np.full((ens[5].n_neurons, ens[2].n_neurons), 1e-3))
        for pre, post, tau in [(ens[1], ens[6], 0.005), (ens[3], ens[7], 0.02),
                               (ens[4], ens[6], 0.005), (ens[1], ens[7], 0.005)]:
            conn = nengo.Connection(
                pre, post, learning_rule_type=nengo.PES(learning_rate=1e-4, pre_synapse=tau))
            nengo.Connection(post, conn.learning_rule, transform=-1)
        nengo.Probe(ens[5], synapse=0.01)
    return net


def strided_conv_network(seed=2):
    """A convolution whose stride skips input pixels (dummy input axons), sending
    population spikes, next to decoded connections."""
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(np.linspace(0.1, 0.9, 25), label="stim")
        a = nengo.Ensemble(25, 1, label="a")
        nengo.Connection(stim, a.neurons)
        b = nengo.Ensemble(2 * 2 * 2, 1, label="b",
                           gain=nengo.dists.Choice([1.0]), bias=nengo.dists.Choice([0.0]))
        conv = nengo.Convolution(2, (5, 5, 1), strides=(3, 3), kernel_size=(2, 2),
                                 padding="valid")
        nengo.Connection(a.neurons, b.neurons, transform=conv)
        c = nengo.Ensemble(40, 1, label="c")
        d = nengo.Ensemble(30, 1, label="d")
        nengo.Connection(stim[0], c)
        nengo.Connection(c, d, synapse=0.02)
        nengo.Probe(b.neurons)
    return net


def build(net, noisy=False, discretize=True):
    """nengo-loihi's model of ``net``; ``noisy`` gives decode neurons noise."""
    model = Model(dt=0.001)
    if noisy:
        model.decode_neurons = NoisyDecodeNeurons(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if discretize:
            nengo_loihi.Simulator(net, target="sim", model=model).close()
        else:
            model.build(net, precompute=None, remove_passthrough=True, discretize=False)
    return model


@pytest.fixture(scope="module")
def models():
    """The test models by name."""
    return {
        "mixed": build(mixed_network()),
        "mixed, noisy decode neurons": build(mixed_network(), noisy=True),
        "strided conv": build(strided_conv_network()),
    }


def groupings(n_blocks, seed):
    """Blocks ``0 .. n-1`` shuffled and cut into cores of 1 to 12 blocks, plus one
    core with every block."""
    rng = np.random.RandomState(seed)
    order = rng.permutation(n_blocks)
    cuts, start = [], 0
    while start < n_blocks:
        size = int(rng.randint(1, 13))
        cuts.append([int(b) for b in order[start:start + size]])
        start += size
    return cuts + [list(range(n_blocks))]


# ---------------------------------------------------------------- comparisons
def assert_same_cfgs(fast, reference):
    """Same configs in the same order, field by field, with the same value types."""
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference):
        assert type(a) is type(b)
        assert a == b
        for name in type(b).params:
            assert type(a.__dict__[name]) is type(b.__dict__[name])  # noqa: E721


def assert_same_idxs(fast, reference):
    """Same blocks (or synapses), same index arrays of the same dtype."""
    assert list(fast) == list(reference)
    for key, value in reference.items():
        if value is None or isinstance(value, (int, np.integer)):
            assert fast[key] == value
        else:
            assert fast[key].dtype == value.dtype
            np.testing.assert_array_equal(fast[key], value)


def new_core(blocks):
    """A new core of a new board holding ``blocks`` (nothing else configured)."""
    core = Board().new_chip().new_core()
    for block in blocks:
        core.add_block(block)
    return core


def reference_axon_ids(synapse, first_id):
    """Axon ids by nengo-loihi's per-axon rule (``Core.add_synapse``)."""
    ids, next_id = [], first_id
    for idx in range(synapse.n_axons):
        base = synapse.axon_compartment_base(idx)
        weights, _ = synapse.axon_weights_indices(idx)
        if base is None or weights.size == 0:
            ids.append(None)
        else:
            ids.append(next_id)
            next_id += synapse.idxs_per_synapse()
    return ids, next_id


def reference_fill_core(core, blocks):
    """Fill ``core`` with nengo-loihi's config helpers and per-axon loop (what
    `Allocator.block_to_new_core` does, with axon ids continued after the last id in
    use)."""
    for block in blocks:
        core.add_block(block)
    cfgs, core.compartment_cfg_idxs = core_compartment_cfgs(core)
    for cfg in cfgs:
        core.add_compartment_cfg(cfg)
    cfgs, core.vth_cfg_idxs = core_vth_cfgs(core)
    for cfg in cfgs:
        core.add_vth_cfg(cfg)
    next_id, entry = 0, 0
    for block in blocks:
        for synapse in block.synapses:
            core.synapse_cfg_idxs[synapse] = core.get_synapse_cfg_idx(synapse.synapse_cfg)
            ids, next_id = reference_axon_ids(synapse, next_id)
            core.synapse_axons[synapse] = ids
            core.board.index_synapse(synapse, core.chip, core, ids)
            core.synapse_entries[synapse] = (entry, entry + synapse.size())
            entry += synapse.size()
    cfgs, core.stdp_pre_cfg_idxs = core_stdp_pre_cfgs(core)
    for cfg in cfgs:
        core.add_stdp_pre_cfg(cfg)
    core.stdp_pre_cfg_idx = None
    core.stdp_cfg_idx = None


def assert_same_core(fast, reference):
    """Every table and map of two filled cores is the same."""
    assert fast.blocks == reference.blocks
    assert_same_cfgs(fast.compartment_cfgs, reference.compartment_cfgs)
    assert_same_idxs(fast.compartment_cfg_idxs, reference.compartment_cfg_idxs)
    assert_same_cfgs(fast.vth_cfgs, reference.vth_cfgs)
    assert_same_idxs(fast.vth_cfg_idxs, reference.vth_cfg_idxs)
    assert fast.synapse_cfgs[0] is None and reference.synapse_cfgs[0] is None
    assert_same_cfgs(fast.synapse_cfgs[1:], reference.synapse_cfgs[1:])
    assert fast.synapse_cfg_idxs == reference.synapse_cfg_idxs
    assert fast.synapse_axons == reference.synapse_axons
    assert list(fast.synapse_axons) == list(reference.synapse_axons)
    assert fast.synapse_entries == reference.synapse_entries
    assert_same_cfgs(fast.stdp_pre_cfgs, reference.stdp_pre_cfgs)
    assert fast.stdp_pre_cfg_idxs == reference.stdp_pre_cfg_idxs
    assert (fast.stdp_pre_cfg_idx, fast.stdp_cfg_idx) == (None, None)


def assert_same_board(fast, reference):
    """Same chips, cores and core tables; same synapse index."""
    assert fast.n_cores_per_chip == reference.n_cores_per_chip
    for chip_a, chip_b in zip(fast.chips, reference.chips):
        for core_a, core_b in zip(chip_a.cores, chip_b.cores):
            assert_same_core(core_a, core_b)
    assert fast.synapse_index == reference.synapse_index
    assert fast.inputs == reference.inputs and fast.probes == reference.probes


def reference_board(model, plan):
    """The board of ``plan`` with every core filled by `reference_fill_core`, from
    the model's blocks as they are now (call right after `board_from_plan`, whose
    format and noise adjustments it then shares)."""
    blocks = list(model.blocks)
    board = Board()
    for inp in model.inputs:
        Allocator().input_to_board(inp, board)
    chips = {}
    for c in np.argsort(plan.core_chip, kind="stable"):
        k = int(plan.core_chip[c])
        if k not in chips:
            chips[k] = board.new_chip()
        reference_fill_core(chips[k].new_core(), [blocks[i] for i in plan.core_blocks(c)])
    board.probes.extend(model.probes)
    return board


# ---------------------------------------------------------------- config tables
@pytest.mark.parametrize("name", ["mixed", "mixed, noisy decode neurons", "strided conv"])
def test_config_tables_equal_nengo_loihi_helpers(models, name):
    model = models[name]
    blocks = list(model.blocks)
    n_vth, n_cx = [], []
    for seed in range(4):
        for group in groupings(len(blocks), seed):
            core_blocks = [blocks[i] for i in group]
            core = new_core(core_blocks)
            cfgs, idxs = emit.compartment_cfgs(core_blocks)
            ref_cfgs, ref_idxs = core_compartment_cfgs(core)
            assert_same_cfgs(cfgs, ref_cfgs)
            assert_same_idxs(idxs, ref_idxs)
            cfgs, idxs = emit.vth_cfgs(core_blocks)
            ref_cfgs, ref_idxs = core_vth_cfgs(core)
            assert_same_cfgs(cfgs, ref_cfgs)
            assert_same_idxs(idxs, ref_idxs)
            n_cx.append(len(ref_cfgs))
            n_vth.append(len(cfgs))
    assert max(n_vth) >= min(8, len(blocks))  # cores with many thresholds compared
    assert max(n_cx) >= 2


def test_tables_equal_with_settings_varying_inside_blocks(models):
    """Compartment settings are per compartment in nengo-loihi's data model: vary them
    inside blocks of a fresh model (up to ~60 distinct configs on one core)."""
    model = build(mixed_network(seed=5))
    rng = np.random.RandomState(0)
    for block in model.blocks:
        comp = block.compartment
        n = comp.n_compartments
        comp.refract_delay[:] = rng.randint(1, 4, size=n)
        comp.enable_noise[:] = rng.rand(n) < 0.3
        comp.decay_u[:] = rng.choice([comp.decay_u[0], 4095, 0], size=n)
        comp.vth[:] = comp.vth // rng.choice([1, 2, 3], size=n)
    blocks = list(model.blocks)
    sizes = []
    for group in groupings(len(blocks), seed=7):
        core = new_core([blocks[i] for i in group])
        for fast, helper in [(emit.compartment_cfgs, core_compartment_cfgs),
                             (emit.vth_cfgs, core_vth_cfgs)]:
            cfgs, idxs = fast(core.blocks)
            ref_cfgs, ref_idxs = helper(core)
            assert_same_cfgs(cfgs, ref_cfgs)
            assert_same_idxs(idxs, ref_idxs)
            sizes.append(len(cfgs))
    assert max(sizes) > 32


def test_tables_equal_on_models_not_discretized():
    """Float settings (a model built with ``discretize=False``) group alike."""
    model = build(mixed_network(), discretize=False)
    assert list(model.blocks)[0].compartment.decay_u.dtype.kind == "f"
    blocks = list(model.blocks)
    for group in groupings(len(blocks), seed=1):
        core = new_core([blocks[i] for i in group])
        cfgs, idxs = emit.compartment_cfgs(core.blocks)
        ref_cfgs, ref_idxs = core_compartment_cfgs(core)
        assert_same_cfgs(cfgs, ref_cfgs)
        assert_same_idxs(idxs, ref_idxs)


def test_grouping_matches_first_seen_tuples():
    """`emit._first_seen_groups` numbers rows as a dict of row tuples would, also for
    columns whose combined value range overflows one integer key."""
    rng = np.random.RandomState(4)
    n = 3000
    columns = [
        rng.choice([0, 2**40, -(2**40), 7], size=n).astype(np.int64),
        rng.choice([0.5, -1.25, 3.0], size=n),
        rng.rand(n) < 0.5,
        rng.randint(0, 2**31 - 1, size=n).astype(np.int64) % 5 * (2**30),
        rng.randint(-3, 3, size=n).astype(np.int32),
        rng.choice([0, 2**31 - 2], size=n).astype(np.int64),
        rng.choice([5, 2**31 - 2], size=n).astype(np.int64),
        rng.choice([-128, 127, 0], size=n).astype(np.int8),
        rng.choice([0, 2**64 - 1], size=n).astype(np.uint64),
    ]
    first, group = emit._first_seen_groups(columns)
    seen = {}
    expected = [seen.setdefault(row, len(seen)) for row in zip(*(c.tolist() for c in columns))]
    np.testing.assert_array_equal(group, expected)
    np.testing.assert_array_equal(first, [expected.index(g) for g in range(len(seen))])


def test_empty_core_tables():
    assert emit.compartment_cfgs([]) == ([], {})
    assert emit.vth_cfgs([]) == ([], {})
    assert emit.stdp_pre_cfgs([]) == ([], {})


def test_stdp_tables_equal_nengo_loihi_helper(models):
    model = models["mixed"]
    learning = [b for b in model.blocks if any(s.learning for s in b.synapses)]
    assert len(learning) == 4
    others = [b for b in model.blocks if b not in learning][:4]
    core = Board().new_chip().new_core()
    emit.fill_core(core, others[:2] + learning + others[2:])
    cfgs, idxs = emit.stdp_pre_cfgs(core.synapses)
    ref_cfgs, ref_idxs = core_stdp_pre_cfgs(core)
    assert_same_cfgs(cfgs, ref_cfgs)
    assert idxs == ref_idxs
    assert len(cfgs) == 3  # four learning synapses, two with the same trace config
    assert_same_cfgs(core.stdp_pre_cfgs, ref_cfgs)


# ---------------------------------------------------------------- synapses
@pytest.mark.parametrize("name", ["mixed", "strided conv"])
def test_axon_ids_follow_nengo_loihi_rule(models, name):
    synapses = [s for b in models[name].blocks for s in b.synapses]
    dummies = 0
    for first_id in (0, 17):
        for synapse in synapses:
            ids, next_id = emit.synapse_axon_ids(synapse, first_id)
            assert (ids, next_id) == reference_axon_ids(synapse, first_id)
            assert all(i is None or type(i) is int for i in ids)
            dummies += ids.count(None)
    if name == "strided conv":
        assert dummies > 0  # the stride leaves input pixels unread
        assert any(s.axon_to_weight_map is not None for s in synapses)


def test_one_block_cores_equal_block_to_new_core(models):
    """With one block per core, `fill_core` makes nengo-loihi's own cores."""
    for block in models["mixed"].blocks:
        ours, theirs = Board().new_chip(), Board().new_chip()
        emit.fill_core(ours.new_core(), [block])
        Allocator().block_to_new_core(block, theirs)
        assert_same_core(ours.cores[0], theirs.cores[0])
        assert ours.board.synapse_index == theirs.board.synapse_index


@pytest.mark.parametrize("name", ["mixed", "mixed, noisy decode neurons", "strided conv"])
def test_filled_cores_equal_reference(models, name):
    blocks = list(models[name].blocks)
    for group in groupings(len(blocks), seed=11):
        core_blocks = [blocks[i] for i in group]
        fast, reference = Board().new_chip().new_core(), Board().new_chip().new_core()
        emit.fill_core(fast, core_blocks)
        reference_fill_core(reference, core_blocks)
        assert_same_core(fast, reference)
        assert fast.board.synapse_index == reference.board.synapse_index


# ---------------------------------------------------------------- boards
@pytest.mark.parametrize("name", ["mixed", "mixed, noisy decode neurons", "strided conv"])
def test_boards_equal_reference_and_build_on_standin(models, name):
    model = models[name]
    graph = extract(model)
    plan = partition(graph, n_chips=2, board="kapoho_bay", spread=True)
    board = board_from_plan(model, plan, graph)
    assert_same_board(board, reference_board(model, plan))
    assert max(len(core.blocks) for chip in board.chips for core in chip.cores) > 1
    validate_board(board)
    summary = build_on_standin(board).summary()
    assert sum(core["compartments"] for core in summary) == sum(
        b.compartment.n_compartments for b in model.blocks)
    assert max(core["vth_cfgs"] for core in summary) > 1
    restore_model(model)


def test_allocator_boards_build_and_match_reference(models):
    model = models["mixed"]
    allocator = MinCutAllocator(board="kapoho_bay")
    board = allocator(model, n_chips=2)
    assert_same_board(board, reference_board(model, allocator.last_plan))
    assert max(len(core.vth_cfgs) for chip in board.chips for core in chip.cores) > 1
    summary = build_on_standin(board).summary()
    assert max(core["stdp_pre_cfgs"] for core in summary) >= 1
    restore_model(model)


@pytest.fixture(scope="module")
def modular_board():
    """A bundled scenario (156 blocks) as `MinCutAllocator` packs it: its model, the
    board and the plan."""
    model = build(load_scenario("modular").network)
    allocator = MinCutAllocator(board="nahuku32")
    board = allocator(model, n_chips=4)
    return model, board, allocator.last_plan


def test_scenario_board_matches_reference(modular_board):
    model, board, plan = modular_board
    assert max(len(core.blocks) for chip in board.chips for core in chip.cores) >= 4
    assert_same_board(board, reference_board(model, plan))
    validate_board(board)


@pytest.mark.slow
def test_scenario_board_builds_on_standin(modular_board):
    """The stand-in build of this board takes about a minute."""
    _, board, _ = modular_board
    summary = build_on_standin(board).summary()
    assert max(core["vth_cfgs"] for core in summary) > 1
