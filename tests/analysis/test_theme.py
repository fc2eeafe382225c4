"""Figure themes: the projector theme is larger everywhere, every panel gets a legend, counts get
whole-number ticks, and an unknown theme is a clear error."""
import matplotlib
import pytest

import vpt_explore as vx
from vpt_explore.analysis import theme as th


def _history(epochs=3):
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_acc": 0.3 * e / 3,
             "val_acc": 0.25 * e / 3} for e in range(1, epochs + 1)]


def test_projector_theme_is_larger_and_scoped_to_its_block():
    small = vx.viz.plot_history(_history())
    with vx.viz.theme("projector"):
        big = vx.viz.plot_history(_history())
        assert matplotlib.rcParams["font.size"] == 16
    assert matplotlib.rcParams["font.size"] != 16  # restored after the block
    assert big.get_size_inches()[0] == pytest.approx(1.6 * small.get_size_inches()[0])
    label = big.axes[0].xaxis.label
    assert label.get_fontsize() == 16 and big.axes[0].lines[0].get_linewidth() == pytest.approx(2.8)


def test_every_panel_has_a_legend_and_epochs_are_whole_numbers():
    fig = vx.viz.plot_history({"a": _history(3), "b": _history(2)})
    for ax in fig.axes:
        assert ax.get_legend() is not None, ax.get_ylabel()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_finish_leaves_unlabelled_panels_and_fixed_ticks_alone():
    fig, axes = th.figure(1, 2)
    axes[0, 0].plot([0, 1], [0, 1])                      # no label: no legend
    axes[0, 1].plot([0.5, 1.5], [0, 1], label="run")
    axes[0, 1].set(xlabel="epoch", xticks=[0.5, 1.5])    # ticks set by the plot itself stay
    th.finish(fig)
    assert axes[0, 0].get_legend() is None and axes[0, 1].get_legend() is not None
    assert list(axes[0, 1].get_xticks()) == [0.5, 1.5]


def test_lab_curves_follow_the_theme():
    from vpt_explore.apps.lab_results import curves_png

    class H:  # the History fields curves_png reads
        steps = [{"step": i, "epoch": 1 + i // 4, "loss": 1.0 / (i + 1)} for i in range(8)]
        rows = [dict(r, epoch=r["epoch"]) for r in _history(2)]
    small = len(curves_png(H, "t"))
    with vx.viz.theme("projector"):
        assert len(curves_png(H, "t")) > small  # a larger picture (more pixels to encode)


def test_unknown_theme_names_the_field_and_the_choices():
    with pytest.raises(vx.ConfigError, match=r"theme='beamer'.*'notebook', 'projector'"):
        vx.viz.set_theme("beamer")
