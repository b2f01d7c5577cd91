"""What-if studies: how a model fares on other boards and chip counts.

`whatif` partitions one `TrafficGraph` for every (board, chip count) asked for, measures
each plan with `partitioner.metrics.evaluate`, and varies the one cost constant
nobody has published, the energy of a spike crossing a chip-to-chip link
(`EnergyModel.interchip_spike_pj`), to show how much the energy estimate depends on
it. Sweep points run in parallel processes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from partitioner.errors import PartitionerError
from partitioner.hardware import EnergyModel, get_board

__all__ = [
    "whatif",
    "run_point",
    "chip_counts",
    "smallest_board",
    "workers_memory_allows",
    "plot_whatif",
    "whatif_figure",
    "ProgressBar",
    "SENSITIVITY_FACTORS",
    "SENSITIVITY_PJ",
    "MAX_EXTRA_CHIPS",
]

#: Multiples of the default inter-chip spike energy tried by default.
SENSITIVITY_FACTORS = (0.5, 1.0, 2.0, 5.0)
#: Default inter-chip spike energies (pJ) of the sensitivity study.
SENSITIVITY_PJ = tuple(f * EnergyModel().interchip_spike_pj for f in SENSITIVITY_FACTORS)
#: Default sweeps go from the chip lower bound to at most this many chips above it
#: (and always include the board's full size).
MAX_EXTRA_CHIPS = 8

#: Numeric fields of a record (None when the point is infeasible).
NUMERIC_FIELDS = (
    "chips_used", "cores", "mean_core_utilization_pct", "interchip_axons",
    "interchip_spikes", "max_link_load", "hop_weighted_cost", "time_us", "energy_uj",
    "objective_value", "bound", "gap",
)

_WORKER_GRAPH = None


# ------------------------------------------------------------------- progress
class ProgressBar:
    """A one-line text progress bar on a stream (stderr by default).

    Parameters
    ----------
    total : int
        Number of steps.
    label : str
        Text before the bar.
    enabled : bool
        Draw nothing when False.
    stream : file-like, optional
        Where to draw (default ``sys.stderr``).
    width : int
        Characters of the bar itself.
    """

    def __init__(self, total, label="", enabled=True, stream=None, width=30):
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.done = 0
        self._t0 = time.perf_counter()
        self._last_len = 0
        self._note = ""
        self._lock = threading.Lock()

    def update(self, n=1, note=""):
        """Advance by ``n`` steps and redraw, with an optional note after the bar."""
        with self._lock:
            self.done = min(self.done + n, self.total)
            self._note = note
            self._draw()

    @contextlib.contextmanager
    def ticking(self, seconds=5.0):
        """Redraw (the elapsed time) every ``seconds`` while the block runs, so that a
        long step does not look like a hang."""
        if not self.enabled:
            yield self
            return
        stop = threading.Event()

        def tick():
            while not stop.wait(seconds):
                with self._lock:
                    self._draw()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def _draw(self):
        if not self.enabled:
            return
        note = self._note
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self._t0
        text = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {note}"
        pad = " " * max(self._last_len - len(text), 0)
        self._last_len = len(text)
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()

    def close(self):
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------- sweep points
def chip_counts(graph, board, chips=None):
    """Chip counts to try on ``board``.

    Parameters
    ----------
    graph : TrafficGraph
    board : BoardSpec or str
    chips : int or iterable of int, optional
        Counts to try. By default: every count from the chip lower bound up to
        ``min(board chips, lower bound + MAX_EXTRA_CHIPS)``, plus the board's full
        size. When the lower bound exceeds the board, only the full size (which is
        then reported infeasible).

    Returns
    -------
    list of int
        Sorted, without repeats.
    """
    from partitioner.metrics import chip_lower_bound

    board = get_board(board)
    if chips is not None:
        counts = [int(chips)] if np.isscalar(chips) else [int(c) for c in chips]
        return sorted(set(counts))
    lb = max(chip_lower_bound(graph, board), 1)
    top = min(board.n_chips, lb + MAX_EXTRA_CHIPS)
    return sorted(set(range(lb, top + 1)) | {board.n_chips})


def _energy_uj(graph, plan, board, interchip_pj):
    from partitioner.metrics import evaluate

    varied = board.replace(energy=board.energy.replace(interchip_spike_pj=float(interchip_pj)))
    return evaluate(graph, plan, varied).energy_pj * 1e-6


def _empty_record(board, n_chips, strategy, lower_bound):
    record = {
        "board": board.name,
        "board_chips": board.n_chips,
        "chips": int(n_chips),
        "lower_bound_chips": int(lower_bound),
        "strategy": strategy,
        "interchip_spike_pj": float(board.energy.interchip_spike_pj),
        "feasible": False,
        "reason": None,
        "runtime_s": 0.0,
        "energy_sensitivity": [],
    }
    record.update({name: None for name in NUMERIC_FIELDS})
    return record


def run_point(graph, board, n_chips, strategy="metis", seed=0, spread=True,
              interchip_pj=SENSITIVITY_PJ, lower_bound=0, options=None):
    """Partition ``graph`` onto ``n_chips`` chips of ``board`` and measure the plan.

    Parameters
    ----------
    graph : TrafficGraph
    board : BoardSpec or str
    n_chips : int
        Chips to use (``spread=True``) or at most (``spread=False``).
    strategy : str
        Strategy for `partitioner.partition`.
    seed : int
        Seed of the strategy.
    spread : bool
        Use exactly ``n_chips`` chips (see `partitioner.partition`).
    interchip_pj : iterable of float
        Inter-chip spike energies (pJ) to re-estimate the energy with.
    lower_bound : int
        Chip lower bound, copied into the record.
    options : dict, optional
        Further strategy options.

    Returns
    -------
    dict
        One what-if record (see `whatif`).
    """
    from partitioner.metrics import evaluate
    from partitioner import partition

    board = get_board(board)
    record = _empty_record(board, n_chips, strategy, lower_bound)
    if lower_bound > n_chips and n_chips <= board.n_chips:
        record["reason"] = (
            f"The model needs at least {lower_bound} chips of {board.name} (proven lower "
            f"bound); {n_chips} is too few."
        )
        return record
    t0 = time.perf_counter()
    try:
        plan = partition(graph, n_chips=n_chips, board=board, strategy=strategy,
                         seed=seed, spread=spread, **(options or {}))
    except PartitionerError as e:
        record["reason"] = " ".join(str(e).split())
        record["runtime_s"] = time.perf_counter() - t0
        return record
    record.update(plan_numbers(plan, evaluate(graph, plan, board)))
    record.update(
        feasible=True,
        chips=int(n_chips),  # asked for; chips_used is what the plan uses
        chips_used=int(plan.n_chips),
        energy_sensitivity=[
            {"interchip_spike_pj": float(v), "energy_uj": _energy_uj(graph, plan, board, v)}
            for v in interchip_pj
        ],
    )
    record["runtime_s"] = time.perf_counter() - t0
    return record


def plan_numbers(plan, metrics):
    """The numbers every table and JSON record reports for one plan.

    Parameters
    ----------
    plan : Plan
    metrics : PlanMetrics
        ``metrics.evaluate`` of the plan.

    Returns
    -------
    dict
        chips, cores, utilization (%), inter-chip axons and spikes per step, max link
        load, hop-weighted cost, time (us) and energy (uJ) per step, objective, bound
        and gap.
    """
    m = metrics

    def number(x):
        return None if x is None else float(x)

    return dict(
        chips=int(plan.n_chips),
        cores=int(plan.n_cores),
        mean_core_utilization_pct=100.0 * float(m.mean_core_load),
        interchip_axons=float(m.interchip_axons),
        interchip_spikes=float(m.interchip_spikes),
        max_link_load=float(m.max_link_load),
        hop_weighted_cost=float(m.hop_weighted_cost),
        time_us=float(m.time_ns) * 1e-3,
        energy_uj=float(m.energy_pj) * 1e-6,
        objective=plan.objective,
        objective_value=number(plan.objective_value),
        bound=number(plan.bound),
        gap=number(plan.gap),
    )


def _init_worker(graph):
    global _WORKER_GRAPH
    _WORKER_GRAPH = graph


def _run_in_worker(kwargs):
    return run_point(_WORKER_GRAPH, **kwargs)


# --------------------------------------------------------------------- sweep
def whatif(graph, boards=("nahuku32",), chips=None, strategy="metis",
           interchip_pj=SENSITIVITY_PJ, workers=None, progress=True, seed=0,
           spread=True, **options):
    """Partition ``graph`` for every board and chip count and measure each plan.

    Parameters
    ----------
    graph : TrafficGraph
        The model's traffic graph (`partitioner.extract`) or a synthetic one.
    boards : iterable of (str or BoardSpec)
        Boards to try (see `partitioner.hardware.BOARDS`).
    chips : int or iterable of int, optional
        Chip counts to try on every board; by default `chip_counts` of each board.
    strategy : str
        Strategy for `partitioner.partition`.
    interchip_pj : iterable of float
        Inter-chip spike energies (pJ) for the sensitivity study; default 0.5x, 1x, 2x
        and 5x the (unpublished, assumed) default of `EnergyModel.interchip_spike_pj`.
    workers : int, optional
        Processes to use; default one per CPU, but no more than fit in half the
        memory available (`workers_memory_allows`), and at most one per point. 1
        runs everything in this process.
    progress : bool
        Draw a progress bar on stderr.
    seed : int
        Seed of the strategy.
    spread : bool
        Use exactly the given number of chips at each point (default), so the sweep
        shows what spreading the model costs. With False every point uses the fewest
        chips that fit.
    **options
        Further strategy options (e.g. ``time_limit`` for ``"ilp"``).

    Returns
    -------
    list of dict
        One record per (board, chip count), in board then chip order, with keys
        ``board``, ``board_chips``, ``chips`` (asked for), ``lower_bound_chips``,
        ``strategy``, ``interchip_spike_pj`` (the board's default, used for
        ``energy_uj``), ``feasible``, ``reason`` (why not, else None), ``chips_used``,
        ``cores``, ``mean_core_utilization_pct`` (mean over cores of the fullest
        resource, in percent), ``interchip_axons``, ``interchip_spikes`` (per step),
        ``max_link_load`` (spikes per step on the busiest chip-to-chip link),
        ``hop_weighted_cost`` (spike-hops per step), ``time_us`` and ``energy_uj``
        (estimated per step), ``objective_value``, ``bound``, ``gap``,
        ``runtime_s`` and ``energy_sensitivity``: a list of
        ``{"interchip_spike_pj", "energy_uj"}``, one per value of ``interchip_pj``.
        Numeric fields are None where the point is infeasible.
    """
    from partitioner.metrics import chip_lower_bound

    interchip_pj = SENSITIVITY_PJ if interchip_pj is None else tuple(interchip_pj)
    boards = [get_board(b) for b in boards]
    tasks = []
    for board in boards:
        lb = chip_lower_bound(graph, board)
        for k in chip_counts(graph, board, chips):
            tasks.append(dict(board=board, n_chips=k, strategy=strategy, seed=seed,
                              spread=spread, interchip_pj=interchip_pj,
                              lower_bound=lb, options=options))
    bar = ProgressBar(len(tasks), "what-if", enabled=progress)
    workers = _worker_count(workers, len(tasks), graph)
    try:
        with bar.ticking():
            if workers <= 1:
                records = _run_serial(graph, tasks, bar)
            else:
                records = _run_parallel(graph, tasks, bar, workers)
    finally:
        bar.close()
    return records


#: Memory one sweep process needs, estimated: a base for the modules plus amounts per
#: block and per block-to-block edge of the graph (partitioning 1,000,000 blocks and
#: 7.3 million edges peaked at 2.3 GB; a process with the modules loaded holds about
#: 0.2 GB).
WORKER_BASE_BYTES = 250 * 2**20
WORKER_BYTES_PER_BLOCK = 2048
WORKER_BYTES_PER_EDGE = 200
#: By default the sweep processes may use this share of the memory available.
WORKER_MEMORY_SHARE = 0.5


def _worker_count(workers, n_tasks, graph=None):
    if workers is None:
        workers = min(os.cpu_count() or 1, workers_memory_allows(graph))
    if int(workers) < 1:
        raise PartitionerError(f"workers must be at least 1, not {workers}.")
    return max(1, min(int(workers), n_tasks))


def workers_memory_allows(graph=None, available=None):
    """How many sweep processes fit in `WORKER_MEMORY_SHARE` of the available memory.

    Parameters
    ----------
    graph : TrafficGraph, optional
        The graph each process partitions (its size sets the estimate).
    available : int, optional
        Bytes of memory available (default: ``MemAvailable`` of ``/proc/meminfo``;
        unlimited where that cannot be read).

    Returns
    -------
    int
        At least 1.
    """
    available = _available_memory() if available is None else available
    if available is None:
        return os.cpu_count() or 1
    need = WORKER_BASE_BYTES
    if graph is not None:
        need += (WORKER_BYTES_PER_BLOCK * graph.n_blocks
                 + WORKER_BYTES_PER_EDGE * graph.axons.nnz)
    return max(1, int(WORKER_MEMORY_SHARE * available // need))


def _available_memory():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _note(task):
    return f"{task['board'].name} x{task['n_chips']}"


def _run_serial(graph, tasks, bar):
    records = []
    for task in tasks:
        records.append(run_point(graph, **task))
        bar.update(1, _note(task))
    return records


def _run_parallel(graph, tasks, bar, workers):
    records = [None] * len(tasks)
    # Forked workers share this process's memory until they write to it; keep the
    # garbage collector from touching (and so copying) every object they inherit.
    gc.collect()
    gc.freeze()
    try:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=(graph,)) as pool:
            futures = {pool.submit(_run_in_worker, task): i
                       for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                i = futures.pop(future)
                records[i] = future.result()
                bar.update(1, _note(tasks[i]))
    finally:
        gc.unfreeze()
    return records


def smallest_board(records):
    """The feasible record on the board with the fewest chips.

    Parameters
    ----------
    records : list of dict
        Output of `whatif`.

    Returns
    -------
    dict or None
        Among feasible records: fewest board chips, then fewest chips used, then least
        energy per step. None when no point is feasible.
    """
    feasible = [r for r in records if r["feasible"]]
    if not feasible:
        return None
    return min(feasible, key=lambda r: (r["board_chips"], r["chips_used"], r["energy_uj"]))


# ---------------------------------------------------------------------- plot
def _board_series(records, field):
    """``{board: (chips_used, values)}`` of feasible points, one point per chip count.

    ``field`` is a record key or a function of a record.
    """
    series = {}
    for r in records:
        if not r["feasible"]:
            continue
        xs, ys = series.setdefault(r["board"], ([], []))
        if r["chips_used"] in xs:
            continue
        xs.append(r["chips_used"])
        ys.append(field(r) if callable(field) else r[field])
    return {b: (np.asarray(x), np.asarray(y, dtype=float)) for b, (x, y) in series.items()}


def _sorted(x, y):
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def plot_whatif(records, path, title=None):
    """Plot a what-if sweep: step time, inter-chip traffic and energy vs chips used.

    One line per board. The energy panel shades the range the energy estimate spans
    over the inter-chip spike energies of the sensitivity study.

    Parameters
    ----------
    records : list of dict
        Output of `whatif`.
    path : str or os.PathLike
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib.pyplot as plt

    fig = whatif_figure(records, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def whatif_figure(records, title=None):
    """The figure `plot_whatif` writes (a `matplotlib.figure.Figure`).

    Each board keeps its colour, marker and line style whichever boards are
    feasible (styles follow every board of the sweep, smallest first). A board whose
    line equals another's is drawn dashed on top of it and its legend entry says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    panels = [
        ("time_us", "Estimated time per step (µs)", "Step time"),
        ("interchip_spikes", "Inter-chip spikes per step", "Inter-chip traffic"),
        ("energy_uj", "Estimated energy per step (µJ)", "Energy per step"),
    ]
    series = {field: _board_series(records, field) for field, _, _ in panels}
    all_boards = sorted(dict.fromkeys(r["board"] for r in records),
                        key=lambda b: (_board_chips(records, b), b))
    styles = _board_styles(all_boards)
    boards = [b for b in all_boards if b in series["time_us"]]
    same_everywhere = _same_lines(series, [f for f, _, _ in panels], boards)
    all_x = [x for x, _ in series["time_us"].values() for x in x]
    for ax, (field, ylabel, panel_title) in zip(axes, panels):
        same = _same_lines(series, [field], boards)
        for board in boards:
            x, y = _sorted(*series[field][board])
            style = dict(styles[board])
            if board in same:  # dashed and hollow, over the line it equals
                style.update(linestyle=(0, (4, 3)), markerfacecolor="none",
                             zorder=3 + len(all_boards))
            label = board
            if board in same_everywhere:
                label = f"{board} (same as {same_everywhere[board]})"
            ax.plot(x, y, label=label, **style)
            if field == "energy_uj":
                _shade_sensitivity(ax, records, board, style["color"])
        if same:
            ax.text(0.98, 0.02, "dashed: same as " + "; ".join(
                f"{b} = {a}" for b, a in same.items()), transform=ax.transAxes,
                ha="right", va="bottom", fontsize="x-small", color="0.3")
        ax.set_xlabel("Chips used")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.grid(alpha=0.3)
        _chip_axis(ax, all_x)
    if boards:
        axes[0].legend(title="Board", fontsize="small")
        pj = _sensitivity_range(records)
        if pj:
            axes[2].text(
                0.02, 0.98,
                f"line: inter-chip spike energy {_default_pj(records):g} pJ\n"
                f"band: {pj[0]:g}-{pj[1]:g} pJ (not published)",
                transform=axes[2].transAxes, va="top", fontsize="small",
            )
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no feasible point", ha="center", va="center",
                    transform=ax.transAxes)
    infeasible = _infeasible_points(records, all_boards)
    suffix = (f"  (infeasible: {', '.join(infeasible[:6])}"
              f"{' ...' if len(infeasible) > 6 else ''})")
    fig.suptitle((title or "What-if sweep") + (suffix if infeasible else ""))
    return fig


def _infeasible_points(records, boards):
    """``"board xN"`` of every infeasible point, boards in plot order, chips by number."""
    rank = {b: i for i, b in enumerate(boards)}
    points = sorted({(rank[r["board"]], r["chips"], r["board"]) for r in records
                     if not r["feasible"]})
    return [f"{board} x{chips}" for _, chips, board in points]


def _same_lines(series, fields, boards):
    """``{board: earlier board}`` for boards whose lines in every one of ``fields``
    equal an earlier board's (they would hide each other)."""
    same = {}
    for i, board in enumerate(boards):
        for earlier in boards[:i]:
            if earlier in same:
                continue
            if all(_equal_series(series[f][board], series[f][earlier]) for f in fields):
                same[board] = earlier
                break
    return same


def _equal_series(a, b):
    (xa, ya), (xb, yb) = _sorted(*a), _sorted(*b)
    return (xa.shape == xb.shape and np.array_equal(xa, xb)
            and np.allclose(ya, yb, rtol=1e-9, atol=0.0))


def _board_chips(records, board):
    return next(r["board_chips"] for r in records if r["board"] == board)


def _board_styles(boards):
    """Line style per board: smaller boards drawn on top with smaller markers."""
    markers = "osD^v<>p*h"
    n = len(boards)
    return {
        board: dict(color=f"C{i}", marker=markers[i % len(markers)], linestyle="-",
                    markersize=4 + 2.5 * i, linewidth=1.2 + 0.6 * i, alpha=0.9,
                    zorder=2 + n - i)
        for i, board in enumerate(boards)
    }


def _chip_axis(ax, xs):
    """Base-2 log x axis with integer chip ticks when the counts span a wide range."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    xs = sorted({int(x) for x in xs})
    if not xs:
        return
    if xs[-1] / max(xs[0], 1) >= 8:
        ax.set_xscale("log", base=2)
        ticks = sorted({2**k for k in range(int(np.log2(xs[-1])) + 1)} | {xs[0], xs[-1]})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def _default_pj(records):
    return next(r["interchip_spike_pj"] for r in records if r["feasible"])


def _sensitivity_range(records):
    values = [s["interchip_spike_pj"] for r in records for s in r["energy_sensitivity"]]
    return (min(values), max(values)) if values else None


def _shade_sensitivity(ax, records, board, color):
    lo = _board_series(records, lambda r: min(s["energy_uj"] for s in r["energy_sensitivity"]))
    hi = _board_series(records, lambda r: max(s["energy_uj"] for s in r["energy_sensitivity"]))
    if board not in lo or not all(r["energy_sensitivity"] for r in records if r["feasible"]):
        return
    x, y0 = _sorted(*lo[board])
    _, y1 = _sorted(*hi[board])
    ax.fill_between(x, y0, y1, color=color, alpha=0.15, linewidth=0)
