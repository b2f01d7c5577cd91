"""Tests of block-shape fitting (partitioner.fitting), refusals, and ``partitioner fit``.

The main subject is the bundled ``resnet_unfitted`` scenario: a ResNet whose last
residual block, cut into 8x8x16 tiles of 1,024 neurons, feeds a dense head that
nengo-loihi splits into 5 blocks, so each tile needs 5,120 output axon entries and
nengo-loihi's own build refuses it.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nengo
import nengo_loihi
import numpy as np
import pytest

from partitioner import MinCutAllocator, fit_block_shapes
from partitioner.allocator import board_from_plan
from partitioner.engine import partition
from partitioner.errors import BlockTooLargeError
from partitioner.extract import build_model, extract
from partitioner.graph import RESOURCES
from partitioner.hardware import ChipSpec, CoreLimits, get_board
from partitioner.nxsdk_standin import build_on_standin
from partitioner.packing import check_blocks, core_violations
from partitioner.shapes import (
    candidate_shapes,
    suggest_block_shape,
    suggest_tile_shape,
    tile_sizes,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
UNFITTED = SCENARIOS / "resnet_unfitted.py"
REASON_RE = re.compile(
    r"^out_axons (\d+) > 4096 with \d+x\d+x\d+ tiles(?: once .* re-blocked)?; "
    r"\d+x\d+x\d+ tiles need (\d+)$"
)


def load(path):
    spec = importlib.util.spec_from_file_location(f"_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "partitioner.cli", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )


def by_label(network):
    return {ens.label: ens for ens in network.all_ensembles}


def ensemble_block_indices(model, ens):
    out = model.objs[ens]["out"]
    out = out if isinstance(out, (list, tuple)) else [out]
    index = {id(b): i for i, b in enumerate(model.blocks)}
    return [index[id(b)] for b in out]


# ---------------------------------------------------------------- networks
def small_conv_net(seed=3):
    """Two 3x3 conv layers of 10x10x8 (800 neurons, one block each) and a dense
    output; every block fits a Loihi core."""
    rng = np.random.RandomState(seed)
    amplitude = 0.01
    with nengo.Network(seed=seed) as net:
        nengo_loihi.add_params(net)
        net.config[nengo.Ensemble].neuron_type = nengo.SpikingRectifiedLinear(
            amplitude=amplitude, initial_state={"voltage": nengo.dists.Choice([0])})
        net.config[nengo.Ensemble].gain = nengo.dists.Choice([1 / amplitude])
        net.config[nengo.Ensemble].bias = nengo.dists.Choice([0.0])
        net.config[nengo.Connection].synapse = 0.005
        image = rng.uniform(0, 1, size=(10, 10, 2))
        stim = nengo.Node(image.ravel())
        shape = nengo.transforms.ChannelShape(image.shape)
        pre = nengo.Ensemble(shape.size, 1, label="input")
        net.config[pre].on_chip = False
        nengo.Connection(stim, pre.neurons, synapse=None)
        for k in range(2):
            kernel = rng.normal(scale=0.7 * np.sqrt(2 / (9 * shape.n_channels)),
                                size=(3, 3, shape.n_channels, 8))
            conv = nengo.Convolution(8, shape, kernel_size=(3, 3), padding="same",
                                     init=kernel)
            ens = nengo.Ensemble(conv.output_shape.size, 1, label=f"conv{k}")
            net.config[ens].block_shape = nengo_loihi.BlockShape(
                conv.output_shape.shape, conv)
            nengo.Connection(pre.neurons, ens.neurons, transform=conv)
            shape, pre = conv.output_shape, ens
        out = nengo.Ensemble(10, 1, label="out")
        nengo.Connection(pre.neurons, out.neurons,
                         transform=rng.normal(scale=0.05, size=(10, shape.size)))
        net.probe_conv = nengo.Probe(pre.neurons)
        net.probe_out = nengo.Probe(out.neurons, synapse=0.02)
    return net


def fan_out_net(n=1000, k=5, nested=False):
    """``a`` (one block of 1000 by config) feeds 5 ensembles neuron-to-neuron: 5000
    output axons, which nengo-loihi's own check refuses. With ``nested``, everything
    but the input node sits in a subnetwork."""
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(0.5)
        with (nengo.Network(label="module") if nested else net) as owner:
            nengo_loihi.add_params(owner)
            a = nengo.Ensemble(n, 1, label="a")
            owner.config[a].block_shape = nengo_loihi.BlockShape((n,), (n,))
            nengo.Connection(stim, a)
            for j in range(k):
                b = nengo.Ensemble(50, 1, label=f"b{j}")
                nengo.Connection(a.neurons, b.neurons, transform=np.full((50, n), 1e-3))
    return net


def dense_input_net(n=4200):
    """``narrow`` receives 4200 presynaptic axons in every block: no shape helps."""
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(0.5)
        wide = nengo.Ensemble(n, 1, label="wide")
        nengo.Connection(stim, wide)
        narrow = nengo.Ensemble(10, 1, label="narrow")
        nengo.Connection(wide.neurons, narrow.neurons, transform=np.full((10, n), 1e-4))
    return net


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def unfitted():
    """``(network, the BlockTooLargeError of its build)`` of resnet_unfitted as built."""
    net = load(UNFITTED).build()
    with pytest.raises(BlockTooLargeError) as info:
        build_model(net)
    return net, info.value


@pytest.fixture(scope="module")
def fitted():
    """``(network with the shapes applied, FitResult)``."""
    net = load(UNFITTED).build()
    return net, fit_block_shapes(net, apply=True)


@pytest.fixture(scope="module")
def fitted_model(fitted):
    net, _ = fitted
    model = build_model(net)
    return model, extract(model, progress=False)


# ---------------------------------------------------------------- refusals
def test_resnet_unfitted_refusal_names_everything(unfitted):
    """nengo-loihi's own build refuses the dense head's source tiles; the error names
    the block, its ensemble, the rule, the need, the limit and a structure-preserving
    block shape."""
    net, err = unfitted
    res4_b = by_label(net)["res4_b"]
    assert "res4_b" in err.block and str(res4_b) in err.source
    assert (err.rule, err.value, err.limit) == ("out_axons", 5120, 4096)
    shape = err.suggestion
    assert isinstance(shape, nengo_loihi.BlockShape)
    # rows x columns x channels tiles of the 8x8x32 layer, as configured
    assert tuple(shape.ensemble_shape) == (8, 8, 32)
    assert len(shape.shape) == 3 and shape.ensemble_size == res4_b.n_neurons
    assert shape.block_size < 1024
    assert "BlockShape((8, 8, 8), (8, 8, 32))" in str(err)
    with nengo.Network() as check:  # the suggestion is a valid config value
        nengo_loihi.add_params(check)
        ens = nengo.Ensemble(res4_b.n_neurons, 1)
        check.config[ens].block_shape = shape


def test_graph_refusal_gives_a_block_size_and_points_to_the_fitter():
    """A graph alone does not know the ensemble's shape: the advice gives a block size
    and points to the fitter."""
    net = fan_out_net(n=900, k=4)  # 3,600 entries: fits nengo-loihi's and our count
    graph = extract(build_model(net), progress=False)
    tight = get_board("nahuku32").replace(
        name="tight", chip=ChipSpec(core=CoreLimits(out_axons=3000)))
    with pytest.raises(BlockTooLargeError) as info:
        partition(graph, board=tight)
    err = info.value
    assert (err.rule, err.value, err.limit) == ("out_axons", 3600, 3000)
    assert "at most about 675 neurons" in str(err) and "partitioner fit" in str(err)


# ------------------------------------------------------------------ fitting
def test_fit_reports_structured_shapes_and_reasons(fitted):
    _, result = fitted
    names = [c.name for c in result.changes]
    assert names == ["res4_b"]
    for c in result.changes:
        match = REASON_RE.match(c.reason)
        assert match, c.reason
        assert int(match.group(1)) == c.value > 4096
        assert int(match.group(2)) == c.new_value <= 4096
        assert tuple(c.new.ensemble_shape) == tuple(c.old.ensemble_shape)
        assert len(c.new.shape) == 3 and c.new.block_size <= 1024
        assert c.blocks_after > c.blocks_before
    before, after = result.before, result.after
    assert not before.fits and before.broken_rules()["out_axons"] == 2
    assert before.cores is None and before.blocks == 36
    assert after.fits and after.partitioned and result.ok
    assert after.blocks == before.blocks + sum(
        c.blocks_after - c.blocks_before for c in result.changes)
    assert result.applied
    json.dumps(result.to_dict())


def test_fitted_blocks_pass_every_rule_and_build_on_standin(fitted, fitted_model):
    _, result = fitted
    model, graph = fitted_model  # nengo-loihi's own checks passed in build_model
    assert graph.n_blocks == result.after.blocks
    check_blocks(graph)
    assert not any(core_violations(graph, [b]) for b in range(graph.n_blocks))
    plan = partition(graph)
    assert (plan.n_cores, plan.n_chips) == (result.after.cores, result.after.chips)
    board = board_from_plan(model, plan, graph)
    nxsdk = build_on_standin(board)
    assert len(nxsdk.cores()) == plan.n_cores
    assert len(MinCutAllocator()(model, 4).chips) == plan.n_chips


def test_reasons_give_the_needs_the_build_creates(fitted, fitted_model):
    """The analysis predicts each block's needs without a build; the verified build
    creates exactly what it predicted."""
    _, result = fitted
    model, graph = fitted_model
    for c in result.changes:
        blocks = ensemble_block_indices(model, c.ensemble)
        assert len(blocks) == c.blocks_after
        measured = graph.resources[blocks, RESOURCES.index(c.rule)].max()
        assert measured == c.new_value


def test_snippet_applies_the_same_shapes(fitted, fitted_model):
    _, result = fitted
    _, graph = fitted_model
    net = load(UNFITTED).build()
    exec(result.snippet(), {"net": net})
    for c in result.changes:
        shape = net.config[by_label(net)[c.name]].block_shape
        assert (shape.shape, shape.ensemble_shape) == (c.new.shape, c.new.ensemble_shape)
    assert extract(build_model(net), progress=False).fingerprint() == graph.fingerprint()


def test_reblocking_keeps_emulator_output():
    """A network that fits either way: fitting it to cores with fewer output axon
    entries cuts each conv layer into more blocks. The emulator output must not
    change. Tolerance: exact equality. Re-blocking moves compartments between blocks
    and nengo-loihi discretizes each block from the largest weight reaching it; here
    every block of either shape holds every weight of its 3x3 kernel, so every
    compartment gets the same integer parameters, and the emulator is deterministic."""
    net = small_conv_net()

    def run():
        with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
            sim.run(0.3)
            return (sim.data[net.probe_conv].copy(), sim.data[net.probe_out].copy(),
                    len(sim.model.blocks))

    conv_before, out_before, n_before = run()
    tight = get_board("nahuku32").replace(
        name="tight", chip=ChipSpec(core=CoreLimits(out_axons=900, compartments=512)))
    result = fit_block_shapes(net, board=tight, apply=True, partition=False)
    assert result.ok and len(result.changes) == 2
    conv_after, out_after, n_after = run()
    assert n_after > n_before
    assert np.count_nonzero(conv_before) > 100  # the layers do spike
    np.testing.assert_array_equal(conv_after, conv_before)
    np.testing.assert_array_equal(out_after, out_before)


def test_plain_ensemble_gets_a_1d_shape_when_nengo_loihi_refuses_to_build():
    net = fan_out_net()
    with pytest.raises(BlockTooLargeError):
        build_model(net)  # nengo-loihi's validate_block: 5000 output axons
    result = fit_block_shapes(net, apply=True)
    assert result.ok
    assert result.before.nengo_loihi_errors and not result.before.fits
    (change,) = result.changes
    assert (change.name, change.new.shape, change.new.ensemble_shape) == \
        ("a", (500,), (1000,))
    assert change.reason == "out_axons 5000 > 4096 with blocks of 1000; blocks of 500 " \
                            "need 2500"
    check_blocks(extract(build_model(net), progress=False))


def test_shapes_go_to_the_config_of_the_subnetwork_holding_the_ensemble():
    """nengo-loihi reads a block shape from the config of the network that holds the
    ensemble, not from the top-level network's."""
    net = fan_out_net(nested=True)
    result = fit_block_shapes(net, apply=True, partition=False)
    (change,) = result.changes
    assert change.path == ".networks[0]" and change.new.shape == (500,)
    assert net.networks[0].config[change.ensemble].block_shape is change.new
    assert len(build_model(net).blocks) == 7
    fresh = fan_out_net(nested=True)
    exec(result.snippet(), {"net": fresh})
    assert len(build_model(fresh).blocks) == 7


def test_dense_input_axons_are_reported_as_unfixable():
    result = fit_block_shapes(dense_input_net(), partition=False)
    assert not result.ok and not result.changes
    (text,) = result.unresolved
    assert "narrow" in text and "in_axons 4200 > 4096" in text and "dense" in text


def test_nothing_to_change():
    net = small_conv_net()
    result = fit_block_shapes(net, apply=True)
    assert result.changes == [] and result.ok and not result.applied
    assert result.after is result.before and result.before.partitioned
    assert result.builds == 1
    assert "nothing to change" in result.snippet()
    assert net.config[by_label(net)["conv0"]].block_shape.shape == (10, 10, 8)


# ---------------------------------------------------------------- shapes
def test_candidate_shapes_keep_channels_and_fewest_blocks_first():
    assert tile_sizes(16) == [16, 8, 6, 4, 3, 2, 1]
    shapes = candidate_shapes((16, 16, 16), channel_axis=2)
    assert shapes[0] == (8, 8, 16)
    assert all(np.prod(s) <= 1024 for s in shapes)
    assert candidate_shapes((10,), max_size=4) == [(4,), (3,), (2,), (1,)]
    shape = suggest_tile_shape((16, 16, 16), 4640, 4096, "out_axons",
                               block_shape=(8, 8, 16), channel_axis=2)
    assert shape.shape == (6, 8, 16) and shape.ensemble_shape == (16, 16, 16)
    assert suggest_block_shape(800, 5600, 4096, "out_axons").shape == (400,)


# ---------------------------------------------------------------- command line
def test_cli_fit_apply_on_resnet_unfitted(tmp_path):
    source = UNFITTED.read_bytes()
    out = tmp_path / "fit.json"
    proc = run_cli("fit", "resnet_unfitted", "--apply", "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert UNFITTED.read_bytes() == source  # --apply changes nothing on disk
    data = json.loads(out.read_text())
    assert data["changed"] and data["ok"]
    assert [s["ensemble"] for s in data["shapes"]] == ["res4_b"]
    assert all(REASON_RE.match(s["reason"]) for s in data["shapes"])
    assert data["before"]["broken_rules"]["out_axons"] == 2
    applied = data["records"][-1]
    assert applied["model"] == "applied" and applied["chips"] >= 1
    assert applied["blocks"] == data["after"]["blocks"]
    text = proc.stdout
    for needle in ("before", "after", "applied", "out_axons (2 blocks)",
                   "Shapes (JSON):", "Python:", "nengo_loihi.BlockShape((",
                   "NxSDK stand-in"):
        assert needle in text
    json.loads(text.split("Shapes (JSON):\n", 1)[1].split("\n\n", 1)[0])


def test_cli_fit_on_a_scenario_that_fits(tmp_path):
    out = tmp_path / "fit.json"
    proc = run_cli("fit", "mnist_conv", "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to change" in proc.stdout
    data = json.loads(out.read_text())
    assert data["shapes"] == [] and not data["changed"] and data["ok"]
    assert data["before"]["fits"]


def test_cli_fit_exits_2_when_no_shape_helps(tmp_path):
    scenario = tmp_path / "dense.py"
    scenario.write_text(
        "import numpy as np\nimport nengo\n\n"
        "def build():\n"
        "    with nengo.Network(seed=1) as net:\n"
        "        wide = nengo.Ensemble(4200, 1, label='wide')\n"
        "        narrow = nengo.Ensemble(10, 1, label='narrow')\n"
        "        nengo.Connection(wide.neurons, narrow.neurons,\n"
        "                         transform=np.full((10, 4200), 1e-4))\n"
        "    return net\n"
    )
    proc = run_cli("fit", scenario, "-q")
    assert proc.returncode == 2
    assert "in_axons 4200 > 4096" in proc.stdout and "unresolved:" in proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("partitioner: error:")
