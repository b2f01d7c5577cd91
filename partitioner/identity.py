"""Identify a model by what it is, the same in every process and run.

nengo-loihi numbers a model's blocks in an order that can change from one process to
the next (it creates some connections while iterating over sets), and the labels of
unlabeled nengo objects hold memory addresses. So a model is identified here by its
structure only: each block's resources and per-core settings, which config-table
entries blocks share, and the axons between blocks and from host inputs.

* `fingerprint` is a digest of that structure that does not depend on block order:
  for each part of `FINGERPRINT_PARTS`, a digest of the multiset of its items (block
  resource rows, block settings, edges between blocks of given sizes, host input
  edges), so that `fingerprint_differences` can say *what* differs between two
  models. It is cheap (linear in the size of the graph).
* `block_order` puts the blocks in a canonical order by colour refinement (the
  Weisfeiler-Leman method): every block, config key and host input starts with a
  colour from its own attributes and repeatedly mixes in the multiset of its
  neighbours' colours until the colours stop splitting; while two blocks share a
  colour, the first block of the smallest such colour gets a colour of its own and
  the colours are refined again. Blocks that tie when chosen are interchangeable
  (swapping them maps the model onto itself), so the canonical rank of each block
  names it the same way in every process. `BlockOrder.digest` hashes the model in
  that order: equal digests mean the same model, wiring included, and
  `BlockOrder.mapping` then maps a saved plan's blocks onto a model built anew.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "FINGERPRINT_PARTS",
    "BlockOrder",
    "block_order",
    "fingerprint",
    "fingerprint_differences",
    "parse_fingerprint",
    "reordered",
]

#: Parts of a fingerprint, in order, and what it means when one differs.
FINGERPRINT_PARTS = OrderedDict([
    ("blocks", "the blocks' sizes (compartments, input or output axons, synapse memory)"),
    ("settings", "the blocks' per-core settings (config-table entries, voltage limits, "
                 "noise, learning or population axons)"),
    ("edges", "the connections between blocks"),
    ("inputs", "the host inputs or where they connect"),
])
_COUNTED = {"blocks": "blocks", "edges": "block-to-block edges", "inputs": "host inputs"}
#: Work `block_order` may spend separating tied blocks, in node and incidence visits:
#: this many refinement rounds over the whole model, and at least `MIN_WORK`. The
#: ties left then (only in large, highly symmetric models) are broken by block index,
#: and `BlockOrder.exact` is False.
WORK_ROUNDS = 400
MIN_WORK = 50_000_000

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_M1, _M2 = _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
# Salts of the kinds of incidence, so that "sends to" differs from "receives from".
_SALT_NAMES = (
    "block", "key", "input", "out", "in", "input_out", "input_in", "individual",
    "compartment_cfgs", "vth_cfgs", "synapse_cfgs", "synapse_cfgs_shared",
    "stdp_pre_cfgs", "core_key", "noise_key", "user",
)
_SALTS = {name: _U((i * 0x632BE59BD9B4E019 + 0x2545F4914F6CDD1D) % 2**64)
          for i, name in enumerate(_SALT_NAMES)}
#: Config kinds whose key ids share one space (own and widened synapse formats).
_KEY_SPACES = {
    "compartment_cfgs": "compartment_cfgs",
    "vth_cfgs": "vth_cfgs",
    "synapse_cfgs": "synapse_cfgs",
    "synapse_cfgs_shared": "synapse_cfgs",
    "stdp_pre_cfgs": "stdp_pre_cfgs",
}


def _mix(x):
    """splitmix64 of every element (uint64 in, uint64 out; the input is not changed)."""
    with np.errstate(over="ignore"):
        z = np.array(x, dtype=_U, ndmin=1)  # a copy, worked on in place
        z += _GOLDEN
        t = z >> _U(30)
        z ^= t
        z *= _M1
        np.right_shift(z, _U(27), out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, _U(31), out=t)
        z ^= t
        return z if np.ndim(x) else z[0]


def _bits(values):
    """Exact 64-bit patterns of float values (``-0.0`` taken as ``0.0``)."""
    return (np.asarray(values, dtype=np.float64) + 0.0).view(_U)


def _combine(columns):
    """One colour per row from integer or float columns."""
    h = np.full(len(columns[0]), _SALTS["block"], dtype=_U)
    for col in columns:
        col = np.asarray(col)
        raw = _bits(col) if col.dtype.kind == "f" else col.astype(np.int64).view(_U)
        h = _mix(h ^ raw)
    return h


# ----------------------------------------------------------------- structure
class _Structure:
    """Blocks, config keys and host inputs as one graph of coloured nodes.

    Nodes ``0 .. n_blocks - 1`` are blocks, then the config keys of every key space,
    then host inputs. Each incidence is stored at both ends, as (node, neighbour,
    salt) with a salt naming its kind (and the axon count of an edge).
    """

    def __init__(self, graph):
        n = self.n_blocks = graph.n_blocks
        src, dst, salt = [], [], []
        ax = sp.coo_matrix(graph.axons)
        w = _mix(_bits(ax.data))
        self._link(src, dst, salt, ax.row, ax.col, w ^ _SALTS["out"], w ^ _SALTS["in"])
        # Key nodes: one range per key space, then core and noise keys.
        ranges = {}
        offset = n
        for space in dict.fromkeys(_KEY_SPACES.values()):
            size = max(graph.configs[k].shape[1] for k, sp_ in _KEY_SPACES.items()
                       if sp_ == space)
            ranges[space] = (offset, size)
            offset += size
        for kind, space in _KEY_SPACES.items():
            m = sp.coo_matrix(graph.configs[kind])
            kind_salt = np.full(m.nnz, _mix(_SALTS[kind]), dtype=_U)
            self._link(src, dst, salt, m.row, ranges[space][0] + m.col, kind_salt,
                       kind_salt ^ _SALTS["user"])
        for kind in ("core_key", "noise_key"):
            keys = np.asarray(getattr(graph, kind), dtype=np.int64)
            has = np.flatnonzero(keys >= 0)
            kind_salt = np.full(has.size, _mix(_SALTS[kind]), dtype=_U)
            ranges[kind] = (offset, int(keys.max(initial=-1)) + 1)
            self._link(src, dst, salt, has, offset + keys[has], kind_salt,
                       kind_salt ^ _SALTS["user"])
            offset += ranges[kind][1]
        inp = sp.coo_matrix(graph.input_axons)
        w = _mix(_bits(inp.data))
        self._link(src, dst, salt, offset + inp.row, inp.col, w ^ _SALTS["input_out"],
                   w ^ _SALTS["input_in"])
        self.n_nodes = offset + graph.n_inputs

        self.source = np.concatenate(src)
        self.neighbour = np.concatenate(dst)
        self.salt = np.concatenate(salt)

        colours = np.full(self.n_nodes, _SALTS["input"], dtype=_U)
        colours[:n] = _combine([*graph.resources.T, graph.shared_synapse_bits,
                                graph.learning, graph.pop_sender, graph.pop16_in_limit])
        for name, (start, size) in ranges.items():
            colours[start:start + size] = _mix(_SALTS["key"] ^ _SALTS[name])
        self.initial = colours

    @staticmethod
    def _link(src, dst, salt, a, b, salt_ab, salt_ba):
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        src += [a, b]
        dst += [b, a]
        salt += [np.asarray(salt_ab, dtype=_U), np.asarray(salt_ba, dtype=_U)]

    def refine(self, colours):
        """Colours refined until no colour class splits any more.

        Returns
        -------
        colours : (n_nodes,) uint64 ndarray
        rounds : int
            Refinement rounds run.
        """
        count = np.unique(colours).size
        rounds = 0
        while True:
            rounds += 1
            sums = np.zeros(self.n_nodes, dtype=_U)
            with np.errstate(over="ignore"):
                np.add.at(sums, self.source, _mix(colours[self.neighbour] + self.salt))
                new = _mix(colours * _M1 + _mix(sums))
            new_count = np.unique(new).size
            if new_count == count:
                return colours, rounds
            colours, count = new, new_count

    @property
    def size(self):
        """Nodes plus incidences: the work of one refinement round."""
        return self.n_nodes + self.neighbour.size


# ------------------------------------------------------------------ caching
#: Block orders of the graphs seen last (keyed by their content), so that several
#: plans of one graph (a what-if sweep) compute it once.
_CACHE = OrderedDict()
_CACHE_SIZE = 8


def _raw_digest(graph):
    """sha256 of the graph's structure arrays as stored (cheap; order-dependent)."""
    h = hashlib.sha256()
    arrays = [graph.resources, graph.shared_synapse_bits, graph.core_key,
              graph.noise_key, graph.learning, graph.pop_sender, graph.pop16_in_limit]
    for m in [graph.axons, graph.input_axons] + [graph.configs[k] for k in _KEY_SPACES]:
        m = m.tocsr()
        arrays += [np.array(m.shape), m.indptr, m.indices, m.data]
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _cached(graph, what, compute):
    key = (_raw_digest(graph), what)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = compute()
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return found


# --------------------------------------------------------------- fingerprint
def _text(items):
    """sha256 (hex) of arrays and strings, in order."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, str):
            h.update(item.encode() + b"|")
            continue
        arr = np.ascontiguousarray(item)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _row_hashes(columns):
    """One uint64 hash per row of equal-length 1-D columns (ints, bools or floats)."""
    return _combine(columns)


def _multiset(columns):
    """Order-independent digest (32 hex digits) of the rows of ``columns``."""
    rows = _row_hashes(columns) if len(columns[0]) else np.zeros(0, dtype=_U)
    with np.errstate(over="ignore"):
        lanes = [_mix(rows ^ _U(lane)).sum(dtype=_U) for lane in (0x5DEECE66D, 0xB)]
    return f"{rows.size}:" + "".join(f"{int(x):016x}" for x in lanes)


def _parts(graph):
    """``{part: (count or None, hex digest)}``; each digest is order-independent."""
    n = graph.n_blocks
    size_colour = _combine([*graph.resources.T, graph.shared_synapse_bits])
    keys_per_block = [np.diff(sp.csr_matrix(graph.configs[k]).indptr) for k in _KEY_SPACES]
    blocks_per_key = [np.sort(np.diff(sp.csc_matrix(graph.configs[k]).indptr))
                      for k in _KEY_SPACES]
    noise = np.asarray(graph.noise_key)
    ax = sp.coo_matrix(graph.axons)
    inp = sp.coo_matrix(graph.input_axons)
    in_degree = np.bincount(inp.row, minlength=graph.n_inputs)
    settings = [
        _multiset([graph.learning, graph.pop_sender, graph.pop16_in_limit,
                   noise >= 0, *keys_per_block]),
        np.sort(np.bincount(np.asarray(graph.core_key, dtype=np.int64), minlength=1)),
        np.sort(np.bincount(noise[noise >= 0], minlength=1)),
        *blocks_per_key,
    ]
    return OrderedDict([
        ("blocks", (n, _text([_multiset([*graph.resources.T,
                                          graph.shared_synapse_bits])]))),
        ("settings", (None, _text(settings))),
        ("edges", (int(ax.nnz), _text([_multiset([size_colour[ax.row],
                                                  size_colour[ax.col], ax.data])]))),
        ("inputs", (graph.n_inputs, _text([np.sort(in_degree), _multiset(
            [size_colour[inp.col], inp.data])]))),
    ])


def fingerprint(graph):
    """A string naming the model behind ``graph``, equal in every process and run.

    Parameters
    ----------
    graph : TrafficGraph

    Returns
    -------
    str
        ``"<16 hex>/blocks=N:<8 hex>/settings:<8 hex>/edges=E:<8 hex>/inputs=I:<8
        hex>"``: a digest of the whole structure (`block_order`'s colours), then one
        per part of `FINGERPRINT_PARTS`, so that `fingerprint_differences` can say
        which part of two models differs. Block order, labels, sources and spike
        rates do not enter it.
    """
    parts = _parts(graph)
    overall = hashlib.sha256("".join(d for _, d in parts.values()).encode()).hexdigest()
    fields = [
        f"{name}{'' if count is None else f'={count}'}:{digest[:8]}"
        for name, (count, digest) in parts.items() if name in FINGERPRINT_PARTS
    ]
    return "/".join([overall[:16]] + fields)


def parse_fingerprint(text):
    """The parts of a fingerprint made by `fingerprint`.

    Parameters
    ----------
    text : str

    Returns
    -------
    dict or None
        ``{part: (count or None, digest)}``, None when ``text`` is not in that format
        (e.g. a plan saved by an earlier version, whose fingerprint was one digest
        that included block labels).
    """
    fields = str(text).split("/")
    if len(fields) != len(FINGERPRINT_PARTS) + 1:
        return None
    parts = OrderedDict()
    for text_field in fields[1:]:
        head, _, digest = text_field.partition(":")
        name, _, count = head.partition("=")
        if name not in FINGERPRINT_PARTS or not digest:
            return None
        parts[name] = (int(count) if count.isdigit() else None, digest)
    return parts if list(parts) == list(FINGERPRINT_PARTS) else None


def fingerprint_differences(expected, found):
    """What differs between two models, from their fingerprints.

    Parameters
    ----------
    expected, found : str
        Fingerprints, e.g. a saved plan's and a model's.

    Returns
    -------
    list of str
        One phrase per differing part, empty when the fingerprints are equal.
    """
    if expected == found:
        return []
    a, b = parse_fingerprint(expected), parse_fingerprint(found)
    if a is None or b is None:
        return ["the fingerprint was written by an earlier version of "
                "loihi-partitioner, which named models by block labels that change "
                "between runs"]
    out = []
    for name, text in FINGERPRINT_PARTS.items():
        (count_a, digest_a), (count_b, digest_b) = a[name], b[name]
        if count_a is not None and count_a != count_b:
            out.append(f"{text} ({count_a} vs {count_b} {_COUNTED[name]})")
        elif digest_a != digest_b:
            out.append(text)
    return out or ["how the blocks are wired together (same blocks, settings and "
                   "numbers of edges)"]


# ------------------------------------------------------------- block order
@dataclass(frozen=True, eq=False)
class BlockOrder:
    """A canonical order of a model's blocks.

    Attributes
    ----------
    ranks : (n_blocks,) int64 ndarray
        Canonical position of each block (a permutation of ``0 .. n_blocks - 1``).
    digest : str
        Hash of the model with its blocks in canonical order. Two models with equal
        digests are the same model up to block order, and `mapping` between them is
        exact.
    exact : bool
        False when `block_order` stopped separating tied blocks (its budget ran out)
        and broke the remaining ties by block index.
    """

    ranks: np.ndarray
    digest: str
    exact: bool = True

    def to_dict(self):
        """A JSON-serializable dict (see `from_dict`)."""
        return {"ranks": np.asarray(self.ranks).tolist(), "digest": self.digest,
                "exact": bool(self.exact)}

    @classmethod
    def from_dict(cls, data):
        """Rebuild an order written by `to_dict`."""
        return cls(ranks=np.asarray(data["ranks"], dtype=np.int64),
                   digest=str(data["digest"]), exact=bool(data.get("exact", True)))

    def mapping(self, other):
        """For each block of this order's model, the block of ``other``'s model at
        the same canonical position.

        Parameters
        ----------
        other : BlockOrder
            Order of a model with the same fingerprint.

        Returns
        -------
        (n_blocks,) int64 ndarray
        """
        inverse = np.empty_like(other.ranks)
        inverse[other.ranks] = np.arange(other.ranks.size)
        return inverse[self.ranks]


def block_order(graph):
    """The canonical order of ``graph``'s blocks (see the module docstring).

    Parameters
    ----------
    graph : TrafficGraph

    Returns
    -------
    BlockOrder
    """
    return _cached(graph, "order", lambda: _block_order(graph))


def _block_order(graph):
    s = _Structure(graph)
    colours, _ = s.refine(s.initial)
    n = graph.n_blocks
    component = None
    budget = max(MIN_WORK, WORK_ROUNDS * s.size)
    exact = True
    work = 0
    while n:
        values, inverse, counts = np.unique(colours[:n], return_inverse=True,
                                            return_counts=True)
        tied = np.flatnonzero(counts > 1)
        if tied.size == 0:
            break
        if work >= budget:
            exact = False
            break
        # The smallest tied colour: its first block in each connected part of the
        # model that has one (parts are told apart at once: copies of a sub-network).
        members = np.flatnonzero(inverse.reshape(-1) == tied[0])
        if component is None:
            component = _components(graph)
        members = members[np.unique(component[members], return_index=True)[1]]
        members.sort()
        colours[members] = _mix(colours[members] ^ _SALTS["individual"]
                                ^ np.arange(1, members.size + 1, dtype=_U))
        colours, rounds = s.refine(colours)
        work += rounds * s.size
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.lexsort((np.arange(n), colours[:n]))] = np.arange(n)
    return BlockOrder(ranks=ranks, digest=_canonical_digest(graph, ranks), exact=exact)


def _components(graph):
    """Connected part of each block, through axons between blocks."""
    from scipy.sparse.csgraph import connected_components

    return connected_components(graph.axons, directed=True, connection="weak")[1]


def _canonical_digest(graph, ranks):
    """Hash of the graph's structure with block ``b`` renumbered ``ranks[b]``."""
    order = np.argsort(ranks)
    key_spaces = []
    for space in dict.fromkeys(_KEY_SPACES.values()):
        kinds = [k for k, sp_ in _KEY_SPACES.items() if sp_ == space]
        width = max(graph.configs[k].shape[1] for k in kinds)
        # Kinds of one space share key ids: renumber them together.
        stacked = sp.vstack([sp.csr_matrix(graph.configs[k][order], shape=(
            graph.n_blocks, width)) for k in kinds])
        key_spaces.append(_first_use(stacked))
    ax = sp.coo_matrix(graph.axons)
    inp = sp.coo_matrix(graph.input_axons)
    return _text([
        graph.resources[order], graph.shared_synapse_bits[order],
        np.asarray(graph.learning)[order], np.asarray(graph.pop_sender)[order],
        graph.pop16_in_limit[order],
        _relabel(np.asarray(graph.core_key)[order]),
        _relabel(np.asarray(graph.noise_key)[order], missing=-1),
        _multiset([ranks[ax.row], ranks[ax.col], ax.data]),
        # Host inputs are unordered: compare the multiset of their axon rows.
        _multiset(_input_rows(inp, ranks)),
        *key_spaces,
    ])


def _input_rows(inp, ranks):
    """Per host input edge: (hash of the input's whole row, target rank, axons)."""
    row_hash = np.zeros(inp.shape[0], dtype=_U)
    terms = _mix(ranks[inp.col].astype(np.int64).view(_U) ^ _mix(_bits(inp.data)))
    with np.errstate(over="ignore"):
        np.add.at(row_hash, inp.row, terms)
    return [row_hash[inp.row].view(np.int64), ranks[inp.col], inp.data]


def _relabel(values, missing=None):
    """``values`` renumbered 0, 1, ... by first appearance (``missing`` kept)."""
    values = np.asarray(values, dtype=np.int64)
    keep = np.ones(values.size, dtype=bool) if missing is None else values != missing
    out = values.copy()
    if keep.any():
        uniq, first, inverse = np.unique(values[keep], return_index=True,
                                         return_inverse=True)
        rank = np.empty(uniq.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
        out[keep] = rank[inverse.reshape(-1)]
    return out


def _first_use(matrix):
    """Digest of a key matrix with keys renumbered by first use (rows in order)."""
    m = sp.csr_matrix(matrix, dtype=np.int8)
    m.sum_duplicates()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return _multiset([rows, _relabel(m.indices)])


# ------------------------------------------------------------- renumbering
#: Graph fields that describe host inputs: their columns are blocks, rows inputs.
_INPUT_FIELDS = ("input_labels", "input_axons", "input_spikes", "input_synops",
                 "input_synmem_reads")


def reordered(graph, order):
    """``graph`` with its blocks renumbered: new block ``j`` is old block ``order[j]``.

    Every per-block field moves with its block: lists and arrays of one entry per
    block, block x block sparse matrices (both axes), config matrices (rows) and host
    input matrices (columns). A field of any other shape raises TypeError, so that a
    new kind of field cannot be silently left in the old order.

    Parameters
    ----------
    graph : TrafficGraph
    order : (n_blocks,) int array
        A permutation.

    Returns
    -------
    TrafficGraph
    """
    import dataclasses

    order = np.asarray(order, dtype=np.int64)
    n = graph.n_blocks
    values = {}
    patterns = _Patterns(order)
    for f in dataclasses.fields(graph):
        value = getattr(graph, f.name)
        if f.name in _INPUT_FIELDS:
            values[f.name] = value[:, order] if sp.issparse(value) else value
        else:
            values[f.name] = _reordered_field(f.name, value, order, n, patterns)
    return type(graph)(**values)


class _Patterns:
    """Block x block matrices renumbered by one permutation; matrices with the same
    sparsity pattern (the edge matrices of a graph mostly share one) reuse where its
    entries went instead of permuting again."""

    def __init__(self, order):
        self.order = order
        self.seen = []  # (pattern matrix, its entries' source positions after reordering)

    def reordered(self, m):
        for pattern, source in self.seen:
            if (np.array_equal(m.indptr, pattern.indptr) and
                    np.array_equal(m.indices, pattern.indices)):
                break
        else:
            # Positions counted from 1: an entry 0 could be taken for an empty one.
            positions = sp.csr_matrix(
                (np.arange(1, m.nnz + 1, dtype=np.int64), m.indices, m.indptr),
                shape=m.shape)
            source = positions[self.order][:, self.order]
            source.data -= 1
            self.seen.append((m, source))
        return sp.csr_matrix((m.data[source.data], source.indices, source.indptr),
                             shape=m.shape)


def _reordered_field(name, value, order, n, patterns):
    if isinstance(value, dict):
        return {k: _reordered_field(f"{name}[{k}]", v, order, n, patterns)
                for k, v in value.items()}
    if sp.issparse(value):
        m = sp.csr_matrix(value)
        if m.shape == (n, n):
            return patterns.reordered(m)
        if m.shape[0] == n:
            return m[order]
    elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
        return value[order]
    elif isinstance(value, list) and len(value) == n:
        return [value[i] for i in order]
    elif value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(
        f"TrafficGraph field {name!r} ({type(value).__name__}) has no known block "
        f"axis; teach partitioner.identity.reordered how to renumber it."
    )
