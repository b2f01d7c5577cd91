"""The NxSDK stand-in: nengo-loihi's real ``build_board`` on real allocated boards."""

import copy

import nengo
import nengo_loihi
import numpy as np
import pytest
from nengo_loihi.block import SynapseConfig
from nengo_loihi.hardware import builder as nl_builder
from nengo_loihi.hardware import interface as nl_interface
from nengo_loihi.hardware.allocators import (
    Allocator,
    Greedy,
    RoundRobin,
    core_compartment_cfgs,
    core_stdp_pre_cfgs,
    core_vth_cfgs,
)
from nengo_loihi.hardware.nxsdk_objects import Board
from nengo_loihi.hardware.validate import validate_board

from partitioner.nxsdk_standin import (
    SYNAPSE_FMT_FIELDS,
    NxsdkBoard,
    OutputEntries,
    StandinOverflow,
    build_on_standin,
    standin_hardware,
)

RELU = dict(
    neuron_type=nengo.SpikingRectifiedLinear(),
    gain=nengo.dists.Choice([1.0]),
    bias=nengo.dists.Choice([0.0]),
)


# --- networks -----------------------------------------------------------------


def feedforward_net():
    """Node -> Ensemble(100) -> Ensemble(50), with decoded and neuron probes."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        a = nengo.Ensemble(100, 1)
        b = nengo.Ensemble(50, 1)
        nengo.Connection(stim, a)
        nengo.Connection(a, b)
        net.probe_a = nengo.Probe(a, synapse=0.01)
        net.probe_b = nengo.Probe(b.neurons)
    return net


def pes_net():
    """A decoded connection learning with PES."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        a = nengo.Ensemble(100, 1)
        b = nengo.Ensemble(50, 1)
        nengo.Connection(stim, a)
        learned = nengo.Connection(a, b, learning_rule_type=nengo.PES())
        nengo.Connection(b, learned.learning_rule)
        nengo.Connection(stim, learned.learning_rule, transform=-1)
        nengo.Probe(b, synapse=0.01)
    return net


def conv_net(n_layers=1):
    """A 10x10 image layer feeding ``n_layers`` identical 3x3, 2-filter conv layers."""
    conv = nengo.Convolution(
        2, (10, 10, 1), kernel_size=(3, 3), init=np.full((3, 3, 1, 2), 0.1)
    )
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.ones(100))
        image = nengo.Ensemble(100, 1, **RELU)
        nengo.Connection(stim, image.neurons)
        for _ in range(n_layers):
            layer = nengo.Ensemble(conv.output_shape.size, 1, **RELU)
            nengo.Connection(image.neurons, layer.neurons, transform=conv)
            nengo.Probe(layer.neurons)
    return net


def split_net(n_neurons, n_outputs=0):
    """One ensemble split into two equal blocks, with ``n_outputs`` decoded outputs."""
    with nengo.Network(seed=0) as net:
        nengo_loihi.add_params(net)
        stim = nengo.Node(0.5)
        a = nengo.Ensemble(n_neurons, 1)
        net.config[a].block_shape = nengo_loihi.BlockShape(
            (n_neurons // 2,), (n_neurons,)
        )
        nengo.Connection(stim, a)
        for _ in range(n_outputs):
            nengo.Connection(a, nengo.Ensemble(10, 1))
        nengo.Probe(a.neurons)
    return net


def conv_chain_net():
    """An 8x8x16 layer -> 3x3 conv (pop32, 16 filters) -> 3x3 conv (pop16, 4 filters).

    Each population axon carries the 16 channels of one pixel, so the two senders
    have 64 and 36 populations for 1,024 and 576 compartments.
    """
    rng = np.random.RandomState(0)
    shape = nengo.transforms.ChannelShape((8, 8, 16))
    with nengo.Network(seed=0) as net:
        nengo_loihi.add_params(net)
        x = nengo.Ensemble(shape.size, 1, label="image", **RELU)
        for label, pop_type, n_filters in [("conv32", 32, 16), ("conv16", 16, 4)]:
            kernel = rng.uniform(-0.1, 0.1, size=(3, 3, shape.n_channels, n_filters))
            conv = nengo.Convolution(n_filters, shape, kernel_size=(3, 3), init=kernel)
            y = nengo.Ensemble(conv.output_shape.size, 1, label=label, **RELU)
            connection = nengo.Connection(x.neurons, y.neurons, transform=conv)
            net.config[connection].pop_type = pop_type
            x, shape = y, conv.output_shape
        nengo.Probe(x.neurons)
    return net


def fan_out_net(n_neurons=600, n_targets=4):
    """``a`` connected neuron-to-neuron (one weight per neuron) to ``n_targets``
    ensembles of the same size: ``n_neurons * n_targets`` discrete axons from ``a``."""
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(n_neurons, 1, label="a")
        for j in range(n_targets):
            b = nengo.Ensemble(n_neurons, 1, label=f"b{j}")
            nengo.Connection(a.neurons, b.neurons, transform=0.01)
    return net


def build_model(net):
    """The discretized nengo-loihi model of ``net``."""
    with nengo_loihi.Simulator(net, target="sim") as sim:
        return sim.model


def blocks_of_size(model, n_compartments):
    return [b for b in model.blocks if b.compartment.n_compartments == n_compartments]


# --- boards with several blocks per core --------------------------------------


def share_core(chip, blocks):
    """Put ``blocks`` on a new core, as ``Allocator.block_to_new_core`` does for one."""
    core = chip.new_core()
    for block in blocks:
        core.add_block(block)
    compartment_cfgs, core.compartment_cfg_idxs = core_compartment_cfgs(core)
    for cfg in compartment_cfgs:
        core.add_compartment_cfg(cfg)
    vth_cfgs, core.vth_cfg_idxs = core_vth_cfgs(core)
    for cfg in vth_cfgs:
        core.add_vth_cfg(cfg)
    for block in blocks:
        for synapse in block.synapses:
            core.add_synapse(synapse)
    stdp_pre_cfgs, core.stdp_pre_cfg_idxs = core_stdp_pre_cfgs(core)
    for cfg in stdp_pre_cfgs:
        core.add_stdp_pre_cfg(cfg)
    core.stdp_pre_cfg_idx = None
    core.stdp_cfg_idx = None


def board_on_chips(model, chips):
    """A board with block ``i`` alone on a new core of chip ``chips[i]``."""
    allocator = Allocator()
    board = Board()
    for _ in range(max(chips) + 1):
        board.new_chip()
    for spike_input in model.inputs:
        allocator.input_to_board(spike_input, board)
    for block, chip in zip(model.blocks, chips):
        allocator.block_to_new_core(block, board.chips[chip])
    board.probes.extend(model.probes)
    return board


def shared_core_board(model, shared):
    """A one-chip board: ``shared`` blocks on core 0, each other block on its own."""
    allocator = Allocator()
    board = Board()
    chip = board.new_chip()
    for spike_input in model.inputs:
        allocator.input_to_board(spike_input, board)
    share_core(chip, shared)
    for block in model.blocks:
        if not any(block is b for b in shared):
            allocator.block_to_new_core(block, chip)
    board.probes.extend(model.probes)
    return board


# --- expected counts, from the blocks -----------------------------------------


def expected_output_entries(block):
    """Output entries of a block on a one-chip board, from its `Axon` maps.

    Discrete: one per compartment mapped to a target axon. Population: 1 (pop16) or
    2 (pop32) per target axon reached (for a block with one population `Axon`, each
    target axon is one population).
    """
    idxs = np.arange(block.compartment.n_compartments)
    entries = 0
    for axon in block.axons:
        targets = axon.map_axon(idxs)
        targets = targets[targets >= 0]
        if axon.pop_type == 0:
            entries += targets.size
        else:
            entries += np.unique(targets).size * axon.slots_per_axon
    return entries


def expected_input_axons(block):
    return sum(s.n_axons * s.idxs_per_synapse() for s in block.synapses)


# --- (a) real networks, Greedy allocation -------------------------------------


@pytest.mark.parametrize("make_net", [feedforward_net, pes_net, conv_net])
def test_greedy_board_counts_match_blocks(make_net):
    model = build_model(make_net())
    summary = build_on_standin(Greedy()(model, n_chips=1)).summary()

    assert len(summary) == len(model.blocks)
    for block, counts in zip(model.blocks, summary):
        assert counts["compartments"] == block.compartment.n_compartments
        assert counts["input_axons"] == expected_input_axons(block)
        assert counts["output_axons"] == expected_output_entries(block)
        assert counts["synapses"] == sum(s.size() for s in block.synapses)
        assert counts["synapse_bits"] == sum(s.bits() for s in block.synapses)
        assert counts["compartment_cfgs"] == counts["vth_cfgs"] == 1


def test_learning_core_gets_trace_entries_and_stdp_config():
    model = build_model(pes_net())
    board = Greedy()(model, n_chips=1)
    nxsdk_board = build_on_standin(board)

    (learning,) = [b for b in model.blocks if any(s.learning for s in b.synapses)]
    core = nxsdk_board.cores()[list(model.blocks).index(learning)]
    assert core.summary()["stdp_pre_cfgs"] == 1
    assert np.all(core.synapses.learn[core.synapses.used] == 1)
    traces = [e for e in core.synapseMap.entries.values() if not e.has_synapses]
    assert len(traces) == sum(s.n_axons for s in learning.synapses)
    assert "firstLearningIndex" in core.stdpCfg.fields


def test_conv_layer_uses_population_axons_and_sparse_synapses():
    model = build_model(conv_net())
    nxsdk_board = build_on_standin(Greedy()(model, n_chips=1))

    kinds = {axon.kind for core in nxsdk_board.cores() for axon in core.output_axons}
    assert kinds == {"pop32"}
    (layer,) = blocks_of_size(model, 128)
    (synapse,) = layer.synapses
    assert synapse.synapse_cfg.compression == 0
    assert synapse.pop_type == 32


def test_two_blocks_within_limits_share_a_core():
    model = build_model(split_net(800))
    halves = blocks_of_size(model, 400)
    summary = build_on_standin(shared_core_board(model, halves)).summary()

    assert summary[0]["compartments"] == 800
    assert summary[0]["output_axons"] == 0
    assert summary[0]["synapse_bits"] == sum(
        s.bits() for block in halves for s in block.synapses
    )


# --- (b) the Simulator's hardware path ----------------------------------------


def test_simulator_builds_and_runs_on_standin_hardware():
    net = feedforward_net()
    options = {"allocator": Greedy(), "n_chips": 2}
    with standin_hardware() as hardware:
        with nengo_loihi.Simulator(
            net, target="loihi", precompute=True, hardware_options=options
        ) as sim:
            sim.run(0.02)
        (nxsdk_board,) = hardware.boards
        nxsdk_board.check()  # spikes sent while running reach configured axons

    assert sim.data[net.probe_a].shape == (20, 1)
    assert sim.data[net.probe_b].shape == (20, 50)
    assert len(nxsdk_board.spike_generators[0].spikes) > 0
    assert len(nxsdk_board.cores()) == len(sim.model.blocks)


def test_standin_hardware_restores_nengo_loihi():
    originals = (
        nengo_loihi.simulator.HAS_NXSDK,
        nl_builder.NxsdkBoard,
        nl_interface.build_board,
        nl_interface.SpikeProbe,
    )
    with pytest.raises(RuntimeError, match="inside"):
        with standin_hardware():
            assert nengo_loihi.simulator.HAS_NXSDK
            raise RuntimeError("inside")

    assert originals == (
        nengo_loihi.simulator.HAS_NXSDK,
        nl_builder.NxsdkBoard,
        nl_interface.build_board,
        nl_interface.SpikeProbe,
    )
    with pytest.raises(ImportError):
        nl_interface.HardwareInterface.check_nxsdk_version()


def test_snips_are_refused():
    with standin_hardware():
        with pytest.raises(NotImplementedError, match="precompute=True"):
            nengo_loihi.Simulator(
                feedforward_net(),
                target="loihi",
                precompute=False,
                hardware_options={"allocator": Greedy()},
            )


def test_precompute_false_without_host_parts_needs_no_snips():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(100, 1, **RELU)
        b = nengo.Ensemble(50, 1)
        nengo.Connection(a, b)
        probe = nengo.Probe(b.neurons)

    with standin_hardware() as hardware:
        with nengo_loihi.Simulator(
            net, target="loihi", precompute=False, hardware_options={"n_chips": 1}
        ) as sim:
            sim.run(0.01)
    assert sim.data[probe].shape == (10, 50)
    assert len(hardware.boards) == 1


# --- (c) broken boards --------------------------------------------------------


def test_two_600_compartment_blocks_overflow_the_compartment_table():
    model = build_model(split_net(1200))
    board = shared_core_board(model, blocks_of_size(model, 600))

    with pytest.raises(StandinOverflow, match="chip 0, core 0, cxCfg") as info:
        build_on_standin(board)
    error = info.value
    assert (error.table, error.index, error.size) == ("cxCfg", 1024, 1024)
    assert nl_builder.NxsdkBoard is None  # patches undone after the failed build


def test_sparse_index_too_narrow_for_the_block_offset():
    model = build_model(conv_net(n_layers=2))
    layers = blocks_of_size(model, 128)

    with pytest.raises(StandinOverflow, match="6-bit sparse index") as info:
        build_on_standin(shared_core_board(model, layers))
    assert info.value.table == "synapses"
    assert info.value.size == 64


def test_widened_sparse_index_fits_the_block_offset():
    model = build_model(conv_net(n_layers=2))
    layers = blocks_of_size(model, 128)
    (synapse,) = layers[1].synapses
    synapse.synapse_cfg = copy.copy(synapse.synapse_cfg)
    synapse.synapse_cfg.idx_bits = 3  # 8 bits: offset 128 + index < 256

    summary = build_on_standin(shared_core_board(model, layers)).summary()
    assert summary[0]["compartments"] == 256
    assert summary[0]["synapse_cfgs"] == 2


def test_too_many_output_axon_entries():
    model = build_model(split_net(1000, n_outputs=5))
    board = shared_core_board(model, blocks_of_size(model, 500))

    with pytest.raises(StandinOverflow, match="5000 output axon entries") as info:
        build_on_standin(board)
    assert (info.value.table, info.value.size) == ("output axons", 4096)


# --- (d) output axon config entries, counted as Loihi's compiler does --------


@pytest.fixture(scope="module")
def conv_chain_model():
    return build_model(conv_chain_net())


@pytest.fixture(scope="module")
def fan_out_model():
    return build_model(fan_out_net())


def test_population_entries_are_per_population_not_per_compartment(conv_chain_model):
    model = conv_chain_model
    image, conv32, _ = model.blocks
    nxsdk_board = build_on_standin(Greedy()(model, n_chips=1))
    sender32, sender16, _ = nxsdk_board.cores()

    # build_axon makes one call per source compartment ...
    assert [a.kind for a in sender32.output_axons] == ["pop32"] * 1024
    assert [a.kind for a in sender16.output_axons] == ["pop16"] * 576
    # ... but a pixel's channels form one population: 64 and 36 of them
    assert nxsdk_board.output_entries() == [(2 * 64, 0), (36, 0), (0, 0)]
    one_per_compartment = [2 * 1024, 576]
    assert 16 * sender32.n_output_entries == one_per_compartment[0]
    assert 16 * sender16.n_output_entries == one_per_compartment[1]
    # nengo-loihi's own count agrees for population axons on one chip
    for block, core in zip(model.blocks, nxsdk_board.cores()):
        assert core.n_output_entries == block.utilization()["out-axons"][0]
    assert image.compartment.n_compartments == 1024
    assert conv32.compartment.n_compartments == 576


def test_population_to_another_chip_takes_one_more_entry(conv_chain_model):
    board = RoundRobin()(conv_chain_model, n_chips=3)  # every block on its own chip
    validate_board(board)
    nxsdk_board = build_on_standin(board)

    assert nxsdk_board.output_entries() == [(3 * 64, 64), (2 * 36, 36), (0, 0)]
    summary = nxsdk_board.summary()
    assert [s["output_axons"] for s in summary] == [192, 72, 0]
    assert [s["interchip_output_axons"] for s in summary] == [64, 36, 0]


def test_interchip_axons_overflow_a_board_nengo_loihi_accepts(fan_out_model):
    model = fan_out_model
    a = list(model.blocks)[0]
    assert len(model.blocks) == 5
    assert a.utilization()["out-axons"] == (2400, 4096)
    board = RoundRobin()(model, n_chips=5)  # a on chip 0, each target on its own
    assert [len(chip.cores) for chip in board.chips] == [1] * 5
    assert board.chips[0].cores[0].blocks == [a]
    validate_board(board)  # nengo-loihi sees nothing wrong

    with pytest.raises(StandinOverflow) as info:
        build_on_standin(board)
    error = info.value
    assert (error.chip, error.core, error.table) == (0, 0, "output axons")
    assert (error.index, error.size) == (4800, 4096)
    assert "4800 output axon entries needed (2400 of them inter-chip" in str(error)


@pytest.mark.parametrize(
    "chips, expected",
    [
        ([0, 0, 0, 0, 0], OutputEntries(2400, 0)),  # everything on one chip
        ([0, 0, 0, 1, 1], OutputEntries(3600, 1200)),  # two targets elsewhere
    ],
)
def test_fan_out_builds_when_entries_fit(fan_out_model, chips, expected):
    board = board_on_chips(fan_out_model, chips)
    validate_board(board)
    nxsdk_board = build_on_standin(board)

    assert nxsdk_board.output_entries()[0] == expected
    assert len(nxsdk_board.cores()[0].output_axons) == 2400
    assert nxsdk_board.summary()[0]["interchip_output_axons"] == expected.interchip


def test_greedy_one_chip_fan_out_builds(fan_out_model):
    nxsdk_board = build_on_standin(Greedy()(fan_out_model, n_chips=1))
    assert nxsdk_board.output_entries()[0] == (2400, 0)


# --- the stand-in's own tables and checks -------------------------------------


def one_core_board(n_synapses=8):
    board = NxsdkBoard(1, 1, [1], [[n_synapses]])
    return board, board.n2Chips[0].n2Cores[0]


@pytest.mark.parametrize(
    "table, index",
    [
        ("cxCfg", 1024),
        ("cxCfg", -1),
        ("cxMetaState", 256),
        ("vthProfileCfg", 8),
        ("synapseFmt", 16),
        ("stdpPreCfg", 3),
        ("synapseMap", 4096),
        ("synapses", 8),
    ],
)
def test_table_indexing_is_strict(table, index):
    _, core = one_core_board()
    message = f"chip 0, core 0, {table}: index {index} is outside"
    with pytest.raises(StandinOverflow, match=message):
        getattr(core, table)[index]


def write_format(core, fmt_id, cfg):
    core.synapseFmt[fmt_id].configure(
        **{field: getattr(cfg, param) for field, param in SYNAPSE_FMT_FIELDS.items()}
    )


def test_synapses_need_a_configured_nonzero_format():
    board, core = one_core_board()
    core.cxCfg[0].configure(bias=0)
    core.synapses[0].configure(CIdx=0, Wgt=1, synFmtId=0, LrnEn=0)
    with pytest.raises(StandinOverflow, match="format index 0"):
        board.check()

    core.synapses[0].configure(CIdx=0, Wgt=1, synFmtId=2, LrnEn=0)
    with pytest.raises(StandinOverflow, match="never written"):
        board.check()

    write_format(core, 2, SynapseConfig(weight_bits=7, n_synapses=63, fanout_type=1))
    board.check()


def test_synapse_memory_overflow():
    n_atoms, run = 50, 1000
    board, core = one_core_board(n_synapses=n_atoms * run)
    sparse_12_bit = SynapseConfig(
        weight_bits=7, idx_bits=7, n_synapses=63, fanout_type=1, compression=0
    )
    write_format(core, 1, sparse_12_bit)
    for i in range(run):
        core.cxCfg[i].configure(bias=0)
    cidx = np.tile(np.arange(run), n_atoms)
    core.synapses.record(np.arange(cidx.size), cidx, 1, 1, 0)
    entry = core.synapseMap[0]
    entry.synapsePtr, entry.synapseLen, entry.popSize = 0, run, n_atoms

    with pytest.raises(StandinOverflow, match="synapse memory") as info:
        board.check()
    # 781 full groups of 64 20-bit entries (1290 bits -> 1344, whole 64-bit words)
    # and one group of 16 entries (330 bits -> 384)
    assert info.value.index == 781 * 1344 + 384


def test_population_keys_count_once_and_interchip_once_more():
    board = NxsdkBoard(1, 2, [1, 1], [[8], [8]])
    core = board.n2Chips[0].n2Cores[0]
    # one population (popId 0) of three atoms to axon 5 of a core on this chip
    for atom in range(3):
        core.createPop32Axon(
            popId=0, srcCxId=atom, srcRelCxId=atom, dstChipId=0, dstCoreId=0,
            dstSynMapId=5,
        )
    assert core.output_entries() == (2, 0)
    # the same popId to the same axon number of a core on the other chip
    for atom in range(3):
        core.createPop32Axon(
            popId=0, srcCxId=atom, srcRelCxId=atom, dstChipId=1, dstCoreId=0,
            dstSynMapId=5,
        )
    assert core.output_entries() == (2 + 3, 1)
    # discrete axons count per call, also when they share a target
    for _ in range(2):
        core.createDiscreteAxon(srcCxId=3, dstChipId=1, dstCoreId=0, dstSynMapId=6)
    core.createDiscreteAxon(srcCxId=3, dstChipId=0, dstCoreId=0, dstSynMapId=6)
    assert core.output_entries() == (5 + 2 * 2 + 1, 3)
    # pop16 populations take one entry each
    core.createPop16Axon(
        popId=1, srcCxId=4, srcRelCxId=0, dstChipId=0, dstCoreId=0, dstSynMapId=7
    )
    assert core.output_entries() == (11, 3)
    assert len(core.output_axon_groups()) == 6


@pytest.mark.parametrize(
    "compression, wide_index, bad_synapse", [(0, 6, 6), (3, 4, 4), (3, 5, None)]
)
def test_index_width_is_checked_in_every_atom_run(compression, wide_index, bad_synapse):
    """One input axon with three atom runs of 4 synapses; run 1 has index 64, which
    a 6-bit index cannot hold where it is stored (sparse: every index; dense: only
    the first of a run)."""
    board, core = one_core_board(n_synapses=12)
    write_format(
        core, 1, SynapseConfig(weight_bits=7, idx_bits=1, n_synapses=63,
                               fanout_type=1, compression=compression),
    )
    for i in range(128):
        core.cxCfg[i].configure(bias=0)
    cidx = np.tile(np.arange(4), 3)
    cidx[wide_index] = 64
    core.synapses.record(np.arange(12), cidx, 1, 1, 0)
    entry = core.synapseMap[0]
    entry.synapsePtr, entry.synapseLen, entry.popSize = 0, 4, 3

    if bad_synapse is None:
        board.check()
        return
    with pytest.raises(StandinOverflow, match="6-bit") as info:
        board.check()
    assert (info.value.index, info.value.size) == (bad_synapse, 64)


def test_output_axon_to_unconfigured_input_axon():
    board, core = one_core_board()
    core.cxCfg[0].configure(bias=0)
    core.createDiscreteAxon(srcCxId=0, dstChipId=0, dstCoreId=0, dstSynMapId=5)
    with pytest.raises(StandinOverflow, match="input axon 5, which points at no"):
        board.check()
