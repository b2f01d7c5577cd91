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
from numba import njit

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
_SALT_BLOCK = _SALTS["block"]
#: Salts of `_multiset`'s two lanes.
_LANE0, _LANE1 = _U(0x5DEECE66D), _U(0xB)
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
    z = np.array(x, dtype=_U, ndmin=1)  # a copy, worked on in place
    _mix_inplace(z)
    return z if np.ndim(x) else z[0]


def _mix_inplace(z):
    """`_mix` of a uint64 array, written over it (one temporary, no other copies)."""
    with np.errstate(over="ignore"):
        z += _GOLDEN
        t = z >> _U(30)
        z ^= t
        z *= _M1
        np.right_shift(z, _U(27), out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, _U(31), out=t)
        z ^= t
    return z


@njit(inline="always")
def _mix1(z):
    """`_mix` of one uint64, for compiled code (same wraparound arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> _U(30))) * _M1
    z = (z ^ (z >> _U(27))) * _M2
    return z ^ (z >> _U(31))


def _bits(values):
    """Exact 64-bit patterns of float values (``-0.0`` taken as ``0.0``)."""
    return (np.asarray(values, dtype=np.float64) + 0.0).view(_U)


def _raw(column):
    """A column's values as uint64 words: `_bits` of floats, integers as int64."""
    column = np.asarray(column)
    if column.dtype.kind == "f":
        return _bits(column)
    return column.astype(np.int64).view(_U)


def _combine(columns):
    """One colour per row from integer or float columns."""
    h = np.full(len(columns[0]), _SALTS["block"], dtype=_U)
    for col in columns:
        h ^= _raw(col)
        _mix_inplace(h)
    return h


# ----------------------------------------------------------------- structure
class _Structure:
    """Blocks, config keys and host inputs as one graph of coloured nodes.

    Nodes ``0 .. n_blocks - 1`` are blocks, then the config keys of every key space,
    then host inputs. Incidences come in groups, each a CSR matrix of edges ``a -> b``
    (row ``r`` is node ``a0 + r``, column ``c`` node ``b0 + c``) with a salt naming
    the kind of each end (and, for axons, the axon count); every edge counts at both
    ends. The groups are the graph's own matrices, not copied into incidence lists.
    """

    def __init__(self, graph):
        n = self.n_blocks = graph.n_blocks
        self.groups = []
        ax = sp.csr_matrix(graph.axons)
        self._link(ax.indptr, ax.indices, 0, 0, _mix(_bits(ax.data)), _SALTS["out"],
                   _SALTS["in"])
        # Key nodes: one range per key space, then core and noise keys.
        ranges = {}
        offset = n
        for space in dict.fromkeys(_KEY_SPACES.values()):
            size = max(graph.configs[k].shape[1] for k, sp_ in _KEY_SPACES.items()
                       if sp_ == space)
            ranges[space] = (offset, size)
            offset += size
        for kind, space in _KEY_SPACES.items():
            m = sp.csr_matrix(graph.configs[kind])
            kind_salt = _mix(_SALTS[kind])
            self._link(m.indptr, m.indices, 0, ranges[space][0], None, kind_salt,
                       kind_salt ^ _SALTS["user"])
        for kind in ("core_key", "noise_key"):
            keys = np.asarray(getattr(graph, kind), dtype=np.int64)
            has = keys >= 0
            # One row per block: its key, or nothing.
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(has, out=indptr[1:])
            kind_salt = _mix(_SALTS[kind])
            ranges[kind] = (offset, int(keys.max(initial=-1)) + 1)
            self._link(indptr, keys[has], 0, offset, None, kind_salt,
                       kind_salt ^ _SALTS["user"])
            offset += ranges[kind][1]
        inp = sp.csr_matrix(graph.input_axons)
        self._link(inp.indptr, inp.indices, offset, 0, _mix(_bits(inp.data)),
                   _SALTS["input_out"], _SALTS["input_in"])
        self.n_nodes = offset + graph.n_inputs
        self.n_incidences = 2 * sum(g[1].size for g in self.groups)

        colours = np.full(self.n_nodes, _SALTS["input"], dtype=_U)
        colours[:n] = _combine([*graph.resources.T, graph.shared_synapse_bits,
                                graph.learning, graph.pop_sender, graph.pop16_in_limit])
        for name, (start, size) in ranges.items():
            colours[start:start + size] = _mix(_SALTS["key"] ^ _SALTS[name])
        self.initial = colours

    def _link(self, indptr, indices, a0, b0, weights, salt_ab, salt_ba):
        """Add the edges of a CSR structure; ``weights`` per entry, or None (0)."""
        nnz = int(indptr[-1])
        weights = np.zeros(0, dtype=_U) if weights is None else weights[:nnz]
        self.groups.append((indptr, indices[:nnz], weights, int(a0), int(b0),
                            _U(salt_ab), _U(salt_ba)))

    def refine(self, colours):
        """Colours refined until no colour class splits any more.

        Each round, every node's colour becomes a hash of its colour and the sum (a
        multiset hash) of its incidences' ``_mix(neighbour colour + salt)``.

        Returns
        -------
        colours : (n_nodes,) uint64 ndarray
        rounds : int
            Refinement rounds run.
        """
        count = _n_distinct(colours)
        buffer = np.empty(max((g[1].size for g in self.groups), default=0), dtype=_U)
        rounds = 0
        while True:
            rounds += 1
            sums = np.zeros(self.n_nodes, dtype=_U)
            for group in self.groups:
                _add_incidences(sums, colours, *group, buffer)
            with np.errstate(over="ignore"):
                new = colours * _M1
                new += _mix_inplace(sums)
            _mix_inplace(new)
            new_count = _n_distinct(new)
            if new_count == count:
                return colours, rounds
            colours, count = new, new_count

    @property
    def size(self):
        """Nodes plus incidences: the work of one refinement round."""
        return self.n_nodes + self.n_incidences


@njit(cache=True)
def _add_incidences(sums, colours, indptr, indices, weights, a0, b0, salt_ab, salt_ba,
                    buffer):
    """``sums[a] += _mix(colours[b] + salt_ab)`` and ``sums[b] += _mix(colours[a] +
    salt_ba)`` for every edge ``a -> b`` of one group, where each salt is the
    entry's weight (0 without weights) xor the group's salt for that end.

    The neighbours' colours are gathered, and the sums scattered, in passes of their
    own: a loop of independent loads runs several times faster on large graphs than
    loads interleaved with the hashing.
    """
    weighted = weights.size > 0
    for j in range(indices.size):
        buffer[j] = colours[b0 + indices[j]]
    for r in range(indptr.size - 1):
        a = a0 + r
        own = colours[a]
        total = _U(0)
        for j in range(indptr[r], indptr[r + 1]):
            w = weights[j] if weighted else _U(0)
            total += _mix1(buffer[j] + (w ^ salt_ab))
            buffer[j] = _mix1(own + (w ^ salt_ba))
        sums[a] += total
    for j in range(indices.size):
        sums[b0 + indices[j]] += buffer[j]


@njit(cache=True)
def _n_distinct(values):
    """``np.unique(values).size`` of a uint64 array, by open addressing (no sort)."""
    size = 16
    while size < 2 * values.size:
        size *= 2
    mask = _U(size - 1)
    table = np.empty(size, dtype=values.dtype)
    used = np.zeros(size, dtype=np.bool_)
    count = 0
    for v in values:
        slot = _mix1(v) & mask  # values may be structured (equal high bits)
        while used[slot] and table[slot] != v:
            slot = (slot + _U(1)) & mask
        if not used[slot]:
            used[slot] = True
            table[slot] = v
            count += 1
    return count


# ------------------------------------------------------------------ caching
#: Block orders and fingerprints of the graphs seen last (keyed by their content),
#: so that several plans of one graph (a what-if sweep) compute them once.
_CACHE = OrderedDict()
_CACHE_SIZE = 16


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
        lanes = [_mix(rows ^ lane).sum(dtype=_U) for lane in (_LANE0, _LANE1)]
    return _lanes_text(rows.size, lanes)


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
    return _cached(graph, "fingerprint", lambda: _fingerprint(graph))


def _fingerprint(graph):
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

    @property
    def blocks(self):
        """The block at each canonical position (the inverse permutation of `ranks`).

        Returns
        -------
        (n_blocks,) int64 ndarray
        """
        return _inverse(self.ranks)

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
        return other.blocks[self.ranks]


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
    while True:
        # Canonical order: by colour, blocks of equal colour by index.
        order = np.argsort(colours[:n], kind="stable")
        in_order = colours[order]
        ties = in_order[1:] == in_order[:-1]
        if not ties.any():
            break
        if work >= budget:
            exact = False
            break
        # The smallest tied colour: its first block in each connected part of the
        # model that has one (parts are told apart at once: copies of a sub-network).
        members = np.flatnonzero(colours[:n] == in_order[np.argmax(ties)])
        if component is None:
            component = _components(graph)
        members = members[np.unique(component[members], return_index=True)[1]]
        members.sort()
        colours[members] = _mix(colours[members] ^ _SALTS["individual"]
                                ^ np.arange(1, members.size + 1, dtype=_U))
        colours, rounds = s.refine(colours)
        work += rounds * s.size
    ranks = _inverse(order)
    return BlockOrder(ranks=ranks, digest=_canonical_digest(graph, ranks, order),
                      exact=exact)


def _inverse(permutation):
    """The inverse of a permutation of ``0 .. n - 1`` (as ``np.argsort``, no sort)."""
    permutation = np.asarray(permutation)
    inverse = np.empty(permutation.size, dtype=np.int64)
    inverse[permutation] = np.arange(permutation.size)
    return inverse


def _components(graph):
    """Connected part of each block, through axons between blocks."""
    from scipy.sparse.csgraph import connected_components

    return connected_components(graph.axons, directed=True, connection="weak")[1]


def _canonical_digest(graph, ranks, order):
    """Hash of the graph's structure with block ``b`` renumbered ``ranks[b]``;
    ``order`` is the inverse of ``ranks`` (the block at each position)."""
    key_spaces = []
    for space in dict.fromkeys(_KEY_SPACES.values()):
        kinds = [k for k, sp_ in _KEY_SPACES.items() if sp_ == space]
        key_spaces.append(_first_use([sp.csr_matrix(graph.configs[k]) for k in kinds],
                                     ranks))
    ax = sp.csr_matrix(graph.axons)
    ranks_u = np.ascontiguousarray(ranks, dtype=np.int64).view(_U)
    inp = sp.coo_matrix(graph.input_axons)
    return _text([
        graph.resources[order], graph.shared_synapse_bits[order],
        np.asarray(graph.learning)[order], np.asarray(graph.pop_sender)[order],
        graph.pop16_in_limit[order],
        _relabel(np.asarray(graph.core_key)[order]),
        _relabel(np.asarray(graph.noise_key)[order], missing=-1),
        # The multiset of (source rank, target rank, axons) over the edges.
        _lanes_text(ax.nnz, _edge_lanes(ax.indptr, ax.indices[:ax.nnz],
                                        _raw(ax.data[:ax.nnz]), ranks_u)),
        # Host inputs are unordered: compare the multiset of their axon rows.
        _multiset(_input_rows(inp, ranks)),
        *key_spaces,
    ])


def _lanes_text(count, lanes):
    """`_multiset`'s text from a row count and its two lane sums."""
    return f"{count}:" + "".join(f"{int(x):016x}" for x in lanes)


@njit(cache=True)
def _edge_lanes(indptr, indices, bits, ranks):
    """`_multiset` lane sums of the rows ``(ranks[row], ranks[col], data)`` of a CSR
    matrix (``bits``: its data as `_raw`; ``ranks`` as uint64)."""
    targets = np.empty(indices.size, dtype=_U)
    for j in range(indices.size):  # gathered in a pass of its own (see _add_incidences)
        targets[j] = ranks[indices[j]]
    lane0 = _U(0)
    lane1 = _U(0)
    for r in range(indptr.size - 1):
        source = _mix1(_SALT_BLOCK ^ ranks[r])
        for j in range(indptr[r], indptr[r + 1]):
            h = _mix1(_mix1(source ^ targets[j]) ^ bits[j])
            lane0 += _mix1(h ^ _LANE0)
            lane1 += _mix1(h ^ _LANE1)
    return lane0, lane1


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
    kept = values[keep]
    if not kept.size:
        return out
    low, high = int(kept.min()), int(kept.max())
    if high - low <= 4 * kept.size:
        # Ids from a small range (the usual case): first positions by table, no sort.
        at = kept - low
        first = np.full(high - low + 1, kept.size, dtype=np.int64)
        np.minimum.at(first, at, np.arange(kept.size))
        seen = np.flatnonzero(first < kept.size)
        label = np.empty(first.size, dtype=np.int64)
        label[seen[np.argsort(first[seen], kind="stable")]] = np.arange(seen.size)
        out[keep] = label[at]
    else:
        uniq, first, inverse = np.unique(kept, return_index=True, return_inverse=True)
        rank = np.empty(uniq.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
        out[keep] = rank[inverse.reshape(-1)]
    return out


def _first_use(matrices, ranks):
    """Digest of key matrices (of one key space, stacked) with block ``b`` renumbered
    ``ranks[b]`` and keys renumbered by first use.

    The same text as `_multiset` of (stacked row, key's first-use number) over the
    distinct keys of each row, block ``b`` of ``matrices[t]`` being stacked row ``t *
    n + ranks[b]``, and keys numbered in order of first use, stacked rows first, then
    keys in increasing order. The rows are read in their own order, not the
    canonical one (random row access is slow on large graphs).
    """
    n = ranks.size
    width = max(m.shape[1] for m in matrices)
    canonical = []
    for m in matrices:
        # A new matrix on the same arrays, so the format check is not cached on the
        # graph's own matrix.
        m = sp.csr_matrix((m.data, m.indices, m.indptr), shape=m.shape)
        if not m.has_canonical_format:  # rows unsorted or with repeated keys
            m = m.copy()
            m.sum_duplicates()
        canonical.append(m)
    never = np.iinfo(np.int64).max
    first = np.full(width, never, dtype=np.int64)
    for t, m in enumerate(canonical):
        _key_first_uses(m.indptr, m.indices, ranks, t * n, width, first)
    used = np.flatnonzero(first < never)
    labels = np.full(width, -1, dtype=np.int64)
    labels[used[np.argsort(first[used])]] = np.arange(used.size)
    lanes = np.zeros(2, dtype=_U)
    for t, m in enumerate(canonical):
        _key_lanes(m.indptr, m.indices, ranks, t * n, labels, lanes)
    return _lanes_text(sum(m.nnz for m in canonical), lanes)


@njit(cache=True)
def _key_first_uses(indptr, indices, ranks, row0, width, first):
    """Lower ``first[key]`` to the key's first use in one key matrix: ``(stacked row)
    * width + key`` (see `_first_use`)."""
    for r in range(indptr.size - 1):
        row = (row0 + ranks[r]) * width
        for j in range(indptr[r], indptr[r + 1]):
            key = indices[j]
            first[key] = min(first[key], row + key)


@njit(cache=True)
def _key_lanes(indptr, indices, ranks, row0, labels, lanes):
    """Add the rows ``(stacked row, labels[key])`` of one key matrix to `_multiset`'s
    two lane sums ``lanes`` (see `_first_use`)."""
    lane0 = lanes[0]
    lane1 = lanes[1]
    for r in range(indptr.size - 1):
        row = _mix1(_SALT_BLOCK ^ _U(row0 + ranks[r]))
        for j in range(indptr[r], indptr[r + 1]):
            h = _mix1(row ^ _U(labels[indices[j]]))
            lane0 += _mix1(h ^ _LANE0)
            lane1 += _mix1(h ^ _LANE1)
    lanes[0] = lane0
    lanes[1] = lane1


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

    Raises
    ------
    ValueError
        ``order`` is not a permutation of the blocks.
    """
    import dataclasses

    order = np.asarray(order, dtype=np.int64)
    n = graph.n_blocks
    if order.shape != (n,) or (n and (order.min() < 0 or order.max() >= n)):
        raise ValueError(f"order must be a permutation of {n} blocks")
    inverse = np.full(n, -1, dtype=np.int64)
    inverse[order] = np.arange(n)
    if n and inverse.min() < 0:
        raise ValueError(f"order must be a permutation of {n} blocks (it repeats one)")
    values = {}
    permutation = _Permutation(order, inverse)
    for f in dataclasses.fields(graph):
        value = getattr(graph, f.name)
        if f.name in _INPUT_FIELDS:
            values[f.name] = permutation.columns(value) if sp.issparse(value) else value
        else:
            values[f.name] = _reordered_field(f.name, value, n, permutation)
    return type(graph)(**values)


class _Permutation:
    """Renumbers blocks in sparse matrices and lists, as scipy's fancy indexing
    (``m[order]``, ``m[:, order]``) would, entries kept in their order in each row.

    Block x block matrices with the same sparsity pattern (the edge matrices of a
    graph mostly share one) reuse where its entries went instead of permuting again.
    """

    def __init__(self, order, inverse):
        self.order = order
        self.inverse = inverse
        # (pattern matrix, new indptr, new indices, old positions of the new entries)
        self.seen = []
        self.done = {}  # id(matrix) -> (matrix, renumbered)

    def rows(self, m):
        """``m[order]`` of a CSR matrix: (indptr, old positions of the new entries)."""
        lengths = np.diff(m.indptr)[self.order]
        indptr = np.zeros(self.order.size + 1, dtype=m.indptr.dtype)
        np.cumsum(lengths, out=indptr[1:])
        # Entry k of new row i is entry k of old row order[i].
        shift = m.indptr[self.order].astype(np.int64) - indptr[:-1]
        positions = np.repeat(shift, lengths)
        positions += np.arange(positions.size)
        return indptr, positions

    def reordered_rows(self, m):
        """``m[order]`` of a CSR matrix."""
        indptr, positions = self.rows(m)
        return sp.csr_matrix((m.data[positions], m.indices[positions], indptr),
                             shape=m.shape)

    def both(self, value):
        """``value[order][:, order]`` of a square sparse matrix, as CSR.

        The same matrix object gives the same result object again (a graph's derived
        work matrices are its spike matrix itself, and stay one matrix).
        """
        found = self.done.get(id(value))
        if found is not None:
            return found[1]
        m = sp.csr_matrix(value)
        for pattern, indptr, indices, positions in self.seen:
            if (np.array_equal(m.indptr, pattern.indptr) and
                    np.array_equal(m.indices, pattern.indices)):
                break
        else:
            indptr, positions = self.rows(m)
            indices = self.inverse[m.indices[positions]].astype(m.indices.dtype)
            self.seen.append((m, indptr, indices, positions))
        out = sp.csr_matrix((m.data[positions], indices, indptr), shape=m.shape)
        self.done[id(value)] = (value, out)  # value kept alive: its id stays unique
        return out

    def columns(self, m):
        """``m[:, order]`` of a sparse matrix."""
        if m.format != "csr":
            return m[:, self.order]
        nnz = m.nnz
        return sp.csr_matrix((m.data[:nnz].copy(),
                              self.inverse[m.indices[:nnz]].astype(m.indices.dtype),
                              m.indptr.copy()), shape=m.shape)

    def items(self, value):
        """``[value[i] for i in order]`` of a list."""
        # Items visited in their order and put in place, rather than fetched in the
        # new order: touching a million objects in random order is twice as slow.
        out = [None] * len(value)
        for i, item in zip(self.inverse.tolist(), value):
            out[i] = item
        return out


def _reordered_field(name, value, n, permutation):
    if isinstance(value, dict):
        return {k: _reordered_field(f"{name}[{k}]", v, n, permutation)
                for k, v in value.items()}
    if sp.issparse(value):
        if value.shape == (n, n):
            return permutation.both(value)
        if value.shape[0] == n:
            return permutation.reordered_rows(sp.csr_matrix(value))
    elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
        return value[permutation.order]
    elif isinstance(value, list) and len(value) == n:
        return permutation.items(value)
    elif value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(
        f"TrafficGraph field {name!r} ({type(value).__name__}) has no known block "
        f"axis; teach partitioner.identity.reordered how to renumber it."
    )
