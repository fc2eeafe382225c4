"""Experiments the paper's way: grid search on train -> val, refit on train+val, test over seeds.

    res = vx.sweep(["linear", "vpt-deep"], vit, "shapes-loc", base_lrs=(1, 5), lengths=(1, 10), seeds=(0, 1, 2))
    print(res.table()); res.plot()
    vx.wilcoxon(per_task_acc_a, per_task_acc_b)   # App. B, Table 10: across tasks
    vx.welch(seed_accs_a, seed_accs_b)            # App. B, Fig. 16: per task over seeds

Results are a plain list of dicts (no pandas) wrapped in a small ``Results`` object that prints
and plots.
"""
from __future__ import annotations

import itertools
import json
import statistics
from typing import Dict, Iterable, List, Optional, Sequence

from ..config import TrainConfig
from ..errors import ConfigError


def _g(x) -> str:
    return "auto" if x is None else f"{x:g}"


class Results:
    """Rows of an experiment (dicts) with a summary table and a plot."""

    def __init__(self, rows: Optional[List[Dict]] = None):
        self.rows: List[Dict] = list(rows or [])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def where(self, **match) -> "Results":
        return Results([r for r in self.rows if all(r.get(k) == v for k, v in match.items())])

    def summary(self) -> List[Dict]:
        """Mean and std of test accuracy per (task, method) over seeds, with the chosen settings."""
        out = []
        keys = sorted({(r["task"], r["method"]) for r in self.rows if r["stage"] == "test"})
        for task, method in keys:
            rs = [r for r in self.rows if r["stage"] == "test" and r["task"] == task and r["method"] == method]
            accs = [r["test_acc"] for r in rs]
            out.append({"task": task, "method": method, "mean": statistics.fmean(accs),
                        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs),
                        "base_lr": rs[0]["base_lr"], "weight_decay": rs[0]["weight_decay"],
                        "length": rs[0]["length"], "trainable": rs[0]["trainable"], "accs": accs})
        return out

    def table(self) -> str:
        lines = [f"{'task':<14}{'method':<14}{'test acc':>16}{'seeds':>6}{'base_lr':>9}{'wd':>8}{'p':>5}{'trainable':>11}"]
        for s in self.summary():
            lines.append(f"{s['task']:<14}{s['method']:<14}{100 * s['mean']:>9.1f} ± {100 * s['std']:<4.1f}"
                         f"{s['seeds']:>6}{_g(s['base_lr']):>9}{_g(s['weight_decay']):>8}{str(s['length']):>5}"
                         f"{s['trainable']:>11,}")
        return "\n".join(lines)

    def plot(self):
        """Bars: mean test accuracy ± std per method and task; dots: single seeds."""
        from ..analysis.theme import figure, finish
        summ = self.summary()
        tasks = sorted({s["task"] for s in summ})
        methods = list(dict.fromkeys(s["method"] for s in summ))
        fig, axes = figure(1, 1, (max(5, 1.6 * len(tasks) * max(1, len(methods)) / 2), 3.6))
        ax = axes[0, 0]
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            for i, t in enumerate(tasks):
                s = next((s for s in summ if s["task"] == t and s["method"] == m), None)
                if s is None:
                    continue
                x = i + (j - (len(methods) - 1) / 2) * width
                ax.bar(x, 100 * s["mean"], width, yerr=100 * s["std"], color=f"C{j}", label=m if i == 0 else None)
                ax.scatter([x] * len(s["accs"]), [100 * a for a in s["accs"]], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Tuned on val, refit on train+val, tested over seeds")
        return finish(fig)

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=1)

    def __repr__(self) -> str:
        return f"Results({len(self.rows)} rows)\n{self.table()}"


def _splits(task, backbone, n_train, seed):
    if isinstance(task, dict):
        missing = {"train", "val", "trainval", "test"} - set(task)
        if missing:
            raise ConfigError(f"task dict is missing splits {sorted(missing)}; give train, val, trainval and test")
        return task.get("name", "custom"), task
    from ..data.registry import load_task
    kw = dict(n=n_train) if n_train else {}
    splits = {s: load_task(task, s, backbone, seed=seed, **(kw if s == "train" else {})) for s in ("train", "val", "test")}
    splits["trainval"] = load_task(task, "trainval", backbone, seed=seed)
    if n_train:  # keep the train/val ratio of the protocol when train is capped
        from torch.utils.data import ConcatDataset
        splits["trainval"] = ConcatDataset([splits["train"], splits["val"]])
    return task, splits


def sweep(methods: Sequence[str] | str, backbone, task, *, base_lrs: Iterable[Optional[float]] = (None,),
          weight_decays: Iterable[float] = (1e-4,), lengths: Iterable[Optional[int]] = (None,),
          seeds: Sequence[int] = (0,), epochs: int = 5, batch_size: int = 32, n_train: Optional[int] = None,
          progress: bool = True, **make_kw) -> Results:
    """The VTAB protocol over a grid: tune on train -> val, refit the best on train+val, test per seed.

    Args:
        methods: one method name or several (see ``vx.METHODS``).
        backbone: the (frozen) timm ViT shared by the runs.
        task: a task name for ``vx.load_task`` or a dict with train/val/trainval/test datasets.
        base_lrs, weight_decays, lengths: the grid (paper: lr {50..0.05}, wd {0.01..0}, p {1..200});
            ``None`` means the method default. ``lengths`` only applies to prompt methods.
        seeds: refit seeds (paper: 3-5).
        epochs, batch_size: per run.
        n_train: cap the training set (fast mode).
        progress: print one line per run.
    """
    from ..methods.factory import make_model
    from ..methods.registry import parse_method
    from .loop import evaluate, train

    methods = [methods] if isinstance(methods, str) else list(methods)
    name, splits = _splits(task, backbone, n_train, seeds[0] if seeds else 0)
    num_classes = splits["test"].num_classes if hasattr(splits["test"], "num_classes") else make_kw.pop("num_classes")
    res = Results()
    for method in methods:
        prompt = parse_method(method)[0].has_prompts
        grid = list(itertools.product(base_lrs, weight_decays, lengths if prompt else (None,)))
        best = None
        for lr, wd, p in grid:
            model = make_model(method, backbone, num_classes, seed=seeds[0], **({"length": p} if p else {}), **make_kw)
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, base_lr=lr, weight_decay=wd, seed=seeds[0],
                              progress=False)
            hist = train(model, splits["train"], splits["val"], cfg)
            row = {"task": name, "method": method, "stage": "tune", "base_lr": lr, "weight_decay": wd,
                   "length": p, "seed": seeds[0], "val_acc": hist.best_val_acc, "status": hist.status}
            res.rows.append(row)
            if progress:
                print(f"tune  {name} {method:<12} lr={lr} wd={wd} p={p}: val {hist.best_val_acc:.3f}", flush=True)
            if best is None or (hist.best_val_acc or 0) > (best["val_acc"] or 0):
                best = row
        for seed in seeds:
            kw = {"length": best["length"]} if best["length"] else {}
            model = make_model(method, backbone, num_classes, seed=seed, **kw, **make_kw)
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, base_lr=best["base_lr"],
                              weight_decay=best["weight_decay"], seed=seed, progress=False)
            hist = train(model, splits["trainval"], None, cfg)
            acc = evaluate(model, splits["test"])["acc"]
            res.rows.append({"task": name, "method": method, "stage": "test", "base_lr": best["base_lr"],
                             "weight_decay": best["weight_decay"], "length": best["length"], "seed": seed,
                             "test_acc": acc, "trainable": model.parameter_report()["trainable"],
                             "status": hist.status})
            if progress:
                print(f"test  {name} {method:<12} seed={seed}: test {acc:.3f}", flush=True)
    return res


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Wilcoxon signed-rank test on paired scores (e.g. per-task accuracies of two methods)."""
    from scipy import stats
    if len(a) != len(b) or len(a) < 2:
        raise ConfigError(f"wilcoxon needs two paired lists of equal length >= 2, got {len(a)} and {len(b)}")
    r = stats.wilcoxon(a, b)
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue), "n": len(a),
            "mean_diff": statistics.fmean(x - y for x, y in zip(a, b))}


def welch(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Welch's unequal-variance t-test (e.g. one task's accuracies over seeds for two methods)."""
    from scipy import stats
    if len(a) < 2 or len(b) < 2:
        raise ConfigError(f"welch needs at least 2 values per group, got {len(a)} and {len(b)}")
    r = stats.ttest_ind(a, b, equal_var=False)
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue),
            "mean_a": statistics.fmean(a), "mean_b": statistics.fmean(b)}
