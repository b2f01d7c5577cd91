"""nengo-loihi allocators that place several blocks per core, following a `Plan`.

`board_from_plan` turns a plan into the `nengo_loihi.hardware.nxsdk_objects.Board`
that nengo-loihi validates and builds. `MinCutAllocator` makes the plan itself
(extract, then partition); `PlanAllocator` replays a saved plan. Both plug into
nengo-loihi through ``hardware_options``::

    nengo_loihi.Simulator(
        net, target="loihi",
        hardware_options={"allocator": MinCutAllocator(), "n_chips": 4},
    )

Two per-core settings are adjusted on the model's blocks while a board is emitted,
and put back at the start of the next emission, so that allocating a model twice
measures and emits the same thing:

* synapse formats of every block after the first on a core are widened copies (see
  `partitioner.formats`);
* blocks with no compartment noise enabled take the noise settings (``noise_exp``,
  ``noise_offset``, ``noise_at_membrane``) of their core, which ``build_core``
  requires to be equal on a core. With noise disabled these settings have no effect
  on the simulation.
"""

from __future__ import annotations

import logging
import os
import weakref

import nengo
import numpy as np
from nengo_loihi.hardware.allocators import Allocator
from nengo_loihi.hardware.nxsdk_objects import Board

from partitioner import formats
from partitioner.emit import fill_core
from partitioner.errors import (
    BlockTooLargeError,
    CoreRuleError,
    ExtractionError,
    InfeasibleError,
    PlanError,
)
from partitioner.extract import extract
from partitioner.hardware import CoreLimits, get_board
from partitioner.packing import check_plan
from partitioner.engine import partition
from partitioner.plan import Plan

__all__ = [
    "board_from_plan",
    "restore_model",
    "restore_noise",
    "pins_to_blocks",
    "MinCutAllocator",
    "PlanAllocator",
]

logger = logging.getLogger(__name__)

NOISE_FIELDS = ("noise_exp", "noise_offset", "noise_at_membrane")

# Original noise settings of blocks whose inert settings were changed, keyed by block.
_ORIGINAL_NOISE = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- shared settings
def _noise_setting(block):
    return tuple(getattr(block.compartment, name) for name in NOISE_FIELDS)


def _set_noise(block, setting):
    _ORIGINAL_NOISE.setdefault(block, _noise_setting(block))
    for name, value in zip(NOISE_FIELDS, setting):
        setattr(block.compartment, name, value)


def restore_noise(blocks):
    """Put back the original noise settings of ``blocks`` changed by an emission.

    Parameters
    ----------
    blocks : iterable of LoihiBlock
    """
    for block in blocks:
        original = _ORIGINAL_NOISE.pop(block, None)
        if original is not None:
            for name, value in zip(NOISE_FIELDS, original):
                setattr(block.compartment, name, value)


def restore_model(model):
    """Undo every change an emission made to ``model``'s blocks (formats and noise).

    Parameters
    ----------
    model : nengo_loihi.builder.Model
    """
    formats.restore_formats(model.blocks)
    restore_noise(model.blocks)


def _noise_inert(block):
    return not np.any(block.compartment.enable_noise)


def _harmonize_noise(blocks, inert, where):
    """Give the inert blocks of one core the noise setting of its noisy blocks."""
    noisy = [b for b, off in zip(blocks, inert) if not off]
    reference = noisy[0] if noisy else blocks[0]
    setting = _noise_setting(reference)
    for block in noisy[1:]:
        if _noise_setting(block) != setting:
            raise CoreRuleError(
                f"{where}: blocks {reference.label!r} and {block.label!r} both use "
                f"compartment noise but with different settings "
                f"({dict(zip(NOISE_FIELDS, setting))} vs "
                f"{dict(zip(NOISE_FIELDS, _noise_setting(block)))}); a core has one "
                f"noise setting. Put them on different cores or re-plan."
            )
    for block, off in zip(blocks, inert):
        if off and _noise_setting(block) != setting:
            _set_noise(block, setting)


def _check_voltage_limits(blocks, where):
    first = blocks[0].compartment
    for block in blocks[1:]:
        comp = block.compartment
        if comp.vmin != first.vmin or comp.vmax != first.vmax:
            raise CoreRuleError(
                f"{where}: blocks {blocks[0].label!r} and {block.label!r} have different "
                f"voltage limits (vmin/vmax {first.vmin}/{first.vmax} vs "
                f"{comp.vmin}/{comp.vmax}); a core has one. Put them on different "
                f"cores or re-plan."
            )


def _widen_formats(block, index_bits):
    """Give every synapse of ``block`` a format addressing ``index_bits`` bits."""
    for synapse in block.synapses:
        wide = formats.widened_format(formats.original_format(synapse), index_bits)
        if wide is not synapse.synapse_cfg:
            formats.set_format(synapse, wide)


# ---------------------------------------------------------------- emission
def _check_sizes(blocks, plan, graph):
    if plan.n_blocks != len(blocks):
        raise PlanError(
            f"The plan places {plan.n_blocks} blocks but the model has {len(blocks)}. "
            f"Make a plan for this model with partitioner.partition()."
        )
    if graph is not None and graph.n_blocks != len(blocks):
        raise PlanError(
            f"The traffic graph has {graph.n_blocks} blocks but the model has "
            f"{len(blocks)}. Extract the graph from this model."
        )


def _chip_cores(plan):
    """Cores of each non-empty chip, in plan core order, chips in index order."""
    order = np.argsort(plan.core_chip, kind="stable")
    bounds = np.searchsorted(plan.core_chip[order], np.arange(plan.n_chips + 1))
    chips = [order[bounds[k]:bounds[k + 1]] for k in range(plan.n_chips)]
    return [cores for cores in chips if cores.size]


def board_from_plan(model, plan, graph=None, limits=None):
    """Emit the nengo-loihi board that realizes ``plan`` for ``model``.

    Chips are created in plan chip order, cores in plan core order within their chip,
    and each core's blocks in their on-core order (the first at compartment offset 0).
    Chips of the plan that hold no core are left out (NxSDK rejects empty chips), so
    board chip ``k`` is the plan's ``k``-th non-empty chip. The plan's board positions
    (`Plan.chip_position`) are not part of a nengo-loihi board.

    The model's blocks are adjusted for sharing cores (see the module docstring);
    changes from an earlier emission are undone first.

    Parameters
    ----------
    model : nengo_loihi.builder.Model
        The model whose ``blocks`` the plan places (block ``i`` is the ``i``-th block).
    plan : Plan
        Where each block goes. It is not checked against the per-core rules here; use
        `partitioner.packing.check_plan` (as `PlanAllocator` does).
    graph : TrafficGraph, optional
        The model's traffic graph. If given, its ``noise_key`` says which blocks have
        no compartment noise; otherwise that is read from the blocks.
    limits : CoreLimits, optional
        Core limits; their ``shared_index_bits`` is the synapse index width given to
        blocks after the first on a core. Loihi 1 defaults if omitted.

    Returns
    -------
    nengo_loihi.hardware.nxsdk_objects.Board

    Raises
    ------
    PlanError
        The plan or graph has a different number of blocks than the model.
    CoreRuleError
        Blocks on one core have different voltage limits, or different noise settings
        while both use noise.
    """
    limits = CoreLimits() if limits is None else limits
    blocks = list(model.blocks)
    _check_sizes(blocks, plan, graph)
    restore_model(model)
    if graph is not None:
        inert = np.asarray(graph.noise_key) < 0
    else:
        inert = np.array([_noise_inert(b) for b in blocks], dtype=bool)

    board = Board()
    base = Allocator()
    for inp in model.inputs:
        base.input_to_board(inp, board)

    for cores in _chip_cores(plan):
        chip = board.new_chip()
        for c in cores:
            idx = plan.core_blocks(int(c))
            core_blocks = [blocks[i] for i in idx]
            where = f"core {int(c)} (chip {int(plan.core_chip[c])})"
            _check_voltage_limits(core_blocks, where)
            _harmonize_noise(core_blocks, inert[idx], where)
            for block in core_blocks[1:]:
                _widen_formats(block, limits.shared_index_bits)
            fill_core(chip.new_core(), core_blocks)

    board.probes.extend(model.probes)
    logger.info(
        "Plan allocation: %d blocks on %d cores across %d chips",
        plan.n_blocks, plan.n_cores, board.n_chips,
    )
    return board


# ---------------------------------------------------------------- pins
def _model_blocks_of(model, obj, block_index):
    """Indices of the model blocks nengo-loihi built for ``obj`` (sorted, unique)."""
    found = set()
    for value in model.objs.get(obj, {}).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            try:
                i = block_index.get(v)
            except TypeError:  # unhashable entry, not a block
                continue
            if i is not None:
                found.add(i)
    return sorted(found)


def pins_to_blocks(pins, model):
    """Translate pins on nengo objects into pins on block indices.

    Parameters
    ----------
    pins : dict or None
        Maps a `nengo.Ensemble`, its ``neurons``, or a `nengo.Connection` (whose
        decode neurons nengo-loihi puts on chip) to a chip index. An ``int`` key is
        taken as a block index already.
    model : nengo_loihi.builder.Model

    Returns
    -------
    dict of int -> int or None
        Block index to chip, for every block built for a pinned object; None when
        ``pins`` is None.

    Raises
    ------
    PlanError
        A pinned object has no block on the chip (unknown to this model, or run off
        chip), two pins disagree on a block, or a chip index is not an integer.

    Notes
    -----
    A connection nengo-loihi replaced by others while building (a learning
    connection, one to the host, one through a removed passthrough node) pins the
    blocks of its replacements.
    """
    if pins is None:
        return None
    blocks = list(model.blocks)
    block_index = {block: i for i, block in enumerate(blocks)}
    out = {}
    for obj, chip in pins.items():
        if isinstance(chip, (bool, np.bool_)) or not isinstance(chip, (int, np.integer)):
            raise PlanError(f"Pin for {obj}: chip must be an integer index, not {chip!r}.")
        idxs = _pinned_block_indices(model, obj, block_index)
        for i in idxs:
            if out.get(i, int(chip)) != int(chip):
                raise PlanError(
                    f"Block {i} ({blocks[i].label}) is pinned to chips "
                    f"{out[i]} and {int(chip)}. Pin each object to one chip."
                )
            out[i] = int(chip)
    return out


def _pinned_block_indices(model, obj, block_index):
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_)):
        if not 0 <= obj < len(block_index):
            raise PlanError(
                f"Pinned block index {obj} is out of range: the model has "
                f"{len(block_index)} blocks."
            )
        return [int(obj)]
    if isinstance(obj, nengo.ensemble.Neurons):
        obj = obj.ensemble
    idxs = _model_blocks_of(model, obj, block_index)
    if not idxs and isinstance(obj, nengo.Connection):
        # nengo-loihi built connections that replace this one: pin theirs.
        found = set()
        for derived in _derived_connections(model, obj):
            found.update(_model_blocks_of(model, derived, block_index))
        idxs = sorted(found)
    if not idxs:
        raise PlanError(
            f"Cannot pin {obj}: nengo-loihi built no block on the chip for it in this "
            f"model ({_why_no_block(model, obj)}). Pin ensembles, or connections whose "
            f"decode neurons run on chip."
        )
    return idxs


def _derived_connections(model, conn):
    """Connections nengo-loihi built in place of the user's ``conn``.

    * A connection whose output leaves the chip (to the host, or a learning
      connection, whose decoders the host adjusts) is built as a probe on its
      pre-ensemble and a connection from that ensemble to the probe
      (``model.nengo_probe_conns``); the probe inherits the connection's seed.
    * A connection into or out of a passthrough node that nengo-loihi removed is
      replaced by direct connections from the same pre object (into the node) or to
      the same post object (out of it).
    """
    derived = []
    seed = model.seeds.get(conn)
    for probe, made in getattr(model, "nengo_probe_conns", {}).items():
        if probe in getattr(model, "chip2host_params", {}) and (
            probe.target is conn.pre
            and seed is not None and model.seeds.get(probe) == seed
        ):
            derived.append(made)
    passthrough = getattr(getattr(model, "split", None), "passthrough", None)
    if passthrough is not None and conn in passthrough.to_remove:
        for cluster in set(getattr(passthrough, "clusters", {}).values()):
            if conn in cluster.conns_in:
                derived += [c for c in passthrough.to_add if c.pre is conn.pre]
            elif conn in cluster.conns_out:
                derived += [c for c in passthrough.to_add if c.post is conn.post]
            elif conn in cluster.conns_mid:
                pres = {c.pre for c in cluster.conns_in}
                posts = {c.post for c in cluster.conns_out}
                derived += [c for c in passthrough.to_add
                            if c.pre in pres and c.post in posts]
    return derived


def _why_no_block(model, obj):
    if isinstance(obj, nengo.Node):
        return "nodes run on the host"
    if isinstance(obj, nengo.Probe):
        return "probes are read on the host"
    if isinstance(obj, (nengo.Ensemble, nengo.Connection)) and (
        obj in getattr(model.host, "sig", {}) or obj in getattr(model.host_pre, "sig", {})
    ):
        return "nengo-loihi runs it on the host"
    return "it is not part of the network this model was built from, or runs on the host"


# ---------------------------------------------------------------- allocators
def _refusal(model, graph, board):
    """`BlockTooLargeError` naming the ensemble of the first block that fits no core,
    with a block shape that keeps a convolutional layer's tiles (`fitting.refusal`)."""
    from partitioner.fitting import refusal

    return refusal(model, graph, get_board(board).limits)


def _check_rates(rates):
    if isinstance(rates, str) and rates == "measured":
        raise ExtractionError(
            "MinCutAllocator cannot measure rates: an allocator only sees the built "
            "model, not the network to run. Measure them first with "
            "graph = partitioner.extract(network, rates='measured'), make a plan with "
            "partitioner.partition(graph, ...), and pass it as "
            "hardware_options={'allocator': PlanAllocator(plan)}."
        )
    return rates


class MinCutAllocator(Allocator):
    """Pack blocks several per core and cut them across chips to minimize traffic.

    Parameters
    ----------
    strategy : str, optional
        Partitioning strategy (see `partitioner.engine.partition`), e.g. ``"metis"``.
    rates : dict or None, optional
        None to weigh traffic by axon count, or a dict mapping `nengo.Ensemble` to
        its neurons' firing rates (as nengo-loihi's ``GreedyInterchip`` takes).
        ``"measured"`` is not possible here: measure with
        ``partitioner.extract(network, rates="measured")`` and use `PlanAllocator`.
    board : str or BoardSpec, optional
        Board to plan for.
    seed : int, optional
        Seed of the strategy; the same model and seed give the same board.
    spread : bool, optional
        Spread cores over all ``n_chips`` chips instead of using as few as possible.
    pins : dict, optional
        Maps an Ensemble or Connection to the chip index it must go on.
    progress : bool, optional
        Report progress while partitioning.
    **options
        Further options for the strategy.

    Attributes
    ----------
    last_plan : Plan or None
        Plan of the latest allocation.
    last_graph : TrafficGraph or None
        Traffic graph of the latest allocation.
    """

    def __init__(self, strategy="metis", rates=None, board="nahuku32", seed=0,
                 spread=False, pins=None, progress=False, **options):
        super().__init__()
        self.strategy = strategy
        self.rates = _check_rates(rates)
        self.board = board
        self.seed = seed
        self.spread = spread
        self.pins = pins
        self.progress = progress
        self.options = options
        self.last_plan = None
        self.last_graph = None

    def make_plan(self, model, n_chips):
        """Extract ``model``'s traffic graph and partition it; returns ``(graph, plan)``.

        Raises
        ------
        BlockTooLargeError
            A block alone breaks a per-core rule. The error names the block, the
            nengo object it came from, the rule, the value and the limit, and suggests
            a ``nengo_loihi.BlockShape`` (rows x columns x channels tiles for a
            convolutional layer) estimated from the model; ``partitioner fit`` finds
            shapes checked by a build.
        InfeasibleError
            The model does not fit ``n_chips`` chips.
        """
        restore_model(model)
        graph = extract(model, rates=self.rates)
        try:
            plan = partition(
                graph, n_chips=n_chips, board=self.board, strategy=self.strategy,
                seed=self.seed, spread=self.spread, pins=pins_to_blocks(self.pins, model),
                progress=self.progress, **self.options,
            )
        except BlockTooLargeError as err:
            raise _refusal(model, graph, self.board) or err from err
        return graph, plan

    def __call__(self, model, n_chips):
        """Return the nengo-loihi `Board` for ``model`` on at most ``n_chips`` chips."""
        graph, plan = self.make_plan(model, n_chips)
        self.last_graph, self.last_plan = graph, plan
        return board_from_plan(model, plan, graph, limits=get_board(self.board).limits)


class PlanAllocator(Allocator):
    """Replay a saved plan.

    Parameters
    ----------
    plan : Plan or str or os.PathLike
        A plan, or the path of one saved with `Plan.save`.
    board : str or BoardSpec, optional
        Board to check the plan against; by default the board the plan names. Give
        it when the plan was made for a board object of your own.

    Attributes
    ----------
    plan : Plan
    last_graph : TrafficGraph or None
        Traffic graph of the latest allocation.
    """

    def __init__(self, plan, board=None):
        super().__init__()
        if isinstance(plan, (str, os.PathLike)):
            plan = Plan.load(plan)
        if not isinstance(plan, Plan):
            raise PlanError(
                f"PlanAllocator needs a partitioner Plan or the path of a saved plan, "
                f"not {type(plan).__name__}."
            )
        self.plan = plan
        self.board = board
        self.last_graph = None

    def __call__(self, model, n_chips):
        """Check the plan against ``model`` and ``n_chips``, then emit its board.

        Raises
        ------
        PlanError
            The plan was made for another model (the message says what differs).
        InfeasibleError
            The plan uses more chips than ``n_chips`` or than its board has.
        CoreRuleError
            Blocks that the plan puts together break a per-core rule.
        """
        restore_model(model)
        graph = extract(model)
        plan = self.plan.matched_to(graph)  # nengo-loihi may number blocks anew
        if plan.n_chips > n_chips:
            raise InfeasibleError(
                f"The plan uses {plan.n_chips} chips but only {n_chips} were asked "
                f"for. Pass hardware_options={{'n_chips': {plan.n_chips}}} or more, "
                f"or make a plan with partitioner.partition(graph, "
                f"n_chips={n_chips})."
            )
        board = get_board(self.board) if self.board is not None else _plan_board(plan)
        check_plan(graph, plan, board)
        self.last_graph = graph
        return board_from_plan(model, plan, graph, limits=board.limits)


def _plan_board(plan):
    """The `BoardSpec` a plan names (sub-boards like ``"nahuku32[4]"`` included)."""
    base, bracket, rest = plan.board.partition("[")
    if bracket and rest.endswith("]") and rest[:-1].isdigit():
        return get_board(base).with_chips(int(rest[:-1]))
    return get_board(plan.board)
