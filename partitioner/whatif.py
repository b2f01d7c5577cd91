"""What-if studies: how a model fares on other boards and chip counts.

`whatif` partitions one `TrafficGraph` for every (board, chip count) asked for, measures
each plan with `partitioner.metrics.evaluate`, and varies the cost constants nobody
has published: the energy of a spike crossing a chip-to-chip link
(`EnergyModel.interchip_spike_pj`), to show how much the energy estimate depends on
it, and the time constants of `EnergyModel.UNPUBLISHED_TIME`, to show how much the
step time and its bottleneck depend on them. Sweep points run in parallel processes.
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
    "TIME_SENSITIVITY_FACTORS",
    "time_sensitivity",
    "bottleneck_label",
]

#: Multiples of the default inter-chip spike energy tried by default.
SENSITIVITY_FACTORS = (0.5, 1.0, 2.0, 5.0)
#: Default inter-chip spike energies (pJ) of the sensitivity study.
SENSITIVITY_PJ = tuple(f * EnergyModel().interchip_spike_pj for f in SENSITIVITY_FACTORS)
#: Multiples of each unpublished time constant tried by the step-time sensitivity study.
TIME_SENSITIVITY_FACTORS = (0.5, 2.0, 5.0)
#: Default sweeps go from the chip lower bound to at most this many chips above it
#: (and always include the board's full size).
MAX_EXTRA_CHIPS = 8

#: Numeric fields of a record (None when the point is infeasible).
NUMERIC_FIELDS = (
    "chips_used", "cores", "mean_core_utilization_pct", "interchip_axons",
    "interchip_spikes", "max_link_load", "hop_weighted_cost", "time_us", "energy_uj",
    "objective_value", "bound", "gap", "block_bound_us",
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
        "time_sensitivity": [],
        "bottleneck": None,
        "regime": None,
    }
    record.update({name: None for name in NUMERIC_FIELDS})
    return record


def run_point(graph, board, n_chips, strategy="metis", seed=0, spread=True,
              interchip_pj=SENSITIVITY_PJ, lower_bound=0, options=None,
              objective="spikes"):
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
    objective : str
        Objective for `partitioner.partition` (e.g. ``"time"``).

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
                         seed=seed, spread=spread, objective=objective, **(options or {}))
    except PartitionerError as e:
        record["reason"] = " ".join(str(e).split())
        record["runtime_s"] = time.perf_counter() - t0
        return record
    metrics = evaluate(graph, plan, board)
    record.update(plan_numbers(plan, metrics))
    record["time_sensitivity"] = time_sensitivity(metrics, board)
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
        chips, cores, utilization (%), cores over a limit (a plan that would not build),
        the most output axon entries of any core, inter-chip axons and spikes per step, max link
        load, hop-weighted cost, time (us) and energy (uJ) per step, objective, bound
        and gap; the step time's bottleneck (short text, see `bottleneck_label`),
        its regime (``"compute"``, ``"memory"``, ``"traffic"`` or ``"sync"``), the
        step time below which no plan can go without smaller blocks
        (``block_bound_us``), and each term of the max-affine step time
        (``time_terms_us``).
    """
    m = metrics

    def number(x):
        return None if x is None else float(x)

    return dict(
        chips=int(plan.n_chips),
        cores=int(plan.n_cores),
        mean_core_utilization_pct=100.0 * float(m.mean_core_load),
        cores_over_limit=int(m.cores_over_limit),
        max_core_out_entries=int(m.core_out_entries.max(initial=0)),
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
        bottleneck=bottleneck_label(m.bottleneck),
        regime=m.regime,
        block_bound_us=float(m.block_bound_ns) * 1e-3,
        time_terms_us={k: float(v) * 1e-3 for k, v in m.time_terms.items()},
    )


def bottleneck_label(bottleneck):
    """A short text naming what sets the step time, for tables.

    Parameters
    ----------
    bottleneck : dict
        `PlanMetrics.bottleneck`.

    Returns
    -------
    str
        Without spaces, so tables stay easy to read and parse: the core and its term
        with the number of blocks on the core (``"core12:synops(5blk)"``), the
        chip-to-chip link by its mesh positions (``"link(0,1)->(0,2)"``), or
        ``"barrier"`` when nothing works.
    """
    kind = bottleneck.get("kind")
    if kind == "core":
        n = len(bottleneck.get("blocks", ()))
        return f"core{bottleneck['index']}:{bottleneck['term']}({n}blk)"
    if kind == "link":
        src, dst = bottleneck["from"], bottleneck["to"]
        return f"link({src[0]},{src[1]})->({dst[0]},{dst[1]})"
    return "barrier"


def time_sensitivity(metrics, board, factors=TIME_SENSITIVITY_FACTORS):
    """Step time of a measured plan when each unpublished time constant changes.

    The max-affine step time depends on a plan only through the peak work of each
    term and the longest chip-to-chip route (`partitioner.metrics.step_time`), so
    the plan is not measured again.

    Parameters
    ----------
    metrics : PlanMetrics
    board : BoardSpec
        The board the plan was measured on (its constants are the defaults).
    factors : iterable of float
        Multiples of the time each constant stands for: the constant itself for the
        ``*_ns`` constants, its inverse for ``interchip_link_spikes_per_us`` (a
        factor of 2 halves the link's rate), so a factor above 1 is always slower.

    Returns
    -------
    list of dict
        ``{"constant", "factor", "value", "time_us", "bottleneck_term"}`` for each
        constant of `EnergyModel.UNPUBLISHED_TIME` and factor.
    """
    from partitioner.metrics import step_time

    out = []
    for name in board.energy.UNPUBLISHED_TIME:
        for f in factors:
            value = getattr(board.energy, name)
            value = value / float(f) if name.endswith("_per_us") else value * float(f)
            energy = board.energy.replace(**{name: value})
            t, _, _, binding = step_time(metrics.peak_work, metrics.max_hops, energy)
            out.append({"constant": name, "factor": float(f), "value": float(value),
                        "time_us": t * 1e-3, "bottleneck_term": binding})
    return out


def _init_worker(graph):
    global _WORKER_GRAPH
    _WORKER_GRAPH = graph


def _run_in_worker(kwargs):
    return run_point(_WORKER_GRAPH, **kwargs)


# --------------------------------------------------------------------- sweep
def whatif(graph, boards=("nahuku32",), chips=None, strategy="metis",
           interchip_pj=SENSITIVITY_PJ, workers=None, progress=True, seed=0,
           spread=True, objective="spikes", **options):
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
    objective : str
        Objective for `partitioner.partition`; ``"time"`` uses the cores of every
        chip to shorten the predicted step time.
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
        ``runtime_s``, ``energy_sensitivity``: a list of
        ``{"interchip_spike_pj", "energy_uj"}``, one per value of ``interchip_pj``,
        the step time's ``bottleneck`` and ``regime``, ``block_bound_us``,
        ``time_terms_us`` and ``time_sensitivity`` (see `time_sensitivity`).
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
                              lower_bound=lb, options=options, objective=objective))
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
    """Plot a what-if sweep: step time, inter-chip traffic and energy vs chips used,
    and the trade-off of chips against step time and energy.

    One line per board. The step-time panel shades the range the step time spans
    when the unpublished time constants vary (`time_sensitivity`); the energy panel
    the range over the inter-chip spike energies of the sensitivity study. The
    fourth panel puts every plan at its step time and energy, labelled with the
    chips it uses; hollow markers are plans whose busiest chip-to-chip link, not a
    core, sets the step time.

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

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6), constrained_layout=True)
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
    for ax, (field, ylabel, panel_title) in zip(axes[:3], panels):
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
            if field == "time_us":
                _shade_time_sensitivity(ax, records, board, style["color"])
        if same:
            ax.text(0.98, 0.02, "dashed: same as " + "; ".join(
                f"{b} = {a}" for b, a in same.items()), transform=ax.transAxes,
                ha="right", va="bottom", fontsize="x-small", color="0.3")
        ax.set_xlabel("Chips used")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.grid(alpha=0.3)
        _chip_axis(ax, all_x)
    _draw_tradeoff(axes[3], records, boards, styles)
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


def _shade_time_sensitivity(ax, records, board, color):
    """Shade the step-time range over the unpublished time constants."""
    def span(fn):
        return _board_series(records, lambda r: fn([r["time_us"]] + [
            t["time_us"] for t in r.get("time_sensitivity") or ()]))

    lo, hi = span(min), span(max)
    if board not in lo:
        return
    x, y0 = _sorted(*lo[board])
    _, y1 = _sorted(*hi[board])
    ax.fill_between(x, y0, y1, color=color, alpha=0.12, linewidth=0)


def _draw_tradeoff(ax, records, boards, styles):
    """Step time against energy per step, one line per board through its chip counts."""
    for board in boards:
        points = sorted(
            {r["chips_used"]: r for r in records
             if r["feasible"] and r["board"] == board}.values(),
            key=lambda r: r["chips_used"])
        if not points:
            continue
        style = dict(styles[board])
        x = [r["time_us"] for r in points]
        y = [r["energy_uj"] for r in points]
        ax.plot(x, y, color=style["color"], linewidth=style["linewidth"], alpha=0.6,
                zorder=style["zorder"], label=board)
        for r, xi, yi in zip(points, x, y):
            hollow = r.get("regime") == "traffic"
            ax.plot([xi], [yi], marker=style["marker"], color=style["color"],
                    markersize=style["markersize"], zorder=style["zorder"],
                    markerfacecolor="white" if hollow else style["color"])
            ax.annotate(str(r["chips_used"]), (xi, yi), textcoords="offset points",
                        xytext=(4, 4), fontsize="x-small", color=style["color"])
    ax.set_xlabel("Estimated time per step (µs)")
    ax.set_ylabel("Estimated energy per step (µJ)")
    ax.set_title("Chips vs step time and energy")
    ax.grid(alpha=0.3)
    if any(r["feasible"] for r in records):
        ax.text(0.98, 0.98, "labels: chips used\nhollow: link-bound",
                transform=ax.transAxes, ha="right", va="top", fontsize="x-small")
