"""What the offline reference says about the paper's findings, as text built from its numbers.

Notebooks, the demo and the README print these instead of writing findings by hand, so a
sentence can never disagree with the shipped reference: ``format_directions`` (group means next
to the paper's, with the gaps that carry its findings), ``gap_sentence`` (one comparison with its
numbers), ``targets`` / ``format_targets`` (the targets the README states, met or not) and
``format_reference_markdown`` (the README's table).
"""
from __future__ import annotations

from typing import Dict, List, Optional

from .compare import PAPER_ANALOG
from .offline_runs import METHODS, TASK_ORDER


DIRECTION_METHODS = ("linear", "vpt-shallow", "vpt-deep", "full")
GROUPS = ("natural", "specialized", "structured")


def format_directions(path=None) -> str:
    """Group means of the offline reference next to the paper's (Table 1), and the gaps that carry
    the paper's findings: VPT-deep - linear, VPT-deep - VPT-shallow, VPT-deep - full."""
    from .offline_runs import group_means
    from .paper_numbers import paper_group_means
    ours, paper = group_means(path), paper_group_means()

    def val(table, m, g):
        return table.get(m, {}).get(g)

    def fmt(v, signed=False):
        return f"{'-':>9}" if v is None else (f"{v:>+9.1f}" if signed else f"{v:>9.1f}")

    short = {"natural": "natural", "specialized": "special.", "structured": "struct."}
    head = f"{'':<22}" + "".join(f"{short[g]:>9}" for g in GROUPS) + "   |" + "".join(f"{short[g]:>9}" for g in GROUPS)
    lines = [f"{'':<22}{'offline reference':>27}   |{'paper, ViT-B/16 (Table 1)':>27}", head, "-" * len(head)]
    for m in DIRECTION_METHODS:
        lines.append(f"{m:<22}" + "".join(fmt(val(ours, m, g)) for g in GROUPS) + "   |" +
                     "".join(fmt(val(paper, m, g)) for g in GROUPS))
    for a, b in (("vpt-deep", "linear"), ("vpt-deep", "vpt-shallow"), ("vpt-deep", "full")):
        gap = lambda t, g: None if val(t, a, g) is None or val(t, b, g) is None else val(t, a, g) - val(t, b, g)
        lines.append(f"{a + ' - ' + b:<22}" + "".join(fmt(gap(ours, g), True) for g in GROUPS) + "   |" +
                     "".join(fmt(gap(paper, g), True) for g in GROUPS))
    return "\n".join(lines)


def gap_sentence(a: str, b: str, task: Optional[str] = None, group: Optional[str] = None, path=None) -> str:
    """One sentence, with its numbers, comparing methods ``a`` and ``b`` in the offline reference.

    Notebooks print these instead of writing findings into markdown, so a sentence can never
    disagree with the shipped numbers. Give a ``task`` (mean +- sd over seeds) or a ``group`` (mean
    over the group's tasks that were run); with a VTAB analog, the paper's numbers follow.
    """
    from ...errors import ConfigError
    from .offline_runs import cell, group_means
    from .paper_numbers import paper_group_means, paper_value
    if (task is None) == (group is None):
        raise ConfigError("gap_sentence needs exactly one of task= or group=")
    if task is not None:
        ca, cb = cell(task, a, path), cell(task, b, path)
        if ca is None or cb is None:
            return f"On {task}, the offline reference has no {a if ca is None else b} run yet."
        gap = ca["mean"] - cb["mean"]
        text = (f"On {task}, {a} scores {ca['mean']:.1f} +- {ca['sd']:.1f}% and {b} {cb['mean']:.1f} +- "
                f"{cb['sd']:.1f}% (offline reference, {len(ca['test_acc'])} seeds): {gap:+.1f} points.")
        analog = PAPER_ANALOG.get(task)
        try:
            pa, pb = paper_value(a, analog), paper_value(b, analog)
            text += f" Paper, ViT-B/16 on {analog}: {pa:.1f} vs {pb:.1f} ({pa - pb:+.1f})."
        except Exception:  # no analog task, or the paper has no number for one of the methods
            pass
        return text
    ours = group_means(path)
    ga, gb = ours.get(a, {}).get(group), ours.get(b, {}).get(group)
    if ga is None or gb is None:
        return f"In the {group} group, the offline reference has no {a if ga is None else b} run yet."
    text = (f"In the {group} group, {a} averages {ga:.1f}% and {b} {gb:.1f}% over the tasks run (offline "
            f"reference): {ga - gb:+.1f} points.")
    pg = paper_group_means()
    if group in pg.get(a, {}) and group in pg.get(b, {}):
        text += (f" Paper, ViT-B/16 (Table 1): {pg[a][group]:.1f} vs {pg[b][group]:.1f} "
                 f"({pg[a][group] - pg[b][group]:+.1f}).")
    return text


def targets(path=None) -> List[Dict]:
    """Issue #16's targets, checked on the offline reference: one row per target with its numbers and verdict.

    1. VPT-deep beats linear by >= 15 points on shapes-loc and on count, and beats it in every group.
    2. VPT-deep >= VPT-shallow on the structured group.
    3. VPT-deep within 3 points of full fine-tuning, or above it, in at least two of the three groups,
       training <= 2% of the parameters.
    A target whose cells have not all been run is reported as "not run".
    """
    from .offline_runs import cell, group_means, offline
    g = group_means(path)

    def gm(m, grp):
        return g.get(m, {}).get(grp)

    rows = []
    for task in ("shapes-loc", "count"):
        d, lin = cell(task, "vpt-deep", path), cell(task, "linear", path)
        gap = None if d is None or lin is None else d["mean"] - lin["mean"]
        rows.append({"target": f"VPT-deep - linear >= 15 on {task}", "value": gap,
                     "met": None if gap is None else gap >= 15})
    for grp in GROUPS:
        gap = None if gm("vpt-deep", grp) is None or gm("linear", grp) is None else gm("vpt-deep", grp) - gm("linear", grp)
        rows.append({"target": f"VPT-deep > linear on the {grp} group", "value": gap,
                     "met": None if gap is None else gap > 0})
    gap = None if gm("vpt-deep", "structured") is None or gm("vpt-shallow", "structured") is None \
        else gm("vpt-deep", "structured") - gm("vpt-shallow", "structured")
    rows.append({"target": "VPT-deep >= VPT-shallow on the structured group", "value": gap,
                 "met": None if gap is None else gap >= 0})
    gaps = {grp: None if gm("vpt-deep", grp) is None or gm("full", grp) is None else gm("vpt-deep", grp) - gm("full", grp)
            for grp in GROUPS}
    close = [grp for grp, v in gaps.items() if v is not None and v >= -3]
    known = [v for v in gaps.values() if v is not None]
    deep = [c for c in offline(path)["cells"] if c["method"] == "vpt-deep"]
    full = {c["task"]: c for c in offline(path)["cells"] if c["method"] == "full"}
    share = max((c["trainable"] / full[c["task"]]["trainable"] for c in deep if c["task"] in full), default=None)
    rows.append({"target": "VPT-deep within 3 points of full (or above) in >= 2 of 3 groups",
                 "value": ", ".join(f"{k}: {v:+.1f}" for k, v in gaps.items() if v is not None) or None,
                 "met": None if len(known) < 3 and len(close) < 2 else len(close) >= 2})
    rows.append({"target": "VPT-deep trains <= 2% of the parameters (incl. head, vs full)",
                 "value": None if share is None else f"{100 * share:.2f}%",
                 "met": None if share is None else share <= 0.02})
    return rows


def format_targets(path=None) -> str:
    """``targets`` as text lines: MET / NOT MET / NOT RUN, with the numbers."""
    lines = []
    for r in targets(path):
        v = r["value"]
        v = "-" if v is None else (f"{v:+.1f} points" if isinstance(v, float) else v)
        status = {True: "MET    ", False: "NOT MET", None: "NOT RUN"}[r["met"]]
        lines.append(f"{status}  {r['target']}: {v}")
    return "\n".join(lines)


def format_reference_markdown(path=None) -> str:
    """The offline reference as a markdown table (mean +- sd per task, group means), for the README."""
    from ...data.registry import list_tasks
    from .offline_runs import group_means, offline
    data = offline(path)
    group = {t.name: t.group for t in list_tasks()}
    by = {(c["task"], c["method"]): c for c in data["cells"]}
    tasks = [t for t in TASK_ORDER if any((t, m) in by for m in METHODS)]
    tasks.sort(key=lambda t: GROUPS.index(group[t]) if group.get(t) in GROUPS else 9)
    g = group_means(path)
    head = "| method | " + " | ".join(f"{t} ({group[t][:4]}.)" for t in tasks) + " | " + \
        " | ".join(f"**{grp}**" for grp in GROUPS) + " | trainable (first task) |"
    lines = [head, "|" + "---|" * (len(tasks) + len(GROUPS) + 2)]
    for m in METHODS:
        cells = [by.get((t, m)) for t in tasks]
        if not any(cells):
            continue
        tr = next(c["trainable"] for c in cells if c)
        lines.append(f"| {m} | " + " | ".join("-" if c is None else f"{c['mean']:.1f} ± {c['sd']:.1f}" for c in cells)
                     + " | " + " | ".join(f"{g[m][grp]:.1f}" if grp in g.get(m, {}) else "-" for grp in GROUPS)
                     + f" | {tr:,} |")
    return "\n".join(lines)


def key_sentences(path=None) -> List[str]:
    """The reference's headline comparisons as sentences with their numbers (``gap_sentence``):
    VPT-deep against linear on shapes-loc and count and per group, against VPT-shallow on the
    structured group, and against full fine-tuning per group; only those whose cells have run."""
    from .offline_runs import cell, group_means
    g = group_means(path)
    out = []
    for task in ("shapes-loc", "count"):
        if cell(task, "vpt-deep", path) and cell(task, "linear", path):
            out.append(gap_sentence("vpt-deep", "linear", task=task, path=path))
    for b, groups in (("linear", GROUPS), ("vpt-shallow", ("structured",)), ("full", GROUPS)):
        for grp in groups:
            if grp in g.get("vpt-deep", {}) and grp in g.get(b, {}):
                out.append(gap_sentence("vpt-deep", b, group=grp, path=path))
    return out


def readme_block(path=None) -> str:
    """The README's "offline reference" block, made from the shipped file (a test keeps them equal)."""
    from .offline_runs import complete_tasks, offline
    data = offline(path)
    meta = data["meta"]
    p = meta["protocol"]
    size = f" at {meta['img_size']} px" if meta.get("img_size") else ""
    amp = f", autocast {meta['amp']}" if meta.get("amp") else ""
    running = sorted(data.get("partial", {}))
    running = f" Cells in progress (saved after each seed): {', '.join(running)}." if running else ""
    return "\n".join([
        f"Backbone `{meta['backbone']}`{size} (fingerprint `{meta['fingerprint'][:12]}`), VTAB-1k protocol: "
        f"`base_lr` picked by `base_lr='auto'` on train800 -> val200, refit on train800val200 for "
        f"{p['epochs']} epochs (batch {p['batch_size']}, p={p['length']}, weight decay {p['weight_decay']}) with "
        f"seeds {meta['seeds']}, test accuracy (%) on 500 images, mean ± sd over the seeds; "
        f"{meta['machine']}{amp}. Regenerate (resumable): `{meta['command']}`. A dash is a cell not run yet; "
        f"group means (bold) count only the tasks on which every method in the table has run "
        f"({', '.join(complete_tasks(path)) or 'none yet'}).{running}",
        "", format_reference_markdown(path), "",
        "Group means next to the paper's (Table 1, ViT-B/16 on VTAB-1k):", "", "```",
        format_directions(path), "```", "", "The course's targets, checked on these numbers:", "", "```",
        format_targets(path), "```", "", "The same, in sentences printed from the numbers:", ""]
        + [f"- {line}" for line in key_sentences(path)])
