"""A recording stand-in for the NxSDK classes that nengo-loihi's hardware builder uses.

NxSDK is not public, so a `~nengo_loihi.hardware.nxsdk_objects.Board` cannot be
built for real without Intel's software. This module runs nengo-loihi's own
``nengo_loihi.hardware.builder.build_board`` against stand-in classes that record
every register the builder writes, with the per-core table sizes of a Loihi 1
neuron core:

========================  =====  ========================  =====
table                     size   table                     size
========================  =====  ========================  =====
``cxProfileCfg``          32     ``cxCfg``                 1024
``vthProfileCfg``         8      ``cxMetaState``           256
``synapseFmt``            16     ``cxState``               1024
``stdpPreCfg``            3      ``stdpPostState``         1024
``stdpPreProfileCfg``     16     ``synapseMap``            4096
``stdpProfileCfg``        16     output axon entries       4096
``stdpUcodeMem``          16     synapse memory (bits)     16384 x 64
``stdpPostCfg``           4      ``synapses``              the Board's count
========================  =====  ========================  =====

The sizes are those of the neuron-core register map in NxSDK's C header for
embedded snips (``NeuronCore`` in ``nxsdk.h``). They are kept here, apart from
`partitioner.hardware.CoreLimits`, on purpose: the stand-in is an independent check
of what the partitioner believes fits on a core.

Indexing a table past its size, or with a negative index, raises `StandinOverflow`.
After the build, `NxsdkBoard.check` inspects the recorded state:

* output axon config entries per core, as Loihi's compiler counts them (see
  `NxsdkCore.output_entries`);
* synapse memory per core, from the recorded synapse formats
  (`nengo_loihi.block.SynapseConfig.bits_per_axon`, each synapse run counted once);
* every synapse uses a configured format other than the reserved format 0, and its
  compartment index (``CIdx``) is below 1024;
* compartment indices fit the index width of their format: every index of a sparse
  run (``compression == 0``), the first index (the prefix offset) of a dense run
  (``compression == 3``);
* every synapse targets a configured compartment (``cxBase + CIdx``), every output
  axon leaves a configured compartment and reaches a configured input axon, and
  every spike sent from the host reaches a configured input axon.

Output axon config entries are counted from the ``create*Axon`` calls recorded on
each core, as Intel's Loihi DNN compiler (NxTF, ``OutputAxonGroup._updateCost`` in
``nxsdk_modules_ncl/dnn/src/data_structures.py`` of ``intel-nrc-ecosystem/models``)
costs them:

* a discrete axon (``createDiscreteAxon``) takes one entry per call;
* pop16 and pop32 axons take 1 and 2 entries per distinct (``popId``, ``dstChipId``,
  ``dstCoreId``, ``dstSynMapId``): one population of source compartments sending to
  one input axon shares its entries, however many compartments (atoms) it has;
* each discrete axon and each such population whose ``dstChipId`` is not the core's
  own chip takes one more entry.

nengo-loihi's ``build_axon`` gives every compartment of a block the ``popId`` of the
first input axon it reaches. nengo-loihi's own check (``block.utilization()``,
target axons times slots per axon) misses the inter-chip entries and counts discrete
axons that share a target axon once; its issue 326 reports Loihi refusing boards
that had passed it ("Number of AxonCfg registers exceeded"). The count here is made
from the recorded calls alone; nothing of the partitioner's own resource model is
used.

Three entry points:

* `build_on_standin` builds one allocated board and checks it;
* `standin_builder` patches the NxSDK names inside ``nengo_loihi.hardware.builder``;
* `standin_hardware` additionally makes ``nengo_loihi.Simulator(net, target="loihi",
  precompute=True, hardware_options=...)`` construct and run: allocator,
  ``validate_board``, ``build_board``, then host-side spike handling through
  ``NoSnips``. The stand-in has no neuron dynamics: probes read zeros.

Snips are not supported. ``HardwareInterface`` uses them when ``precompute=False``
and the network has host-side parts (a `nengo.Node`, a decoded probe): C code
compiled by NxSDK runs on the chip's embedded processors and exchanges spikes and
probe data with the host through a TCP socket that NxSDK's host process opens. There
is nothing to stand in for without NxSDK, so a build that asks for snips raises
``NotImplementedError``. (``precompute=False`` on a network without host-side parts
uses no snips and works.) Networks that learn cannot take the `Simulator
<nengo_loihi.Simulator>` path at all, since nengo-loihi refuses ``precompute=True``
with learning rules: allocate and build them with `build_on_standin`.
"""

from __future__ import annotations

import contextlib
import operator
from collections import namedtuple

import nengo_loihi.hardware
import nengo_loihi.hardware.builder as nl_builder
import nengo_loihi.hardware.interface as nl_interface
import nengo_loihi.hardware.nxsdk_shim as nl_shim
import nengo_loihi.simulator as nl_simulator
import numpy as np
from nengo_loihi.block import SynapseConfig

from partitioner.errors import CoreRuleError

__all__ = [
    "StandinOverflow",
    "OutputEntries",
    "NxsdkBoard",
    "NxsdkChip",
    "NxsdkCore",
    "SpikeGen",
    "TraceConfigGenerator",
    "micro_gen",
    "SpikeProbe",
    "StandinHardware",
    "build_on_standin",
    "standin_builder",
    "standin_hardware",
]

#: Sizes of the per-core register tables (Loihi 1 ``NeuronCore`` register map).
TABLE_SIZES = {
    "cxProfileCfg": 32,
    "vthProfileCfg": 8,
    "synapseFmt": 16,
    "stdpPreCfg": 3,
    "stdpPreProfileCfg": 16,
    "stdpProfileCfg": 16,
    "stdpUcodeMem": 16,
    "stdpPostCfg": 4,
    "cxCfg": 1024,
    "cxMetaState": 256,
    "cxState": 1024,
    "stdpPostState": 1024,
    "synapseMap": 4096,
    "dendriteTimeState": 1,
    "timeState": 1,
}
#: Per-core registers that are not tables.
SINGLE_REGISTERS = (
    "stdpCfg",
    "dendriteSharedCfg",
    "dendriteAccumCfg",
    "numUpdates",
    "stdpPreRandom",
    "stdpPostRandom",
    "somaRandom",
    "synapseRepackRandom",
)
#: Output axon config entries per core.
OUTPUT_AXON_ENTRIES = 4096
#: Synapse memory per core: 16,384 words of 64 bits.
SYNAPSE_MEMORY_BITS = 16384 * 64
#: Compartments per core; a synapse's compartment index must be below this.
COMPARTMENTS = TABLE_SIZES["cxCfg"]
#: Output axon config entries of one discrete axon, and of one population of pop16 or
#: pop32 axons (one ``popId`` sending to one input axon).
AXON_ENTRIES = {"discrete": 1, "pop16": 1, "pop32": 2}
#: Extra entries of a discrete axon or a population whose target is on another chip.
INTERCHIP_ENTRIES = 1

#: NxSDK synapse format field -> `SynapseConfig` parameter (as ``build_core`` writes).
SYNAPSE_FMT_FIELDS = {
    "wgtLimitMant": "weight_limit_mant",
    "wgtLimitExp": "weight_limit_exp",
    "wgtExp": "weight_exp",
    "discMaxWgt": "disc_max_weight",
    "learningCfg": "learning_cfg",
    "tagBits": "tag_bits",
    "dlyBits": "delay_bits",
    "wgtBits": "weight_bits",
    "reuseSynData": "reuse_synapse_data",
    "numSynapses": "n_synapses",
    "cIdxOffset": "idx_offset",
    "cIdxMult": "idx_mult",
    "skipBits": "skip_bits",
    "idxBits": "idx_bits",
    "synType": "synapse_type",
    "fanoutType": "fanout_type",
    "compression": "compression",
    "stdpProfile": "stdp_cfg",
    "ignoreDly": "ignore_delay",
}
#: ``SynapseConfig.compression`` of sparse formats: every entry stores its index.
SPARSE = 0

OutputAxon = namedtuple(
    "OutputAxon", "kind src_compartment dst_chip dst_core dst_axon pop_id atom"
)
OutputAxon.__doc__ = "One output axon made on a core; ``kind`` is discrete/pop16/pop32."

OutputEntries = namedtuple("OutputEntries", "entries interchip")
OutputEntries.__doc__ = (
    "Output axon config entries of a core: ``entries`` in all, of which "
    "``interchip`` are the extra entries of axons to other chips."
)

Spike = namedtuple("Spike", "kind time chip core axon atom")
Spike.__doc__ = "One spike the host sent through `SpikeGen`."


class StandinOverflow(CoreRuleError):
    """A board needs more of a core's table than the hardware has, or uses it wrongly.

    Parameters
    ----------
    chip, core : int
        Index of the chip on the board and of the core on the chip.
    table : str
        The table or resource concerned (e.g. ``"cxCfg"``, ``"output axons"``).
    index : int
        The offending index, count or value.
    size : int
        The size or limit of the table.
    problem : str
        What went wrong, naming ``index`` and ``size``; the message starts with the
        chip, core and table.
    """

    def __init__(self, chip, core, table, index, size, problem):
        self.chip = chip
        self.core = core
        self.table = table
        self.index = index
        self.size = size
        super().__init__(f"chip {chip}, core {core}, {table}: {problem}")


class Register:
    """A configurable register that records every field written to it."""

    def configure(self, **fields):
        """Set several fields at once, as NxSDK's ``configure`` does."""
        vars(self).update(fields)

    @property
    def fields(self):
        """Every field written so far, as a dict."""
        return dict(vars(self))


class VthProfile:
    """One ``vthProfileCfg`` entry: its static configuration is a register."""

    __slots__ = ("staticCfg",)

    def __init__(self):
        self.staticCfg = Register()


class SynapseMapEntry:
    """One input axon (``synapseMap``) entry: a run of synapses and its map kind."""

    __slots__ = (
        "synapsePtr",
        "synapseLen",
        "popSize",
        "discreteMapEntry",
        "population16MapEntry",
        "population32MapEntry",
        "singleTraceEntry",
    )

    def __init__(self):
        self.synapsePtr = None
        self.synapseLen = 0
        self.popSize = 0
        self.discreteMapEntry = Register()
        self.population16MapEntry = Register()
        self.population32MapEntry = Register()
        self.singleTraceEntry = Register()

    @property
    def has_synapses(self):
        """Whether this entry points at synapses (a trace entry does not)."""
        return self.synapsePtr is not None

    @property
    def n_atoms(self):
        """Number of consecutive synapse runs: one per population atom."""
        return max(self.popSize, 1)

    @property
    def n_weights(self):
        """Synapses used by the entry, over all atoms."""
        return self.synapseLen * self.n_atoms

    @property
    def cx_base(self):
        """Compartment offset added to each synapse's index (pop16 stores base/4)."""
        if "cxBase" in vars(self.population16MapEntry):
            return 4 * self.population16MapEntry.cxBase
        for register in (self.discreteMapEntry, self.population32MapEntry):
            if "cxBase" in vars(register):
                return register.cxBase
        return 0


class Table:
    """A fixed-size per-core table whose entries are created when first indexed.

    Parameters
    ----------
    core : NxsdkCore
        The core owning the table (named in errors).
    name : str
        NxSDK name of the table.
    size : int
        Number of entries.
    make_entry : callable
        Creates an entry.
    """

    def __init__(self, core, name, size, make_entry):
        self.core = core
        self.name = name
        self.size = size
        self.make_entry = make_entry
        self.entries = {}

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        index = self.core.check_index(self.name, index, self.size)
        if index not in self.entries:
            self.entries[index] = self.make_entry()
        return self.entries[index]


class SynapseSlot:
    """Handle on one entry of a `SynapseTable`."""

    __slots__ = ("table", "index")

    def __init__(self, table, index):
        self.table = table
        self.index = index

    def configure(self, CIdx, Wgt, synFmtId, LrnEn):  # noqa: N803 (NxSDK names)
        """Record the synapse's compartment index, weight, format and learning bit."""
        self.table.record(self.index, CIdx, Wgt, synFmtId, LrnEn)


class SynapseTable:
    """The core's synapse entries, stored as arrays (``fmt == -1`` is unused).

    Parameters
    ----------
    core : NxsdkCore
        The core owning the table.
    size : int
        Synapse entries allocated for the core (``Board.n_synapses_per_core``).
    """

    name = "synapses"

    def __init__(self, core, size):
        self.core = core
        self.size = size
        self.cidx = np.full(size, -1, dtype=np.int64)
        self.weight = np.zeros(size, dtype=np.int64)
        self.fmt = np.full(size, -1, dtype=np.int64)
        self.learn = np.zeros(size, dtype=np.int64)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return SynapseSlot(self, self.core.check_index(self.name, index, self.size))

    def record(self, index, cidx, weight, fmt, learn):
        """Store one synapse entry."""
        self.cidx[index] = cidx
        self.weight[index] = weight
        self.fmt[index] = fmt
        self.learn[index] = learn

    @property
    def used(self):
        """Boolean mask of the configured entries."""
        return self.fmt >= 0


class StandinProbe:
    """A probe of one compartment; ``timeSeries.data`` grows as the board runs."""

    def __init__(self, key):
        self.key = key
        self.timeSeries = Register()
        self.timeSeries.data = []


class Monitor:
    """Creates probes on compartments, as ``N2Board.monitor`` does."""

    def __init__(self):
        self.probes = []

    def probe(self, cx_state, idxs, key):
        """One probe per compartment index; indices are checked against ``cxState``.

        Parameters
        ----------
        cx_state : Table
            The ``cxState`` table of the probed core.
        idxs : array_like of int
            Compartment indices on the core.
        key : str
            ``"u"``, ``"v"`` or ``"spike"``.

        Returns
        -------
        list of StandinProbe
        """
        probes = []
        for idx in idxs:
            cx_state[idx]  # raises StandinOverflow past the core's compartments
            probes.append(StandinProbe(key))
        self.probes.extend(probes)
        return probes


class Executor:
    """Tracks whether the board has been started."""

    def __init__(self):
        self.started = False

    def hasStarted(self):  # noqa: N802 (NxSDK name)
        """Whether ``start`` was called since the last ``disconnect``."""
        return self.started


class NxsdkCore:
    """A recording stand-in for one NxSDK neuron core.

    Parameters
    ----------
    chip : NxsdkChip
        The chip holding the core (``parent``).
    core_id : int
        Index of the core on its chip, also its NxSDK id.
    n_synapses : int
        Synapse entries to allocate.
    """

    def __init__(self, chip, core_id, n_synapses):
        self.parent = chip
        self.id = core_id
        for name, size in TABLE_SIZES.items():
            setattr(self, name, Table(self, name, size, self._entry_factory(name)))
        self.synapses = SynapseTable(self, n_synapses)
        for name in SINGLE_REGISTERS:
            setattr(self, name, Register())
        self.output_axons = []

    @staticmethod
    def _entry_factory(name):
        return {"vthProfileCfg": VthProfile, "synapseMap": SynapseMapEntry}.get(
            name, Register
        )

    @property
    def chip_index(self):
        """Index of the core's chip on the board."""
        return self.parent.id

    def overflow(self, table, index, size, problem):
        """A `StandinOverflow` located on this core."""
        return StandinOverflow(self.chip_index, self.id, table, index, size, problem)

    def check_index(self, table, index, size):
        """``index`` as an int if ``0 <= index < size``; else `StandinOverflow`."""
        index = operator.index(index)
        if not 0 <= index < size:
            raise self.overflow(
                table, index, size, f"index {index} is outside the table of size {size}"
            )
        return index

    def _create_axon(  # noqa: N803 (NxSDK argument names)
        self, kind, srcCxId, dstChipId, dstCoreId, dstSynMapId, popId=None, srcRelCxId=0
    ):
        """Record an output axon, given NxSDK's ``create*Axon`` arguments."""
        self.check_index("cxCfg (output axon source)", srcCxId, COMPARTMENTS)
        self.check_index(
            "synapseMap (output axon target)", dstSynMapId, TABLE_SIZES["synapseMap"]
        )
        self.output_axons.append(
            OutputAxon(
                kind, srcCxId, dstChipId, dstCoreId, dstSynMapId, popId, srcRelCxId
            )
        )

    def createDiscreteAxon(self, **kwargs):  # noqa: N802 (NxSDK name)
        """Record a discrete axon."""
        self._create_axon("discrete", **kwargs)

    def createPop16Axon(self, **kwargs):  # noqa: N802 (NxSDK name)
        """Record one source compartment (atom) of a pop16 axon."""
        self._create_axon("pop16", **kwargs)

    def createPop32Axon(self, **kwargs):  # noqa: N802 (NxSDK name)
        """Record one source compartment (atom) of a pop32 axon."""
        self._create_axon("pop32", **kwargs)

    def output_axon_groups(self):
        """The recorded output axons that each take their own config entries.

        Returns
        -------
        list of OutputAxon
            Every discrete axon, and the first recorded axon of each distinct
            population key (kind, ``popId``, ``dstChipId``, ``dstCoreId``,
            ``dstSynMapId``), in recording order.
        """
        groups, seen = [], set()
        for axon in self.output_axons:
            if axon.kind != "discrete":
                key = (
                    axon.kind, axon.pop_id, axon.dst_chip, axon.dst_core, axon.dst_axon
                )
                if key in seen:
                    continue
                seen.add(key)
            groups.append(axon)
        return groups

    def output_entries(self):
        """Output axon config entries used, as Loihi's compiler counts them.

        One entry per discrete axon; 1 (pop16) or 2 (pop32) per population sending
        to one input axon; one more for each of these whose target is on another
        chip (see the module notes).

        Returns
        -------
        OutputEntries
            ``(entries, interchip)``: all entries, and how many of them are the
            extra entries of axons to other chips.
        """
        entries = interchip = 0
        for axon in self.output_axon_groups():
            remote = INTERCHIP_ENTRIES if axon.dst_chip != self.chip_index else 0
            entries += AXON_ENTRIES[axon.kind] + remote
            interchip += remote
        return OutputEntries(entries, interchip)

    @property
    def n_output_entries(self):
        """Output axon config entries used (``output_entries().entries``)."""
        return self.output_entries().entries

    def configured_compartments(self):
        """Boolean mask over the core's compartments that have a ``cxCfg`` entry."""
        mask = np.zeros(COMPARTMENTS, dtype=bool)
        mask[list(self.cxCfg.entries)] = True
        return mask

    def input_axons(self):
        """``(axon id, entry)`` of every ``synapseMap`` entry pointing at synapses."""
        entries = sorted(self.synapseMap.entries.items())
        return [(i, entry) for i, entry in entries if entry.has_synapses]

    def synapse_config(self, fmt_id):
        """The `SynapseConfig` rebuilt from the recorded ``synapseFmt[fmt_id]``.

        Raises `StandinOverflow` for the reserved format 0 and for a format whose
        fields were not all written.
        """
        size = TABLE_SIZES["synapseFmt"]
        if fmt_id == 0:
            raise self.overflow(
                "synapseFmt", fmt_id, size,
                f"synapses use format index 0 (of {size}), which is reserved",
            )
        register = self.synapseFmt.entries.get(fmt_id)
        written = {} if register is None else register.fields
        missing = sorted(set(SYNAPSE_FMT_FIELDS) - set(written))
        if missing:
            raise self.overflow(
                "synapseFmt", fmt_id, size,
                f"synapses use format index {fmt_id} (of {size}), whose fields "
                f"{missing} were never written",
            )
        return SynapseConfig(
            **{param: written[field] for field, param in SYNAPSE_FMT_FIELDS.items()}
        )

    def synapse_bits(self):
        """Synapse memory bits used, counting each distinct synapse run once."""
        runs = {entry.synapsePtr: entry for _, entry in self.input_axons()}
        return sum(
            self.synapse_config(self.synapses.fmt[ptr]).bits_per_axon(entry.n_weights)
            for ptr, entry in runs.items()
        )

    def check(self):
        """Raise `StandinOverflow` if the recorded core breaks a hardware limit.

        Checks the output axon count and sources, every synapse's format and
        compartment index, every input axon's synapses (index width and targets), and
        the synapse memory used.
        """
        configured = self.configured_compartments()
        self._check_output_axons(configured)
        self._check_synapses()
        used = self.synapses.used
        for axon_id, entry in self.input_axons():
            self._check_input_axon(axon_id, entry, configured, used)
        self._check_synapse_memory()

    def _check_output_axons(self, configured):
        n, interchip = self.output_entries()
        if n > OUTPUT_AXON_ENTRIES:
            raise self.overflow(
                "output axons", n, OUTPUT_AXON_ENTRIES,
                f"{n} output axon entries needed ({interchip} of them inter-chip: "
                f"one extra entry per axon or population sent to another chip), the "
                f"core has {OUTPUT_AXON_ENTRIES}; move blocks with many outgoing axons "
                f"to other cores, or their targets to this core's chip",
            )
        for axon in self.output_axons:
            if not configured[axon.src_compartment]:
                raise self.overflow(
                    "output axons", axon.src_compartment, COMPARTMENTS,
                    f"an output axon leaves compartment {axon.src_compartment}, "
                    f"which has no cxCfg entry",
                )

    def _check_synapses(self):
        used = np.flatnonzero(self.synapses.used)
        too_far = used[self.synapses.cidx[used] >= COMPARTMENTS]
        if too_far.size:
            i = int(too_far[0])
            raise self.overflow(
                "synapses", i, COMPARTMENTS,
                f"synapse {i} has compartment index CIdx={self.synapses.cidx[i]}, "
                f"past the core's {COMPARTMENTS} compartments",
            )
        for fmt_id in np.unique(self.synapses.fmt[used]):
            self.synapse_config(int(fmt_id))

    def _check_input_axon(self, axon_id, entry, configured, used):
        start, stop = entry.synapsePtr, entry.synapsePtr + entry.n_weights
        if stop > self.synapses.size or not used[start:stop].all():
            raise self.overflow(
                "synapseMap", axon_id, TABLE_SIZES["synapseMap"],
                f"input axon {axon_id} points at synapses [{start}, {stop}), "
                f"not all configured",
            )
        fmt_id = int(self.synapses.fmt[start])
        cfg = self.synapse_config(fmt_id)
        # one row per atom's run of synapses
        cidx = self.synapses.cidx[start:stop].reshape(entry.n_atoms, entry.synapseLen)
        self._check_index_width(fmt_id, cfg, start, cidx)
        targets = entry.cx_base + cidx
        if np.any(targets >= COMPARTMENTS) or not configured[targets].all():
            raise self.overflow(
                "synapseMap", axon_id, TABLE_SIZES["synapseMap"],
                f"input axon {axon_id} reaches compartments (cxBase "
                f"{entry.cx_base} + CIdx) that have no cxCfg entry",
            )

    def _check_index_width(self, fmt_id, cfg, start, cidx):
        """The stored compartment indices of each run must fit the format's width.

        ``cidx`` holds the runs of one input axon, one row per atom, starting at
        synapse ``start``. A sparse run stores every index; a dense run stores its
        first index only.
        """
        size = 2**cfg.real_idx_bits
        sparse = cfg.compression == SPARSE
        stored = cidx if sparse else cidx[:, :1]
        wide = np.flatnonzero(stored >= size)
        if wide.size:
            row, col = divmod(int(wide[0]), stored.shape[1])
            i = start + row * cidx.shape[1] + col
            kind = "sparse index" if sparse else "dense prefix offset"
            raise self.overflow(
                "synapses", i, size,
                f"synapse {i} has compartment index CIdx={self.synapses.cidx[i]}, "
                f"which does not fit the {cfg.real_idx_bits}-bit {kind} of "
                f"synapseFmt[{fmt_id}] (idxBits={cfg.idx_bits}, size {size}); widen "
                f"the format's idx_bits",
            )

    def _check_synapse_memory(self):
        bits = self.synapse_bits()
        if bits > SYNAPSE_MEMORY_BITS:
            raise self.overflow(
                "synapse memory", bits, SYNAPSE_MEMORY_BITS,
                f"{bits} bits of synapse memory needed, the core has "
                f"{SYNAPSE_MEMORY_BITS}",
            )

    def summary(self):
        """Per-core usage counts, as a dict (see `NxsdkBoard.summary`)."""
        entries, interchip = self.output_entries()
        return {
            "chip": self.chip_index,
            "core": self.id,
            "compartments": len(self.cxCfg.entries),
            "input_axons": len(self.synapseMap.entries),
            "output_axons": entries,
            "interchip_output_axons": interchip,
            "synapses": int(self.synapses.used.sum()),
            "synapse_bits": self.synapse_bits(),
            "compartment_cfgs": len(self.cxProfileCfg.entries),
            "vth_cfgs": len(self.vthProfileCfg.entries),
            "synapse_cfgs": len(self.synapseFmt.entries),
            "stdp_pre_cfgs": len(self.stdpPreCfg.entries),
        }


class NxsdkChip:
    """A recording stand-in for one NxSDK chip.

    Parameters
    ----------
    board : NxsdkBoard
        The board holding the chip (``parent``).
    chip_id : int
        Index of the chip on the board, also its NxSDK id.
    n_synapses_per_core : list of int
        Synapse entries to allocate on each core (one item per core).
    """

    def __init__(self, board, chip_id, n_synapses_per_core):
        self.parent = board
        self.id = chip_id
        self.n2Cores = [
            NxsdkCore(self, i, n) for i, n in enumerate(n_synapses_per_core)
        ]

    @property
    def n2CoresAsList(self):  # noqa: N802 (NxSDK name)
        """The cores, in order."""
        return self.n2Cores


class NxsdkBoard:
    """A recording stand-in for NxSDK's ``N2Board``.

    Parameters
    ----------
    board_id : int
        Board id (recorded only).
    n_chips : int
        Number of chips.
    n_cores_per_chip : list of int
        Cores on each chip.
    n_synapses_per_core : list of list of int
        Synapse entries on each core of each chip.
    """

    def __init__(self, board_id, n_chips, n_cores_per_chip, n_synapses_per_core):
        assert len(n_cores_per_chip) == len(n_synapses_per_core) == n_chips
        assert all(len(s) == n for n, s in zip(n_cores_per_chip, n_synapses_per_core))
        self.id = board_id
        self.n2Chips = [
            NxsdkChip(self, i, s) for i, s in enumerate(n_synapses_per_core)
        ]
        self.monitor = Monitor()
        self.executor = Executor()
        self.spike_generators = []

    def cores(self):
        """Every core of every chip, in order."""
        return [core for chip in self.n2Chips for core in chip.n2Cores]

    def input_axon(self, chip_id, core_id, axon_id, what):
        """The configured ``synapseMap`` entry ``axon_id`` of a core, or raise.

        Parameters
        ----------
        chip_id, core_id, axon_id : int
            Where ``what`` (an output axon or a host spike) is sent.
        what : str
            Named in the error.
        """
        n_chips = len(self.n2Chips)
        if not 0 <= chip_id < n_chips:
            raise StandinOverflow(
                chip_id, core_id, "n2Chips", chip_id, n_chips,
                f"{what} goes to chip {chip_id}, but the board has {n_chips} chips",
            )
        cores = self.n2Chips[chip_id].n2Cores
        if not 0 <= core_id < len(cores):
            raise StandinOverflow(
                chip_id, core_id, "n2Cores", core_id, len(cores),
                f"{what} goes to core {core_id}, but the chip has {len(cores)} cores",
            )
        core = cores[core_id]
        entry = core.synapseMap.entries.get(axon_id)
        if entry is None or not entry.has_synapses:
            raise core.overflow(
                "synapseMap", axon_id, TABLE_SIZES["synapseMap"],
                f"{what} goes to input axon {axon_id}, which points at no synapses",
            )
        return entry

    def check(self):
        """Raise `StandinOverflow` if the recorded board breaks a hardware limit.

        Checks every core (`NxsdkCore.check`), that every output axon reaches a
        configured input axon, and that so does every spike sent through a
        `SpikeGen`. Safe to call again, e.g. after running.
        """
        for core in self.cores():
            core.check()
            targets = {}  # each target once, named by the first axon sent to it
            for axon in core.output_axons:
                targets.setdefault((axon.dst_chip, axon.dst_core, axon.dst_axon), axon)
            for (chip_id, core_id, axon_id), axon in targets.items():
                source = (
                    f"output axon from chip {core.chip_index}, core {core.id}, "
                    f"compartment {axon.src_compartment}"
                )
                self.input_axon(chip_id, core_id, axon_id, source)
        for generator in self.spike_generators:
            for spike in generator.spikes:
                source = f"host spike at step {spike.time}"
                self.input_axon(spike.chip, spike.core, spike.axon, source)

    def summary(self):
        """Usage counts of every core.

        Returns
        -------
        list of dict
            One dict per core, in board order, with keys ``chip``, ``core``,
            ``compartments`` (configured ``cxCfg`` entries), ``input_axons``
            (``synapseMap`` entries, trace entries of learning axons included),
            ``output_axons`` (output axon config entries, `NxsdkCore.output_entries`),
            ``interchip_output_axons`` (how many of those are the extra entries of
            axons to other chips), ``synapses`` (synapse entries),
            ``synapse_bits``, and the config counts ``compartment_cfgs``,
            ``vth_cfgs``, ``synapse_cfgs`` and ``stdp_pre_cfgs``.
        """
        return [core.summary() for core in self.cores()]

    def output_entries(self):
        """Output axon config entries of every core.

        Returns
        -------
        list of OutputEntries
            One ``(entries, interchip)`` per core, in board order (see
            `NxsdkCore.output_entries`).
        """
        return [core.output_entries() for core in self.cores()]

    def start(self):
        """Mark the board as started."""
        self.executor.started = True

    def run(self, steps, aSync=False):  # noqa: N803 (NxSDK name)
        """Advance probes by ``steps`` zero samples (the stand-in has no dynamics)."""
        for probe in self.monitor.probes:
            probe.timeSeries.data.extend([0] * steps)

    def finishRun(self):  # noqa: N802 (NxSDK name)
        """Nothing to wait for."""

    def disconnect(self):
        """Mark the board as stopped."""
        self.executor.started = False


class SpikeGen:
    """Records the spikes the host sends (NxSDK's ``BasicSpikeGenerator``).

    Parameters
    ----------
    board : NxsdkBoard
        The board the spikes go to; `NxsdkBoard.check` checks their targets.
    """

    def __init__(self, board):
        self.spikes = []
        board.spike_generators.append(self)

    def addSpike(self, time, chipId, coreId, axonId):  # noqa: N802,N803
        """Record a discrete spike."""
        self.spikes.append(Spike("discrete", time, chipId, coreId, axonId, 0))

    def addPop16Spike(  # noqa: N802 (NxSDK name)
        self, time, chipId, coreId, axonId, srcAtom, atomBits  # noqa: N803
    ):
        """Record a pop16 spike."""
        self.spikes.append(Spike("pop16", time, chipId, coreId, axonId, srcAtom))

    def addPop32Spike(self, time, chipId, coreId, axonId, srcAtom):  # noqa: N802,N803
        """Record a pop32 spike."""
        self.spikes.append(Spike("pop32", time, chipId, coreId, axonId, srcAtom))


class GeneratedTraceCfg:
    """Trace settings produced by `TraceConfigGenerator`."""

    def __init__(self, **fields):
        self.fields = fields

    def writeToRegister(self, register):  # noqa: N802 (NxSDK name)
        """Write the settings into a trace config register."""
        register.configure(**self.fields)


class TraceConfigGenerator:
    """Stand-in for NxSDK's ``TraceCfgGen``: keeps the arguments as the settings."""

    def genTraceCfg(self, tau, spikeLevelInt, spikeLevelFrac):  # noqa: N802,N803
        """Trace settings for a time constant and spike increment."""
        return GeneratedTraceCfg(
            tau=tau, spikeLevelInt=spikeLevelInt, spikeLevelFrac=spikeLevelFrac
        )


UCode = namedtuple("UCode", "numUCodes uCodes")


class _MicroGen:
    """Stand-in for NxSDK's learning-rule microcode compiler."""

    @staticmethod
    def ruleToUCode(rules, doOptimize=False):  # noqa: N802,N803 (NxSDK name)
        """One placeholder microcode word for the rules."""
        return UCode(numUCodes=1, uCodes=[0])


micro_gen = _MicroGen()


class SpikeProbe:
    """Stand-in for NxSDK's ``N2SpikeProbe``: only its class-level probe cache."""

    probeDict = {}


#: Names in ``nengo_loihi.hardware.builder`` replaced while building on the stand-in.
BUILDER_STANDINS = {
    "NxsdkBoard": NxsdkBoard,
    "SpikeGen": SpikeGen,
    "TraceConfigGenerator": TraceConfigGenerator,
    "micro_gen": micro_gen,
}
_MISSING = object()


@contextlib.contextmanager
def _replaced(owner, name, value):
    """Set ``owner.name`` to ``value``, then put back what was there (or nothing)."""
    old = vars(owner).get(name, _MISSING)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if old is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, old)


def _replace_all(stack, owner, values):
    for name, value in values.items():
        stack.enter_context(_replaced(owner, name, value))


@contextlib.contextmanager
def standin_builder():
    """Make ``nengo_loihi.hardware.builder`` build on the stand-in NxSDK classes.

    Restores the original names on exit, also when the build fails.
    """
    with contextlib.ExitStack() as stack:
        _replace_all(stack, nl_builder, BUILDER_STANDINS)
        yield


def build_on_standin(board, seed=0):
    """Build an allocated board with nengo-loihi's ``build_board``, then check it.

    Parameters
    ----------
    board : nengo_loihi.hardware.nxsdk_objects.Board
        What an allocator returned. The build writes to it (``probe_map``,
        ``learning_coreid``), as a hardware build does, so build each board once.
    seed : int, optional
        Seed passed to ``build_board``.

    Returns
    -------
    NxsdkBoard
        The recorded board; see `NxsdkBoard.summary`.

    Raises
    ------
    StandinOverflow
        If the board needs more of a core than the hardware has.
    AssertionError
        If one of nengo-loihi's own asserts in ``build_board`` fails (e.g. blocks
        sharing a core with different ``vmin``).
    """
    with standin_builder():
        nxsdk_board = nl_builder.build_board(board, use_snips=False, seed=seed)
    nxsdk_board.check()
    return nxsdk_board


class StandinHardware:
    """What `standin_hardware` yields: the boards built while it was active.

    Attributes
    ----------
    boards : list of NxsdkBoard
        Every board built, in order, each already checked.
    """

    def __init__(self):
        self.boards = []

    @property
    def board(self):
        """The last board built."""
        return self.boards[-1]

    def build_board(self, board, use_snips=False, seed=None):
        """Replacement for ``build_board`` inside ``HardwareInterface``."""
        if use_snips:
            raise NotImplementedError(
                "The NxSDK stand-in cannot run snips; use precompute=True."
            )
        nxsdk_board = build_on_standin(board, seed=seed)
        self.boards.append(nxsdk_board)
        return nxsdk_board


def _skip_nxsdk_version_check(cls):
    """No NxSDK, no version to check."""


@contextlib.contextmanager
def standin_hardware():
    """Let ``nengo_loihi.Simulator(..., target="loihi")`` build on the stand-in.

    Inside the block, nengo-loihi believes NxSDK is installed;
    ``HardwareInterface`` allocates, validates and builds the board on the
    stand-in, and every board built is checked and kept. Everything is restored on
    exit. Only ``precompute=True`` is supported (see the module notes).

    Yields
    ------
    StandinHardware

    Examples
    --------
    >>> with standin_hardware() as hw:                              # doctest: +SKIP
    ...     with nengo_loihi.Simulator(net, target="loihi", precompute=True,
    ...                                hardware_options={"n_chips": 2}) as sim:
    ...         sim.run(0.1)
    >>> hw.board.summary()                                          # doctest: +SKIP
    """
    hardware = StandinHardware()
    with contextlib.ExitStack() as stack:
        _replace_all(stack, nl_builder, BUILDER_STANDINS)
        for module in (nl_simulator, nengo_loihi.hardware, nl_shim):
            stack.enter_context(_replaced(module, "HAS_NXSDK", True))
        _replace_all(
            stack,
            nl_interface,
            {"build_board": hardware.build_board, "SpikeProbe": SpikeProbe},
        )
        stack.enter_context(
            _replaced(
                nl_interface.HardwareInterface,
                "check_nxsdk_version",
                classmethod(_skip_nxsdk_version_check),
            )
        )
        yield hardware
