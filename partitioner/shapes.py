"""Block shapes that make an ensemble's blocks fit a Loihi core.

nengo-loihi splits an ensemble into blocks of equal size along its ``BlockShape``.
When one of those blocks still breaks a per-core limit, the usual fix is a smaller
block shape. `suggest_block_shape` computes one from how far the block is over the
limit, assuming the offending quantity shrinks in proportion to the block size (true
for compartments, for output axons, and for the synapse memory of dense weights).
`suggest_tile_shape` does the same but keeps a layer's structure (rows x columns x
channels tiles), choosing among `candidate_shapes`, the tilings that
`partitioner.fitting.fit_block_shapes` costs and verifies.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from nengo_loihi import BlockShape

__all__ = [
    "suggest_block_shape",
    "suggest_tile_shape",
    "candidate_shapes",
    "tile_sizes",
    "n_blocks",
    "format_block_shape",
    "tile_text",
]

#: Fraction of the core limit a suggested block aims for, leaving headroom for the
#: per-block overheads that do not shrink with the block (e.g. 64-bit word rounding).
DEFAULT_MARGIN = 0.9
_MAX_COMPARTMENTS = 1024


def suggest_block_shape(ens_shape_or_n_neurons, value, limit, rule, *, block_size=None,
                        block_shape=None, margin=DEFAULT_MARGIN):
    """A `nengo_loihi.BlockShape` whose blocks stay under a per-core limit.

    The current block size is multiplied by ``limit / value * margin`` (and never
    exceeds 1024 compartments). The ensemble is then cut into as few blocks of at most
    that size as possible, of near-equal size.

    Parameters
    ----------
    ens_shape_or_n_neurons : int or tuple of int
        Number of neurons of the ensemble, or its conceptual shape (as in
        ``BlockShape(shape, ensemble_shape)``).
    value : int
        What the offending block needs (e.g. 5600 output axons).
    limit : int
        What one core offers (e.g. 4096).
    rule : str
        The rule broken: ``"compartments"``, ``"in_axons"``, ``"out_axons"`` or
        ``"synapse_bits"``. Only used to validate the call; input axons usually do not
        shrink with the receiving block (see Notes).
    block_size : int, optional
        Compartments in the offending block. Defaults to the ensemble size capped at
        1024 (what nengo-loihi uses for an ensemble that fits one core).
    block_shape : tuple of int, optional
        Current block shape for multi-dimensional ensembles (defaults to the whole
        ensemble shape).
    margin : float, optional
        Fraction of the limit to aim for (default 0.9).

    Returns
    -------
    nengo_loihi.BlockShape

    Notes
    -----
    Input axons of a block are the presynaptic axons that reach it. For dense
    connections every block of the receiving ensemble still receives all of them, so a
    smaller shape only helps where inputs are local (e.g. convolutions).

    Examples
    --------
    >>> suggest_block_shape(800, 5600, 4096, "out_axons").shape
    (400,)
    """
    if rule not in ("compartments", "in_axons", "out_axons", "synapse_bits"):
        raise ValueError(f"Unknown rule {rule!r}")
    if value <= 0 or limit <= 0:
        raise ValueError(f"value and limit must be positive (got {value}, {limit})")
    ens_shape = _as_shape(ens_shape_or_n_neurons)
    n_neurons = int(np.prod(ens_shape))
    if block_size is None:
        block_size = min(n_neurons, _MAX_COMPARTMENTS)
    target = min(
        _MAX_COMPARTMENTS,
        max(1, math.floor(block_size * min(1.0, limit / value) * margin)),
    )
    if len(ens_shape) == 1:
        n_parts = -(-n_neurons // target)
        return BlockShape((-(-n_neurons // n_parts),), ens_shape)
    start = ens_shape if block_shape is None else tuple(int(s) for s in block_shape)
    return BlockShape(_shrink_nd(start, ens_shape, target), ens_shape)


def format_block_shape(shape):
    """Python source text that recreates ``shape`` (a `nengo_loihi.BlockShape`)."""
    return f"nengo_loihi.BlockShape({tuple(shape.shape)}, {tuple(shape.ensemble_shape)})"


def tile_text(shape):
    """Short text for the blocks of ``shape``: ``"8x8x16 tiles"``, ``"blocks of 400"``.

    Parameters
    ----------
    shape : nengo_loihi.BlockShape or tuple of int
        A block shape, or the shape of one block.
    """
    dims = tuple(int(s) for s in getattr(shape, "shape", shape))
    if len(dims) == 1:
        return f"blocks of {dims[0]}"
    return "x".join(str(d) for d in dims) + " tiles"


def tile_sizes(n):
    """Every block length worth trying along a dimension of length ``n``, largest first.

    These are ``ceil(n / k)`` for ``k = 1 .. n``: the divisors of ``n`` (equal
    blocks) and the near-equal cuts in between. Two lengths giving the same number of
    blocks are reduced to the smaller.

    Examples
    --------
    >>> tile_sizes(16)
    [16, 8, 6, 4, 3, 2, 1]
    """
    n = int(n)
    if n <= 0:
        raise ValueError(f"A dimension must be positive, not {n}")
    sizes = {}
    for k in range(1, n + 1):
        size = -(-n // k)
        parts = -(-n // size)
        sizes[parts] = min(size, sizes.get(parts, size))
    return sorted(set(sizes.values()), reverse=True)


def n_blocks(block_shape, ensemble_shape):
    """Number of blocks nengo-loihi cuts ``ensemble_shape`` into with ``block_shape``."""
    return int(np.prod([-(-e // b) for b, e in zip(block_shape, ensemble_shape)]))


def candidate_shapes(ensemble_shape, channel_axis=None, max_size=_MAX_COMPARTMENTS):
    """Block shapes of an ensemble, fewest blocks first.

    Every dimension takes each length of `tile_sizes`; shapes whose blocks exceed
    ``max_size`` neurons are left out. Among shapes with as many blocks, those that
    keep more channels together come first (splitting the channels of a layer makes
    every block of the next layer's inputs reach more blocks), then those with the
    most compact spatial tiles.

    Parameters
    ----------
    ensemble_shape : tuple of int
        Conceptual shape of the ensemble (e.g. a ``ChannelShape.shape``).
    channel_axis : int, optional
        Which dimension holds the channels, if any.
    max_size : int, optional
        Most neurons per block (default 1024, a core's compartments).

    Returns
    -------
    list of tuple of int
    """
    ensemble_shape = _as_shape(ensemble_shape)
    per_dim = [tile_sizes(e) for e in ensemble_shape]
    shapes = [s for s in itertools.product(*per_dim) if int(np.prod(s)) <= max_size]

    def key(shape):
        channels = shape[channel_axis] if channel_axis is not None else 0
        spatial = [s for d, s in enumerate(shape) if d != channel_axis]
        return (n_blocks(shape, ensemble_shape), -channels,
                max(spatial, default=0) - min(spatial, default=0), shape)

    return sorted(shapes, key=key)


def suggest_tile_shape(ensemble_shape, value, limit, rule, *, block_shape=None,
                       block_size=None, channel_axis=None, margin=DEFAULT_MARGIN):
    """A structure-preserving `nengo_loihi.BlockShape` estimated from one block's need.

    Like `suggest_block_shape`, the offending quantity is assumed to shrink in
    proportion to the number of neurons per block; unlike it, the blocks stay tiles of
    the ensemble's conceptual shape (rows x columns x channels for a convolutional
    layer) chosen among `candidate_shapes`: the fewest blocks, then the most channels
    kept together. This is an estimate from one measurement; fitting block shapes
    (`partitioner.fitting.fit_block_shapes`) checks its choice with a build.

    Parameters
    ----------
    ensemble_shape : tuple of int
        Conceptual shape of the ensemble.
    value, limit : int
        What the offending block needs, and what one core offers.
    rule : str
        The rule broken (see `suggest_block_shape`).
    block_shape : tuple of int, optional
        The current block shape (default: the whole ensemble).
    block_size : int, optional
        Neurons in the offending block (default: ``prod(block_shape)``).
    channel_axis : int, optional
        Which dimension holds the channels, if any.
    margin : float, optional
        Fraction of the limit to aim for (default 0.9).

    Returns
    -------
    nengo_loihi.BlockShape
    """
    if rule not in ("compartments", "in_axons", "out_axons", "synapse_bits"):
        raise ValueError(f"Unknown rule {rule!r}")
    if value <= 0 or limit <= 0:
        raise ValueError(f"value and limit must be positive (got {value}, {limit})")
    ensemble_shape = _as_shape(ensemble_shape)
    current = ensemble_shape if block_shape is None else _as_shape(block_shape)
    if block_size is None:
        block_size = int(np.prod([min(b, e) for b, e in zip(current, ensemble_shape)]))
    target = min(
        _MAX_COMPARTMENTS,
        max(1, math.floor(block_size * min(1.0, limit / value) * margin)),
    )
    shape = candidate_shapes(ensemble_shape, channel_axis, max_size=target)[0]
    return BlockShape(tuple(int(s) for s in shape), ensemble_shape)


def _as_shape(ens_shape_or_n_neurons):
    if isinstance(ens_shape_or_n_neurons, (int, np.integer)):
        return (int(ens_shape_or_n_neurons),)
    shape = tuple(int(s) for s in ens_shape_or_n_neurons)
    if not shape or min(shape) <= 0:
        raise ValueError(f"Invalid ensemble shape {ens_shape_or_n_neurons!r}")
    return shape


def _shrink_nd(start, ens_shape, target):
    """Halve the largest dimension until the block holds at most ``target``, then
    even out each dimension over the number of parts it needs."""
    shape = [min(s, e) for s, e in zip(start, ens_shape)]
    while int(np.prod(shape)) > target:
        d = int(np.argmax(shape))
        shape[d] = -(-shape[d] // 2)
    balanced = []
    for s, e in zip(shape, ens_shape):
        parts = -(-e // s)
        balanced.append(-(-e // parts))
    return tuple(balanced)
