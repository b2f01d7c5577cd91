"""loihi-partitioner: place nengo-loihi networks on multi-chip Loihi boards.

Typical use::

    import nengo_loihi
    from partitioner import MinCutAllocator

    sim = nengo_loihi.Simulator(
        net, target="loihi",
        hardware_options={"allocator": MinCutAllocator(), "n_chips": 4},
    )

or, offline::

    graph = partitioner.extract(net)            # TrafficGraph
    plan = partitioner.partition(graph, board="nahuku32")
    plan.save("plan.json")                      # replay with PlanAllocator("plan.json")

Names are imported on first use, so ``import partitioner`` stays light.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "extract": "partitioner.extract",
    "TrafficGraph": "partitioner.graph",
    "Plan": "partitioner.plan",
    "partition": "partitioner.engine",
    "evaluate": "partitioner.metrics",
    "lower_bounds": "partitioner.metrics",
    "board_to_plan": "partitioner.metrics",
    "MinCutAllocator": "partitioner.allocator",
    "PlanAllocator": "partitioner.allocator",
    "board_from_plan": "partitioner.allocator",
    "BoardSpec": "partitioner.hardware",
    "CoreLimits": "partitioner.hardware",
    "BOARDS": "partitioner.hardware",
    "get_board": "partitioner.hardware",
    "fit_block_shapes": "partitioner.fitting",
    "whatif": "partitioner.whatif",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'partitioner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
