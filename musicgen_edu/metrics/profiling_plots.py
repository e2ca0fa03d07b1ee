"""Plots of lecture 05's latency tables: RTF, batch scaling, stage shares and the KV cache.

Each function takes the table that :mod:`~musicgen_edu.metrics.profiling` returns and draws
the medians of its timed runs (warm-up runs left out) on ``ax``, or on a new figure. The axes
are kept honest: a y axis that starts at 0 wherever the reader compares sizes, so noise of a
few percent is not drawn as a cliff. matplotlib is imported on first use.
"""

from __future__ import annotations

from ..errors import ConfigError
from .profiling import SETUP_COLUMNS, TIMING_COLUMNS, profile_summary

__all__ = ["plot_scaling", "plot_rtf", "plot_breakdown", "plot_kv_cache"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    return ax


def _integer_ticks(ax, values) -> None:
    """Ticks at the measured values, labelled as plain numbers (not 2^4 on a log axis)."""
    ticks = sorted({int(v) for v in values})
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.minorticks_off()


def _lines(summary, x: str, always: str):
    """Split a summary into one line per value of ``always`` and of every set-up that varies."""
    varied = [k for k in SETUP_COLUMNS if k in summary.columns and summary[k].nunique() > 1]
    keys = varied + [always]
    for values, part in summary.groupby(keys, sort=False):
        label = " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
        yield label, part.sort_values(x)


def plot_scaling(df, ax=None, y: str = "steps_per_s"):
    """Decoder steps/s (median of the timed runs) vs batch size, one line per duration.

    ``y="item_steps_per_s"`` plots throughput instead: frames made per second, all items.
    The y axis starts at 0, so "flat" and "grows" read at their true size.
    """
    summary, ax = profile_summary(df), _axes(ax)
    if y not in TIMING_COLUMNS:
        raise ConfigError(f"y={y!r} is not a timing column; choose one of {TIMING_COLUMNS}.")
    for label, part in _lines(summary, "batch_size", "duration"):
        ax.plot(part["batch_size"], part[y], marker="o", label=f"{label} s")
    ax.set_xscale("log", base=2)
    _integer_ticks(ax, summary["batch_size"])
    ax.set_ylim(bottom=0)
    ax.set(xlabel="batch size", ylabel=y.replace("_", " "), title="batch-size scaling")
    ax.legend(title="duration")
    return ax


def plot_rtf(df, ax=None):
    """Real-time factor (median) vs duration, one line per batch size; RTF 1 = real time."""
    summary, ax = profile_summary(df), _axes(ax)
    for label, part in _lines(summary, "duration", "batch_size"):
        ax.plot(part["duration"], part["rtf"], marker="o", label=f"B = {label}")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="real time")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="seconds of audio", ylabel="RTF (compute s / audio s)", title="real-time factor")
    ax.legend()
    return ax


def plot_breakdown(df, ax=None):
    """Horizontal bars: each stage's share of the time of a :func:`breakdown`."""
    missing = sorted({"stage", "share", "seconds"} - set(df.columns))
    if missing:
        raise ConfigError(f"the table lacks columns {missing}; pass breakdown's result.")
    ax = _axes(ax)
    ax.barh(df["stage"], 100 * df["share"])
    for i, (share, sec) in enumerate(zip(df["share"], df["seconds"])):
        ax.text(100 * share, i, f" {sec * 1e3:.0f} ms", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="share of the time (%)", title="where one generation's time goes")
    return ax


def plot_kv_cache(df, ax=None):
    """Milliseconds for step n, cached vs recomputed, from :func:`kv_cache_comparison`.

    Position n on a log axis (the lengths usually grow geometrically); time on a linear axis
    from 0: a cached step that wobbles between 0.7 and 0.9 ms is flat, and a log time axis
    would draw that wobble as a V.
    """
    missing = sorted({"length", "cached_step_s", "recompute_s"} - set(df.columns))
    if missing:
        raise ConfigError(f"the table lacks columns {missing}; pass kv_cache_comparison's result.")
    ax = _axes(ax)
    ax.plot(df["length"], 1e3 * df["cached_step_s"], marker="o", label="with the KV cache")
    ax.plot(df["length"], 1e3 * df["recompute_s"], marker="o", label="recomputing n positions")
    ax.set_xscale("log", base=2)
    _integer_ticks(ax, df["length"])
    ax.set_ylim(bottom=0)
    ax.set(xlabel="position n", ylabel="ms for step n", title="KV cache vs recomputing")
    ax.legend()
    return ax
