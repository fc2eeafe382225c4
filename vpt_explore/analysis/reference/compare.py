""""Your run" next to the references: the offline suite's (3 seeds) and the paper's (ViT-B/16).

    rows = [{"task": "count", "method": "vpt-deep", "acc": 0.61}, ...]   # what a notebook just trained
    print(vx.reference.format_compare(rows))
    vx.reference.plot_compare(rows)            # bars: yours, the offline reference (mean +- sd)
    vx.reference.plot_compare(None)            # PRECOMPUTED: the reference alone, in a second

The paper's numbers are for ViT-B/16 on VTAB-1k, not for this suite: ``PAPER_ANALOG`` pairs an
offline task with the VTAB task it imitates, and the table shows that task's paper number beside
ours, labelled as the paper's.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..theme import figure, finish
from .offline_runs import METHODS, TASK_ORDER, offline, verdict

# offline task -> the VTAB-1k task it imitates (for the paper's number beside ours)
PAPER_ANALOG = {"shapes-loc": "dsprites_loc", "shapes-ori": "dsprites_ori", "count": "clevr_count",
                "dist": "clevr_dist", "textures": "dtd", "mnist": "svhn", "digits": "svhn"}


def _pct(acc: float) -> float:
    return 100 * acc if acc <= 1.0 else acc


def compare(yours: Optional[Sequence[Dict]] = None, tasks: Optional[Sequence[str]] = None,
            methods: Optional[Sequence[str]] = None, path=None) -> List[Dict]:
    """One row per (task, method): yours (%), the offline reference mean/sd/seeds, the verdict, the paper's analog.

    Args:
        yours: rows with ``task``, ``method`` and ``acc`` (a fraction or a percentage); None for
            the reference alone.
        tasks, methods: restrict the rows (default: what ``yours`` covers, else the whole reference).
        path: the reference of your run's backbone (``P.reference`` in a notebook; default the
            DINOv2-S one of the ``"cpu"`` profile). A run on tiny-dino compares with tiny-dino's.
    """
    from .paper_numbers import paper_value
    ref = {(c["task"], c["method"]): c for c in offline(path)["cells"]}
    mine = {(r["task"], r["method"]): _pct(r["acc"]) for r in (yours or [])}
    keys = list(mine) if mine else list(ref)
    if tasks is not None:
        keys = [k for k in keys if k[0] in tasks]
    if methods is not None:
        keys = [k for k in keys if k[1] in methods]
    rows = []
    for task, method in keys:
        c = ref.get((task, method))
        row = {"task": task, "method": method, "yours": mine.get((task, method)),
               "ref_mean": c["mean"] if c else None, "ref_sd": c["sd"] if c else None,
               "ref_seeds": len(c["test_acc"]) if c else 0, "verdict": None, "paper_task": PAPER_ANALOG.get(task),
               "paper": None}
        if c is not None and row["yours"] is not None:
            row["verdict"] = verdict([row["yours"]], c)
        if row["paper_task"]:
            try:
                row["paper"] = paper_value(method, row["paper_task"])
            except Exception:  # the paper has no number for this method (e.g. adapter)
                row["paper"] = None
        rows.append(row)
    return rows


def format_compare(yours: Optional[Sequence[Dict]] = None, **kw) -> str:
    """``compare`` as a text table (what a notebook or the demo prints)."""
    rows = compare(yours, **kw)
    meta = offline(kw.get("path"))["meta"]
    where = f"{meta['backbone']}" + (f" at {meta['img_size']} px" if meta.get("img_size") else "")
    head = (f"{'task':<14}{'method':<13}{'yours':>7}{'reference (3 seeds)':>21}  {'verdict':<8}"
            f"{'paper, ViT-B/16 on':>20}")
    lines = [head, "-" * len(head)]
    for r in rows:
        y = f"{r['yours']:.1f}" if r["yours"] is not None else "-"
        ref = f"{r['ref_mean']:.1f} +- {r['ref_sd']:.1f}" if r["ref_mean"] is not None else "not run yet"
        pap = f"{r['paper']:.1f} ({r['paper_task']})" if r["paper"] is not None else "-"
        lines.append(f"{r['task']:<14}{r['method']:<13}{y:>7}{ref:>21}  {r['verdict'] or '-':<8}{pap:>20}")
    lines.append(f"reference: this package's offline suite on {where}, VTAB-1k protocol; verdict: within "
                 "mean +- max(2 sd, 2 points). paper: the VTAB task each offline task imitates (Table 1), "
                 "a different backbone and data: compare directions, not values.")
    return "\n".join(lines)


def plot_compare(yours: Optional[Sequence[Dict]] = None, title: str = "Your run vs the offline reference", **kw):
    """Bars per task: the reference mean +- sd (hatched) and yours (solid) for each method; a Figure."""
    rows = compare(yours, **kw)
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in rows)] or sorted({r["task"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)] or sorted({r["method"] for r in rows})
    by = {(r["task"], r["method"]): r for r in rows}
    fig, axes = figure(1, 1, (max(6.0, 2.2 * len(tasks) + 2), 4.6))
    ax = axes[0, 0]
    width = 0.8 / max(1, len(methods))
    colours = [f"C{i}" for i in range(len(methods))]
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
        ref = [by.get((t, m), {}).get("ref_mean") for t in tasks]
        sd = [by.get((t, m), {}).get("ref_sd") or 0 for t in tasks]
        ax.bar(xs, [r or 0 for r in ref], width, yerr=sd, color="none", edgecolor=colours[j], hatch="//",
               capsize=2, label=f"{m} (reference)")
        mine = [by.get((t, m), {}).get("yours") for t in tasks]
        if any(v is not None for v in mine):
            ax.bar(xs, [v or 0 for v in mine], width * 0.5, color=colours[j], label=f"{m} (yours)")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(ncols=min(4, 2 * len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return finish(fig)

