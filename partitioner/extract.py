"""Turn a nengo-loihi model into a `TrafficGraph`.

This is the only module of the package that reads nengo-loihi model internals
(``LoihiBlock``, ``Synapse``, ``Axon``, ``SpikeInput``, the emulator state). Everything
it learns goes into the graph, so later stages never touch nengo-loihi objects.

Per block it records the core resources the block needs and the config-register
entries it occupies, counted the way nengo-loihi's hardware builder spends them:

* input axon (synapse map) ids: the axons ``Core.add_synapse`` numbers, i.e. the
  non-dummy axons of every synapse times ``Synapse.idxs_per_synapse()`` (2 for learning
  synapses);
* output axon config entries as Loihi's compiler counts them (`_axon_entries`): one
  per source compartment for discrete axons, 1 (pop16) or 2 (pop32) per distinct
  (population, target axon) for population axons; and, per block pair, the extra
  entry each of those costs when the target block is on another chip;
* synapse bits in the synapse's original format (`partitioner.formats`), and the bits
  the block needs when its formats are widened to sit at an offset on a shared core.

Per directed block pair it records the axons from one block to the other and the
expected spikes per time step on them. Where the spikes come from depends on
``rates``:

``None`` (or ``"axons"``)
    Every axon is active every step (nengo-loihi's own assumption in
    ``estimate_interblock_activity``): spikes equal axons.
a dict ``{nengo.Ensemble: rates}``
    Per-neuron firing rates in Hz, nengo-loihi's ``ensemble_rates`` format. An edge
    carries ``sum(rate * dt)`` over the source compartments that map to one of its
    axons. Blocks without a given rate (e.g. decode neurons, or ensembles left out of
    the dict) keep the every-axon-active default.
``"measured"``
    The network runs in nengo-loihi's emulator for ``duration`` seconds and the spikes
    each compartment actually fired are counted; then as for given rates.

Host inputs (``model.inputs``, e.g. the ``SpikeInput`` that carries a ``nengo.Node``'s
value onto the chip) become graph inputs the same way. With measured rates their
spikes are the spikes they actually sent per step; otherwise their axon counts.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Mapping

import nengo
import nengo_loihi
import numpy as np
import scipy.sparse as sp
from nengo.exceptions import BuildError
from nengo_loihi.block import SynapseConfig
from nengo_loihi.builder import Model
from nengo_loihi.builder.discretize import tracing_mag_int_frac, vth_to_manexp
from nengo_loihi.hardware.allocators import ensemble_to_block_rates

from partitioner import formats
from partitioner.building import lean_connection_params
from partitioner.errors import BlockTooLargeError, ExtractionError
from partitioner.graph import CONFIG_KINDS, TrafficGraph
from partitioner.hardware import CoreLimits
from partitioner.shapes import format_block_shape, suggest_block_shape

__all__ = ["extract", "build_model", "block_sources"]

_LIMITS = CoreLimits()

# nengo_loihi/builder/validate.py messages, mapped to our resource names.
_LIMIT_RE = re.compile(
    r"(Number of compartments|Output axons|Input axons|Total synapse bits) "
    r"\((\d+)\) exceeded max \((\d+)\)"
)
_RULES = {
    "Number of compartments": "compartments",
    "Output axons": "out_axons",
    "Input axons": "in_axons",
    "Total synapse bits": "synapse_bits",
}
_RULE_TEXT = {
    "compartments": "compartments",
    "out_axons": "output axons",
    "in_axons": "input axons",
    "synapse_bits": "bits of synapse memory",
}


# ---------------------------------------------------------------------------- API
def extract(model_or_network, rates=None, *, duration=1.0, dt=0.001, progress=True,
            seed=None):
    """Build the block-level traffic graph of a nengo-loihi model.

    Parameters
    ----------
    model_or_network : nengo.Network, nengo_loihi.Simulator or nengo_loihi.builder.Model
        What to extract. A network is built with nengo-loihi's builder (and only run
        when ``rates="measured"``); a simulator contributes its ``model``.
    rates : None, "axons", dict or "measured", optional
        Where the expected spikes per step come from (see the module docstring):
        every axon active (default), ``{nengo.Ensemble: per-neuron rates in Hz}``, or
        measured in the emulator.
    duration : float, optional
        Seconds to run the emulator for when ``rates="measured"``. A given simulator
        is advanced by this much (its probes record the run); a network is run in a
        new simulator that is closed afterwards.
    dt : float, optional
        Time step used when building a network. Ignored for models and simulators,
        whose own ``dt`` is used.
    progress : bool, optional
        Print a progress line to stderr every 10% of a measuring run.
    seed : int, optional
        Seed of the simulator built for a measuring run.

    Returns
    -------
    TrafficGraph
        Block ``i`` is ``list(model.blocks)[i]``.

    Raises
    ------
    BlockTooLargeError
        A network's build failed because one block alone breaks a per-core limit.
    ExtractionError
        The input or the rates are unusable (the message says how to fix them).
    """
    mode = _rates_mode(rates)
    model, sim, owns_sim = _resolve(model_or_network, dt, seed, mode == "measured")
    try:
        blocks = list(model.blocks)
        inputs = list(model.inputs)
        _check_discretized(blocks)
        if mode == "ensemble_rates":
            block_spikes = _ensemble_rate_spikes(model, blocks, rates)
            input_spikes = [None] * len(inputs)
        elif mode == "measured":
            block_spikes, input_spikes = _measure(sim, blocks, inputs, duration, progress)
        else:
            block_spikes = [None] * len(blocks)
            input_spikes = [None] * len(inputs)
        return _graph(model, blocks, inputs, block_spikes, input_spikes, mode)
    finally:
        if owns_sim:
            sim.close()


def build_model(network, dt=0.001):
    """Build a network into a nengo-loihi `Model`, without simulating it.

    This is what ``nengo_loihi.Simulator(network, target="sim")`` builds (the same
    splitting, discretization and validation), minus the simulators, and without
    the per-connection weight copies a simulator would keep in ``model.params``
    (`partitioner.building`).

    Parameters
    ----------
    network : nengo.Network
        The network to build.
    dt : float, optional
        Simulation time step in seconds.

    Returns
    -------
    nengo_loihi.builder.Model

    Raises
    ------
    BlockTooLargeError
        One block alone breaks a per-core limit; the message suggests a
        ``nengo_loihi.BlockShape`` that fits, where one can help.
    """
    model = _new_model(network, dt)
    # A model built here is not simulated: keep no second copies of the weights.
    with _translate_build_errors(model), lean_connection_params():
        model.build(network, precompute=None, remove_passthrough=True, discretize=True)
    return model


def block_sources(model):
    """A readable description of the nengo object each block of ``model`` came from.

    Ensemble blocks are named by their ensemble, with the neuron range when nengo-loihi
    split the ensemble (``"<Ensemble 'layer1'>[0:512]"``); decode-neuron blocks by
    their connection. Blocks no nengo object claims fall back to their label.

    Parameters
    ----------
    model : nengo_loihi.builder.Model
        A built model.

    Returns
    -------
    list of str
        One entry per block, in ``model.blocks`` order.
    """
    blocks = list(model.blocks)
    return [
        _describe(model, obj, key, block, group_size) if obj is not None
        else (block.label or str(block))
        for block, (obj, key, group_size) in zip(blocks, _block_origins(model, blocks))
    ]


# ------------------------------------------------------------ input resolution
def _rates_mode(rates):
    if rates is None or (isinstance(rates, str) and rates == "axons"):
        return "axons"
    if isinstance(rates, str):
        if rates == "measured":
            return "measured"
        raise ExtractionError(
            f"rates={rates!r} is not understood. Use None (every axon active), "
            f"'measured' (run the emulator), or a dict {{nengo.Ensemble: rates in Hz}}."
        )
    if isinstance(rates, Mapping):
        return "ensemble_rates"
    raise ExtractionError(
        f"rates must be None, 'measured' or a dict {{nengo.Ensemble: rates in Hz}}, "
        f"not {type(rates).__name__}."
    )


def _resolve(obj, dt, seed, measure):
    """(model, simulator or None, whether we own the simulator)."""
    if isinstance(obj, nengo_loihi.Simulator):
        if measure and (obj.closed or "emulator" not in obj.sims):
            raise ExtractionError(
                "rates='measured' runs nengo-loihi's emulator, but this simulator is "
                "closed or does not target the emulator. Pass the network instead, or "
                "an open nengo_loihi.Simulator(net, target='sim')."
            )
        return obj.model, obj, False
    if isinstance(obj, Model):
        if measure:
            raise ExtractionError(
                "rates='measured' needs something to run: pass the nengo.Network or a "
                "nengo_loihi.Simulator(net, target='sim') instead of a built Model."
            )
        return obj, None, False
    if isinstance(obj, nengo.Network):
        if not measure:
            return build_model(obj, dt), None, False
        model = _new_model(obj, dt)
        with _translate_build_errors(model):
            sim = nengo_loihi.Simulator(
                obj, dt=float(dt), seed=seed, model=model, target="sim",
                progress_bar=False,
            )
        return sim.model, sim, True
    raise ExtractionError(
        f"extract() takes a nengo.Network, a nengo_loihi.Simulator or a built "
        f"nengo_loihi.builder.Model, not {type(obj).__name__}."
    )


def _new_model(network, dt):
    return Model(dt=float(dt), label=f"{network}, dt={float(dt):f}")


def _check_discretized(blocks):
    for block in blocks:
        if not np.issubdtype(block.compartment.vth.dtype, np.integer):
            raise ExtractionError(
                f"{block} holds floating-point parameters: the model was built without "
                f"discretization (target='simreal'). Build it for the emulator or "
                f"hardware (target='sim' or 'loihi'), or pass the network."
            )


# ------------------------------------------------------- oversized blocks
@contextlib.contextmanager
def _translate_build_errors(model):
    """Re-raise nengo-loihi's per-block limit errors as `BlockTooLargeError`."""
    try:
        yield
    except BlockTooLargeError:
        raise
    except BuildError as err:
        if "No neurons marked for execution on-chip" in str(err):
            raise ExtractionError(
                "The network has nothing to place on Loihi: no ensemble of it runs on "
                "the chip (it has none, or every one is marked off-chip with "
                "net.config[ens].on_chip = False). Add an ensemble, or mark one on-chip."
            ) from err
        too_large = _block_too_large(model, err)
        if too_large is None:
            raise
        raise too_large from err


def _validate_value(block, rule):
    """The quantity nengo-loihi's ``validate_block`` checks for ``rule``."""
    if rule == "compartments":
        return block.compartment.n_compartments
    if rule == "out_axons":
        return sum(axon.axon_slots() for axon in block.axons)
    if rule == "in_axons":
        return sum(synapse.n_axons for synapse in block.synapses)
    return sum(synapse.bits() for synapse in block.synapses)


def _offenders(blocks):
    """(block index, rule, value, limit) for every block over a per-core limit, in
    the order nengo-loihi's ``validate_block`` checks them."""
    limits = {"compartments": _LIMITS.compartments, "out_axons": _LIMITS.out_axons,
              "in_axons": _LIMITS.in_axons, "synapse_bits": _LIMITS.synapse_bits}
    found = []
    for i, block in enumerate(blocks):
        for rule, limit in limits.items():
            value = _validate_value(block, rule)
            if value > limit:
                found.append((i, rule, value, limit))
    return found


def _block_too_large(model, err):
    """A `BlockTooLargeError` for nengo-loihi's limit error ``err``, or None.

    nengo-loihi stops at the first block over a limit; the message lists every block
    over a limit, so that one rebuild can fix them all.
    """
    match = _LIMIT_RE.search(str(err))
    if match is None:
        return None
    rule = _RULES[match.group(1)]
    value, limit = int(match.group(2)), int(match.group(3))
    blocks = list(model.blocks)
    offenders = _offenders(blocks)
    first = next((o for o in offenders if o[1] == rule and o[2] == value), None)
    if first is None:
        return BlockTooLargeError(
            f"{err}. One block alone breaks a per-core limit ({_RULE_TEXT[rule]}: "
            f"{value} > {limit}); no allocator can place it. Split the ensemble that "
            f"made it: nengo_loihi.add_params(net); net.config[ens].block_shape = "
            f"nengo_loihi.BlockShape(...).",
            rule=rule, value=value, limit=limit,
        )
    sources = block_sources(model)
    objs = _source_objects(model, blocks)
    shapes = _ensemble_shapes(model, blocks, objs, offenders)
    i = first[0]
    block, obj = blocks[i], objs[i]
    message = _offender_text(block, sources[i], *first[1:]) + " " + _advice(
        obj, rule, shapes)
    others = _group_by_source(blocks, objs, [o for o in offenders if o[0] != i])
    if others:
        message += "\nOther blocks over a per-core limit:" + "".join(
            f"\n  - {len(group)} block(s) of {src}, e.g. {blocks[j]} needs {v} "
            f"{_RULE_TEXT[r]} (limit {lim}). {_advice(src, r, shapes, short=True)}"
            for src, group in others.items()
            for j, r, v, lim in group[:1]
        )
    suggestion = shapes.get(obj) if isinstance(obj, nengo.Ensemble) else None
    suggestion = None if isinstance(suggestion, _NoShape) else suggestion
    return BlockTooLargeError(
        message, block=str(block), source=sources[i], rule=rule, value=value,
        limit=limit, suggestion=suggestion,
    )


def _group_by_source(blocks, objs, offenders):
    """Offenders grouped by the nengo object (or block label) they came from."""
    groups = {}
    for offender in offenders:
        i = offender[0]
        key = objs[i] if objs[i] is not None else str(blocks[i])
        groups.setdefault(key, []).append(offender)
    return groups


def _offender_text(block, source, rule, value, limit):
    return (
        f"{block} (from {source}) needs {value} {_RULE_TEXT[rule]}, but one Loihi core "
        f"has {limit}, so no allocator can place it."
    )


class _NoShape:
    """No block shape helps: every neuron of the ensemble receives ``axons`` input
    axons, more than a core's ``limit`` (a dense connection)."""

    def __init__(self, axons, limit):
        self.axons, self.limit = axons, limit


def _fewest_input_axons(block):
    """The fewest input axons any one compartment of ``block`` receives (counted as
    ``Core.add_synapse`` numbers them), or None when a synapse uses population axons,
    whose targets depend on the block's shape."""
    counts = np.zeros(block.compartment.n_compartments, dtype=np.int64)
    for synapse in block.synapses:
        if synapse.pop_type != 0:
            return None
        for idx in range(synapse.n_axons):
            base = synapse.axon_compartment_base(idx)
            weights, indices = synapse.axon_weights_indices(idx)
            if base is not None and weights.size:
                counts[np.unique(base + np.asarray(indices))] += synapse.idxs_per_synapse()
    return int(counts.min()) if counts.size else 0


def _ensemble_shapes(model, blocks, objs, offenders):
    """The smallest suggested BlockShape for each ensemble with an offending block, or
    `_NoShape` where a block receives too many input axons whatever its shape."""
    shapes = {}
    for i, rule, value, limit in offenders:
        ens = objs[i]
        if not isinstance(ens, nengo.Ensemble) or isinstance(shapes.get(ens), _NoShape):
            continue
        if rule == "in_axons":
            fewest = _fewest_input_axons(blocks[i])
            if fewest is not None and fewest > limit:
                shapes[ens] = _NoShape(fewest, limit)
                continue
        current = _current_block_shape(model, ens)
        shape = suggest_block_shape(
            (ens.n_neurons,) if current is None else tuple(current.ensemble_shape),
            value, limit, rule, block_size=blocks[i].compartment.n_compartments,
            block_shape=None if current is None else tuple(current.shape),
        )
        if ens not in shapes or np.prod(shape.shape) < np.prod(shapes[ens].shape):
            shapes[ens] = shape
    return shapes


def _current_block_shape(model, ens):
    """The block shape nengo-loihi read for ``ens``: from the config of the network
    that holds it (the model's own config is gone once a build has stopped)."""
    top = getattr(model, "toplevel", None)
    networks = [] if top is None else [top] + list(top.all_networks)
    owner = next((net for net in networks if ens in net.ensembles), None)
    config = owner.config if owner is not None else getattr(model, "config", None)
    if config is None:
        return None
    try:
        return config[ens].block_shape
    except Exception:  # the network has no nengo-loihi params
        return None


def _advice(obj, rule, shapes, short=False):
    if isinstance(obj, nengo.Ensemble) and isinstance(shapes[obj], _NoShape):
        found = shapes[obj]
        if short:
            return (f"No block shape helps: every neuron of {obj} receives "
                    f"{found.axons} input axons.")
        return (
            f"No block shape helps: every neuron of {obj} receives {found.axons} input "
            f"axons (a dense connection from that many presynaptic neurons), and a core "
            f"has {found.limit}. Make the presynaptic population smaller (or split it, "
            f"and the connection, into several), or use a decoded connection "
            f"(nengo.Connection(pre, post)) instead of neuron-to-neuron weights."
        )
    if isinstance(obj, nengo.Ensemble):
        shape = shapes[obj]
        if short:
            text = (f"Use net.config[ens].block_shape = {format_block_shape(shape)} "
                    f"for {obj}.")
        else:
            text = (
                f"Split {obj} into smaller blocks of {int(np.prod(shape.shape))} "
                f"neurons, e.g.:\n"
                f"    nengo_loihi.add_params(net)\n"
                f"    net.config[ens].block_shape = {format_block_shape(shape)}\n"
                f"where `ens` is {obj}."
            )
        if rule == "in_axons" and not short:
            text += " Each smaller block then receives fewer input axons."
        return text
    if isinstance(obj, nengo.Connection):
        return (
            f"The block holds the decode neurons of {obj}; split that connection into "
            f"several lower-dimensional connections."
        )
    return "Make the nengo object that produced it smaller."


def _source_objects(model, blocks):
    """The nengo object (an ensemble for neuron blocks) behind each block, or None."""
    objs = []
    for obj, _, _ in _block_origins(model, blocks):
        objs.append(obj.ensemble if isinstance(obj, nengo.ensemble.Neurons) else obj)
    return objs


# ---------------------------------------------------------------- sources
_PRIORITY = (nengo.Ensemble, nengo.Connection, nengo.ensemble.Neurons)


def _priority(obj):
    for prio, cls in enumerate(_PRIORITY):
        if isinstance(obj, cls):
            return prio
    return len(_PRIORITY) - 1 + 0.5


def _block_origins(model, blocks):
    """For each block, ``(nengo object, key in model.objs, size of its block group)``
    of the object that claims it (ensembles first, then connections, then neurons),
    or ``(None, None, 0)``."""
    index = {id(block): i for i, block in enumerate(blocks)}
    best = [(len(_PRIORITY), (None, None, 0))] * len(blocks)
    for obj, parts in model.objs.items():
        prio = _priority(obj)
        for key, value in parts.items():
            group = value if isinstance(value, (list, tuple)) else [value]
            for block in group:
                i = index.get(id(block))
                if i is not None and prio < best[i][0]:
                    best[i] = (prio, (obj, key, len(group)))
    return [origin for _, origin in best]


def _describe(model, obj, key, block, group_size):
    part = _part_text(model, block) if group_size > 1 else ""
    if isinstance(obj, nengo.ensemble.Neurons):
        return f"{obj.ensemble}{part}"
    if isinstance(obj, nengo.Connection) and key == "decoded":
        return f"decode neurons of {obj}{part}"
    return f"{obj}{part}"


def _part_text(model, block):
    ids = model.block_comp_map.get(block)
    if ids is None or len(ids) == 0:
        return ""
    ids = np.fromiter(ids, dtype=np.int64, count=len(ids))
    lo, hi = int(ids[0]), int(ids[-1])
    if len(ids) == 1:
        return f"[{lo}]"
    steps = np.unique(np.diff(ids))
    if len(steps) == 1 and steps[0] == 1:
        return f"[{lo}:{hi + 1}]"
    if len(steps) == 1 and steps[0] > 0:
        return f"[{lo}:{hi + 1}:{int(steps[0])}]"
    return f"[{len(ids)} neurons in {int(ids.min())}..{int(ids.max())}]"


# ---------------------------------------------------------------- rates
def _ensemble_rate_spikes(model, blocks, ensemble_rates):
    """Per-block arrays of expected spikes per step per compartment (or None)."""
    clean = {}
    for ens, values in ensemble_rates.items():
        if not isinstance(ens, nengo.Ensemble):
            raise ExtractionError(
                f"rates keys must be nengo.Ensemble objects, not {ens!r}. Give "
                f"{{ensemble: per-neuron rates in Hz}}."
            )
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (ens.n_neurons,):
            raise ExtractionError(
                f"rates for {ens} have shape {values.shape}; give one rate (Hz) per "
                f"neuron, shape ({ens.n_neurons},)."
            )
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ExtractionError(
                f"rates for {ens} must be finite and non-negative (Hz)."
            )
        on_host = ens in model.host_pre.sig or ens in model.host.sig
        if ens not in model.objs and not on_host:
            raise ExtractionError(
                f"{ens} is not part of this model. Give rates only for ensembles of "
                f"the network the model was built from."
            )
        clean[ens] = values
    block_rates = ensemble_to_block_rates(model, clean)
    return [
        None if block not in block_rates
        else np.asarray(block_rates[block], dtype=np.float64) * model.dt
        for block in blocks
    ]


class _SpikeCounter:
    """Counts the spikes a host input hands to the emulator, without changing them.

    The emulator asks every input for its spikes once per step (``spike_idxs``); an
    instance attribute shadows that method for the run and is removed afterwards.
    """

    def __init__(self, spike_input):
        self.input = spike_input
        self.calls = 0
        n = getattr(spike_input, "n_neurons", None)
        original = getattr(spike_input, "spike_idxs", None)
        self.active = n is not None and callable(original)
        self.counts = np.zeros(int(n) if n is not None else 0, dtype=np.int64)
        if self.active:
            spike_input.spike_idxs = self._counting(original)

    def _counting(self, original):
        def spike_idxs(ti):
            idxs = original(ti)
            self.calls += 1
            np.add.at(self.counts, np.asarray(idxs, dtype=np.intp).ravel(), 1)
            return idxs

        return spike_idxs

    def remove(self):
        if self.active and "spike_idxs" in vars(self.input):
            del self.input.spike_idxs

    def per_step(self):
        """Mean spikes per step of each input channel, or None if never asked."""
        if not self.active or self.calls == 0:
            return None
        return self.counts / self.calls


def _measure(sim, blocks, inputs, duration, progress):
    emulator = sim.sims["emulator"]
    steps = int(round(float(duration) / sim.dt))
    if steps < 1:
        raise ExtractionError(
            f"duration={duration} s is shorter than one time step (dt={sim.dt}); "
            f"measure for at least a few hundred steps."
        )
    counters = [_SpikeCounter(inp) for inp in inputs]
    start = emulator.compartment.spike_count.astype(np.int64)
    try:
        _run_with_progress(sim, steps, progress)
    finally:
        for counter in counters:
            counter.remove()
    counts = emulator.compartment.spike_count.astype(np.int64) - start
    slices = emulator.block_info.slices
    block_spikes = [counts[slices[block]] / steps for block in blocks]
    return block_spikes, [counter.per_step() for counter in counters]


def _run_with_progress(sim, steps, progress):
    chunk = max(1, -(-steps // 10))
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        sim.run_steps(n)
        done += n
        if progress:
            print(
                f"partitioner: measuring spike rates in the emulator: {done}/{steps} "
                f"steps ({100 * done // steps}%)",
                file=sys.stderr, flush=True,
            )


# ------------------------------------------------------------ block tables
def _weight_sizes(synapse):
    """Number of weights of each of ``synapse.weights`` (one array per weight index)."""
    return np.array([w.size for w in synapse.weights or ()], dtype=np.int64)


def _live_axons(synapse, sizes):
    """Which input axons of ``synapse`` get a synapse map id (not dummies).

    Mirrors ``Core.add_synapse``: an axon is a dummy when its compartment base is
    negative or its weights are empty.
    """
    n = synapse.n_axons
    if n == 0:
        return np.zeros(0, dtype=bool)
    widx = (
        np.arange(n) if synapse.axon_to_weight_map is None
        else np.asarray(synapse.axon_to_weight_map, dtype=np.int64)
    )
    live = sizes[widx] > 0
    if synapse.axon_compartment_bases is not None:
        live &= np.asarray(synapse.axon_compartment_bases) >= 0
    return live


def _axon_targets(axon, n_sources):
    """Target axon index of each source compartment (-1: none)."""
    return np.asarray(axon.map_axon(np.arange(n_sources)), dtype=np.int64)


class _Targets:
    """`_axon_targets`, computed once per axon of one extraction."""

    def __init__(self):
        self._known = {}

    def __call__(self, axon, n_sources):
        found = self._known.get(id(axon))
        if found is None or found[0] is not axon:
            found = (axon, _axon_targets(axon, n_sources))
            self._known[id(axon)] = found
        return found[1]


def _axon_entries(block, live, owner, synapse_ids, targets_of=_axon_targets):
    """Output axon config entries of each of ``block``'s axons, as Loihi counts them.

    Per axon: ``(target block, entries on one chip, extra entries on another chip)``.

    * discrete (``pop_type`` 0): one entry per source compartment that maps to a live
      (non-dummy) target axon, and one more each when the target is on another chip;
    * pop16 / pop32: 1 / 2 entries per distinct (population, target axon), and one
      more each on another chip. A compartment's population is the first live
      population target axon it reaches, in axon order: ``build_axon`` gives all
      compartments reaching one target synapse-map entry first the same ``popId``.

    Sources: Intel's DNN compiler for Loihi (NxTF, ``OutputAxonGroup._updateCost``:
    discrete 1, shared 2, +1 when the destination is on another chip) and
    nengo-loihi's ``build_axon`` (``popId``); see ``docs/rules.md``.
    """
    n_comp = block.compartment.n_compartments
    population = np.full(n_comp, -1, dtype=np.int64)
    out = []
    for axon in block.axons:
        synapse = axon.target
        targets = targets_of(axon, n_comp)
        alive = live[id(synapse)]
        sends = np.flatnonzero(targets >= 0)
        sends = sends[alive[targets[sends]]]
        j = _target_block(owner, axon, block)
        if synapse.pop_type == 0:
            out.append((j, sends.size, sends.size))
            continue
        # A target axon is identified by (synapse, axon index).
        key = synapse_ids[id(synapse)] * (1 << 32) + targets[sends]
        fresh = sends[population[sends] < 0]
        population[fresh] = key[population[sends] < 0]
        pairs = _distinct_pairs(population[sends], key)
        per_pair = 2 if synapse.pop_type == 32 else 1
        out.append((j, per_pair * pairs, pairs))
    return out


def _distinct_pairs(a, b):
    """Number of distinct ``(a[i], b[i])`` pairs."""
    if a.size == 0:
        return 0
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    return 1 + int(np.count_nonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1])))


def _entry_matrices(entries, n_blocks):
    """``(out_entries, interchip_entries)`` CSR matrices from `_axon_entries` lists.

    Row ``i``, column ``j``: entries block ``i``'s axons into block ``j`` take on one
    chip, and the extra entries they take when ``j`` is on another chip (none on the
    diagonal: a block is always on its own chip).
    """
    rows, cols, base, extra = [], [], [], []
    for i, block_entries in enumerate(entries):
        for j, e, x in block_entries:
            rows.append(i)
            cols.append(j)
            base.append(e)
            extra.append(0 if j == i else x)
    shape = (n_blocks, n_blocks)
    out = _coo_csr(rows, cols, base, shape)
    interchip = _coo_csr(rows, cols, extra, shape)
    out.eliminate_zeros()
    interchip.eliminate_zeros()
    return out, interchip


def _format_bits(cfg, idx_bits=None):
    """``(bits per weight, weights per synapse entry)`` of format ``cfg`` (its index
    field widened to at least ``idx_bits`` bits if given, as
    `formats.widened_format` would, without copying the format)."""
    real_idx_bits = cfg.real_idx_bits
    if idx_bits is not None and real_idx_bits < idx_bits:
        real_idx_bits = SynapseConfig.INDEX_BITS_MAP[formats.index_bits_code(idx_bits)]
    bits_per_weight = cfg.real_weight_bits + cfg.delay_bits + cfg.tag_bits
    if cfg.compression == 0:
        bits_per_weight += real_idx_bits
    elif cfg.compression != 3:
        raise ExtractionError(
            f"Synapse compression {cfg.compression} is not modelled (nengo-loihi only "
            f"uses 0 and 3)."
        )
    return bits_per_weight, cfg.n_synapses + 1


def _bits_per_axon(n_weights, bits_per_weight, per_entry):
    """Vectorized ``SynapseConfig.bits_per_axon`` over arrays of weight counts (the
    format's `_format_bits` given per element or once)."""
    overhead = 4 + 6  # synapse_idx_bits + n_synapses_bits
    full, rest = np.divmod(np.asarray(n_weights, dtype=np.int64), per_entry)
    full_bits = -64 * (-(per_entry * bits_per_weight + overhead) // 64)
    rest_bits = np.where(rest > 0, -64 * (-(rest * bits_per_weight + overhead) // 64), 0)
    return full * full_bits + rest_bits


def _resources(blocks, sizes, live, entries):
    """(n_blocks, 4) resources and (n_blocks,) shared synapse bits.

    ``sizes`` and ``live`` map ``id(synapse)`` to its weight counts and live axons;
    ``entries`` holds each block's `_axon_entries`.
    """
    table = np.zeros((len(blocks), 4), dtype=np.int64)
    table[:, 0] = [block.compartment.n_compartments for block in blocks]
    table[:, 2] = [sum(e for _, e, _ in block_entries) for block_entries in entries]
    # Every synapse's weight counts per axon, with its block and format, bits summed
    # in one array operation.
    owner, counts, own, wide, per_entry = [], [], [], [], []
    for i, block in enumerate(blocks):
        in_axons = 0
        for synapse in block.synapses:
            in_axons += int(np.count_nonzero(live[id(synapse)])) * synapse.idxs_per_synapse()
            cfg = formats.original_format(synapse)
            bits, per = _format_bits(cfg)
            n_weights = sizes[id(synapse)]
            owner.append(np.full(n_weights.size, i))
            counts.append(n_weights)
            own.append(np.full(n_weights.size, bits))
            wide.append(np.full(n_weights.size, _format_bits(cfg, _LIMITS.shared_index_bits)[0]))
            per_entry.append(np.full(n_weights.size, per))
        table[i, 1] = in_axons
    shared = np.zeros(len(blocks), dtype=np.int64)
    if counts:
        owner, counts, per_entry = (np.concatenate(a) for a in (owner, counts, per_entry))
        for column, bits in ((table[:, 3], own), (shared, wide)):
            per_axon = _bits_per_axon(counts, np.concatenate(bits), per_entry)
            np.add.at(column, owner, per_axon)
    return table, shared


class _Interner:
    """Gives each distinct hashable key a dense integer id, in order of first use."""

    def __init__(self):
        self.ids = {}

    def __call__(self, key):
        return self.ids.setdefault(key, len(self.ids))

    def __len__(self):
        return len(self.ids)


def _pairs_csr(rows, cols, n_rows, n_cols):
    """Boolean CSR with True at each distinct (row, col) pair."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if n_cols == 0 or rows.size == 0:
        return sp.csr_matrix((n_rows, n_cols), dtype=bool)
    code = np.unique(rows * n_cols + cols)
    r, c = np.divmod(code, n_cols)
    return sp.csr_matrix((np.ones(code.size, dtype=bool), (r, c)), shape=(n_rows, n_cols))


def _row_ids(keys):
    """Dense ids of the distinct rows of a 2-D array, and how many there are.

    Columns are ranked one at a time and combined into one integer per row, which
    is much faster than ``np.unique(axis=0)`` on millions of rows.
    """
    code = np.zeros(keys.shape[0], dtype=np.int64)
    radix = 1
    for column in keys.T:
        values, rank = np.unique(column, return_inverse=True)
        radix *= len(values)
        if radix >= 2 ** 62:  # too many combinations for one integer
            unique, inverse = np.unique(keys, axis=0, return_inverse=True)
            return inverse.reshape(-1), unique.shape[0]
        code = code * len(values) + rank.reshape(-1)
    unique, inverse = np.unique(code, return_inverse=True)
    return inverse.reshape(-1), unique.size


def _distinct_rows_csr(block_ids, keys, n_blocks):
    """Which distinct key rows each block uses, as a boolean CSR."""
    if keys.shape[0] == 0:
        return sp.csr_matrix((n_blocks, 0), dtype=bool)
    ids, n_ids = _row_ids(keys)
    return _pairs_csr(block_ids, ids, n_blocks, n_ids)


def _compartment_configs(blocks):
    """compartment_cfgs and vth_cfgs matrices, vectorized over all compartments."""
    n = len(blocks)
    sizes = np.array([b.compartment.n_compartments for b in blocks], dtype=np.int64)
    block_ids = np.repeat(np.arange(n), sizes)
    if n == 0:
        empty = np.zeros((0, 4))
        return _distinct_rows_csr(block_ids, empty, 0), _distinct_rows_csr(
            block_ids, empty[:, :1], 0)
    profiles = np.concatenate([
        np.column_stack((c.decay_u, c.decay_v, c.refract_delay, c.enable_noise))
        .astype(np.float64)
        for c in (b.compartment for b in blocks)
    ])
    try:
        vth = np.concatenate([vth_to_manexp(b.compartment.vth)[0] for b in blocks])
    except AssertionError as err:
        raise ExtractionError(
            "A block's thresholds are outside Loihi's range (vth_to_manexp failed); "
            "the model cannot be built for hardware."
        ) from err
    return (
        _distinct_rows_csr(block_ids, profiles, n),
        _distinct_rows_csr(block_ids, vth.reshape(-1, 1).astype(np.int64), n),
    )


def _synapse_configs(blocks):
    """synapse_cfgs, synapse_cfgs_shared and stdp_pre_cfgs matrices."""
    # Own and widened formats share one id space: a core's format table holds both
    # kinds, and an own format may equal another block's widened one.
    formats_ids = _Interner()
    interners = {"synapse_cfgs": formats_ids, "synapse_cfgs_shared": formats_ids,
                 "stdp_pre_cfgs": _Interner()}
    pairs = {k: ([], []) for k in interners}

    def add(kind, row, key):
        pairs[kind][0].append(row)
        pairs[kind][1].append(interners[kind](key))

    for i, block in enumerate(blocks):
        for synapse in block.synapses:
            cfg = formats.original_format(synapse)
            add("synapse_cfgs", i, formats.format_key(cfg))
            wide = formats.widened_format(cfg, _LIMITS.shared_index_bits)
            add("synapse_cfgs_shared", i, formats.format_key(wide))
            if synapse.learning:
                mag_int, mag_frac = tracing_mag_int_frac(synapse.tracing_mag)
                add("stdp_pre_cfgs", i, (int(synapse.tracing_tau), mag_int, mag_frac))
    return {
        kind: _pairs_csr(rows, cols, len(blocks), len(interners[kind]))
        for kind, (rows, cols) in pairs.items()
    }


def _core_keys(blocks):
    """core_key (vmin, vmax) and noise_key ids; -1 where noise is off everywhere."""
    core_ids, noise_ids = _Interner(), _Interner()
    core_key = np.empty(len(blocks), dtype=np.int64)
    noise_key = np.full(len(blocks), -1, dtype=np.int64)
    for i, block in enumerate(blocks):
        c = block.compartment
        core_key[i] = core_ids((float(c.vmin), float(c.vmax)))
        if np.any(c.enable_noise):
            noise_key[i] = noise_ids(
                (float(c.noise_exp), float(c.noise_offset), int(c.noise_at_membrane))
            )
    return core_key, noise_key


def _flags(blocks):
    """learning, pop_sender and pop16_in_limit arrays."""
    learning = np.array([any(s.learning for s in b.synapses) for b in blocks], dtype=bool)
    pop_sender = np.array(
        [any(ax.target.pop_type in (16, 32) for ax in b.axons) for b in blocks],
        dtype=bool,
    )
    pop16 = np.array(
        [min((2 ** s.axon_bits() for s in b.synapses if s.pop_type == 16), default=0)
         for b in blocks],
        dtype=np.int64,
    )
    return learning, pop_sender, pop16


# ------------------------------------------------------------------ edges
def _synapse_owner(blocks):
    owner = {}
    for i, block in enumerate(blocks):
        for synapse in block.synapses:
            owner[id(synapse)] = i
    return owner


def _target_block(owner, axon, source):
    j = owner.get(id(axon.target))
    if j is None:
        raise ExtractionError(
            f"{axon} of {source} targets {axon.target}, which belongs to no block of "
            f"the model. The model is inconsistent; rebuild it from the network."
        )
    return j


def _axon_spikes(axon, n_sources, spikes_per_step, targets_of=_axon_targets):
    """Expected spikes per step on ``axon``: every axon active if no rates."""
    if spikes_per_step is None:
        return float(axon.n_axons)
    targets = targets_of(axon, n_sources)
    return float(spikes_per_step[targets >= 0].sum())


def _block_edges(blocks, owner, block_spikes, targets_of=_axon_targets):
    rows, cols, axons, spikes = [], [], [], []
    for i, block in enumerate(blocks):
        n_comp = block.compartment.n_compartments
        for axon in block.axons:
            j = _target_block(owner, axon, block)
            if j == i:
                continue  # as estimate_interblock_activity: self-connections stay on core
            rows.append(i)
            cols.append(j)
            axons.append(axon.n_axons)
            spikes.append(_axon_spikes(axon, n_comp, block_spikes[i], targets_of))
    n = len(blocks)
    return _coo_csr(rows, cols, axons, (n, n)), _coo_csr(rows, cols, spikes, (n, n))


def _host_axons(inputs):
    """``(k, input, axon, n_sources)`` for every axon of every host input ``k``."""
    for k, inp in enumerate(inputs):
        for axon in inp.axons:
            n_sources = getattr(inp, "n_neurons", None)
            if n_sources is None:
                n_sources = len(axon.compartment_map)
            yield k, inp, axon, n_sources


def _input_edges(inputs, owner, input_spikes, n_blocks, targets_of=_axon_targets):
    rows, cols, axons, spikes = [], [], [], []
    for k, inp, axon, n_sources in _host_axons(inputs):
        rows.append(k)
        cols.append(_target_block(owner, axon, inp))
        axons.append(axon.n_axons)
        spikes.append(_axon_spikes(axon, n_sources, input_spikes[k], targets_of))
    shape = (len(inputs), n_blocks)
    return _coo_csr(rows, cols, axons, shape), _coo_csr(rows, cols, spikes, shape)


def _coo_csr(rows, cols, values, shape):
    """CSR summing duplicate entries; keeps explicit zeros so both traffic matrices
    share the same edges."""
    return sp.coo_matrix(
        (np.asarray(values, dtype=np.float64),
         (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
        shape=shape,
    ).tocsr()


def _input_labels(inputs, owner, sources):
    labels = []
    for inp in inputs:
        targets = sorted({sources[owner[id(ax.target)]] for ax in inp.axons
                          if id(ax.target) in owner})
        name = f"{type(inp).__name__}({inp.label})" if inp.label else type(inp).__name__
        labels.append(f"{name} -> {', '.join(targets)}" if targets else name)
    return labels


# ---------------------------------------------------------- synaptic work
class _SynapseWork:
    """Synapses reached and synapse memory words read by one spike on each input axon
    of every synapse, in two flat arrays (each synapse's axons from ``start[id]``).

    A spike on axon ``a`` (with any atom) triggers one synaptic operation per weight
    of ``synapse.axon_weights_indices(a)``, i.e. the row length of its weight array
    (its weight index is ``axon_to_weight_map[a]``), and reads the 64-bit words
    that hold that row in the synapse's own format. Dummy axons (negative
    compartment base, or no weights) cost nothing. The words of all synapses are
    computed in one array operation.
    """

    def __init__(self, synapses):
        self.start, fans, bits = {}, [], []
        offset = 0
        for synapse in synapses:
            self.start[id(synapse)] = offset
            fan = _synapse_fan(synapse)
            offset += fan.size
            fans.append(fan)
            bits.append(_format_bits(formats.original_format(synapse))
                        if fan.size and synapse.weights else (0, 1))
        self.n_axons = np.array([f.size for f in fans], dtype=np.int64)
        fan = np.concatenate(fans) if fans else np.zeros(0, dtype=np.int64)
        bits_per_weight = np.repeat(np.array([b for b, _ in bits], dtype=np.int64),
                                    self.n_axons)
        per_entry = np.repeat(np.array([e for _, e in bits], dtype=np.int64), self.n_axons)
        self.fan = fan.astype(np.float64)
        self.words = _bits_per_axon(fan, bits_per_weight, per_entry) / 64.0


def _synapse_fan(synapse):
    """Weights reached by one spike on each input axon of ``synapse`` (int64)."""
    n = synapse.n_axons
    if n == 0 or not synapse.weights:
        return np.zeros(n, dtype=np.int64)
    rows = np.array([w.shape[1] if w.ndim == 2 else w.size for w in synapse.weights],
                    dtype=np.int64)
    widx = (
        np.arange(n) if synapse.axon_to_weight_map is None
        else np.asarray(synapse.axon_to_weight_map, dtype=np.int64)
    )
    fan = rows[widx]
    if synapse.axon_compartment_bases is not None:
        fan = np.where(np.asarray(synapse.axon_compartment_bases) >= 0, fan, 0)
    return fan


def _axons_work(axons, work, targets_of):
    """``(synops, memory words)`` per step that each of ``axons`` causes in its target.

    ``axons``: ``(axon, n_sources, spikes_per_step)`` triples. With rates, each
    source compartment's spikes per step times what one spike on its target axon
    costs. Without (``spikes_per_step`` None: every axon active each step, as
    `_axon_spikes`), one spike on every distinct target axon the compartments map
    to. Summed over all axons at once.
    """
    n = len(axons)
    owners, hits, rates, counted = [], [], [], []
    for k, (axon, n_sources, spikes_per_step) in enumerate(axons):
        targets = targets_of(axon, n_sources)
        mapped = targets >= 0
        hit = targets[mapped]
        if hit.size and hit.max() >= axon.target.n_axons:
            raise ExtractionError(
                f"{axon} maps compartments to axon {int(hit.max())} of {axon.target}, "
                f"which has {axon.target.n_axons} axons. The model is inconsistent; "
                f"rebuild it from the network."
            )
        hits.append(hit + work.start[id(axon.target)])
        owners.append(np.full(hit.size, k, dtype=np.int64))
        if spikes_per_step is None:
            rates.append(np.ones(hit.size))
            counted.append(np.zeros(hit.size, dtype=bool))
        else:
            rates.append(np.asarray(spikes_per_step, dtype=np.float64)[mapped])
            counted.append(np.ones(hit.size, dtype=bool))
    if not hits:
        return np.zeros(n), np.zeros(n)
    owner, hit = np.concatenate(owners), np.concatenate(hits)
    rate, counted = np.concatenate(rates), np.concatenate(counted)
    # Without rates a target axon counts once however many compartments reach it.
    once = np.flatnonzero(~counted)
    pairs = owner[once] * max(work.fan.size, 1) + hit[once]
    _, first = np.unique(pairs, return_index=True)
    keep = counted.copy()
    keep[once[first]] = True
    owner, hit, rate = owner[keep], hit[keep], rate[keep]
    return (np.bincount(owner, rate * work.fan[hit], minlength=n),
            np.bincount(owner, rate * work.words[hit], minlength=n))


def _work_edges(blocks, inputs, owner, block_spikes, input_spikes, targets_of):
    """Synaptic ops and memory words per step on every edge (self-loops kept), for
    block-to-block and host-input edges: four CSR matrices."""
    work = _SynapseWork([s for b in blocks for s in b.synapses])
    n = len(blocks)
    rows, cols, axons = [], [], []
    for i, block in enumerate(blocks):
        n_comp = block.compartment.n_compartments
        for axon in block.axons:
            rows.append(i)
            cols.append(_target_block(owner, axon, block))
            axons.append((axon, n_comp, block_spikes[i]))
    in_rows, in_cols, in_axons = [], [], []
    for k, inp, axon, n_sources in _host_axons(inputs):
        in_rows.append(k)
        in_cols.append(_target_block(owner, axon, inp))
        in_axons.append((axon, n_sources, input_spikes[k]))
    ops, reads = _axons_work(axons, work, targets_of)
    in_ops, in_reads = _axons_work(in_axons, work, targets_of)
    shape, in_shape = (n, n), (len(inputs), n)
    return (
        _coo_csr(rows, cols, ops, shape), _coo_csr(rows, cols, reads, shape),
        _coo_csr(in_rows, in_cols, in_ops, in_shape),
        _coo_csr(in_rows, in_cols, in_reads, in_shape),
    )


def _updates(blocks):
    """Compartment updates per step of each block: every compartment, every step."""
    return np.array([b.compartment.n_compartments for b in blocks], dtype=np.float64)


# ------------------------------------------------------------------ graph
def _graph(model, blocks, inputs, block_spikes, input_spikes, mode):
    synapses = [s for b in blocks for s in b.synapses]
    sizes = {id(s): _weight_sizes(s) for s in synapses}
    live = {id(s): _live_axons(s, sizes[id(s)]) for s in synapses}
    owner = _synapse_owner(blocks)
    synapse_ids = {id(s): k for k, s in enumerate(synapses)}
    targets_of = _Targets()
    entries = [_axon_entries(b, live, owner, synapse_ids, targets_of) for b in blocks]
    resources, shared = _resources(blocks, sizes, live, entries)
    out_entries, interchip_entries = _entry_matrices(entries, len(blocks))
    compartment_cfgs, vth_cfgs = _compartment_configs(blocks)
    configs = {"compartment_cfgs": compartment_cfgs, "vth_cfgs": vth_cfgs}
    configs.update(_synapse_configs(blocks))
    assert set(configs) == set(CONFIG_KINDS)
    core_key, noise_key = _core_keys(blocks)
    learning, pop_sender, pop16 = _flags(blocks)
    axons, spikes = _block_edges(blocks, owner, block_spikes, targets_of)
    input_axons, input_spike_matrix = _input_edges(inputs, owner, input_spikes, len(blocks),
                                                   targets_of)
    sources = block_sources(model)
    synops, synmem_reads, input_synops, input_synmem_reads = _work_edges(
        blocks, inputs, owner, block_spikes, input_spikes, targets_of)
    return TrafficGraph(
        labels=[str(b) for b in blocks],
        sources=sources,
        resources=resources,
        shared_synapse_bits=shared,
        configs=configs,
        core_key=core_key,
        noise_key=noise_key,
        learning=learning,
        pop_sender=pop_sender,
        pop16_in_limit=pop16,
        axons=axons,
        spikes=spikes,
        out_entries=out_entries,
        interchip_entries=interchip_entries,
        input_labels=_input_labels(inputs, owner, sources),
        input_axons=input_axons,
        input_spikes=input_spike_matrix,
        dt=float(model.dt),
        rates=mode,
        synops=synops,
        synmem_reads=synmem_reads,
        input_synops=input_synops,
        input_synmem_reads=input_synmem_reads,
        updates=_updates(blocks),
        work="synapses",
    )
