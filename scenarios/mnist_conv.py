"""MNIST-style spiking convolutional network.

A 28x28x1 image (a drawn "7") is presented by a `nengo.Node`. An off-chip input
layer turns the pixels into spikes, which are sent to the chip, where the rest of
the network runs:

=========  ==============================  ===========  ===========  ======
layer      operation                       output       block shape  blocks
=========  ==============================  ===========  ===========  ======
input      1 neuron per pixel (off chip)   28x28x1      --           0
conv1      3x3 conv, 16 filters, valid     26x26x16     7x7x16       16
pool1      2x2 average pool, stride 2      13x13x16     7x7x16       4
conv2      3x3 conv, 32 filters, valid     11x11x32     6x6x16       8
pool2      2x2 average pool, stride 2      5x5x32       5x5x32       1
output     dense, 10 units                 10           10           1
=========  ==============================  ===========  ===========  ======

All layers use `nengo.SpikingRectifiedLinear` neurons with equal gains (as
nengo-loihi requires for neurons targeted by a convolution). Convolutions and
pooling are `nengo.Convolution` transforms with ``channels_last=True``, which
nengo-loihi builds as population axons (pop32, except pop16 into conv2); the
pooling layers are strided convolutions whose kernels average each channel.
The output layer is a `nengo.Dense` connection.

On chip the network becomes about 30 LoihiBlocks (one per block shape tile
above) plus one host input carrying the input layer's spikes.

`ensemble_rates` gives each ensemble's per-neuron rates from a rate-based
forward pass (a rectified-linear neuron's rate is its rectified input current).
In the nengo-loihi emulator the measured mean rates are 0.8 to 1.0 times the
prediction, and the pattern over neurons matches (correlation above 0.99).
"""

import numpy as np

import nengo
import nengo_loihi

#: Seed for the network and for the kernels.
SEED = 0
#: Spike amplitude; gains are ``1 / AMPLITUDE`` so rates in Hz pass through layers.
AMPLITUDE = 0.01
#: Synaptic time constant (seconds) of the on-chip connections.
TAU = 0.005


def digit_image(shape=(28, 28)):
    """Draw a blurred "7" with values in [0, 1].

    Parameters
    ----------
    shape : tuple of int
        Image rows and columns.

    Returns
    -------
    image : (rows, cols) ndarray
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols] / np.array([rows, cols])[:, None, None]
    # two strokes, as (start, end) points in (row, col) image fractions
    strokes = [((0.22, 0.25), (0.22, 0.75)), ((0.22, 0.75), (0.82, 0.42))]
    image = np.zeros(shape)
    for (r0, c0), (r1, c1) in strokes:
        d = np.array([r1 - r0, c1 - c0])
        t = ((yy - r0) * d[0] + (xx - c0) * d[1]) / d.dot(d)
        t = np.clip(t, 0, 1)
        dist2 = (yy - (r0 + t * d[0])) ** 2 + (xx - (c0 + t * d[1])) ** 2
        image = np.maximum(image, np.exp(-dist2 / (2 * 0.04 ** 2)))
    return image


def _conv_layer(net, pre, input_shape, kernel, strides, block_shape, label):
    """Add an ensemble fed by ``pre`` through a convolution with ``kernel``."""
    conv = nengo.Convolution(
        n_filters=kernel.shape[3],
        input_shape=input_shape,
        kernel_size=kernel.shape[:2],
        strides=strides,
        padding="valid",
        channels_last=True,
        init=kernel,
    )
    layer = nengo.Ensemble(conv.output_shape.size, 1, label=label)
    conn = nengo.Connection(pre, layer.neurons, transform=conv)
    net.config[layer].block_shape = nengo_loihi.BlockShape(block_shape, conv)
    return layer, conv, conn


def _pool_kernel(n_channels, size=2):
    """Kernel averaging each channel over ``size x size`` pixels."""
    kernel = np.zeros((size, size, n_channels, n_channels))
    kernel[:, :, np.arange(n_channels), np.arange(n_channels)] = 1.0 / size ** 2
    return kernel


def build():
    """Build the MNIST-style convolutional network.

    Returns
    -------
    net : nengo.Network
        The network, with nengo-loihi parameters added (``block_shape`` on the
        conv layers, ``on_chip=False`` on the input layer).
    """
    rng = np.random.RandomState(SEED)

    def he_kernel(kh, kw, n_in, n_out):
        return rng.normal(scale=np.sqrt(2.0 / (kh * kw * n_in)), size=(kh, kw, n_in, n_out))

    with nengo.Network(label="mnist_conv", seed=SEED) as net:
        nengo_loihi.add_params(net)
        # voltages start at zero, as they do on chip
        net.config[nengo.Ensemble].neuron_type = nengo.SpikingRectifiedLinear(
            amplitude=AMPLITUDE, initial_state={"voltage": nengo.dists.Choice([0])}
        )
        net.config[nengo.Ensemble].gain = nengo.dists.Choice([1.0 / AMPLITUDE])
        net.config[nengo.Ensemble].bias = nengo.dists.Choice([0.0])
        net.config[nengo.Connection].synapse = TAU

        image = nengo.Node(digit_image().ravel(), label="image")

        # off-chip layer turning pixel intensities into spikes (up to 100 Hz)
        shape = nengo.transforms.ChannelShape((28, 28, 1), channels_last=True)
        inp = nengo.Ensemble(shape.size, 1, label="input")
        net.config[inp].on_chip = False
        nengo.Connection(image, inp.neurons, synapse=None)

        conv1, t1, _ = _conv_layer(
            net, inp.neurons, shape, he_kernel(3, 3, 1, 16), (1, 1), (7, 7, 16), "conv1"
        )
        pool1, t2, _ = _conv_layer(
            net, conv1.neurons, t1.output_shape, _pool_kernel(16), (2, 2), (7, 7, 16),
            "pool1",
        )
        conv2, t3, c3 = _conv_layer(
            net, pool1.neurons, t2.output_shape, he_kernel(3, 3, 16, 32), (1, 1),
            (6, 6, 16), "conv2",
        )
        net.config[c3].pop_type = 16
        pool2, t4, _ = _conv_layer(
            net, conv2.neurons, t3.output_shape, _pool_kernel(32), (2, 2), (5, 5, 32),
            "pool2",
        )

        out = nengo.Ensemble(10, 1, label="output")
        n_pool = t4.output_shape.size
        weights = rng.normal(scale=np.sqrt(2.0 / n_pool), size=(10, n_pool))
        nengo.Connection(pool2.neurons, out.neurons, transform=weights)
        nengo.Probe(out.neurons, label="output_spikes")

    return net


def _conv2d(x, transform):
    """Apply a channels-last ``nengo.Convolution`` to a flat input vector."""
    kernel = transform.init
    kh, kw = transform.kernel_size
    sh, sw = transform.strides
    x = x.reshape(transform.input_shape.shape)
    out_rows, out_cols = transform.output_shape.spatial_shape
    if transform.padding == "same":
        pad_r = max((out_rows - 1) * sh + kh - x.shape[0], 0)
        pad_c = max((out_cols - 1) * sw + kw - x.shape[1], 0)
        x = np.pad(
            x, ((pad_r // 2, pad_r - pad_r // 2), (pad_c // 2, pad_c - pad_c // 2), (0, 0))
        )
    y = np.zeros(transform.output_shape.shape)
    for i in range(kh):
        for j in range(kw):
            patch = x[i : i + (out_rows - 1) * sh + 1 : sh, j : j + (out_cols - 1) * sw + 1 : sw]
            y += patch @ kernel[i, j]
    return y.ravel()


def ensemble_rates(net):
    """Predicted firing rates of every ensemble's neurons.

    Runs the network as a rate model: each layer's rates are the rectified sum of
    its inputs, with spiking inputs counted as ``amplitude * rate``.

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
    for ens in net.all_ensembles:  # created in feed-forward order
        current = np.zeros(ens.n_neurons)
        for conn in net.all_connections:
            if conn.post_obj != ens.neurons:
                continue
            if isinstance(conn.pre_obj, nengo.Node):
                x = np.asarray(conn.pre_obj.output, dtype=float)
            else:
                pre = conn.pre_obj.ensemble
                x = rates[pre] * pre.neuron_type.amplitude
            if isinstance(conn.transform, nengo.Convolution):
                current += _conv2d(x, conn.transform)
            elif isinstance(conn.transform, nengo.Dense):
                current += np.dot(conn.transform.init, x)
            else:
                current += x
        gain = ens.gain.options.ravel()[0]
        bias = ens.bias.options.ravel()[0]
        rates[ens] = np.clip(gain * current + bias, 0, None)
    return rates
