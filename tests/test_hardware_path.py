"""nengo-loihi's real hardware path accepts the boards this package emits.

Every board here goes through nengo-loihi's own ``validate_board`` and
``build_board``; only NxSDK is stood in (`partitioner.nxsdk_standin`, whose tables
have Loihi's sizes and whose checks reject indices past them). Nothing of nengo or
nengo-loihi is replaced.

1. Conformance: every bundled scenario x every strategy x board (``nahuku32``,
   ``kapoho_bay``, a plan spread over four chips).
2. Random networks (Hypothesis): mixed neuron types, noisy decode neurons, learning,
   convolutions with population axons; the emulator output is unchanged by emitting
   a board.
3. Plans that break a per-core rule raise our typed errors before nengo-loihi's
   asserts would fire; bypassing the checks, nengo-loihi's build fails.
4. ``nengo_loihi.Simulator(net, target="loihi", hardware_options=...)`` with our
   allocators.
5. Sparse synapses at a compartment offset > 0.

Each scenario's model is built once per module. Run with ``-s`` to see timings. The
largest stand-in builds are marked ``slow`` (deselect with ``-m "not slow"``).
"""

import contextlib
import time
import warnings
from collections import defaultdict

import nengo
import nengo_loihi
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
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

from partitioner import formats, packing
from partitioner.allocator import (
    MinCutAllocator,
    PlanAllocator,
    board_from_plan,
    restore_model,
)
from partitioner.engine import partition
from partitioner.errors import CoreRuleError, InfeasibleError
from partitioner.extract import extract
from partitioner.hardware import get_board
from partitioner.metrics import chip_lower_bound
from partitioner.nxsdk_standin import StandinOverflow, build_on_standin, standin_hardware
from partitioner.packing import check_plan, pack
from partitioner.plan import Plan
from partitioner.scenario import load_scenario

# ---------------------------------------------------------------- parameters
SCENARIOS = ["mnist_conv", "resnet_small", "random_ensembles", "modular", "spa_like",
             "cifar10_convnet"]
#: Built on demand only by tests marked slow (its model alone takes about a minute,
#: and each stand-in build of its ~1,000 cores 3-4 minutes: only the boards of two
#: strategies are built).
SLOW_SCENARIOS = ["modular_large"]
SLOW_SCENARIO_BUILDS = ("metis", "first-fit")
STRATEGIES = {
    "metis": {},
    "ilp": {"time_limit": 2.0},
    "first-fit": {},
    "metis-first-fit": {},
}
#: Board cases: the board, the chips asked for (None: all of the board's) and spread.
#: A spread plan uses four chips, or two more than the model needs at least.
BOARD_CASES = {
    "nahuku32": ("nahuku32", None, False),
    "kapoho_bay": ("kapoho_bay", None, False),
    "spread": ("nahuku32", 4, True),
}
#: Stand-in builds that run by default, per scenario: ``(strategies, board cases)``;
#: the other builds are marked slow. nengo-loihi's ``build_board`` takes time in
#: proportion to synapses: about 1 s for mnist_conv, 5 s for resnet_small and
#: spa_like, 15-20 s for modular (4.4 million synapses), 20-35 s for
#: random_ensembles on a 2-core machine. (Plans for nahuku32 and kapoho_bay that
#: use one chip are the same plan, built once.)
FAST_BUILDS = {
    "mnist_conv": (set(STRATEGIES), set(BOARD_CASES)),
    "spa_like": (set(STRATEGIES), set(BOARD_CASES)),
    "resnet_small": ({"metis"}, set(BOARD_CASES)),
    "modular": ({"metis"}, {"spread"}),
    "random_ensembles": ({"metis"}, {"spread"}),
    "cifar10_convnet": ({"metis", "ilp"}, {"nahuku32"}),
}


def report(message):
    """Print one progress line (visible with ``pytest -s``).

    Parameters
    ----------
    message : str
    """
    print(f"[hardware-path] {message}", flush=True)


# ---------------------------------------------------------------- model cache
class ScenarioModels:
    """Bundled scenarios built once, with their plans, boards and timings.

    Building a scenario model, making a plan and building a board on the stand-in
    are each done once per module; tests share the results. Timings are collected
    per scenario and printed when the module finishes.
    """

    def __init__(self):
        self._scenarios = {}
        self._plans = {}
        self._built = {}
        self.timings = defaultdict(lambda: defaultdict(float))
        self.counts = defaultdict(lambda: defaultdict(int))

    def _time(self, name, what, seconds):
        self.timings[name][what] += seconds
        self.counts[name][what] += 1

    def get(self, name):
        """The network, its nengo-loihi model and its traffic graph.

        Parameters
        ----------
        name : str
            A bundled scenario.

        Returns
        -------
        network : nengo.Network
        model : nengo_loihi.builder.Model
            ``sim.model`` of ``nengo_loihi.Simulator(network, target="sim")``.
        graph : TrafficGraph
        """
        if name not in self._scenarios:
            t0 = time.perf_counter()
            network = load_scenario(name).network
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with nengo_loihi.Simulator(
                    network, target="sim", progress_bar=False
                ) as sim:
                    pass
            t1 = time.perf_counter()
            graph = extract(sim.model)
            t2 = time.perf_counter()
            self._time(name, "model build", t1 - t0)
            self._time(name, "extract", t2 - t1)
            report(
                f"{name}: model built in {t1 - t0:.1f} s, graph extracted in "
                f"{t2 - t1:.2f} s ({graph.n_blocks} blocks, {len(sim.model.inputs)} "
                f"host inputs)"
            )
            self._scenarios[name] = (network, sim.model, graph)
        return self._scenarios[name]

    def allocate(self, name, strategy, case):
        """Allocate ``name`` twice with `MinCutAllocator`; cached.

        Parameters
        ----------
        name : str
        strategy : str
        case : str
            A key of `BOARD_CASES`.

        Returns
        -------
        plans : tuple of Plan
            The plans of the two allocations.
        boards : tuple of nengo_loihi.hardware.nxsdk_objects.Board
            The boards of the two allocations (not built).
        """
        key = (name, strategy, case)
        if key not in self._plans:
            _, model, graph = self.get(name)
            board_name, n_chips, spread = BOARD_CASES[case]
            board = get_board(board_name)
            n_chips = spread_chips(graph, board, n_chips)
            if case == "kapoho_bay" and chip_lower_bound(graph, board) > board.n_chips:
                pytest.skip(f"{name} needs more chips than kapoho_bay has")
            allocator = MinCutAllocator(
                strategy=strategy, board=board_name, spread=spread, seed=0,
                **STRATEGIES[strategy],
            )
            plans, boards = [], []
            for _ in range(2):
                t0 = time.perf_counter()
                try:
                    boards.append(allocator(model, n_chips))
                except InfeasibleError as err:
                    if case != "kapoho_bay":
                        raise
                    pytest.skip(f"{name} does not fit kapoho_bay with {strategy}: {err}")
                plans.append(allocator.last_plan)
                self._time(name, "allocate", time.perf_counter() - t0)
            self._plans[key] = (tuple(plans), tuple(boards))
        return self._plans[key]

    def build(self, name, plan, limits):
        """Build the board of ``plan`` on the stand-in, once per distinct placement.

        A plan's board depends only on the model, the placement and the core limits
        (the same plan always gives the same board, tested in `test_conformance`),
        so e.g. the one-chip plans for nahuku32 and kapoho_bay share one build.

        Parameters
        ----------
        name : str
        plan : Plan
        limits : CoreLimits

        Returns
        -------
        board : nengo_loihi.hardware.nxsdk_objects.Board
        summary : list of dict
            `NxsdkBoard.summary` of the built board.
        """
        key = (name, placement(plan), limits)
        if key not in self._built:
            _, model, graph = self.get(name)
            t0 = time.perf_counter()
            board = board_from_plan(model, plan, graph, limits=limits)
            validate_board(board)
            t1 = time.perf_counter()
            summary = build_on_standin(board).summary()
            t2 = time.perf_counter()
            self._time(name, "emit + validate", t1 - t0)
            self._time(name, "stand-in build", t2 - t1)
            report(
                f"{name}: {plan.strategy} plan, {plan.n_cores} cores on {plan.n_chips} "
                f"chip(s): emitted and validated in {t1 - t0:.2f} s, built on the "
                f"stand-in in {t2 - t1:.1f} s"
            )
            self._built[key] = (board, summary)
        return self._built[key]

    def print_timings(self):
        """Print the collected timings, one line per scenario."""
        if not self.timings:
            return
        report("timings per scenario (seconds, count):")
        for name, timings in self.timings.items():
            parts = ", ".join(
                f"{what} {seconds:.1f} ({self.counts[name][what]})"
                for what, seconds in timings.items()
            )
            report(f"  {name}: {parts}")


@pytest.fixture(scope="module")
def scenarios():
    """`ScenarioModels` shared by the module; prints timings at the end."""
    cache = ScenarioModels()
    yield cache
    cache.print_timings()


# ---------------------------------------------------------------- helpers
def spread_chips(graph, board, n_chips):
    """Chips to ask for in a board case.

    Parameters
    ----------
    graph : TrafficGraph
    board : BoardSpec
    n_chips : int or None
        From `BOARD_CASES`: None for all of the board's chips, else the chips of a
        spread plan (raised to two more than the model needs at least).

    Returns
    -------
    int
    """
    if n_chips is None:
        return board.n_chips
    return min(board.n_chips, max(n_chips, chip_lower_bound(graph, board) + 2))


def placement(plan):
    """A hashable key of where ``plan`` puts every block.

    Parameters
    ----------
    plan : Plan

    Returns
    -------
    tuple of bytes
    """
    return tuple(np.asarray(a, dtype=np.int64).tobytes()
                 for a in (plan.layout, plan.core_ptr, plan.core_chip))


def board_blocks(board):
    """Every block on ``board``, in board order.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board

    Returns
    -------
    list of LoihiBlock
    """
    return [b for chip in board.chips for core in chip.cores for b in core.blocks]


def board_layout(board):
    """(chip, core, position on core, block label) of every block, in board order.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board

    Returns
    -------
    list of tuple
    """
    return [
        (k, c, p, block.label)
        for k, chip in enumerate(board.chips)
        for c, core in enumerate(chip.cores)
        for p, block in enumerate(core.blocks)
    ]


def board_formats(board):
    """The synapse format of every synapse on ``board``, as comparable keys.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board

    Returns
    -------
    list of tuple
    """
    return [
        formats.format_key(core.get_synapse_cfg(s))
        for chip in board.chips
        for core in chip.cores
        for s in core.synapses
    ]


def assert_each_block_once(model, board):
    """Every block of ``model`` is on ``board`` exactly once, and nothing else is.

    Parameters
    ----------
    model : nengo_loihi.builder.Model
    board : nengo_loihi.hardware.nxsdk_objects.Board
    """
    on_board = [id(b) for b in board_blocks(board)]
    assert len(on_board) == len(set(on_board))
    assert sorted(on_board) == sorted(id(b) for b in model.blocks)


def max_blocks_per_core(board):
    """The most blocks any core of ``board`` holds.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board

    Returns
    -------
    int
    """
    return max(len(core.blocks) for chip in board.chips for core in chip.cores)


def build_model(net, noisy=False, seed=0):
    """The discretized nengo-loihi model of ``net`` (what ``target="sim"`` builds).

    Parameters
    ----------
    net : nengo.Network
    noisy : bool, optional
        Use decode neurons with compartment noise enabled (`NoisyDecodeNeurons`).
    seed : int, optional
        Simulator seed.

    Returns
    -------
    nengo_loihi.builder.Model
    """
    model = Model(dt=0.001)
    if noisy:
        model.decode_neurons = NoisyDecodeNeurons(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(
            net, target="sim", model=model, seed=seed, progress_bar=False
        ) as sim:
            pass
    return sim.model


def block_index(model, label):
    """Index in ``model.blocks`` of the block labelled ``label``.

    Parameters
    ----------
    model : nengo_loihi.builder.Model
    label : str

    Returns
    -------
    int
    """
    (i,) = [i for i, b in enumerate(model.blocks) if b.label == label]
    return i


def shared_core_plan(graph, shared, n_chips=1):
    """A plan putting the blocks ``shared`` on core 0, in that order, and every other
    block on a core of its own; cores dealt round-robin to ``n_chips`` chips.

    Parameters
    ----------
    graph : TrafficGraph
    shared : list of int
        Block indices for core 0, in on-core order.
    n_chips : int, optional

    Returns
    -------
    Plan
    """
    shared = [int(b) for b in shared]
    others = [b for b in range(graph.n_blocks) if b not in shared]
    layout = shared + others
    core_ptr = [0] + list(range(len(shared), graph.n_blocks + 1))
    n_cores = len(core_ptr) - 1
    return Plan(
        layout=layout, core_ptr=core_ptr, core_chip=np.arange(n_cores) % n_chips,
        fingerprint=graph.fingerprint(),
    )


def raw_board(model, plan):
    """The board nengo-loihi's own `Core` API makes for ``plan``, with none of this
    package's checks or adjustments (no rule checks, no widened formats, no shared
    noise settings).

    Parameters
    ----------
    model : nengo_loihi.builder.Model
    plan : Plan

    Returns
    -------
    nengo_loihi.hardware.nxsdk_objects.Board
    """
    restore_model(model)
    blocks = list(model.blocks)
    board = Board()
    allocator = Allocator()
    for spike_input in model.inputs:
        allocator.input_to_board(spike_input, board)
    chips = {}
    for c in np.argsort(plan.core_chip, kind="stable"):
        k = int(plan.core_chip[c])
        if k not in chips:
            chips[k] = board.new_chip()
        core = chips[k].new_core()
        core_blocks = [blocks[i] for i in plan.core_blocks(c)]
        for block in core_blocks:
            core.add_block(block)
        cfgs, core.compartment_cfg_idxs = core_compartment_cfgs(core)
        for cfg in cfgs:
            core.add_compartment_cfg(cfg)
        cfgs, core.vth_cfg_idxs = core_vth_cfgs(core)
        for cfg in cfgs:
            core.add_vth_cfg(cfg)
        for block in core_blocks:
            for synapse in block.synapses:
                core.add_synapse(synapse)
        cfgs, core.stdp_pre_cfg_idxs = core_stdp_pre_cfgs(core)
        for cfg in cfgs:
            core.add_stdp_pre_cfg(cfg)
        core.stdp_pre_cfg_idx = None
        core.stdp_cfg_idx = None
    board.probes.extend(model.probes)
    return board


def failing_statement(excinfo):
    """Source text of the statement that raised, for checking which assert fired.

    Parameters
    ----------
    excinfo : pytest.ExceptionInfo

    Returns
    -------
    str
    """
    return str(excinfo.traceback[-1].statement)


# ================================================================ 1. conformance
def conformance_params(scenarios, marks=()):
    """``(scenario, strategy, board case)`` parameters for the scenarios given.

    Parameters
    ----------
    scenarios : list of str
    marks : tuple, optional
        pytest marks for every parameter.

    Returns
    -------
    list of pytest.param
    """
    return [
        pytest.param(name, strategy, case, marks=marks, id=f"{name}-{strategy}-{case}")
        for name in scenarios
        for strategy in STRATEGIES
        for case in BOARD_CASES
    ]


def build_params():
    """Stand-in build parameters; those not in `FAST_BUILDS` are marked slow."""
    params = []
    for name in SCENARIOS + SLOW_SCENARIOS:
        strategies, cases = FAST_BUILDS.get(name, ((), ()))
        for strategy in STRATEGIES:
            if name in SLOW_SCENARIOS and strategy not in SLOW_SCENARIO_BUILDS:
                continue
            for case in BOARD_CASES:
                slow = strategy not in strategies or case not in cases
                params.append(pytest.param(
                    name, strategy, case, id=f"{name}-{strategy}-{case}",
                    marks=(pytest.mark.slow,) if slow else (),
                ))
    return params


@pytest.mark.parametrize(
    "name, strategy, case",
    conformance_params(SCENARIOS)
    + conformance_params(SLOW_SCENARIOS, marks=(pytest.mark.slow,)),
)
def test_conformance(scenarios, name, strategy, case):
    """Plan, emit and validate; every block once; blocks share cores; same twice."""
    _, model, graph = scenarios.get(name)
    (plan, plan2), (board, board2) = scenarios.allocate(name, strategy, case)
    board_name, n_chips, spread = BOARD_CASES[case]
    spec = get_board(board_name)

    assert np.array_equal(np.sort(plan.layout), np.arange(len(model.blocks)))
    check_plan(graph, plan, spec)
    assert plan.n_chips <= spec.n_chips
    if spread:
        assert plan.n_chips == spread_chips(graph, spec, n_chips)
    assert board.n_chips == plan.n_chips
    assert sum(board.n_cores_per_chip) == plan.n_cores
    validate_board(board)
    assert_each_block_once(model, board)
    assert board.inputs == list(model.inputs)
    if (~graph.alone).sum() > graph.n_blocks // 2:
        assert max_blocks_per_core(board) > 1, "no core holds more than one block"
        assert plan.n_cores < len(model.blocks)
    else:  # e.g. cifar10_convnet: every block but the last sends population axons
        assert plan.n_cores <= len(model.blocks)

    # allocating the same model twice: same plan, same board, same formats
    if strategy == "ilp" and plan.n_chips > 1:
        # CP-SAT searches on several threads and may return another plan of the
        # same cost (see test_ilp_allocates_the_same_plan_twice)
        if plan.info.get("status") == plan2.info.get("status") == "OPTIMAL":
            assert plan2.objective_value == pytest.approx(plan.objective_value)
        return
    assert np.array_equal(plan2.layout, plan.layout)
    assert np.array_equal(plan2.core_ptr, plan.core_ptr)
    assert np.array_equal(plan2.core_chip, plan.core_chip)
    assert board_layout(board2) == board_layout(board)
    assert board_formats(board2) == board_formats(board)


@pytest.mark.parametrize("name, strategy, case", build_params())
def test_conformance_builds_on_standin(scenarios, name, strategy, case):
    """nengo-loihi's ``build_board`` builds the board on the NxSDK stand-in."""
    _, model, graph = scenarios.get(name)
    (plan, _), _ = scenarios.allocate(name, strategy, case)
    limits = get_board(BOARD_CASES[case][0]).limits
    board, summary = scenarios.build(name, plan, limits)

    assert_each_block_once(model, board)
    assert len(summary) == plan.n_cores
    blocks = list(model.blocks)
    per_core = [
        sum(blocks[i].compartment.n_compartments for i in plan.core_blocks(c))
        for c in range(plan.n_cores)
    ]
    chip_order = np.argsort(plan.core_chip, kind="stable")
    assert [s["compartments"] for s in summary] == [per_core[c] for c in chip_order]
    assert all(s["compartments"] <= 1024 for s in summary)
    assert all(s["vth_cfgs"] <= 7 for s in summary)
    # Output axon entries: the plan's count for its chips is what the build creates
    # (the stand-in counts them from the create*Axon calls).
    entries, interchip = packing.core_entries(graph, plan.block_core, plan.block_chip,
                                              plan.n_cores)
    assert [s["output_axons"] for s in summary] == entries[chip_order].tolist()
    assert [s["interchip_output_axons"] for s in summary] == interchip[chip_order].tolist()
    assert entries.max() <= 4096


# ================================================================ 2. random networks
#: Neuron types nengo-loihi 1.1 builds on chip (its builders in builder/ensemble.py).
NEURON_TYPES = {
    "LIF": nengo.LIF,
    "LIF(min_voltage=-1)": lambda: nengo.LIF(min_voltage=-1),
    "SpikingRectifiedLinear": nengo.SpikingRectifiedLinear,
    "RegularSpiking(LIFRate)": lambda: nengo.RegularSpiking(nengo.LIFRate()),
    "RegularSpiking(RectifiedLinear)": lambda: nengo.RegularSpiking(
        nengo.RectifiedLinear()
    ),
}
#: Ensembles targeted by a convolution need one gain and bias for all neurons.
CONV_TARGET = dict(
    neuron_type=nengo.SpikingRectifiedLinear(),
    gain=nengo.dists.Choice([1.0]),
    bias=nengo.dists.Choice([0.0]),
)


@st.composite
def network_specs(draw):
    """A random network description (see `make_network`).

    Returns
    -------
    dict
    """
    n_ens = draw(st.integers(2, 5))
    ensembles = [
        (draw(st.integers(5, 400)), draw(st.sampled_from(sorted(NEURON_TYPES))))
        for _ in range(n_ens)
    ]
    pairs = st.tuples(st.integers(0, n_ens - 1), st.integers(0, n_ens - 1))
    connections = draw(st.lists(
        st.tuples(pairs, st.sampled_from(["decoded", "neurons"])), max_size=6
    ))
    conv = draw(st.none() | st.fixed_dictionaries({
        "size": st.sampled_from([6, 8]),
        "filters": st.sampled_from([2, 4]),
        "strides": st.sampled_from([1, 2]),
        "layers": st.integers(1, 2),
        "pop_type": st.sampled_from([16, 32]),
    }))
    if conv is not None and conv["pop_type"] == 16:
        conv["filters"] = 4  # pop16 compartment bases must be multiples of 4
    learning = draw(st.none() | pairs.filter(lambda p: p[0] != p[1]))
    return {
        "ensembles": ensembles,
        "connections": [(a, b, kind) for (a, b), kind in connections],
        "conv": conv,
        "learning": learning,
        "noisy": draw(st.booleans()),
        "n_chips": draw(st.integers(1, 3)),
        "spread": draw(st.booleans()),
        "seed": draw(st.integers(0, 1000)),
    }


def make_network(spec):
    """Build the nengo network a `network_specs` description asks for.

    A sine input drives ensemble 0. With ``noisy``, ensemble 0 also feeds the last
    ensemble through a decoded connection. Connections are decoded (``"decoded"``) or
    neuron-to-neuron with random weights (``"neurons"``). ``conv`` adds an image
    ensemble fed from a node and 1-2 convolution layers reading it through
    population axons of the given ``pop_type``. ``learning`` adds a PES connection
    with an error connection. Every ensemble is probed.

    Parameters
    ----------
    spec : dict

    Returns
    -------
    nengo.Network
        With ``net.probes_list``, the probes in creation order.
    """
    rng = np.random.RandomState(spec["seed"])
    with nengo.Network(seed=spec["seed"]) as net:
        nengo_loihi.add_params(net)
        stim = nengo.Node(lambda t: np.sin(8 * t), label="stim")
        ens = [
            nengo.Ensemble(n, 1, neuron_type=NEURON_TYPES[kind](), label=f"e{i}")
            for i, (n, kind) in enumerate(spec["ensembles"])
        ]
        nengo.Connection(stim, ens[0])
        if spec["noisy"]:
            # decode neurons (where the noise is) sit on decoded on-chip connections
            nengo.Connection(ens[0], ens[-1])
        for a, b, kind in spec["connections"]:
            if kind == "decoded":
                transform = rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)
                nengo.Connection(ens[a], ens[b], transform=transform)
            else:
                # small enough that one spike stays within Loihi's weight and
                # threshold ranges (nengo-loihi's discretization fails otherwise)
                n_pre, n_post = ens[a].n_neurons, ens[b].n_neurons
                weights = rng.normal(scale=0.05 / n_pre, size=(n_post, n_pre))
                nengo.Connection(ens[a].neurons, ens[b].neurons, transform=weights)
        probes = [nengo.Probe(e, synapse=0.01) for e in ens]
        conv = spec["conv"]
        if conv is not None:
            side, filters = conv["size"], conv["filters"]
            image = nengo.Ensemble(side * side * 4, 1, label="image", **CONV_TARGET)
            nengo.Connection(
                nengo.Node(rng.uniform(0, 1, size=image.n_neurons), label="pixels"),
                image.neurons,
            )
            for k in range(conv["layers"]):
                transform = nengo.Convolution(
                    filters, (side, side, 4), kernel_size=(3, 3),
                    strides=(conv["strides"],) * 2, channels_last=True,
                    init=rng.uniform(-0.3, 0.3, size=(3, 3, 4, filters)),
                )
                layer = nengo.Ensemble(
                    transform.output_shape.size, 1, label=f"conv{k}", **CONV_TARGET
                )
                c = nengo.Connection(image.neurons, layer.neurons, transform=transform)
                net.config[c].pop_type = conv["pop_type"]
                probes.append(nengo.Probe(layer.neurons))
        if spec["learning"] is not None:
            a, b = spec["learning"]
            learned = nengo.Connection(
                ens[a], ens[b], learning_rule_type=nengo.PES(learning_rate=1e-4)
            )
            nengo.Connection(ens[b], learned.learning_rule)
            nengo.Connection(stim, learned.learning_rule, transform=-1)
    net.probes_list = probes
    return net


@contextlib.contextmanager
def before_emulator(callback):
    """Call ``callback(model)`` inside ``nengo_loihi.Simulator`` once its model is
    built, just before the real emulator is made from it.

    The emulator copies the blocks' parameters when it is made, so this shows what
    an emission leaves on the model's own objects. nengo-loihi's classes are not
    replaced: its ``EmulatorInterface`` runs as usual, after the callback.

    Parameters
    ----------
    callback : callable
        Takes the built `nengo_loihi.builder.Model`.
    """
    real = nengo_loihi.simulator.EmulatorInterface

    def emulator(model, **kwargs):
        callback(model)
        return real(model, **kwargs)

    nengo_loihi.simulator.EmulatorInterface = emulator
    try:
        yield
    finally:
        nengo_loihi.simulator.EmulatorInterface = real


def run_emulator(net, noisy, seed, steps=20):
    """Probe data of ``net`` after ``steps`` steps of nengo-loihi's emulator.

    Parameters
    ----------
    net : nengo.Network
        From `make_network`.
    noisy : bool
        Use `NoisyDecodeNeurons` (compartment noise on in decode blocks).
    seed : int
    steps : int, optional

    Returns
    -------
    data : list of ndarray
        One per probe of ``net.probes_list``.
    model : nengo_loihi.builder.Model
        The model the emulator ran.
    """
    model = Model(dt=0.001)
    if noisy:
        model.decode_neurons = NoisyDecodeNeurons(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(
            net, target="sim", model=model, seed=seed, progress_bar=False
        ) as sim:
            sim.run_steps(steps)
    return [sim.data[p] for p in net.probes_list], sim.model


def emitted_settings(block):
    """What an emission may change on a block: its synapse formats and noise setting.

    Parameters
    ----------
    block : LoihiBlock

    Returns
    -------
    tuple
    """
    comp = block.compartment
    return (
        tuple(formats.format_key(s.synapse_cfg) for s in block.synapses),
        (comp.noise_exp, comp.noise_offset, comp.noise_at_membrane),
    )


@settings(
    max_examples=15, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(network_specs())
@example({  # every feature at once, pop32, spread over three chips
    "ensembles": [(400, "LIF"), (120, "LIF(min_voltage=-1)"),
                  (60, "RegularSpiking(RectifiedLinear)"), (5, "SpikingRectifiedLinear")],
    "connections": [(0, 1, "decoded"), (1, 2, "neurons"), (2, 3, "decoded"),
                    (3, 0, "neurons"), (1, 1, "decoded")],
    "conv": {"size": 8, "filters": 4, "strides": 1, "layers": 2, "pop_type": 32},
    "learning": (0, 3), "noisy": True, "n_chips": 3, "spread": True, "seed": 7,
})
@example({  # pop16 conv layers and noise, spread over two chips
    "ensembles": [(50, "RegularSpiking(LIFRate)"), (200, "LIF")],
    "connections": [(0, 1, "neurons"), (1, 0, "decoded")],
    "conv": {"size": 6, "filters": 4, "strides": 2, "layers": 2, "pop_type": 16},
    "learning": None, "noisy": True, "n_chips": 2, "spread": True, "seed": 3,
})
def test_random_networks_build_on_standin(spec):
    """MinCutAllocator boards of random networks validate and build; emitting a
    board leaves the emulator's output unchanged."""
    net = make_network(spec)
    expected, plain_model = run_emulator(net, spec["noisy"], spec["seed"])

    emitted = {}

    def allocate(model):
        n_chips = spec["n_chips"]
        spread = spec["spread"] and len(model.blocks) >= n_chips
        allocator = MinCutAllocator(spread=spread)
        board = allocator(model, n_chips)
        validate_board(board)
        build_on_standin(board)
        assert_each_block_once(model, board)
        assert np.array_equal(np.sort(allocator.last_plan.layout),
                              np.arange(len(model.blocks)))
        if spread:
            assert board.n_chips == n_chips
        emitted.update(model=model, board=board, graph=allocator.last_graph)

    with before_emulator(allocate):
        actual, _ = run_emulator(net, spec["noisy"], spec["seed"])

    model, graph, board = emitted["model"], emitted["graph"], emitted["board"]
    if spec["learning"] is not None:
        assert graph.learning.any()
    if spec["conv"] is not None:
        assert graph.pop_sender.any()
    features = [kind for _, kind in spec["ensembles"]]
    if spec["conv"] is not None:
        conv = spec["conv"]
        features.append(f"{conv['layers']} conv layer(s), pop{conv['pop_type']}")
    if graph.learning.any():
        features.append("PES")
    if any(b.compartment.enable_noise.any() for b in model.blocks):
        features.append("noisy decode neurons")
    changed = sum(
        emitted_settings(a) != emitted_settings(b)
        for a, b in zip(plain_model.blocks, model.blocks)
    )
    report(
        f"random network: {len(model.blocks)} blocks on {sum(board.n_cores_per_chip)} "
        f"cores, {board.n_chips} chip(s), up to {max_blocks_per_core(board)} blocks "
        f"per core, {changed} block(s) with widened formats or shared noise settings "
        f"while the emulator ran; {', '.join(features)}"
    )
    for a, b in zip(expected, actual):
        np.testing.assert_array_equal(a, b)


# ================================================================ 3. rule enforcement
def vth_network():
    """Eight ensembles whose discretized thresholds have eight distinct mantissas."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(0.5)
        src = nengo.Ensemble(50, 1, label="src")
        nengo.Connection(stim, src)
        for k in range(8):
            target = nengo.Ensemble(
                20, 1, label=f"t{k}",
                max_rates=nengo.dists.Choice([100 + 30 * k]),
                intercepts=nengo.dists.Choice([-0.5 + 0.1 * k]),
            )
            nengo.Connection(src, target, transform=0.3 + 0.25 * k)
    return net


def split_network(n_neurons, n_outputs=0):
    """One ensemble split into two equal blocks, with ``n_outputs`` decoded outputs."""
    with nengo.Network(seed=0) as net:
        nengo_loihi.add_params(net)
        stim = nengo.Node(0.5)
        a = nengo.Ensemble(n_neurons, 1, label="a")
        net.config[a].block_shape = nengo_loihi.BlockShape(
            (n_neurons // 2,), (n_neurons,)
        )
        nengo.Connection(stim, a)
        for k in range(n_outputs):
            nengo.Connection(a, nengo.Ensemble(10, 1, label=f"out{k}"))
    return net


def learning_network():
    """A PES-learning connection, plus an ensemble ``c`` with an input synapse."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin, label="stim")
        a = nengo.Ensemble(100, 1, label="a")
        b = nengo.Ensemble(50, 1, label="b")
        nengo.Connection(stim, a)
        learned = nengo.Connection(a, b, learning_rule_type=nengo.PES())
        nengo.Connection(b, learned.learning_rule)
        nengo.Connection(stim, learned.learning_rule, transform=-1)
        c = nengo.Ensemble(30, 1, label="c")
        nengo.Connection(stim, c)
        nengo.Probe(b, synapse=0.01)
    return net


def conv_network(n_layers=1, side=10):
    """A ``side`` x ``side`` image layer feeding ``n_layers`` 3x3, 2-filter conv
    layers through pop32 axons (sparse synapses)."""
    conv = nengo.Convolution(
        2, (side, side, 1), kernel_size=(3, 3), init=np.full((3, 3, 1, 2), 0.1)
    )
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.ones(side * side), label="stim")
        image = nengo.Ensemble(side * side, 1, label="image", **CONV_TARGET)
        nengo.Connection(stim, image.neurons)
        for k in range(n_layers):
            layer = nengo.Ensemble(conv.output_shape.size, 1, label=f"layer{k}",
                                   **CONV_TARGET)
            nengo.Connection(image.neurons, layer.neurons, transform=conv)
            nengo.Probe(layer.neurons)
    return net


def voltage_network():
    """Two LIF ensembles whose discretized vmin differ (min_voltage 0 and -1)."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(0.5)
        a = nengo.Ensemble(50, 1, label="a")
        b = nengo.Ensemble(50, 1, neuron_type=nengo.LIF(min_voltage=-1), label="b")
        nengo.Connection(stim, a)
        nengo.Connection(stim, b)
    return net


def noise_network():
    """Decoded connections with different gains, so that their noisy decode blocks
    get different noise_exp (discretization sets it from each block's scale)."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(0.5)
        a = nengo.Ensemble(50, 1, label="a")
        nengo.Connection(stim, a)
        for k, transform in enumerate([1.0, 0.7, 0.5, 0.35]):
            nengo.Connection(a, nengo.Ensemble(50, 1, label=f"b{k}"), transform=transform)
    return net


def rule_case(rule):
    """A model and a plan breaking ``rule`` on core 0.

    Returns
    -------
    model : nengo_loihi.builder.Model
    graph : TrafficGraph
    shared : list of int
        Blocks the plan puts on core 0.
    """
    if rule == "vth_cfgs":
        model = build_model(vth_network())
        shared = [block_index(model, f"<Ensemble 't{k}'>") for k in range(8)]
    elif rule == "compartments":
        model = build_model(split_network(1200))
        shared = [i for i, b in enumerate(model.blocks)
                  if b.compartment.n_compartments == 600]
    elif rule == "out_axons":
        model = build_model(split_network(1000, n_outputs=5))
        shared = [i for i, b in enumerate(model.blocks)
                  if b.compartment.n_compartments == 500]
    elif rule == "learning":
        model = build_model(learning_network())
        (learner,) = [i for i, b in enumerate(model.blocks)
                      if any(s.learning for s in b.synapses)]
        shared = [block_index(model, "<Ensemble 'c'>"), learner]
    elif rule == "pop_sender":
        model = build_model(conv_network())
        shared = [block_index(model, "<Ensemble 'layer0'>"),
                  block_index(model, "<Ensemble 'image'>")]
    elif rule == "vmin":
        model = build_model(voltage_network())
        shared = [block_index(model, "<Ensemble 'a'>"),
                  block_index(model, "<Ensemble 'b'>")]
    elif rule == "noise":
        model = build_model(noise_network(), noisy=True)
        noisy = {}
        for i, b in enumerate(model.blocks):
            if b.compartment.enable_noise.any():
                noisy.setdefault(b.compartment.noise_exp, i)
        shared = sorted(noisy.values())
    else:
        raise ValueError(rule)
    assert len(shared) >= 2
    return model, extract(model), shared


#: rule -> (what our error says; how nengo-loihi's build fails without our checks:
#: ``("assert", text of the failing assert)`` or ``("overflow", message pattern)``;
#: whether `board_from_plan` refuses the core itself).
RULES = {
    "vth_cfgs": ("vth_cfgs 8 > 7", ("assert", "len(core.vth_cfgs) < MAX_VTH_CFGS"), False),
    "compartments": ("compartments 1200 > 1024", ("overflow", "cxCfg"), False),
    "out_axons": ("out_axons 5000 > 4096", ("overflow", "5000 output axon entries"),
                  False),
    "learning": ("learning or population-axon blocks need a core of their own",
                 ("assert", "synapse.learning"), False),
    "pop_sender": ("learning or population-axon blocks need a core of their own",
                   ("assert", "n_blocks == 1 and block is core.blocks[0]"), False),
    "vmin": ("vmin/vmax differ", ("assert", "block.compartment.vmin == vmin"), True),
    "noise": ("noise settings differ",
              ("assert", "block.compartment.noise_exp == noise_exp"), True),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_breaking_plan_raises_before_nengo_loihi(rule):
    """``check_plan`` and `PlanAllocator` name the broken rule; without our checks
    nengo-loihi's own build fails on the same core.

    Where `board_from_plan` only adjusts formats and shared settings (most rules),
    calling it directly bypasses the checks; where it refuses the core itself (vmin,
    noise), the board is made with nengo-loihi's plain `Core` API instead.
    """
    message, (kind, failure), emission_refuses = RULES[rule]
    model, graph, shared = rule_case(rule)
    plan = shared_core_plan(graph, shared)

    with pytest.raises(CoreRuleError, match="per-core rule") as info:
        check_plan(graph, plan, "nahuku32")
    assert message in str(info.value)
    assert not isinstance(info.value, StandinOverflow)
    with pytest.raises(CoreRuleError, match="per-core rule") as info:
        PlanAllocator(plan)(model, 1)
    assert message in str(info.value)

    if emission_refuses:
        with pytest.raises(CoreRuleError, match="voltage limits|noise"):
            board_from_plan(model, plan, graph)
        board = raw_board(model, plan)
    else:
        board = board_from_plan(model, plan, graph)
    # nengo-loihi's validate_board does not object ...
    validate_board(board)
    # ... but its build_board does (an assert, or an index past a table)
    if kind == "assert":
        with pytest.raises(AssertionError) as info:
            build_on_standin(board)
        assert failure in failing_statement(info)
    else:
        with pytest.raises(StandinOverflow, match=failure):
            build_on_standin(board)
    restore_model(model)


def test_eight_threshold_mantissas_on_one_core():
    """The vth case in detail: the eight blocks really have eight mantissas."""
    model, graph, shared = rule_case("vth_cfgs")
    vth = graph.configs["vth_cfgs"].tocsr()
    mantissas = {
        int(m) for b in shared for m in vth.indices[vth.indptr[b]:vth.indptr[b + 1]]
    }
    assert len(mantissas) == 8
    # seven of them share a core fine
    plan = shared_core_plan(graph, shared[:7])
    board = PlanAllocator(plan)(model, 1)
    validate_board(board)
    assert build_on_standin(board).summary()[0]["vth_cfgs"] == 7


def test_cifar10_example_places_as_built_on_one_chip(scenarios):
    """nengo-loihi's CIFAR-10 example ran on one Loihi chip with one conv block per
    core: its population axons fit a core once counted per (population, target
    axon). Both strategies place it on one chip in at most its 90 blocks' cores, and
    the fitter has nothing to change."""
    from partitioner.fitting import fit_block_shapes

    network, model, graph = scenarios.get("cifar10_convnet")
    assert graph.n_blocks == 90
    for strategy in ("metis", "ilp"):
        (plan, _), _ = scenarios.allocate("cifar10_convnet", strategy, "nahuku32")
        assert plan.n_chips == 1 and plan.n_cores <= 90
        assert np.array_equal(np.sort(plan.layout), np.arange(graph.n_blocks))
    result = fit_block_shapes(network, partition=False)
    assert result.ok and result.changes == []


def test_too_many_cores_on_a_chip(scenarios):
    """A plan with more than 128 cores on one chip is refused."""
    _, model, graph = scenarios.get("spa_like")
    n = graph.n_blocks
    assert n > 128
    plan = Plan(layout=np.arange(n), core_ptr=np.arange(n + 1),
                core_chip=np.zeros(n, dtype=int), fingerprint=graph.fingerprint())
    with pytest.raises(InfeasibleError, match=f"Chip 0 holds {n} cores but a chip has 128"):
        check_plan(graph, plan, "nahuku32")
    with pytest.raises(InfeasibleError, match="cores"):
        PlanAllocator(plan)(model, 1)


def test_more_chips_than_the_board_or_request(scenarios):
    """A plan using more chips than the board has, or than were asked for, is refused."""
    _, model, graph = scenarios.get("mnist_conv")
    n = graph.n_blocks
    plan = Plan(layout=np.arange(n), core_ptr=np.arange(n + 1),
                core_chip=np.arange(n) % 3, board="kapoho_bay",
                fingerprint=graph.fingerprint())
    with pytest.raises(InfeasibleError, match="uses 3 chips but kapoho_bay has 2"):
        check_plan(graph, plan)
    with pytest.raises(InfeasibleError, match="n_chips"):
        PlanAllocator(plan)(model, 2)


# ================================================================ bugs found
def trailing_dummy_network():
    """A strided convolution that never reads the last row and column of its input:
    its synapse ends with dummy axons. ``c`` has an ordinary input synapse."""
    conv = nengo.Convolution(
        1, (5, 5, 1), strides=(2, 2), kernel_size=(2, 2), padding="valid"
    )
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.full(25, 0.5), label="stim")
        a = nengo.Ensemble(25, 1, label="a")
        nengo.Connection(stim, a.neurons)
        b = nengo.Ensemble(conv.output_shape.size, 1, label="b", **CONV_TARGET)
        nengo.Connection(a.neurons, b.neurons, transform=conv)
        c = nengo.Ensemble(10, 1, label="c")
        nengo.Connection(stim[0], c)
    return net


def test_block_after_synapse_ending_in_dummy_axons():
    """A block added after one whose synapse ends with dummy axons.

    nengo-loihi's ``Core.add_synapse`` continues numbering input axons from the
    previous synapse's last id, which is None for a dummy axon (TypeError). Scenario
    ``mnist_conv`` has such a block (``pool2``), which the packer puts with the
    output layer.
    """
    model = build_model(trailing_dummy_network())
    b, c = block_index(model, "<Ensemble 'b'>"), block_index(model, "<Ensemble 'c'>")
    (synapse,) = list(model.blocks)[b].synapses
    assert synapse.axon_compartment_base(synapse.n_axons - 1) is None
    graph = extract(model)
    plan = shared_core_plan(graph, [b, c])
    board = PlanAllocator(plan)(model, 1)
    validate_board(board)
    nxsdk_board = build_on_standin(board)
    core = board.chips[0].cores[0]
    ids = [i for s in core.synapses for i in core.synapse_axons[s] if i is not None]
    assert ids == list(range(len(ids)))  # consecutive, no id used twice
    assert nxsdk_board.summary()[0]["input_axons"] == graph.resources[[b, c], 1].sum()


def window_network():
    """``WINDOW`` image ensembles that each send population axons (so each needs a
    core alone) into ``x``, and an ensemble ``y`` that ``x`` can share a core with.
    Packing order: the images, then ``y``, then ``x``."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.full(4, 0.5), label="stim")
        y = nengo.Ensemble(100, 1, label="y")
        nengo.Connection(stim[0], y)
        images = [nengo.Ensemble(4, 1, label=f"image{k}", **CONV_TARGET)
                  for k in range(packing.WINDOW)]
        x = nengo.Ensemble(4, 1, label="x", **CONV_TARGET)
        conv = nengo.Convolution(1, (2, 2, 1), kernel_size=(1, 1),
                                 init=np.ones((1, 1, 1, 1)))
        for image in images:
            nengo.Connection(stim, image.neurons)
            nengo.Connection(image.neurons, x.neurons, transform=conv)
    return net


def test_packing_looks_past_cores_closed_to_the_block():
    """``x`` exchanges traffic only with blocks that need a core alone. Packing ranks
    the cores ``x`` has traffic with first and fully checks only the first
    ``WINDOW``; those used to include cores closed to ``x`` (alone blocks, other
    vmin/vmax or noise settings), so ``x`` opened a new core although ``y``'s had
    room."""
    model = build_model(window_network())
    graph = extract(model)
    assert graph.alone.sum() == packing.WINDOW
    x, y = (block_index(model, f"<Ensemble '{n}'>") for n in "xy")
    cores, _ = pack(graph, np.arange(graph.n_blocks), traffic=graph.symmetric_traffic())
    assert len(cores) == packing.WINDOW + 1
    assert sorted(next(c.blocks for c in cores if x in c.blocks)) == sorted([x, y])


def test_packing_by_size_shares_cores_beside_many_alone_blocks(scenarios):
    """resnet_small: 112 of its 122 blocks send population axons and need a core
    alone. Packing by size alone (no traffic, as the first-fit baseline does) still
    puts the other blocks together."""
    _, _, graph = scenarios.get("resnet_small")
    n = graph.n_blocks
    cores, _ = pack(graph, np.arange(n), traffic=sp.csr_matrix((n, n)))
    assert max(len(core.blocks) for core in cores) > 1
    assert len(cores) < n


def test_ilp_allocates_the_same_plan_twice(scenarios):
    """Allocating a model again with ``strategy="ilp"`` gives the same plan."""
    _, model, _ = scenarios.get("mnist_conv")
    allocator = MinCutAllocator(strategy="ilp", spread=True, time_limit=2.0)
    placements = set()
    for _ in range(4):
        allocator(model, 4)
        placements.add(placement(allocator.last_plan))
    assert len(placements) == 1


# ================================================================ 4. the user's own line
def run_on_standin_hardware(net, allocator, n_chips=2, steps=5):
    """Construct ``nengo_loihi.Simulator(net, target="loihi", precompute=True,
    hardware_options=...)`` on the stand-in and run ``steps`` steps.

    Parameters
    ----------
    net : nengo.Network
    allocator : nengo_loihi.hardware.allocators.Allocator
    n_chips : int, optional
    steps : int, optional

    Returns
    -------
    sim : nengo_loihi.Simulator
        Closed.
    hardware : partitioner.nxsdk_standin.StandinHardware
        The boards built.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with standin_hardware() as hardware:
            with nengo_loihi.Simulator(
                net, target="loihi", precompute=True, progress_bar=False,
                hardware_options={"allocator": allocator, "n_chips": n_chips},
            ) as sim:
                sim.run_steps(steps)
    return sim, hardware


@pytest.mark.parametrize("name", ["mnist_conv", "spa_like"])
def test_simulator_with_mincut_allocator(scenarios, name):
    """The user's own line constructs and runs with `MinCutAllocator`."""
    network, _, _ = scenarios.get(name)
    allocator = MinCutAllocator()
    t0 = time.perf_counter()
    sim, hardware = run_on_standin_hardware(network, allocator)
    report(f"{name}: Simulator(target='loihi') on the stand-in in "
           f"{time.perf_counter() - t0:.1f} s")
    board = sim.sims["loihi"].board
    assert len(hardware.boards) == 1
    assert sum(board.n_cores_per_chip) == allocator.last_plan.n_cores
    assert max_blocks_per_core(board) > 1
    assert_each_block_once(sim.model, board)
    for probe in network.all_probes:
        assert sim.data[probe].shape[0] == 5
    hardware.board.check()  # spikes sent while running reach configured axons


def test_simulator_replays_saved_json_plan(scenarios, tmp_path):
    """The user's own line with a `PlanAllocator` replaying a plan saved as JSON."""
    network, _, graph = scenarios.get("mnist_conv")
    plan = partition(graph, n_chips=2, spread=True, strategy="metis")
    path = tmp_path / "mnist_conv.plan.json"
    plan.save(path)
    sim, hardware = run_on_standin_hardware(network, PlanAllocator(str(path)))
    board = sim.sims["loihi"].board
    blocks = list(sim.model.blocks)
    assert board.n_chips == 2
    assert board_layout(board) == [
        (k, c, p, blocks[b].label)
        for k in range(plan.n_chips)
        for c, core in enumerate(np.flatnonzero(plan.core_chip == k))
        for p, b in enumerate(plan.core_blocks(core))
    ]
    assert len(hardware.boards) == 1


# ================================================================ 5. offsets
def sparse_at_offset(board):
    """Blocks on ``board`` at a compartment offset > 0 with a sparse synapse.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board

    Returns
    -------
    list of tuple
        ``(block, synapse, offset, format on the board)`` for each sparse synapse
        (``compression == 0``) of a block after the first on its core.
    """
    found = []
    for chip in board.chips:
        for core in chip.cores:
            for block, idxs, _ in core.iterate_blocks():
                if idxs[0] == 0:
                    continue
                for synapse in block.synapses:
                    cfg = core.get_synapse_cfg(synapse)
                    if cfg.compression == 0:
                        found.append((block, synapse, int(idxs[0]), cfg))
    return found


def max_index(synapse):
    """Largest compartment index of ``synapse`` (within its block)."""
    return max(int(np.max(i)) for i in synapse.indices if np.size(i))


def test_resnet_sparse_block_at_offset_builds(scenarios):
    """resnet_small: a conv-output block (sparse synapses) placed after a dense block."""
    _, model, graph = scenarios.get("resnet_small")
    blocks = list(model.blocks)
    sparse = [
        i for i in range(graph.n_blocks)
        if not graph.alone[i]
        and any(s.synapse_cfg.compression == 0 for s in blocks[i].synapses)
    ]
    dense = [
        i for i in range(graph.n_blocks)
        if not graph.alone[i] and i not in sparse and blocks[i].synapses
    ]
    assert sparse and dense
    first = max(dense, key=lambda i: blocks[i].compartment.n_compartments)
    plan = shared_core_plan(graph, [first, sparse[0]])
    check_plan(graph, plan, "nahuku32")
    board = PlanAllocator(plan)(model, 1)
    validate_board(board)
    found = sparse_at_offset(board)
    assert found
    for block, synapse, offset, cfg in found:
        assert offset == blocks[first].compartment.n_compartments > 0
        assert 2 ** cfg.real_idx_bits > offset + max_index(synapse)
    build_on_standin(board)


def test_mincut_puts_sparse_block_where_its_own_index_width_is_too_narrow():
    """Two conv layers on one core: the second's sparse indices (6 bits for the
    block alone) need 8 at offset 128. Our board builds; nengo-loihi's plain
    `Core` API on the same placement overflows the stand-in's index check."""
    model = build_model(conv_network(n_layers=2))
    allocator = MinCutAllocator()
    board = allocator(model, 1)
    validate_board(board)
    found = sparse_at_offset(board)
    assert found, "the allocator should put both conv layers on one core"
    block, synapse, offset, cfg = found[0]
    original = formats.original_format(synapse)
    assert 2 ** original.real_idx_bits <= offset + max_index(synapse)
    assert 2 ** cfg.real_idx_bits > offset + max_index(synapse)
    build_on_standin(board)

    with pytest.raises(StandinOverflow, match="sparse index"):
        build_on_standin(raw_board(model, allocator.last_plan))


def test_conv_scenario_plans_widen_sparse_blocks_at_offsets(scenarios):
    """Wherever a strategy put a sparse block at an offset in the conv scenarios'
    plans, its format on the board addresses offset + largest index. The placements
    found are printed (``-s``)."""
    found = 0
    for name in ("mnist_conv", "resnet_small"):
        for strategy in STRATEGIES:
            for case in BOARD_CASES:
                _, (board, _) = scenarios.allocate(name, strategy, case)
                for block, synapse, offset, cfg in sparse_at_offset(board):
                    found += 1
                    report(f"{name}/{strategy}/{case}: {block.label} is sparse at "
                           f"offset {offset} with {cfg.real_idx_bits}-bit indices")
                    assert 2 ** cfg.real_idx_bits > offset + max_index(synapse)
    report(f"sparse blocks at an offset in the conv scenarios' plans: {found}")
