"""Filling nengo-loihi cores with several blocks, in time linear in their size.

nengo-loihi computes a core's configuration tables with ``core_compartment_cfgs``,
``core_vth_cfgs`` and ``core_stdp_pre_cfgs`` (``nengo_loihi/hardware/allocators.py``):
one Python ``Config`` object per compartment, then every compartment compared with
every distinct config of the core. That is fine for one block per core, as
nengo-loihi's allocators place them, but on cores that hold many blocks it dominated
the time of emitting a board. The functions here group equal settings with numpy
instead and return the same tables: the same config values, in the same order (the
iteration order of the Python set nengo-loihi builds, reproduced by adding the same
distinct configs to a set in the same order), and the same per-block index arrays.

`fill_core` configures a core as `nengo_loihi.hardware.allocators.Allocator.
block_to_new_core` does for one block, for any number of blocks.
"""

from __future__ import annotations

import math
import operator

import numpy as np
from nengo_loihi.block import SynapseConfig
from nengo_loihi.builder.discretize import tracing_mag_int_frac, vth_to_manexp
from nengo_loihi.hardware.allocators import core_compartment_cfgs, core_vth_cfgs
from nengo_loihi.hardware.nxsdk_objects import CompartmentConfig, TraceConfig, VthConfig

__all__ = [
    "compartment_cfgs",
    "vth_cfgs",
    "stdp_pre_cfgs",
    "synapse_axon_ids",
    "fill_core",
]

#: Compartment fields that make up a `CompartmentConfig`, in its constructor's terms.
COMPARTMENT_FIELDS = ("decay_u", "decay_v", "refract_delay", "enable_noise")
#: The fields of a synapse format that its equality compares, as one tuple.
_FORMAT_FIELDS = operator.attrgetter(*SynapseConfig.params)


# ---------------------------------------------------------------- grouping
def _column_codes(column):
    """Small non-negative integer codes of ``column``'s values, and how many codes.

    Integer and boolean columns use ``value - min``; others are numbered by
    ``np.unique``. Equal values get equal codes.
    """
    if column.dtype.kind == "b":
        column = column.view(np.uint8)
    if column.dtype.kind in "iu":
        low, high = int(column.min()), int(column.max())
        if high - low < 2**31 and -(2**62) < low and high < 2**62:
            return column.astype(np.int64) - low, high - low + 1
    values, codes = np.unique(column, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), max(values.size, 1)


def _first_seen_groups(columns):
    """Group rows of equal values, numbering groups in order of first appearance.

    Parameters
    ----------
    columns : list of (n,) ndarray
        One array per field; row ``i`` is ``tuple(c[i] for c in columns)``.

    Returns
    -------
    first : (g,) ndarray of int
        Row where each group first appears, in increasing order.
    group : (n,) ndarray of int
        Group of each row (``0 .. g-1``, numbered in order of first appearance).
    """
    n = columns[0].size
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    key, radix = np.zeros(n, dtype=np.int64), 1
    for column in columns:
        codes, count = _column_codes(column)
        if radix * count >= 2**62:  # renumber the key so far densely
            values, key = np.unique(key, return_inverse=True)
            key, radix = key.reshape(-1).astype(np.int64), values.size
        key = key * count + codes
        radix *= count
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.reshape(-1)]


def _has_nan(columns):
    """Whether a float column holds a NaN (equal to nothing, not even itself)."""
    return any(c.dtype.kind in "fc" and np.isnan(c).any() for c in columns)


def _as_tables(blocks, sizes, objects, group):
    """nengo-loihi's table (set order) and per-block index arrays for grouped configs.

    Parameters
    ----------
    blocks : list of LoihiBlock
    sizes : list of int
        Compartments of each block.
    objects : list of Config
        One config per group, in order of first appearance (pairwise unequal).
    group : (n,) ndarray of int
        Group of each compartment of the core, blocks in order.

    Returns
    -------
    cfgs : list of Config
    cfg_idxs : dict of LoihiBlock -> (n_compartments,) ndarray of int32
    """
    # ``compute_cfgs`` takes ``list(set(all configs))``. A set keeps the first of equal
    # elements and its layout depends only on the sequence of distinct elements added,
    # so adding the distinct configs in order of first appearance gives the same order.
    cfgs = list(set(objects))
    position = {id(cfg): k for k, cfg in enumerate(cfgs)}
    table_index = np.array([position[id(obj)] for obj in objects], dtype=np.int32)
    core_idxs = table_index[group] if group.size else np.zeros(0, dtype=np.int32)
    bounds = np.cumsum([0] + list(sizes))
    cfg_idxs = {
        block: core_idxs[bounds[k]:bounds[k + 1]].copy() for k, block in enumerate(blocks)
    }
    return cfgs, cfg_idxs


def _locate(sizes, rows):
    """(block number, index in block) of core-wide compartment ``rows``."""
    bounds = np.cumsum(sizes)
    which = np.searchsorted(bounds, rows, side="right")
    starts = bounds - np.asarray(sizes)
    return [(int(b), int(r - starts[b])) for b, r in zip(which, rows)]


# ---------------------------------------------------------------- config tables
def compartment_cfgs(blocks):
    """The compartment configs of a core holding ``blocks``, and each block's indices.

    The same result as nengo-loihi's ``core_compartment_cfgs(core)`` for a core whose
    ``blocks`` are these, computed by grouping equal settings.

    Parameters
    ----------
    blocks : list of LoihiBlock
        The core's blocks, in their on-core order.

    Returns
    -------
    cfgs : list of CompartmentConfig
        The distinct configs, in nengo-loihi's order.
    cfg_idxs : dict of LoihiBlock -> (n_compartments,) ndarray of int32
        Index in ``cfgs`` of each compartment's config.
    """
    sizes = [b.compartment.n_compartments for b in blocks]
    columns = [
        np.concatenate([getattr(b.compartment, f)[:n] for b, n in zip(blocks, sizes)])
        if blocks else np.zeros(0)
        for f in COMPARTMENT_FIELDS
    ]
    if _has_nan(columns):
        return core_compartment_cfgs(_CoreView(blocks))
    first, group = _first_seen_groups(columns)
    objects = []
    for b, i in _locate(sizes, first):
        comp = blocks[b].compartment
        objects.append(CompartmentConfig(
            decay_u=comp.decay_u[i], decay_v=comp.decay_v[i],
            refract_delay=comp.refract_delay[i], enable_noise=comp.enable_noise[i],
        ))
    return _as_tables(blocks, sizes, objects, group)


def vth_cfgs(blocks):
    """The threshold configs of a core holding ``blocks``, and each block's indices.

    The same result as nengo-loihi's ``core_vth_cfgs(core)`` (threshold mantissas
    from ``vth_to_manexp``, block by block), computed by grouping equal mantissas.

    Parameters
    ----------
    blocks : list of LoihiBlock
        The core's blocks, in their on-core order.

    Returns
    -------
    cfgs : list of VthConfig
    cfg_idxs : dict of LoihiBlock -> (n_compartments,) ndarray of int32
    """
    sizes = [b.compartment.n_compartments for b in blocks]
    if not blocks:
        return [], {}
    # vth_to_manexp is elementwise (its int32 mantissas do not depend on the array's
    # float type), so one call for the core gives every block's mantissas.
    column = vth_to_manexp(
        np.concatenate([b.compartment.vth[:n] for b, n in zip(blocks, sizes)]))[0]
    first, group = _first_seen_groups([column])
    objects = [VthConfig(vth=column[i]) for i in first]
    return _as_tables(blocks, sizes, objects, group)


def stdp_pre_cfgs(synapses):
    """The STDP pre-trace configs of a core's ``synapses``, and each one's index.

    The same result as nengo-loihi's ``core_stdp_pre_cfgs(core)`` for a core whose
    synapses (``core.synapses``, in the order added) are these.

    Parameters
    ----------
    synapses : list of Synapse

    Returns
    -------
    cfgs : list of TraceConfig
        Distinct trace configs of the learning synapses, in order of first use.
    cfg_idxs : dict of Synapse -> int or None
        Index in ``cfgs``; None for a synapse that does not learn.
    """
    cfgs, index, cfg_idxs = [], {}, {}
    for synapse in synapses:
        if not synapse.learning:
            cfg_idxs[synapse] = None
            continue
        mag_int, mag_frac = tracing_mag_int_frac(synapse.tracing_mag)
        cfg = TraceConfig(tau=synapse.tracing_tau, spike_int=mag_int, spike_frac=mag_frac)
        if cfg not in index:
            index[cfg] = len(cfgs)
            cfgs.append(cfg)
        cfg_idxs[synapse] = index[cfg]
    return cfgs, cfg_idxs


class _CoreView:
    """The one attribute of a `Core` that nengo-loihi's config helpers read."""

    def __init__(self, blocks):
        self.blocks = list(blocks)


# ---------------------------------------------------------------- synapses
def _weight_shapes(synapse):
    """(populations, compartments) of each of ``synapse``'s weight arrays."""
    return [w.shape for w in synapse.weights]


def _live_axons(synapse, shapes):
    """Which input axons of ``synapse`` are built (not dummies), as `Core.add_synapse`
    decides: an axon is a dummy when its compartment base is negative or its weight
    row (first population) is empty."""
    wmap, bases = synapse.axon_to_weight_map, synapse.axon_compartment_bases
    axons = range(synapse.n_axons)
    if wmap is None:
        live = [shapes[a][1] > 0 for a in axons]
    else:
        live = [shapes[wmap[a]][1] > 0 for a in axons]
    if bases is not None:
        live = [on and bases[a] >= 0 for a, on in zip(axons, live)]
    return live


def synapse_axon_ids(synapse, first_id):
    """Input axon ids of ``synapse``'s axons on a core, numbered from ``first_id``.

    What `Core.add_synapse` puts in ``core.synapse_axons[synapse]``: consecutive ids,
    ``synapse.idxs_per_synapse()`` apart (two per axon for a learning synapse), and
    None for a dummy axon.

    Parameters
    ----------
    synapse : Synapse
    first_id : int
        The first free input axon id of the core.

    Returns
    -------
    ids : list of int or None
    next_id : int
        The first id after this synapse's.
    """
    return _axon_ids(synapse, first_id, _weight_shapes(synapse))


def _axon_ids(synapse, first_id, shapes):
    if shapes and min(shapes)[0] == 0:
        # an axon without populations has no weight row: nengo-loihi's loop fails
        return _axon_ids_by_loop(synapse, first_id)
    step = synapse.idxs_per_synapse()
    live = _live_axons(synapse, shapes)
    if all(live):
        end = first_id + step * len(live)
        return list(range(first_id, end, step)), end
    ids, next_id = [], first_id
    for on in live:
        if on:
            ids.append(next_id)
            next_id += step
        else:
            ids.append(None)
    return ids, next_id


def _axon_ids_by_loop(synapse, first_id):
    """`synapse_axon_ids` axon by axon, with nengo-loihi's per-axon methods."""
    ids, next_id = [], first_id
    for idx in range(synapse.n_axons):
        base = synapse.axon_compartment_base(idx)
        weights, _ = synapse.axon_weights_indices(idx)
        if base is None or weights.size == 0:
            ids.append(None)
        else:
            ids.append(next_id)
            next_id += synapse.idxs_per_synapse()
    return ids, next_id


class _CoreFiller:
    """Adds synapses to one core, remembering the next free axon id, weight entry and
    format index (what `Core.add_synapse` recomputes from the core's tables)."""

    def __init__(self, core):
        self.core = core
        self.next_id = 0
        self.next_entry = 0
        self.format_index = {}

    def _format_idx(self, cfg):
        # ``Core.get_synapse_cfg_idx``: the first equal entry of ``core.synapse_cfgs``
        # (index 0, None, is never equal to a format), or a new entry.
        # Formats are keyed by their field values (what `Config.__eq__` compares).
        key = (type(cfg), _FORMAT_FIELDS(cfg))
        try:
            idx = self.format_index.get(key)
        except TypeError:  # a format with an unhashable field: search the table
            return self.core.get_synapse_cfg_idx(cfg)
        if idx is None:
            idx = self.core.get_synapse_cfg_idx(cfg)
            self.format_index[key] = idx
        return idx

    def add(self, synapse):
        """Add ``synapse`` to the core, as `Core.add_synapse` does.

        Unlike `Core.add_synapse`, which numbers a synapse's axons from the previous
        synapse's last id and fails when that axon is a dummy (None), ids continue
        after the last id in use, so a learning synapse's two ids per axon stay apart
        from the next synapse's. (nengo-loihi's allocators never meet this: they give
        every block its own core.)
        """
        core = self.core
        core.synapse_cfg_idxs[synapse] = self._format_idx(synapse.synapse_cfg)
        shapes = _weight_shapes(synapse)
        ids, self.next_id = _axon_ids(synapse, self.next_id, shapes)
        core.synapse_axons[synapse] = ids
        core.board.index_synapse(synapse, core.chip, core, ids)
        size = sum(map(math.prod, shapes))  # Synapse.size()
        core.synapse_entries[synapse] = (self.next_entry, self.next_entry + size)
        self.next_entry += size


# ---------------------------------------------------------------- cores
def fill_core(core, blocks):
    """Configure an empty ``core`` with ``blocks``, as nengo-loihi's
    `Allocator.block_to_new_core` does for one block.

    Blocks are added in order (the first at compartment offset 0), then the core's
    compartment and threshold configs, each block's synapses, and the STDP pre-trace
    configs.

    Parameters
    ----------
    core : nengo_loihi.hardware.nxsdk_objects.Core
        A new core of a chip of a board.
    blocks : list of LoihiBlock
    """
    for block in blocks:
        core.add_block(block)

    cfgs, core.compartment_cfg_idxs = compartment_cfgs(blocks)
    for cfg in cfgs:
        core.add_compartment_cfg(cfg)

    cfgs, core.vth_cfg_idxs = vth_cfgs(blocks)
    for cfg in cfgs:
        core.add_vth_cfg(cfg)

    filler = _CoreFiller(core)
    for block in blocks:
        for synapse in block.synapses:
            filler.add(synapse)

    cfgs, core.stdp_pre_cfg_idxs = stdp_pre_cfgs(list(core.synapse_axons))
    for cfg in cfgs:
        core.add_stdp_pre_cfg(cfg)

    core.stdp_pre_cfg_idx = None  # set by nengo_loihi.hardware.builder
    core.stdp_cfg_idx = None  # set by nengo_loihi.hardware.builder
