"""Output axon config entries as Loihi's compiler counts them.

Discrete axons take one entry per source compartment, population axons 1 (pop16) or 2
(pop32) per distinct (population, target axon), and every axon whose target block is
on another chip takes one more (docs/rules.md). These tests build real networks with
nengo-loihi and check the count, the plans that respect it, and the refusals where no
plan can.
"""

import warnings

import nengo
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitioner.engine import partition
from partitioner.errors import CoreRuleError, InfeasibleError
from partitioner.extract import build_model, extract
from partitioner.graph import RESOURCES
from partitioner.hardware import ChipSpec, get_board
from partitioner.metrics import evaluate
from partitioner.packing import CoreBin, check_plan, core_entries
from partitioner.plan import Plan
from partitioner.synthetic import random_graph

OUT = RESOURCES.index("out_axons")
CONV_TARGET = dict(neuron_type=nengo.SpikingRectifiedLinear(), gain=nengo.dists.Choice([1]),
                   bias=nengo.dists.Choice([0]))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fanout_network(n=600, targets=4):
    """An ``n``-neuron ensemble connected neuron to neuron to ``targets`` ensembles:
    ``n * targets`` discrete output axon entries on the source's core."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        src = nengo.Ensemble(n, 1, label="src")
        nengo.Connection(stim, src)
        for k in range(targets):
            dst = nengo.Ensemble(n, 1, label=f"dst{k}")
            nengo.Connection(src.neurons, dst.neurons, transform=0.01)
    return net


def conv_network(pop_type=32, side=12, filters=4):
    """An image layer feeding a 3x3 conv layer through population axons."""
    conv = nengo.Convolution(filters, (side, side, 1), kernel_size=(3, 3),
                             init=np.full((3, 3, 1, filters), 0.1))
    with nengo.Network(seed=0) as net:
        import nengo_loihi

        nengo_loihi.add_params(net)
        stim = nengo.Node(np.ones(side * side), label="stim")
        image = nengo.Ensemble(side * side, 1, label="image", **CONV_TARGET)
        nengo.Connection(stim, image.neurons)
        layer = nengo.Ensemble(conv.output_shape.size, 1, label="layer", **CONV_TARGET)
        conn = nengo.Connection(image.neurons, layer.neurons, transform=conv)
        net.config[conn].pop_type = pop_type
    return net


def block_named(model, label):
    return next(i for i, b in enumerate(model.blocks) if label in str(b))


def blocks_of(model):
    return list(model.blocks)


# ------------------------------------------------------------------ extraction
@pytest.mark.parametrize("pop_type", [16, 32])
def test_population_axons_cost_one_entry_set_per_target_axon(pop_type):
    model = build_model(conv_network(pop_type))
    graph = extract(model)
    i = block_named(model, "image")
    block = blocks_of(model)[i]
    (axon,) = block.axons
    assert axon.target.pop_type == pop_type
    # Each image pixel is one population reaching one target axon.
    pixels = block.compartment.n_compartments
    per_axon = 2 if pop_type == 32 else 1
    assert graph.resources[i, OUT] == per_axon * pixels
    # nengo-loihi's own count agrees for population axons on one chip.
    assert graph.resources[i, OUT] == block.utilization()["out-axons"][0]
    assert graph.interchip_entry_totals[i] == pixels


def test_conv_population_entries_far_below_one_per_compartment():
    conv = nengo.Convolution(2, (16, 16, 4), kernel_size=(3, 3),
                             init=np.full((3, 3, 4, 2), 0.05))
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(np.ones(16 * 16 * 4))
        a = nengo.Ensemble(16 * 16 * 4, 1, label="a", **CONV_TARGET)
        nengo.Connection(stim, a.neurons)
        b = nengo.Ensemble(conv.output_shape.size, 1, label="b", **CONV_TARGET)
        nengo.Connection(a.neurons, b.neurons, transform=conv)
    model = build_model(net)
    graph = extract(model)
    i = block_named(model, "'a'")
    n_comp = blocks_of(model)[i].compartment.n_compartments
    # 4 channels per pixel share one population: a quarter of the compartments, x2.
    assert graph.resources[i, OUT] == 2 * n_comp // 4
    assert graph.resources[i, OUT] == blocks_of(model)[i].utilization()["out-axons"][0]


def test_discrete_axons_cost_one_entry_per_source_compartment():
    model = build_model(fanout_network(n=300, targets=3))
    graph = extract(model)
    i = block_named(model, "src")
    assert graph.resources[i, OUT] == 900
    assert graph.interchip_entry_totals[i] == 900
    assert graph.out_entries.sum() == graph.resources[:, OUT].sum()
    # Each target block gets 300 entries, and 300 more on another chip.
    row = graph.interchip_entries[i].toarray().ravel()
    assert sorted(row[row > 0].tolist()) == [300, 300, 300]


def test_decode_block_counts_compartments_not_target_axons():
    """A decode-neuron block whose compartments share target axons: one entry per
    compartment, more than nengo-loihi's ``utilization()`` reports."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(0.3)
        a = nengo.Ensemble(50, 1, label="a")
        b = nengo.Ensemble(50, 1, label="b")
        nengo.Connection(stim, a)
        nengo.Connection(a, b)
    model = build_model(net)
    graph = extract(model)
    counted = 0
    for i, block in enumerate(model.blocks):
        for axon in block.axons:
            targets = np.asarray(axon.map_axon(np.arange(block.compartment.n_compartments)))
            if axon.target.pop_type == 0 and (targets >= 0).sum() > axon.n_axons:
                assert graph.resources[i, OUT] >= (targets >= 0).sum()
                assert graph.resources[i, OUT] > block.utilization()["out-axons"][0]
                counted += 1
    assert counted > 0


# ------------------------------------------------------------- plans and refusals
def fanout_graph():
    return extract(build_model(fanout_network()))


def test_fanout_on_one_chip_and_spread_over_three():
    graph = fanout_graph()
    plan = partition(graph, n_chips=4)
    assert plan.n_chips == 1
    for n_chips in (2, 3):
        plan = partition(graph, n_chips=n_chips, spread=True)
        assert plan.n_chips == n_chips
        check_plan(graph, plan)
        total, interchip = core_entries(graph, plan.block_core, plan.block_chip, plan.n_cores)
        assert total.max() <= 4096
        assert interchip.max() > 0  # some of its axons do cross chips


@pytest.mark.parametrize("n_chips", [4, 5])
def test_fanout_spread_too_thin_is_refused_with_the_entries(n_chips):
    """Over 4 or 5 chips every valid spread leaves at least 3 of the 4 targets on
    other chips than the source: 2,400 + 1,800 or more entries."""
    graph = fanout_graph()
    with pytest.raises(InfeasibleError) as info:
        partition(graph, n_chips=n_chips, spread=True)
    text = str(info.value)
    assert "src" in text and "output axon entries" in text and "4096" in text
    assert "Spread over fewer chips" in text


def test_fanout_pinned_across_chips_is_refused_naming_the_entries():
    graph = fanout_graph()
    src = next(i for i, s in enumerate(graph.sources) if "src" in s)
    pins = {b: (0 if b == src else 1) for b in range(graph.n_blocks)}
    with pytest.raises(InfeasibleError) as info:
        partition(graph, n_chips=2, pins=pins)
    text = str(info.value)
    assert "needs 4800 output axon entries, 2400 of them" in text
    assert "Pin the blocks it sends to" in text


def test_pinned_source_with_free_targets_gets_them_on_its_chip():
    graph = fanout_graph()
    src = next(i for i, s in enumerate(graph.sources) if "src" in s)
    dst = next(i for i, s in enumerate(graph.sources) if "dst0" in s)
    plan = partition(graph, n_chips=2, pins={src: 0, dst: 1}, spread=True)
    check_plan(graph, plan)
    assert plan.block_chip[src] == 0 and plan.block_chip[dst] == 1


def test_check_plan_counts_interchip_entries():
    """A replayed plan whose core fits on one chip but not across chips is refused."""
    graph = fanout_graph()
    src = next(i for i, s in enumerate(graph.sources) if "src" in s)
    block_chip = np.where(np.arange(graph.n_blocks) == src, 0, 1)
    plan = Plan.from_assignment(np.arange(graph.n_blocks), block_chip,
                                board="nahuku32", fingerprint=graph.fingerprint())
    with pytest.raises(CoreRuleError) as info:
        check_plan(graph, plan)
    assert "out_axons 4800 > 4096 (2400 of them for axons to other chips)" in str(info.value)
    metrics = evaluate(graph, plan)
    assert metrics.cores_over_limit == 1
    assert metrics.core_out_entries.max() == 4800
    assert metrics.core_interchip_entries.max() == 2400


# ------------------------------------------------------------ synthetic graphs
def entries_fit(graph, plan, board):
    total, _ = core_entries(graph, plan.block_core, plan.block_chip, plan.n_cores)
    return total.max(initial=0) <= board.limits.out_axons


def tight_graph(n, seed):
    """A synthetic graph whose blocks send many discrete axons across chips."""
    graph = random_graph(n, seed=seed, large_fraction=0.5)
    return graph


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(30, 160), cores=st.integers(3, 12), seed=st.integers(0, 10_000),
       strategy=st.sampled_from(["metis", "first-fit", "metis-first-fit"]),
       spread=st.booleans())
def test_every_plan_keeps_every_core_within_its_entries(n, cores, seed, strategy, spread):
    graph = tight_graph(n, seed)
    board = get_board("nahuku8").replace(chip=ChipSpec(cores=cores))
    try:
        plan = partition(graph, board=board, strategy=strategy, seed=seed,
                         n_chips=board.n_chips if not spread else 3, spread=spread)
    except InfeasibleError:
        return
    check_plan(graph, plan, board)
    assert entries_fit(graph, plan, board)


def test_refinement_keeps_core_entries_exact():
    """Refinement updates each core's entries move by move; a recount agrees."""
    from partitioner.packing import BlockKeys, effective_size
    from partitioner.strategies.common import Context
    from partitioner.strategies.metis import metis
    from partitioner.strategies.refine import refine

    graph = random_graph(150, seed=4, large_fraction=0.5)
    board = get_board("nahuku8").replace(chip=ChipSpec(cores=16))
    ctx = Context(graph=graph, board=board, limits=board.limits, keys=BlockKeys(graph),
                  traffic=graph.symmetric_traffic(), sizes=effective_size(graph, board.limits),
                  pins={}, seed=0)
    packed = next(p for p in (metis(ctx, k) for k in range(2, 9)) if p is not None)
    packed.sync_entries()
    moved = refine(packed, ctx)
    assert moved > 0
    tracked = np.array([core.used[OUT] for core in packed.cores])
    recount = packed.sync_entries()
    assert np.array_equal(tracked, recount)
    assert recount.max() <= 4096


def test_ilp_plans_keep_core_entries():
    graph = random_graph(40, seed=2, large_fraction=0.6)
    board = get_board("nahuku8").replace(chip=ChipSpec(cores=6))
    for model in ("blocks", "slots", "cores"):
        plan = partition(graph, board=board, strategy="ilp", model=model, time_limit=5)
        check_plan(graph, plan, board)
        assert entries_fit(graph, plan, board)



def test_full_chips_repair_an_overflow_by_moving_one_small_block(monkeypatch):
    """On chips with no free core, a core a few entries over its limit is repaired by
    moving one of its smaller blocks elsewhere, or by moving another core of its chip
    to a chip with a free core and splitting onto the core freed: the plan fits one
    chip fewer than when the only repair is to split the core (which needs a free
    core, or moves its last blocks, often large ones, off the chip)."""
    import partitioner.strategies.entries as entries

    graph = random_graph(3000, seed=2, large_fraction=0.5)
    board = get_board("pohoiki_springs").replace(chip=ChipSpec(cores=32))
    plan = partition(graph, board=board, seed=2)
    check_plan(graph, plan, board)
    assert entries_fit(graph, plan, board)
    monkeypatch.setattr(entries, "_evict", lambda *args, **kwargs: False)
    monkeypatch.setattr(entries, "_make_room", lambda *args, **kwargs: False)
    split_only = partition(graph, board=board, seed=2)
    assert plan.n_chips < split_only.n_chips


# --------------------------------------------------- repair of over-full chips
def full_chips(n=2000, seed=3, cores=16, k=29, large_fraction=0.2):
    """A METIS cut into ``k`` chips of ``cores`` cores, each chip packed: some chips
    over-full, the plan as a whole nearly full (the fewest chips that fit)."""
    from partitioner.packing import BlockKeys, effective_size
    from partitioner.strategies.common import Context, pack_by_chip
    from partitioner.strategies.metis import metis_parts

    graph = random_graph(n, seed=seed, large_fraction=large_fraction)
    board = get_board("pohoiki_springs").replace(chip=ChipSpec(cores=cores))
    ctx = Context(graph=graph, board=board, limits=board.limits, keys=BlockKeys(graph),
                  traffic=graph.symmetric_traffic(), sizes=effective_size(graph, board.limits),
                  pins={}, seed=seed)
    return ctx, pack_by_chip(ctx, metis_parts(ctx, k), k)


def packed_plan(ctx, packed):
    return Plan.from_assignment(packed.block_core, packed.core_chip,
                                order=packed.on_core_order(), board="pohoiki_springs",
                                fingerprint=ctx.graph.fingerprint())


def assert_entries_tracked_and_within(packed):
    tracked = np.array([core.used[OUT] for core in packed.cores])
    recount = packed.sync_entries()
    assert np.array_equal(tracked, recount)
    assert recount.max() <= 4096


def test_repair_of_overfull_chips_keeps_every_core_within_its_entries():
    """Moving cores and blocks off over-full chips changes the entries of the cores
    they leave behind and of those they join; every move is checked, so the repaired
    plan needs no entry repair (here it used to leave cores over 4,096)."""
    from partitioner.strategies.metis import repair_overfull

    ctx, packed = full_chips()
    k, cap = 29, ctx.cores_per_chip
    counts = packed.cores_on_chips(k)
    assert (counts > cap).sum() >= 10 and counts.sum() > 0.97 * k * cap
    assert repair_overfull(packed, ctx, k)
    assert packed.cores_on_chips(k).max() <= cap
    assert_entries_tracked_and_within(packed)
    check_plan(ctx.graph, packed_plan(ctx, packed), ctx.board)


def test_fewest_chips_fit_when_the_repair_counts_entries():
    """The same situation through `partition`: at 29 chips of 16 cores the chips are
    full, so an overflow left by the repair of over-full chips could not be split
    onto a free core, and 29 chips used to be refused (30 were needed)."""
    graph = random_graph(2000, seed=1, large_fraction=0.2)
    board = get_board("pohoiki_springs").replace(chip=ChipSpec(cores=16))
    plan = partition(graph, board=board, seed=1, n_chips=29)
    assert plan.n_chips == 29
    check_plan(graph, plan, board)
    assert entries_fit(graph, plan, board)


def test_relief_lets_a_core_leave_when_its_senders_have_no_entries_to_spare():
    """Packing fills cores up to their entries, so a core's departure often takes a
    core that sends to it over 4,096; that core first gives a block to another core
    of the chip (no entry changes), after which the departure fits."""
    from partitioner.strategies.common import ChipRoom
    from partitioner.strategies.metis import _relieve

    ctx, packed = full_chips()
    chips = packed.block_chip().copy()
    blocked = [i for i in range(len(packed.cores)) if not packed.can_leave_chip(i)]
    assert blocked
    room = ChipRoom(packed, 29)
    relieved = 0
    for i in blocked:
        if not packed.can_leave_chip(i) and _relieve(packed, i, room):
            assert packed.can_leave_chip(i)
            relieved += 1
    assert relieved
    assert np.array_equal(packed.block_chip(), chips)  # blocks moved within their chip
    assert_entries_tracked_and_within(packed)
    on_cores = sorted(b for core in packed.cores for b in core.blocks)
    assert on_cores == list(range(ctx.graph.n_blocks))
    for core in packed.cores:
        assert CoreBin.checked(ctx.graph, ctx.limits, ctx.keys, core.blocks) is not None


def test_entry_repair_frees_a_core_on_a_full_chip():
    """Cores moved off over-full chips without counting entries (as a repair that
    finds no other way does) leave a core over its entries on a full chip, where
    none of its blocks fits another chip either: another core of that chip moves,
    whole, to a chip with a free core where every core keeps its entries, and the
    over-full core is split onto the core freed. Without that, these 67 chips used
    to be refused."""
    from partitioner.strategies.entries import fit_entries

    ctx, packed = full_chips(seed=6, cores=8, k=67)
    k, cap = 67, ctx.cores_per_chip
    counts = packed.cores_on_chips(k)
    traffic = ctx.traffic
    while (counts > cap).any():
        chip = int(np.argmax(counts))
        chips = packed.block_chip()

        def flow(j):
            blocks = packed.cores[j].blocks
            return sum(np.bincount(chips[traffic[b].indices], weights=traffic[b].data,
                                   minlength=k) for b in blocks)

        j = min(packed.chip_cores(chip), key=lambda j: flow(j)[chip] - flow(j).sum() / k)
        dest = int(np.argmax(np.where(counts < cap, flow(j), -np.inf)))
        packed.move_core_checked(j, dest, check=False)
        counts[chip] -= 1
        counts[dest] += 1
    assert packed.sync_entries().max() > 4096
    assert fit_entries(packed) is None
    assert packed.cores_on_chips(k).max() <= cap
    assert_entries_tracked_and_within(packed)
    check_plan(ctx.graph, packed_plan(ctx, packed), ctx.board)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 8))
def test_group_entry_changes_agree_with_a_recount(seed, size):
    """Moving several blocks at once: each moved block's extra entries and those of
    every block sending to them, as a recount for the new chips gives them."""
    ctx, packed = _small_packed()
    graph = ctx.graph
    rng = np.random.default_rng(seed)
    blocks = rng.choice(graph.n_blocks, size, replace=False)
    # Some to a chip nobody is on (the "off its chip" of Packed.left_behind).
    dests = rng.integers(0, packed.n_chips + 1, size)
    before = packed.block_chip().copy()
    after = before.copy()
    after[blocks] = dests
    change = graph.interchip_extra(after) - graph.interchip_extra(before)
    own, senders, delta = packed.group_entry_changes(blocks, dests)
    assert np.array_equal(own, change[blocks])
    found = np.zeros(graph.n_blocks, dtype=np.int64)
    np.add.at(found, senders, delta)
    change[blocks] = 0
    assert np.array_equal(found, change)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_single_block_entry_changes_agree_with_group_and_fit_check(seed):
    """`Packed.entry_changes` (compiled) equals the group count for one block, and
    the compiled check of a few senders' cores agrees with the array check."""
    ctx, packed = _small_packed()
    graph = ctx.graph
    rng = np.random.default_rng(seed)
    b = int(rng.integers(graph.n_blocks))
    dest = int(rng.integers(packed.n_chips))
    extra, senders, delta = packed.entry_changes(b, dest)
    own, g_senders, g_delta = packed.group_entry_changes([b], [dest])
    assert extra == graph.interchip_extra(_moved(packed.block_chip(), b, dest))[b]
    assert extra - packed.ctx.keys.extra_of(b) == own[0]
    assert sorted(zip(senders.tolist(), delta.tolist())) == \
        sorted(zip(g_senders.tolist(), g_delta.tolist()))
    # The fit check: a few senders (compiled) against many (arrays), same answer.
    usage = packed.usage()
    blocks = rng.choice(graph.n_blocks, 40)
    cores = packed.block_core[blocks]
    room = ctx.limits.out_axons - usage[cores, OUT]
    for scale in (0, 2, 6):
        change = rng.integers(-3, 4, 40) + scale * room // 8
        many = np.tile(blocks, 2), np.concatenate([change, np.zeros(40, np.int64)])
        assert packed.entries_fit(blocks, change) == packed.entries_fit(*many)


def _moved(block_chip, b, dest):
    after = block_chip.copy()
    after[b] = dest
    return after


def test_checked_core_moves_keep_entries_exact():
    """`Packed.move_core_checked` moves a core only when every core stays within
    its entries, and keeps each core's count equal to a recount."""
    ctx, packed = _small_packed()
    rng = np.random.default_rng(0)
    moved = refused = 0
    for _ in range(200):
        i = int(rng.integers(len(packed.cores)))
        dest = int(rng.integers(packed.n_chips))
        if dest == packed.core_chip[i]:
            continue
        if packed.move_core_checked(i, dest):
            moved += 1
        else:
            refused += 1
        assert_entries_tracked_and_within(packed)
    assert moved and refused


_SMALL = {}


def _small_packed():
    """A fresh copy of a small packed plan whose cores are full of entries."""
    from partitioner.packing import BlockKeys, effective_size
    from partitioner.strategies.common import Context, Packed, pack_by_chip
    from partitioner.strategies.metis import metis_parts

    if not _SMALL:
        graph = random_graph(400, seed=5, large_fraction=0.5)
        board = get_board("nahuku8").replace(chip=ChipSpec(cores=16))
        ctx = Context(graph=graph, board=board, limits=board.limits,
                      keys=BlockKeys(graph), traffic=graph.symmetric_traffic(),
                      sizes=effective_size(graph, board.limits), pins={}, seed=0)
        packed = pack_by_chip(ctx, metis_parts(ctx, 8), 8)
        _SMALL.update(ctx=ctx, cores=[list(c.blocks) for c in packed.cores],
                      chips=list(packed.core_chip))
    ctx = _SMALL["ctx"]
    block_chip = np.empty(ctx.graph.n_blocks, dtype=np.int64)
    for blocks, chip in zip(_SMALL["cores"], _SMALL["chips"]):
        block_chip[blocks] = chip
    ctx.keys.set_chips(block_chip)
    cores = [CoreBin.of(ctx.graph, ctx.limits, ctx.keys, blocks) for blocks in _SMALL["cores"]]
    return ctx, Packed(ctx, cores, _SMALL["chips"])
