"""Block shapes that make every block of a network fit a Loihi core.

nengo-loihi cuts each ensemble into blocks along its ``BlockShape``. A block that
alone breaks a per-core rule cannot be placed by any allocator, and nengo-loihi's own
checks do not catch every such block: its ``block.utilization()`` counts one output
axon per target axon, while the hardware builder creates one output entry per source
compartment and target block (two for pop32 axons), so a convolutional layer whose
blocks each feed several blocks of the next layer runs out of output entries that
nengo-loihi never counted.

`fit_block_shapes` chooses a ``BlockShape`` for every ensemble that needs one:

1. **Check.** The network is built as it is (nengo-loihi's limit checks switched off,
   so that every offending block is seen at once), extracted, and every block is
   checked alone against every per-core rule (`partitioner.packing.CoreBin`), and
   against nengo-loihi's own ``validate_block``.
2. **Analyse.** The network is built once more with every ensemble kept whole (one
   block each, before discretization). From that build the needs of any block shape
   follow without another build: a block's input axons are the presynaptic axons that
   reach one of its compartments, its output entries are, per source compartment, the
   number of target blocks its axon reaches (twice for pop32), and its synapse memory
   comes from nengo-loihi's own ``split_synapse`` applied to the candidate blocks.
3. **Choose.** Each offending ensemble takes, among candidate shapes, the one with the
   fewest blocks that obeys every rule, then the one whose presynaptic blocks still fit
   their output entries, then the one with the fewest axon entries. Convolutional
   layers (the pre or post of a `nengo.Convolution`) keep their structure: candidates
   are rows x columns x channels tiles of the layer's ``ChannelShape``, as Intel's NxTF
   compiler enumerates them; other ensembles are cut into near-equal 1-D blocks.
   Smaller blocks of one layer mean more output entries for the layer feeding it, so
   the choice repeats until no ensemble breaks a rule.
4. **Verify.** The network is built with the chosen shapes and checked as in step 1.
   A block that still breaks a rule (e.g. a config-register table the analysis does
   not model) caps its ensemble's block size below its own, and steps 3-4 repeat.

Re-blocking changes where neurons sit, not what they compute: the emulator gives the
same output before and after (tested).
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import nengo
import nengo_loihi
import numpy as np
from nengo.exceptions import BuildError
from nengo_loihi import BlockShape
from nengo_loihi.block import (
    MAX_COMPARTMENTS,
    MAX_IN_AXONS,
    MAX_OUT_AXONS,
    MAX_SYNAPSE_BITS,
    LoihiBlock,
)
from nengo_loihi.builder import Model
from nengo_loihi.builder.builder import ValidationLevel
from nengo_loihi.builder.split_blocks import IndicesList, split_synapse
from nengo_loihi.builder.validate import validate_block

from partitioner.errors import BlockTooLargeError, ExtractionError, InfeasibleError
from partitioner.extract import extract
from partitioner.graph import RESOURCES
from partitioner.hardware import get_board
from partitioner.packing import BlockKeys, CoreBin
from partitioner.shapes import (
    candidate_shapes,
    format_block_shape,
    n_blocks,
    suggest_tile_shape,
    tile_text,
)

__all__ = [
    "fit_block_shapes",
    "apply_shapes",
    "owner_network",
    "FitResult",
    "FitStats",
    "ShapeChange",
    "Violation",
    "layer_shape",
    "refusal",
]

#: Rounds of re-choosing shapes before giving up on a cascade of changes.
MAX_ROUNDS = 40
#: Verification builds before giving up.
MAX_VERIFICATIONS = 4

_VIOLATION_RE = re.compile(r"^(\w+) (\d+) > (\d+)$")
_RULE_TEXT = {
    "compartments": "compartments",
    "in_axons": "input axons",
    "out_axons": "output axon entries",
    "synapse_bits": "bits of synapse memory",
}
_CONVOLUTIONS = tuple(
    cls for cls in (getattr(nengo, "Convolution", None),
                    getattr(nengo.transforms, "ConvolutionTranspose", None))
    if cls is not None
)


# =================================================================== results
@dataclass(frozen=True)
class Violation:
    """One per-core rule that one block breaks on its own.

    Attributes
    ----------
    block : str
        The block's label.
    source : str
        The nengo object it came from.
    rule : str
        The rule (``"out_axons"``, ``"vth_cfgs"``, ...; nengo-loihi's own checks are
        reported as ``"nengo-loihi"``).
    value, limit : int or None
        The block's need and the core's capacity, where the rule is a count.
    """

    block: str
    source: str
    rule: str
    value: int = None
    limit: int = None

    def text(self):
        """``"out_axons 4640 > 4096"`` (or the rule's own description)."""
        if self.value is None:
            return self.rule
        return f"{self.rule} {self.value} > {self.limit}"

    def to_dict(self):
        """JSON-ready fields."""
        return {"block": self.block, "source": self.source, "rule": self.rule,
                "value": self.value, "limit": self.limit}


@dataclass
class FitStats:
    """A model's blocks and, when it can be placed, its placement.

    Attributes
    ----------
    blocks : int
        Blocks nengo-loihi builds.
    violations : list of Violation
        Every rule a block breaks on its own (empty: every block fits a core).
    nengo_loihi_errors : list of str
        What nengo-loihi's own ``validate_block`` rejects (a build would raise the
        first of them).
    cores, chips : int or None
        Cores and chips of the plan (``partitioner.partition`` on the board), or their
        lower bounds when not partitioned (``partitioned`` is False); None when a
        block does not fit.
    interchip_axons, interchip_spikes : float or None
        Inter-chip traffic of the plan per time step; None when not partitioned.
    partitioned : bool
        Whether the numbers come from a plan.
    note : str
        Why there is no plan, if there is none.
    """

    blocks: int
    violations: list = field(default_factory=list)
    nengo_loihi_errors: list = field(default_factory=list)
    cores: int = None
    chips: int = None
    interchip_axons: float = None
    interchip_spikes: float = None
    partitioned: bool = False
    note: str = ""

    @property
    def fits(self):
        """True when every block fits a core by every rule."""
        return not self.violations and not self.nengo_loihi_errors

    def broken_rules(self):
        """``{rule: number of blocks breaking it}``, nengo-loihi's checks included."""
        counts = {}
        for v in self.violations:
            counts[v.rule] = counts.get(v.rule, 0) + 1
        if self.nengo_loihi_errors:
            counts["nengo-loihi"] = len(self.nengo_loihi_errors)
        return counts

    def to_dict(self):
        """JSON-ready fields."""
        return {
            "blocks": self.blocks,
            "fits": self.fits,
            "cores": self.cores,
            "chips": self.chips,
            "interchip_axons": self.interchip_axons,
            "interchip_spikes": self.interchip_spikes,
            "partitioned": self.partitioned,
            "broken_rules": self.broken_rules(),
            "violations": [v.to_dict() for v in self.violations],
            "nengo_loihi_errors": list(self.nengo_loihi_errors),
            "note": self.note,
        }


@dataclass
class ShapeChange:
    """The block shape chosen for one ensemble.

    Attributes
    ----------
    ensemble : nengo.Ensemble
    index : int
        Position of the ensemble in ``network.all_ensembles``.
    old : nengo_loihi.BlockShape
        The shape the ensemble had (configured, or the one nengo-loihi chose).
    new : nengo_loihi.BlockShape
        The shape chosen.
    configured : bool
        Whether ``old`` was set in the network's config.
    rule : str
        The rule that made the change necessary.
    value, limit : int or None
        The need with ``old`` (or when the change became necessary) and the limit.
    new_value : int or None
        The largest need by that rule of a block with ``new``.
    reason : str
        One line: the rule, the value with the old blocks, the value with the new.
    path : str
        Where the network holding the ensemble is, from the top-level network
        (``""``, or e.g. ``".networks[2]"``); nengo-loihi reads an ensemble's block
        shape from that network's config.
    """

    ensemble: nengo.Ensemble
    index: int
    old: BlockShape
    new: BlockShape
    configured: bool
    rule: str
    value: int
    limit: int
    new_value: int
    reason: str
    path: str = ""

    @property
    def name(self):
        """The ensemble's label, or its description when it has none."""
        return self.ensemble.label or str(self.ensemble)

    @property
    def blocks_before(self):
        """Blocks of the ensemble with the old shape."""
        return n_blocks(self.old.shape, self.old.ensemble_shape)

    @property
    def blocks_after(self):
        """Blocks of the ensemble with the new shape."""
        return n_blocks(self.new.shape, self.new.ensemble_shape)

    def to_dict(self):
        """JSON-ready fields."""
        return {
            "ensemble": self.name,
            "index": self.index,
            "network": self.path,
            "shape": list(self.new.shape),
            "ensemble_shape": list(self.new.ensemble_shape),
            "old_shape": list(self.old.shape),
            "old_configured": self.configured,
            "blocks_before": self.blocks_before,
            "blocks_after": self.blocks_after,
            "rule": self.rule,
            "value": self.value,
            "limit": self.limit,
            "new_value": self.new_value,
            "reason": self.reason,
        }


@dataclass
class FitResult:
    """What `fit_block_shapes` found.

    Attributes
    ----------
    changes : list of ShapeChange
        One per ensemble whose shape changes, in network order.
    before, after : FitStats
        The model as given, and with the new shapes (verified by a build).
    unresolved : list of str
        Blocks no block shape can fix (e.g. decode neurons, or input axons of a dense
        connection), with what to do instead.
    board : str
    applied : bool
        Whether the shapes were set on the network's config.
    builds : int
        nengo-loihi builds made.
    """

    changes: list
    before: FitStats
    after: FitStats
    unresolved: list = field(default_factory=list)
    board: str = "nahuku32"
    applied: bool = False
    builds: int = 0

    @property
    def shapes(self):
        """``{nengo.Ensemble: nengo_loihi.BlockShape}`` of every change."""
        return {c.ensemble: c.new for c in self.changes}

    @property
    def ok(self):
        """True when every block fits a core with the new shapes."""
        return self.after.fits and not self.unresolved

    def apply(self, network):
        """Set the new shapes on ``network``'s config (adding nengo-loihi's params)."""
        apply_shapes(network, self.shapes)
        self.applied = True

    def snippet(self, network="net"):
        """Python source that applies the shapes to a network named ``network``.

        Ensembles are found by their position in ``network.all_ensembles``, which is
        the same every time a network is built by the same code, and named in a
        comment. Each shape is set on the config of the (sub)network holding the
        ensemble, where nengo-loihi reads it.
        """
        if not self.changes:
            return "# every block already fits a Loihi core: nothing to change\n"
        owners = dict.fromkeys(f"{network}{c.path}" for c in self.changes)
        lines = ["import nengo_loihi", ""]
        lines += [f"nengo_loihi.add_params({owner})" for owner in owners]
        lines.append(f"ensembles = {network}.all_ensembles")
        for c in self.changes:
            lines.append(f"# {c.name}: {c.reason}")
            lines.append(f"{network}{c.path}.config[ensembles[{c.index}]].block_shape = "
                         f"{format_block_shape(c.new)}")
        return "\n".join(lines) + "\n"

    def to_dict(self):
        """JSON-ready summary: shapes with reasons, before/after stats, snippet."""
        return {
            "board": self.board,
            "changed": bool(self.changes),
            "ok": self.ok,
            "applied": self.applied,
            "builds": self.builds,
            "shapes": [c.to_dict() for c in self.changes],
            "unresolved": list(self.unresolved),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "snippet": self.snippet(),
        }

    def __str__(self):
        if not self.changes and not self.unresolved:
            return "Every block fits a Loihi core; no block shape to change."
        lines = [f"{len(self.changes)} ensemble(s) re-blocked "
                 f"({self.before.blocks} -> {self.after.blocks} blocks):"]
        lines += [f"  {c.name}: {tile_text(c.old)} -> {tile_text(c.new)}: {c.reason}"
                  for c in self.changes]
        lines += [f"  unresolved: {u}" for u in self.unresolved]
        return "\n".join(lines)


# ====================================================================== API
def fit_block_shapes(network, board="nahuku32", apply=False, rates=None, *,
                     partition=True, dt=0.001, duration=1.0, seed=0):
    """Choose block shapes so every block of ``network`` fits a Loihi core.

    Parameters
    ----------
    network : nengo.Network
        The network; it is only changed when ``apply`` is True.
    board : str or BoardSpec, optional
        Board whose core limits apply, and on which plans are made for the stats.
    apply : bool, optional
        Set the chosen shapes on ``network.config`` (calling
        ``nengo_loihi.add_params`` first).
    rates : None, dict or "measured", optional
        Traffic for the before/after stats, as for `partitioner.extract`.
    partition : bool, optional
        Make plans (``partitioner.partition``) for the stats; otherwise cores and
        chips are lower bounds and there is no inter-chip traffic.
    dt : float, optional
        Simulation time step of the builds.
    duration : float, optional
        Emulator seconds for ``rates="measured"``.
    seed : int, optional
        Seed of the plans.

    Returns
    -------
    FitResult
        ``changes`` is empty when every block already fits.

    Raises
    ------
    ExtractionError
        ``network`` is not a `nengo.Network`.
    """
    if not isinstance(network, nengo.Network):
        raise ExtractionError(
            f"fit_block_shapes takes a nengo.Network, not {type(network).__name__}. "
            f"Pass the network you would give nengo_loihi.Simulator."
        )
    board = get_board(board)
    ctx = _Context(network, board, rates, partition, dt, duration, seed)
    before_model = ctx.build()
    before = ctx.check(before_model)
    offenders = ctx.offenders(before_model, before)
    if not offenders.blocks:
        stats = ctx.stats(before_model, before, shapes={})
        return FitResult([], stats, stats, board=board.name, builds=ctx.builds)

    layers = _layers(network, before_model)
    analysis = _Analysis(ctx.build(whole=True, discretize=False), layers, board.limits)
    fitter = _Fitter(analysis, board.limits)
    unresolved = fitter.unfixable(offenders)
    fitter.cap_unmodelled(offenders)
    after_model, after = _fit_and_verify(ctx, fitter, before_model, before)
    result = FitResult(
        changes=fitter.changes(),
        before=ctx.stats(before_model, before, shapes={}),
        after=ctx.stats(after_model, after, shapes=fitter.shapes()),
        unresolved=unresolved + fitter.unresolved_text(), board=board.name,
    )
    result.builds = ctx.builds
    if apply and result.changes:
        result.apply(network)
    return result


def _fit_and_verify(ctx, fitter, model, checked):
    """Choose shapes, build and check them; repeat with capped block sizes while a
    block still breaks a rule. Returns the last ``(model, checked)``."""
    for _ in range(MAX_VERIFICATIONS):
        fitter.run()
        shapes = fitter.shapes()
        if not shapes:
            break  # nothing could change: the model stays as given
        model = ctx.build(shapes)
        checked = ctx.check(model)
        failed = ctx.offenders(model, checked)
        if not failed.blocks or not fitter.tighten(failed):
            break
    return model, checked


def apply_shapes(network, shapes):
    """Set ``{ensemble: BlockShape}`` on the configs of ``network`` and its subnetworks.

    nengo-loihi reads an ensemble's block shape from the config of the network that
    holds it, so each shape is set there (after ``nengo_loihi.add_params``).

    Parameters
    ----------
    network : nengo.Network
        The top-level network.
    shapes : dict
        ``{nengo.Ensemble: nengo_loihi.BlockShape}``.
    """
    for ens, shape in shapes.items():
        owner, _ = owner_network(network, ens)
        nengo_loihi.add_params(owner)
        owner.config[ens].block_shape = shape


def owner_network(network, ens):
    """The (sub)network of ``network`` that holds ``ens``, and the path to it.

    Returns
    -------
    owner : nengo.Network
    path : str
        ``""`` for ``network`` itself, else e.g. ``".networks[2].networks[0]"``.
    """
    stack = [(network, "")]
    while stack:
        net, path = stack.pop()
        if any(e is ens for e in net.ensembles):
            return net, path
        stack.extend((sub, f"{path}.networks[{k}]") for k, sub in enumerate(net.networks))
    return network, ""


def layer_shape(ensemble, connections):
    """The conceptual shape of an ensemble's neurons, and its channel axis.

    Parameters
    ----------
    ensemble : nengo.Ensemble
    connections : iterable of nengo.Connection
        Connections that may touch ``ensemble`` (e.g. ``network.all_connections``,
        or the connections of a built model).

    Returns
    -------
    shape : tuple of int
        The ``ChannelShape`` of a convolution whose post (preferred) or pre is the
        ensemble, else ``(n_neurons,)``.
    channel_axis : int or None
        Index of the channel dimension of a convolutional layer.
    """
    found = None
    for conn in connections:
        transform = getattr(conn, "transform", None)
        if not isinstance(transform, _CONVOLUTIONS):
            continue
        if _endpoint(conn.post_obj) is ensemble:
            found = transform.output_shape
            break
        if found is None and _endpoint(conn.pre_obj) is ensemble:
            found = transform.input_shape
    if found is None or int(np.prod(found.shape)) != ensemble.n_neurons:
        return (ensemble.n_neurons,), None
    axis = len(found.shape) - 1 if found.channels_last else 0
    return tuple(int(s) for s in found.shape), axis


def refusal(model, graph, limits=None):
    """The `BlockTooLargeError` for the first block of ``model`` that fits no core.

    Only the built model is needed (an allocator has nothing else): the block's
    ensemble, its shape and its convolutions are read from ``model.objs`` and
    ``model.config``, and a block shape is estimated from how far the block is over
    the limit, keeping convolutional layers in rows x columns x channels tiles
    (`partitioner.shapes.suggest_tile_shape`). The message says to run
    ``partitioner fit`` for shapes checked by a build.

    Parameters
    ----------
    model : nengo_loihi.builder.Model
    graph : TrafficGraph
        ``partitioner.extract(model)``.
    limits : CoreLimits, optional

    Returns
    -------
    BlockTooLargeError or None
        None when every block fits a core.
    """
    limits = get_board("nahuku32").limits if limits is None else limits
    violations = _violations(graph, limits)
    if not violations:
        return None
    b, first = violations[0]
    blocks = list(model.blocks)
    ens = _block_ensembles(model)[b]
    suggestion, fix = None, (
        "It is not an ensemble's block (e.g. the decode neurons of a connection), so "
        "a block shape cannot split it: make the nengo object that produced it smaller."
    )
    if ens is not None:
        suggestion = _estimate_shape(model, ens, first, int(graph.compartments[b]))
        current = _model_layer(model, ens)[2]
        fix = (
            f"Estimated fix ({tile_text(current)} -> {tile_text(suggestion)}): "
            f"nengo_loihi.add_params(net); "
            f"net.config[ens].block_shape = {format_block_shape(suggestion)} where ens is "
            f"{ens} and net the network holding it. The estimate scales this block's "
            f"need with its size; run "
            f"`partitioner fit SCENARIO` (or partitioner.fit_block_shapes(net)) for "
            f"block shapes checked by a build."
        )
    n_bad = len({i for i, _ in violations})
    more = f" ({n_bad - 1} more blocks also break a rule.)" if n_bad > 1 else ""
    return BlockTooLargeError(
        f"Block {graph.labels[b]} from {graph.sources[b]} does not fit on one Loihi core: "
        f"{first.text()}, so no allocator can place it. {fix}{more}",
        block=str(blocks[b]) if b < len(blocks) else graph.labels[b],
        source=graph.sources[b], rule=first.rule, value=first.value, limit=first.limit,
        suggestion=suggestion,
    )


# ================================================================ building
_MISSING = object()


class _BlockShapes(dict):
    """``model.block_shapes`` that can override the shapes of chosen ensembles.

    nengo-loihi's ensemble builder stores each ensemble's configured shape under its
    block, and ``split_block`` reads it when the whole network is built. Overrides
    are looked up by ensemble at that point, so a network can be built with other
    shapes without touching its config. With ``whole``, every ensemble not
    overridden stays one block, and the shape nengo-loihi would have used is kept
    in ``defaults``.
    """

    def __init__(self, model, overrides, whole):
        super().__init__()
        self._model = model
        self._overrides = overrides
        self._whole = whole
        self._ensemble_of = None
        self.defaults = {}

    def _ensemble(self, block):
        if self._ensemble_of is None:
            self._ensemble_of = {
                id(parts["out"]): obj for obj, parts in self._model.objs.items()
                if isinstance(obj, nengo.Ensemble)
                and isinstance(parts.get("out"), LoihiBlock)
            }
        return self._ensemble_of.get(id(block))

    def get(self, block, default=None):
        ens = self._ensemble(block)
        if ens is not None and ens in self._overrides:
            return self._overrides[ens]
        if ens is not None and self._whole:
            if ens not in self.defaults:
                self.defaults[ens] = _nengo_loihi_shape(block, dict.get(self, block))
            return BlockShape((ens.n_neurons,), (ens.n_neurons,))
        return dict.get(self, block, default)

    def __getitem__(self, block):
        value = self.get(block, _MISSING)
        if value is _MISSING:
            raise KeyError(block)
        return value


def _ceil_div(a, b):
    return -(-int(a) // int(b))


def _nengo_loihi_shape(block, configured):
    """The shape ``split_block`` gives ``block``: configured, or cut in sequence."""
    if configured is not None:
        return configured
    n = block.compartment.n_compartments
    n_split = max(
        _ceil_div(n, MAX_COMPARTMENTS),
        _ceil_div(sum(s.n_axons for s in block.synapses), MAX_IN_AXONS),
        _ceil_div(sum(a.axon_slots() for a in block.axons), MAX_OUT_AXONS),
        _ceil_div(sum(s.bits() for s in block.synapses), MAX_SYNAPSE_BITS),
    )
    return BlockShape((_ceil_div(n, n_split),), (n,))


class _Context:
    """Builds, checks and measures one network for `fit_block_shapes`."""

    def __init__(self, network, board, rates, partition, dt, duration, seed):
        self.network = network
        self.board = board
        self.rates = rates
        self.partition = partition
        self.dt = float(dt)
        self.duration = duration
        self.seed = seed
        self.builds = 0

    def model(self, overrides=None, whole=False):
        """A new Model building ``network`` with ``overrides``, checks off."""
        model = Model(dt=self.dt, label=f"{self.network}, dt={self.dt:f}")
        model.validation_level = ValidationLevel.NONE
        model.block_shapes = _BlockShapes(model, dict(overrides or {}), whole)
        return model

    def build(self, overrides=None, whole=False, discretize=True):
        """Build the network with ``{ensemble: BlockShape}`` overrides."""
        model = self.model(overrides, whole)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.build(self.network, precompute=None, remove_passthrough=True,
                        discretize=discretize)
        self.builds += 1
        return model

    def check(self, model):
        """``(graph, violations, nengo-loihi errors)`` of a built model."""
        graph = extract(model, progress=False)
        return graph, _violations(graph, self.board.limits), _nengo_loihi_errors(model)

    def offenders(self, model, checked):
        """The blocks that break a rule, grouped by their ensemble."""
        graph, violations, nl_errors = checked
        owners = _block_ensembles(model)
        blocks = {}
        for b, v in violations:
            blocks.setdefault(b, []).append(v)
        for b, message in nl_errors:
            blocks.setdefault(b, []).append(_nengo_loihi_violation(graph, b, message))
        return _Offenders(blocks, owners, graph)

    def stats(self, model, checked, shapes):
        """`FitStats` of a checked model (with a plan when asked and possible)."""
        graph, violations, nl_errors = checked
        stats = FitStats(
            blocks=graph.n_blocks, violations=[v for _, v in violations],
            nengo_loihi_errors=[m for _, m in nl_errors],
        )
        if not stats.fits:
            stats.note = "a block breaks a per-core rule, so no allocator can place it"
            return stats
        if not self.partition:
            return _bound_stats(stats, graph, self.board)
        if self.rates is not None:
            graph = self._traffic_graph(model, shapes)
        return _plan_stats(stats, graph, self.board, self.seed)

    def _traffic_graph(self, model, shapes):
        if isinstance(self.rates, str) and self.rates == "measured":
            sim = nengo_loihi.Simulator(
                self.network, dt=self.dt, model=self.model(shapes), target="sim",
                progress_bar=False,
            )
            with sim:
                return extract(sim, rates="measured", duration=self.duration,
                               progress=False)
        return extract(model, rates=self.rates, progress=False)


@dataclass
class _Offenders:
    """Blocks that break a rule: ``blocks`` maps a block index to its violations."""

    blocks: dict
    owners: list
    graph: object

    def by_ensemble(self):
        """``{ensemble: [(block, violations)]}`` and ``[(block, violations)]`` of blocks
        that belong to no ensemble."""
        ensembles, orphans = {}, []
        for b, vs in sorted(self.blocks.items()):
            ens = self.owners[b]
            if ens is None:
                orphans.append((b, vs))
            else:
                ensembles.setdefault(ens, []).append((b, vs))
        return ensembles, orphans


def _plan_stats(stats, graph, board, seed):
    from partitioner.engine import partition
    from partitioner.metrics import evaluate

    try:
        plan = partition(graph, board=board, seed=seed)
    except InfeasibleError as err:
        stats.note = " ".join(str(err).split())
        return _bound_stats(stats, graph, board)
    metrics = evaluate(graph, plan, board)
    stats.cores, stats.chips = int(plan.n_cores), int(plan.n_chips)
    stats.interchip_axons = float(metrics.interchip_axons)
    stats.interchip_spikes = float(metrics.interchip_spikes)
    stats.partitioned = True
    return stats


def _bound_stats(stats, graph, board):
    from partitioner.metrics import lower_bounds

    bounds = lower_bounds(graph, board)
    stats.cores, stats.chips = int(bounds["cores"]), int(bounds["chips"])
    if not stats.note:
        stats.note = "cores and chips are lower bounds (not partitioned)"
    return stats


# ================================================================== checks
def _violations(graph, limits):
    """``[(block index, Violation)]`` of every rule a block breaks on its own."""
    cap = limits.capacity_vector()
    suspect = (graph.resources > cap).any(axis=1)
    suspect |= (graph.pop16_in_limit > 0) & (
        graph.resources[:, RESOURCES.index("in_axons")] > graph.pop16_in_limit)
    for kind, matrix in graph.configs.items():
        table = kind.replace("_shared", "")
        if table in limits.CONFIG_TABLES:
            suspect |= np.diff(matrix.tocsr().indptr) > limits.config_capacity(table)
    keys = BlockKeys(graph)
    found = []
    for b in np.flatnonzero(suspect).tolist():
        for text in CoreBin(graph, limits, keys).violations(b):
            match = _VIOLATION_RE.match(text)
            if match:
                rule, value, limit = match.group(1), int(match.group(2)), int(match.group(3))
            else:
                rule, value, limit = text, None, None
            found.append((b, Violation(graph.labels[b], graph.sources[b], rule, value,
                                       limit)))
    return found


def _nengo_loihi_errors(model):
    """``[(block index, message)]`` of blocks nengo-loihi's ``validate_block`` rejects."""
    errors = []
    for b, block in enumerate(model.blocks):
        try:
            validate_block(block)
        except BuildError as err:
            errors.append((b, " ".join(str(err).split())))
        except (AssertionError, AttributeError) as err:
            # validate_synapse asserts (e.g. pop16 compartment bases); nengo-loihi 1.1
            # misspells an attribute in one assert message, which then raises
            # AttributeError instead of AssertionError.
            errors.append((b, f"{block}: a synapse fails nengo-loihi's validate_synapse "
                              f"({type(err).__name__}: {err}); pop16 synapses need "
                              f"compartment bases that are multiples of 4"))
    return errors


_NENGO_LOIHI_RE = re.compile(
    r"(Number of compartments|Output axons|Input axons|Total synapse bits) "
    r"\((\d+)\) exceeded max \((\d+)\)"
)
_NENGO_LOIHI_RULES = {
    "Number of compartments": "compartments",
    "Output axons": "out_axons",
    "Input axons": "in_axons",
    "Total synapse bits": "synapse_bits",
}


def _nengo_loihi_violation(graph, b, message):
    """A `Violation` for a ``validate_block`` message (by our rule names)."""
    match = _NENGO_LOIHI_RE.search(message)
    if match is None:
        return Violation(graph.labels[b], graph.sources[b], "nengo-loihi")
    return Violation(graph.labels[b], graph.sources[b],
                     _NENGO_LOIHI_RULES[match.group(1)], int(match.group(2)),
                     int(match.group(3)))


def _endpoint(obj):
    """The ensemble behind a connection endpoint (ensemble, neurons or a slice)."""
    obj = getattr(obj, "obj", obj)  # ObjView
    return getattr(obj, "ensemble", obj)


def _block_ensembles(model):
    """The ensemble each block of a built model belongs to (None for other blocks)."""
    owner = {}
    for obj, parts in model.objs.items():
        if not isinstance(obj, nengo.Ensemble):
            continue
        out = parts.get("out")
        for block in (out if isinstance(out, (list, tuple)) else [out]):
            if isinstance(block, LoihiBlock):
                owner[id(block)] = obj
    return [owner.get(id(b)) for b in model.blocks]


def _configured_shape(network, ens):
    """The block shape nengo-loihi reads for ``ens`` (from the config of the network
    holding it), or None."""
    owner, _ = owner_network(network, ens)
    try:
        return owner.config[ens].block_shape
    except Exception:  # the network has no nengo-loihi params
        return None


def _model_layer(model, ens):
    """``(ensemble shape, channel axis, current block shape)`` of ``ens`` in a built
    model, read from its convolutions and the neurons of its first block."""
    connections = [obj for obj in model.objs if isinstance(obj, nengo.Connection)]
    shape, axis = layer_shape(ens, connections)
    blocks = model.objs[ens].get("out")
    first = blocks[0] if isinstance(blocks, (list, tuple)) else blocks
    ids = model.block_comp_map.get(first)
    if ids is None or len(ids) == 0:
        return shape, axis, shape
    coords = np.unravel_index(np.fromiter(ids, dtype=np.int64, count=len(ids)), shape)
    current = tuple(int(c.max() - c.min() + 1) for c in coords)
    return shape, axis, current


def _estimate_shape(model, ens, violation, block_size):
    """A structure-preserving shape for ``ens`` from one block's violation."""
    shape, axis, current = _model_layer(model, ens)
    if violation.rule in _RULE_TEXT and violation.value:
        value, limit, rule = violation.value, violation.limit, violation.rule
    else:  # a config table or a shared setting: halve the block
        value, limit, rule = 2, 1, "compartments"
    return suggest_tile_shape(shape, value, limit, rule, block_shape=current,
                              block_size=block_size, channel_axis=axis)


# ================================================================= layers
@dataclass
class _Layer:
    """An on-chip ensemble whose block shape can be chosen."""

    ens: nengo.Ensemble
    index: int
    shape: tuple
    channel_axis: int
    configured: BlockShape
    path: str


def _layers(network, model):
    """`_Layer` of every ensemble of ``network`` that ``model`` puts on chip."""
    on_chip = {obj for obj in model.objs if isinstance(obj, nengo.Ensemble)
               and model.objs[obj].get("out") is not None}
    connections = network.all_connections
    layers = {}
    for index, ens in enumerate(network.all_ensembles):
        if ens not in on_chip:
            continue
        shape, axis = layer_shape(ens, connections)
        owner, path = owner_network(network, ens)
        configured = _configured_shape(owner, ens)
        if axis is None and configured is not None and len(configured.ensemble_shape) > 1:
            shape = tuple(int(s) for s in configured.ensemble_shape)
        layers[ens] = _Layer(ens, index, shape, axis, configured, path)
    return layers


# ================================================================ analysis
class _Tiling:
    """How one ensemble's neurons fall into blocks for one block shape.

    Blocks are numbered and filled as nengo-loihi's ``split_block`` does.
    """

    def __init__(self, shape, ensemble_shape):
        self.shape = tuple(int(s) for s in shape)
        self.ensemble_shape = tuple(int(s) for s in ensemble_shape)
        size = int(np.prod(self.ensemble_shape))
        full = np.arange(size).reshape(self.ensemble_shape)
        ranges = [range(0, n, s) for n, s in zip(self.ensemble_shape, self.shape)]
        self.tile_of = np.empty(size, dtype=np.int64)
        self.tiles = []
        for k, start in enumerate(itertools.product(*ranges)):
            ids = full[tuple(slice(i, min(i + s, n)) for i, s, n in
                             zip(start, self.shape, self.ensemble_shape))].ravel()
            self.tile_of[ids] = k
            self.tiles.append(ids)
        self.n = len(self.tiles)
        self.sizes = np.array([len(t) for t in self.tiles], dtype=np.int64)
        self.position = np.empty(size, dtype=np.int64)  # index inside its block
        for ids in self.tiles:
            self.position[ids] = np.arange(ids.size)

    @property
    def key(self):
        return self.shape, self.ensemble_shape

    def block_shape(self):
        return BlockShape(self.shape, self.ensemble_shape)


class _Stub:
    """Stands in for a new block while ``split_synapse`` adds synapses to it."""

    def __init__(self):
        self.synapses = []

    def add_synapse(self, synapse, name=None):
        self.synapses.append(synapse)


class _Syn:
    """One synapse of the whole-ensemble model: which compartment each axon reaches."""

    def __init__(self, synapse, owner):
        self.synapse = synapse
        self.owner = owner
        self.n_axons = int(synapse.n_axons)
        self.step = synapse.idxs_per_synapse()
        axons, comps = [], []
        for a in range(self.n_axons):
            base = synapse.axon_compartment_base(a)
            if base is None:
                continue
            idx = np.asarray(synapse.indices[synapse.axon_weight_idx(a)])
            if idx.size == 0:
                continue
            targets = base + idx[0].astype(np.int64)
            axons.append(np.full(targets.size, a, dtype=np.int64))
            comps.append(targets)
        self.axons = np.concatenate(axons) if axons else np.zeros(0, dtype=np.int64)
        self.comps = np.concatenate(comps) if comps else np.zeros(0, dtype=np.int64)
        self.live = np.zeros(self.n_axons, dtype=bool)
        self.live[self.axons] = True
        self.pop16 = synapse.pop_type == 16


class _Ax:
    """One output axon of the whole-ensemble model: the target axon of each source
    compartment."""

    def __init__(self, axon, source, target, n_sources):
        self.axon = axon
        self.source = source
        self.target = target  # _Syn
        self.map = np.asarray(axon.map_axon(np.arange(n_sources)), dtype=np.int64)
        self.slots = axon.slots_per_axon
        self.population = axon.pop_type != 0


class _Analysis:
    """Per-block needs of any block shapes, from one build with whole ensembles."""

    def __init__(self, model, layers, limits):
        self.limits = limits
        self.blocks = list(model.blocks)
        self.defaults = model.block_shapes.defaults
        self.layers = {}  # block index -> _Layer
        ensembles = _block_ensembles(model)
        for i, ens in enumerate(ensembles):
            if ens is not None and ens in layers:
                self.layers[i] = layers[ens]
        self.block_of = {layer.ens: i for i, layer in self.layers.items()}
        self.syns = {i: [] for i in range(len(self.blocks))}
        owner = {}
        for i, block in enumerate(self.blocks):
            for synapse in block.synapses:
                syn = _Syn(synapse, i)
                self.syns[i].append(syn)
                owner[id(synapse)] = syn
        self.axons = {i: [] for i in range(len(self.blocks))}
        self.preds = {i: set() for i in range(len(self.blocks))}
        for i, block in enumerate(self.blocks):
            n = block.compartment.n_compartments
            for axon in block.axons:
                syn = owner.get(id(axon.target))
                if syn is not None:
                    self.axons[i].append(_Ax(axon, i, syn, n))
                    self.preds[syn.owner].add(i)
        self._tilings = {}
        self._single = {}
        self._cover = {}
        self._bits = {}
        self._out = {}

    # ---------------------------------------------------------------- tilings
    def tiling(self, i, shape, ensemble_shape=None):
        """`_Tiling` of block ``i`` (a layer) for a block shape (tuple); the layer's
        own ensemble shape unless another is given."""
        ensemble_shape = self.layers[i].shape if ensemble_shape is None \
            else tuple(int(s) for s in ensemble_shape)
        key = (i, tuple(int(s) for s in shape), ensemble_shape)
        if key not in self._tilings:
            self._tilings[key] = _Tiling(shape, ensemble_shape)
        return self._tilings[key]

    def current(self, i):
        """The tiling block ``i`` has in the network as given (a 1-D cut of a conv
        layer is analysed in its own terms)."""
        layer = self.layers[i]
        shape = self.defaults.get(layer.ens) or layer.configured
        if shape is None:
            return self.single(i)
        return self.tiling(i, shape.shape, shape.ensemble_shape)

    def single(self, i):
        """One block holding every compartment of block ``i``."""
        if i not in self._single:
            n = self.blocks[i].compartment.n_compartments
            self._single[i] = _Tiling((n,), (n,))
        return self._single[i]

    # ---------------------------------------------------------------- synapses
    def cover(self, syn, tiling):
        """``(blocks each axon reaches, axons reaching each block)`` for a tiling
        of the synapse's owner."""
        key = (id(syn), tiling.key)
        if key not in self._cover:
            if tiling.n == 1:
                deg = syn.live.astype(np.int64)
                per_tile = np.array([int(syn.live.sum())], dtype=np.int64)
            else:
                t = tiling.tile_of[syn.comps]
                code = np.unique(syn.axons * tiling.n + t)
                axons, tiles = np.divmod(code, tiling.n)
                deg = np.bincount(axons, minlength=syn.n_axons)
                per_tile = np.bincount(tiles, minlength=tiling.n)
            self._cover[key] = (deg, per_tile)
        return self._cover[key]

    def synapse_bits(self, syn, tiling):
        """Synapse memory of each block, from nengo-loihi's own ``split_synapse``."""
        key = (id(syn), tiling.key)
        if key not in self._bits:
            if tiling.n == 1:
                bits = np.array([syn.synapse.bits()], dtype=np.int64)
            else:
                stubs = [_Stub() for _ in range(tiling.n)]
                split_synapse(
                    self.blocks[syn.owner], syn.synapse,
                    OrderedDict((s, IndicesList(t.tolist()))
                                for s, t in zip(stubs, tiling.tiles)),
                    validate=ValidationLevel.NONE,
                )
                bits = np.array([sum(s.bits() for s in stub.synapses) for stub in stubs],
                                dtype=np.int64)
            self._bits[key] = bits
        return self._bits[key]

    # ------------------------------------------------------------------ needs
    def in_needs(self, i, tiling):
        """Input axon ids per block (the larger of ours and nengo-loihi's count)."""
        total = np.zeros(tiling.n, dtype=np.int64)
        for syn in self.syns[i]:
            _, per_tile = self.cover(syn, tiling)
            ours = per_tile * syn.step
            theirs = per_tile if tiling.n > 1 else np.array([syn.n_axons])
            total += np.maximum(ours, theirs)
        return total

    def bits_needs(self, i, tiling):
        total = np.zeros(tiling.n, dtype=np.int64)
        for syn in self.syns[i]:
            total += self.synapse_bits(syn, tiling)
        return total

    def out_needs(self, i, tiling, tilings):
        """``(output entries, axons)`` per block of ``i``, with every target on the same
        chip: for discrete axons one entry per source compartment and target block it
        reaches (at least nengo-loihi's ``axon_slots``), for population axons 1 (pop16)
        or 2 (pop32) per target axon reached, as ``partitioner.extract`` counts them."""
        entries = np.zeros(tiling.n, dtype=np.int64)
        axons = np.zeros(tiling.n, dtype=np.int64)
        for ax in self.axons[i]:
            j = ax.target.owner
            target = tiling if j == i else tilings.get(j) or self.single(j)
            e, a = self._axon_out(ax, tiling, target)
            entries += e
            axons += a
        return entries, axons

    def _axon_out(self, ax, tiling, target):
        key = (id(ax), tiling.key, target.key)
        if key not in self._out:
            deg, _ = self.cover(ax.target, target)
            ok = ax.map >= 0
            reach = np.zeros(ax.map.size, dtype=np.int64)
            reach[ok] = deg[ax.map[ok]]
            ours = np.bincount(tiling.tile_of, weights=reach * ax.slots,
                               minlength=tiling.n).astype(np.int64)
            n_src = ax.target.n_axons
            code = np.unique(tiling.tile_of[ok] * n_src + ax.map[ok])
            tiles, targets = np.divmod(code, n_src)
            per_target = deg[targets] if target.n > 1 else np.ones(targets.size)
            axons = np.bincount(tiles, weights=per_target,
                                minlength=tiling.n).astype(np.int64)
            # Compartments reaching one target axon share one population axon.
            entries = axons * ax.slots if ax.population else np.maximum(ours, axons)
            self._out[key] = (entries, axons)
        return self._out[key]

    def pop16_misaligned(self, i, tiling):
        """Axons of pop16 synapses whose compartment base in a new block is not a
        multiple of 4, which nengo-loihi's ``validate_synapse`` rejects."""
        if tiling.n == 1:
            return 0
        bad = 0
        for syn in self.syns[i]:
            if not syn.pop16 or syn.comps.size == 0:
                continue
            tiles = tiling.tile_of[syn.comps]
            key = syn.axons * tiling.n + tiles
            order = np.lexsort((tiling.position[syn.comps], key))
            first = np.ones(order.size, dtype=bool)
            first[1:] = key[order][1:] != key[order][:-1]
            bases = tiling.position[syn.comps][order][first] % 256
            bad += int(np.count_nonzero(bases % 4))
        return bad

    def problems(self, i, tiling, tilings, bits=True):
        """``[(rule, largest value, limit)]`` of rules a block of ``i`` breaks."""
        limits = self.limits
        found = []
        if tiling.sizes.max() > limits.compartments:
            found.append(("compartments", int(tiling.sizes.max()), limits.compartments))
        misaligned = self.pop16_misaligned(i, tiling)
        if misaligned:
            found.append(("pop16_bases", misaligned, 0))
        for rule, values in (("in_axons", self.in_needs(i, tiling)),
                             ("out_axons", self.out_needs(i, tiling, tilings)[0])):
            limit = getattr(limits, rule)
            if values.size and values.max() > limit:
                found.append((rule, int(values.max()), limit))
        if bits:
            values = self.bits_needs(i, tiling)
            if values.size and values.max() > limits.synapse_bits:
                found.append(("synapse_bits", int(values.max()), limits.synapse_bits))
        return found

    def value(self, i, tiling, tilings, rule):
        """The largest need of a block of ``i`` by ``rule``."""
        if rule == "compartments":
            return int(tiling.sizes.max())
        if rule == "in_axons":
            return int(self.in_needs(i, tiling).max(initial=0))
        if rule == "out_axons":
            return int(self.out_needs(i, tiling, tilings)[0].max(initial=0))
        if rule == "synapse_bits":
            return int(self.bits_needs(i, tiling).max(initial=0))
        return None


# ================================================================== fitting
@dataclass
class _Trigger:
    """Why an ensemble's shape had to change, measured before the change."""

    rule: str
    value: int
    limit: int
    tiling: _Tiling
    cause: str = ""


class _Fitter:
    """Chooses shapes for the layers of one `_Analysis` (see the module docstring)."""

    def __init__(self, analysis, limits):
        self.a = analysis
        self.limits = limits
        self.tilings = {i: analysis.current(i) for i in analysis.layers}
        self.start = dict(self.tilings)
        self.caps = {}
        self.triggers = {}
        self.stuck = {}  # block index -> reason no shape helps

    # ------------------------------------------------------------ set-up
    def unfixable(self, offenders):
        """Text for offending blocks that belong to no layer (no shape can split them)."""
        _, orphans = offenders.by_ensemble()
        texts = []
        for b, vs in orphans:
            texts.append(
                f"{offenders.graph.labels[b]} (from {offenders.graph.sources[b]}): "
                f"{'; '.join(v.text() for v in vs)}. It is not an ensemble's block, so a "
                f"block shape cannot split it; make the nengo object that produced it "
                f"smaller (e.g. split a high-dimensional connection)."
            )
        return texts

    def cap_unmodelled(self, offenders):
        """Cap the block size of ensembles whose blocks break a rule the analysis
        does not model (config tables, shared settings) or does not see."""
        ensembles, _ = offenders.by_ensemble()
        graph = offenders.graph
        for ens, items in ensembles.items():
            i = self.a.block_of.get(ens)
            if i is None:
                continue
            seen = bool(self.a.problems(i, self.tilings[i], self.tilings))
            for b, vs in items:
                other = [v for v in vs if v.rule not in _RULE_TEXT]
                if other or not seen:
                    self._cap(i, int(graph.compartments[b]) - 1, (other or vs)[0])

    def _cap(self, i, size, violation):
        size = max(1, size)
        self.caps[i] = min(self.caps.get(i, size), size)
        if i not in self.triggers:
            self.triggers[i] = _Trigger(violation.rule, violation.value, violation.limit,
                                        self.tilings[i])

    def tighten(self, failed):
        """After a failed verification, cap the block size of the ensembles whose
        blocks still break a rule. Returns False when nothing can be capped."""
        ensembles, _ = failed.by_ensemble()
        graph = failed.graph
        capped = False
        for ens, items in ensembles.items():
            i = self.a.block_of.get(ens)
            if i is None or i in self.stuck:
                continue
            size = min(int(graph.compartments[b]) for b, _ in items) - 1
            self._cap(i, size, items[0][1][0])
            capped = True
        return capped

    # --------------------------------------------------------------- choosing
    def run(self):
        """Re-choose shapes until no layer breaks a rule (or none can be fixed)."""
        for _ in range(MAX_ROUNDS):
            bad = self._bad()
            if not bad:
                return
            for i, problems in bad:
                if i in self.stuck or not self._breaks(i):
                    continue  # fixed meanwhile by another layer's change
                choice = self._choose(i)
                if choice is None:
                    rule, value, limit = problems[0]
                    self.stuck[i] = (
                        f"{self.a.layers[i].ens}: {rule} {value} > {limit} with "
                        f"{tile_text(self.tilings[i].shape)}, and no block shape keeps "
                        f"every block within every rule. "
                        + _NO_SHAPE_ADVICE.get(rule, "")
                    ).strip()
                    continue
                if i not in self.triggers:
                    rule, value, limit = problems[0]
                    self.triggers[i] = _Trigger(rule, value, limit, self.tilings[i],
                                                self._cause(i))
                self.tilings[i] = choice
        for i, problems in self._bad():
            self.stuck.setdefault(i, f"{self.a.layers[i].ens}: no stable choice of block "
                                     f"shapes found ({problems[0][0]}).")

    def _breaks(self, i):
        """``[(rule, value, limit)]`` layer ``i`` breaks with its current tiling
        (a block larger than its cap counts as breaking the rule that set the cap)."""
        tiling = self.tilings[i]
        problems = self.a.problems(i, tiling, self.tilings)
        cap = self.caps.get(i)
        if cap is not None and tiling.sizes.max() > cap and not problems:
            trigger = self.triggers.get(i)
            problems = [(trigger.rule, trigger.value, trigger.limit)] if trigger \
                else [("compartments", int(tiling.sizes.max()), cap)]
        return problems

    def _bad(self):
        bad = []
        for i in sorted(self.a.layers, key=lambda i: self.a.layers[i].index):
            if i not in self.stuck:
                problems = self._breaks(i)
                if problems:
                    bad.append((i, problems))
        return bad

    def _cause(self, i):
        """Which changed neighbours made layer ``i`` break a rule, if any did."""
        changed = [
            self.a.layers[ax.target.owner].ens
            for ax in self.a.axons[i]
            if ax.target.owner in self.a.layers and ax.target.owner != i
            and self.tilings[ax.target.owner] is not self.start[ax.target.owner]
        ]
        names = sorted({ens.label or str(ens) for ens in changed})
        return f"once {', '.join(names)} {'is' if len(names) == 1 else 'are'} " \
               f"re-blocked" if names else ""

    def _choose(self, i):
        """The best tiling of layer ``i`` given the others, or None."""
        layer = self.a.layers[i]
        cap = min(self.caps.get(i, self.limits.compartments), self.limits.compartments)
        candidates = candidate_shapes(layer.shape, layer.channel_axis, max_size=cap)
        for _, group in itertools.groupby(
                candidates, key=lambda s: n_blocks(s, layer.shape)):
            scored = sorted(
                (cost, shape) for shape in group
                for cost in [self._cost(i, self.a.tiling(i, shape))] if cost is not None
            )
            # synapse memory is the costly check: test the best candidates first
            for _, shape in scored:
                tiling = self.a.tiling(i, shape)
                if self.a.bits_needs(i, tiling).max(initial=0) <= self.limits.synapse_bits:
                    return tiling
        return None

    def _cost(self, i, tiling):
        """``(presynaptic blocks broken, axon entries)`` of a tiling, or None when a
        block of ``i`` (or of a presynaptic block that cannot change) breaks a rule
        other than synapse memory."""
        trial = dict(self.tilings)
        trial[i] = tiling
        if self.a.problems(i, tiling, trial, bits=False):
            return None
        entries, _ = self.a.out_needs(i, tiling, trial)
        total = int(entries.sum()) + int(self.a.in_needs(i, tiling).sum())
        broken = 0
        for p in self.a.preds[i]:
            if p == i:
                continue
            p_tiling = trial.get(p) or self.a.single(p)
            p_entries, _ = self.a.out_needs(p, p_tiling, trial)
            total += int(p_entries.sum())
            if p_entries.max(initial=0) > self.limits.out_axons:
                if p not in self.a.layers:
                    return None  # e.g. decode neurons: their blocks cannot change
                broken += 1
        return broken, total

    # ---------------------------------------------------------------- results
    def shapes(self):
        """``{ensemble: BlockShape}`` of every layer whose tiling changed."""
        return {
            self.a.layers[i].ens: tiling.block_shape()
            for i, tiling in self.tilings.items() if tiling is not self.start[i]
        }

    def unresolved_text(self):
        return list(self.stuck.values())

    def changes(self):
        """`ShapeChange` of every changed layer, in network order."""
        out = []
        for i in sorted(self.a.layers, key=lambda i: self.a.layers[i].index):
            tiling = self.tilings[i]
            if tiling is self.start[i]:
                continue
            layer = self.a.layers[i]
            old = self.start[i]
            trigger = self.triggers.get(i) or _Trigger("compartments", None, None, old)
            new_value = self.a.value(i, tiling, self.tilings, trigger.rule)
            out.append(ShapeChange(
                ensemble=layer.ens, index=layer.index, old=old.block_shape(),
                new=tiling.block_shape(), configured=layer.configured is not None,
                rule=trigger.rule, value=trigger.value, limit=trigger.limit,
                new_value=new_value, reason=_reason(trigger, tiling, new_value),
                path=layer.path,
            ))
        return out


_NO_SHAPE_ADVICE = {
    "in_axons": "Every block receives every presynaptic axon of a dense connection; "
                "make the presynaptic population smaller or use a decoded connection.",
    "out_axons": "The blocks this layer feeds are too finely cut; give them larger "
                 "blocks, or send fewer connections from this layer.",
}


def _reason(trigger, tiling, new_value):
    """``"out_axons 4640 > 4096 with 8x8x16 tiles; 4x8x16 tiles need 2592"``."""
    old = tile_text(trigger.tiling.shape)
    new = tile_text(tiling.shape)
    if trigger.value is None:
        return f"{trigger.rule} with {old}; {new} fit"
    cause = f" {trigger.cause}" if trigger.cause else ""
    need = f" need {new_value}" if new_value is not None else " fit"
    return (f"{trigger.rule} {trigger.value} > {trigger.limit} with {old}{cause}; "
            f"{new}{need}")
