"""Synthetic traffic graphs, for benchmarking strategies at any size without nengo.

The generator imitates what extraction gives for large spiking networks built by
nengo-loihi:

* block sizes: mostly small blocks (10-200 compartments: decode neurons, small
  ensembles), some large ones (500-1024: split ensembles);
* resources: input axons, output axon entries and synapse memory grow with block size
  and traffic, with noise, and every block fits one core on its own (output entries
  stay within half a core's, so a block fits even with every target on another chip,
  where each entry costs one more);
* connectivity: blocks form clusters of 20-100 (a subnetwork, or the blocks of one
  split ensemble and its decoders); most edges stay inside a cluster, some go to a
  nearby cluster and a few anywhere; edge weights are heavy-tailed;
* config registers: each block uses a few entries drawn from small pools shared by its
  cluster; one or two (vmin, vmax) groups; noise off almost everywhere; a small
  fraction of learning blocks and population-axon senders; a few host inputs.

Everything is vectorized: a million blocks with eight edges each take a few seconds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from partitioner.graph import TrafficGraph
from partitioner.hardware import CoreLimits

__all__ = ["random_graph"]


def random_graph(n_blocks, avg_degree=8, seed=0, n_config_keys=24, *,
                 cluster_size=(20, 100), p_intra=0.8, p_near=0.15,
                 large_fraction=0.2, learning_fraction=0.01,
                 pop_sender_fraction=0.01, pop16_fraction=0.01, noise_fraction=0.02,
                 second_core_key_fraction=0.05, n_inputs=None, shuffle=True,
                 dt=0.001, limits=None):
    """A realistic random `TrafficGraph`, built without nengo.

    Parameters
    ----------
    n_blocks : int
        Number of blocks.
    avg_degree : float, optional
        Mean number of directed edges leaving a block (before merging duplicates).
    seed : int, optional
        Seed; equal seeds give identical graphs.
    n_config_keys : int, optional
        Size of the compartment-config pool; the other pools are scaled from it
        (vth and synapse formats: half; STDP traces: 2).
    cluster_size : (int, int), optional
        Smallest and largest cluster.
    p_intra, p_near : float, optional
        Probability that an edge stays inside its cluster, or goes to one of the
        neighbouring clusters; the rest go anywhere.
    large_fraction : float, optional
        Fraction of blocks with 500-1024 compartments.
    learning_fraction, pop_sender_fraction, pop16_fraction, noise_fraction : float
        Fractions of learning blocks, population-axon senders, pop16 receivers and
        blocks with noise enabled.
    second_core_key_fraction : float, optional
        Fraction of blocks with a second (vmin, vmax) setting.
    n_inputs : int, optional
        Host inputs; default ``max(1, n_blocks // 500)``.
    shuffle : bool, optional
        Randomly permute block ids, so that clusters are not contiguous id ranges.
    dt : float, optional
        Time step stored in the graph.
    limits : CoreLimits, optional
        Core limits every block must fit; Loihi 1 defaults.

    Returns
    -------
    TrafficGraph
        With ``rates="synthetic"``.
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1 (got {n_blocks})")
    limits = CoreLimits() if limits is None else limits
    rng = np.random.default_rng(seed)
    n = int(n_blocks)

    cluster, starts, sizes = _clusters(rng, n, cluster_size)
    compartments = _block_sizes(rng, n, large_fraction, limits)
    src, dst, axons = _edges(rng, cluster, starts, sizes, avg_degree, p_intra, p_near)
    axons = _fit_axons(src, dst, axons, n, limits)
    activity = np.clip(rng.lognormal(np.log(0.03), 1.0, n), 0.001, 1.0)
    spikes = axons * activity[src]

    n_in = max(1, n // 500) if n_inputs is None else int(n_inputs)
    in_rows, in_cols, in_axon_counts = _inputs(rng, n_in, n)
    in_spike_counts = in_axon_counts * rng.uniform(0.01, 0.2, in_rows.size)
    resources = _resources(rng, compartments, src, dst, axons, n, limits,
                           extra_in=np.bincount(in_cols, weights=in_axon_counts,
                                                minlength=n))
    shared = _shared_bits(rng, resources[:, 3], limits)
    configs = _configs(rng, cluster, resources[:, 1] > 0, n_config_keys, n)
    learning, pop_sender, pop16 = _flags(rng, n, learning_fraction, pop_sender_fraction,
                                        pop16_fraction)
    # A pop16 receiver's axon ids must stay below its id range (2**axon_bits).
    pop16 = np.where(pop16 >= resources[:, 1], pop16, 0)
    configs["stdp_pre_cfgs"] = _pick(rng, np.flatnonzero(learning), n, 2, 1)
    out_entries, interchip_entries = _entries(src, dst, axons, resources[:, 2], pop_sender, n)
    core_key = (rng.random(n) < second_core_key_fraction).astype(np.int64)
    noise_key = np.where(rng.random(n) < noise_fraction, rng.integers(0, 3, n), -1)

    order = rng.permutation(n) if shuffle else np.arange(n)
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)  # new id of each generated block

    def perm_rows(a):
        return a[order]

    return TrafficGraph(
        labels=[f"block{i}" for i in range(n)],
        sources=[f"cluster{c}" for c in cluster[order]],
        resources=perm_rows(resources),
        shared_synapse_bits=perm_rows(shared),
        configs={k: m[order] for k, m in configs.items()},
        core_key=perm_rows(core_key),
        noise_key=perm_rows(noise_key),
        learning=perm_rows(learning),
        pop_sender=perm_rows(pop_sender),
        pop16_in_limit=perm_rows(pop16),
        axons=_csr(inv[src], inv[dst], axons, (n, n)),
        spikes=_csr(inv[src], inv[dst], spikes, (n, n)),
        out_entries=_permuted(out_entries, inv),
        interchip_entries=_permuted(interchip_entries, inv),
        input_labels=[f"input{k}" for k in range(n_in)],
        input_axons=_csr(in_rows, inv[in_cols], in_axon_counts, (n_in, n)),
        input_spikes=_csr(in_rows, inv[in_cols], in_spike_counts, (n_in, n)),
        dt=dt,
        rates="synthetic",
    )


def _clusters(rng, n, cluster_size):
    """Cluster id of every block, and each cluster's first block and size."""
    lo, hi = cluster_size
    n_draw = n // max(lo, 1) + 2
    sizes = rng.integers(lo, hi + 1, n_draw)
    ends = np.cumsum(sizes)
    n_clusters = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_clusters].copy()
    sizes[-1] -= ends[n_clusters - 1] - n
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cluster = np.repeat(np.arange(n_clusters), sizes)
    return cluster, starts, sizes


def _block_sizes(rng, n, large_fraction, limits):
    small = np.exp(rng.uniform(np.log(10), np.log(200), n))
    large = rng.uniform(500, limits.compartments, n)
    size = np.where(rng.random(n) < large_fraction, large, small)
    return np.clip(np.round(size), 1, limits.compartments).astype(np.int64)


def _edges(rng, cluster, starts, sizes, avg_degree, p_intra, p_near):
    """Directed edges (self-loops removed) with heavy-tailed axon counts."""
    n = cluster.size
    n_clusters = sizes.size
    # heavy-tailed out-degree: some blocks (big ensembles) feed many others
    weight = np.minimum(rng.pareto(2.0, n) + 1.0, 50.0)
    src = np.repeat(np.arange(n), rng.poisson(avg_degree * weight / weight.mean()))
    m = src.size
    c_src = cluster[src]
    kind = rng.random(m)
    near = (c_src + rng.integers(-2, 3, m)) % n_clusters
    c_dst = np.where(kind < p_intra, c_src, near)
    dst = starts[c_dst] + (rng.random(m) * sizes[c_dst]).astype(np.int64)
    anywhere = kind >= p_intra + p_near
    dst[anywhere] = rng.integers(0, n, int(anywhere.sum()))
    keep = src != dst
    src, dst = src[keep], dst[keep]
    axons = np.ceil((rng.pareto(1.2, src.size) + 1.0) * 4.0)
    return src.astype(np.int64), dst.astype(np.int64), np.minimum(axons, 1024.0)


def _fit_axons(src, dst, axons, n, limits):
    """Scale axons down where a block's total in or out would break a core limit."""
    cap_out = 0.4 * limits.out_axons
    cap_in = 0.75 * limits.in_axons
    out_sum = np.bincount(src, weights=axons, minlength=n)
    in_sum = np.bincount(dst, weights=axons, minlength=n)
    scale = np.minimum(
        np.minimum(1.0, cap_out / np.maximum(out_sum, 1.0))[src],
        np.minimum(1.0, cap_in / np.maximum(in_sum, 1.0))[dst],
    )
    return np.maximum(1.0, np.floor(axons * scale))


def _resources(rng, compartments, src, dst, axons, n, limits, extra_in):
    """(n, 4) resources consistent with the edges and within core limits."""
    out_sum = np.bincount(src, weights=axons, minlength=n)
    in_sum = np.bincount(dst, weights=axons, minlength=n) + extra_in
    # output entries: at least one per target axon, usually one per source compartment
    # and target block
    fan_out = np.bincount(src, minlength=n)
    entries = compartments * np.minimum(fan_out, 3) * rng.uniform(0.5, 1.0, n)
    out_axons = np.clip(np.maximum(out_sum, np.round(entries)), 0, limits.out_axons // 2)
    in_axons = np.clip(np.round(in_sum * rng.uniform(1.0, 1.3, n)), 0, limits.in_axons)
    # dense synapses: 8-bit weights to a fraction of the block per input axon,
    # packed 64 per 64-bit words with a 10-bit header
    density = rng.uniform(0.05, 1.0, n)
    weights_per_axon = np.ceil(compartments * density)
    bits_per_axon = 64 * np.ceil((weights_per_axon * 8 + 10 * np.ceil(
        weights_per_axon / 64)) / 64)
    synapse_bits = np.minimum(in_axons * bits_per_axon, 0.95 * limits.synapse_bits)
    return np.column_stack(
        (compartments, in_axons, out_axons, np.round(synapse_bits))
    ).astype(np.int64)


def _entries(src, dst, axons, out_axons, pop_sender, n):
    """Output entries per edge (each block's row sums to its ``out_axons``, the
    rounding rest on its diagonal) and the extra entries of each edge across chips
    (one per entry; one per two entries of a population-axon sender)."""
    out_sum = np.bincount(src, weights=axons, minlength=n)
    share = np.floor(out_axons[src] * axons / np.maximum(out_sum[src], 1.0))
    rest = out_axons - np.bincount(src, weights=share, minlength=n)
    extra = np.where(pop_sender[src], np.ceil(share / 2), share)
    diag = np.arange(n)
    out = _csr(np.concatenate([src, diag]), np.concatenate([dst, diag]),
               np.concatenate([share, rest]), (n, n))
    return out, _csr(src, dst, extra, (n, n))


def _permuted(matrix, inv):
    """``matrix`` with rows and columns renumbered by ``inv`` (old id -> new id)."""
    coo = matrix.tocoo()
    return _csr(inv[coo.row], inv[coo.col], coo.data, matrix.shape)


def _shared_bits(rng, synapse_bits, limits):
    """Bits at a shared-core offset: sparse-format blocks pay for wider indices."""
    sparse = rng.random(synapse_bits.size) < 0.2
    extra = np.where(sparse, rng.uniform(0.05, 0.3, synapse_bits.size), 0.0)
    return np.round(synapse_bits * (1.0 + extra)).astype(np.int64)


def _pick(rng, rows, n_rows, pool, max_per_row, offset=None):
    """Boolean CSR: each of ``rows`` uses 1..max_per_row keys of a pool."""
    if rows.size == 0 or pool == 0:
        return sp.csr_matrix((n_rows, pool), dtype=bool)
    k = rng.integers(1, max_per_row + 1, rows.size)
    r = np.repeat(rows, k)
    base = np.zeros(rows.size, dtype=np.int64) if offset is None else offset
    c = (np.repeat(base, k) + rng.integers(0, max(1, pool // 3 + 1), r.size)) % pool
    code = np.unique(r * pool + c)
    r, c = np.divmod(code, pool)
    return sp.csr_matrix((np.ones(code.size, dtype=bool), (r, c)), shape=(n_rows, pool))


def _configs(rng, cluster, has_synapses, n_keys, n):
    """Config-register matrices; blocks of a cluster draw from a shared slice of
    each pool, as the blocks of one split ensemble do."""
    n_keys = max(int(n_keys), 2)
    n_small = max(n_keys // 2, 2)
    n_clusters = int(cluster.max()) + 1
    rows = np.arange(n)
    comp_base = rng.integers(0, n_keys, n_clusters)[cluster]
    vth_base = rng.integers(0, n_small, n_clusters)[cluster]
    syn_base = rng.integers(0, n_small, n_clusters)[cluster]
    syn_rows = np.flatnonzero(has_synapses)
    synapse = _pick(rng, syn_rows, n, n_small, 3, syn_base[syn_rows])
    # widening maps several original formats onto fewer wide ones
    wide_of = rng.integers(0, max(n_small // 2, 1), n_small)
    coo = synapse.tocoo()
    n_wide = max(n_small // 2, 1)
    code = np.unique(coo.row.astype(np.int64) * n_wide + wide_of[coo.col])
    r, c = np.divmod(code, n_wide)
    shared = sp.csr_matrix((np.ones(code.size, dtype=bool), (r, c)), shape=(n, n_wide))
    return {
        "compartment_cfgs": _pick(rng, rows, n, n_keys, 3, comp_base),
        "vth_cfgs": _pick(rng, rows, n, n_small, 2, vth_base),
        "synapse_cfgs": synapse,
        "synapse_cfgs_shared": shared,
    }


def _flags(rng, n, learning_fraction, pop_sender_fraction, pop16_fraction):
    u = rng.random(n)
    learning = u < learning_fraction
    pop_sender = (u >= learning_fraction) & (u < learning_fraction + pop_sender_fraction)
    pop16 = np.where(rng.random(n) < pop16_fraction,
                     2 ** rng.integers(9, 11, n), 0).astype(np.int64)
    return learning, pop_sender, pop16


def _inputs(rng, n_inputs, n):
    """Host inputs, each feeding 1-4 blocks: (input, block, axons) arrays."""
    k = rng.integers(1, 5, n_inputs)
    rows = np.repeat(np.arange(n_inputs), k)
    cols = rng.integers(0, n, rows.size)
    return rows, cols, rng.integers(2, 65, rows.size).astype(np.float64)


def _csr(rows, cols, values, shape):
    return sp.coo_matrix((values, (rows, cols)), shape=shape).tocsr()
