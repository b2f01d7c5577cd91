"""Allocation quality on the bundled scenarios: ours against nengo-loihi's allocators.

For every scenario this builds the model with nengo-loihi, extracts the traffic graph,
and measures, in the same run:

* nengo-loihi's ``Greedy``, ``RoundRobin`` and ``GreedyInterchip`` (one block per core);
* two size-only baselines: ``first-fit`` (pack by size, fill chips in order) and
  ``metis-first-fit`` (METIS chips, then pack each chip by size);
* ours: ``metis`` (packing and chip cut decided together, then refinement), on the
  fewest chips, and spread over the same chips GreedyInterchip used;
* the proven lower bounds on cores and chips.

It prints one table per scenario and a ratio summary against the targets:
cores <= 1.15x the core lower bound, chips = the minimum feasible, inter-chip
spikes <= 0.5x GreedyInterchip's, allocation time no worse than GreedyInterchip's.

Run ``python benchmarks/allocation_quality.py [scenario ...]`` from the repository root.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
import warnings

import nengo_loihi
from nengo_loihi.hardware.allocators import Greedy, GreedyInterchip, RoundRobin

from partitioner import extract, partition
from partitioner.hardware import get_board
from partitioner.metrics import board_to_plan, evaluate, lower_bounds
from partitioner.scenario import load_scenario

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENARIOS = ["mnist_conv", "resnet_small", "cifar10_convnet", "random_ensembles", "modular",
             "spa_like", "modular_large"]
BOARD = "nahuku32"


def nengo_loihi_rows(model, graph, rates, board):
    """Plans of nengo-loihi's allocators, each with its runtime."""
    n_chips = board.n_chips
    allocators = {
        "nengo-loihi Greedy": Greedy(),
        "nengo-loihi RoundRobin": RoundRobin(),
        "nengo-loihi GreedyInterchip": GreedyInterchip(ensemble_rates=rates),
    }
    rows = {}
    for name, allocator in allocators.items():
        # RoundRobin spreads over every chip it is given: give it the chips
        # GreedyInterchip needs, as a user would.
        chips = n_chips if name != "nengo-loihi RoundRobin" else _greedy_chips(graph, board)
        t0 = time.perf_counter()
        try:
            hw_board = allocator(model, n_chips=chips)
        except KeyError:
            # GreedyInterchip cannot take rates when some blocks (decode neurons)
            # belong to no ensemble; fall back to its all-axons estimate.
            name += " (no rates)"
            t0 = time.perf_counter()
            hw_board = GreedyInterchip()(model, n_chips=chips)
        runtime = time.perf_counter() - t0
        plan = board_to_plan(hw_board, model, graph, strategy=name, board_name=board.name)
        plan.runtime_s = runtime
        rows[name] = plan
    return rows


def _gi(rows):
    return next(v for k, v in rows.items() if k.startswith("nengo-loihi GreedyInterchip"))


def _greedy_chips(graph, board):
    return max(1, math.ceil(graph.n_blocks / board.cores_per_chip))


def our_rows(graph, board, greedy_chips, seed=0):
    """Our plans and the size-only baselines."""
    rows = {}
    for name, kwargs in {
        "first-fit": dict(strategy="first-fit"),
        "metis-first-fit": dict(strategy="metis-first-fit"),
        "ours (metis, fewest chips)": dict(strategy="metis"),
        f"ours (metis, spread {greedy_chips} chips)": dict(
            strategy="metis", n_chips=greedy_chips, spread=True
        ),
    }.items():
        rows[name] = partition(graph, board=board, seed=seed, **kwargs)
    return rows


def measure(scenario_name, board):
    """Build, extract and allocate one scenario; return (graph, bounds, rows)."""
    scenario = load_scenario(str(ROOT / "scenarios" / f"{scenario_name}.py"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(scenario.network, target="sim", progress_bar=False) as sim:
            model = sim.model
    rates = scenario.ensemble_rates
    graph = extract(model, rates=rates)
    bounds = lower_bounds(graph, board)
    plans = nengo_loihi_rows(model, graph, rates, board)
    greedy_chips = _gi(plans).n_chips
    plans.update(our_rows(graph, board, greedy_chips))
    rows = {}
    for name, plan in plans.items():
        m = evaluate(graph, plan, board)
        rows[name] = dict(
            chips=plan.n_chips, cores=plan.n_cores, interchip_axons=m.interchip_axons,
            interchip_spikes=m.interchip_spikes, max_link=m.max_link_load,
            runtime=plan.runtime_s,
        )
    return graph, bounds, rows


def print_table(name, graph, bounds, rows):
    print(f"\n## {name}: {graph.n_blocks} blocks, rates: {graph.rates}")
    print(f"lower bounds: {bounds['cores']} cores, {bounds['chips']} chips")
    header = f"{'allocator':40s} {'chips':>5s} {'cores':>6s} {'cores/LB':>8s} " \
             f"{'ic axons':>10s} {'ic spikes/step':>14s} {'max link':>10s} {'time s':>8s}"
    print(header)
    print("-" * len(header))
    for label, r in rows.items():
        print(f"{label:40s} {r['chips']:5d} {r['cores']:6d} "
              f"{r['cores'] / bounds['cores']:8.2f} {r['interchip_axons']:10.0f} "
              f"{r['interchip_spikes']:14.1f} {r['max_link']:10.1f} {r['runtime']:8.3f}")


def ratios(bounds, rows):
    """Target ratios of our fewest-chip and spread plans."""
    gi = _gi(rows)
    ours = rows["ours (metis, fewest chips)"]
    spread = next(v for k, v in rows.items() if k.startswith("ours (metis, spread"))

    def rel(a, b):
        return a / b if b > 0 else (0.0 if a == 0 else math.inf)

    return dict(
        cores_vs_lb=ours["cores"] / bounds["cores"],
        chips_vs_lb=ours["chips"] / bounds["chips"],
        spikes_vs_gi=rel(ours["interchip_spikes"], gi["interchip_spikes"]),
        spread_spikes_vs_gi=rel(spread["interchip_spikes"], gi["interchip_spikes"]),
        spikes_vs_first_fit=rel(ours["interchip_spikes"], rows["first-fit"]["interchip_spikes"]),
        spikes_vs_metis_ff=rel(
            ours["interchip_spikes"], rows["metis-first-fit"]["interchip_spikes"]
        ),
        time_vs_gi=rel(ours["runtime"], gi["runtime"]),
        chips_vs_gi=rel(ours["chips"], gi["chips"]),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    parser.add_argument("--board", default=BOARD)
    args = parser.parse_args(argv)
    board = get_board(args.board)
    summary = {}
    for name in args.scenarios:
        t0 = time.perf_counter()
        graph, bounds, rows = measure(name, board)
        print_table(name, graph, bounds, rows)
        summary[name] = ratios(bounds, rows)
        print(f"({time.perf_counter() - t0:.1f} s including the nengo-loihi build)")
    print("\n## Ratios (ours = metis, fewest chips; GI = nengo-loihi GreedyInterchip)")
    cols = list(next(iter(summary.values())))
    print(f"{'scenario':18s} " + " ".join(f"{c:>20s}" for c in cols))
    for name, r in summary.items():
        print(f"{name:18s} " + " ".join(f"{r[c]:20.3f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
