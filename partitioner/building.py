"""Building a nengo-loihi model for partitioning with less memory.

nengo-loihi's connection builder keeps, per connection, its sampled transform and its
scaled weights (``model.params[conn]``, a ``BuiltConnection``) besides the weights it
puts in the blocks' synapses. For networks of dense neuron-to-neuron connections that
is two more copies of every weight matrix: building the bundled ``modular_large``
(0.84 GB of transforms) peaked at 4.0 GB. Nothing in nengo-loihi's builder reads
those arrays back (it reads the built *ensembles'* parameters), and a model built for
partitioning is never simulated, so `lean_connection_params` drops them as soon as
each connection is built (the peak falls to about 2 GB).
"""

from __future__ import annotations

import contextlib

import nengo
from nengo_loihi.builder import Builder

__all__ = ["lean_connection_params"]


@contextlib.contextmanager
def lean_connection_params():
    """While active, nengo-loihi's connection builder keeps no weight arrays in
    ``model.params[conn]`` (its ``weights``, ``transform`` and ``eval_points`` are
    None); everything else it builds is unchanged.

    Only for models that are not simulated (``sim.data[conn].weights`` would be
    None). Restores the builder on exit.
    """
    original = Builder.builders[nengo.Connection]

    def build_connection(model, conn):
        out = original(model, conn)
        built = model.params.get(conn)
        if built is not None and hasattr(built, "_replace"):
            model.params[conn] = built._replace(weights=None, transform=None,
                                                eval_points=None)
        return out

    Builder.builders[nengo.Connection] = build_connection
    try:
        yield
    finally:
        Builder.builders[nengo.Connection] = original
