"""Loihi hardware model: per-core limits, chips, boards and their cost constants.

This is the one place where hardware numbers live. Sources are listed in
``docs/hardware.md``; the short version:

* per-core table sizes come from nengo-loihi 1.1 (``nengo_loihi.block`` constants,
  ``hardware/builder.py`` and ``hardware/validate.py`` asserts);
* energy and latency per operation come from Davies et al., "Loihi: a neuromorphic
  manycore processor with on-chip learning", IEEE Micro 38(1), 2018, Table 1;
* system sizes come from Intel's announcements (Kapoho Bay, Nahuku, Pohoiki Beach,
  Pohoiki Springs).

The chip grid inside a board and the energy/latency of a spike crossing a chip
boundary are not published. They are fields with documented defaults, so that
what-if studies can vary them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from nengo_loihi import block as nl_block

from partitioner.errors import UnknownBoardError

__all__ = [
    "CoreLimits",
    "ChipSpec",
    "EnergyModel",
    "BoardSpec",
    "BOARDS",
    "get_board",
]


@dataclass(frozen=True)
class CoreLimits:
    """Everything one Loihi core can hold, and what blocks sharing it must agree on.

    Attributes
    ----------
    compartments : int
        Compartments (neurons) per core (``nengo_loihi.block.MAX_COMPARTMENTS``).
    in_axons : int
        Entries in the core's input axon (synapse map) table. A learning synapse takes
        two entries per axon (``Synapse.idxs_per_synapse``).
    out_axons : int
        Output axon entries per core, counted as ``build_axon`` creates them: one per
        (source compartment, Axon) pair that reaches a target, two per pop32 axon.
    synapse_bits : int
        Synapse memory per core in bits (16,384 words of 64 bits).
    compartment_cfgs : int
        Distinct (decay_u, decay_v, refract_delay, enable_noise) profiles per core;
        ``build_core`` asserts fewer than 32.
    vth_cfgs : int
        Distinct threshold mantissas per core; ``build_core`` asserts fewer than 8
        (stricter than ``validate_core``'s 16).
    synapse_cfgs : int
        Distinct synapse formats per core; the 16-entry table reserves index 0.
    stdp_pre_cfgs : int
        Distinct STDP pre-trace configs per core.
    pop16_axon_bits : int
        Axon id bits of a pop16 synapse before its extra atom bits are taken away.
    discrete_axon_bits : int
        Axon id bits of discrete and pop32 synapses.
    shared_index_bits : int
        Index width given to the synapses of every block after the first on a shared
        core, enough to address any compartment of the core (2**10 = 1024).
    """

    compartments: int = nl_block.MAX_COMPARTMENTS
    in_axons: int = nl_block.MAX_IN_AXONS
    out_axons: int = nl_block.MAX_OUT_AXONS
    synapse_bits: int = nl_block.MAX_SYNAPSE_BITS
    compartment_cfgs: int = 31
    vth_cfgs: int = 7
    synapse_cfgs: int = 15
    stdp_pre_cfgs: int = 3
    pop16_axon_bits: int = 10
    discrete_axon_bits: int = 12
    shared_index_bits: int = 10

    #: Names of the additive resources, in the order of :meth:`capacity_vector`.
    RESOURCES = ("compartments", "in_axons", "out_axons", "synapse_bits")
    #: Names of the config-register tables, each a count of distinct entries.
    CONFIG_TABLES = ("compartment_cfgs", "vth_cfgs", "synapse_cfgs", "stdp_pre_cfgs")

    def capacity_vector(self):
        """Additive per-core capacities as an int64 array (order of ``RESOURCES``)."""
        return np.array([getattr(self, r) for r in self.RESOURCES], dtype=np.int64)

    def config_capacity(self, table):
        """Capacity of one config-register table, by name."""
        return getattr(self, table)


@dataclass(frozen=True)
class ChipSpec:
    """One Loihi chip.

    Attributes
    ----------
    cores : int
        Neuromorphic cores per chip (128 on Loihi 1).
    core_mesh : tuple of int
        Core grid inside the chip (rows, columns). Loihi 1 tiles hold 4 cores on an
        8 x 4 tile mesh; modelled here as a 16 x 8 core grid.
    core : CoreLimits
        Limits of each core.
    """

    cores: int = 128
    core_mesh: tuple = (16, 8)
    core: CoreLimits = field(default_factory=CoreLimits)


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation time and energy (Davies et al. 2018, Table 1, unless noted).

    Attributes
    ----------
    synop_pj : float
        Energy per synaptic operation (23.6 pJ).
    spike_in_tile_pj : float
        Energy of a spike sent within a tile (1.7 pJ).
    hop_ew_pj, hop_ns_pj : float
        Energy of one on-chip mesh hop, east-west (3.0 pJ) and north-south (4.0 pJ).
    hop_ew_ns, hop_ns_ns : float
        Latency of one on-chip mesh hop, east-west (4.1 ns) and north-south (6.5 ns).
    barrier_sync_ns : float
        Time-step barrier synchronization within a chip; the paper gives 113-465 ns,
        the default is the upper end.
    core_update_ns : float
        Time for a core to update one compartment. **Assumption** (1 ns): not taken
        from a publication; vary it in what-if studies.
    interchip_spike_pj : float
        Energy of one spike crossing one chip-to-chip link. **Not published**: default
        is an assumption (10x an on-chip hop); vary it in what-if studies.
    interchip_hop_ns : float
        Latency added per chip-to-chip hop. **Not published**; default assumption.
    interchip_link_spikes_per_us : float
        Spike messages one chip-to-chip link carries per microsecond. **Not
        published**; default assumption used to turn link load into step time.
    synop_ns : float
        Time a core spends on one synaptic operation (3.5 ns, Table 1's time per
        synaptic spike operation, the maximum).
    synmem_word_ns : float
        Time for a core to read one 64-bit word of synapse memory. **Assumption**
        (1 ns; no separate figure is published for Loihi 1, whose Table 1 times a whole
        synaptic operation): the memory term then only binds where a core reads more
        than 3.5 words per synaptic operation. Vary it in what-if studies.
    """

    #: Time constants that are assumptions rather than published numbers.
    UNPUBLISHED_TIME = ("core_update_ns", "synmem_word_ns", "interchip_link_spikes_per_us",
                        "interchip_hop_ns")
    #: Where each time constant comes from.
    TIME_SOURCES = {
        "synop_ns": "Davies et al., IEEE Micro 38(1), 2018, Table 1 (time per synaptic "
                    "spike op, max)",
        "barrier_sync_ns": "Davies et al., IEEE Micro 38(1), 2018, Table 1 (barrier "
                           "synchronization, 113-465 ns; upper end)",
        "core_update_ns": "assumption (not published)",
        "synmem_word_ns": "assumption (not published)",
        "interchip_link_spikes_per_us": "assumption (not published)",
        "interchip_hop_ns": "assumption (not published)",
    }

    synop_pj: float = 23.6
    spike_in_tile_pj: float = 1.7
    hop_ew_pj: float = 3.0
    hop_ns_pj: float = 4.0
    hop_ew_ns: float = 4.1
    hop_ns_ns: float = 6.5
    barrier_sync_ns: float = 465.0
    core_update_ns: float = 1.0
    interchip_spike_pj: float = 40.0
    interchip_hop_ns: float = 100.0
    interchip_link_spikes_per_us: float = 100.0
    synop_ns: float = 3.5
    synmem_word_ns: float = 1.0

    def replace(self, **changes):
        """A copy with some constants changed."""
        return dataclasses.replace(self, **changes)


#: `BoardSpec.hop_matrix` of each (chips, mesh shape) computed so far.
_HOP_MATRICES = {}


@dataclass(frozen=True)
class BoardSpec:
    """A Loihi system: chips on a 2-D mesh of chip-to-chip links.

    Attributes
    ----------
    name : str
        Short name (a key of `BOARDS`).
    n_chips : int
        Chips on the board.
    mesh_shape : tuple of int
        Chip grid (rows, columns), ``rows * columns == n_chips``. Intel has not
        published the chip grids; the defaults are documented in ``docs/hardware.md``.
    chip : ChipSpec
        The chip model.
    energy : EnergyModel
        Time and energy constants.
    description : str
        Human-readable description.
    """

    name: str
    n_chips: int
    mesh_shape: tuple
    chip: ChipSpec = field(default_factory=ChipSpec)
    energy: EnergyModel = field(default_factory=EnergyModel)
    description: str = ""

    def __post_init__(self):
        rows, cols = self.mesh_shape
        if rows * cols != self.n_chips:
            raise UnknownBoardError(
                f"Board {self.name!r}: mesh_shape {self.mesh_shape} holds {rows * cols} "
                f"chips but n_chips is {self.n_chips}. Choose a mesh whose rows x "
                f"columns equals n_chips."
            )

    @property
    def limits(self):
        """Per-core limits of this board's chips."""
        return self.chip.core

    @property
    def cores_per_chip(self):
        """Cores on each chip."""
        return self.chip.cores

    @property
    def total_cores(self):
        """Cores on the whole board."""
        return self.n_chips * self.chip.cores

    def chip_positions(self):
        """(row, column) of every chip, row-major, as an (n_chips, 2) int array."""
        idx = np.arange(self.n_chips)
        return np.stack(np.divmod(idx, self.mesh_shape[1]), axis=1)

    def hop_matrix(self):
        """Manhattan hop count between every pair of chip positions (dense, n x n).

        Boards have at most 768 chips, so the dense matrix is at most 590k entries.
        It is computed once per mesh and shared (read-only: copy it to change it).
        """
        key = (self.n_chips, tuple(self.mesh_shape))
        found = _HOP_MATRICES.get(key)
        if found is None:
            pos = self.chip_positions()
            found = np.abs(pos[:, None, :] - pos[None, :, :]).sum(axis=2)
            found.flags.writeable = False
            if len(_HOP_MATRICES) >= 4:
                _HOP_MATRICES.pop(next(iter(_HOP_MATRICES)))
            _HOP_MATRICES[key] = found
        return found

    def with_chips(self, n_chips):
        """The same board model restricted to its first ``n_chips`` chips.

        The sub-board keeps the column count where possible, so chips keep their
        neighbours.
        """
        if not 1 <= n_chips <= self.n_chips:
            raise UnknownBoardError(
                f"{self.name} has {self.n_chips} chips; cannot use {n_chips}. Pick "
                f"1 to {self.n_chips} chips or a larger board."
            )
        cols = min(self.mesh_shape[1], n_chips)
        rows = -(-n_chips // cols)
        if rows * cols != n_chips:
            rows, cols = 1, n_chips
        return dataclasses.replace(
            self, name=f"{self.name}[{n_chips}]", n_chips=n_chips, mesh_shape=(rows, cols)
        )

    def replace(self, **changes):
        """A copy with some fields changed (e.g. ``energy=...``)."""
        return dataclasses.replace(self, **changes)


BOARDS = {
    "kapoho_bay": BoardSpec(
        "kapoho_bay", 2, (1, 2), description="Kapoho Bay USB form factor, 2 chips"
    ),
    "nahuku8": BoardSpec("nahuku8", 8, (2, 4), description="Nahuku board, 8 chips"),
    "nahuku32": BoardSpec("nahuku32", 32, (4, 8), description="Nahuku board, 32 chips"),
    "pohoiki_beach": BoardSpec(
        "pohoiki_beach", 64, (8, 8), description="Pohoiki Beach, 64 chips (8 Nahuku8)"
    ),
    "pohoiki_springs": BoardSpec(
        "pohoiki_springs",
        768,
        (16, 48),
        description="Pohoiki Springs, 768 chips (24 Nahuku32 boards in a 4 x 6 grid)",
    ),
}


def get_board(board):
    """Look up a board by name, or pass a `BoardSpec` through.

    Parameters
    ----------
    board : str or BoardSpec
        A key of `BOARDS` (``"kapoho_bay"``, ``"nahuku8"``, ``"nahuku32"``,
        ``"pohoiki_beach"``, ``"pohoiki_springs"``) or a board object.

    Returns
    -------
    BoardSpec
    """
    if isinstance(board, BoardSpec):
        return board
    key = str(board).lower().replace("-", "_")
    if key not in BOARDS:
        raise UnknownBoardError(
            f"Unknown board {board!r}. Known boards: {', '.join(BOARDS)}; or pass a "
            f"partitioner.hardware.BoardSpec."
        )
    return BOARDS[key]
