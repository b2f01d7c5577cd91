"""Scale benchmark: time and peak memory of every stage, from 1,000 to 1,000,000 blocks.

Synthetic graphs, ``partitioner.synthetic.random_graph(n, avg_degree=8, seed=0)``, on
Pohoiki Springs (768 chips x 128 cores), stage by stage: graph generation; `partition`
(the strategy stage packs cores and cuts chips, including the chip-count search; then
refinement, consolidation and placement on the chip mesh); `metrics.evaluate`. With
``--full`` also 1,000,000 blocks: they need about 1,725 chips, more than Pohoiki
Springs has, so that size runs on a hypothetical board of the same chips on a 48 x 48
mesh.

nengo-loihi models, build time excluded (it is shown for reference):

* ``scenarios/modular.py`` networks of about 1,000 and 4,000 blocks: nengo-loihi's
  ``GreedyInterchip`` (one block per core) against ours (extract, partition,
  ``allocator.board_from_plan``), timed in the same run and given as ratios, with the
  chips, cores and inter-chip spikes of both;
* a model of 10,000 small blocks (2,500 one-dimensional ensembles of 20 neurons, each
  with three decoded connections, whose decode neurons are blocks of their own):
  extraction, partition and emission.

Every measurement runs in a subprocess of its own. Peak memory is the peak resident set
size of that process during the stage (Linux: ``VmHWM``, reset before each stage; other
systems: the peak so far). Sub-stages of `partition` share its peak.

Run from the repository root::

    python benchmarks/scale.py                 # 1k, 10k, 100k blocks + nengo models
    python benchmarks/scale.py --full          # also 1,000,000 blocks
    python benchmarks/scale.py --plot scale.png
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import pathlib
import resource
import subprocess
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Synthetic sizes run by default, and the one ``--full`` adds.
SIZES = (1_000, 10_000, 100_000)
FULL_SIZE = 1_000_000
#: Board of the synthetic runs, and of sizes it cannot hold.
BOARD = "pohoiki_springs"
#: Modules of the modular networks of about 1,000 and 4,000 blocks.
MODULAR = (67, 267)
#: Neurons per ensemble of the modular networks (smaller than the scenario's default
#: to keep the nengo-loihi build short).
MODULAR_NEURONS = (16, 64)
#: Ensembles of the small-block model (four blocks each).
SMALL_ENSEMBLES = 2_500
#: Board of the nengo-loihi models.
NENGO_BOARD = "pohoiki_beach"
#: Stages of `partition` (``plan.info["stage_seconds"]``) shown as rows.
PARTITION_STAGES = ("strategy", "refine", "consolidate", "place")


# =============================================================== measuring
def _reset_peak():
    """Reset the peak resident set size of this process (Linux); False if unable."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb():
    """Peak resident set size in MB since the last reset (or since start)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes / kB


class Meter:
    """Wall-clock time and peak memory of named stages, in the order they ran."""

    def __init__(self):
        self.rows = []

    @contextlib.contextmanager
    def stage(self, name, **extra):
        """Measure the ``with`` block as stage ``name``."""
        _reset_peak()
        start = time.perf_counter()
        yield
        self.rows.append(dict(stage=name, seconds=time.perf_counter() - start,
                              peak_mb=_peak_mb(), **extra))

    def add(self, name, seconds, **extra):
        """Record a stage timed elsewhere (no memory figure of its own)."""
        self.rows.append(dict(stage=name, seconds=seconds, peak_mb=None, **extra))


def _board(n_blocks):
    """Pohoiki Springs, or for 1,000,000 blocks a larger board of the same chips."""
    from partitioner.hardware import BoardSpec, get_board

    if n_blocks < 500_000:
        return get_board(BOARD)
    return BoardSpec("springs_48x48", 48 * 48, (48, 48),
                     description="hypothetical: Pohoiki Springs chips on a 48 x 48 mesh")


def _partition_rows(meter, plan, prefix=""):
    for name in PARTITION_STAGES:
        seconds = plan.info.get("stage_seconds", {}).get(name)
        if seconds is not None:
            meter.add(f"{prefix}  {name}", seconds)


# ================================================================= workers
def synthetic_worker(n_blocks):
    """Stages of one synthetic size."""
    from partitioner import metrics
    from partitioner.engine import partition
    from partitioner.synthetic import random_graph

    board = _board(n_blocks)
    meter = Meter()
    with meter.stage("generate"):
        graph = random_graph(n_blocks, avg_degree=8, seed=0)
    with meter.stage("partition"):
        plan = partition(graph, board=board)
    _partition_rows(meter, plan)
    with meter.stage("evaluate"):
        result = metrics.evaluate(graph, plan, board)
    return dict(kind="synthetic", name=f"synthetic {n_blocks:,}", blocks=n_blocks,
                edges=int(graph.spikes.nnz), board=board.name, rows=meter.rows,
                ours=dict(chips=plan.n_chips, cores=plan.n_cores,
                          spikes=result.interchip_spikes))


def _load_scenario_module(name):
    spec = importlib.util.spec_from_file_location(
        f"scale_{name}", ROOT / "scenarios" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_ensembles_network(n_ensembles, fan_out=3, neurons=20, group=64, seed=0):
    """Many one-dimensional ensembles with decoded connections inside groups of 64.

    Every decoded connection gets a decode-neuron block, so the model has
    ``n_ensembles * (1 + fan_out)`` blocks. Weights keep magnitudes of at least 0.5,
    which nengo-loihi can discretize.
    """
    import nengo
    import numpy as np

    rng = np.random.RandomState(seed)
    with nengo.Network(label="small ensembles", seed=seed) as net:
        net.config[nengo.Ensemble].neuron_type = nengo.LIF(
            initial_state={"voltage": nengo.dists.Choice([0])})
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t), label="stim")
        ens = [nengo.Ensemble(neurons, 1, label=f"e{i}") for i in range(n_ensembles)]
        for start in range(0, n_ensembles, group):
            nengo.Connection(stim, ens[start])
        for i, pre in enumerate(ens):
            base = i - i % group
            size = min(group, n_ensembles - base)
            others = np.delete(np.arange(size), i - base)
            for k in rng.choice(others, min(fan_out, others.size), replace=False):
                weight = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
                nengo.Connection(pre, ens[base + k], transform=weight)
    return net


def _build(network):
    from partitioner.extract import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(network)


def nengo_worker(kind, size):
    """Extraction, partition and emission of one nengo-loihi model, and for the
    modular networks nengo-loihi's GreedyInterchip on the same model."""
    from partitioner.allocator import board_from_plan, restore_model
    from partitioner.engine import partition
    from partitioner.extract import extract
    from partitioner.hardware import get_board
    from partitioner.metrics import evaluate

    board = get_board(NENGO_BOARD)
    if kind == "modular":
        net = _load_scenario_module("modular").build(n_modules=size, neurons=MODULAR_NEURONS)
        name = f"modular, {size} modules"
    else:
        net = small_ensembles_network(size)
        name = f"small ensembles, {size:,}"
    start = time.perf_counter()
    model = _build(net)
    build_s = time.perf_counter() - start
    meter = Meter()
    with meter.stage("extract"):
        graph = extract(model)
    with meter.stage("partition"):
        plan = partition(graph, board=board)
    _partition_rows(meter, plan)
    with meter.stage("board_from_plan"):
        board_from_plan(model, plan, graph)
    ours_s = sum(r["seconds"] for r in meter.rows
                 if r["stage"] in ("extract", "partition", "board_from_plan"))
    out = dict(kind=kind, name=name, blocks=graph.n_blocks, edges=int(graph.spikes.nnz),
               board=board.name, build_s=build_s, ours_s=ours_s,
               ours=dict(chips=plan.n_chips, cores=plan.n_cores,
                         spikes=evaluate(graph, plan, board).interchip_spikes))
    if kind == "modular":
        restore_model(model)
        out.update(_greedy_interchip(meter, model, graph, board))
    out["rows"] = meter.rows
    return out


def _greedy_interchip(meter, model, graph, board):
    from nengo_loihi.hardware.allocators import GreedyInterchip

    from partitioner.metrics import board_to_plan, evaluate

    n_chips = max(1, math.ceil(graph.n_blocks / board.cores_per_chip))
    with meter.stage("GreedyInterchip"):
        nl_board = GreedyInterchip()(model, n_chips=n_chips)
    plan = board_to_plan(nl_board, model, graph, board_name=board.name)
    return dict(gi_s=meter.rows[-1]["seconds"],
                gi=dict(chips=plan.n_chips, cores=plan.n_cores,
                        spikes=evaluate(graph, plan, board).interchip_spikes))


def _worker(spec):
    kind, size = spec.split(":")
    if kind == "synthetic":
        return synthetic_worker(int(size))
    return nengo_worker(kind, int(size))


# ================================================================= driver
def run_in_subprocess(spec):
    """Run one measurement in a fresh interpreter; its result dict."""
    proc = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", spec],
        capture_output=True, text=True, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mb(value):
    return "" if value is None else f"{value:,.0f}"


def print_results(results):
    """Tables: stages of every run, then the nengo-loihi comparison."""
    print("\n## Stages (wall-clock seconds; peak RSS of the stage's process in MB)\n")
    print("| model | blocks | edges | stage | seconds | peak MB |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        for i, row in enumerate(r["rows"]):
            head = (r["name"], f"{r['blocks']:,}", f"{r['edges']:,}") if i == 0 else ("", "", "")
            print(f"| {' | '.join(head)} | {row['stage']} | {row['seconds']:.2f} | "
                  f"{_fmt_mb(row['peak_mb'])} |")
    print("\n## Plans\n")
    print("| model | board | build s (excluded) | chips | cores | inter-chip spikes/step |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        o = r["ours"]
        build = f"{r['build_s']:.1f}" if "build_s" in r else ""
        print(f"| {r['name']} | {r['board']} | {build} | {o['chips']} | {o['cores']:,} | "
              f"{o['spikes']:,.1f} |")
    gi = [r for r in results if "gi" in r]
    if gi:
        print("\n## Against nengo-loihi GreedyInterchip (same model, same run)\n")
        print("| model | blocks | GI s | ours s (extract + partition + emit) | ours / GI "
              "| partition / GI | GI chips | our chips | GI spikes | our spikes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in gi:
            part = next(row["seconds"] for row in r["rows"] if row["stage"] == "partition")
            print(f"| {r['name']} | {r['blocks']:,} | {r['gi_s']:.2f} | {r['ours_s']:.2f} | "
                  f"{r['ours_s'] / r['gi_s']:.2f} | {part / r['gi_s']:.2f} | "
                  f"{r['gi']['chips']} | {r['ours']['chips']} | {r['gi']['spikes']:,.0f} | "
                  f"{r['ours']['spikes']:,.0f} |")


def plot(results, path):
    """Log-log plot of stage time against blocks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = sorted((r for r in results if r["kind"] == "synthetic"),
                       key=lambda r: r["blocks"])
    fig, ax = plt.subplots(figsize=(10, 5))
    stages = ("generate", "partition", "  strategy", "  refine", "  place", "evaluate")
    for stage in stages:
        points = [(r["blocks"], row["seconds"]) for r in synthetic for row in r["rows"]
                  if row["stage"] == stage]
        if points:
            x, y = zip(*points)
            style = "-" if stage == "partition" else "--"
            ax.plot(x, y, style, marker="o", label=f"synthetic: {stage.strip()}")
    nengo = [r for r in results if r["kind"] != "synthetic"]
    for stage, marker in (("extract", "s"), ("GreedyInterchip", "^")):
        points = [(r["blocks"], row["seconds"]) for r in nengo for row in r["rows"]
                  if row["stage"] == stage]
        if points:
            x, y = zip(*points)
            ax.scatter(x, y, marker=marker, s=60, zorder=3, label=f"nengo-loihi model: {stage}")
    if nengo:
        ax.scatter([r["blocks"] for r in nengo], [r["ours_s"] for r in nengo], marker="*",
                   s=110, zorder=3, label="nengo-loihi model: ours (extract+partition+emit)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("blocks")
    ax.set_ylabel("seconds (wall clock)")
    ax.set_title("loihi-partitioner: time per stage against model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot written to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help=f"also run {FULL_SIZE:,} blocks (a few minutes more)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="synthetic sizes (blocks)")
    parser.add_argument("--no-nengo", action="store_true",
                        help="skip the nengo-loihi models (their builds take minutes)")
    parser.add_argument("--plot", metavar="PNG", help="write a log-log plot of time vs size")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker)))
        return 0
    specs = [f"synthetic:{n}" for n in args.sizes + ([FULL_SIZE] if args.full else [])]
    if not args.no_nengo:
        specs += [f"modular:{n}" for n in MODULAR]
        specs.append(f"small:{SMALL_ENSEMBLES}")
    results = []
    for spec in specs:
        start = time.perf_counter()
        results.append(run_in_subprocess(spec))
        print(f"{results[-1]['name']}: done in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    print_results(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
