"""Command line: ``partitioner compare|whatif|plan|inspect|diff|fit``.

``compare``
    Build a scenario with nengo-loihi, run nengo-loihi's allocators and this
    package's strategies on it (for one or more objectives), and print one
    side-by-side table, with each plan's predicted step time and what sets it.
``whatif``
    Sweep boards and chip counts; show time, traffic and energy estimates and the
    step time's bottleneck, how the energy depends on the unpublished inter-chip
    spike energy and the step time on the unpublished time constants, and the
    smallest board that fits.
``plan``
    Write a plan (JSON) to replay with `partitioner.PlanAllocator`.
``inspect``
    Describe a scenario (blocks, resources, lower bounds, heaviest edges) or a plan.
``diff``
    Compare two plans of the same model.
``fit``
    Choose block shapes so every block fits a core; show the model before and after,
    the shapes as JSON and as Python.
``check``
    Build a scenario's board, or a saved plan's, with nengo-loihi's own
    ``build_board`` on the NxSDK stand-in, and show each core's table use against
    its size: a check of a plan without Loihi hardware or NxSDK.

Bad input ends the program with exit status 2 and one line on stderr,
``partitioner: error: ...``; output files are checked before any work starts.
Stages that can take more than a few seconds report progress on stderr, and while
one runs, how long it has been running (every `HEARTBEAT_SECONDS`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partitioner.errors import (
    ExtractionError,
    InfeasibleError,
    PartitionerError,
    PlanError,
    ScenarioError,
)
from partitioner.whatif import plan_numbers

__all__ = ["main", "NENGO_LOIHI_STRATEGIES", "COMPARE_COLUMNS", "DEFAULT_STRATEGIES"]

PROG = "partitioner"
#: nengo-loihi's own allocators, by the name used on the command line.
NENGO_LOIHI_STRATEGIES = ("greedy", "roundrobin", "greedy-interchip")
#: Strategies `compare` runs by default.
DEFAULT_STRATEGIES = "greedy,roundrobin,greedy-interchip,metis"
#: Boards `whatif` sweeps when no --board is given.
DEFAULT_WHATIF_BOARDS = ("kapoho_bay", "nahuku8", "nahuku32")
#: While a long stage runs, how often (seconds) to say how long it has been running.
HEARTBEAT_SECONDS = 5.0


# ======================================================================= output
def _one_line(text):
    """``text`` on one line (whitespace runs collapsed)."""
    return " ".join(str(text).split())


class _Reporter:
    """Progress messages on stderr (silent when ``quiet``)."""

    def __init__(self, quiet=False, heartbeat=None):
        self.quiet = quiet
        self.heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self._lock = threading.Lock()

    def __call__(self, message):
        if not self.quiet:
            with self._lock:
                print(f"[{PROG}] {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, message):
        """Say ``message``; while the block runs, say every `heartbeat` seconds how
        long it has been running; when it took longer than that, say when it ends."""
        self(message)
        if self.quiet:
            yield
            return
        t0 = time.perf_counter()
        stop = threading.Event()

        def beat():
            wait = self.heartbeat
            while not stop.wait(wait):
                self(f"  ... still {message} ({time.perf_counter() - t0:.0f} s)")
                wait = min(2 * wait, 6 * self.heartbeat)  # then less often

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            elapsed = time.perf_counter() - t0
            if elapsed >= self.heartbeat:
                self(f"  done {message} ({elapsed:.1f} s)")


@dataclass(frozen=True)
class Column:
    """A table column: record key, header, number format, and which value is best.

    ``fmt`` is a format spec for the value (``"d"``, ``".1f"``, ...); ``best`` is
    ``"min"``, ``"max"`` or None (not marked).
    """

    key: str
    header: str
    fmt: str = ""
    best: str = None

    def format(self, value):
        """The cell text of ``value`` ("-" when missing)."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if self.fmt == "d":
            return f"{int(round(value))}"
        if self.fmt:
            return format(value, self.fmt)
        return str(value)


#: Columns of the `compare` table; each ``key`` is a field of a JSON record.
COMPARE_COLUMNS = (
    Column("strategy", "strategy"),
    Column("chips", "chips", "d", "min"),
    Column("cores", "cores", "d", "min"),
    Column("mean_core_utilization_pct", "util %", ".1f", "max"),
    Column("cores_over_limit", "cores over limit", "d", "min"),
    Column("interchip_axons", "ic axons", ".0f", "min"),
    Column("interchip_spikes", "ic spikes/step", ".1f", "min"),
    Column("max_link_load", "max link", ".1f", "min"),
    Column("hop_weighted_cost", "hop cost", ".1f", "min"),
    Column("time_us", "time/step us", ".4g", "min"),
    Column("energy_uj", "energy/step uJ", ".4g", "min"),
    Column("bottleneck", "bottleneck"),
    Column("runtime_s", "runtime s", ".2f", "min"),
    Column("bound", "bound", ".4g"),
    Column("gap", "gap", ".3f"),
)


def _best_values(columns, records):
    """Per markable column, the best value as printed, among feasible records."""
    best = {}
    for col in columns:
        if col.best is None:
            continue
        texts = [col.format(r.get(col.key)) for r in records if r.get("feasible", True)]
        values = [float(t) for t in texts if t != "-"]
        if values:
            target = min(values) if col.best == "min" else max(values)
            best[col.key] = target
    return best


def format_table(columns, records, mark_best=True):
    """Render records as an aligned text table.

    Parameters
    ----------
    columns : sequence of Column
    records : list of dict
    mark_best : bool
        Append ``*`` to the best value of each column that has a ``best`` rule
        (ties all marked).

    Returns
    -------
    str
    """
    best = _best_values(columns, records) if mark_best else {}
    rows = [[c.header for c in columns]]
    for r in records:
        row = []
        for c in columns:
            text = c.format(r.get(c.key))
            if c.key in best and text != "-" and float(text) == best[c.key]:
                text += "*"
            row.append(text)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for k, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ============================================================ output paths
#: Options that name files to write: argparse destination, option, suffixes allowed
#: (None: the image formats matplotlib writes).
OUTPUT_OPTIONS = (
    ("json", "--json", (".json",)),
    ("output", "-o", (".json",)),
    ("plot", "--plot", None),
)


def check_outputs(args):
    """Raise `PartitionerError` unless every output file ``args`` names can be
    written: a known extension, an existing folder that is writable, not a folder
    itself. Run before any work, so a bad name fails at once."""
    for dest, option, suffixes in OUTPUT_OPTIONS:
        path = getattr(args, dest, None)
        if path is not None:
            _check_output(str(path), option, suffixes or _image_suffixes())


def _image_suffixes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    preferred = [".png", ".pdf", ".svg"]
    others = sorted(f".{k}" for k in FigureCanvasAgg.get_supported_filetypes()
                    if f".{k}" not in preferred)
    return tuple(preferred + others)


def _check_output(path, option, suffixes):
    p = Path(path).expanduser()
    if p.is_dir():
        raise PartitionerError(f"{option} {path}: is a folder; give a file name in it.")
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        kind = f"'{p.suffix}' files" if p.suffix else "files without an extension"
        first = suffixes[:3]
        endings = first[0] if len(first) == 1 else f"{', '.join(first[:-1])} or {first[-1]}"
        if len(suffixes) > 3:
            endings += f" (also {', '.join(suffixes[3:])})"
        raise PartitionerError(
            f"{option} {path}: cannot write {kind}; give a file name ending in "
            f"{endings}."
        )
    folder = p.parent
    if not folder.is_dir():
        raise PartitionerError(
            f"{option} {path}: folder {folder} does not exist; create it first "
            f"(mkdir -p {folder}) or write somewhere else."
        )
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PartitionerError(
            f"{option} {path}: no permission to write there; choose another place."
        )


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=_json_default)


def _plural(n, noun):
    """``"1 chip"``, ``"2 chips"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ================================================================ model input
def _check_board(name):
    from partitioner.hardware import get_board

    return get_board(name)


def _check_chips(board, chips):
    """Chips to allow on ``board``: ``chips`` or the board's size (checked)."""
    if chips is None:
        return board.n_chips
    if not 1 <= chips <= board.n_chips:
        raise InfeasibleError(
            f"--chips {chips} is not possible on {board.name}, which has {board.n_chips} "
            f"chips. Use 1 to {board.n_chips}, or a larger --board."
        )
    return chips


def _read_rates_file(path, network):
    """``{Ensemble: per-neuron rates}`` from a JSON file ``{ensemble label: rate(s)}``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ExtractionError(f"Rates file {path} is not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise ExtractionError(
            f"Rates file {path} must hold a JSON object {{ensemble label: rate in Hz, or "
            f"a list of per-neuron rates}}."
        )
    by_label = {}
    for ens in network.all_ensembles:
        by_label.setdefault(ens.label, []).append(ens)
    rates = {}
    for label, value in data.items():
        found = by_label.get(label, [])
        if len(found) != 1:
            problem = "no ensemble" if not found else f"{len(found)} ensembles"
            raise ExtractionError(
                f"Rates file {path}: {problem} labelled {label!r} in the network. Key "
                f"the file by unique ensemble labels."
            )
        ens = found[0]
        values = np.asarray(value, dtype=float)
        if values.ndim == 0:
            values = np.full(ens.n_neurons, float(values))
        rates[ens] = values
    return rates


def _resolve_rates(option, scenario):
    """Rates for `extract` and for nengo-loihi's GreedyInterchip, and their origin.

    Returns
    -------
    extract_rates : None, "measured" or dict
    allocator_rates : dict or None
        ``ensemble_rates`` for GreedyInterchip.
    """
    option = option or "axons"
    if option == "axons":
        return None, None
    if option == "scenario":
        if scenario.ensemble_rates is None:
            raise ScenarioError(
                f"Scenario {scenario.name} defines no ensemble_rates(net); use "
                f"--rates axons, measured or a JSON file."
            )
        return scenario.ensemble_rates, scenario.ensemble_rates
    if option == "measured":
        return "measured", scenario.ensemble_rates
    if option.endswith(".json"):
        rates = _read_rates_file(option, scenario.network)
        return rates, rates
    raise ExtractionError(
        f"--rates {option!r} is not understood. Use axons, scenario, measured or a "
        f"JSON file of {{ensemble label: rate in Hz}}."
    )


def _summarize_warnings(caught, say):
    if caught:
        first = _one_line(caught[0].message)
        say(f"nengo-loihi emitted {len(caught)} warning(s) while building, e.g. {first!r}")


def prepare(spec, rates="axons", duration=1.0, say=None):
    """Load a scenario, build it with nengo-loihi and extract its traffic graph.

    Parameters
    ----------
    spec : str
        Scenario spec (see `partitioner.scenario.load_scenario`).
    rates : str
        ``"axons"``, ``"scenario"``, ``"measured"`` or a JSON file of rates.
    duration : float
        Seconds of emulator time for measured rates.
    say : callable, optional
        Progress reporter.

    Returns
    -------
    scenario : Scenario
    model : nengo_loihi.builder.Model
    graph : TrafficGraph
    allocator_rates : dict or None
        Ensemble rates to give nengo-loihi's GreedyInterchip.
    """
    import nengo_loihi

    from partitioner.extract import build_model, extract
    from partitioner.scenario import load_scenario

    say = say or _Reporter(quiet=True)
    with say.stage(f"loading scenario {spec}"):
        scenario = load_scenario(spec)
    extract_rates, allocator_rates = _resolve_rates(rates, scenario)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if extract_rates == "measured":
            with say.stage(f"building {scenario.name} with nengo-loihi"):
                sim = nengo_loihi.Simulator(scenario.network, target="sim",
                                            progress_bar=False)
            with sim:
                say(f"running the emulator for {duration:g} s to measure rates")
                graph = extract(sim, rates="measured", duration=duration,
                                progress=not say.quiet)
                model = sim.model
        else:
            with say.stage(f"building {scenario.name} with nengo-loihi"):
                model = build_model(scenario.network)
            with say.stage("extracting the traffic graph"):
                graph = extract(model, rates=extract_rates, progress=not say.quiet)
    caught = [w for w in caught if issubclass(w.category, UserWarning)]
    _summarize_warnings(caught, say)
    say(f"{graph.n_blocks} blocks, {_plural(graph.n_inputs, 'host input')}, rates: {graph.rates} "
        f"({time.perf_counter() - t0:.1f} s)")
    return scenario, model, graph, allocator_rates


# ================================================================ strategies
def known_strategies():
    """Every strategy name the command line accepts."""
    from partitioner.engine import STRATEGIES

    return tuple(NENGO_LOIHI_STRATEGIES) + tuple(sorted(STRATEGIES))


def _single_strategy(text):
    names = _parse_strategies(text)
    if len(names) != 1:
        raise PartitionerError(f"--strategy takes one strategy, not {len(names)}: {text}.")
    return names[0]


def _parse_strategies(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise PartitionerError("--strategies is empty; give a comma-separated list.")
    known = known_strategies()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PartitionerError(
            f"Unknown strategy {unknown[0]!r}. Choose from {', '.join(known)}."
        )
    return list(dict.fromkeys(names))


@dataclass
class StrategyResult:
    """Outcome of one strategy: a plan and its measures, or why there is none."""

    name: str
    plan: object = None
    metrics: object = None
    reason: str = None
    runtime_s: float = 0.0
    note: str = None

    @property
    def feasible(self):
        """True when the strategy found a plan."""
        return self.plan is not None


def _nengo_loihi_allocator(name, board, allocator_rates):
    from nengo_loihi.hardware.allocators import Greedy, GreedyInterchip, RoundRobin

    cores = board.cores_per_chip
    if name == "greedy":
        return Greedy(cores_per_chip=cores)
    if name == "roundrobin":
        return RoundRobin()
    return GreedyInterchip(cores_per_chip=cores, ensemble_rates=allocator_rates)


def _assertion_reason(err, n_chips):
    """A readable reason from a nengo-loihi allocator's AssertionError."""
    message = err.args[0] if err.args else ""
    while isinstance(message, tuple) and message:  # Greedy wraps its message in a tuple
        message = message[0]
    text = _one_line(message)
    if "more chips" in text:
        return f"{text}; nengo-loihi places one block per core"
    return f"nengo-loihi allocator failed on {n_chips} chip(s): {text or 'AssertionError'}"


def _over_full_chip(nl_board, board):
    """Reason text when a nengo-loihi board puts too many cores on a chip, else None."""
    counts = [len(chip.cores) for chip in nl_board.chips]
    if counts and max(counts) > board.cores_per_chip:
        return (f"puts {max(counts)} cores on one chip, more than the "
                f"{board.cores_per_chip} a chip has (too few chips requested)")
    return None


def _allocate(name, model, board, n_chips, allocator_rates):
    """Call a nengo-loihi allocator; returns ``(nengo-loihi Board, note)``.

    GreedyInterchip needs a rate for every block, but ensemble rates do not cover
    decode-neuron blocks (nengo-loihi raises KeyError); it then runs on axon counts
    and the note says so.
    """
    try:
        return _nengo_loihi_allocator(name, board, allocator_rates)(model, n_chips), None
    except (KeyError, ValueError) as e:
        if allocator_rates is None:
            raise
        note = (f"{name} needs a rate for every block, and the ensemble rates miss some "
                f"(e.g. decode neurons; nengo-loihi raised {type(e).__name__}), so it "
                f"ran on axon counts")
        return _nengo_loihi_allocator(name, board, None)(model, n_chips), note


def _run_nengo_loihi(name, model, graph, board, n_chips, allocator_rates):
    from partitioner.metrics import board_to_plan

    t0 = time.perf_counter()
    try:
        nl_board, note = _allocate(name, model, board, n_chips, allocator_rates)
    except AssertionError as e:
        return StrategyResult(name, reason=_assertion_reason(e, n_chips),
                              runtime_s=time.perf_counter() - t0)
    runtime = time.perf_counter() - t0
    reason = _over_full_chip(nl_board, board)
    if reason:
        return StrategyResult(name, reason=reason, runtime_s=runtime, note=note)
    plan = board_to_plan(nl_board, model, graph, strategy=name, board_name=board.name)
    plan.remember_graph(graph)
    return StrategyResult(name, plan=plan, runtime_s=runtime, note=note)


def _run_ours(name, graph, board, n_chips, seed, time_limit, say, objective="spikes"):
    from partitioner import partition

    options = {"time_limit": time_limit} if name == "ilp" and time_limit else {}
    t0 = time.perf_counter()
    try:
        plan = partition(graph, n_chips=n_chips, board=board, strategy=name, seed=seed,
                         objective=objective, progress=not say.quiet, **options)
    except InfeasibleError as e:
        return StrategyResult(name, reason=_one_line(e), runtime_s=time.perf_counter() - t0)
    return StrategyResult(name, plan=plan, runtime_s=time.perf_counter() - t0)


def run_strategy(name, model, graph, board, n_chips, seed=0, time_limit=None,
                 allocator_rates=None, say=None, objective="spikes"):
    """Run one strategy (nengo-loihi's or ours) and measure its plan.

    ``objective`` applies to this package's strategies; a result for an objective
    other than ``"spikes"`` is named ``strategy/objective`` (e.g. ``metis/time``).

    Returns
    -------
    StrategyResult
    """
    from partitioner.metrics import evaluate

    say = say or _Reporter(quiet=True)
    with say.stage(f"running {name} on {n_chips} chip(s) of {board.name}"):
        if name in NENGO_LOIHI_STRATEGIES:
            result = _run_nengo_loihi(name, model, graph, board, n_chips,
                                      allocator_rates)
        else:
            result = _run_ours(name, graph, board, n_chips, seed, time_limit, say,
                               objective)
            if objective != "spikes":
                result.name = f"{name}/{objective}"
        if result.feasible:
            result.metrics = evaluate(graph, result.plan, board)
    if result.feasible:
        if name in NENGO_LOIHI_STRATEGIES:
            result.plan.objective = "spikes"
            result.plan.objective_value = float(result.metrics.interchip_spikes)
        say(f"{result.name}: {result.plan.n_cores} cores on {result.plan.n_chips} "
            f"chip(s), {result.metrics.interchip_spikes:.1f} inter-chip spikes/step, "
            f"{result.metrics.time_ns / 1000:.4g} us/step ({result.runtime_s:.2f} s)")
    else:
        say(f"{name}: infeasible: {result.reason}")
    return result


def strategy_record(result):
    """The JSON record of one strategy's result (fields of `COMPARE_COLUMNS` and more)."""
    record = {
        "strategy": result.name,
        "source": "nengo-loihi" if result.name in NENGO_LOIHI_STRATEGIES else PROG,
        "feasible": result.feasible,
        "reason": result.reason,
        "note": result.note,
        "runtime_s": float(result.runtime_s),
    }
    for col in COMPARE_COLUMNS:
        record.setdefault(col.key, None)
    if not result.feasible:
        return record
    record.update(plan_numbers(result.plan, result.metrics))
    record["cores_per_chip"] = result.plan.cores_per_chip().tolist()
    record["bottleneck_detail"] = dict(result.metrics.bottleneck)
    return record


# ================================================================== compare
def _bounds_text(bounds):
    chips = bounds["chips"]
    return (
        f"Lower bounds on {bounds['board']}: {bounds['cores']} cores (binding rule: "
        f"{bounds['binding_rule']}), {chips} chip{'s' if chips != 1 else ''}"
        + ("; 0 inter-chip spikes/step" if chips <= 1 else "")
    )


def _assumption_note(board):
    e = board.energy
    return (
        f"Time and energy are estimates (partitioner.metrics.evaluate). Not published, "
        f"assumed: inter-chip spike energy {e.interchip_spike_pj:g} pJ per link, "
        f"{e.interchip_hop_ns:g} ns per inter-chip hop, "
        f"{e.interchip_link_spikes_per_us:g} spikes/us per link, "
        f"{e.core_update_ns:g} ns per compartment update, "
        f"{e.synmem_word_ns:g} ns per synapse memory word. Step time = barrier + "
        f"inter-chip latency + the slowest core or link (max-affine model)."
    )


def _cmd_compare(args, say):
    board = _check_board(args.board)
    n_chips = _check_chips(board, args.chips)
    names = _parse_strategies(args.strategies)
    objectives = _parse_objectives(args.objective)
    scenario, model, graph, allocator_rates = prepare(args.scenario, args.rates,
                                                      args.duration, say)
    from partitioner.metrics import lower_bounds

    bounds = lower_bounds(graph, board)
    results = [
        run_strategy(name, model, graph, board, n_chips, seed=args.seed,
                     time_limit=args.time_limit, allocator_rates=allocator_rates, say=say,
                     objective=objective)
        for name in names
        for objective in (("spikes",) if name in NENGO_LOIHI_STRATEGIES else objectives)
    ]
    records = [strategy_record(r) for r in results]
    print(f"Scenario {scenario.name}: {graph.n_blocks} blocks, "
          f"{_plural(graph.n_inputs, 'host input')}, rates: {graph.rates}; board "
          f"{board.name}, up to {_plural(n_chips, 'chip')}")
    print(_bounds_text(bounds))
    print()
    print(format_table(COMPARE_COLUMNS, records))
    print()
    for r in records:
        if not r["feasible"]:
            print(f"{r['strategy']}: infeasible: {r['reason']}")
        if r["note"]:
            print(f"note: {r['note']}")
    print("* best value in its column; ic = inter-chip; hop cost = spike-hops/step; "
          "gap = (objective - bound) / objective; bottleneck = the core (term, blocks "
          "on it) or chip-to-chip link that sets the time per step")
    _print_step_times(records)
    print(_assumption_note(board))
    if args.json:
        _write_json(args.json, {
            "scenario": scenario.name,
            "source": scenario.source,
            "board": board.name,
            "n_chips": n_chips,
            "rates": graph.rates,
            "n_blocks": graph.n_blocks,
            "fingerprint": graph.fingerprint(),
            "lower_bounds": bounds,
            "assumptions": _assumption_note(board),
            "records": records,
        })
        say(f"wrote {args.json}")
    if args.plot:
        from partitioner.plots import plot_chip_traffic

        with say.stage(f"drawing {args.plot}"):
            plot_chip_traffic(
                {r.name: r.metrics for r in results}, args.plot,
                title=f"{scenario.name} on {board.name}: inter-chip traffic and core "
                      f"load",
                reasons={r.name: r.reason for r in results if not r.feasible},
            )
        say(f"wrote {args.plot}")
    if not any(r.feasible for r in results):
        raise InfeasibleError(
            f"No strategy fits {scenario.name} on {n_chips} chip(s) of {board.name}. "
            f"Allow more --chips or use a larger --board."
        )
    return 0


def _parse_objectives(text):
    """``"spikes,time"`` -> ["spikes", "time"], checked against the engine's."""
    from partitioner.engine import OBJECTIVES

    names = [o.strip() for o in str(text).split(",") if o.strip()]
    unknown = [o for o in names if o not in OBJECTIVES]
    if not names or unknown:
        raise PartitionerError(
            f"--objective {text!r} is not understood. Choose from "
            f"{', '.join(OBJECTIVES)} (comma-separated for compare)."
        )
    return list(dict.fromkeys(names))


def _single_objective(text):
    names = _parse_objectives(text)
    if len(names) != 1:
        raise PartitionerError(f"--objective takes one objective here, not {text!r}.")
    return names[0]


def _print_step_times(records):
    """One line per plan: predicted step time, what sets it, and its chips and cores."""
    feasible = [r for r in records if r["feasible"]]
    if not feasible:
        return
    print("Predicted time per step and its bottleneck:")
    for r in feasible:
        detail = r.get("bottleneck_detail") or {}
        print(f"  {r['strategy']}: {r['time_us']:.4g} us ({r['regime']}-bound; "
              f"{_plural(r['chips'], 'chip')}, {r['cores']} cores): "
              f"{detail.get('text', r.get('bottleneck'))}")
    base = next((r for r in feasible if r["strategy"] == "metis"), None)
    for r in feasible:
        if base is not None and r is not base and r["strategy"].startswith("metis/"):
            change = r["time_us"] / base["time_us"] - 1.0
            print(f"  {r['strategy']} vs metis: step time {100 * change:+.1f}%, "
                  f"chips {base['chips']} -> {r['chips']}, cores {base['cores']} -> "
                  f"{r['cores']}, energy {base['energy_uj']:.4g} -> "
                  f"{r['energy_uj']:.4g} uJ/step")


# =================================================================== whatif
def _parse_chips(text):
    """``"4"`` -> [4]; ``"1..32"`` -> 1 to 32; ``"2,4,8"`` -> [2, 4, 8]."""
    if text is None:
        return None
    try:
        counts = []
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                lo, hi = (int(x) for x in part.split("..", 1))
                counts.extend(range(lo, hi + 1))
            elif part:
                counts.append(int(part))
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise PartitionerError(
            f"--chips {text!r} is not understood. Give a count (4), a range (1..32) or a "
            f"list (2,4,8) of positive chip counts."
        )
    return sorted(set(counts))


WHATIF_COLUMNS = (
    Column("chips", "chips", "d"),
    Column("chips_used", "used", "d"),
    Column("cores", "cores", "d"),
    Column("mean_core_utilization_pct", "util %", ".1f"),
    Column("interchip_spikes", "ic spikes/step", ".1f"),
    Column("max_link_load", "max link", ".1f"),
    Column("hop_weighted_cost", "hop cost", ".1f"),
    Column("time_us", "time/step us", ".4g"),
    Column("energy_uj", "energy/step uJ", ".4g"),
    Column("bottleneck", "bottleneck"),
)


def _sensitivity_columns(records):
    values = []
    for r in records:
        for s in r["energy_sensitivity"]:
            if s["interchip_spike_pj"] not in values:
                values.append(s["interchip_spike_pj"])
    return [Column(f"energy_at_{v:g}pJ", f"uJ @{v:g}pJ", ".4g") for v in values]


def _flatten_sensitivity(record):
    flat = dict(record)
    for s in record["energy_sensitivity"]:
        flat[f"energy_at_{s['interchip_spike_pj']:g}pJ"] = s["energy_uj"]
    return flat


def _sensitivity_summary(records):
    """Largest relative energy change per inter-chip spike energy tried.

    Returns
    -------
    dict of float -> float
        ``{interchip_spike_pj: change}``, the change (e.g. +0.25 for +25%) of the
        energy estimate relative to the board's default, with the largest magnitude
        over all feasible plans. Empty when nothing is feasible.
    """
    worst = {}
    for r in records:
        if not (r["feasible"] and r["energy_uj"]):
            continue
        for s in r["energy_sensitivity"]:
            change = s["energy_uj"] / r["energy_uj"] - 1.0
            pj = s["interchip_spike_pj"]
            if abs(change) >= abs(worst.get(pj, 0.0)):
                worst[pj] = change
    return worst


def _time_sensitivity_summary(records):
    """Largest relative step-time change per (unpublished constant, factor).

    Returns
    -------
    dict of (str, float) -> float
    """
    worst = {}
    for r in records:
        if not (r["feasible"] and r["time_us"]):
            continue
        for t in r.get("time_sensitivity") or ():
            key = (t["constant"], t["factor"])
            change = t["time_us"] / r["time_us"] - 1.0
            if abs(change) >= abs(worst.get(key, 0.0)):
                worst[key] = change
    return worst


def _time_span_text(span):
    """Per constant, the range of relative changes, e.g. ``interchip_hop_ns -2.6% to
    +21.1%``; constants that change nothing are listed together."""
    by_name = {}
    for (name, _), change in span.items():
        by_name.setdefault(name, []).append(change)
    moving = {n: c for n, c in by_name.items() if max(abs(x) for x in c) >= 5e-4}
    parts = [f"{n} {100 * min(c):+.1f}% to {100 * max(c):+.1f}%" for n, c in moving.items()]
    still = [n for n in by_name if n not in moving]
    if still:
        parts.append(f"no change from {', '.join(still)}")
    return "; ".join(parts)


def _print_whatif(records, say_board):
    sens_cols = _sensitivity_columns(records)
    for board_name in dict.fromkeys(r["board"] for r in records):
        rows = [_flatten_sensitivity(r) for r in records if r["board"] == board_name]
        first = rows[0]
        objective = next((r["objective"] for r in rows if r.get("objective")), None)
        say_board(f"Board {board_name} ({first['board_chips']} chips), chip lower bound "
                  f"{first['lower_bound_chips']}, strategy {first['strategy']}"
                  + (f", objective {objective}" if objective else ""))
        print(format_table(WHATIF_COLUMNS + tuple(sens_cols), rows, mark_best=False))
        for r in rows:
            if not r["feasible"]:
                print(f"  {r['chips']} chips: infeasible: {r['reason']}")
        print()


def _cmd_whatif(args, say):
    from partitioner.whatif import plot_whatif, smallest_board, whatif

    boards = [_check_board(b) for b in (args.board or DEFAULT_WHATIF_BOARDS)]
    chips = _parse_chips(args.chips)
    strategy = _single_strategy(args.strategy)
    if strategy in NENGO_LOIHI_STRATEGIES:
        raise PartitionerError(
            f"whatif runs this package's strategies; {strategy!r} is nengo-loihi's. "
            f"Use e.g. --strategy metis."
        )
    scenario, _, graph, _ = prepare(args.scenario, args.rates, args.duration, say)
    options = {"time_limit": args.time_limit} if strategy == "ilp" and args.time_limit else {}
    say(f"sweeping {_plural(len(boards), 'board')} with {strategy}")
    objective = _single_objective(args.objective)
    records = whatif(graph, boards=boards, chips=chips, strategy=strategy,
                     workers=args.workers, progress=not say.quiet, seed=args.seed,
                     objective=objective, **options)
    print(f"Scenario {scenario.name}: {graph.n_blocks} blocks, rates: {graph.rates}; "
          f"plans use exactly the chips asked for (spread)")
    print()
    _print_whatif(records, print)
    span = _sensitivity_summary(records)
    if span:
        changes = ", ".join(f"{pj:g} pJ: {100 * c:+.1f}%" for pj, c in span.items())
        print(f"Energy sensitivity to the (unpublished) inter-chip spike energy, largest "
              f"change of any plan's estimate vs the default: {changes}")
    time_span = _time_sensitivity_summary(records)
    if time_span:
        print("Step-time sensitivity to the unpublished time constants (each 0.5x to 5x "
              "the time it stands for), largest change of any plan's estimate: "
              + _time_span_text(time_span))
    best = smallest_board(records)
    if best is None:
        print("Smallest board that fits: none of those tried.")
    else:
        print(f"Smallest board that fits: {best['board']} ({best['board_chips']} chips; "
              f"{best['chips_used']} used, {best['cores']} cores)")
    print(_assumption_note(boards[0]))
    if args.json:
        _write_json(args.json, {
            "scenario": scenario.name,
            "strategy": strategy,
            "boards": [b.name for b in boards],
            "rates": graph.rates,
            "fingerprint": graph.fingerprint(),
            "records": records,
            "smallest_board": None if best is None else best["board"],
            "energy_sensitivity_max_change": [
                {"interchip_spike_pj": pj, "change": c} for pj, c in span.items()
            ],
            "objective": objective,
            "time_sensitivity_max_change": [
                {"constant": name, "factor": f, "change": c}
                for (name, f), c in time_span.items()
            ],
        })
        say(f"wrote {args.json}")
    if args.plot:
        with say.stage(f"drawing {args.plot}"):
            plot_whatif(records, args.plot,
                        title=f"{scenario.name}: what-if ({strategy}, objective {objective})")
        say(f"wrote {args.plot}")
    return 0


# ===================================================================== plan
def _cmd_plan(args, say):
    board = _check_board(args.board)
    n_chips = _check_chips(board, args.chips)
    name = _single_strategy(args.strategy)
    _, model, graph, allocator_rates = prepare(args.scenario, args.rates, args.duration, say)
    result = run_strategy(name, model, graph, board, n_chips, seed=args.seed,
                          time_limit=args.time_limit, allocator_rates=allocator_rates,
                          say=say, objective=_single_objective(args.objective))
    if not result.feasible:
        raise InfeasibleError(f"{name} found no plan on {n_chips} chip(s) of "
                              f"{board.name}: {result.reason}")
    plan = result.plan
    plan.runtime_s = result.runtime_s
    plan.info["scenario"] = _portable_spec(args.scenario)  # for `partitioner check`
    plan.save(args.output)
    print(f"Wrote {args.output}: {name}, {plan.n_blocks} blocks on {plan.n_cores} cores, "
          f"{_plural(plan.n_chips, 'chip')} of {board.name}, "
          f"{result.metrics.interchip_spikes:.1f} inter-chip spikes/step, "
          f"{result.metrics.time_ns / 1000:.4g} us/step predicted "
          f"(bottleneck: {result.metrics.bottleneck['text']})")
    return 0


def _portable_spec(spec):
    """``spec`` with a file path made absolute, so it works from another folder."""
    target, sep, func = str(spec).rpartition(":") if ":" in str(spec) else (spec, "", "")
    if not sep or not Path(target).is_file():
        target, sep, func = str(spec), "", ""
    path = Path(target).expanduser()
    if path.is_file():
        return str(path.resolve()) + (f":{func}" if sep else "")
    return str(spec)


# ==================================================================== check
#: Columns of the `check` table: NxSDK stand-in summary key, header, table size.
CHECK_COLUMNS = (
    ("compartments", "compartments", "cxCfg"),
    ("input_axons", "input axons", "synapseMap"),
    ("output_axons", "output axons", "output axons"),
    ("synapse_bits", "synapse bits", "synapse memory"),
    ("compartment_cfgs", "cx cfgs", "cxProfileCfg"),
    ("vth_cfgs", "vth cfgs", "vthProfileCfg"),
    ("synapse_cfgs", "syn formats", "synapseFmt"),
    ("stdp_pre_cfgs", "stdp pre", "stdpPreCfg"),
)


def _check_limits():
    """Size of each `CHECK_COLUMNS` table on a Loihi core (the stand-in's)."""
    from partitioner import nxsdk_standin as nx

    sizes = dict(nx.TABLE_SIZES)
    sizes["output axons"] = nx.OUTPUT_AXON_ENTRIES
    sizes["synapse memory"] = nx.SYNAPSE_MEMORY_BITS
    sizes["synapseFmt"] -= 1  # format 0 is reserved
    return {key: sizes[table] for key, _, table in CHECK_COLUMNS}


def _check_board_on_standin(nl_board, say):
    """Build a nengo-loihi board with ``build_board`` on the NxSDK stand-in."""
    from partitioner.errors import CoreRuleError
    from partitioner.nxsdk_standin import build_on_standin

    with say.stage("building the board with nengo-loihi's build_board on the NxSDK "
                   "stand-in"):
        try:
            return build_on_standin(nl_board)
        except AssertionError as e:
            raise CoreRuleError(
                f"nengo-loihi's build_board refused the board: "
                f"{_one_line(e) or 'one of its internal checks failed'}."
            ) from e


def _core_rows(nl_board, nxsdk):
    """One record per core: chip, core, blocks and the stand-in's table counts."""
    n_blocks = [len(core.blocks) for chip in nl_board.chips for core in chip.cores]
    rows = []
    for blocks, summary in zip(n_blocks, nxsdk.summary()):
        rows.append(dict(summary, blocks=blocks))
    return rows


def _print_core_table(rows, limits, top):
    fullest = lambda r: max(r[key] / limits[key] for key, _, _ in CHECK_COLUMNS)
    shown = sorted(rows, key=fullest, reverse=True)[:top] if top else rows
    header = ["chip", "core", "blocks"] + [h for _, h, _ in CHECK_COLUMNS] + ["fullest %"]
    table = [header, ["", "limit", ""] + [f"{limits[k]:,}" for k, _, _ in CHECK_COLUMNS]
             + ["100.0"]]
    for r in shown:
        table.append([str(r["chip"]), str(r["core"]), str(r["blocks"])]
                     + [f"{r[k]:,}" for k, _, _ in CHECK_COLUMNS]
                     + [f"{100 * fullest(r):.1f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip())
        if k == 1:
            print("  ".join("-" * w for w in widths))
    if top and len(rows) > top:
        print(f"... {len(rows) - top} more cores (the {top} fullest shown; --top 0 for all)")


def _cmd_check(args, say):
    """Build a scenario's or a saved plan's board on the NxSDK stand-in."""
    from partitioner.allocator import PlanAllocator, board_from_plan
    from partitioner.plan import Plan

    target = args.target
    if target.endswith(".json"):
        plan = Plan.load(target)
        spec = args.scenario or plan.info.get("scenario")
        if not spec:
            raise PlanError(
                f"{target} does not name the scenario it was made for; give it with "
                f"--scenario SCENARIO."
            )
        _, model, graph, _ = prepare(spec, args.rates, args.duration, say)
        with say.stage("checking the plan against the model and emitting its board"):
            allocator = PlanAllocator(plan, board=args.board)
            nl_board = allocator(model, plan.n_chips)
        what = f"plan {target} ({spec})"
        board_name = args.board or plan.board
    else:
        board = _check_board(args.board or "nahuku32")
        n_chips = _check_chips(board, args.chips)
        name = _single_strategy(args.strategy)
        _, model, graph, allocator_rates = prepare(target, args.rates, args.duration, say)
        result = run_strategy(name, model, graph, board, n_chips, seed=args.seed,
                              time_limit=args.time_limit,
                              allocator_rates=allocator_rates, say=say)
        if not result.feasible:
            raise InfeasibleError(f"{name} found no plan on {n_chips} chip(s) of "
                                  f"{board.name}: {result.reason}")
        with say.stage("emitting the board"):
            nl_board = board_from_plan(model, result.plan, graph, limits=board.limits)
        what = f"scenario {target} ({name} plan)"
        board_name = board.name
    nxsdk = _check_board_on_standin(nl_board, say)
    rows = _core_rows(nl_board, nxsdk)
    print(f"Checked {what} on {board_name}: nengo-loihi's build_board built "
          f"{_plural(graph.n_blocks, 'block')} on {_plural(len(rows), 'core')} of "
          f"{_plural(len(nxsdk.n2Chips), 'chip')} on the NxSDK stand-in; every "
          f"per-core table is within its size.")
    print()
    _print_core_table(rows, _check_limits(), args.top)
    return 0


# ================================================================== inspect
def _fmt_opt(value, fmt=".4g"):
    return "-" if value is None else format(value, fmt)


def _inspect_plan(path):
    from partitioner.plan import Plan

    plan = Plan.load(path)
    per_chip = plan.cores_per_chip()
    print(f"Plan {path}")
    print(f"  fingerprint   {plan.fingerprint}")
    print(f"  strategy      {plan.strategy or '-'} (seed {plan.seed})")
    print(f"  board         {plan.board}")
    print(f"  blocks        {plan.n_blocks}")
    print(f"  chips         {plan.n_chips}")
    print(f"  cores         {plan.n_cores}")
    print(f"  objective     {plan.objective} = {_fmt_opt(plan.objective_value)}")
    print(f"  bound         {_fmt_opt(plan.bound)}")
    print(f"  gap           {_fmt_opt(plan.gap, '.3f')}")
    print(f"  runtime       {plan.runtime_s:.2f} s")
    print(f"  cores/chip    {' '.join(str(int(c)) for c in per_chip)}")
    print(f"  chip position {' '.join(str(int(p)) for p in plan.chip_position)}")
    return 0


def _largest_blocks_table(graph, limits, top):
    from partitioner.graph import RESOURCES

    frac = graph.core_fraction(limits)
    order = np.argsort(-frac, kind="stable")[:top]
    header = ["#", "label", "source"] + list(RESOURCES) + ["core %"]
    rows = [header]
    for i in order:
        rows.append([str(i), _clip(_short_label(graph.labels[i]), 36),
                     _clip(graph.sources[i], 44)]
                    + [f"{int(v):,}" for v in graph.resources[i]]
                    + [f"{100 * frac[i]:.1f}"])
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) if k < 3 else c.rjust(w)
                         for k, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    )


def _short_label(label):
    """A block label without nengo-loihi's ``LoihiBlock(...)`` wrapper."""
    label = str(label)
    if label.startswith("LoihiBlock(") and label.endswith(")"):
        return label[len("LoihiBlock("):-1]
    return label


def _clip(text, n):
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def _inspect_scenario(args, say):
    from partitioner.graph import RESOURCES
    from partitioner.metrics import BOUND_RULES, lower_bounds

    board = _check_board(args.board)
    scenario, _, graph, _ = prepare(args.scenario_or_plan, args.rates, args.duration, say)
    limits = board.limits
    print(f"Scenario {scenario.name} ({scenario.source})")
    print(f"  {graph.n_blocks} blocks, {_plural(graph.n_inputs, 'host input')}, "
          f"{int(graph.axons.nnz)} block-to-block edges, rates: {graph.rates}, "
          f"fingerprint {graph.fingerprint()}")
    print(f"  blocks needing a core of their own: {int(graph.alone.sum())} "
          f"(learning {int(graph.learning.sum())}, population-axon senders "
          f"{int(graph.pop_sender.sum())})")
    print()
    print(f"Largest blocks (by the fullest core resource; core limits of {board.name}):")
    print(_largest_blocks_table(graph, limits, args.top))
    print()
    print("Resource totals:")
    caps = limits.capacity_vector()
    totals = graph.resources.sum(axis=0)
    for name, total, cap in zip(RESOURCES, totals, caps):
        print(f"  {name:<14} {int(total):>14,}   ({int(cap):,} per core, "
              f"{total / cap:.1f} cores' worth)")
    print()
    bounds = lower_bounds(graph, board)
    print(_bounds_text(bounds))
    print("  cores each rule alone requires: "
          + ", ".join(f"{r} {bounds['rules'][r]}" for r in BOUND_RULES))
    print(f"  fits {board.name} ({board.n_chips} chips): "
          f"{'yes' if bounds['fits_board'] else 'no'}")
    print()
    print(f"Heaviest edges (rates: {graph.rates}):")
    print(_edges_table(graph, args.top))
    return 0


def _edges_table(graph, top):
    """The ``top`` heaviest block-to-block edges, with block labels and sources."""
    rows = [["spikes/step", "axons", "from block", "to block"]]
    for src, dst, spikes, axons in graph.heaviest_edges(top):
        rows.append([f"{spikes:.2f}", f"{int(axons):,}",
                     f"#{src} {_clip(_short_label(graph.labels[src]), 40)}",
                     f"#{dst} {_clip(_short_label(graph.labels[dst]), 40)}"])
        rows.append(["", "", f"   {_clip(graph.sources[src], 72)}",
                     f"   {_clip(graph.sources[dst], 72)}"])
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    return "\n".join(
        "  " + "  ".join(c.rjust(w) if k < 2 else c.ljust(w)
                         for k, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    )


def _cmd_inspect(args, say):
    target = args.scenario_or_plan
    if target.endswith(".json"):
        return _inspect_plan(target)
    return _inspect_scenario(args, say)


# ===================================================================== diff
def _cmd_diff(args, say):
    from partitioner.plan import Plan

    a, b = Plan.load(args.a), Plan.load(args.b)
    differences = a.model_differences(b.fingerprint, b.n_blocks)
    if differences:
        raise PlanError(
            f"{args.a} and {args.b} are plans of different models (they differ in "
            f"{'; '.join(differences)}); diff needs two plans of one model."
        )
    same = a.block_mapping(b)  # block i of a is block same[i] of b
    core_a, core_b = a.block_core, b.block_core[same]
    chip_a, chip_b = a.block_chip, b.block_chip[same]
    moved_chip = np.flatnonzero(chip_a != chip_b)
    moved_core = np.flatnonzero(core_a != core_b)
    print(f"a: {args.a} ({a.strategy or '-'}, {a.board})")
    print(f"b: {args.b} ({b.strategy or '-'}, {b.board})")
    print(f"chips      {a.n_chips} -> {b.n_chips} ({b.n_chips - a.n_chips:+d})")
    print(f"cores      {a.n_cores} -> {b.n_cores} ({b.n_cores - a.n_cores:+d})")
    print(_objective_change(a, b))
    print(f"blocks on another chip: {moved_chip.size} of {a.n_blocks}; "
          f"on another core: {moved_core.size} of {a.n_blocks}")
    shown = moved_core[: args.top]
    for i in shown:
        print(f"  block {i}: chip {chip_a[i]} -> {chip_b[i]}, core {core_a[i]} -> {core_b[i]}")
    if moved_core.size > shown.size:
        print(f"  ... and {moved_core.size - shown.size} more (--top to show more)")
    return 0


def _objective_change(a, b):
    if a.objective != b.objective:
        return (f"objective  {a.objective} = {_fmt_opt(a.objective_value)} vs "
                f"{b.objective} = {_fmt_opt(b.objective_value)} (different objectives)")
    if a.objective_value is None or b.objective_value is None:
        return (f"objective  {a.objective}: {_fmt_opt(a.objective_value)} -> "
                f"{_fmt_opt(b.objective_value)}")
    delta = b.objective_value - a.objective_value
    return (f"objective  {a.objective}: {a.objective_value:.4g} -> "
            f"{b.objective_value:.4g} ({delta:+.4g})")


# ====================================================================== fit
FIT_COLUMNS = (
    Column("model", "model"),
    Column("blocks", "blocks", "d"),
    Column("cores", "cores", "d"),
    Column("chips", "chips", "d"),
    Column("interchip_axons", "ic axons", ".0f"),
    Column("interchip_spikes", "ic spikes/step", ".1f"),
    Column("broken", "broken rules"),
)


def _broken_text(stats):
    rules = stats.broken_rules()
    if not rules:
        return "none"
    return ", ".join(f"{rule} ({_plural(n, 'block')})" for rule, n in rules.items())


def _fit_record(name, stats):
    record = {"model": name, "broken": _broken_text(stats)}
    record.update(stats.to_dict())
    if not stats.partitioned:
        record["interchip_axons"] = record["interchip_spikes"] = None
    return record


def _violation_lines(stats, top):
    """The first ``top`` violations, one line each, then how many more."""
    lines = [f"  {_clip(_short_label(v.block), 40)}: {v.text()}"
             for v in stats.violations[:top]]
    lines += [f"  nengo-loihi: {m}" for m in stats.nengo_loihi_errors[:top]]
    hidden = len(stats.violations) + len(stats.nengo_loihi_errors) - len(lines)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more")
    return lines


def _shape_lines(result):
    rows = [(c.name, f"{_tile(c.old)} -> {_tile(c.new)}", c.reason)
            for c in result.changes]
    widths = [max(len(r[k]) for r in rows) for k in range(2)]
    return [f"  {a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}" for a, b, c in rows]


def _tile(shape):
    from partitioner.shapes import tile_text

    return tile_text(shape)


def _place_applied(network, board, rates, duration, say):
    """Build the network as configured, partition it, emit its board and build it on
    the NxSDK stand-in; returns ``(record, stand-in summary text)``."""
    import nengo_loihi

    from partitioner.allocator import board_from_plan
    from partitioner.engine import partition
    from partitioner.extract import build_model, extract
    from partitioner.metrics import evaluate
    from partitioner.nxsdk_standin import build_on_standin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if rates == "measured":
            with say.stage("building the network with the new block shapes"):
                sim = nengo_loihi.Simulator(network, target="sim", progress_bar=False)
            with sim:
                graph = extract(sim, rates="measured", duration=duration,
                                progress=not say.quiet)
                model = sim.model
        else:
            with say.stage("building the network with the new block shapes"):
                model = build_model(network)
                graph = extract(model, rates=rates, progress=False)
    with say.stage(f"partitioning {graph.n_blocks} blocks on {board.name}"):
        plan = partition(graph, board=board)
        metrics = evaluate(graph, plan, board)
    with say.stage("building the board on the NxSDK stand-in"):
        nxsdk = build_on_standin(board_from_plan(model, plan, graph,
                                                 limits=board.limits))
    record = {
        "model": "applied", "broken": "none", "blocks": graph.n_blocks,
        "cores": int(plan.n_cores), "chips": int(plan.n_chips),
        "interchip_axons": float(metrics.interchip_axons),
        "interchip_spikes": float(metrics.interchip_spikes), "partitioned": True,
    }
    text = (f"nengo-loihi's build_board on the NxSDK stand-in: "
            f"{_plural(len(nxsdk.n2Chips), 'chip')}, {_plural(len(nxsdk.cores()), 'core')}, "
            f"every per-core table within its size")
    return record, text


def _cmd_fit(args, say):
    from partitioner.fitting import fit_block_shapes
    from partitioner.scenario import load_scenario

    board = _check_board(args.board)
    with say.stage(f"loading scenario {args.scenario}"):
        scenario = load_scenario(args.scenario)
    rates, _ = _resolve_rates(args.rates, scenario)
    t0 = time.perf_counter()
    with say.stage(f"fitting block shapes of {scenario.name} to the cores of "
                   f"{board.name}"):
        result = fit_block_shapes(scenario.network, board=board, apply=args.apply,
                                  rates=rates, duration=args.duration)
    say(f"{result.builds} builds in {time.perf_counter() - t0:.1f} s")
    records = [_fit_record("before", result.before)]
    if result.changes:
        records.append(_fit_record("after", result.after))
    standin = None
    if args.apply and result.ok and result.changes:
        record, standin = _place_applied(scenario.network, board, rates, args.duration,
                                         say)
        records.append(record)

    print(f"Scenario {scenario.name} on {board.name}: {_fit_headline(result)}")
    print()
    print(format_table(FIT_COLUMNS, records, mark_best=False))
    if not result.before.fits:
        print()
        print("Rules broken before fitting (each block alone):")
        print("\n".join(_violation_lines(result.before, args.top)))
    for record in records:
        if record.get("fits", True) and record.get("note"):
            print(f"{record['model']}: {record['note']}")
    if result.changes:
        print()
        print("Block shapes:")
        print("\n".join(_shape_lines(result)))
        print()
        print("Shapes (JSON):")
        print("[\n" + ",\n".join(" " + json.dumps(c.to_dict(), default=_json_default)
                                  for c in result.changes) + "\n]")
        print()
        print("Python:")
        print(result.snippet().rstrip())
    if standin:
        print()
        print(f"Applied: {standin}.")
    elif result.changes and not args.apply:
        print()
        print("--apply builds the network with these shapes, partitions it and builds "
              "it on the NxSDK stand-in (the scenario file is not changed).")
    for text in result.unresolved:
        print(f"unresolved: {text}")
    if args.json:
        data = result.to_dict()
        data.update(scenario=scenario.name, source=scenario.source, records=records)
        _write_json(args.json, data)
        say(f"wrote {args.json}")
    if not result.ok:
        raise InfeasibleError(
            f"Some blocks of {scenario.name} fit no core of {board.name} with any block "
            f"shape (see 'unresolved' and the table on stdout)."
        )
    return 0


def _fit_headline(result):
    if result.changes:
        text = f"{_plural(len(result.changes), 'ensemble')} re-blocked"
        return text if result.ok else text + ", but some blocks still fit no core"
    if result.ok:
        return "every block fits a core; nothing to change"
    return "some blocks fit no core, and no block shape fixes them"


# =================================================================== parser
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _add_rates_options(p):
    p.add_argument("--rates", default="axons",
                   help="spike rates: 'axons' (every axon active, default), "
                        "'scenario' (the scenario's ensemble_rates), 'measured' "
                        "(run the emulator) or FILE.json {ensemble label: Hz}")
    p.add_argument("--duration", type=float, default=1.0,
                   help="emulator seconds for --rates measured (default 1)")


def _add_model_options(p):
    p.add_argument("--board", default="nahuku32",
                   help="target board: kapoho_bay, nahuku8, nahuku32, pohoiki_beach, "
                        "pohoiki_springs (default nahuku32)")
    _add_rates_options(p)


def _add_solver_options(p):
    p.add_argument("--seed", type=int, default=0, help="strategy seed (default 0)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="effort of the ilp strategy in seconds: a fixed amount of "
                        "solver work, so results repeat (default 10)")


def _parser():
    parser = _Parser(prog=PROG, description=(
        "Pack nengo-loihi blocks several per Loihi core and cut them across chips. "
        "SCENARIO is a .py file with build() -> nengo.Network (file.py:function and "
        "package.module:function work too), or the name of a bundled scenario."))
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress messages on stderr")
    # -q is accepted after the command too; SUPPRESS keeps the top-level default.
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress messages on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, parents=[quiet])

    def add_scenario(p):
        from partitioner.scenario import bundled_scenarios

        names = ", ".join(bundled_scenarios()) or "none found"
        p.add_argument("scenario", metavar="SCENARIO",
                       help=f"file.py exposing build(), file.py:function, "
                            f"package.module:function, or a bundled scenario ({names})")

    p = add("compare", "compare strategies side by side on one scenario")
    add_scenario(p)
    p.add_argument("--chips", type=int, default=None,
                   help="chips to allow (default: all of the board's)")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated (default {DEFAULT_STRATEGIES}); also ilp, "
                        f"first-fit, metis-first-fit")
    p.add_argument("--objective", default="spikes",
                   help="objectives of our strategies, comma-separated: spikes "
                        "(default), max_link, chips, time (predicted step time); "
                        "e.g. spikes,time shows both plans side by side")
    _add_model_options(p)
    p.add_argument("--json", metavar="OUT", help="write the records as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="draw chip traffic and core load")
    _add_solver_options(p)
    p.set_defaults(func=_cmd_compare)

    p = add("whatif", "sweep boards and chip counts")
    add_scenario(p)
    p.add_argument("--board", action="append",
                   help="board to try; repeat for several (default: "
                        f"{', '.join(DEFAULT_WHATIF_BOARDS)})")
    p.add_argument("--chips", default=None,
                   help="chip counts: 4, 1..32 or 2,4,8 (default: lower bound up to 8 "
                        "more, plus the full board)")
    p.add_argument("--strategy", default="metis", help="strategy (default metis)")
    p.add_argument("--objective", default="spikes",
                   help="objective: spikes (default), max_link, chips or time "
                        "(predicted step time, using every chip's cores)")
    _add_rates_options(p)
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: one per CPU, as many as fit in half the "
                        "memory available; 1 = no subprocesses)")
    p.add_argument("--json", metavar="OUT", help="write the records as JSON")
    p.add_argument("--plot", metavar="OUT.png",
                   help="plot time, traffic and energy vs chips, and chips vs step "
                        "time and energy")
    _add_solver_options(p)
    p.set_defaults(func=_cmd_whatif)

    p = add("plan", "write a plan (JSON) for PlanAllocator")
    add_scenario(p)
    p.add_argument("-o", "--output", required=True, metavar="PLAN.json")
    p.add_argument("--chips", type=int, default=None,
                   help="chips to allow (default: all of the board's)")
    p.add_argument("--strategy", default="metis", help="strategy (default metis)")
    p.add_argument("--objective", default="spikes",
                   help="objective: spikes (default), max_link, chips or time")
    _add_model_options(p)
    _add_solver_options(p)
    p.set_defaults(func=_cmd_plan)

    p = add("inspect", "describe a scenario or a plan file")
    p.add_argument("scenario_or_plan", metavar="PLAN.json|SCENARIO")
    p.add_argument("--top", type=int, default=8, help="rows of blocks and edges (default 8)")
    _add_model_options(p)
    p.set_defaults(func=_cmd_inspect)

    p = add("diff", "compare two plans of the same model")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--top", type=int, default=20, help="moved blocks to list (default 20)")
    p.set_defaults(func=_cmd_diff)

    p = add("check", "build a scenario's or a saved plan's board with nengo-loihi's "
                     "build_board on the NxSDK stand-in; show each core's table use")
    p.add_argument("target", metavar="SCENARIO|PLAN.json",
                   help="a scenario (partitioned with --strategy), or a plan written "
                        "by `partitioner plan`")
    p.add_argument("--scenario", default=None,
                   help="the scenario a PLAN.json was made for (default: the one it "
                        "names)")
    p.add_argument("--chips", type=int, default=None,
                   help="chips to allow for a scenario (default: all of the board's)")
    p.add_argument("--strategy", default="metis", help="strategy for a scenario "
                                                       "(default metis)")
    p.add_argument("--board", default=None,
                   help="board (default: nahuku32, or the plan's)")
    _add_rates_options(p)
    _add_solver_options(p)
    p.add_argument("--top", type=int, default=0,
                   help="show only the N fullest cores (default 0: all)")
    p.set_defaults(func=_cmd_check)

    p = add("fit", "choose block shapes so every block fits a core")
    add_scenario(p)
    p.add_argument("--apply", action="store_true",
                   help="apply the shapes, then partition the network and build it on "
                        "the NxSDK stand-in (the scenario file is not changed)")
    p.add_argument("--json", metavar="OUT", help="write shapes, reasons and stats as JSON")
    p.add_argument("--top", type=int, default=8,
                   help="rule violations to list (default 8)")
    _add_model_options(p)
    p.set_defaults(func=_cmd_fit)
    return parser


# ===================================================================== main
def main(argv=None):
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad input (with a one-line message on
        stderr), 130 when interrupted.
    """
    import nengo.exceptions

    args = _parser().parse_args(argv)
    say = _Reporter(quiet=args.quiet)
    try:
        check_outputs(args)
        return args.func(args, say)
    except (PartitionerError, nengo.exceptions.NengoException, OSError) as e:
        _error(e)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


def _error(err):
    message = _one_line(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.filename}: {err.strerror}"
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
