"""Small ResNet-style spiking convolutional network.

A 32x32x3 image (smooth coloured blobs) is presented by a `nengo.Node`. An
off-chip input layer turns the pixels into spikes; everything after it runs on
chip:

===========  ===========================================  =========  ===========  ======
layer        operation                                    output     block shape  blocks
===========  ===========================================  =========  ===========  ======
input        1 neuron per pixel and colour (off chip)     32x32x3    --           0
stem         3x3 conv, 16 filters, stride 2               16x16x16   4x4x16       16
res1, res2   residual blocks: two 3x3 convs (16 filters)  16x16x16   4x4x16       32 each
down         3x3 conv, 32 filters, stride 2               8x8x32     4x4x16       8
res3, res4   residual blocks: two 3x3 convs (32 filters)  8x8x32     4x4x16       16 each
pool         global average pool (sparse transform)       32         32           1
output       dense, 10 units                              10         10           1
===========  ===========================================  =========  ===========  ======

All convolutions use ``padding="same"`` and ``channels_last=True``. A residual
block computes ``y = relu(conv_b(relu(conv_a(x))) + x)``: its output ensemble
receives both the second convolution and an identity skip connection from the
block's input (a 1x1 convolution with an identity kernel, so the skip also uses
population axons). Neurons are `nengo.SpikingRectifiedLinear` with equal gains,
as nengo-loihi requires for neurons targeted by a convolution.

On chip the network becomes 122 LoihiBlocks (about 31,000 compartments) plus one
host input carrying the input layer's spikes. Block shapes are small spatial tiles
with many channels: every compartment of a conv block sends one pop32 axon (two
output entries) to each block of the next layer that covers its pixel, so an
8x8x8 tile feeding a 16-channel layer cut 4 channels per block creates 4,640 output
entries, more than the 4,096 a core has, although ``block.utilization()`` reports
512. A 4x4x16 tile creates at most 2,624. A 4x4x32 tile of ``res3_a`` would need
about 1.18 Mbit of synapse memory, more than the 1 Mbit a core has.

`ensemble_rates` gives each ensemble's per-neuron rates from a rate-based
forward pass (a rectified-linear neuron's rate is its rectified input current).
In the nengo-loihi emulator the measured mean rates fall below the prediction
with depth, to about 0.55 times it at the pool and output layers, while the
pattern over neurons matches (correlation above 0.94).
"""

import numpy as np
import scipy.sparse

import nengo
import nengo_loihi

#: Seed for the network, the image and the kernels.
SEED = 1
#: Spike amplitude; gains are ``1 / AMPLITUDE`` so rates in Hz pass through layers.
AMPLITUDE = 0.01
#: Synaptic time constant (seconds) of the on-chip connections.
TAU = 0.005
#: Kernel scale relative to He initialization; keeps peak rates near 300 Hz or below.
KERNEL_SCALE = 0.7


def blob_image(rng, shape=(32, 32, 3), n_blobs=6):
    """Draw smooth coloured blobs with values in [0, 1].

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
        width = rng.uniform(2, 6)
        colour = rng.uniform(0, 1, size=channels)
        blob = np.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2 * width ** 2))
        image += blob[:, :, None] * colour
    return np.clip(image, 0, 1)


class _Builder:
    """Adds convolutional layers to a network, drawing kernels from one rng."""

    def __init__(self, net, rng):
        self.net = net
        self.rng = rng

    def kernel(self, size, n_in, n_out, scale=1.0):
        """Scaled He-initialized ``(size, size, n_in, n_out)`` kernel."""
        std = scale * KERNEL_SCALE * np.sqrt(2.0 / (size * size * n_in))
        return self.rng.normal(scale=std, size=(size, size, n_in, n_out))

    def conv(self, pre, input_shape, kernel, post=None, strides=(1, 1), block_shape=None,
             label=None):
        """Connect ``pre`` to ``post`` (a new ensemble if None) through a convolution."""
        transform = nengo.Convolution(
            n_filters=kernel.shape[3],
            input_shape=input_shape,
            kernel_size=kernel.shape[:2],
            strides=strides,
            padding="same",
            channels_last=True,
            init=kernel,
        )
        if post is None:
            post = nengo.Ensemble(transform.output_shape.size, 1, label=label)
            self.net.config[post].block_shape = nengo_loihi.BlockShape(
                block_shape, transform
            )
        nengo.Connection(pre.neurons, post.neurons, transform=transform)
        return post, transform.output_shape

    def residual_block(self, x, shape, block_shape, label):
        """Add ``y = relu(conv_b(relu(conv_a(x))) + x)``; return ``y``."""
        n = shape.n_channels
        h, _ = self.conv(
            x, shape, self.kernel(3, n, n), block_shape=block_shape, label=label + "_a"
        )
        # scale the second kernel down so rates do not grow along the skip path
        y, _ = self.conv(
            h, shape, self.kernel(3, n, n, scale=0.5), block_shape=block_shape,
            label=label + "_b",
        )
        identity = np.eye(n)[None, None, :, :]
        self.conv(x, shape, identity, post=y)
        return y


#: Block shape of the conv layers of each stage (16x16x16 and 8x8x32 outputs).
BLOCK_SHAPES = ((4, 4, 16), (4, 4, 16))


def build(block_shapes=BLOCK_SHAPES, label="resnet_small"):
    """Build the ResNet-style network.

    Parameters
    ----------
    block_shapes : pair of tuple of int, optional
        ``(rows, columns, channels)`` block shape of the conv layers of stage 1
        (16x16x16 outputs) and of stage 2 (8x8x32 outputs).
    label : str, optional
        Label of the network.

    Returns
    -------
    net : nengo.Network
        The network, with nengo-loihi parameters added (``block_shape`` on the
        conv layers, ``on_chip=False`` on the input layer).
    """
    stage1, stage2 = (tuple(int(s) for s in shape) for shape in block_shapes)
    rng = np.random.RandomState(SEED)
    image = blob_image(rng)

    with nengo.Network(label=label, seed=SEED) as net:
        nengo_loihi.add_params(net)
        # voltages start at zero, as they do on chip
        net.config[nengo.Ensemble].neuron_type = nengo.SpikingRectifiedLinear(
            amplitude=AMPLITUDE, initial_state={"voltage": nengo.dists.Choice([0])}
        )
        net.config[nengo.Ensemble].gain = nengo.dists.Choice([1.0 / AMPLITUDE])
        net.config[nengo.Ensemble].bias = nengo.dists.Choice([0.0])
        net.config[nengo.Connection].synapse = TAU
        layers = _Builder(net, rng)

        stim = nengo.Node(image.ravel(), label="image")
        shape = nengo.transforms.ChannelShape(image.shape, channels_last=True)
        inp = nengo.Ensemble(shape.size, 1, label="input")
        net.config[inp].on_chip = False
        nengo.Connection(stim, inp.neurons, synapse=None)

        # stage 1: 16x16x16
        x, shape = layers.conv(
            inp, shape, layers.kernel(3, 3, 16), strides=(2, 2), block_shape=stage1,
            label="stem",
        )
        x = layers.residual_block(x, shape, stage1, "res1")
        x = layers.residual_block(x, shape, stage1, "res2")

        # stage 2: 8x8x32
        x, shape = layers.conv(
            x, shape, layers.kernel(3, 16, 32), strides=(2, 2), block_shape=stage2,
            label="down",
        )
        x = layers.residual_block(x, shape, stage2, "res3")
        x = layers.residual_block(x, shape, stage2, "res4")

        # global average pooling: each pool neuron averages one channel
        n_pixels, n_channels = np.prod(shape.spatial_shape), shape.n_channels
        cols = np.arange(shape.size)  # channels-last: index = pixel * channels + channel
        pool_weights = scipy.sparse.csr_matrix(
            (np.full(shape.size, 1.0 / n_pixels), (cols % n_channels, cols)),
            shape=(n_channels, shape.size),
        )
        pool = nengo.Ensemble(n_channels, 1, label="pool")
        nengo.Connection(
            x.neurons, pool.neurons,
            transform=nengo.Sparse((n_channels, shape.size), init=pool_weights),
        )

        out = nengo.Ensemble(10, 1, label="output")
        weights = rng.normal(scale=np.sqrt(2.0 / n_channels), size=(10, n_channels))
        nengo.Connection(pool.neurons, out.neurons, transform=weights)
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
            elif isinstance(conn.transform, (nengo.Dense, nengo.Sparse)):
                current += conn.transform.init @ x
            else:
                current += x
        gain = ens.gain.options.ravel()[0]
        bias = ens.bias.options.ravel()[0]
        rates[ens] = np.clip(gain * current + bias, 0, None)
    return rates
