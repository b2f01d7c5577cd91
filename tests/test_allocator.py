"""Tests of partitioner.allocator on real nengo / nengo-loihi models.

Only NxSDK is stood in (partitioner.nxsdk_standin); every network is built by
nengo-loihi itself.
"""

import warnings

import nengo
import nengo_loihi
import numpy as np
import pytest
from nengo_loihi.builder import Model
from nengo_loihi.decode_neurons import NoisyDecodeNeurons
from nengo_loihi.hardware.validate import validate_board

from partitioner import formats
from partitioner.allocator import (
    NOISE_FIELDS,
    MinCutAllocator,
    PlanAllocator,
    board_from_plan,
    pins_to_blocks,
    restore_model,
)
from partitioner.errors import CoreRuleError, ExtractionError, InfeasibleError, PlanError
from partitioner.extract import extract
from partitioner.hardware import get_board
from partitioner.nxsdk_standin import build_on_standin, standin_hardware
from partitioner.engine import partition
from partitioner.plan import Plan


# ---------------------------------------------------------------- networks
def chain_network(n_ens=10, seed=1):
    """A host input into a chain of small ensembles; one decode block per link."""
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: np.sin(6 * t), label="stim")
        ens = [
            nengo.Ensemble(20 + 5 * i, 1, radius=1 + 0.3 * i, label=f"e{i}")
            for i in range(n_ens)
        ]
        nengo.Connection(stim, ens[0])
        for a, b in zip(ens[:-1], ens[1:]):
            nengo.Connection(a, b)
        net.probe = nengo.Probe(ens[-1], synapse=0.01)
    net.ens = ens
    return net


def conv_network(seed=1):
    """``a`` sends pop32 axons through a convolution into ``b`` (sparse synapses)."""
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(np.full(16, 0.5), label="stim")
        a = nengo.Ensemble(16, 1, label="a")
        nengo.Connection(stim, a.neurons)
        b = nengo.Ensemble(
            2 * 2 * 3, 1, label="b",
            gain=nengo.dists.Choice([1.0]), bias=nengo.dists.Choice([0.0]),
        )
        conv = nengo.Convolution(
            3, (4, 4, 1), strides=(2, 2), kernel_size=(2, 2), padding="valid"
        )
        nengo.Connection(a.neurons, b.neurons, transform=conv)
        c = nengo.Ensemble(100, 1, label="c")
        nengo.Connection(stim[0], c)
        nengo.Probe(b.neurons)
    return net


def build_model(net, model=None, seed=0):
    """The nengo-loihi model of ``net`` (built for the emulator, discretized)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = nengo_loihi.Simulator(net, target="sim", model=model, seed=seed)
    sim.close()
    return sim.model


def noisy_model(net):
    """``net`` built with decode neurons that have compartment noise enabled."""
    model = Model(dt=0.001)
    model.decode_neurons = NoisyDecodeNeurons(2)
    return build_model(net, model=model)


def chunk_plan(n_blocks, per_core=4, n_chips=2):
    """Blocks ``per_core`` to a core in model order, cores dealt round-robin to chips."""
    block_core = np.arange(n_blocks) // per_core
    core_chip = np.arange(block_core.max() + 1) % n_chips
    return Plan.from_assignment(block_core, core_chip)


def noise_of(block):
    """The block's (noise_exp, noise_offset, noise_at_membrane)."""
    return tuple(getattr(block.compartment, f) for f in NOISE_FIELDS)


def block_index(model, label):
    return next(i for i, b in enumerate(model.blocks) if b.label == label)


def board_layout(board):
    """(chip, core, position-on-core, block label) for every block, in board order."""
    return [
        (k, c, p, block.label)
        for k, chip in enumerate(board.chips)
        for c, core in enumerate(chip.cores)
        for p, block in enumerate(core.blocks)
    ]


def board_formats(board):
    """Format key of every synapse on the board, in board order."""
    return [
        formats.format_key(core.get_synapse_cfg(s))
        for chip in board.chips
        for core in chip.cores
        for s in core.synapses
    ]


@pytest.fixture(scope="module")
def chain_model():
    return build_model(chain_network())


# ---------------------------------------------------------------- emission
def test_multi_block_plan_validates_and_builds(chain_model):
    model = chain_model
    blocks = list(model.blocks)
    plan = chunk_plan(len(blocks), per_core=4, n_chips=2)
    board = board_from_plan(model, plan)

    validate_board(board)
    nxsdk_board = build_on_standin(board)

    on_board = [b for chip in board.chips for core in chip.cores for b in core.blocks]
    assert sorted(map(id, on_board)) == sorted(map(id, blocks))
    assert board.n_chips == plan.n_chips
    assert sum(board.n_cores_per_chip) == plan.n_cores
    for c in range(plan.n_cores):
        chip = board.chips[plan.core_chip[c]]
        core = chip.cores[int(np.sum(plan.core_chip[:c] == plan.core_chip[c]))]
        assert core.blocks == [blocks[i] for i in plan.core_blocks(c)]
    assert board.inputs == list(model.inputs)
    assert board.probes == model.probes
    summary = nxsdk_board.summary()
    assert sum(s["compartments"] for s in summary) == sum(
        b.compartment.n_compartments for b in blocks
    )


def test_blocks_after_first_get_wide_formats(chain_model):
    model = chain_model
    blocks = list(model.blocks)
    plan = chunk_plan(len(blocks), per_core=3)
    board_from_plan(model, plan)
    wide = formats.index_bits_code(10)
    for c in range(plan.n_cores):
        first, *rest = plan.core_blocks(c)
        for s in blocks[first].synapses:
            assert s.synapse_cfg is formats.original_format(s)
        for i in rest:
            for s in blocks[i].synapses:
                assert s.synapse_cfg.idx_bits >= wide


def test_sparse_synapse_at_offset_gets_widened_copy():
    model = build_model(conv_network())
    a, b, c = (block_index(model, f"<Ensemble '{x}'>") for x in "abc")
    (synapse,) = list(model.blocks)[b].synapses
    original = synapse.synapse_cfg
    original_state = dict(vars(original))
    assert original.compression == 0  # sparse: every index is stored in idx_bits
    assert original.idx_bits < formats.index_bits_code(10)

    # ``a`` sends population axons, so it has a core of its own; ``b`` sits after ``c``
    block_core = np.zeros(len(model.blocks), dtype=int)
    block_core[[c, b]] = 1
    order = np.zeros(len(model.blocks))
    order[b] = 1  # after c
    plan = Plan.from_assignment(block_core, [0, 0], order=order)
    board = board_from_plan(model, plan)
    assert board.chips[0].cores[1].blocks == [list(model.blocks)[i] for i in (c, b)]

    assert synapse.synapse_cfg is not original
    assert synapse.synapse_cfg.idx_bits == formats.index_bits_code(10)
    assert formats.original_format(synapse) is original
    assert vars(original) == original_state
    validate_board(board)
    build_on_standin(board)

    restore_model(model)
    assert synapse.synapse_cfg is original


def test_allocating_twice_gives_identical_boards(chain_model):
    model = chain_model
    plan = chunk_plan(len(model.blocks), per_core=4)
    board1 = board_from_plan(model, plan)
    layout1, formats1 = board_layout(board1), board_formats(board1)
    noise1 = [noise_of(b) for b in model.blocks]
    board2 = board_from_plan(model, plan)
    assert board_layout(board2) == layout1
    assert board_formats(board2) == formats1
    assert noise1 == [noise_of(b) for b in model.blocks]


def test_restore_undoes_emission(chain_model):
    model = chain_model
    restore_model(model)
    before = [
        (s.synapse_cfg, noise_of(b))
        for b in model.blocks
        for s in b.synapses
    ]
    board_from_plan(model, chunk_plan(len(model.blocks), per_core=4))
    restore_model(model)
    after = [
        (s.synapse_cfg, noise_of(b))
        for b in model.blocks
        for s in b.synapses
    ]
    assert all(x[0] is y[0] and x[1] == y[1] for x, y in zip(before, after))


def test_plan_of_other_size_raises(chain_model):
    plan = chunk_plan(len(chain_model.blocks) - 1)
    with pytest.raises(PlanError, match="blocks"):
        board_from_plan(chain_model, plan)


def test_empty_chip_is_left_out(chain_model):
    n = len(chain_model.blocks)
    block_core = np.arange(n) // 10
    plan = Plan.from_assignment(block_core, [0, 2])
    board = board_from_plan(chain_model, plan)
    assert board.n_chips == 2
    validate_board(board)


# ---------------------------------------------------------------- noise
def test_inert_blocks_take_the_noisy_blocks_setting():
    model = noisy_model(chain_network(n_ens=3))
    blocks = list(model.blocks)
    e0 = block_index(model, "<Ensemble 'e0'>")
    dec = next(i for i, b in enumerate(blocks) if b.compartment.enable_noise.any())
    original = noise_of(blocks[e0])
    assert original != noise_of(blocks[dec])

    block_core = np.arange(len(blocks))
    block_core[block_core > max(e0, dec)] -= 1
    block_core[dec] = block_core[e0]
    plan = Plan.from_assignment(block_core, np.zeros(len(blocks) - 1, dtype=int))
    board = board_from_plan(model, plan)
    assert noise_of(blocks[e0]) == noise_of(blocks[dec])
    build_on_standin(board)

    restore_model(model)
    assert noise_of(blocks[e0]) == original


def test_noisy_blocks_with_different_settings_raise():
    model = noisy_model(chain_network(n_ens=3))
    blocks = list(model.blocks)
    noisy = [i for i, b in enumerate(blocks) if b.compartment.enable_noise.any()]
    assert len(noisy) >= 2
    blocks[noisy[1]].compartment.noise_offset += 1  # a different noise setting
    block_core = np.arange(len(blocks))
    block_core[noisy[1]] = block_core[noisy[0]]
    _, block_core = np.unique(block_core, return_inverse=True)
    plan = Plan.from_assignment(block_core, np.zeros(block_core.max() + 1, dtype=int))
    with pytest.raises(CoreRuleError, match="noise"):
        board_from_plan(model, plan)


def run_probe(net, seed, before_emulator=None, monkeypatch=None):
    """Probe data of ``net`` on the emulator; ``before_emulator(model)`` runs first."""
    if before_emulator is not None:
        real = nengo_loihi.simulator.EmulatorInterface

        def emulator(model, **kwargs):
            before_emulator(model)
            return real(model, **kwargs)

        monkeypatch.setattr(nengo_loihi.simulator, "EmulatorInterface", emulator)
    model = Model(dt=0.001)
    model.decode_neurons = NoisyDecodeNeurons(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(net, target="sim", model=model, seed=seed) as sim:
            sim.run(0.2)
    return sim.data[net.probe]


def test_noise_harmonization_leaves_emulator_output_unchanged(monkeypatch):
    """Blocks with noise off sharing a core with noisy decoders: same emulator output."""
    net = chain_network(n_ens=6)
    expected = run_probe(net, seed=3)
    changed = []

    def emit(model):
        blocks = list(model.blocks)
        before = [noise_of(b) for b in blocks]
        # ensemble i with the decoders of its output connection (noise on), the last
        # ensemble with its probe decoder (noise off): ensembles ahead of the blocks
        n_ens = len(net.ens)
        block_core = np.concatenate([np.arange(n_ens), np.arange(len(blocks) - n_ens)])
        plan = Plan.from_assignment(block_core, np.zeros(n_ens, dtype=int))
        board = board_from_plan(model, plan)
        validate_board(board)
        after = [noise_of(b) for b in blocks]
        changed.extend(i for i, (x, y) in enumerate(zip(before, after)) if x != y)

    actual = run_probe(net, seed=3, before_emulator=emit, monkeypatch=monkeypatch)
    assert changed, "the plan should have put blocks with different noise_exp together"
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------- pins
def test_pins_translate_objects_to_blocks():
    net = chain_network(n_ens=3)
    model = build_model(net)
    e1 = block_index(model, "<Ensemble 'e1'>")
    conn = next(c for c in net.all_connections if c.pre_obj is net.ens[0])
    dec = next(i for i, b in enumerate(model.blocks) if b.label == str(conn))
    assert pins_to_blocks(None, model) is None
    assert pins_to_blocks({net.ens[1]: 1, conn: 0}, model) == {e1: 1, dec: 0}
    assert pins_to_blocks({net.ens[1].neurons: 2}, model) == {e1: 2}


def test_pins_of_unknown_objects_raise():
    net = chain_network(n_ens=3)
    model = build_model(net)
    with net:
        other = nengo.Ensemble(5, 1)
    with pytest.raises(PlanError, match="no block"):
        pins_to_blocks({other: 0}, model)
    stim = net.nodes[0]
    with pytest.raises(PlanError, match="no block"):
        pins_to_blocks({stim: 0}, model)
    with pytest.raises(PlanError, match="integer"):
        pins_to_blocks({net.ens[0]: "chip 1"}, model)


# ---------------------------------------------------------------- allocators
def test_mincut_rejects_measured_rates():
    with pytest.raises(ExtractionError, match="PlanAllocator"):
        MinCutAllocator(rates="measured")


def test_plan_allocator_rejects_non_plans():
    with pytest.raises(PlanError, match="Plan"):
        PlanAllocator(42)


# ---------------------------------------------------------------- integration
def test_mincut_allocator_twice_gives_identical_boards(chain_model):
    allocator = MinCutAllocator(seed=2)
    board1 = allocator(chain_model, 2)
    plan1 = allocator.last_plan
    assert allocator.last_graph.n_blocks == len(chain_model.blocks)
    layout1, formats1 = board_layout(board1), board_formats(board1)
    board2 = allocator(chain_model, 2)
    assert allocator.last_plan is not plan1
    assert np.array_equal(allocator.last_plan.layout, plan1.layout)
    assert np.array_equal(allocator.last_plan.core_ptr, plan1.core_ptr)
    assert board_layout(board2) == layout1
    assert board_formats(board2) == formats1
    assert sum(board2.n_cores_per_chip) < len(chain_model.blocks)  # blocks share cores
    validate_board(board2)
    build_on_standin(board2)


def test_mincut_allocator_honours_pins():
    net = chain_network()
    model = build_model(net)
    allocator = MinCutAllocator(spread=True, pins={net.ens[3]: 1, net.ens[4]: 0})
    board = allocator(model, 2)
    chip_of = {
        block.label: k
        for k, chip in enumerate(board.chips)
        for core in chip.cores
        for block in core.blocks
    }
    assert chip_of["<Ensemble 'e3'>"] == 1
    assert chip_of["<Ensemble 'e4'>"] == 0


def test_plan_allocator_replays_saved_plan(chain_model, tmp_path):
    graph = extract(chain_model)
    plan = partition(graph, n_chips=2, spread=True, seed=1)
    path = tmp_path / "plan.json"
    plan.save(path)

    expected = board_from_plan(chain_model, plan, graph)
    layout, fmts = board_layout(expected), board_formats(expected)
    for allocator in (PlanAllocator(path), PlanAllocator(str(path)), PlanAllocator(plan)):
        board = allocator(chain_model, 2)
        assert board_layout(board) == layout
        assert board_formats(board) == fmts
    validate_board(board)
    build_on_standin(board)


def test_plan_allocator_finds_sub_board_of_plan(chain_model):
    board = get_board("nahuku32").with_chips(4)
    plan = partition(extract(chain_model), n_chips=2, board=board, spread=True)
    assert plan.board == board.name
    allocator = PlanAllocator(plan)
    assert allocator(chain_model, 2).n_chips == 2


def test_mincut_allocator_takes_ensemble_rates():
    net = chain_network(n_ens=4)
    model = build_model(net)
    rates = {ens: np.full(ens.n_neurons, 20.0) for ens in net.ens}
    allocator = MinCutAllocator(rates=rates, spread=True)
    board = allocator(model, 2)
    assert allocator.last_graph.rates == "ensemble_rates"
    assert board.n_chips == 2
    validate_board(board)


def test_plan_allocator_rejects_plan_of_other_model(chain_model):
    other = build_model(chain_network(n_ens=4))
    plan = partition(extract(other), n_chips=1)
    with pytest.raises(PlanError, match="another model"):
        PlanAllocator(plan)(chain_model, 2)


def test_plan_allocator_rejects_too_few_chips(chain_model):
    plan = partition(extract(chain_model), n_chips=2, spread=True)
    with pytest.raises(InfeasibleError, match="n_chips"):
        PlanAllocator(plan)(chain_model, 1)


def test_plan_allocator_rejects_rule_breaking_plan():
    model = build_model(conv_network())
    graph = extract(model)
    # everything on one core: ``a`` sends population axons and must be alone
    plan = Plan.from_assignment(
        np.zeros(graph.n_blocks, dtype=int), [0], fingerprint=graph.fingerprint()
    )
    with pytest.raises(CoreRuleError, match="per-core rule"):
        PlanAllocator(plan)(model, 1)


def test_simulator_constructs_with_mincut_allocator():
    net = chain_network()
    allocator = MinCutAllocator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with standin_hardware() as hw:
            with nengo_loihi.Simulator(
                net, target="loihi", precompute=True,
                hardware_options={"allocator": allocator, "n_chips": 2},
            ) as sim:
                sim.run_steps(5)
    board = sim.sims["loihi"].board
    assert allocator.last_plan.n_cores == sum(board.n_cores_per_chip)
    assert allocator.last_plan.n_cores < len(sim.model.blocks)
    assert len(hw.boards) == 1
    assert sim.data[net.probe].shape == (5, 1)


def test_simulator_replays_plan_made_from_measured_rates():
    net = chain_network()
    graph = extract(net, rates="measured", duration=0.1, progress=False, seed=0)
    plan = partition(graph, n_chips=2, spread=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with standin_hardware():
            with nengo_loihi.Simulator(
                net, target="loihi", precompute=True,
                hardware_options={"allocator": PlanAllocator(plan), "n_chips": 2},
            ) as sim:
                sim.run_steps(2)
    assert sim.sims["loihi"].board.n_chips == 2
