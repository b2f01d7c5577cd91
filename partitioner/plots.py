"""Figures comparing plans: chip-to-chip traffic and core utilization.

All functions draw with matplotlib's Agg backend and write a PNG file.
"""

from __future__ import annotations

import textwrap

import numpy as np

__all__ = ["plot_chip_traffic", "chip_traffic_figure", "format_count"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _traffic_norm(matrices):
    """A shared color scale for the heatmaps: log when values span > 2 decades."""
    from matplotlib.colors import LogNorm, Normalize

    values = np.concatenate([m[m > 0].ravel() for m in matrices] or [np.zeros(0)])
    if values.size == 0:
        return Normalize(vmin=0.0, vmax=1.0)
    lo, hi = float(values.min()), float(values.max())
    if hi / lo > 100:
        return LogNorm(vmin=lo, vmax=hi)
    return Normalize(vmin=0.0, vmax=hi)


def format_count(value):
    """A count or rate in one style for every title: thousands separated, no
    exponent (``25,856``, ``2,300``, ``12.5``, ``0.031``)."""
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _chip_ticks(ax, n_chips):
    step = max(1, int(np.ceil(n_chips / 8)))
    ticks = np.arange(0, n_chips, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)


def _draw_heatmap(ax, name, metrics, norm, cmap):
    """One plan's chip x chip inter-chip spike matrix; returns the image or None."""
    chips = f"{metrics.n_chips} chip{'s' if metrics.n_chips != 1 else ''}"
    ax.set_title(f"{name}\n{chips}, {format_count(metrics.interchip_spikes)} inter-chip "
                 f"spikes/step", fontsize="medium")
    ax.set_xlabel("Target chip")
    ax.set_ylabel("Source chip")
    data = np.ma.masked_less_equal(np.asarray(metrics.chip_spikes, dtype=float), 0.0)
    image = ax.imshow(data, norm=norm, cmap=cmap, interpolation="nearest",
                      origin="upper", aspect="equal")
    _chip_ticks(ax, metrics.n_chips)
    if data.count() == 0:
        ax.text(0.5, 0.5, "no inter-chip traffic", ha="center", va="center",
                transform=ax.transAxes, fontsize="small")
    return image


def _draw_utilization(ax, metrics, bins):
    """Histogram of each core's load (its fullest resource), in percent."""
    from matplotlib.ticker import MaxNLocator

    load = metrics.core_utilization.max(axis=1) * 100 if metrics.n_cores else np.zeros(0)
    ax.hist(load, bins=bins, color="C0", edgecolor="white")
    ax.axvline(metrics.mean_core_load * 100, color="C3", linestyle="--", linewidth=1.2,
               label=f"mean {metrics.mean_core_load * 100:.1f}%")
    ax.set_xlim(0, 100)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of cores
    ax.set_xlabel("Core load: fullest resource (%)")
    ax.set_ylabel("Cores")
    ax.set_title(f"{format_count(metrics.n_cores)} cores", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)


def _infeasible(ax, name, reason=None):
    """An empty panel that says the strategy found no plan (and why)."""
    ax.set_title(name, fontsize="medium")
    text = "no plan (infeasible)"
    if reason:
        text += "\n\n" + textwrap.fill(reason, width=34)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize="small", color="0.3")
    ax.set_axis_off()


def plot_chip_traffic(metrics_by_strategy, path, title=None, reasons=None):
    """Draw, per plan, its chip-to-chip traffic heatmap and its core utilization.

    The top row shows each plan's directed inter-chip spikes per step (source chip
    down, target chip across) on one shared color scale, whose colorbar sits just
    right of the last heatmap; the bottom row shows how full the plan's cores are
    (histogram of each core's fullest resource).

    Parameters
    ----------
    metrics_by_strategy : dict of str -> PlanMetrics or None
        Measures of each plan (`partitioner.metrics.evaluate`), in display order;
        None marks a strategy that found no plan.
    path : str or os.PathLike
        PNG file to write.
    title : str, optional
        Figure title.
    reasons : dict of str -> str, optional
        Why a strategy found no plan, shown in its panel.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot()
    fig = chip_traffic_figure(metrics_by_strategy, title, reasons)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def chip_traffic_figure(metrics_by_strategy, title=None, reasons=None):
    """The figure `plot_chip_traffic` writes (a `matplotlib.figure.Figure`)."""
    plt = _pyplot()
    names = list(metrics_by_strategy)
    if not names:
        raise ValueError("plot_chip_traffic needs at least one plan")
    reasons = reasons or {}
    n = len(names)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 1.4, 7.4), squeeze=False,
                             constrained_layout=True,
                             gridspec_kw={"height_ratios": [1.25, 1.0]})
    feasible = [m for m in metrics_by_strategy.values() if m is not None]
    norm = _traffic_norm([np.asarray(m.chip_spikes, dtype=float) for m in feasible])
    cmap = plt.get_cmap("viridis").with_extremes(bad="#f2f2f2")
    bins = np.linspace(0, 100, 21)
    image, image_ax = None, None
    for k, name in enumerate(names):
        metrics = metrics_by_strategy[name]
        if metrics is None:
            _infeasible(axes[0, k], name, reasons.get(name))
            _infeasible(axes[1, k], "")
            continue
        image = _draw_heatmap(axes[0, k], name, metrics, norm, cmap) or image
        image_ax = axes[0, k]
        _draw_utilization(axes[1, k], metrics, bins)
    has_traffic = any(np.any(np.asarray(m.chip_spikes) > 0) for m in feasible)
    if image is not None and has_traffic:
        # Right of the last heatmap's image, in its own coordinates: constrained
        # layout would put a colorbar for the whole row at the figure's edge, far from
        # the square heatmaps.
        cax = image_ax.inset_axes([1.04, 0.0, 0.05, 1.0])
        fig.colorbar(image, cax=cax, label="Inter-chip spikes per step\n(source -> target)")
    fig.suptitle(title or "Chip-to-chip traffic and core utilization per plan")
    return fig
