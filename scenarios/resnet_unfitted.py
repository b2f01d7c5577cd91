"""The ResNet of ``resnet_small.py`` with large conv blocks that no core can hold.

Same network (stem, four residual blocks with identity skips, ``padding="same"``,
global average pool, dense output), but every conv layer is cut into 1,024-neuron
blocks: ``BlockShape((8, 8, 16), ...)`` on the 16x16x16 layers of stage 1 (four
blocks each) and on the 8x8x32 layers of stage 2 (two blocks each). Each block fills
a core's 1,024 compartments, and nengo-loihi's own checks pass: its
``block.utilization()`` counts one output axon per target pixel.

The hardware builder creates far more output axon entries than that. Every
compartment of a conv block sends one pop32 axon (two entries) to each block of the
next layer that covers its pixel, through the 3x3 convolution and through the
identity skip: an 8x8x16 tile of ``res1_b`` feeds ``res2_a`` and ``res2_b`` and needs
4,640 entries, more than a core's 4,096. Placing the model is refused with a
`partitioner.errors.BlockTooLargeError`; ``partitioner fit resnet_unfitted`` finds
block shapes that fit (see ``docs/guide.md``, "Block shapes").
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "_scenario_resnet_small", pathlib.Path(__file__).with_name("resnet_small.py")
)
_resnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_resnet)

#: Block shapes of the conv layers of stage 1 (16x16x16) and stage 2 (8x8x32).
BLOCK_SHAPES = ((8, 8, 16), (8, 8, 16))


def build():
    """Build the ResNet with 1,024-neuron conv blocks.

    Returns
    -------
    net : nengo.Network
        The network, with ``block_shape`` set on every conv layer.
    """
    return _resnet.build(block_shapes=BLOCK_SHAPES, label="resnet_unfitted")


def ensemble_rates(net):
    """Predicted per-neuron rates (see ``resnet_small.ensemble_rates``)."""
    return _resnet.ensemble_rates(net)
