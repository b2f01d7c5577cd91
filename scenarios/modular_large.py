"""A large modular network: many small ensembles that nengo-loihi spreads over 20+ chips.

The same construction as ``modular.py`` (dense neuron-to-neuron connections inside a
module, sparse ones between modules) with 160 modules of 10 to 20 small ensembles
(16 to 48 neurons). One block per core, as nengo-loihi allocates, needs about
2,400 cores on 19 chips; the blocks' resources fit in a few chips. Packing them by
size alone loses the module structure and cuts many connections between chips; a
traffic-aware partition keeps modules whole.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "_scenario_modular", pathlib.Path(__file__).with_name("modular.py")
)
_modular = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_modular)

#: Number of modules.
N_MODULES = 200
#: Connections between modules.
N_INTER = 400


def build():
    """Build the large modular network.

    Returns
    -------
    net : nengo.Network
        The network; ``net.networks[k]`` is module ``k``.
    """
    return _modular.build(
        n_modules=N_MODULES, module_size=(8, 16), neurons=(64, 160), n_inter=N_INTER, seed=7
    )


def ensemble_rates(net):
    """Per-neuron firing rates that differ per module (see ``modular.ensemble_rates``)."""
    return _modular.ensemble_rates(net)
