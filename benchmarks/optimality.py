"""How far the default strategy is from proven optima, and what mesh placement buys.

Part 1, optimality: small graphs on chips shrunk to a few cores, so that 2-4 chips
are needed:

* synthetic `random_graph` instances;
* structured nengo networks, extracted with `partitioner.extract`: rings and chains of
  core-sized ensembles (40 neurons on cores shrunk to 64 compartments, decoded
  connections, so every connection adds a block of decode neurons), modules of
  ensembles with neuron-to-neuron connections, and the bundled MNIST convolution.

For each it runs METIS alone (``refine_plan=False, improve=False``), METIS with
refinement (``improve=False``), the default strategy (METIS, refinement and the CP-SAT
improvement under a deterministic work budget) and CP-SAT (``strategy="ilp"``, a
wall-clock limit per chip count), and prints inter-chip spikes per step, CP-SAT's
proven bound and gap, and runtimes. Ratios are over the instances CP-SAT proves
optimal at the same chip count.

Part 2, placement: plans spanning 10-32 chips of a Nahuku32 board (a clustered
synthetic graph, and the bundled modular scenario, on chips shrunk so that they need
that many) and a 768-chip plan on Pohoiki Springs. For each: hop-weighted cost
(spike-hops per step) and busiest-link load of the identity placement (chip ``i`` at
mesh position ``i``), of a random placement, and of `placement.place_chips`.

Run ``python benchmarks/optimality.py`` from the repository root (a few minutes on two
cores; ``--part 1`` or ``--part 2`` for one part).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

from partitioner.engine import partition
from partitioner.graph import TrafficGraph
from partitioner.hardware import ChipSpec, CoreLimits, get_board
from partitioner.placement import placement_report
from partitioner.plan import Plan
from partitioner.synthetic import random_graph

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: (name, graph factory, cores per chip) for part 1.
SYNTHETIC = [
    (f"random_graph({n}, seed={seed})", (n, seed), cores)
    for n, cores, seed in [
        (20, 4, 0), (20, 4, 1), (20, 2, 0), (30, 4, 0), (30, 4, 1), (30, 6, 2),
        (30, 3, 0), (40, 6, 0), (40, 8, 0), (40, 8, 1), (60, 8, 1), (60, 8, 2),
    ]
]


#: Structured nengo networks for part 1: (name, builder, keyword arguments, cores per
#: chip, compartments per core or None for Loihi's 1,024).
STRUCTURED = [
    ("5 rings of 6 ensembles", "rings", dict(n_rings=5, length=6), 16, 64),
    ("5 rings of 6 ensembles", "rings", dict(n_rings=5, length=6), 11, 64),
    ("7 rings of 6 ensembles", "rings", dict(n_rings=7, length=6), 15, 64),
    ("4 rings of 10 ensembles", "rings", dict(n_rings=4, length=10), 14, 64),
    ("13 rings of 10 ensembles", "rings", dict(n_rings=13, length=10), 66, 64),
    ("14 rings of 10 ensembles", "rings", dict(n_rings=14, length=10), 72, 64),
    ("14 rings of 10 ensembles", "rings", dict(n_rings=14, length=10), 47, 64),
    ("3 chains of 8 ensembles", "chains", dict(n_rings=3, length=8), 12, 64),
    ("6 chains of 8 ensembles", "chains", dict(n_rings=6, length=8), 17, 64),
    ("3 modules of 8 ensembles", "modules", dict(n_modules=3, per_module=8, seed=1), 4, None),
    ("4 modules of 6 ensembles", "modules", dict(n_modules=4, per_module=6, seed=2), 4, None),
    ("5 modules of 8 ensembles", "modules", dict(n_modules=5, per_module=8, seed=3), 6, None),
    ("6 modules of 8 ensembles", "modules", dict(n_modules=6, per_module=8, seed=4), 8, None),
    ("mnist_conv (bundled)", "mnist_conv", {}, 8, None),
]


# ============================================================== graph builders
def ensemble_rings(n_rings, length, neurons=40, chain=False, seed=0):
    """``n_rings`` rings (or chains) of ``length`` ensembles with decoded connections.

    Each ensemble is one block and each connection adds a block of 20 decode neurons;
    on cores of 64 compartments two 40-neuron ensembles never share a core.
    """
    import nengo

    with nengo.Network(seed=seed) as net:
        net.config[nengo.Ensemble].neuron_type = nengo.LIF(
            initial_state={"voltage": nengo.dists.Choice([0])})
        for r in range(n_rings):
            stim = nengo.Node(np.sin, label=f"stim{r}")
            ens = [nengo.Ensemble(neurons, 1, label=f"r{r}e{i}") for i in range(length)]
            nengo.Connection(stim, ens[0])
            for i in range(length - 1 if chain else length):
                nengo.Connection(ens[i], ens[(i + 1) % length], synapse=0.01)
    return net


def small_modular_network(n_modules=3, per_module=8, seed=1):
    """``n_modules`` modules of ``per_module`` neuron-to-neuron connected ensembles."""
    import nengo

    rng = np.random.default_rng(seed)
    with nengo.Network(seed=seed) as net:
        modules = []
        for m in range(n_modules):
            stim = nengo.Node(np.sin, label=f"stim{m}")
            ens = [nengo.Ensemble(int(rng.integers(40, 200)), 1, label=f"m{m}e{i}")
                   for i in range(per_module)]
            nengo.Connection(stim, ens[0])
            for i, a in enumerate(ens):
                for j, b in enumerate(ens):
                    if i != j and rng.random() < 0.35:
                        nengo.Connection(a.neurons, b.neurons,
                                         transform=rng.normal(0, 1e-3, (b.n_neurons, a.n_neurons)))
            modules.append(ens)
        for _ in range(n_modules):
            a, b = rng.choice(n_modules, 2, replace=False)
            pre, post = modules[a][rng.integers(per_module)], modules[b][rng.integers(per_module)]
            nengo.Connection(pre.neurons, post.neurons,
                             transform=rng.normal(0, 1e-3, (post.n_neurons, pre.n_neurons)))
    return net


def extracted(kind, **kwargs):
    """Traffic graph of a nengo network, or None if extraction is unavailable."""
    try:
        from partitioner.extract import extract
        from partitioner.scenario import load_scenario

        if kind in ("mnist_conv", "modular"):
            scenario = load_scenario(str(ROOT / "scenarios" / f"{kind}.py"))
            return extract(scenario.network, rates=scenario.ensemble_rates, progress=False)
        if kind in ("rings", "chains"):
            return extract(ensemble_rings(chain=kind == "chains", **kwargs), progress=False)
        return extract(small_modular_network(**kwargs), progress=False)
    except Exception as err:  # noqa: BLE001 - the benchmark reports and goes on
        print(f"  (skipping {kind}: {type(err).__name__}: {err})")
        return None


def chip_level_graph(n_chips, seed=1, group=8):
    """One block per chip with clustered traffic (ids shuffled), and its plan."""
    rng = np.random.default_rng(seed)
    t = np.zeros((n_chips, n_chips))
    for a in range(n_chips):
        mates = (a // group) * group + np.arange(group)
        t[a, mates[mates < n_chips]] = rng.exponential(20.0, (mates < n_chips).sum())
        t[a, rng.integers(0, n_chips, 2)] += rng.exponential(1.0, 2)
    np.fill_diagonal(t, 0.0)
    perm = rng.permutation(n_chips)
    spikes = sp.csr_matrix(t[np.ix_(perm, perm)])
    n = n_chips
    empty = sp.csr_matrix((n, 1), dtype=bool)
    graph = TrafficGraph(
        labels=[f"b{i}" for i in range(n)], sources=[f"s{i}" for i in range(n)],
        resources=np.ones((n, 4), dtype=np.int64), shared_synapse_bits=np.ones(n),
        configs={k: empty for k in ("compartment_cfgs", "vth_cfgs", "synapse_cfgs",
                                    "synapse_cfgs_shared", "stdp_pre_cfgs")},
        core_key=np.zeros(n), noise_key=np.full(n, -1), learning=np.zeros(n, bool),
        pop_sender=np.zeros(n, bool), pop16_in_limit=np.zeros(n),
        axons=(spikes > 0).astype(float), spikes=spikes, rates="synthetic",
    )
    plan = Plan.from_assignment(np.arange(n), np.arange(n), board="pohoiki_springs",
                                fingerprint=graph.fingerprint())
    return graph, plan


# ================================================================ part 1
def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def optimality_row(name, graph, cores, time_limit, compartments=None):
    core = CoreLimits() if compartments is None else CoreLimits(compartments=compartments)
    board = get_board("pohoiki_beach").replace(chip=ChipSpec(cores=cores, core=core))
    plain, t_plain = timed(partition, graph, board=board, refine_plan=False, improve=False)
    refined, t_refined = timed(partition, graph, board=board, improve=False)
    default, t_default = timed(partition, graph, board=board)
    exact, t_exact = timed(partition, graph, board=board, strategy="ilp",
                           time_limit=time_limit)
    improve = default.info.get("improve", {})
    return {
        "name": name, "blocks": graph.n_blocks, "cores": cores,
        "compartments": compartments or core.compartments,
        "chips": (plain.n_chips, refined.n_chips, default.n_chips, exact.n_chips),
        "metis": plain.objective_value, "refined": refined.objective_value,
        "default": default.objective_value, "cpsat": exact.objective_value,
        "bound": exact.bound, "gap": exact.gap, "status": exact.info.get("status", "?"),
        "default_status": improve.get("status", "-"), "work": improve.get("work_used"),
        "times": (t_plain, t_refined, t_default, t_exact),
    }


def print_optimality(rows, header=True):
    head = (f"{'instance':<28}{'blk':>4}{'c/chip':>7}{'chips':>9}{'METIS':>9}"
            f"{'+refine':>9}{'default':>9}{'CP-SAT':>9}{'bound':>9}{'gap%':>6}{'status':>9}"
            f"{'dflt/opt':>9}{'t METIS':>8}{'t +ref':>7}{'t dflt':>7}{'work':>6}{'t CP-SAT':>9}")
    if header:
        print(head)
        print("-" * len(head))
    for r in rows:
        chips = "/".join(str(c) for c in sorted(set(r["chips"])))
        bound = f"{r['bound']:9.2f}" if r["bound"] is not None else f"{'-':>9}"
        gap = f"{100 * r['gap']:6.1f}" if r["gap"] is not None else f"{'-':>6}"
        ratio = f"{_ratio(r, 'default'):9.3f}" if _proven(r) else f"{'-':>9}"
        work = f"{r['work']:6.2f}" if r["work"] is not None else f"{'-':>6}"
        t = r["times"]
        print(f"{r['name']:<28}{r['blocks']:>4}{r['cores']:>7}{chips:>9}{r['metis']:9.2f}"
              f"{r['refined']:9.2f}{r['default']:9.2f}{r['cpsat']:9.2f}{bound}{gap}"
              f"{r['status']:>9}{ratio}{t[0]:8.2f}{t[1]:7.2f}{t[2]:7.2f}{work}{t[3]:9.2f}")


def _proven(r):
    return r["status"] == "OPTIMAL" and len(set(r["chips"])) == 1


def _ratio(r, key):
    if r["cpsat"] > 0:
        return r[key] / r["cpsat"]
    return 1.0 if r[key] <= 1e-9 else float("inf")


def optimality_summary(rows):
    proven = [r for r in rows if _proven(r)]
    print(f"\nproven optimal: {len(proven)} of {len(rows)} instances "
          f"(ratios below over these, same chip count)")
    if not proven:
        return
    for key, label in (("metis", "METIS alone"), ("refined", "METIS + refine"),
                       ("default", "default (+ CP-SAT improve)")):
        ratios = np.array([_ratio(r, key) for r in proven])
        within = int((ratios <= 1.05 + 1e-9).sum())
        print(f"  {label:<28} / optimum: mean {ratios.mean():.3f}, worst {ratios.max():.3f},"
              f" within 5%: {within}/{len(proven)}")
    times = np.array([r["times"][2] for r in proven])
    print(f"  default time on these: median {np.median(times):.2f} s, max {times.max():.2f} s")
    open_rows = [r for r in rows if not _proven(r)]
    for r in open_rows:
        gap = "-" if r["gap"] is None else f"{100 * r['gap']:.1f}%"
        print(f"  not proven: {r['name']} ({r['cores']} cores/chip): CP-SAT {r['status']}, "
              f"gap {gap}; default / CP-SAT plan = {_ratio(r, 'default'):.3f}")


# ================================================================ part 2
def placement_row(name, graph, plan, board):
    report, seconds = timed(placement_report, graph, plan, board,
                            positions=plan.chip_position)
    return {"name": name, "chips": plan.n_chips, "board": board.name, "report": report,
            "seconds": seconds}


def print_placement(rows):
    head = (f"{'plan':<40}{'chips':>6}  {'hop-weighted cost':>30}  "
            f"{'max link load':>27}  {'ours/id':>7}{'ours/rnd':>9}")
    sub = (f"{'':<46}  {'identity':>10}{'random':>10}{'ours':>10}  "
           f"{'identity':>9}{'random':>9}{'ours':>9}")
    print(head)
    print(sub)
    print("-" * len(head))
    for r in rows:
        rep = r["report"]
        hop = [rep[k]["hop_weighted_cost"] for k in ("identity", "random", "placed")]
        link = [rep[k]["max_link_load"] for k in ("identity", "random", "placed")]
        print(f"{r['name']:<40}{r['chips']:>6}  {hop[0]:10.1f}{hop[1]:10.1f}{hop[2]:10.1f}"
              f"  {link[0]:9.2f}{link[1]:9.2f}{link[2]:9.2f}  "
              f"{rep['hop_ratio_vs_identity']:7.3f}{rep['hop_ratio_vs_random']:9.3f}")


# ================================================================== main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=15.0,
                        help="CP-SAT seconds per chip count (default 15)")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run one part only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()

    if args.part in (None, 1):
        print("== Part 1: METIS, + refine, default, CP-SAT (inter-chip spikes per step) ==")
        print("   boards: Pohoiki Beach mesh with chips shrunk to 'c/chip' cores (rings and")
        print("   chains: cores of 64 compartments); 'work': the default's CP-SAT work used")
        print("   (deterministic seconds)\n")
        rows = []
        for name, (n, seed), cores in SYNTHETIC:
            rows.append(optimality_row(name, random_graph(n, seed=seed), cores,
                                       args.time_limit))
            print_optimality(rows[-1:], header=len(rows) == 1)
        for name, kind, kwargs, cores, compartments in STRUCTURED:
            graph = extracted(kind, **kwargs)
            if graph is not None:
                rows.append(optimality_row(name, graph, cores, args.time_limit,
                                           compartments))
                print_optimality(rows[-1:], header=len(rows) == 1)
        print()
        print_optimality(rows)
        optimality_summary(rows)
    if args.part in (None, 2):
        placement_part()
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")
    return 0


def placement_part():
    """Part 2: identity, random and optimized chip placement."""
    print("\n== Part 2: chip placement on the board mesh ==\n")
    prows = []
    nahuku = get_board("nahuku32").replace(chip=ChipSpec(cores=16))
    graph = random_graph(1500, seed=4, cluster_size=(20, 60))
    plan = partition(graph, board=nahuku)
    prows.append(placement_row("random_graph(1500) clustered, nahuku32", graph, plan, nahuku))
    modular = extracted("modular")
    if modular is not None:
        board = get_board("nahuku32").replace(chip=ChipSpec(cores=2))
        plan = partition(modular, board=board)
        prows.append(placement_row("scenarios/modular.py, nahuku32", modular, plan, board))
    springs = get_board("pohoiki_springs")
    graph, plan = chip_level_graph(springs.n_chips)
    from partitioner.placement import place_chips

    plan.chip_position, seconds = timed(place_chips, graph, plan, springs)
    prows.append(placement_row("768 chips, clustered, pohoiki_springs", graph, plan,
                               springs))
    print_placement(prows)
    print(f"\nplacing 768 chips on pohoiki_springs took {seconds:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
