"""Why scale matters: the same protocol on backbones of growing size, read from the numbers.

* ``scale_rows`` / ``format_scale`` / ``plot_scale``: VPT-deep - linear and VPT-deep - full per VTAB
  group on the 0.8M ``tiny-dino`` and the 22M DINOv2-S/14 (the two shipped offline references, on
  the tasks both have run) and on ViT-B/16 (86M: the paper's Table 1, VTAB-1k), against parameters.
* ``paper_statements``: what the paper says about model scale (Fig. 4, Table 5) and data scale
  (Fig. 3), labelled as the paper's; it gives no per-size numbers we could confirm, so none ship.
* ``study`` / ``run_data_scale`` / ``format_data_scale`` / ``plot_data_scale``: the shipped scale
  study (``assets/scale_study.json``): the token probe (``analysis/token_probe.py``) on both offline
  backbones and a data-scale run on DINOv2-S, made once by ``regenerate`` (command in the file).
* ``takeaways``: the lesson as sentences built from those numbers (never written by hand).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ...backbones.weights import atomic_write_json
from ...errors import ConfigError, DataError, MissingFileError
from .offline_runs import (ASSETS, MAIN_BACKBONE, MAIN_IMG_SIZE, REFERENCE_FILE, SMALL_BACKBONE, SMALL_IMG_SIZE,
                           SMALL_REFERENCE_FILE, TASK_ORDER, cell, offline, reference_file, tuned_lr)

GROUPS = ("natural", "specialized", "structured")
PAIRS = (("vpt-deep", "linear"), ("vpt-deep", "full"))
# backbone parameters without a head, counted from the architectures (the offline ones at the reference's
# resolution: DINOv2-S/14 at 56 px has a 4x4+1 position table, hence 21.5M, not 22.1M); tests recount them
PARAMS = {"tiny-dino": 809_856, "dinov2-s14-offline": 21_536_640, "ViT-B/16": 85_798_656,
          "ViT-L/16": 303_301_632, "ViT-H/14": 630_764_800}
OFFLINE = ((SMALL_BACKBONE, SMALL_IMG_SIZE), (MAIN_BACKBONE, MAIN_IMG_SIZE))  # (name, px) of the two references
LABELS = {"tiny-dino": "tiny-dino", "dinov2-s14-offline": "DINOv2-S/14"}
SCALE_FILE = ASSETS / "scale_study.json"
COMMAND = ('python -c "import vpt_explore as vx; from vpt_explore.analysis.reference import scale; '
           'scale.regenerate(vx.train, vx.evaluate)"')
DATA_TASK, DATA_FRACTIONS, DATA_METHODS = "shapes-loc", (0.1, 0.25, 0.5), ("linear", "vpt-deep", "full")
PAPER_STATEMENTS = (
    ("Fig. 4", "Paper (Fig. 4; ViT-B/16, ViT-L/16, ViT-H/14 pretrained on ImageNet-21k, VTAB-1k): at all three "
     "sizes VPT-deep is above Full on Natural and Structured and on par with Full on Specialized: its advantage "
     "over Full holds as the backbone grows."),
    ("Table 5", "Paper (Table 5; ConvNets): on ConvNeXt-B (88M) VPT improves on the other parameter-efficient "
     "methods; on the smaller ResNet-50 (23M) that advantage fades."),
    ("Fig. 3", "Paper (Fig. 3; ViT-B/16, FGVC, 10% to 80% of each training set): other parameter-efficient methods "
     "lead Full only when data is scarce and lose that lead as data grows, while VPT-deep stays above Full at "
     "every data size."),
)
# second public sources for the statements above (the paper's figures give no numbers to cite)
STATEMENT_SOURCES = ("Chinese reading notes on the VPT paper (paper_vpt.json source 'cn_notes_results')",
                     "English reading notes on the VPT paper (search index file id 8615708342)")


def _label(key: str) -> str:
    return f"{LABELS.get(key, key)} ({PARAMS[key] / 1e6:.1f}M)"


def points() -> List[Dict]:
    """The backbones of the lesson, smallest first: two offline references and the paper's ViT-B/16."""
    return [{"backbone": SMALL_BACKBONE, "label": _label(SMALL_BACKBONE), "params": PARAMS[SMALL_BACKBONE],
             "source": "offline reference", "path": SMALL_REFERENCE_FILE},
            {"backbone": MAIN_BACKBONE, "label": _label(MAIN_BACKBONE), "params": PARAMS[MAIN_BACKBONE],
             "source": "offline reference", "path": REFERENCE_FILE},
            {"backbone": "ViT-B/16", "label": _label("ViT-B/16"), "params": PARAMS["ViT-B/16"],
             "source": "paper, Table 1 (VTAB-1k)", "path": None}]


def _means(path) -> Dict:
    try:
        return {(c["task"], c["method"]): c["mean"] for c in offline(path)["cells"]}
    except MissingFileError:
        return {}


def _gap(means: Dict, a: str, b: str, tasks: Sequence[str]) -> Optional[float]:
    return round(statistics.fmean(means[(t, a)] - means[(t, b)] for t in tasks), 2) if tasks else None


def scale_rows(pairs: Sequence = PAIRS, matched: bool = True) -> List[Dict]:
    """One row per (pair, backbone, group): ``gap`` = mean of a - b (points) over the group's tasks.

    With ``matched`` an offline backbone's gap counts only the tasks on which *every* offline
    backbone has run both methods (a like-for-like comparison while a reference is still being
    made); ``own_gap`` / ``own_tasks`` use all the tasks that backbone has run. A gap is None when
    no task qualifies ("not run yet"). The paper's rows use its Table 1 group means (VTAB-1k).
    """
    from ...data.registry import list_tasks
    from .paper_numbers import paper_group_means
    group = {t.name: t.group for t in list_tasks()}
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    pts = points()
    means = {p["backbone"]: _means(p["path"]) for p in pts if p["path"]}
    paper = paper_group_means()
    rows = []
    for a, b in pairs:
        ran = {k: {t for (t, m) in c if m == a and (t, b) in c} for k, c in means.items()}
        common = set.intersection(*ran.values()) if ran else set()
        for p in pts:
            base = {k: p[k] for k in ("backbone", "label", "params", "source")}
            for g in GROUPS:
                if p["path"] is None:
                    va, vb = paper.get(a, {}).get(g), paper.get(b, {}).get(g)
                    gap = None if va is None or vb is None else round(va - vb, 2)
                    rows.append({**base, "a": a, "b": b, "group": g, "gap": gap, "tasks": [], "own_gap": gap,
                                 "own_tasks": []})
                    continue
                own = sorted((t for t in ran[p["backbone"]] if group.get(t) == g), key=lambda t: order.get(t, 99))
                use = [t for t in own if t in common] if matched else own
                rows.append({**base, "a": a, "b": b, "group": g, "gap": _gap(means[p["backbone"]], a, b, use),
                             "tasks": use, "own_gap": _gap(means[p["backbone"]], a, b, own), "own_tasks": own})
    return rows


def _signed(v: Optional[float]) -> str:
    return "not run yet" if v is None else f"{v:+.1f}"


def _cell(r: Dict) -> str:
    if r["gap"] is not None:
        return f"{r['gap']:+.1f}"
    return "not run yet" if r["own_gap"] is None else f"({r['own_gap']:+.1f})"


def format_scale(rows: Optional[List[Dict]] = None) -> str:
    """``scale_rows`` as a text table: one block per pair, one line per group, one column per backbone."""
    rows = scale_rows() if rows is None else rows
    pts = list(dict.fromkeys((r["backbone"], r["label"], r["source"]) for r in rows))
    lines, notes = [], []
    for a, b in dict.fromkeys((r["a"], r["b"]) for r in rows):
        head = f"{a + ' - ' + b:<24}" + "".join(f"{lab:>26}" for _, lab, _ in pts)
        lines += [head, f"{'(points)':<24}" + "".join(f"{src:>26}" for _, _, src in pts), "-" * len(head)]
        for g in GROUPS:
            by = {r["backbone"]: r for r in rows if (r["a"], r["b"], r["group"]) == (a, b, g)}
            lines.append(f"{g:<24}" + "".join(f"{_cell(by[k]) if k in by else '-':>26}" for k, _, _ in pts))
            for k, lab, src in pts:
                r = by.get(k)
                if r and src == "offline reference" and r["own_tasks"] and r["own_tasks"] != r["tasks"]:
                    notes.append(f"  {a} - {b}, {g}: {lab} alone, over {', '.join(r['own_tasks'])}: "
                                 f"{_signed(r['own_gap'])}")
        tasks = {g: next((r["tasks"] for r in rows if (r["a"], r["b"], r["group"]) == (a, b, g) and r["tasks"]), [])
                 for g in GROUPS}
        lines.append("offline tasks compared: " + "; ".join(f"{g}: {', '.join(t) or 'none on every backbone yet'}"
                                                              for g, t in tasks.items()))
        lines.append("")
    if notes:
        lines += ["(In parentheses:) one offline backbone alone, on tasks the other has not run yet, so not "
                  "comparable across sizes:"] + notes + [""]
    lines.append("Offline reference: this package's suite, VTAB-1k protocol, 3 seeds. Paper: ViT-B/16 on VTAB-1k "
                 "(Table 1): other data and pretraining, so compare directions, not values.")
    return "\n".join(lines)


def plot_scale(rows: Optional[List[Dict]] = None):
    """VPT-deep - linear and VPT-deep - full per group against backbone parameters (log axis); a Figure.

    Offline references on the tasks both sizes ran: filled markers joined by a line; on tasks only one
    size has run so far: faded markers; the paper's ViT-B/16: hollow squares (VTAB-1k, Table 1);
    ViT-L/16 and ViT-H/14: dotted lines (Fig. 4 shows them; no numbers ship).
    """
    from matplotlib.lines import Line2D

    from ..theme import figure, finish
    rows = scale_rows() if rows is None else rows
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in rows))
    fig, axes = figure(1, len(pairs), (4.3, 3.6))
    for ax, (a, b) in zip(axes[0], pairs):
        for i, g in enumerate(GROUPS):
            sel = [r for r in rows if (r["a"], r["b"], r["group"]) == (a, b, g)]
            off = [r for r in sel if r["source"] == "offline reference"]
            both = [(r["params"], r["gap"]) for r in off if r["gap"] is not None]
            if both:
                ax.plot(*zip(*both), "-o", color=f"C{i}")
            alone = [(r["params"], r["own_gap"]) for r in off if r["gap"] is None and r["own_gap"] is not None]
            if alone:
                ax.plot(*zip(*alone), "o", color=f"C{i}", alpha=0.35)
            missing = [r["params"] for r in off if r["own_gap"] is None]
            if missing:
                ax.plot(missing, [0] * len(missing), "x", color="0.45", ms=7)
            for r in sel:
                if r["source"] != "offline reference" and r["gap"] is not None:
                    ax.plot(r["params"], r["gap"], "s", mfc="none", mec=f"C{i}", ms=8, mew=1.6)
        for key in ("ViT-L/16", "ViT-H/14"):
            ax.axvline(PARAMS[key], color="0.6", ls=":", lw=1)
            ax.text(PARAMS[key], 0.03, f"{key}: Fig. 4, no numbers ", transform=ax.get_xaxis_transform(),
                    rotation=90, fontsize=7, va="bottom", ha="right", color="0.35")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(4e5, 1.2e9)
        ax.set(xlabel="backbone parameters (log scale)", ylabel=f"{a} - {b} (points)", title=f"{a} - {b}")
    handles = [Line2D([], [], color=f"C{i}", marker="o", label=g) for i, g in enumerate(GROUPS)] + [
        Line2D([], [], color="0.3", marker="o", label="offline reference, tasks run on both sizes"),
        Line2D([], [], color="0.3", marker="o", ls="", alpha=0.35, label="offline, this size alone so far"),
        Line2D([], [], color="0.3", marker="s", mfc="none", ls="", label="paper, ViT-B/16 (Table 1)"),
        Line2D([], [], color="0.45", marker="x", ls="", label="offline, not run yet (drawn at 0)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=8)
    return finish(fig, legends=False)


def paper_statements() -> str:
    """The paper's statements on model and data scale (Figs. 3-4, Table 5), each labelled; text only."""
    return "\n".join([text for _, text in PAPER_STATEMENTS] +
                     ["(Restated by: " + "; ".join(STATEMENT_SOURCES) + ".)"])


# --------------------------------------------------------------------------- the shipped study
def study(path: Optional[os.PathLike] = None) -> Dict:
    """The shipped scale study: ``{"probe": {"rows": [...]}, "data_scale": {"meta": {...}, "rows": [...]}}``."""
    path = Path(path or SCALE_FILE)
    if not path.exists():
        raise MissingFileError(f"scale study file {str(path)!r} does not exist; regenerate it with `{COMMAND}`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"scale study file {str(path)!r} is corrupt (not JSON: {e}); restore it from git") from None
    for part in ("probe", "data_scale"):
        if not isinstance(data.get(part, {}), dict) or not isinstance(data.get(part, {}).get("rows", []), list):
            raise DataError(f"scale study file {str(path)!r}: '{part}' must be an object with a 'rows' list")
    return data


def picked_lr(task: str, method: str, path: Optional[os.PathLike] = None):
    """``tuned_lr``, or the lr a reference still in progress has already searched (its ``partial`` cell),
    else ``"auto"``."""
    lr = tuned_lr(task, method, path)
    if lr == "auto":
        try:
            lr = offline(path).get("partial", {}).get(f"{task}|{method}", {}).get("base_lr") or "auto"
        except (MissingFileError, DataError):
            pass
    return lr


def run_data_scale(train: Callable, evaluate: Callable, vit, task: str = DATA_TASK,
                   fractions: Sequence[float] = DATA_FRACTIONS, methods: Sequence[str] = DATA_METHODS,
                   seed: int = 0, train_kwargs: Optional[Dict] = None, n_test: Optional[int] = 500, length: int = 10,
                   reference: Optional[os.PathLike] = None, done: Optional[Dict] = None,
                   on_row: Optional[Callable[[Dict], None]] = None, log: Callable = print) -> Dict:
    """Train each method on fractions of the 800 training images; test accuracy (%) on ``n_test`` images.

    ``train`` and ``evaluate`` are ``vx.train`` and ``vx.evaluate`` (passed in: this layer sits below
    training). The recipe is the offline reference's (10 epochs, batch 32, weight decay 1e-4, p=10,
    bf16 where native) unless ``train_kwargs`` (e.g. ``P.train_kwargs()``) says otherwise; the lr of
    each method is the one the backbone's reference picked (``picked_lr``; a search where it has none).
    The largest point of the study is the reference itself (1000 images, 3 seeds: ``reference_points``).
    ``done``: an earlier (partial) result of the same setting whose rows are kept, not rerun; ``on_row``
    is called with the result so far after every run (to save it). Paper analogue: Fig. 3.
    """
    from ...backbones.load import backbone_name
    from ...config import TrainConfig
    from ...data.registry import load_task
    from ...methods.factory import make_model
    from ...methods.registry import parse_method
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ConfigError(f"fractions: {f!r} must be a number in (0, 1], e.g. 0.1 for 80 of the 800 images")
    name, px = backbone_name(vit), int(vit.patch_embed.img_size[0])
    ref = Path(reference) if reference else reference_file(name, px)
    kw = {"epochs": 10, "batch_size": 32, "weight_decay": 1e-4, "amp": "auto", **(train_kwargs or {}),
          "progress": False, "seed": seed}
    test = load_task(task, "test", vit, n=n_test, seed=seed)
    meta = {"backbone": name, "img_size": px, "task": task, "seed": seed, "n_test": len(test), "length": length,
            **{k: kw[k] for k in ("epochs", "batch_size", "weight_decay", "amp")},
            "lr": f"picked by the search of {ref.name}"}
    same = done is not None and all(done.get("meta", {}).get(k) == v for k, v in meta.items() if k != "amp")
    result, val = {"meta": meta, "rows": list(done["rows"]) if same else []}, None
    for f in fractions:
        data = load_task(task, "train", vit, fraction=f, seed=seed)
        for m in methods:
            if any((r["fraction"], r["method"]) == (f, m) for r in result["rows"]):
                continue
            lr = picked_lr(task, m, ref)
            if lr == "auto" and val is None:
                val = load_task(task, "val", vit, seed=seed)
            extra = {"length": length} if parse_method(m)[0].has_prompts else {}
            model, t0 = make_model(m, vit, test.num_classes, seed=seed, **extra), time.time()
            hist = train(model, data, val if lr == "auto" else None, TrainConfig(**{**kw, "base_lr": lr}))
            acc = round(100 * evaluate(model, test)["acc"], 2)
            spiked = any(w.startswith("loss spiked") for w in getattr(hist, "warnings", []))
            result["rows"].append({"fraction": f, "n_train": len(data), "method": m, "base_lr": hist.base_lr,
                                   "acc": acc, "status": getattr(hist, "status", None), "loss_spiked": spiked,
                                   "amp": getattr(hist, "amp", None), "seconds": round(time.time() - t0, 1)})
            log(f"{task} {m:<9} {int(round(100 * f)):>3}% ({len(data)} images): {acc:.1f}%  "
                f"(base_lr {hist.base_lr:g}, {time.time() - t0:.0f} s)")
            if on_row:
                on_row(result)
    meta["seconds"] = round(sum(r.get("seconds", 0) for r in result["rows"]), 1)
    return result


def reference_points(result: Optional[Dict]) -> List[Dict]:
    """The study's largest point: the backbone's offline reference on the same task (train800val200 = 1000
    images, mean of 3 seeds), one row per method of ``result`` that the reference has run."""
    meta = (result or {}).get("meta", {})
    if not meta.get("backbone"):
        return []
    path = reference_file(meta["backbone"], meta.get("img_size"))
    rows = []
    for m in dict.fromkeys(r["method"] for r in result.get("rows", [])):
        try:
            c = cell(meta["task"], m, path)
        except MissingFileError:
            c = None
        if c is not None:
            rows.append({"fraction": None, "n_train": 1000, "method": m, "acc": c["mean"], "source": "reference"})
    return rows


def _by_n(rows: Sequence[Dict]) -> Dict:
    return {(r["n_train"], r["method"]): r for r in rows}


def format_data_scale(yours: Optional[Dict] = None, path: Optional[os.PathLike] = None) -> str:
    """The shipped data-scale study as a table, with "your run" (``run_data_scale``'s result) beside it."""
    shipped = study(path).get("data_scale", {})
    meta = shipped.get("meta", {})
    if not shipped.get("rows"):
        return f"No data-scale study ships yet; make it with `{COMMAND}`."
    ship = _by_n(shipped["rows"] + reference_points(shipped))
    same = yours is not None and all(yours["meta"].get(k) == meta.get(k) for k in ("backbone", "img_size", "task"))
    mine = _by_n(yours["rows"]) if same else {}
    methods = list(dict.fromkeys(m for _, m in ship))
    head = f"{'train images':<26}" + "".join(f"{m + ' (shipped | yours)':>28}" for m in methods)
    lines = [f"{meta.get('backbone')} at {meta.get('img_size')} px, {meta.get('task')}, {meta.get('epochs')} epochs, "
             f"seed {meta.get('seed')}, test accuracy (%) on {meta.get('n_test')} images", head, "-" * len(head)]
    for n in sorted({n for n, _ in ship}):
        cells = []
        for m in methods:
            s, y = ship.get((n, m)), mine.get((n, m))
            flag = "*" if s is not None and s.get("loss_spiked") else " "
            ship_acc, your_acc = ("-" if v is None else format(v["acc"], ".1f") for v in (s, y))
            cells.append(f"{ship_acc:>18}{flag} | {your_acc:>6}")
        first = next(r for (k, _), r in ship.items() if k == n)
        label = f"{n} (reference, 3 seeds)" if first.get("source") == "reference" else \
            f"{n} ({int(round(100 * first['fraction']))}%)"
        lines.append(f"{label:<26}" + "".join(cells))
    if any(r.get("loss_spiked") for r in shipped["rows"]):
        lines.append("* the training loss spiked (more than 1.5x its start): the learning rate, picked by the "
                     "reference's search on 800 images, is too high for this run")
    if yours is not None and not same:
        m = yours["meta"]
        lines.append(f"your run used {m.get('backbone')} at {m.get('img_size')} px on {m.get('task')}: not comparable "
                     f"with the shipped study; yours: " + ", ".join(
                         f"{r['method']} {r['n_train']} images {r['acc']:.1f}" for r in yours["rows"]))
    return "\n".join(lines)


def plot_data_scale(yours: Optional[Dict] = None, path: Optional[os.PathLike] = None):
    """Test accuracy against training images (log axis): shipped lines (the last point is the reference),
    your points on top (when they are on the shipped study's backbone and task); a Figure."""
    from ..theme import figure, finish
    shipped = study(path).get("data_scale", {})
    meta = shipped.get("meta", {})
    same = yours is not None and all(yours["meta"].get(k) == meta.get(k) for k in ("backbone", "img_size", "task"))
    fig, axes = figure(1, 1, (5.4, 4.0))
    ax = axes[0, 0]
    ship, ref = shipped.get("rows", []), reference_points(shipped)
    for i, m in enumerate(dict.fromkeys(r["method"] for r in ship)):
        pts = sorted((r["n_train"], r["acc"]) for r in ship if r["method"] == m)
        ax.plot(*zip(*pts), "-o", color=f"C{i}", label=f"{m} (shipped)")
        end = [(r["n_train"], r["acc"]) for r in ref if r["method"] == m]
        if end:                                                     # the reference: 1000 images, 3 seeds
            ax.plot(*zip(pts[-1], end[0]), ":s", color=f"C{i}", markevery=[1])
        spiked = [(r["n_train"], r["acc"]) for r in ship if r["method"] == m and r.get("loss_spiked")]
        if spiked:
            ax.plot(*zip(*spiked), "x", color="k", ms=9, label="loss spiked" if not ax.get_legend_handles_labels()[1]
                    or "loss spiked" not in ax.get_legend_handles_labels()[1] else None)
        mine = sorted((r["n_train"], r["acc"]) for r in (yours or {}).get("rows", []) if r["method"] == m and same)
        if mine:
            ax.plot(*zip(*mine), "*", color=f"C{i}", ms=13, mec="k", label=f"{m} (yours)")
    if ref:
        ax.plot([], [], ":s", color="0.4", label="1000: the reference (3 seeds)")
    ax.set_xscale("log")
    ax.set(xlabel="training images (log scale; 1000 = the reference)", ylabel="test accuracy (%)",
           title=f"data scale: {LABELS.get(meta.get('backbone'), meta.get('backbone'))}, {meta.get('task')}")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False, fontsize=8)
    return finish(fig, legends=False)


def _shift(a: str, b: str, lo: float, hi: float) -> str:
    """How a - b changed from ``lo`` to ``hi``, said by whose favour it moved."""
    d = hi - lo
    return "stays within 2 points" if abs(d) <= 2 else f"moves {d:+.1f} points in {a if d > 0 else b}'s favour"


def _standing(a: str, signs: Sequence) -> str:
    """' a is ahead on X, level (within 1 point) on Y and behind on Z.' when more than one of them applies."""
    parts = {"ahead on": [lab for lab, v in signs if v > 1],
             "level (within 1 point) on": [lab for lab, v in signs if abs(v) <= 1],
             "behind on": [lab for lab, v in signs if v < -1]}
    said = [f"{k} {', '.join(v)}" for k, v in parts.items() if v]
    return f" {a} is " + (", ".join(said[:-1]) + " and " + said[-1]) + "." if len(said) > 1 else ""


def _scale_sentences(rows: List[Dict]) -> List[str]:
    out = []
    for a, b in dict.fromkeys((r["a"], r["b"]) for r in rows):
        for g in GROUPS:
            sel = [r for r in rows if (r["a"], r["b"], r["group"]) == (a, b, g)]
            off = [r for r in sel if r["source"] == "offline reference" and r["gap"] is not None]
            if len(off) < 2 and g != "structured":
                continue  # one offline size alone shows no trend; the structured group is always reported
            parts, signs = [], []
            for r in sel:
                if r["gap"] is not None:
                    where = f"offline: {', '.join(r['tasks'])}" if r["tasks"] else r["source"]
                    parts.append(f"{r['gap']:+.1f} on {r['label']} [{where}]")
                    signs.append((r["label"], r["gap"]))
                elif r["own_gap"] is not None:
                    parts.append(f"{r['own_gap']:+.1f} on {r['label']} [offline: {', '.join(r['own_tasks'])}; "
                                 f"not yet run on the other offline backbone]")
                    signs.append((r["label"], r["own_gap"]))
                else:
                    parts.append(f"not run yet on {r['label']}")
            text = f"{a} - {b}, {g} group: " + "; ".join(parts) + "."
            if len(off) >= 2:
                lo, hi = off[0], off[-1]
                text += (f" From the smaller to the larger offline backbone ({hi['params'] / lo['params']:.0f}x the "
                         f"parameters, same tasks) the difference {_shift(a, b, lo['gap'], hi['gap'])}.")
            out.append(text + _standing(a, signs))
    return out


def _probe_sentence(row: Dict) -> str:
    acc, ref = row["acc"], reference_file(row["backbone"], row.get("img_size"))
    if "cls" not in acc or "patches" not in acc:
        return f"{row['task']}, {row['backbone']}: the probe was run without 'cls' or 'patches'; no comparison."
    try:
        deep = cell(row["task"], "vpt-deep", ref)
    except MissingFileError:
        deep = None
    who = f"{row['task']}, {_label(row['backbone']) if row['backbone'] in PARAMS else row['backbone']}"
    text = (f"{who}: a linear probe on the frozen tokens reads {acc['patches']:.1f}% from the concatenated patch "
            f"tokens and {acc['cls']:.1f}% from [CLS]")
    d = None if deep is None else deep["mean"]
    tail = "VPT-deep: not run yet" if d is None else f"VPT-deep reaches {d:.1f}% (offline reference)"
    if acc["patches"] >= acc["cls"] + 10:
        if d is None:
            return f"{text}: the answer is in the patch tokens; {tail}."
        if d >= acc["patches"] - 5:
            return f"{text}: the answer is in the patch tokens and the prompts route it to [CLS]: {tail}."
        return (f"{text}: the answer is in the patch tokens, but the prompts do not route it to [CLS]: {tail}, "
                f"{acc['patches'] - d:.1f} points below the patch probe.")
    return (f"{text}: here the concatenated patch tokens hold no more than [CLS] for a linear read-out "
            f"(mean of the patches: {acc.get('patch-mean', float('nan')):.1f}%); {tail}.")


def _data_sentences(result: Dict) -> List[str]:
    pts = _by_n((result or {}).get("rows", []) + reference_points(result))
    if not pts:
        return []
    meta, out = result["meta"], []
    for other in ("full", "linear"):
        ns = sorted(n for n, m in pts if m == "vpt-deep" and (n, other) in pts)
        if len(ns) < 2:
            continue
        lo, hi = ns[0], ns[-1]
        g_lo = pts[(lo, "vpt-deep")]["acc"] - pts[(lo, other)]["acc"]
        g_hi = pts[(hi, "vpt-deep")]["acc"] - pts[(hi, other)]["acc"]
        src = "the reference, 3 seeds; " if pts[(hi, "vpt-deep")].get("source") == "reference" else ""
        steps = {n: math.ceil(n / meta.get("batch_size", 32)) * meta.get("epochs", 10) for n in (lo, hi)}
        out.append(f"Data scale ({LABELS.get(meta['backbone'], meta['backbone'])}, {meta['task']}): vpt-deep - {other} "
                   f"is {g_lo:+.1f} points with {lo} training images ({steps[lo]} optimizer steps) and "
                   f"{g_hi:+.1f} with {hi} ({src}{steps[hi]} steps): the difference "
                   f"{_shift('vpt-deep', other, g_lo, g_hi)}.")
    for m in dict.fromkeys(r["method"] for r in result.get("rows", [])):
        bad = sorted((r for r in result["rows"] if r["method"] == m and r.get("loss_spiked")),
                     key=lambda r: r["n_train"])
        if bad:
            out.append(f"Caution: {m}'s training loss spiked with {' and '.join(str(r['n_train']) for r in bad)} "
                       f"training images (base_lr {bad[0]['base_lr']:g}, picked by the reference's search on 800 "
                       f"images): those points measure that learning rate as much as the amount of data.")
    return out


def takeaways(rows: Optional[List[Dict]] = None, probe: Optional[Sequence[Dict]] = None,
              data_scale: Optional[Dict] = None, path: Optional[os.PathLike] = None) -> List[str]:
    """What the student should take away, as sentences built from the numbers (scale, probe, data scale).

    Defaults: ``scale_rows()`` and the shipped study's probe rows and data-scale run. Cells not run
    yet are said to be so; a trend is only claimed where two sizes have numbers.
    """
    shipped = None
    if probe is None or data_scale is None:
        try:
            shipped = study(path)
        except MissingFileError:
            shipped = {}
    probe = shipped.get("probe", {}).get("rows", []) if probe is None else probe
    data_scale = shipped.get("data_scale", {}) if data_scale is None else data_scale
    return (_scale_sentences(scale_rows() if rows is None else rows) + [_probe_sentence(r) for r in probe]
            + _data_sentences(data_scale))


def regenerate(train: Callable, evaluate: Callable, parts: Sequence[str] = ("probe", "data_scale"),
               path: Optional[os.PathLike] = None, tasks: Sequence[str] = ("shapes-loc", "count"),
               threads: Optional[int] = 1) -> Dict:
    """Recompute the shipped study (``parts``) and write it (atomic): the probe on both offline backbones
    and ``tasks`` (about 1.5 min on one CPU core), and ``run_data_scale`` on DINOv2-S at 56 px (6-10 min; it
    saves after every run and a rerun resumes: rows already in the file for the same setting are kept, so
    delete the file's ``data_scale`` entry to recompute them)."""
    import torch

    path = Path(path or SCALE_FILE)
    data = study(path) if path.exists() else {"schema": 1}
    machine = (f"{os.cpu_count()} CPU cores, {threads} thread(s), torch {torch.__version__}, "
               f"python {platform.python_version()}")
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        _regenerate_parts(data, parts, path, tasks, train, evaluate, threads, machine)
    finally:
        torch.set_num_threads(before)       # the caller's setting, also after an error or Ctrl-C
    atomic_write_json(data, path)
    return data


def _regenerate_parts(data: Dict, parts, path: Path, tasks, train: Callable, evaluate: Callable, threads,
                      machine: str) -> None:
    from ...backbones.load import load_backbone
    from ..token_probe import token_probe
    if "probe" in parts:
        rows = []
        for name, px in OFFLINE:
            rows += [token_probe(load_backbone(name, img_size=px), t) for t in tasks]
        data["probe"] = {"command": COMMAND, "machine": machine, "rows": rows}
    if "data_scale" in parts:
        vit = load_backbone(MAIN_BACKBONE, img_size=MAIN_IMG_SIZE)

        def save(result: Dict) -> None:  # after every run: a stopped regeneration resumes where it was
            data["data_scale"] = dict(result, meta=dict(result["meta"], command=COMMAND, machine=machine))
            atomic_write_json(data, path)
        save(run_data_scale(train, evaluate, vit, train_kwargs={"threads": threads},
                            done=data.get("data_scale"), on_row=save))

