"""nengo-loihi's CIFAR-10 example network, at its real size.

The network of nengo-loihi's example notebook ``docs/examples/cifar10-convnet.ipynb``
(last version before the examples left the repository in its commit 2493eef), "a
small CIFAR-10 convolutional neural network designed to run on one Loihi chip". A
32x32x3 image is presented by a `nengo.Node`; an off-chip 1x1 convolution turns it
into spikes; five conv layers and a dense layer run on chip; a 10-unit dense output
runs off chip:

============  ==========================  ========  ===========  ======
layer         operation                   output    block shape  blocks
============  ==========================  ========  ===========  ======
input-layer   1x1 conv, 4 filters (host)  32x32x4   --           0
conv-layer1   3x3 conv, 64, stride 2      15x15x64  8x8x16       16
conv-layer2   3x3 conv, 72, stride 1      13x13x72  7x7x8        36
conv-layer3   3x3 conv, 256, stride 2     6x6x256   6x6x12       22
conv-layer4   1x1 conv, 256               6x6x256   6x6x24       11
conv-layer5   1x1 conv, 64                6x6x64    6x6x24       3
dense-layer   dense, 100 units            100       50           2
output-layer  dense, 10 units (host Node) 10        --           0
============  ==========================  ========  ===========  ======

As in the notebook: ``channels_last=True``, ``padding="valid"``, every connection
has ``pop_type=32`` (conv layers therefore send pop32 population axons; the dense
connections use discrete axons), on-chip neurons are
``nengo_loihi.neurons.LoihiLIF(amplitude=1/150)`` and the input layer's are
``nengo.SpikingRectifiedLinear(amplitude=1/150)``, all with ``max_rates`` 150 Hz and
``intercepts`` 0, and every connection has a 10 ms lowpass synapse (what the notebook
sets before running on Loihi). The notebook trains its weights with NengoDL (or
downloads trained ones); here the weights are seeded random draws of the trained
shapes from the notebook's initializer, ``nengo_dl.dists.Glorot`` (uniform, fan
average; ``scale = 1 / kernel area`` for conv layers), and the image is a seeded
synthetic one in [-1, 1], so no data are downloaded.

On chip the network becomes 90 LoihiBlocks (47,404 compartments), one per block
shape tile above, plus one host input carrying the input layer's spikes. Every block
fits one Loihi core, as on the chip the notebook ran on: at most 2,156 output axon
config entries as Loihi's compiler counts them (pop32: two per pixel, whose channels
form one population, and target block), where one entry per source compartment
would give up to 23,328; at most 1,032,192 bits of synapse memory (a 50-neuron
dense-layer block; the 100-unit layer as one block would need about twice that).

`ensemble_rates` gives each ensemble's per-neuron rates from a rate-based forward
pass through the neurons' own rate curves.
"""

import numpy as np

import nengo
import nengo_loihi

#: Seed for the network, the image and the weights.
SEED = 0
#: Target maximum firing rate (Hz) of every ensemble.
MAX_RATE = 150
#: Spike amplitude; neuron outputs are roughly in [0, 1].
AMPLITUDE = 1.0 / MAX_RATE
#: Synaptic time constant (seconds) of every connection when running on Loihi.
TAU = 0.01

#: The notebook's ``layer_confs``: conv layers (``filters``) and dense layers
#: (``n_neurons``); ``block`` is the block shape in (rows, columns, channels).
LAYERS = (
    dict(name="input-layer", filters=4, kernel_size=1, strides=1, on_chip=False),
    dict(name="conv-layer1", filters=64, kernel_size=3, strides=2, block=(8, 8, 16)),
    dict(name="conv-layer2", filters=72, kernel_size=3, strides=1, block=(7, 7, 8)),
    dict(name="conv-layer3", filters=256, kernel_size=3, strides=2, block=(6, 6, 12)),
    dict(name="conv-layer4", filters=256, kernel_size=1, strides=1, block=(6, 6, 24)),
    dict(name="conv-layer5", filters=64, kernel_size=1, strides=1, block=(6, 6, 24)),
    dict(name="dense-layer", n_neurons=100, block=(50,)),
    dict(name="output-layer", n_neurons=10, on_chip=False, node=True),
)


def synthetic_image(rng, shape=(32, 32, 3), n_blobs=8):
    """Smooth coloured blobs on a dark background, with values in [-1, 1].

    Parameters
    ----------
    rng : numpy.random.RandomState
        Source of the blob positions, sizes and colours.
    shape : tuple of int
        Image rows, columns and colour channels.
    n_blobs : int
        Number of blobs.

    Returns
    -------
    image : (rows, cols, channels) ndarray
    """
    rows, cols, channels = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = np.zeros(shape)
    for _ in range(n_blobs):
        r0, c0 = rng.uniform(0, rows), rng.uniform(0, cols)
        width = rng.uniform(2, 7)
        colour = rng.uniform(0, 1, size=channels)
        blob = np.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2 * width ** 2))
        image += blob[:, :, None] * colour
    return 2 * np.clip(image, 0, 1) - 1


def glorot(rng, n, d, scale=1.0):
    """An ``(n, d)`` draw of ``nengo_dl.dists.Glorot(scale)``: uniform, fan average.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Source of the draw.
    n, d : int
        Shape of the draw, as the distribution's ``sample(n, d)`` is called.
    scale : float, optional
        Scale of the variance.

    Returns
    -------
    weights : (n, d) ndarray
    """
    limit = np.sqrt(3.0 * scale / ((n + d) / 2.0))
    return rng.uniform(-limit, limit, size=(n, d))


def conv_transform(rng, conf, shape_in):
    """The `nengo.Convolution` of a conv layer, with a seeded Glorot kernel."""
    size = conf["kernel_size"]
    n_filters = conf["filters"]
    n_in = size * size * shape_in.n_channels
    kernel = glorot(rng, n_in, n_filters, scale=1.0 / size ** 2)
    return nengo.Convolution(
        n_filters=n_filters,
        input_shape=shape_in,
        kernel_size=(size, size),
        strides=(conf["strides"], conf["strides"]),
        padding="valid",
        channels_last=True,
        init=kernel.reshape(size, size, shape_in.n_channels, n_filters),
    )


def dense_transform(rng, conf, shape_in):
    """The `nengo.Dense` of a dense layer, with seeded Glorot weights."""
    n_out = conf["n_neurons"]
    return nengo.Dense((n_out, shape_in.size), init=glorot(rng, n_out, shape_in.size))


def _add_layer(net, rng, conf, pre, shape_in):
    """Add one layer fed by ``pre``; return its output object and shape."""
    if "filters" in conf:
        transform = conv_transform(rng, conf, shape_in)
        shape_out = transform.output_shape
    else:
        transform = dense_transform(rng, conf, shape_in)
        shape_out = nengo.transforms.ChannelShape((conf["n_neurons"],))

    if conf.get("node", False):
        post = nengo.Node(size_in=shape_out.size, label=conf["name"])
    else:
        on_chip = conf.get("on_chip", True)
        neuron_type = (
            nengo_loihi.neurons.LoihiLIF(amplitude=AMPLITUDE)
            if on_chip
            else nengo.SpikingRectifiedLinear(amplitude=AMPLITUDE)
        )
        ens = nengo.Ensemble(
            shape_out.size, 1, neuron_type=neuron_type, label=conf["name"]
        )
        net.config[ens].on_chip = on_chip
        if "block" in conf:
            net.config[ens].block_shape = nengo_loihi.BlockShape(
                conf["block"], shape_out.shape
            )
        post = ens.neurons

    conn = nengo.Connection(pre, post, transform=transform)
    net.config[conn].pop_type = 32
    return post, shape_out


def build():
    """Build the CIFAR-10 network of nengo-loihi's example.

    Returns
    -------
    net : nengo.Network
        The network, with nengo-loihi parameters added (``block_shape`` on the
        on-chip layers, ``on_chip=False`` on the input layer, ``pop_type`` on every
        connection). ``net.output_p`` probes the output node.
    """
    rng = np.random.RandomState(SEED)
    image = synthetic_image(rng)
    shape = nengo.transforms.ChannelShape(image.shape, channels_last=True)

    with nengo.Network(label="cifar10_convnet", seed=SEED) as net:
        nengo_loihi.add_params(net)
        net.config[nengo.Ensemble].max_rates = nengo.dists.Choice([MAX_RATE])
        net.config[nengo.Ensemble].intercepts = nengo.dists.Choice([0])
        net.config[nengo.Connection].synapse = nengo.synapses.Lowpass(TAU)

        x = nengo.Node(image.ravel(), label="input_node")
        for conf in LAYERS:
            x, shape = _add_layer(net, rng, conf, x, shape)
        net.output_p = nengo.Probe(x, synapse=None, label="output_p")

    return net


def _conv2d(x, transform):
    """Apply a channels-last, ``padding="valid"`` convolution to a flat input."""
    kernel = transform.init
    kh, kw = transform.kernel_size
    sh, sw = transform.strides
    x = x.reshape(transform.input_shape.shape)
    out_rows, out_cols = transform.output_shape.spatial_shape
    y = np.zeros(transform.output_shape.shape)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + (out_rows - 1) * sh + 1, sh)
            cols = slice(j, j + (out_cols - 1) * sw + 1, sw)
            y += x[rows, cols] @ kernel[i, j]
    return y.ravel()


def _layer_input(conn, rates):
    """What ``conn`` delivers to its post neurons, given the rates so far."""
    if isinstance(conn.pre_obj, nengo.Node):
        x = np.asarray(conn.pre_obj.output, dtype=float)
    else:
        pre = conn.pre_obj.ensemble
        x = rates[pre] * pre.neuron_type.amplitude
    if isinstance(conn.transform, nengo.Convolution):
        return _conv2d(x, conn.transform)
    return conn.transform.init @ x


def ensemble_rates(net):
    """Predicted firing rates of every ensemble's neurons.

    Runs the network as a rate model: each layer's input is the transformed
    ``amplitude * rate`` of the layer before, and its rates are the neuron type's
    rate curve (``LoihiLIF`` includes Loihi's discretization) at that input, with
    the gains and biases set by ``max_rates`` and ``intercepts``.

    Parameters
    ----------
    net : nengo.Network
        A network returned by `build`.

    Returns
    -------
    rates : dict
        Mapping from each `nengo.Ensemble` to a ``(n_neurons,)`` array of rates in Hz.
    """
    rates = {}
    for conn in net.all_connections:  # created in feed-forward order
        if not isinstance(conn.post_obj, nengo.ensemble.Neurons):
            continue
        ens = conn.post_obj.ensemble
        max_rates = np.full(ens.n_neurons, float(ens.max_rates.options[0]))
        intercepts = np.full(ens.n_neurons, float(ens.intercepts.options[0]))
        gain, bias = ens.neuron_type.gain_bias(max_rates, intercepts)
        x = _layer_input(conn, rates)[None, :]  # one evaluation point per neuron
        # the neuron type's rates include its amplitude
        amplitude = ens.neuron_type.amplitude
        rates[ens] = ens.neuron_type.rates(x, gain, bias)[0] / amplitude
    return rates
