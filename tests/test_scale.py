"""The fast paths used on large graphs give valid plans, as good as the generic ones.

Small synthetic graphs only; no timing assertions.
"""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from partitioner import packing
from partitioner.engine import partition
from partitioner.hardware import BoardSpec, CoreLimits, get_board
from partitioner.metrics import chip_lower_bound
from partitioner.packing import BlockKeys, best_fit, check_plan, core_violations
from partitioner.strategies import common, metis, refine
from partitioner.strategies.common import Context, chip_traffic, interchip_spikes
from partitioner.synthetic import random_graph

LIMITS = CoreLimits()


def _mixed_graph(n, seed):
    """A graph that exercises every rule: several voltage-limit settings, noise,
    pop16 receivers, learning blocks and population senders."""
    return random_graph(
        n, seed=seed, second_core_key_fraction=0.3, noise_fraction=0.2,
        pop16_fraction=0.1, learning_fraction=0.03, pop_sender_fraction=0.03,
    )


GRAPHS = [(random_graph, 600, 1), (random_graph, 1500, 2), (_mixed_graph, 800, 3),
          (_mixed_graph, 2000, 4)]


def _context(graph, board="nahuku32", seed=0):
    board = get_board(board)
    return Context(
        graph=graph, board=board, limits=board.limits, keys=BlockKeys(graph),
        traffic=graph.symmetric_traffic(), sizes=packing.effective_size(graph, board.limits),
        pins={}, seed=seed,
    )


def _invalid_cores(graph, cores):
    """Cores whose blocks break a rule, checked from scratch in their order."""
    return [c.blocks for c in cores if core_violations(graph, c.blocks, LIMITS)]


def _windowed_pack(graph, blocks, keys):
    """The generic packing: screened candidates, the best `WINDOW` checked in full."""
    no_traffic = sp.csr_matrix((graph.n_blocks, graph.n_blocks))
    return packing._pack_near(graph, np.asarray(blocks), LIMITS, keys, no_traffic, None)


@pytest.mark.parametrize("make, n, seed", GRAPHS)
def test_best_fit_cores_are_valid_and_no_more_than_generic(make, n, seed):
    graph = make(n, seed)
    keys = BlockKeys(graph)
    blocks = np.arange(graph.n_blocks)
    fast, unplaced = best_fit(graph, blocks, LIMITS, keys)
    generic, _ = _windowed_pack(graph, blocks, keys)
    assert not unplaced
    assert _invalid_cores(graph, fast) == []
    assert sorted(b for c in fast for b in c.blocks) == list(range(graph.n_blocks))
    assert len(fast) <= len(generic)


@pytest.mark.parametrize("make, n, seed", GRAPHS[:2])
def test_best_fit_per_chip_matches_generic_core_counts(make, n, seed):
    graph = make(n, seed)
    ctx = _context(graph)
    parts = metis.metis_parts(ctx, 4)
    for chip in range(4):
        blocks = np.flatnonzero(parts == chip)
        fast, _ = best_fit(graph, blocks, LIMITS, ctx.keys)
        generic, _ = _windowed_pack(graph, blocks, ctx.keys)
        assert _invalid_cores(graph, fast) == []
        assert len(fast) <= len(generic)


def test_best_fit_honours_max_cores():
    graph = random_graph(500, seed=5)
    cores, unplaced = best_fit(graph, np.arange(500), LIMITS, max_cores=10)
    assert len(cores) == 10
    placed = [b for c in cores for b in c.blocks]
    assert sorted(placed + unplaced) == list(range(500))
    assert _invalid_cores(graph, cores) == []


def test_pack_without_traffic_is_best_fit():
    graph = random_graph(700, seed=6)
    no_traffic = sp.csr_matrix((700, 700))
    a, _ = packing.pack(graph, np.arange(700), LIMITS, traffic=no_traffic)
    b, _ = best_fit(graph, np.arange(700), LIMITS)
    assert [c.blocks for c in a] == [c.blocks for c in b]


def test_packed_cores_hold_the_tables_their_blocks_need():
    """Cores from the compiled packing read their config tables when first asked;
    they equal the tables of the same blocks added one by one."""
    graph = _mixed_graph(400, 3)
    keys = BlockKeys(graph)
    limits = get_board("nahuku32").limits
    parts = np.array_split(np.random.default_rng(0).permutation(400), 3)
    held = 0
    for cores in packing.best_fit_many(graph, parts, limits, keys):
        for core in cores:
            again = packing.CoreBin.of(graph, limits, keys, core.blocks)
            assert core.tables == again.tables
            assert core.used == again.used
            held += sum(map(len, core.tables))
    assert held > 0


def test_prefetched_facts_equal_single_reads():
    graph = _mixed_graph(300, 7)
    bulk = BlockKeys(graph)
    bulk.prefetch(np.arange(300))
    for b in range(300):
        single = BlockKeys(graph)
        info = single.info(b)
        assert info == bulk.info(b)
        assert info[6] == tuple(single.get(first, b) for _, first, _ in packing._TABLES)
        assert info[7] == tuple(single.get(shared, b) for _, _, shared in packing._TABLES)


def _check_indexes(packed):
    """Every index `Packed` keeps equals its value recomputed from scratch."""
    chips = np.asarray(packed.core_chip)
    assert np.array_equal(packed.usage(), np.array([c.used for c in packed.cores]))
    assert np.array_equal(packed._chips(), chips)
    slots, lengths = packed.chip_slots(packed.n_chips)
    for chip in range(packed.n_chips):
        assert packed.chip_cores(chip) == np.flatnonzero(chips == chip).tolist()
        assert slots[chip, :lengths[chip]].tolist() == packed.chip_cores(chip)
    for i, core in enumerate(packed.cores):
        assert (packed.block_core[core.blocks] == i).all()
    assert (packed.block_core >= 0).all()


def test_packed_indexes_stay_right_through_changes():
    graph = random_graph(900, seed=8)
    ctx = _context(graph)
    packed = common.pack_by_chip(ctx, metis.metis_parts(ctx, 3), 3)
    _check_indexes(packed)
    rng = np.random.default_rng(0)
    for step in range(300):
        op = step % 5
        if op == 0:
            b = int(rng.integers(graph.n_blocks))
            packed.remove_block(b)
            packed.new_core(b, int(rng.integers(3)))
        elif op == 1:
            b = int(rng.integers(graph.n_blocks))
            target = next((i for i in rng.permutation(len(packed.cores)).tolist()
                           if b not in packed.cores[i].blocks
                           and packed.cores[i].fits(b)), None)
            if target is not None:
                core = packed.cores[target]
                packed.remove_block(b)
                packed.add_block(b, int(packed.block_core[core.blocks[0]]))
        elif op == 2:
            packed.move_core(int(rng.integers(len(packed.cores))), int(rng.integers(3)))
        elif op == 3:
            i = int(rng.integers(len(packed.cores)))
            others = [j for j in packed.chip_cores(packed.core_chip[i]) if j != i]
            packed.absorb(i, others)
        else:
            i = int(rng.integers(len(packed.cores)))
            packed.absorb_chips(i, [c for c in range(3) if c != packed.core_chip[i]])
        _check_indexes(packed)
    assert _invalid_cores(graph, packed.cores) == []


def test_improving_blocks_equal_dense_reference():
    graph = random_graph(1200, seed=9)
    traffic = graph.symmetric_traffic()
    rng = np.random.default_rng(1)
    block_chip = rng.integers(0, 5, graph.n_blocks)
    dense = chip_traffic(traffic, block_chip, 5).toarray()
    rows = np.arange(graph.n_blocks)
    own = dense[rows, block_chip].copy()
    dense[rows, block_chip] = -np.inf
    gain = dense.max(axis=1) - own
    cand = np.flatnonzero(gain > 0)
    expected = cand[np.argsort(-gain[cand], kind="stable")]
    to_chip = chip_traffic(traffic, block_chip, 5)
    assert np.array_equal(refine._improving_blocks(to_chip, block_chip), expected)


def test_better_chips_from_row_equal_recounted():
    graph = random_graph(800, seed=4)
    traffic = graph.symmetric_traffic()
    block_chip = np.random.default_rng(2).integers(0, 6, graph.n_blocks)
    to_chip = chip_traffic(traffic, block_chip, 6)
    to_chip.sort_indices()
    for b in range(graph.n_blocks):
        own = int(block_chip[b])
        assert refine._better_in_row(to_chip, b, own) == \
            refine._better_chips(traffic, b, block_chip, 6)


def test_cores_to_try_in_the_order_of_traffic_then_index():
    """The compiled order of cores to try equals: cores with room that the block's
    neighbours are on, most traffic first (ties in the order met), then the other
    cores with room in index order, up to a window of each."""
    from partitioner.bestfit import cores_to_try, cores_with_room

    rng = np.random.default_rng(11)
    capacity = np.array([100, 100, 100, 100], dtype=np.int64)
    for _ in range(200):
        n_cores = int(rng.integers(1, 40))
        usage = rng.integers(0, 100, (n_cores, 4))
        closed = (rng.random(n_cores) < 0.1).astype(np.int64)
        cores = np.sort(rng.choice(n_cores, int(rng.integers(1, n_cores + 1)),
                                   replace=False)).astype(np.int64)
        need = rng.integers(0, 40, 4)
        near = rng.integers(0, n_cores, int(rng.integers(0, 30))).astype(np.int64)
        weights = rng.integers(1, 4, near.size) * 0.5
        window = int(rng.integers(1, 6))
        roomy = cores_with_room(usage, closed, cores, need, capacity).tolist()
        affinity = {}
        for i, w in zip(near.tolist(), weights.tolist()):
            if i in roomy:
                affinity[i] = affinity.get(i, 0.0) + w
        ranked = sorted(affinity, key=affinity.get, reverse=True)[:window]
        others = [i for i in roomy if i not in affinity][:window]
        found = cores_to_try(usage, closed, cores, need, capacity, near, weights, window)
        assert found.tolist() == ranked + others


def test_first_with_room_equals_a_plain_scan():
    """The compiled search for the first cores with room (repair and consolidation)
    equals a plain scan: groups in order, then the others, cores in slot order,
    closed cores skipped, staged usage in place of the stored one, entries to
    targets outside the group charged."""
    from partitioner.bestfit import first_with_room

    rng = np.random.default_rng(12)
    cap = np.array([50, 50, 50, 50], dtype=np.int64)
    for _ in range(300):
        n_groups, n_cores = int(rng.integers(1, 6)), int(rng.integers(1, 30))
        usage = rng.integers(0, 50, (n_cores, 4))
        closed = (rng.random(n_cores) < 0.2).astype(np.int64)
        group_of = rng.integers(0, n_groups, n_cores)
        lengths = np.bincount(group_of, minlength=n_groups)
        slots = np.full((n_groups, max(int(lengths.max()), 1)), -1, dtype=np.int64)
        for g in range(n_groups):
            slots[g, :lengths[g]] = rng.permutation(np.flatnonzero(group_of == g))
        groups = rng.permutation(n_groups)[:int(rng.integers(0, n_groups + 1))]
        then = rng.random(n_groups) < 0.5
        res = rng.integers(0, 20, 4)
        out = int(rng.integers(0, 5))
        targets = rng.integers(0, n_groups, int(rng.integers(0, 4)))
        weights = rng.integers(1, 4, targets.size)
        staged = rng.choice(n_cores, int(rng.integers(0, min(3, n_cores) + 1)),
                            replace=False).astype(np.int64)
        staged_used = rng.integers(0, 50, (staged.size, 4))
        room = np.zeros((0, 4), dtype=np.int64)
        window = int(rng.integers(1, 5))
        expected = []
        order = list(groups) + [g for g in range(n_groups) if then[g]]
        for g in order:
            far = int(weights[targets != g].sum())
            for c in slots[g, :lengths[g]]:
                if closed[c]:
                    continue
                used = staged_used[list(staged).index(c)] if c in staged else usage[c]
                need = res.copy()
                need[2] += out + far
                if np.all(used + need <= cap):
                    expected.append((int(c), int(g), far))
        expected = expected[:window]
        cores, found_groups, extra = first_with_room(
            groups.astype(np.int64), then, room, res, out, targets, weights, slots,
            lengths, usage, closed, cap, staged, staged_used, window)
        assert list(zip(cores.tolist(), found_groups.tolist(), extra.tolist())) == expected


def test_chip_traffic_with_replaced_rows_equals_recounted():
    graph = random_graph(900, seed=5)
    traffic = graph.symmetric_traffic()
    rng = np.random.default_rng(3)
    block_chip = rng.integers(0, 7, graph.n_blocks)
    to_chip = chip_traffic(traffic, block_chip, 7)
    moved = rng.choice(graph.n_blocks, 40, replace=False)
    block_chip[moved] = rng.integers(0, 7, moved.size)
    changed = np.zeros(graph.n_blocks, dtype=bool)
    changed[moved] = True
    for b in moved:
        changed[traffic.indices[traffic.indptr[b]:traffic.indptr[b + 1]]] = True
    rows = np.flatnonzero(changed)
    updated = refine._with_rows(to_chip, rows, chip_traffic(traffic[changed], block_chip, 7))
    assert np.array_equal(updated.toarray(), chip_traffic(traffic, block_chip, 7).toarray())


@pytest.mark.parametrize("form", ["canonical", "unsorted", "duplicates"])
def test_diagonal_dropped_as_scipy_drops_it(form):
    from partitioner.graph import _without_diagonal

    rng = np.random.default_rng(4)
    n = 60
    rows, cols = rng.integers(0, n, 400), rng.integers(0, n, 400)
    if form == "unsorted":
        keep = rows != cols  # no diagonal entry: scipy keeps each row's order
        rows, cols = rows[keep], cols[keep]
    vals = rng.integers(-2, 3, rows.size).astype(float)
    m = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    if form == "canonical":
        m.sum_duplicates()
    elif form == "unsorted":
        m.sum_duplicates()
        order = np.concatenate([np.arange(a, z)[::-1] for a, z in
                                zip(m.indptr[:-1], m.indptr[1:])]).astype(np.int64)
        m = sp.csr_matrix((m.data[order], m.indices[order], m.indptr), shape=(n, n))
    else:  # repeated (row, column) pairs kept as separate entries
        by_row = np.argsort(rows, kind="stable")
        indptr = np.searchsorted(rows[by_row], np.arange(n + 1))
        m = sp.csr_matrix((vals[by_row], cols[by_row], indptr), shape=(n, n))
        assert not m.has_canonical_format
    expected = m.copy()
    expected.setdiag(0)
    expected.eliminate_zeros()
    found = _without_diagonal(m.copy())
    assert np.array_equal(found.toarray(), expected.toarray())
    assert found.nnz == expected.nnz


def test_layout_from_core_positions_equals_sorted_layout():
    from partitioner.plan import Plan

    rng = np.random.default_rng(6)
    block_core = rng.integers(0, 30, 500)
    order = np.empty(500, dtype=np.int64)
    for c in range(30):
        members = np.flatnonzero(block_core == c)
        order[members] = rng.permutation(members.size)
    chips = rng.integers(0, 3, 30).tolist()
    plan = Plan.from_assignment(block_core, chips, order=order)
    expected = np.lexsort((np.arange(500), order, block_core))
    assert np.array_equal(plan.layout, expected)
    # An order that is not a position on the core still lays blocks out by it.
    scaled = Plan.from_assignment(block_core, chips, order=order * 10 + 3)
    assert np.array_equal(scaled.layout, expected)


def test_core_chip_flow_equals_dense_reference():
    graph = random_graph(1000, seed=10)
    ctx = _context(graph)
    packed = common.pack_by_chip(ctx, metis.metis_parts(ctx, 4), 4)
    n = graph.n_blocks

    def dense():
        to_chip = chip_traffic(ctx.traffic, packed.block_chip(), 4)
        onehot = sp.csr_matrix((np.ones(n), (packed.block_core, np.arange(n))),
                               shape=(len(packed.cores), n))
        return (onehot @ to_chip).toarray()

    flows = metis._BlockFlow(packed, ctx.traffic)
    for step in range(3):
        expected = dense()
        cores = packed.chip_cores(2)
        got = metis._CoreChipFlow(packed, ctx.traffic, 4, cores, flows)
        assert np.allclose(got.own, expected[cores, 2])
        assert np.allclose(got.total, expected[cores].sum(axis=1))
        for r in range(len(cores)):
            assert np.allclose(got.row(r), expected[cores[r]])
        # Blocks change chips: the flows read before are read again where needed.
        i = cores[step]
        packed.move_core(i, 3)
        flows.moved(packed.cores[i].blocks)


def test_repair_brings_every_chip_within_its_cores():
    graph = random_graph(3000, seed=11)
    ctx = _context(graph, board="pohoiki_beach")
    k = chip_lower_bound(graph, ctx.board) + 1
    packed = common.pack_by_chip(ctx, metis.metis_parts(ctx, k), k)
    # Crowd chip 0 with cores of the other chips.
    for i in range(len(packed.cores)):
        if packed.cores_on_chips(k)[0] > ctx.cores_per_chip + 20:
            break
        if packed.core_chip[i] != 0:
            packed.move_core(i, 0)
    assert metis.repair_overfull(packed, ctx, k)
    assert packed.cores_on_chips(k).max() <= ctx.cores_per_chip
    assert _invalid_cores(graph, packed.cores) == []
    _check_indexes(packed)


def test_projection_stops_only_when_the_chips_cannot_fit(monkeypatch):
    monkeypatch.setattr(common, "PROJECT_MIN_CHIPS", 8)
    monkeypatch.setattr(common, "PROJECT_SAMPLE", 4)
    graph = random_graph(6000, seed=12)
    ctx = _context(graph, board="pohoiki_beach")
    for k in range(chip_lower_bound(graph, ctx.board), 64):
        parts = metis.metis_parts(ctx, k)
        full = common.pack_by_chip(ctx, parts, k)
        ctx.notes.clear()
        quick = common.pack_by_chip(ctx, parts, k, max_cores=k * ctx.cores_per_chip)
        if quick is None:
            assert len(full.cores) > k * ctx.cores_per_chip
            assert ctx.notes["min_chips"] > k
        else:
            assert [c.blocks for c in quick.cores] == [c.blocks for c in full.cores]
            assert quick.core_chip == full.core_chip
            break


def test_refine_keeps_rules_and_never_raises_traffic():
    graph = _mixed_graph(2500, 13)
    ctx = _context(graph, board="pohoiki_beach")
    k = chip_lower_bound(graph, ctx.board) + 2
    packed = metis.chip_first(ctx, k)
    before = interchip_spikes(graph, packed.block_chip())
    refine.refine(packed, ctx)
    assert interchip_spikes(graph, packed.block_chip()) <= before + 1e-9
    assert packed.cores_on_chips().max() <= ctx.cores_per_chip
    assert _invalid_cores(graph, packed.cores) == []
    _check_indexes(packed)
    removed = refine.consolidate(packed)
    assert removed >= 0
    assert _invalid_cores(graph, packed.cores) == []
    _check_indexes(packed)


@pytest.mark.parametrize("max_fill", [0.35, 0.9, 1.0])
def test_consolidation_screen_changes_no_result(monkeypatch, max_fill):
    """The screen of cores that cannot be emptied (`refine._may_empty`) rejects only
    cores whose tries would fail: consolidation removes the same cores without it."""
    graph = _mixed_graph(3000, 21)
    ctx = _context(graph, board="pohoiki_beach")
    k = chip_lower_bound(graph, ctx.board) + 3
    first = metis.chip_first(ctx, k)
    refine.refine(first, ctx)
    second = copy.deepcopy(first)
    screened = refine._may_empty(first, np.arange(len(first.cores)),
                                 np.zeros(len(first.cores), dtype=bool))
    assert not screened.all()  # the screen has cores to reject here
    removed = refine.consolidate(first, max_fill=max_fill)
    monkeypatch.setattr(refine, "_may_empty",
                        lambda packed, cores, closed: np.ones(cores.size, dtype=bool))
    assert refine.consolidate(second, max_fill=max_fill) == removed
    assert np.array_equal(first.block_core, second.block_core)
    assert first.core_chip == second.core_chip


@pytest.mark.parametrize("n, seed, board", [(3000, 14, "pohoiki_beach"),
                                            (5000, 15, "pohoiki_springs")])
def test_partition_plans_of_large_boards_are_valid(n, seed, board):
    graph = _mixed_graph(n, seed)
    plan = partition(graph, board=board, seed=seed)
    check_plan(graph, plan)
    assert set(plan.info["stage_seconds"]) >= {"strategy", "refine", "consolidate", "place"}


def test_partition_with_projection_is_valid_and_no_worse(monkeypatch):
    # 14 chips are the lower bound of this graph, but its cores need 15.
    graph = random_graph(8000, seed=18)
    board = BoardSpec("test_board", 96, (8, 12))
    generic = partition(graph, board=board)
    monkeypatch.setattr(common, "PROJECT_MIN_CHIPS", 8)
    monkeypatch.setattr(common, "PROJECT_SAMPLE", 4)
    fast = partition(graph, board=board)
    check_plan(graph, fast, board)
    assert fast.n_chips <= generic.n_chips
    assert fast.n_cores <= generic.n_cores * 1.01
    assert fast.objective_value <= generic.objective_value * 1.01


@pytest.mark.parametrize("n, seed", [(10000, 34), (12000, 35)])
def test_chip_count_jump_finds_the_chips_of_the_full_search(monkeypatch, n, seed):
    # Both graphs need one chip more than their lower bound. With projections from 8
    # chips on, the search skips counts whose sampled chips project too many cores;
    # it still ends at the count the full search finds.
    graph = random_graph(n, seed=seed)
    board = BoardSpec("test_board", 96, (8, 12))
    generic = partition(graph, board=board)
    monkeypatch.setattr(common, "PROJECT_MIN_CHIPS", 8)
    monkeypatch.setattr(common, "PROJECT_SAMPLE", 4)
    fast = partition(graph, board=board)
    check_plan(graph, fast, board)
    assert fast.n_chips == generic.n_chips
    assert fast.n_cores <= generic.n_cores * 1.01
