"""Plan: which core each block sits on (in offset order), which chip each core is on,
and where each chip sits on the board mesh.

Saved as JSON with the model's fingerprint and the canonical order of its blocks
(`partitioner.identity`), so that a plan saved in one process replays on the same
model built in another, where nengo-loihi may number the blocks differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from partitioner.errors import PlanError

__all__ = ["Plan"]

PLAN_FORMAT = "loihi-partitioner.plan"
#: Version 2: structural fingerprints and the canonical block order.
PLAN_VERSION = 2


@dataclass(eq=False)
class Plan:
    """A block -> core -> chip -> board-position assignment.

    Core ``c`` holds blocks ``layout[core_ptr[c]:core_ptr[c + 1]]``, in the order they
    are laid out on the core (the first at compartment offset 0).

    Attributes
    ----------
    layout : (n_blocks,) int64 ndarray
        Block ids grouped by core, in on-core order.
    core_ptr : (n_cores + 1,) int64 ndarray
        Start of each core's run in ``layout``.
    core_chip : (n_cores,) int64 ndarray
        Chip of each core, ``0 .. n_chips - 1``.
    chip_position : (n_chips,) int64 ndarray
        Board mesh position (row-major index) of each chip.
    board : str
        Name of the board the plan targets.
    fingerprint : str
        `TrafficGraph.fingerprint` of the model the plan was made for.
    strategy : str
        Strategy that produced the plan.
    objective : str
        What the strategy minimized (``"spikes"``, ``"max_link"``, ``"chips"`` or
        ``"time"``, the predicted time per step in ns).
    objective_value, bound, gap : float or None
        Objective of the plan, best proven lower bound and relative gap
        ``(objective - bound) / max(objective, eps)``; None where unknown.
    runtime_s : float
        Wall-clock time to make the plan.
    seed : int
        Seed the strategy used.
    info : dict
        Strategy-specific extras (JSON-serializable).
    block_order : partitioner.identity.BlockOrder or None
        Canonical order of the model's blocks; None until needed (`save`,
        `matched_to`) or when unknown. `remember_graph` lets the plan compute it.
    """

    layout: np.ndarray
    core_ptr: np.ndarray
    core_chip: np.ndarray
    chip_position: np.ndarray = None
    board: str = "nahuku32"
    fingerprint: str = ""
    strategy: str = ""
    objective: str = "spikes"
    objective_value: float = None
    bound: float = None
    gap: float = None
    runtime_s: float = 0.0
    seed: int = 0
    info: dict = field(default_factory=dict)
    block_order: object = None

    def __post_init__(self):
        self.layout = np.asarray(self.layout, dtype=np.int64)
        self.core_ptr = np.asarray(self.core_ptr, dtype=np.int64)
        self.core_chip = np.asarray(self.core_chip, dtype=np.int64)
        n_chips = int(self.core_chip.max()) + 1 if self.core_chip.size else 0
        if self.chip_position is None:
            self.chip_position = np.arange(n_chips, dtype=np.int64)
        self.chip_position = np.asarray(self.chip_position, dtype=np.int64)
        self._check()

    def _check(self):
        n = self.layout.size
        if self.core_ptr.size != self.core_chip.size + 1 or (
            self.core_ptr.size and (self.core_ptr[0] != 0 or self.core_ptr[-1] != n)
        ):
            raise PlanError(
                "Plan is corrupt: core_ptr must start at 0, end at the number of blocks "
                "and have one more entry than core_chip. Re-create the plan."
            )
        if np.any(np.diff(self.core_ptr) <= 0):
            raise PlanError("Plan is corrupt: a core holds no blocks. Re-create the plan.")
        if n and not _is_permutation(self.layout, n):
            raise PlanError(
                "Plan is corrupt: every block must appear exactly once in the layout. "
                "Re-create the plan."
            )
        ranks = None if self.block_order is None else np.asarray(self.block_order.ranks)
        if ranks is not None and not _is_permutation(ranks, n):
            raise PlanError(
                "Plan is corrupt: block_order must rank every block once. Re-create the "
                "plan."
            )
        if self.chip_position.size != self.n_chips or (
            self.chip_position.size
            and np.unique(self.chip_position).size != self.chip_position.size
        ):
            raise PlanError(
                "Plan is corrupt: chip_position must give each chip its own board "
                "position. Re-create the plan."
            )

    # ------------------------------------------------------------ builders
    @classmethod
    def from_assignment(cls, block_core, core_chip, order=None, **kwargs):
        """Build a plan from a per-block core index and a per-core chip index.

        Parameters
        ----------
        block_core : (n_blocks,) int array
            Core of each block; cores are numbered ``0 .. n_cores - 1`` and each must
            hold at least one block.
        core_chip : (n_cores,) int array
            Chip of each core.
        order : (n_blocks,) array, optional
            Sort key for the on-core order (smaller first; ties by block id).
        **kwargs
            Other `Plan` fields.
        """
        block_core = np.asarray(block_core, dtype=np.int64)
        n_cores = len(core_chip)
        counts = np.bincount(block_core, minlength=n_cores)
        core_ptr = np.concatenate([[0], np.cumsum(counts)])
        layout = None if order is None else _positioned(block_core, np.asarray(order),
                                                        counts, core_ptr)
        if layout is None:
            key = np.zeros(block_core.size) if order is None else np.asarray(order)
            layout = np.lexsort((np.arange(block_core.size), key, block_core))
        return cls(layout=layout, core_ptr=core_ptr, core_chip=core_chip, **kwargs)

    # ------------------------------------------------------------ views
    @property
    def n_blocks(self):
        """Number of blocks placed."""
        return int(self.layout.size)

    @property
    def n_cores(self):
        """Number of cores used."""
        return int(self.core_chip.size)

    @property
    def n_chips(self):
        """Number of chips used."""
        return int(self.core_chip.max()) + 1 if self.core_chip.size else 0

    @property
    def block_core(self):
        """(n_blocks,) core index of each block."""
        out = np.empty(self.n_blocks, dtype=np.int64)
        out[self.layout] = np.repeat(np.arange(self.n_cores), np.diff(self.core_ptr))
        return out

    @property
    def block_chip(self):
        """(n_blocks,) chip index of each block."""
        return self.core_chip[self.block_core]

    @property
    def block_position(self):
        """(n_blocks,) board mesh position of each block's chip."""
        return self.chip_position[self.block_chip]

    def core_blocks(self, core):
        """Blocks on one core, in on-core order."""
        return self.layout[self.core_ptr[core]:self.core_ptr[core + 1]]

    def cores_per_chip(self):
        """(n_chips,) number of cores on each chip."""
        return np.bincount(self.core_chip, minlength=self.n_chips)

    def summary(self):
        """Report fields as a JSON-serializable dict."""
        return {
            "strategy": self.strategy,
            "objective": self.objective,
            "objective_value": self.objective_value,
            "bound": self.bound,
            "gap": self.gap,
            "runtime_s": self.runtime_s,
            "n_blocks": self.n_blocks,
            "n_cores": self.n_cores,
            "n_chips": self.n_chips,
            "board": self.board,
            "seed": self.seed,
        }

    # ------------------------------------------------------------ JSON
    def to_dict(self):
        """A JSON-serializable dict (see `from_dict`)."""
        out = {"format": PLAN_FORMAT, "version": PLAN_VERSION,
               "fingerprint": self.fingerprint}
        out.update(self.summary())
        out.update(
            layout=self.layout.tolist(),
            core_ptr=self.core_ptr.tolist(),
            core_chip=self.core_chip.tolist(),
            chip_position=self.chip_position.tolist(),
            info=self.info,
        )
        order = self.canonical_order()
        out["block_order"] = None if order is None else order.to_dict()
        return out

    @classmethod
    def from_dict(cls, data):
        """Rebuild a plan written by `to_dict`; raises `PlanError` if malformed."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError(
                f"Not a plan: expected a JSON object with format {PLAN_FORMAT!r}. Create "
                f"plans with `partitioner plan` or Plan.save()."
            )
        try:
            return cls(
                layout=data["layout"],
                core_ptr=data["core_ptr"],
                core_chip=data["core_chip"],
                chip_position=data.get("chip_position"),
                board=data.get("board", "nahuku32"),
                fingerprint=data["fingerprint"],
                strategy=data.get("strategy", ""),
                objective=data.get("objective", "spikes"),
                objective_value=data.get("objective_value"),
                bound=data.get("bound"),
                gap=data.get("gap"),
                runtime_s=data.get("runtime_s", 0.0),
                seed=data.get("seed", 0),
                info=data.get("info", {}),
                block_order=_read_order(data.get("block_order")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"Plan is corrupt ({type(e).__name__}: {e}). Re-create it.") from e

    def save(self, path):
        """Write the plan as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path):
        """Read a plan saved with `save`."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise PlanError(f"{path}: not valid JSON ({e}). Re-create the plan.") from e
        return cls.from_dict(data)

    # ------------------------------------------------------------ identity
    def remember_graph(self, graph):
        """Keep the graph the plan was made for, so that `save` can record the
        canonical order of its blocks (computed only when needed).

        Parameters
        ----------
        graph : TrafficGraph
        """
        self._graph = graph
        return self

    def canonical_order(self):
        """The canonical order of the plan's model's blocks, or None if unknown.

        Returns
        -------
        partitioner.identity.BlockOrder or None
        """
        graph = getattr(self, "_graph", None)
        if self.block_order is None and graph is not None:
            from partitioner.identity import block_order

            self.block_order = block_order(graph)
        return self.block_order

    def matched_to(self, graph):
        """This plan with its block numbers those of ``graph``'s model.

        nengo-loihi may number the blocks of one network differently in another
        process; the plan's canonical block order maps its blocks onto ``graph``'s.

        Parameters
        ----------
        graph : TrafficGraph
            The model to replay the plan on.

        Returns
        -------
        Plan
            ``self`` when the numbers already agree, else a renumbered copy.

        Raises
        ------
        PlanError
            The plan was made for another model; the message says what differs.
        """
        from partitioner.identity import block_order

        self._check_fingerprint(graph.fingerprint(), graph.n_blocks)
        if getattr(self, "_graph", None) is graph:
            return self
        mine = self.canonical_order()
        if mine is None:
            return self  # made without an order: its numbers are the model's
        theirs = block_order(graph)
        if mine.digest != theirs.digest and mine.exact and theirs.exact:
            raise PlanError(self._mismatch([
                "how the blocks are wired together (the same blocks, settings and "
                "numbers of edges, connected differently)"]))
        if np.array_equal(mine.ranks, theirs.ranks):
            return self
        return self.renumbered(mine.mapping(theirs), theirs)

    def renumbered(self, new_index, block_order=None):
        """A copy of the plan with block ``b`` renamed ``new_index[b]``.

        Parameters
        ----------
        new_index : (n_blocks,) int array
            A permutation.
        block_order : BlockOrder, optional
            The canonical order in the new numbering.
        """
        new_index = np.asarray(new_index, dtype=np.int64)
        return Plan(
            layout=new_index[self.layout], core_ptr=self.core_ptr.copy(),
            core_chip=self.core_chip.copy(), chip_position=self.chip_position.copy(),
            board=self.board, fingerprint=self.fingerprint, strategy=self.strategy,
            objective=self.objective, objective_value=self.objective_value,
            bound=self.bound, gap=self.gap, runtime_s=self.runtime_s, seed=self.seed,
            info=dict(self.info), block_order=block_order,
        )

    def block_mapping(self, other):
        """For each block of this plan, the same block in ``other``'s numbering.

        Parameters
        ----------
        other : Plan
            A plan of the same model (equal fingerprints), possibly made in another
            process.

        Returns
        -------
        (n_blocks,) int64 ndarray
        """
        self._check_fingerprint(other.fingerprint, other.n_blocks, other="the other plan")
        mine, theirs = self.canonical_order(), other.canonical_order()
        if mine is None or theirs is None:
            return np.arange(self.n_blocks)
        return mine.mapping(theirs)

    def check_matches(self, graph):
        """Raise `PlanError` unless this plan's block numbers are ``graph``'s.

        A plan of the same model whose blocks nengo-loihi numbered differently
        (another process) needs `matched_to` first; the message says so.
        """
        if self.matched_to(graph) is not self:
            raise PlanError(
                "This plan numbers the model's blocks in another order (it was made "
                "in another process). Use plan.matched_to(graph) before checking or "
                "emitting it; PlanAllocator does this itself."
            )

    def model_differences(self, fingerprint, n_blocks):
        """What differs between this plan's model and another model.

        Parameters
        ----------
        fingerprint : str
            The other model's `TrafficGraph.fingerprint` (or another plan's).
        n_blocks : int
            Its number of blocks.

        Returns
        -------
        list of str
            One phrase per differing part; empty when the models are the same.
        """
        from partitioner.identity import fingerprint_differences

        differences = fingerprint_differences(self.fingerprint, fingerprint)
        if n_blocks != self.n_blocks and not any("blocks)" in d for d in differences):
            differences.insert(0, f"the number of blocks ({self.n_blocks} vs {n_blocks})")
        return differences

    def _check_fingerprint(self, found, n_blocks, other="this model"):
        differences = self.model_differences(found, n_blocks)
        if differences:
            raise PlanError(self._mismatch(differences, other=other))

    def _mismatch(self, differences, other="this model"):
        return (
            f"This plan was made for another model: {other} differs in "
            f"{'; '.join(differences)}. Make a new plan for this model with "
            f"partitioner.partition() or `partitioner plan`."
        )


def _positioned(block_core, order, counts, core_ptr):
    """The layout of `Plan.from_assignment` when ``order`` numbers the blocks of each
    core ``0, 1, ...`` (as packing lays them out): each block put straight at its
    place, without sorting. None for any other ``order``."""
    n = block_core.size
    if not np.issubdtype(order.dtype, np.integer) or order.shape != (n,):
        return None
    if n and (order.min() < 0 or np.any(order >= counts[block_core])):
        return None
    layout = np.full(n, -1, dtype=np.int64)
    layout[core_ptr[block_core] + order] = np.arange(n)
    return None if np.any(layout < 0) else layout  # two blocks at one place


def _is_permutation(values, n):
    """Whether ``values`` hold each of ``0 .. n - 1`` once (for integers, counted
    instead of sorted)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer) or values.shape != (n,):
        return np.array_equal(np.sort(values), np.arange(n))
    if n == 0:
        return True
    if values.min() < 0 or values.max() >= n:
        return False
    return bool(np.bincount(values, minlength=n).min() == 1)


def _read_order(data):
    if data is None:
        return None
    from partitioner.identity import BlockOrder

    return BlockOrder.from_dict(data)
