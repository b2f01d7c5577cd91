"""Bundled scenarios built by nengo-loihi and, one block per core, on the stand-in.

``cifar10_convnet`` is nengo-loihi's CIFAR-10 example network, which ran on one Loihi
chip with one block per core: its board must build on the stand-in under the output
axon entry count of Loihi's compiler, and would not at one entry per compartment.
``resnet_unfitted`` must be refused by nengo-loihi as it is and build once ``res4_b``
has smaller tiles; the conv tiles of its earlier version (``resnet_small`` with
8x8x16 tiles) fit.
"""

import collections
import importlib.util
import warnings

import nengo
import nengo_loihi
import numpy as np
import pytest
from nengo.exceptions import BuildError
from nengo_loihi.hardware.allocators import Greedy
from nengo_loihi.hardware.validate import validate_board

from partitioner.nxsdk_standin import OUTPUT_AXON_ENTRIES, build_on_standin
from partitioner.scenario import BUNDLED_DIR, load_scenario

#: The notebook's on-chip layers: (name, output shape, block shape, blocks).
CIFAR_LAYERS = [
    ("conv-layer1", (15, 15, 64), (8, 8, 16), 16),
    ("conv-layer2", (13, 13, 72), (7, 7, 8), 36),
    ("conv-layer3", (6, 6, 256), (6, 6, 12), 22),
    ("conv-layer4", (6, 6, 256), (6, 6, 24), 11),
    ("conv-layer5", (6, 6, 64), (6, 6, 24), 3),
    ("dense-layer", (100,), (50,), 2),
]


#: CIFAR-10 blocks that one entry per source compartment would put over 4,096.
N_OVER_AT_ONE_PER_COMPARTMENT = 83


def bundled_module(name):
    """The module of the bundled scenario ``name``."""
    spec = importlib.util.spec_from_file_location(
        f"_test_scenario_{name}", BUNDLED_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(net):
    """``sim.model`` of ``nengo_loihi.Simulator(net, target="sim")``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
            return sim.model


def by_label(net):
    return {ens.label: ens for ens in net.all_ensembles}


def one_per_compartment(block):
    """Output entries at one per source compartment (two for pop32)."""
    idxs = np.arange(block.compartment.n_compartments)
    return sum(
        int(np.sum(axon.map_axon(idxs) >= 0)) * axon.slots_per_axon
        for axon in block.axons
    )


def greedy_standin(model):
    """Greedy one-block-per-core board of ``model``, validated and built."""
    board = Greedy()(model, n_chips=1)
    validate_board(board)
    return board, build_on_standin(board)


def entries_by_ensemble(model, nxsdk_board):
    """``{ensemble label: [(entries, utilization, one per compartment), ...]}``."""
    counts = collections.defaultdict(list)
    for block, core in zip(model.blocks, nxsdk_board.cores()):
        label = block.label.split("[")[0].split("'")[1]
        counts[label].append(
            (
                core.n_output_entries,
                block.utilization()["out-axons"][0],
                one_per_compartment(block),
            )
        )
    return {label: np.array(rows) for label, rows in counts.items()}


# --------------------------------------------------------------- cifar10_convnet


def test_cifar10_convnet_has_the_notebook_layers():
    scenario = load_scenario("cifar10_convnet")
    net = scenario.network
    ensembles = by_label(net)

    assert not net.config[ensembles["input-layer"]].on_chip
    assert ensembles["input-layer"].n_neurons == 32 * 32 * 4
    for name, shape, block, _ in CIFAR_LAYERS:
        ens = ensembles[name]
        assert isinstance(ens.neuron_type, nengo_loihi.neurons.LoihiLIF)
        block_shape = net.config[ens].block_shape
        assert (block_shape.shape, block_shape.ensemble_shape) == (block, shape)
    for conn in net.all_connections:
        assert net.config[conn].pop_type == 32
    convs = [c.transform for c in net.all_connections
             if isinstance(c.transform, nengo.Convolution)]
    assert len(convs) == 6
    assert all(t.channels_last and t.padding == "valid" for t in convs)
    rates = scenario.ensemble_rates
    assert set(rates) == set(net.all_ensembles)
    for ens, r in rates.items():
        assert r.shape == (ens.n_neurons,) and 0 < r.mean() < 150


@pytest.mark.slow
def test_cifar10_convnet_builds_one_block_per_core_on_standin():
    net = load_scenario("cifar10_convnet").network
    model = build_model(net)
    blocks = list(model.blocks)
    assert len(blocks) == 90 and len(model.inputs) == 1
    assert sum(b.compartment.n_compartments for b in blocks) == 47404

    board, nxsdk_board = greedy_standin(model)
    assert board.n_chips == 1 and len(nxsdk_board.cores()) == 90
    counts = entries_by_ensemble(model, nxsdk_board)
    assert {name: len(counts[name]) for name, *_ in CIFAR_LAYERS} == {
        name: n for name, _, _, n in CIFAR_LAYERS
    }
    entries = np.concatenate(list(counts.values()))
    # one chip: nengo-loihi's count agrees (pop32 populations and discrete axons)
    np.testing.assert_array_equal(entries[:, 0], entries[:, 1])
    assert entries[:, 0].max() == 2156 <= OUTPUT_AXON_ENTRIES
    assert entries[:, 0].sum() == 112140
    # one entry per compartment would refuse most conv blocks
    assert entries[:, 2].max() == 23328
    assert np.sum(entries[:, 2] > OUTPUT_AXON_ENTRIES) == N_OVER_AT_ONE_PER_COMPARTMENT


# --------------------------------------------------------------- resnet_unfitted


def test_resnet_unfitted_is_refused_by_nengo_loihi():
    net = load_scenario("resnet_unfitted").network
    with pytest.raises(BuildError, match=r"res4_b'>\[0\]\): Output axons \(5120\)"):
        build_model(net)


@pytest.mark.slow
def test_resnet_unfitted_builds_with_smaller_res4_b_tiles():
    net = load_scenario("resnet_unfitted").network
    res4_b = by_label(net)["res4_b"]
    net.config[res4_b].block_shape = nengo_loihi.BlockShape((8, 8, 8), (8, 8, 32))
    model = build_model(net)
    assert len(model.blocks) == 38

    _, nxsdk_board = greedy_standin(model)
    counts = entries_by_ensemble(model, nxsdk_board)
    assert len(counts["fc"]) == 5
    assert counts["res4_b"][:, 0].tolist() == [2560] * 4  # 512 compartments x 5
    assert max(c[:, 0].max() for c in counts.values()) == 2560


@pytest.mark.slow
def test_earlier_resnet_unfitted_tiles_fit_every_core():
    """``resnet_small`` cut into 8x8x16 tiles, the earlier ``resnet_unfitted``."""
    resnet_small = bundled_module("resnet_small")
    model = build_model(resnet_small.build(block_shapes=((8, 8, 16), (8, 8, 16))))
    assert len(model.blocks) == 32

    _, nxsdk_board = greedy_standin(model)
    counts = entries_by_ensemble(model, nxsdk_board)
    entries = np.concatenate(list(counts.values()))
    assert entries[:, 0].max() == 1024  # res4_b to the pool, discrete
    assert counts["stem"][:, 0].max() == 290
    assert entries[:, 2].max() == 8192  # at one entry per compartment
