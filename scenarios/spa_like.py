"""SPA-like model: many small ensembles representing 32-dimensional vectors.

Written with plain nengo (no nengo_spa). Each component is a `nengo.Network`
of one-dimensional sub-ensembles, one per vector dimension, like a
`nengo.networks.EnsembleArray`:

===========  =============================================  ==========  =========
component    what it does                                   ensembles   neurons
===========  =============================================  ==========  =========
vision       input vector from ``vision_stim`` (host)       32          30 each
cue          second input vector from ``cue_stim`` (host)   32          30 each
memory       integrator of vision (recurrent, tau 0.1 s)    32          50 each
bind         element-wise product of memory and permuted    64          20 each
             cue, computed as in `nengo.networks.Product`
             (two squaring ensembles per dimension):
             binding in the Fourier domain, like circular
             convolution
bound        the bound vector                               32          30 each
cleanup      associative memory over 8 vocabulary items:    8           30 each
             thresholded similarity with each item
motor        clean-up output, the vocabulary vectors        32          30 each
             weighted by the item ensembles
===========  =============================================  ==========  =========

That is 232 ensembles. Sub-ensembles are connected to each other directly,
exactly as nengo-loihi would rewire ensemble arrays when it removes their
passthrough nodes: one decoded connection per dimension between components
(the permutation keeps cue to bind at one per dimension), but 32 x 8 each into
and out of the clean-up memory, 768 decoded connections in all. (Real
`EnsembleArray` s would build the same connections, but nengo-loihi adds the
connections that replace passthrough nodes in set order, so the order of
their blocks would change from build to build.)

Each decoded connection gets its own block of decode neurons (10 on/off pairs,
20 compartments), so on chip the model becomes 1,000 LoihiBlocks: 232 ensemble
blocks of 20-50 compartments and 768 decode-neuron blocks of 20 compartments.
The two stimuli stay on the host and reach the chip as 64 host inputs (one per
sub-ensemble of vision and cue).

`ensemble_rates` estimates each neuron's mean rate from its tuning curve over
the values its ensemble typically represents (see `VALUE_STD`). The gains,
biases and encoders are drawn from the ensembles' own distributions with a
fixed seed; they are not the built values, so rates are right in distribution
rather than neuron by neuron. The decode-neuron blocks have no ensemble and so
no entry; nengo-loihi's own ``GreedyInterchip(ensemble_rates=...)`` therefore
raises ``KeyError`` on this model, since it needs rates for every block that
sends spikes.
"""

import numpy as np

import nengo
from nengo.dists import Choice, Uniform

#: Seed of the network, the vocabulary and the permutation.
SEED = 4
#: Seed of the rate estimate.
RATE_SEED = 5
#: Dimensionality of the represented vectors.
D = 32
#: Number of vocabulary items in the clean-up memory.
N_ITEMS = 8
#: Seconds each stimulus vector is shown.
PRESENTATION = 0.1
#: Time constant (seconds) of the memory's integrating connections.
MEMORY_TAU = 0.1
#: Clean-up threshold on the similarity with a vocabulary item.
THRESHOLD = 0.3
#: Components of the model, as attribute names of the network.
COMPONENTS = ("vision", "cue", "memory", "bind", "bound", "cleanup", "motor")
#: Typical spread of one represented dimension: the standard deviation of a
#: unit vector's components.
VALUE_STD = 1 / np.sqrt(D)


def vocabulary(rng, n_items=N_ITEMS, dimensions=D):
    """Random unit vectors with entries ``+-1 / sqrt(dimensions)``, one row per item.

    Equal-magnitude entries keep every decoded connection into and out of the
    clean-up memory away from tiny weights, which nengo-loihi cannot discretize
    (it finds no weight exponent for a decode block whose weights are all tiny).

    Parameters
    ----------
    rng : numpy.random.RandomState
    n_items, dimensions : int

    Returns
    -------
    vocab : (n_items, dimensions) ndarray
    """
    return rng.choice([-1.0, 1.0], size=(n_items, dimensions)) / np.sqrt(dimensions)


def _sequence(vocab, order):
    """Node function showing ``vocab[order[k]]`` during presentation ``k``."""

    def stimulus(t):
        k = int(t / PRESENTATION) % len(order)
        return vocab[order[k]]

    return stimulus


def _array(label, n_ensembles, n_neurons, **ens_kwargs):
    """A network of ``n_ensembles`` one-dimensional ensembles, listed in ``.ensembles``."""
    with nengo.Network(label=label) as array:
        for i in range(n_ensembles):
            nengo.Ensemble(n_neurons, 1, label=f"{label}[{i}]", **ens_kwargs)
    return array


def build():
    """Build the SPA-like model.

    Returns
    -------
    net : nengo.Network
        The model. Its components are attributes (``net.vision``, ``net.cue``,
        ``net.memory``, ``net.bind``, ``net.bound``, ``net.cleanup``,
        ``net.motor``), each a `nengo.Network` whose ``ensembles`` are its
        sub-ensembles; ``net.bind.ensembles`` holds the 32 ``a + b`` squaring
        ensembles followed by the 32 ``a - b`` ones.
    """
    rng = np.random.RandomState(SEED)
    vocab = vocabulary(rng)
    permutation = rng.permutation(D)  # bind dimension i takes cue[permutation[i]]

    with nengo.Network(label="spa_like", seed=SEED) as net:
        # voltages start at zero, as they do on chip
        net.config[nengo.Ensemble].neuron_type = nengo.LIF(
            initial_state={"voltage": Choice([0])}
        )
        net.vision_stim = nengo.Node(
            _sequence(vocab, rng.permutation(N_ITEMS)), label="vision_stim"
        )
        net.cue_stim = nengo.Node(_sequence(vocab, rng.permutation(N_ITEMS)), label="cue_stim")

        net.vision = _array("vision", D, 30)
        net.cue = _array("cue", D, 30)
        net.memory = _array("memory", D, 50)
        net.bind = _array("bind", 2 * D, 20)
        net.bound = _array("bound", D, 30)
        net.cleanup = _array(
            "cleanup", N_ITEMS, 30, intercepts=Uniform(THRESHOLD, 0.9), encoders=Choice([[1]])
        )
        net.motor = _array("motor", D, 30)

        vision, cue, memory = net.vision.ensembles, net.cue.ensembles, net.memory.ensembles
        bound, cleanup, motor = net.bound.ensembles, net.cleanup.ensembles, net.motor.ensembles
        sum_sq, diff_sq = net.bind.ensembles[:D], net.bind.ensembles[D:]

        for i in range(D):
            nengo.Connection(net.vision_stim[i], vision[i])
            nengo.Connection(net.cue_stim[i], cue[i])

        # integrator memory
        for i in range(D):
            nengo.Connection(vision[i], memory[i], transform=MEMORY_TAU, synapse=MEMORY_TAU)
            nengo.Connection(memory[i], memory[i], synapse=MEMORY_TAU)

        # binding: a * b = ((a + b) / sqrt(2))^2 / 2 - ((a - b) / sqrt(2))^2 / 2,
        # with a = memory[i] and b = cue[permutation[i]]
        s = 1 / np.sqrt(2)
        for i in range(D):
            b = cue[permutation[i]]
            nengo.Connection(memory[i], sum_sq[i], transform=s)
            nengo.Connection(memory[i], diff_sq[i], transform=s)
            nengo.Connection(b, sum_sq[i], transform=s)
            nengo.Connection(b, diff_sq[i], transform=-s)
            nengo.Connection(sum_sq[i], bound[i], function=np.square, transform=0.5)
            nengo.Connection(diff_sq[i], bound[i], function=np.square, transform=-0.5)

        # associative clean-up memory: similarity with each item, then the items
        for k in range(N_ITEMS):
            for i in range(D):
                nengo.Connection(bound[i], cleanup[k], transform=vocab[k, i])
        for k in range(N_ITEMS):
            for i in range(D):
                nengo.Connection(cleanup[k], motor[i], transform=vocab[k, i])
    return net


def ensemble_rates(net, n_samples=200):
    """Estimated per-neuron firing rates.

    Each neuron's rate is its tuning curve averaged over ``n_samples`` values
    drawn from a normal distribution with standard deviation ``VALUE_STD``
    (for clean-up items, the similarity is instead 1, for the presented item,
    a ``1 / N_ITEMS`` fraction of the time).

    Parameters
    ----------
    net : nengo.Network
        A network returned by `build`.
    n_samples : int
        Number of represented values averaged over.

    Returns
    -------
    rates : dict
        Mapping from each `nengo.Ensemble` to a ``(n_neurons,)`` array of rates in Hz.
    """
    rng = np.random.RandomState(RATE_SEED)
    cleanup = set(net.cleanup.ensembles)
    rates = {}
    for ens in net.all_ensembles:
        n, d = ens.n_neurons, ens.dimensions
        x = rng.normal(scale=VALUE_STD, size=(n_samples, d))
        if ens in cleanup:
            presented = rng.rand(n_samples) < 1.0 / N_ITEMS
            x[presented] = 1.0
        x = x / ens.radius

        max_rates = ens.max_rates.sample(n, rng=rng)
        intercepts = ens.intercepts.sample(n, rng=rng)
        gain, bias = ens.neuron_type.gain_bias(max_rates, intercepts)
        encoders = ens.encoders.sample(n, d, rng=rng)
        encoders = encoders / np.linalg.norm(encoders, axis=1, keepdims=True)
        rates[ens] = ens.neuron_type.rates(x @ encoders.T, gain, bias).mean(axis=0)
    return rates
