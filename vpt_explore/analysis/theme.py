"""How every figure of the course looks: one place for sizes, fonts and the finishing rules.

    vx.viz.set_theme("projector")        # large fonts and thick lines, for the back of a lecture room
    with vx.viz.theme("projector"):      # or for the figures of one block only
        fig = vx.viz.plot_history(hist)

Every plotting function of the package builds its Figure with :func:`figure` (its size grows with
the theme's font size, so large text still fits) and ends with :func:`finish`, which gives every
panel that has labelled artists its own legend, and integer ticks to axes that count epochs, blocks
or heads. A theme is a set of matplotlib rcParams: nothing here keeps state of its own.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Tuple

from ..errors import bad_choice

THEMES: Dict[str, Dict[str, object]] = {
    # matplotlib's defaults, with a legend font that stays readable in a notebook cell
    "notebook": {"font.size": 10.0, "axes.titlesize": 11.0, "axes.labelsize": 10.0, "legend.fontsize": 8.0,
                 "xtick.labelsize": 9.0, "ytick.labelsize": 9.0, "lines.linewidth": 1.5, "lines.markersize": 5.0},
    # readable from the back of a room: ~16 pt text, thick lines, large markers
    "projector": {"font.size": 16.0, "axes.titlesize": 17.0, "axes.labelsize": 16.0, "legend.fontsize": 13.0,
                  "xtick.labelsize": 14.0, "ytick.labelsize": 14.0, "lines.linewidth": 2.8,
                  "lines.markersize": 8.0, "axes.grid": True, "grid.alpha": 0.3},
}
BASE_FONT = 10.0                                   # the font size at which the package's figure sizes are set
COUNTED = ("epoch", "block", "head", "layer", "step")  # x/y labels whose axes count whole things


def _check(name: str) -> Dict[str, object]:
    if name not in THEMES:
        raise bad_choice("theme", name, list(THEMES))
    return THEMES[name]


def set_theme(name: str = "notebook") -> None:
    """Use theme ``name`` (``"notebook"`` or ``"projector"``) for every figure made from now on."""
    import matplotlib
    matplotlib.rcParams.update(_check(name))


@contextlib.contextmanager
def theme(name: str) -> Iterator[None]:
    """The theme ``name`` inside a ``with`` block only (``matplotlib.rc_context``)."""
    import matplotlib
    with matplotlib.rc_context(_check(name)):
        yield


def scale() -> float:
    """How much larger than at the base font figures are drawn now (1.0 for "notebook")."""
    import matplotlib
    return max(1.0, float(matplotlib.rcParams["font.size"]) / BASE_FONT)


def figure(rows: int = 1, cols: int = 1, size: Tuple[float, float] = (3.2, 3.0)):
    """A pyplot-free Figure and a (rows, cols) array of axes; ``size`` is one panel at the base font."""
    from matplotlib.figure import Figure
    s = scale()
    fig = Figure(figsize=(size[0] * cols * s, size[1] * rows * s), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def finish(fig, legends: bool = True):
    """The finishing rules every figure of the package follows; returns ``fig``.

    * a legend on every panel that has labelled artists and none yet (``legends=True``);
    * whole-number ticks on axes labelled epoch, block, head, layer or step.
    """
    from matplotlib.ticker import FixedLocator, MaxNLocator
    for ax in fig.axes:
        if not ax.get_visible() or not hasattr(ax, "get_legend_handles_labels"):
            continue
        handles, labels = ax.get_legend_handles_labels()
        if legends and ax.get_legend() is None and any(not lab.startswith("_") for lab in labels):
            ax.legend()
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if any(word in label.lower() for word in COUNTED) and not isinstance(
                    axis.get_major_locator(), FixedLocator):  # keep ticks a plot set itself
                axis.set_major_locator(MaxNLocator(integer=True))
    return fig
