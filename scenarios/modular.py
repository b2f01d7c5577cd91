"""Modular (clustered) network: dense connections within modules, sparse between.

The network has 10 modules, each a `nengo.Network` of 10 to 20 one-dimensional
LIF ensembles with 32 to 128 neurons. Within a module every ordered pair of
ensembles is connected with probability 0.3 (about 4 outgoing connections per
ensemble); between modules there are only 30 connections in all, each from a
random ensemble to a random ensemble of another module. All connections are
neuron-to-neuron with random weights, so no decode neurons are added. Each
module is driven by its own sine-wave `nengo.Node` (``1 + k`` Hz for module
``k``) feeding its first ensemble.

On chip this becomes one LoihiBlock per ensemble (156 blocks, 12,179
compartments) and one host input per module (10 inputs). A good partition keeps
each module on one chip, cutting only the sparse inter-module connections.

`ensemble_rates` gives rates that differ per module: module ``k`` has a base rate
``BASE_RATES[k]`` (geometrically spaced from 5 to 150 Hz), each ensemble scales
it by a factor in [0.7, 1.3], and neuron rates are gamma-distributed around that
ensemble mean (capped at 400 Hz).
"""

import numpy as np

import nengo

#: Seed of the network structure.
SEED = 2
#: Seed of the synthetic rates.
RATE_SEED = 3
#: Number of modules.
N_MODULES = 10
#: Probability that an ordered pair of ensembles in the same module is connected.
P_INTRA = 0.3
#: Number of connections between modules.
N_INTER = 30
#: Mean firing rate (Hz) of each module.
BASE_RATES = np.geomspace(5, 150, N_MODULES)
#: Upper limit (Hz) of the synthetic rates, the top of nengo's default ``max_rates``.
MAX_RATE = 400.0


def build(n_modules=N_MODULES, module_size=(10, 20), neurons=(32, 128), n_inter=N_INTER,
          seed=SEED):
    """Build the modular network.

    Parameters
    ----------
    n_modules : int
        Number of modules.
    module_size : (int, int)
        Smallest and largest number of ensembles in a module.
    neurons : (int, int)
        Smallest and largest ensemble size.
    n_inter : int
        Number of connections between modules.
    seed : int
        Seed of the network structure.

    Returns
    -------
    net : nengo.Network
        The network; ``net.networks[k]`` is module ``k``.
    """
    rng = np.random.RandomState(seed)
    with nengo.Network(label="modular", seed=seed) as net:
        # voltages start at zero, as they do on chip
        net.config[nengo.Ensemble].neuron_type = nengo.LIF(
            initial_state={"voltage": nengo.dists.Choice([0])}
        )
        modules = []
        for k in range(n_modules):
            with nengo.Network(label=f"module{k}"):
                n_ens = rng.randint(module_size[0], module_size[1] + 1)
                sizes = rng.randint(neurons[0], neurons[1] + 1, size=n_ens)
                ensembles = [
                    nengo.Ensemble(n, 1, label=f"m{k}_e{i}") for i, n in enumerate(sizes)
                ]
                for pre in ensembles:
                    for post in ensembles:
                        if pre is not post and rng.rand() < P_INTRA:
                            _connect(pre, post, rng)
                stim = nengo.Node(
                    lambda t, f=1.0 + k % 10: np.sin(2 * np.pi * f * t), label=f"m{k}_input"
                )
                nengo.Connection(stim, ensembles[0])
            modules.append(ensembles)

        for _ in range(n_inter):
            k_pre, k_post = rng.choice(n_modules, size=2, replace=False)
            pre = modules[k_pre][rng.randint(len(modules[k_pre]))]
            post = modules[k_post][rng.randint(len(modules[k_post]))]
            _connect(pre, post, rng)
    return net


def _connect(pre, post, rng):
    """Neuron-to-neuron connection with random weights scaled by ``1 / n_pre``."""
    weights = rng.uniform(-1, 1, size=(post.n_neurons, pre.n_neurons)) / pre.n_neurons
    return nengo.Connection(pre.neurons, post.neurons, transform=weights)


def ensemble_rates(net):
    """Synthetic per-neuron firing rates that differ per module.

    Parameters
    ----------
    net : nengo.Network
        A network returned by `build`.

    Returns
    -------
    rates : dict
        Mapping from each `nengo.Ensemble` to a ``(n_neurons,)`` array of rates in Hz.
    """
    rng = np.random.RandomState(RATE_SEED)
    rates = {}
    base_rates = np.geomspace(BASE_RATES[0], BASE_RATES[-1], len(net.networks))
    for module, base_rate in zip(net.networks, base_rates):
        for ens in module.ensembles:
            mean = base_rate * rng.uniform(0.7, 1.3)
            # gamma with shape 2: skewed like measured population rates
            rates[ens] = np.minimum(rng.gamma(2.0, mean / 2.0, size=ens.n_neurons), MAX_RATE)
    return rates
