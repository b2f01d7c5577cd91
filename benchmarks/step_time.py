"""Predicted time per step: ``objective="time"`` against the default plan.

For every scenario and rate source this builds the model with nengo-loihi, extracts
the traffic graph (with the synaptic work behind every edge), and measures with the
same `partitioner.evaluate`, in the same run:

* nengo-loihi's ``Greedy`` (one block per core), for reference;
* ours with the default objective (``"spikes"``: fewest chips, densest packing);
* ours with ``objective="time"`` (more cores, and more chips when faster);
* the proven lower bound on the step time on the whole board
  (`partitioner.metrics.step_time_lower_bound`).

For each plan it prints the predicted step time, what sets it (core or link, and
which term), the chips and cores it uses, energy per step and the allocation time,
then the ratio time-objective / default per scenario against the target (at most
0.8, i.e. at least 20% less time per step, where dense packing concentrates work).

Run ``python benchmarks/step_time.py [scenario ...] [--rates axons,scenario]`` from
the repository root.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import nengo_loihi
from nengo_loihi.hardware.allocators import Greedy

from partitioner import extract, partition
from partitioner.hardware import get_board
from partitioner.metrics import board_to_plan, evaluate, step_time_lower_bound
from partitioner.scenario import load_scenario
from partitioner.whatif import bottleneck_label

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENARIOS = ["spa_like", "mnist_conv", "resnet_small", "cifar10_convnet", "modular",
             "random_ensembles", "modular_large"]
BOARD = "nahuku32"
TARGET = 0.8


def build(name):
    scenario = load_scenario(str(ROOT / "scenarios" / f"{name}.py"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(scenario.network, target="sim", progress_bar=False) as sim:
            return scenario, sim.model


def plans(model, graph, board, seed=0):
    """(label, plan, seconds) of each allocator."""
    out = []
    t0 = time.perf_counter()
    try:
        hw = Greedy(cores_per_chip=board.cores_per_chip)(model, n_chips=board.n_chips)
        out.append(("nengo-loihi Greedy",
                    board_to_plan(hw, model, graph, board_name=board.name),
                    time.perf_counter() - t0))
    except AssertionError:
        pass
    for label, objective in (("ours, default (spikes)", "spikes"),
                             ("ours, objective=time", "time")):
        t0 = time.perf_counter()
        plan = partition(graph, board=board, seed=seed, objective=objective)
        out.append((label, plan, time.perf_counter() - t0))
    return out


def measure(name, rates_mode, board):
    scenario, model = build(name)
    rates = scenario.ensemble_rates if rates_mode == "scenario" else None
    graph = extract(model, rates=rates)
    rows = []
    for label, plan, seconds in plans(model, graph, board):
        m = evaluate(graph, plan, board)
        rows.append(dict(label=label, chips=plan.n_chips, cores=plan.n_cores,
                         time_us=m.time_ns / 1000, regime=m.regime,
                         bottleneck=bottleneck_label(m.bottleneck),
                         energy_uj=m.energy_pj * 1e-6, seconds=seconds,
                         block_bound_us=m.block_bound_ns / 1000))
    bound = step_time_lower_bound(graph, board) / 1000
    return graph, rows, bound


def print_table(name, graph, rows, bound):
    print(f"\n## {name}: {graph.n_blocks} blocks, rates: {graph.rates}; "
          f"step-time lower bound {bound:.4g} us")
    header = (f"{'allocator':26s} {'chips':>5s} {'cores':>6s} {'time/step us':>12s} "
              f"{'regime':>8s} {'bottleneck':>28s} {'energy uJ':>10s} {'alloc s':>8s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['label']:26s} {r['chips']:5d} {r['cores']:6d} {r['time_us']:12.4g} "
              f"{r['regime']:>8s} {r['bottleneck']:>28s} {r['energy_uj']:10.4g} "
              f"{r['seconds']:8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    parser.add_argument("--board", default=BOARD)
    parser.add_argument("--rates", default="axons,scenario",
                        help="comma-separated: axons (every axon active), scenario "
                             "(the scenario's ensemble_rates)")
    args = parser.parse_args(argv)
    board = get_board(args.board)
    summary = []
    for rates_mode in [r.strip() for r in args.rates.split(",") if r.strip()]:
        for name in args.scenarios:
            t0 = time.perf_counter()
            graph, rows, bound = measure(name, rates_mode, board)
            print_table(name, graph, rows, bound)
            print(f"({time.perf_counter() - t0:.1f} s including the nengo-loihi build)")
            base = next(r for r in rows if r["label"].startswith("ours, default"))
            fast = next(r for r in rows if r["label"].startswith("ours, objective=time"))
            summary.append((name, rates_mode, base, fast, bound))
    print("\n## time objective / default (same evaluate); target <= "
          f"{TARGET} where dense packing concentrates work")
    print(f"{'scenario':18s} {'rates':>8s} {'default us':>10s} {'time us':>9s} "
          f"{'ratio':>6s} {'chips':>7s} {'cores':>9s} {'energy':>6s} {'gap to LB':>9s}")
    for name, rates_mode, base, fast, bound in summary:
        ratio = fast["time_us"] / base["time_us"]
        print(f"{name:18s} {rates_mode:>8s} {base['time_us']:10.4g} {fast['time_us']:9.4g} "
              f"{ratio:6.3f} {base['chips']:>3d}->{fast['chips']:<3d} "
              f"{base['cores']:>4d}->{fast['cores']:<4d} "
              f"{fast['energy_uj'] / base['energy_uj']:6.3f} "
              f"{(fast['time_us'] - bound) / fast['time_us']:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
