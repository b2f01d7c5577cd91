"""Scale benchmark: time and memory from 1,000 to 1,000,000 blocks, against METIS
and against nengo-loihi's ``GreedyInterchip``.

**Synthetic graphs**, ``partitioner.synthetic.random_graph(n, avg_degree=8, seed=0)``
of 1,000, 10,000 and 100,000 blocks (``--full``: also 1,000,000) on Pohoiki Springs
(768 chips x 128 cores; 1,000,000 blocks need about 1,725 chips, so that size runs on
a hypothetical board of the same chips on a 48 x 48 mesh), stage by stage with peak
memory: graph generation; `partition` (its strategy stage packs cores and cuts
chips, with the chip-count search; then refinement, consolidation and placement on
the chip mesh); `metrics.evaluate`. Then `partition` against a plain
``pymetis.part_graph`` call on the same graph (the undirected spike traffic as
integer edge weights, unit vertex weights) cut into as many parts as our plan has
chips, timed in turns in the same process. METIS alone ignores cores and the
per-core rules, so its parts are no plan; the ratio is the price of one.

**nengo-loihi models** of 1,000 to 10,000 blocks (build time excluded and shown for
reference): the bundled ``spa_like`` scenario, ``scenarios/modular.py`` networks
(``neurons=(16, 64)``; one block per ensemble), and 2,500 one-dimensional ensembles
with three decoded connections each (`small_ensembles_network`: 10,000 blocks). On
each, in the same process and in turns (who goes first alternates), repeated
``--repeats`` times: our whole allocator path, ``MinCutAllocator(board=...)(model,
n_chips)`` as a user's ``hardware_options`` calls it, broken down into extract,
partition and ``board_from_plan`` (emission), and nengo-loihi's
``GreedyInterchip()(model, n_chips)``. ``n_chips`` is what GreedyInterchip needs
(one block per core, 128 cores per chip); the board is the smallest of Nahuku32,
Pohoiki Beach and Pohoiki Springs with that many chips. Medians are reported, with
the chips, cores and inter-chip spikes per step of both plans.

Every model runs in a subprocess of its own. Peak memory is the peak resident set
size of that process during the stage (Linux: ``VmHWM``, reset before each stage;
other systems: the peak so far). Sub-stages of `partition` share its peak.

Run from the repository root::

    python benchmarks/scale.py                  # 1k-100k blocks + nengo-loihi models
    python benchmarks/scale.py --full           # also 1,000,000 blocks
    python benchmarks/scale.py --no-nengo       # synthetic graphs only
    python benchmarks/scale.py --plot docs/scale.png --json scale.json
    python benchmarks/scale.py --from-json scale.json --baseline before.json

To time another version of the package with the same script, put it first on the
path: ``PYTHONPATH=/path/to/other/checkout python benchmarks/scale.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import statistics
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
#: Synthetic sizes up to this are timed ``--repeats`` times against METIS; larger ones
#: once (the staged partition against one METIS call).
REPEAT_MAX_BLOCKS = 100_000
#: nengo-loihi models, as ``kind:size`` (see `nengo_worker`), about 1,000 to 10,000
#: blocks.
NENGO_MODELS = ("spa_like:0", "modular:67", "modular:180", "modular:267", "small:2500")
#: Neurons per ensemble of the modular networks (smaller than the scenario's default
#: to keep the nengo-loihi build short).
MODULAR_NEURONS = (16, 64)
#: Boards a nengo-loihi model may run on; the first with GreedyInterchip's chips.
NENGO_BOARDS = ("nahuku32", "pohoiki_beach", "pohoiki_springs")
#: Repeats of each timed comparison (medians are reported).
REPEATS = 3
#: Stages of `partition` (``plan.info["stage_seconds"]``) shown as rows.
PARTITION_STAGES = ("strategy", "refine", "consolidate", "place")
#: Stages of our allocator path, as the functions `MinCutAllocator` calls.
ALLOCATOR_STAGES = ("extract", "partition", "board_from_plan")


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


def _median(values):
    return statistics.median(values) if values else None


def _in_turns(repeats, first, second):
    """Call ``first`` and ``second`` ``repeats`` times each, alternating which goes
    first; lists of their results."""
    a, b = [], []
    for rep in range(repeats):
        if rep % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


# ================================================================= synthetic
def plain_metis(graph, k, seed=0):
    """``pymetis.part_graph`` on ``graph``'s undirected spike traffic, ``k`` parts.

    Returns
    -------
    seconds : float
        Time of the ``part_graph`` call alone (the CSR arrays are made before).
    """
    import numpy as np
    import pymetis

    from partitioner.strategies.metis import metis_adjacency

    traffic = graph.symmetric_traffic()
    adjacency = metis_adjacency(traffic.indptr, traffic.indices)
    data = traffic.data
    scale = 1e6 / max(float(data.max()), 1e-12) if data.size else 1.0
    eweights = np.maximum(1, np.round(data * scale)).astype(np.int64)
    start = time.perf_counter()
    if k > 1:
        pymetis.part_graph(k, **adjacency, eweights=eweights,
                           options=pymetis.Options(seed=seed))
    return time.perf_counter() - start


def _timed_partition(graph, board):
    from partitioner.engine import partition

    start = time.perf_counter()
    plan = partition(graph, board=board)
    return time.perf_counter() - start, plan


def synthetic_worker(n_blocks, repeats):
    """Stages of one synthetic size, then `partition` against plain METIS."""
    from partitioner import metrics
    from partitioner.synthetic import random_graph

    board = _board(n_blocks)
    meter = Meter()
    with meter.stage("generate"):
        graph = random_graph(n_blocks, avg_degree=8, seed=0)
    with meter.stage("partition"):
        seconds, plan = _timed_partition(graph, board)
    _partition_rows(meter, plan)
    with meter.stage("evaluate"):
        result = metrics.evaluate(graph, plan, board)
    if n_blocks <= REPEAT_MAX_BLOCKS:
        reps = repeats
        ours, metis = _in_turns(
            reps, lambda: _timed_partition(graph, board)[0],
            lambda: plain_metis(graph, plan.n_chips))
    else:  # one METIS call against the partition timed above
        reps, ours, metis = 1, [seconds], [plain_metis(graph, plan.n_chips)]
    return dict(kind="synthetic", name=f"synthetic {n_blocks:,}", blocks=n_blocks,
                edges=int(graph.spikes.nnz), board=board.name, rows=meter.rows,
                ours=dict(chips=plan.n_chips, cores=plan.n_cores,
                          spikes=result.interchip_spikes),
                vs_metis=dict(parts=plan.n_chips, repeats=reps, ours_s=_median(ours),
                              metis_s=_median(metis),
                              ratio=_median([a / b for a, b in zip(ours, metis)])))


# ================================================================= nengo-loihi
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


def nengo_network(kind, size):
    """The network of a ``kind:size`` spec and its name."""
    if kind == "modular":
        net = _load_scenario_module("modular").build(n_modules=size,
                                                     neurons=MODULAR_NEURONS)
        return net, f"modular, {size} modules"
    if kind == "small":
        return small_ensembles_network(size), f"small ensembles, {size:,}"
    return _load_scenario_module(kind).build(), kind


def _build(network):
    from partitioner.extract import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(network)


@contextlib.contextmanager
def allocator_stage_timers(seconds):
    """Time the stages `MinCutAllocator` calls (the module-level ``extract``,
    ``partition`` and ``board_from_plan`` of `partitioner.allocator`), adding each
    call's wall-clock time to ``seconds[name]``."""
    import partitioner.allocator as allocator

    originals = {name: getattr(allocator, name) for name in ALLOCATOR_STAGES}

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return call

    for name, function in originals.items():
        setattr(allocator, name, timed(name, function))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(allocator, name, function)


def _run_ours(model, n_chips, board_name):
    """Our whole allocator path once: (total seconds, stage seconds, plan)."""
    from partitioner.allocator import MinCutAllocator, restore_model

    restore_model(model)
    allocator = MinCutAllocator(board=board_name)
    with allocator_stage_timers({}) as stages:
        start = time.perf_counter()
        allocator(model, n_chips)
        total = time.perf_counter() - start
    stages["other"] = total - sum(stages.values())
    return total, stages, allocator.last_plan


def _run_greedy_interchip(model, n_chips):
    """nengo-loihi's GreedyInterchip once: (seconds, board)."""
    from nengo_loihi.hardware.allocators import GreedyInterchip

    from partitioner.allocator import restore_model

    restore_model(model)
    start = time.perf_counter()
    board = GreedyInterchip()(model, n_chips=n_chips)
    return time.perf_counter() - start, board


def _same_plan(a, b):
    import numpy as np

    return (np.array_equal(a.layout, b.layout) and np.array_equal(a.core_ptr, b.core_ptr)
            and np.array_equal(a.core_chip, b.core_chip))


def nengo_worker(kind, size, repeats):
    """Our allocator path against GreedyInterchip on one nengo-loihi model."""
    import partitioner
    from partitioner.extract import extract
    from partitioner.hardware import get_board
    from partitioner.metrics import board_to_plan, evaluate

    net, name = nengo_network(kind, size)
    start = time.perf_counter()
    model = _build(net)
    build_s = time.perf_counter() - start
    n_blocks = len(model.blocks)
    n_chips = max(1, math.ceil(n_blocks / 128))
    board = next(b for b in map(get_board, NENGO_BOARDS) if b.n_chips >= n_chips)

    ours, greedy = _in_turns(repeats, lambda: _run_ours(model, n_chips, board.name),
                             lambda: _run_greedy_interchip(model, n_chips))
    plan = ours[0][2]
    graph = extract(model)
    gi_plan = board_to_plan(greedy[0][1], model, graph, board_name=board.name)
    stage_names = list(ours[0][1])
    return dict(
        kind=kind, name=name, blocks=n_blocks, edges=int(graph.spikes.nnz),
        board=board.name, n_chips=n_chips, build_s=build_s, repeats=repeats,
        package=str(pathlib.Path(partitioner.__file__).parent),
        ours_s=_median([t for t, _, _ in ours]),
        gi_s=_median([t for t, _ in greedy]),
        ratio=_median([a[0] / b[0] for a, b in zip(ours, greedy)]),
        stages={n: _median([st[n] for _, st, _ in ours]) for n in stage_names},
        same_plan_every_run=all(_same_plan(plan, p) for _, _, p in ours),
        ours=dict(chips=plan.n_chips, cores=plan.n_cores,
                  spikes=evaluate(graph, plan, board).interchip_spikes),
        gi=dict(chips=gi_plan.n_chips, cores=gi_plan.n_cores,
                spikes=evaluate(graph, gi_plan, board).interchip_spikes),
        rows=[dict(stage="build (excluded)", seconds=build_s, peak_mb=None)],
    )


def _worker(spec, repeats):
    kind, size = spec.split(":")
    if kind == "synthetic":
        return synthetic_worker(int(size), repeats)
    return nengo_worker(kind, int(size), repeats)


# ================================================================= driver
def run_in_subprocess(spec, repeats):
    """Run one measurement in a fresh interpreter; its result dict."""
    proc = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", spec,
         "--repeats", str(repeats)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mb(value):
    return "" if value is None else f"{value:,.0f}"


def _print_stages(results):
    print("\n## Stages (wall-clock seconds; peak RSS of the stage's process in MB)\n")
    print("| model | blocks | edges | stage | seconds | peak MB |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        for i, row in enumerate(r["rows"]):
            head = (r["name"], f"{r['blocks']:,}", f"{r['edges']:,}") if i == 0 else ("", "", "")
            print(f"| {' | '.join(head)} | {row['stage']} | {row['seconds']:.2f} | "
                  f"{_fmt_mb(row['peak_mb'])} |")


def _print_plans(results):
    print("\n## Plans\n")
    print("| model | board | chips | cores | inter-chip spikes/step |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in results:
        o = r["ours"]
        print(f"| {r['name']} | {r['board']} | {o['chips']} | {o['cores']:,} | "
              f"{o['spikes']:,.1f} |")


def _print_metis(results):
    rows = [r for r in results if "vs_metis" in r]
    if not rows:
        return
    print("\n## partition against plain pymetis.part_graph (same graph, same parts; "
          "median seconds)\n")
    print("| model | blocks | parts | repeats | pymetis s | partition s | partition / pymetis |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        m = r["vs_metis"]
        print(f"| {r['name']} | {r['blocks']:,} | {m['parts']} | {m['repeats']} | "
              f"{m['metis_s']:.2f} | {m['ours_s']:.2f} | {m['ratio']:.1f} |")


def _print_greedy_interchip(results):
    rows = [r for r in results if "gi" in r]
    if not rows:
        return
    print("\n## MinCutAllocator against nengo-loihi GreedyInterchip (same model, same "
          "run, in turns; median seconds)\n")
    print("| model | blocks | chips asked | GI s | ours s | ours / GI | extract | "
          "partition | emit | other | build s (excluded) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        st = r["stages"]
        print(f"| {r['name']} | {r['blocks']:,} | {r['n_chips']} | {r['gi_s']:.2f} | "
              f"{r['ours_s']:.2f} | **{r['ratio']:.2f}** | {st['extract']:.2f} | "
              f"{st['partition']:.2f} | {st['board_from_plan']:.2f} | {st['other']:.2f} | "
              f"{r['build_s']:.1f} |")
    print("\n| model | board | GI chips / cores / spikes | our chips / cores / spikes "
          "| same plan every run |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        g, o = r["gi"], r["ours"]
        print(f"| {r['name']} | {r['board']} | {g['chips']} / {g['cores']:,} / "
              f"{g['spikes']:,.1f} | {o['chips']} / {o['cores']:,} / {o['spikes']:,.1f} | "
              f"{'yes' if r['same_plan_every_run'] else 'NO'} |")
    print(f"\npackage timed: {rows[0]['package']}; repeats: {rows[0]['repeats']}")


def print_results(results):
    """Tables: stages, plans, the METIS and the GreedyInterchip comparisons."""
    _print_stages([r for r in results if r["kind"] == "synthetic"])
    _print_plans([r for r in results if r["kind"] == "synthetic"])
    _print_metis(results)
    _print_greedy_interchip(results)


def _print_baseline(results, baseline, label):
    """Before and after: the same synthetic graphs and nengo-loihi models in an
    earlier run (``baseline``, e.g. another version of the package), each against
    plain METIS or GreedyInterchip in its run."""
    _print_baseline_metis(results, baseline, label)
    before = {r["name"]: r for r in baseline if "gi" in r}
    rows = [(before[r["name"]], r) for r in results if "gi" in r and r["name"] in before]
    if not rows:
        return
    print(f"\n## {label} against this run (each against GreedyInterchip in its own run; "
          f"median seconds)\n")
    cols = ("GI s", "ours s", "ours / GI", "emit s")
    print("| model | blocks | " + " | ".join(f"{label}: {c}" for c in cols) + " | "
          + " | ".join(f"this run: {c}" for c in cols) + " | same chips / cores / spikes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for b, a in rows:
        same = all(b["ours"][key] == a["ours"][key] for key in ("chips", "cores", "spikes"))
        print(f"| {a['name']} | {a['blocks']:,} | {b['gi_s']:.2f} | {b['ours_s']:.2f} | "
              f"{b['ratio']:.2f} | {b['stages']['board_from_plan']:.2f} | {a['gi_s']:.2f} | "
              f"{a['ours_s']:.2f} | **{a['ratio']:.2f}** | "
              f"{a['stages']['board_from_plan']:.2f} | {'yes' if same else 'NO'} |")


def _print_baseline_metis(results, baseline, label):
    before = {r["name"]: r for r in baseline if "vs_metis" in r}
    rows = [(before[r["name"]], r) for r in results
            if "vs_metis" in r and r["name"] in before]
    if not rows:
        return
    print(f"\n## {label} against this run: partition against plain METIS (each in its "
          f"own run; median seconds)\n")
    cols = ("pymetis s", "partition s", "partition / pymetis")
    print("| model | blocks | " + " | ".join(f"{label}: {c}" for c in cols) + " | "
          + " | ".join(f"this run: {c}" for c in cols) + " | same chips / cores / spikes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for b, a in rows:
        same = all(b["ours"][key] == a["ours"][key] for key in ("chips", "cores", "spikes"))
        bm, am = b["vs_metis"], a["vs_metis"]
        print(f"| {a['name']} | {a['blocks']:,} | {bm['metis_s']:.2f} | {bm['ours_s']:.2f} | "
              f"{bm['ratio']:.1f} | {am['metis_s']:.2f} | {am['ours_s']:.2f} | "
              f"**{am['ratio']:.1f}** | {'yes' if same else 'NO'} |")


def plot(results, path, baseline=None, baseline_label="baseline"):
    """Log-log plots of time against blocks: partition vs pymetis on synthetic
    graphs; our allocator path (and its stages) vs GreedyInterchip on nengo-loihi
    models (and our path in a ``baseline`` run, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = sorted((r for r in results if "vs_metis" in r), key=lambda r: r["blocks"])
    nengo = sorted((r for r in results if "gi" in r), key=lambda r: r["blocks"])
    panels = [p for p, rows in (("synthetic", synthetic), ("nengo", nengo)) if rows]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    if synthetic:
        ax, x = axes["synthetic"], [r["blocks"] for r in synthetic]
        ax.plot(x, [r["vs_metis"]["ours_s"] for r in synthetic], "-o",
                label="ours: partition (pack, cut, refine, place)")
        ax.plot(x, [r["vs_metis"]["metis_s"] for r in synthetic], "--s",
                label="plain pymetis.part_graph, same parts")
        old = sorted((r for r in baseline or [] if "vs_metis" in r),
                     key=lambda r: r["blocks"])
        if old:
            ax.plot([r["blocks"] for r in old], [r["vs_metis"]["ours_s"] for r in old],
                    "--o", color="tab:gray", alpha=0.7,
                    label=f"ours, {baseline_label} (its run)")
        ax.set_title("synthetic graphs (random_graph, avg degree 8)")
    if nengo:
        ax, x = axes["nengo"], [r["blocks"] for r in nengo]
        ax.plot(x, [r["gi_s"] for r in nengo], "-^", color="tab:red",
                label="nengo-loihi GreedyInterchip")
        ax.plot(x, [r["ours_s"] for r in nengo], "-o", color="tab:blue",
                label="ours: MinCutAllocator (whole path)")
        for stage, label in (("extract", "extract"), ("partition", "partition"),
                             ("board_from_plan", "emit (board_from_plan)")):
            ax.plot(x, [r["stages"][stage] for r in nengo], ":", marker=".",
                    label=f"ours: {label}")
        old = sorted((r for r in baseline or [] if "gi" in r), key=lambda r: r["blocks"])
        if old:
            ax.plot([r["blocks"] for r in old], [r["ours_s"] for r in old], "--o",
                    color="tab:gray", alpha=0.7, label=f"ours, {baseline_label} (its run)")
            ax.plot([r["blocks"] for r in old], [r["gi_s"] for r in old], "--^",
                    color="tab:pink", alpha=0.7,
                    label=f"GreedyInterchip, {baseline_label} run")
        ax.set_title("nengo-loihi models (build excluded)")
    for ax in axes.values():
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("blocks")
        ax.set_ylabel("seconds (wall clock, median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot written to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help=f"also run {FULL_SIZE:,} blocks (a few minutes more)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="synthetic sizes (blocks)")
    parser.add_argument("--models", nargs="+", default=list(NENGO_MODELS),
                        metavar="KIND:SIZE",
                        help="nengo-loihi models: spa_like:0, modular:MODULES, "
                             "small:ENSEMBLES")
    parser.add_argument("--no-nengo", action="store_true",
                        help="skip the nengo-loihi models (their builds take minutes)")
    parser.add_argument("--no-synthetic", action="store_true",
                        help="skip the synthetic graphs")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="timed repeats of each comparison (medians reported)")
    parser.add_argument("--plot", metavar="PNG", default=str(ROOT / "docs" / "scale.png"),
                        help="log-log plot of time against blocks (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--baseline", metavar="FILE",
                        help="JSON of an earlier run (--json) to compare with: a before/"
                             "after table and its curves on the plot")
    parser.add_argument("--baseline-label", default="before",
                        help="name of the baseline run (default: %(default)s)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="print and plot the results of an earlier run, run nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.repeats)))
        return 0
    baseline = json.loads(pathlib.Path(args.baseline).read_text()) if args.baseline else None
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
        report(results, args, baseline)
        return 0
    specs = []
    if not args.no_synthetic:
        specs += [f"synthetic:{n}" for n in args.sizes + ([FULL_SIZE] if args.full else [])]
    if not args.no_nengo:
        specs += args.models
    results = []
    for spec in specs:
        start = time.perf_counter()
        results.append(run_in_subprocess(spec, args.repeats))
        print(f"{results[-1]['name']}: done in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, args, baseline)
    return 0


def report(results, args, baseline=None):
    """Print the tables (and the before/after table), and write the plot."""
    print_results(results)
    if baseline:
        _print_baseline(results, baseline, args.baseline_label)
    if not args.no_plot:
        plot(results, args.plot, baseline, args.baseline_label)


if __name__ == "__main__":
    sys.exit(main())
