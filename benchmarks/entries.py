"""What counting output axon entries per chip assignment costs, and what it prevents.

An axon to a block on another chip takes one more output axon entry on its core
(docs/rules.md), so a plan must be checked for its own chip assignment. For each graph
this measures, in the same run:

* **blind**: the plan made as if inter-chip axons cost nothing extra (the graph with
  ``interchip_entries`` zeroed), then measured with the real count: how many of its
  cores overflow (boards that nengo-loihi's ``validate_board`` accepts and Loihi
  refuses, its issue 326);
* **ours**: the plan of `partition` on the real graph (cores never overflow): chips,
  cores, inter-chip spikes and time against the blind plan;
* nengo-loihi's own ``GreedyInterchip`` board (nengo models only), measured the same way.

Run ``python benchmarks/entries.py [--quick]`` from the repository root. Without
``--quick`` it also builds the bundled ``modular_large`` scenario (about 2 minutes)
and places it on the fewest chips and spread over 24 chips, as a user spreading it over
a Nahuku board would.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import scipy.sparse as sp

from partitioner import partition
from partitioner.errors import InfeasibleError
from partitioner.extract import build_model
from partitioner.extract import extract as extract_graph
from partitioner.hardware import get_board
from partitioner.metrics import board_to_plan, evaluate
from partitioner.scenario import load_scenario
from partitioner.synthetic import random_graph


def blind(graph):
    """The graph as if axons to other chips took no extra entry."""
    return dataclasses.replace(graph, interchip_entries=sp.csr_matrix(graph.axons.shape))


def measure(graph, plan):
    m = evaluate(graph, plan)
    return dict(chips=plan.n_chips, cores=plan.n_cores, spikes=m.interchip_spikes,
                over=m.cores_over_limit, max_entries=int(m.core_out_entries.max(initial=0)))


def run_case(name, graph, board, n_chips, spread, model=None):
    out = {"case": name, "blocks": graph.n_blocks}
    t0 = time.perf_counter()
    blind_plan = partition(blind(graph), board=board, n_chips=n_chips, spread=spread)
    out["blind_s"] = time.perf_counter() - t0
    out["blind"] = measure(graph, blind_plan)
    t0 = time.perf_counter()
    try:
        plan = partition(graph, board=board, n_chips=n_chips, spread=spread)
        out["ours"] = measure(graph, plan)
        out["entries_s"] = plan.info["stage_seconds"].get("entries", 0.0)
    except InfeasibleError as err:
        out["ours"] = {"refused": str(err)[:160]}
    out["ours_s"] = time.perf_counter() - t0
    if model is not None:
        from nengo_loihi.hardware.allocators import GreedyInterchip

        hw = GreedyInterchip()(model, n_chips=n_chips if spread else board.n_chips)
        out["greedy_interchip"] = measure(graph, board_to_plan(hw, model, graph,
                                                               board_name=board.name))
    return out


def fmt(row):
    b, o = row["blind"], row["ours"]
    lines = [f"{row['case']} ({row['blocks']:,} blocks)"]
    lines.append(
        f"  blind: {b['chips']} chips, {b['cores']} cores, {b['spikes']:.1f} ic spikes/step, "
        f"{b['over']} cores over 4096 (max {b['max_entries']}), {row['blind_s']:.2f} s")
    if "refused" in o:
        lines.append(f"  ours: refused: {o['refused']}")
    else:
        ratio = o["spikes"] / b["spikes"] if b["spikes"] else float("nan")
        lines.append(
            f"  ours:  {o['chips']} chips, {o['cores']} cores, {o['spikes']:.1f} ic spikes/step "
            f"({ratio:.3f}x blind), {o['over']} cores over (max {o['max_entries']}), "
            f"{row['ours_s']:.2f} s ({row['ours_s'] / row['blind_s']:.2f}x blind; "
            f"recount and repair {row['entries_s']:.3f} s)")
    gi = row.get("greedy_interchip")
    if gi:
        lines.append(
            f"  nengo-loihi GreedyInterchip: {gi['chips']} chips, {gi['cores']} cores, "
            f"{gi['over']} cores over 4096 (max {gi['max_entries']})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip modular_large")
    parser.add_argument("--no-synthetic", action="store_true",
                        help="only modular_large")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    board = get_board("nahuku32")
    cases = []
    if args.no_synthetic:
        sizes = {}
    else:
        sizes = {1_000: ("nahuku32", 24), 10_000: ("pohoiki_beach", 64),
                 100_000: ("pohoiki_springs", 768)}
    for n, (board_name, chips) in sizes.items():
        graph = random_graph(n, seed=0, large_fraction=0.5)
        big = get_board(board_name)
        cases.append((f"synthetic {n:,} on {board_name}, fewest chips", graph, big, None,
                      False, None))
        cases.append((f"synthetic {n:,} spread over {chips} chips", graph, big, chips,
                      True, None))
    if not args.quick:
        t0 = time.perf_counter()
        scenario = load_scenario("modular_large")
        model = build_model(scenario.network)
        graph = extract_graph(model, rates=scenario.ensemble_rates)
        print(f"built modular_large in {time.perf_counter() - t0:.0f} s")
        cases.append(("modular_large, fewest chips", graph, board, None, False, model))
        cases.append(("modular_large spread over 24 chips", graph, board, 24, True, model))
    for case in cases:
        print(fmt(run_case(*case)), flush=True)


if __name__ == "__main__":
    main()
