"""Block shapes that make an ensemble's blocks fit a Loihi core.

nengo-loihi splits an ensemble into blocks of equal size along its ``BlockShape``.
When one of those blocks still breaks a per-core limit, the usual fix is a smaller
block shape. `suggest_block_shape` computes one from how far the block is over the
limit, assuming the offending quantity shrinks in proportion to the block size (true
for compartments, for output axons, and for the synapse memory of dense weights).
"""

from __future__ import annotations

import math

import numpy as np
from nengo_loihi import BlockShape

__all__ = ["suggest_block_shape", "format_block_shape"]

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
