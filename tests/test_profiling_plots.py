"""metrics/profiling_plots.py: lecture 05's plots draw the tables' medians on honest axes."""

import matplotlib.axes
import matplotlib.pyplot as plt
import pandas as pd
import pytest

import musicgen_edu as mg
from musicgen_edu.metrics.breakdown import BREAKDOWN_STAGES
from musicgen_edu.metrics.profiling_plots import (
    plot_breakdown,
    plot_kv_cache,
    plot_rtf,
    plot_scaling,
)

DURATIONS, BATCHES = [0.1, 0.2], [1, 2]


@pytest.fixture(scope="module")
def table(gen):
    return mg.profile_generation(gen, "calm lo-fi piano", durations=DURATIONS,
                                 batch_sizes=BATCHES, repeats=1, warmup=0, seed=3)


@pytest.fixture(scope="module")
def stages(gen):
    return mg.breakdown(gen, "calm lo-fi piano", duration=0.1, warmup=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plots_return_axes(table, stages):
    ax = plot_scaling(table)
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.lines) == len(DURATIONS)
    assert list(ax.lines[0].get_xdata()) == BATCHES
    ax = plot_rtf(table)
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.lines) == len(BATCHES) + 1
    ax = plot_breakdown(stages)
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.patches) == len(BREAKDOWN_STAGES)
    assert isinstance(plot_scaling(table, y="item_steps_per_s"), matplotlib.axes.Axes)
    with pytest.raises(mg.ConfigError, match="timing column"):
        plot_scaling(table, y="nope")
    with pytest.raises(mg.ConfigError, match="lacks columns"):
        plot_breakdown(table)


def test_plots_split_lines_by_backend(table):
    other = table.assign(backend="transformers", steps_per_s=table.steps_per_s / 2)
    ax = plot_scaling(pd.concat([table, other]))
    assert len(ax.lines) == 2 * len(DURATIONS)
    assert "native" in ax.get_legend().get_texts()[0].get_text()


def test_time_axes_start_at_zero(table):
    """Lecture 05 drew a 0.7-0.9 ms wobble of the cached step on a log axis: a V. Axes that
    compare sizes now start at 0."""
    kv = pd.DataFrame({"length": [1, 16, 64, 256], "cached_step_s": [9e-4, 7e-4, 7.5e-4, 9e-4],
                       "recompute_s": [9e-4, 1e-3, 1.5e-3, 3e-3]})
    ax = plot_kv_cache(kv)
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["1", "16", "64", "256"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.9, 0.7, 0.75, 0.9])  # ms
    for plot in (plot_scaling, plot_rtf):
        assert plot(table).get_ylim()[0] == 0
    with pytest.raises(mg.ConfigError, match="lacks columns"):
        plot_kv_cache(table)
