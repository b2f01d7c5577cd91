"""A ResNet whose dense head makes nengo-loihi refuse its last conv blocks.

The body is ``resnet_small``'s (stem, four residual blocks with identity skips,
``padding="same"`` 3x3 convolutions on pop32 population axons), cut into
``BlockShape((8, 8, 16), ...)`` tiles of 1,024 neurons: four blocks per 16x16x16
layer and two per 8x8x32 layer. Instead of a global average pool, the last residual
block is flattened into a dense hidden layer, as in nengo-loihi's CIFAR-10 example:

=======  ==========================================  ========  ===========  ======
layer    operation                                   output    block shape  blocks
=======  ==========================================  ========  ===========  ======
input    1 neuron per pixel and colour (off chip)    32x32x3   --           0
stem     3x3 conv, 16 filters, stride 2              16x16x16  8x8x16       4
res1-2   residual blocks: two 3x3 convs (16)         16x16x16  8x8x16       8 each
down     3x3 conv, 32 filters, stride 2              8x8x32    8x8x16       2
res3-4   residual blocks: two 3x3 convs (32)         8x8x32    8x8x16       4 each
fc       dense, 256 units, from all 2,048 neurons    256       (automatic)  5
output   dense, 10 units                             10        10           1
=======  ==========================================  ========  ===========  ======

The conv tiles fit a core. Counted as Loihi's compiler counts output axon config
entries (a population of channels sending to one input axon takes two entries,
however many compartments it has), no conv block needs more than 512 entries for its
population axons. (An earlier version of this scenario, the same body with
``resnet_small``'s pooled head, was meant not to fit: at one entry per compartment
its conv blocks needed up to 8,192 entries. They need at most 1,024, 512 of them on
population axons, and it builds on the NxSDK stand-in one block per core.)

The dense head is what does not fit. ``fc`` receives 2,048 axons and has no block
shape, so nengo-loihi splits it by synapse memory into five blocks of 48-52 neurons
(up to 917,504 bits each; as one block it would need 4,718,592 bits, 4.5 times a
core's 1,048,576).
Every compartment of ``res4_b`` then sends a discrete axon to each of the five: a
1,024-neuron tile needs 5,120 output axons, more than a core's 4,096, and
nengo-loihi's own build refuses the model (``BuildError: LoihiBlock(<Ensemble
'res4_b'>[0]): Output axons (5120) exceeded max (4096)``). Smaller tiles of
``res4_b`` fix it: with ``BlockShape((8, 8, 8), (8, 8, 32))`` or
``BlockShape((4, 8, 16), (8, 8, 32))`` (four blocks of 2,560 entries) nengo-loihi
builds the model into 38 blocks, which build on the NxSDK stand-in one block per
core. ``partitioner fit resnet_unfitted`` searches for shapes.

`ensemble_rates` gives each ensemble's per-neuron rates from a rate-based forward
pass (see ``resnet_small.ensemble_rates``).
"""

import importlib.util
import pathlib

import numpy as np

import nengo
import nengo_loihi

_spec = importlib.util.spec_from_file_location(
    "_scenario_resnet_small", pathlib.Path(__file__).with_name("resnet_small.py")
)
_resnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_resnet)

#: Block shape of the conv layers of stage 1 (16x16x16) and stage 2 (8x8x32).
BLOCK_SHAPES = ((8, 8, 16), (8, 8, 16))
#: Units of the dense hidden layer.
N_HIDDEN = 256
#: Scale of the hidden layer's weights relative to He initialization.
HIDDEN_SCALE = 0.5


def _configure(net):
    """Neuron type, gains, biases and synapses shared with ``resnet_small``."""
    net.config[nengo.Ensemble].neuron_type = nengo.SpikingRectifiedLinear(
        amplitude=_resnet.AMPLITUDE, initial_state={"voltage": nengo.dists.Choice([0])}
    )
    net.config[nengo.Ensemble].gain = nengo.dists.Choice([1.0 / _resnet.AMPLITUDE])
    net.config[nengo.Ensemble].bias = nengo.dists.Choice([0.0])
    net.config[nengo.Connection].synapse = _resnet.TAU


def _body(layers, image):
    """Input layer, stem and residual stages; return the last layer and its shape."""
    stage1, stage2 = BLOCK_SHAPES
    stim = nengo.Node(image.ravel(), label="image")
    shape = nengo.transforms.ChannelShape(image.shape, channels_last=True)
    inp = nengo.Ensemble(shape.size, 1, label="input")
    layers.net.config[inp].on_chip = False
    nengo.Connection(stim, inp.neurons, synapse=None)

    x, shape = layers.conv(
        inp, shape, layers.kernel(3, 3, 16), strides=(2, 2), block_shape=stage1,
        label="stem",
    )
    x = layers.residual_block(x, shape, stage1, "res1")
    x = layers.residual_block(x, shape, stage1, "res2")
    x, shape = layers.conv(
        x, shape, layers.kernel(3, 16, 32), strides=(2, 2), block_shape=stage2,
        label="down",
    )
    x = layers.residual_block(x, shape, stage2, "res3")
    x = layers.residual_block(x, shape, stage2, "res4")
    return x, shape


def _dense(rng, pre, n_out, label, scale=1.0):
    """A new ensemble of ``n_out`` fed by all of ``pre``'s neurons (He weights)."""
    post = nengo.Ensemble(n_out, 1, label=label)
    n_in = pre.n_neurons
    weights = rng.normal(scale=scale * np.sqrt(2.0 / n_in), size=(n_out, n_in))
    nengo.Connection(pre.neurons, post.neurons, transform=weights)
    return post


def build():
    """Build the ResNet with a flattened dense head.

    Returns
    -------
    net : nengo.Network
        The network, with ``block_shape`` set on every conv layer and
        ``on_chip=False`` on the input layer. nengo-loihi refuses to build it as
        it is (see the module notes).
    """
    rng = np.random.RandomState(_resnet.SEED)
    image = _resnet.blob_image(rng)

    with nengo.Network(label="resnet_unfitted", seed=_resnet.SEED) as net:
        nengo_loihi.add_params(net)
        _configure(net)
        x, _ = _body(_resnet._Builder(net, rng), image)
        fc = _dense(rng, x, N_HIDDEN, "fc", scale=HIDDEN_SCALE)
        out = _dense(rng, fc, 10, "output")
        nengo.Probe(out.neurons, label="output_spikes")

    return net


def ensemble_rates(net):
    """Predicted per-neuron rates (see ``resnet_small.ensemble_rates``)."""
    return _resnet.ensemble_rates(net)
