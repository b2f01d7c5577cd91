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

``partitioner.extract`` and ``partitioner.whatif`` are always the functions, also after
their modules (`partitioner.extract`, `partitioner.whatif`) are imported; import other
names from those modules with ``from partitioner.extract import build_model``.
"""

import importlib
import sys
import types

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

#: Functions named like the module that defines them.
_SAME_NAME = frozenset(name for name, module in _EXPORTS.items()
                       if module == f"{__name__}.{name}")


class _Package(types.ModuleType):
    """The package module; keeps the functions in `_SAME_NAME` bound to their names.

    After importing a submodule, Python binds it as an attribute of its package
    (``partitioner.extract = <module>``), which would hide the function
    ``partitioner.extract``. That binding is skipped here; the module stays in
    ``sys.modules`` for ``from partitioner.extract import ...``.
    """

    def __setattr__(self, name, value):
        if name in _SAME_NAME and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'partitioner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
