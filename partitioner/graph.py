"""TrafficGraph: the block-level spike-traffic graph every later stage works on.

A graph holds, per block, the resources it needs from a core and the config-register
entries it occupies, and, per directed block pair, the axons and expected spikes per
time step between them. Everything is numpy / scipy.sparse so graphs with a million
blocks stay cheap. Nothing here imports nengo-loihi: graphs can be synthetic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from partitioner.errors import ExtractionError
from partitioner.hardware import CoreLimits

__all__ = ["TrafficGraph", "CONFIG_KINDS", "RESOURCES", "WORK_TERMS"]

#: Additive per-block resources, the columns of `TrafficGraph.resources`.
RESOURCES = CoreLimits.RESOURCES
#: Config-register tables; ``synapse_cfgs_shared`` holds the formats a block's
#: synapses take when the block sits at a compartment offset above 0.
CONFIG_KINDS = (
    "compartment_cfgs",
    "vth_cfgs",
    "synapse_cfgs",
    "synapse_cfgs_shared",
    "stdp_pre_cfgs",
)


#: Per-block work terms, the columns of `TrafficGraph.block_work`.
WORK_TERMS = ("synops", "updates", "synmem_reads")


def _empty_csr(n_rows, n_cols, dtype=np.float64):
    return sp.csr_matrix((n_rows, n_cols), dtype=dtype)


def _without_diagonal(m):
    """``m.setdiag(0); m.eliminate_zeros()`` of a square CSR matrix, in place.

    scipy inserts every missing diagonal entry (rebuilding the matrix) before they
    are eliminated again. Where that leaves the same arrays, the diagonal entries and
    explicit zeros are dropped directly instead: when the indices are canonical
    (sorted, no duplicates), or unsorted with no entry on the diagonal (scipy then
    keeps each row's order). Otherwise scipy's two calls run.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``m``.
    """
    n = m.shape[0]
    nnz = int(m.indptr[-1]) if n else 0
    rows = np.repeat(np.arange(n, dtype=m.indices.dtype), np.diff(m.indptr))
    diagonal = m.indices[:nnz] == rows
    if m.shape[1] != n or not (m.has_canonical_format or (
            not m.has_sorted_indices and not diagonal.any() and n >= nnz * 0.001)):
        m.setdiag(0)
        m.eliminate_zeros()
        return m
    keep = ~diagonal & (m.data[:nnz] != 0)
    indptr = np.zeros(n + 1, dtype=m.indices.dtype)
    np.cumsum(np.bincount(rows[keep], minlength=n), out=indptr[1:])
    m.indptr, m.indices, m.data = indptr, m.indices[:nnz][keep], m.data[:nnz][keep]
    return m


@dataclass(eq=False)
class TrafficGraph:
    """Blocks, their core resources and the spike traffic between them.

    Block ``i`` of the graph is ``model.blocks[i]`` of the nengo-loihi model it was
    extracted from (same order).

    Attributes
    ----------
    labels : list of str
        Block labels.
    sources : list of str
        The nengo object each block came from, for messages.
    resources : (n_blocks, 4) int64 ndarray
        Columns ``RESOURCES``: compartments, input axon (synapse map) entries, output
        axon config entries with every target on the block's own chip (the row sums
        of ``out_entries``), synapse bits in the block's own synapse formats (as at
        compartment offset 0).
    shared_synapse_bits : (n_blocks,) int64 ndarray
        Synapse bits when the block sits at a compartment offset above 0, where its
        synapse formats are widened to address the whole core.
    configs : dict of str -> scipy.sparse.csr_matrix
        For each of ``CONFIG_KINDS``, a boolean (n_blocks, n_keys) matrix: which
        distinct register entries each block needs.
    core_key : (n_blocks,) int64 ndarray
        Id of (vmin, vmax); blocks sharing a core must have equal ids.
    noise_key : (n_blocks,) int64 ndarray
        Id of (noise_exp, noise_offset, noise_at_membrane), or -1 where no compartment
        of the block has noise enabled (the setting is then inert, and the block may
        join a core with any noise setting).
    learning : (n_blocks,) bool ndarray
        Block has learning synapses; such a block needs a core of its own.
    pop_sender : (n_blocks,) bool ndarray
        Block sends population (pop16/pop32) axons; it needs a core of its own.
    pop16_in_limit : (n_blocks,) int64 ndarray
        0 when the block receives no pop16 axons; else the number of synapse map ids a
        core may use up to and including this block's synapses (``2**axon_bits``).
    axons : scipy.sparse.csr_matrix (n_blocks, n_blocks)
        Axons from source block (row) to target block (column), self-loops removed.
    spikes : scipy.sparse.csr_matrix (n_blocks, n_blocks)
        Expected spikes per time step on the same edges.
    out_entries : scipy.sparse.csr_matrix (n_blocks, n_blocks), optional
        Output axon config entries the axons from block ``i`` (row) into block ``j``
        (column) take on ``i``'s core when ``j`` is on the same chip; the diagonal
        holds a block's axons into itself. Default: each block's
        ``resources[:, out_axons]`` on the diagonal.
    interchip_entries : scipy.sparse.csr_matrix (n_blocks, n_blocks), optional
        Extra entries the same axons take when ``j`` is on another chip (one per
        discrete axon or population axon; zero diagonal). Default: none.
    input_labels : list of str
        Host inputs (spike inputs into the chip).
    input_axons, input_spikes : scipy.sparse.csr_matrix (n_inputs, n_blocks)
        Axons and spikes per step from each host input into blocks.
    dt : float
        Simulation time step in seconds.
    rates : str
        Where ``spikes`` came from: ``"axons"`` (every axon active each step),
        ``"ensemble_rates"``, ``"measured"`` or ``"synthetic"``.
    synops : scipy.sparse.csr_matrix (n_blocks, n_blocks), optional
        Synaptic operations per time step that the spikes of source block (row)
        cause in target block (column): for each source compartment, its spikes per
        step times the synapses its target axon reaches (the fan-out). The diagonal
        holds a block's connections onto itself (they cost synaptic work on its core
        though they carry no traffic). Default: ``spikes`` (one op per spike).
    synmem_reads : scipy.sparse.csr_matrix (n_blocks, n_blocks), optional
        64-bit synapse memory words read per time step on the same edges (each spike
        reads the words that hold its target axon's synapses). Default: ``spikes``.
    input_synops, input_synmem_reads : scipy.sparse.csr_matrix (n_inputs, n_blocks), optional
        The same for host inputs. Default: ``input_spikes``.
    updates : (n_blocks,) float ndarray, optional
        Compartment updates per time step of each block (every compartment is
        updated every step). Default: the block's compartments.
    work : str, optional
        Where the synaptic work came from: ``"synapses"`` (synapse weights and axon
        maps, from extraction) or ``"spikes"`` (not known: one op and one memory
        word per spike, the default when ``synops`` is not given; such graphs share
        the spike matrices and do not write them twice to JSON).
    """

    labels: list
    sources: list
    resources: np.ndarray
    shared_synapse_bits: np.ndarray
    configs: dict
    core_key: np.ndarray
    noise_key: np.ndarray
    learning: np.ndarray
    pop_sender: np.ndarray
    pop16_in_limit: np.ndarray
    axons: sp.csr_matrix
    spikes: sp.csr_matrix
    out_entries: sp.csr_matrix = None
    interchip_entries: sp.csr_matrix = None
    input_labels: list = field(default_factory=list)
    input_axons: sp.csr_matrix = None
    input_spikes: sp.csr_matrix = None
    dt: float = 0.001
    rates: str = "axons"
    synops: sp.csr_matrix = None
    synmem_reads: sp.csr_matrix = None
    input_synops: sp.csr_matrix = None
    input_synmem_reads: sp.csr_matrix = None
    updates: np.ndarray = None
    work: str = None

    def __post_init__(self):
        n = len(self.labels)
        self.resources = np.asarray(self.resources, dtype=np.int64).reshape(n, len(RESOURCES))
        self.shared_synapse_bits = np.asarray(self.shared_synapse_bits, dtype=np.int64)
        for name in ("core_key", "noise_key", "pop16_in_limit"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        self.learning = np.asarray(self.learning, dtype=bool)
        self.pop_sender = np.asarray(self.pop_sender, dtype=bool)
        self.axons = sp.csr_matrix(self.axons, shape=(n, n), dtype=np.float64)
        self.spikes = sp.csr_matrix(self.spikes, shape=(n, n), dtype=np.float64)
        self._entry_fields(n)
        n_in = len(self.input_labels)
        if self.input_axons is None:
            self.input_axons = _empty_csr(n_in, n)
        if self.input_spikes is None:
            self.input_spikes = _empty_csr(n_in, n)
        self.input_axons = sp.csr_matrix(self.input_axons, shape=(n_in, n), dtype=np.float64)
        self.input_spikes = sp.csr_matrix(self.input_spikes, shape=(n_in, n), dtype=np.float64)
        for kind in CONFIG_KINDS:
            mat = self.configs.get(kind)
            if mat is None:
                mat = _empty_csr(n, 0, dtype=bool)
            self.configs[kind] = sp.csr_matrix(mat, dtype=bool)
        self._init_work()
        self._check_shapes()

    def _entry_fields(self, n):
        """Normalize ``out_entries`` and ``interchip_entries`` (int64 CSR)."""
        if self.out_entries is None:
            out = self.resources[:, RESOURCES.index("out_axons")]
            self.out_entries = sp.diags(out.astype(np.float64), format="csr")
        if self.interchip_entries is None:
            self.interchip_entries = _empty_csr(n, n)
        self.out_entries = sp.csr_matrix(self.out_entries, shape=(n, n), dtype=np.int64)
        inter = _without_diagonal(
            sp.csr_matrix(self.interchip_entries, shape=(n, n), dtype=np.int64))
        self.interchip_entries = inter
        self._interchip_csc = None
        self._interchip_totals = None
        rows = np.asarray(self.out_entries.sum(axis=1)).ravel()
        if not np.array_equal(rows, self.resources[:, RESOURCES.index("out_axons")]):
            raise ExtractionError(
                "TrafficGraph.out_entries rows do not add up to the output axon column of "
                "resources. Give out_entries whose row sums are each block's entries."
            )

    def _init_work(self):
        """Synaptic work fields, derived from the spikes where not given."""
        n, n_in = self.n_blocks, self.n_inputs
        if self.work is None:
            self.work = "spikes" if self.synops is None else "synapses"
        for name, default, shape in (
            ("synops", self.spikes, (n, n)),
            ("synmem_reads", self.spikes, (n, n)),
            ("input_synops", self.input_spikes, (n_in, n)),
            ("input_synmem_reads", self.input_spikes, (n_in, n)),
        ):
            mat = getattr(self, name)
            if mat is None:
                # Derived work is the spike matrix itself (no copy of big graphs).
                setattr(self, name, default)
            else:
                setattr(self, name, sp.csr_matrix(mat, shape=shape, dtype=np.float64))
        if self.updates is None:
            self.updates = self.resources[:, RESOURCES.index("compartments")]
        self.updates = np.asarray(self.updates, dtype=np.float64).ravel()

    def _check_shapes(self):
        n = self.n_blocks
        arrays = {
            "sources": len(self.sources),
            "shared_synapse_bits": len(self.shared_synapse_bits),
            "core_key": len(self.core_key),
            "noise_key": len(self.noise_key),
            "learning": len(self.learning),
            "pop_sender": len(self.pop_sender),
            "pop16_in_limit": len(self.pop16_in_limit),
            "updates": len(self.updates),
        }
        arrays.update({f"configs[{k}]": m.shape[0] for k, m in self.configs.items()})
        bad = {k: v for k, v in arrays.items() if v != n}
        if bad:
            raise ExtractionError(
                f"TrafficGraph has {n} blocks but these fields have other lengths: {bad}. "
                f"Give every per-block field one entry per block."
            )

    # ------------------------------------------------------------------ sizes
    @property
    def n_blocks(self):
        """Number of blocks."""
        return len(self.labels)

    @property
    def n_inputs(self):
        """Number of host inputs."""
        return len(self.input_labels)

    def resource(self, name):
        """One resource column by name (``"compartments"``, ``"in_axons"``, ...)."""
        return self.resources[:, RESOURCES.index(name)]

    @property
    def compartments(self):
        """Compartments per block."""
        return self.resource("compartments")

    @property
    def alone(self):
        """Blocks that need a core of their own (learning or population senders)."""
        return self.learning | self.pop_sender

    def core_fraction(self, limits=None):
        """Largest fraction of any additive core resource each block needs.

        Parameters
        ----------
        limits : CoreLimits, optional
            Core limits; Loihi 1 defaults if omitted.

        Returns
        -------
        (n_blocks,) float ndarray
            1.0 for blocks that need a whole core (see `alone`).
        """
        limits = CoreLimits() if limits is None else limits
        frac = (self.resources / limits.capacity_vector()).max(axis=1)
        return np.where(self.alone, 1.0, frac)

    # --------------------------------------------------------------- traffic
    def traffic(self, weight="spikes"):
        """Directed traffic matrix, ``"spikes"`` (per step) or ``"axons"``."""
        if weight not in ("spikes", "axons"):
            raise ValueError(f"weight must be 'spikes' or 'axons', not {weight!r}")
        return self.spikes if weight == "spikes" else self.axons

    def symmetric_traffic(self, weight="spikes"):
        """Undirected traffic ``W + W.T`` as CSR, diagonal removed."""
        w = self.traffic(weight)
        return _without_diagonal((w + w.T).tocsr())

    def edge_arrays(self, weight="spikes"):
        """Directed edges as ``(sources, targets, values)`` int/int/float arrays."""
        coo = self.traffic(weight).tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data

    def heaviest_edges(self, k=10, weight="spikes"):
        """The ``k`` heaviest directed edges, heaviest first.

        Returns
        -------
        list of (int, int, float, float)
            ``(source, target, spikes_per_step, axons)`` tuples.
        """
        src, dst, val = self.edge_arrays(weight)
        order = np.argsort(-val, kind="stable")[:k]
        axons = np.asarray(self.axons[src[order], dst[order]]).ravel()
        spikes = np.asarray(self.spikes[src[order], dst[order]]).ravel()
        return [
            (int(src[o]), int(dst[o]), float(s), float(a))
            for o, s, a in zip(order, spikes, axons)
        ]

    def total_axons(self):
        """Sum of block-to-block axons (self-loops excluded)."""
        return float(self.axons.sum())

    # --------------------------------------------------- output axon entries
    @property
    def interchip_entries_csc(self):
        """``interchip_entries`` in CSC form (who sends to each block), cached."""
        if self._interchip_csc is None:
            self._interchip_csc = self.interchip_entries.tocsc()
        return self._interchip_csc

    @property
    def interchip_entry_totals(self):
        """(n_blocks,) extra entries of each block if every target were off-chip."""
        if self._interchip_totals is None:
            self._interchip_totals = np.asarray(
                self.interchip_entries.sum(axis=1)).ravel().astype(np.int64)
        return self._interchip_totals

    def interchip_extra(self, block_chip):
        """Extra output axon entries each block needs for targets on other chips.

        Parameters
        ----------
        block_chip : (n_blocks,) int array
            Chip of every block.

        Returns
        -------
        (n_blocks,) int64 ndarray
            Add to ``resources[:, out_axons]`` for each block's entries on its core.
        """
        m = self.interchip_entries
        if m.nnz == 0:
            return np.zeros(self.n_blocks, dtype=np.int64)
        block_chip = np.asarray(block_chip)
        rows = np.repeat(np.arange(self.n_blocks), np.diff(m.indptr))
        off = block_chip[rows] != block_chip[m.indices]
        return np.bincount(rows[off], weights=m.data[off],
                           minlength=self.n_blocks).astype(np.int64)

    def block_out_entries(self, block_chip=None):
        """Output axon config entries each block takes on its core.

        Parameters
        ----------
        block_chip : (n_blocks,) int array, optional
            Chip of every block; without it every target counts as on-chip.

        Returns
        -------
        (n_blocks,) int64 ndarray
        """
        base = self.resources[:, RESOURCES.index("out_axons")]
        if block_chip is None:
            return base.copy()
        return base + self.interchip_extra(block_chip)

    # ---------------------------------------------------------- synaptic work
    def block_work(self):
        """Work each block's core does for it per time step.

        Returns
        -------
        (n_blocks, 3) float ndarray
            Columns ``WORK_TERMS``: synaptic operations (from other blocks, from
            itself and from host inputs, i.e. column sums of ``synops`` and
            ``input_synops``), compartment updates, and synapse memory words read.
        """
        synops = np.asarray(self.synops.sum(axis=0)).ravel()
        synops = synops + np.asarray(self.input_synops.sum(axis=0)).ravel()
        reads = np.asarray(self.synmem_reads.sum(axis=0)).ravel()
        reads = reads + np.asarray(self.input_synmem_reads.sum(axis=0)).ravel()
        return np.column_stack([synops, self.updates, reads])

    def fanout(self):
        """Mean synapses reached per spike on every block-to-block edge.

        Returns
        -------
        scipy.sparse.csr_matrix (n_blocks, n_blocks)
            ``synops / spikes`` where an edge carries spikes (self-loops and edges
            without spikes are left out).
        """
        spikes = self.spikes.tocoo()
        keep = spikes.data > 0
        rows, cols = spikes.row[keep], spikes.col[keep]
        ops = np.asarray(self.synops[rows, cols]).ravel()
        return sp.csr_matrix((ops / spikes.data[keep], (rows, cols)), shape=self.spikes.shape)

    # ----------------------------------------------------------- identity
    def fingerprint(self):
        """What the model is, as a string equal in every process and run.

        Only structure enters it: block resources and per-core settings, shared
        config-table entries, axons between blocks and from host inputs. Not the
        block order (which nengo-loihi may change between processes), labels (which
        hold memory addresses for unlabeled objects) or spike rates. See
        `partitioner.identity.fingerprint`.
        """
        from partitioner.identity import fingerprint

        return fingerprint(self)

    # ------------------------------------------------------------- export
    def to_networkx(self):
        """A `networkx.DiGraph`: block nodes ``0..n-1`` and host input nodes.

        Block nodes carry ``kind="block"``, ``label``, ``source`` and each resource;
        input nodes are ``("input", k)`` with ``kind="input"``. Edges carry ``axons``,
        ``spikes``, ``synops`` and ``synmem_reads`` (per step). Block nodes also carry
        ``updates``, ``synops_in`` (all synaptic ops of the block per step) and
        ``self_synops`` (those from its connections onto itself, which have no edge).
        """
        import networkx as nx

        g = nx.DiGraph(dt=self.dt, rates=self.rates)
        for i in range(self.n_blocks):
            attrs = {name: int(self.resources[i, j]) for j, name in enumerate(RESOURCES)}
            g.add_node(
                i, kind="block", label=self.labels[i], source=self.sources[i],
                learning=bool(self.learning[i]), pop_sender=bool(self.pop_sender[i]),
                **attrs,
            )
        work = self.block_work()
        for i in range(self.n_blocks):
            g.nodes[i].update(updates=float(self.updates[i]),
                              self_synops=float(self.synops[i, i]),
                              synops_in=float(work[i, 0]))
        src, dst, spikes = self.edge_arrays("spikes")
        axons = np.asarray(self.axons[src, dst]).ravel()
        synops = np.asarray(self.synops[src, dst]).ravel()
        reads = np.asarray(self.synmem_reads[src, dst]).ravel()
        g.add_edges_from(
            (int(s), int(d), {"spikes": float(w), "axons": float(a),
                              "synops": float(o), "synmem_reads": float(r)})
            for s, d, w, a, o, r in zip(src, dst, spikes, axons, synops, reads)
        )
        for k, label in enumerate(self.input_labels):
            g.add_node(("input", k), kind="input", label=label)
        coo = self.input_axons.tocoo()
        in_spikes = self.input_spikes.tocsr()
        for k, j, a in zip(coo.row, coo.col, coo.data):
            g.add_edge(("input", int(k)), int(j), axons=float(a),
                       spikes=float(in_spikes[k, j]),
                       synops=float(self.input_synops[k, j]),
                       synmem_reads=float(self.input_synmem_reads[k, j]))
        return g

    def to_dict(self):
        """A JSON-serializable dict (see `from_dict`)."""

        def csr(m):
            m = m.tocsr()
            return {
                "shape": list(m.shape),
                "indptr": m.indptr.tolist(),
                "indices": m.indices.tolist(),
                "data": m.data.tolist(),
            }

        return {
            "format": "loihi-partitioner.traffic-graph",
            "version": 2,
            "fingerprint": self.fingerprint(),
            "labels": list(self.labels),
            "sources": list(self.sources),
            "resource_names": list(RESOURCES),
            "resources": self.resources.tolist(),
            "shared_synapse_bits": self.shared_synapse_bits.tolist(),
            "configs": {k: csr(m.astype(np.int8)) for k, m in self.configs.items()},
            "core_key": self.core_key.tolist(),
            "noise_key": self.noise_key.tolist(),
            "learning": self.learning.tolist(),
            "pop_sender": self.pop_sender.tolist(),
            "pop16_in_limit": self.pop16_in_limit.tolist(),
            "axons": csr(self.axons),
            "spikes": csr(self.spikes),
            "out_entries": csr(self.out_entries),
            "interchip_entries": csr(self.interchip_entries),
            "input_labels": list(self.input_labels),
            "input_axons": csr(self.input_axons),
            "input_spikes": csr(self.input_spikes),
            "dt": self.dt,
            "rates": self.rates,
            "updates": self.updates.tolist(),
            "work": self.work,
            # Work derived from the spikes (work == "spikes") is derived again on reading.
            **({} if self.work == "spikes" else {
                "synops": csr(self.synops),
                "synmem_reads": csr(self.synmem_reads),
                "input_synops": csr(self.input_synops),
                "input_synmem_reads": csr(self.input_synmem_reads),
            }),
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a graph written by `to_dict`."""
        if data.get("format") != "loihi-partitioner.traffic-graph":
            raise ExtractionError(
                "Not a traffic graph file (missing format 'loihi-partitioner.traffic-graph'). "
                "Write graphs with TrafficGraph.to_json()."
            )

        def csr(d, dtype=np.float64):
            return sp.csr_matrix(
                (np.asarray(d["data"], dtype=dtype), np.asarray(d["indices"], dtype=np.int64),
                 np.asarray(d["indptr"], dtype=np.int64)),
                shape=tuple(d["shape"]),
            )

        return cls(
            labels=data["labels"],
            sources=data["sources"],
            resources=np.asarray(data["resources"], dtype=np.int64),
            shared_synapse_bits=data["shared_synapse_bits"],
            configs={k: csr(v, dtype=bool) for k, v in data["configs"].items()},
            core_key=data["core_key"],
            noise_key=data["noise_key"],
            learning=data["learning"],
            pop_sender=data["pop_sender"],
            pop16_in_limit=data["pop16_in_limit"],
            axons=csr(data["axons"]),
            spikes=csr(data["spikes"]),
            out_entries=csr(data["out_entries"]) if "out_entries" in data else None,
            interchip_entries=(csr(data["interchip_entries"])
                               if "interchip_entries" in data else None),
            input_labels=data["input_labels"],
            input_axons=csr(data["input_axons"]),
            input_spikes=csr(data["input_spikes"]),
            dt=data["dt"],
            rates=data["rates"],
            # Files written before these fields existed derive them from the spikes.
            **{name: csr(data[name]) for name in
               ("synops", "synmem_reads", "input_synops", "input_synmem_reads")
               if name in data},
            updates=data.get("updates"),
            work=data.get("work"),
        )

    def to_json(self, path):
        """Write the graph to a JSON file."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def from_json(cls, path):
        """Read a graph written by `to_json`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
