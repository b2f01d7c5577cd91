"""Large random network of ensembles, as in nengo-loihi's interchip allocator test.

This reproduces the network of ``test_interchip_allocators`` in
``nengo_loihi/hardware/tests/test_allocators.py`` (same random draws, in the
same order), so results can be compared with the numbers that test prints:

- 256 one-dimensional LIF ensembles with 64 to 255 neurons each,
- 512 connections between random pairs of ensembles (self-connections allowed),
  each neuron-to-neuron with weights drawn uniformly from [-0.1, 0.1]. Every
  ensemble therefore sends about 2 and receives about 2 connections, touching
  about 4 other ensembles on average.

Because all connections go between neurons, no decode neurons are added, and
there are no host inputs. Each ensemble becomes one LoihiBlock, except that
nengo-loihi splits the 22 ensembles whose dense input weights need more synapse
memory than a core has (21 in two, one in three): 279 blocks and 40,015
compartments in all. The fullest block uses 1,046,528 of a core's 1,048,576
synapse bits.

`ensemble_rates` gives the test's rates: one random rate per ensemble, uniform
in [1, 100) Hz, times a per-neuron factor uniform in [0.9, 1).
"""

import numpy as np

import nengo

#: Seed of the random structure and rates (the test's ``RandomState(1)``).
SEED = 1
#: Seed of the nengo network (the test's ``nengo.Network(seed=0)``).
NETWORK_SEED = 0
#: Number of ensembles.
N_ENSEMBLES = 256


def _draw():
    """Draw sizes, connections, weights and rates in the order the test does.

    Returns
    -------
    n_neurons : (N_ENSEMBLES,) ndarray of int
    pairs : (2 * N_ENSEMBLES, 2) ndarray of int
        ``(pre, post)`` ensemble indices of each connection.
    weights : list of ndarray
        ``(post neurons, pre neurons)`` weights of each connection.
    rates : list of ndarray
        Per-neuron rates (Hz) of each ensemble.
    """
    rng = np.random.RandomState(SEED)
    n_neurons = rng.randint(64, 256, size=N_ENSEMBLES)
    pairs = rng.randint(0, N_ENSEMBLES, size=(2 * N_ENSEMBLES, 2))
    weights = [
        rng.uniform(-0.1, 0.1, size=(n_neurons[j], n_neurons[i])) for i, j in pairs
    ]
    rates = [rng.uniform(1, 100, size=1) * rng.uniform(0.9, 1, size=n) for n in n_neurons]
    return n_neurons, pairs, weights, rates


def build():
    """Build the random ensemble network.

    Returns
    -------
    net : nengo.Network
        256 ensembles (in ``net.ensembles``, in drawing order) and 512
        neuron-to-neuron connections.
    """
    n_neurons, pairs, weights, _ = _draw()
    with nengo.Network(label="random_ensembles", seed=NETWORK_SEED) as net:
        ensembles = [
            nengo.Ensemble(n, dimensions=1, label=f"ens{k}") for k, n in enumerate(n_neurons)
        ]
        for (i, j), w in zip(pairs, weights):
            nengo.Connection(ensembles[i].neurons, ensembles[j].neurons, transform=w)
    return net


def ensemble_rates(net):
    """Per-neuron firing rates used by nengo-loihi's allocator test.

    Parameters
    ----------
    net : nengo.Network
        A network returned by `build`.

    Returns
    -------
    rates : dict
        Mapping from each `nengo.Ensemble` to a ``(n_neurons,)`` array of rates in Hz.
    """
    if len(net.ensembles) != N_ENSEMBLES:
        raise ValueError(f"expected a network from build() with {N_ENSEMBLES} ensembles")
    _, _, _, rates = _draw()
    return dict(zip(net.ensembles, rates))
