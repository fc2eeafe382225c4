"""``python -m vpt_explore demo``: the paper's headline finding, trained on a laptop CPU in minutes.

By default it reruns seed 0 of the offline reference's cells for linear, VPT-deep and full
fine-tuning on ``shapes-loc`` (the dSprites-loc-like task where the paper sees VPT-deep's largest
gain, Table 1) with the ``"cpu"`` profile's backbone, DINOv2-S/14 at 56 px: the reference
protocol's refit (train800val200, 10 epochs, batch 32, p=10, bf16 where the CPU has it, at the lr
the reference's ``base_lr="auto"`` search picked), tested on 500 images. It prints each run next
to the reference's 3-seed mean (``format_compare``), the reference's group means next to the
paper's, the course's targets, and saves a figure. ``--tasks``, ``--methods``, ``--n-train``,
``--epochs`` and ``--backbone tiny-dino`` change the run (``--n-train`` below 1000 trains on the
train split and validates on val). Nothing touches the network.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

DEFAULT_METHODS = ("linear", "vpt-deep", "full")
ALL_METHODS = ("linear", "mlp-3", "bias", "adapter", "vpt-shallow", "vpt-deep", "full")
DEFAULT_TASKS = ("shapes-loc",)
REFIT_IMAGES = 1000  # train800val200: the reference protocol's refit set


def _backbone(name: Optional[str], img_size: Optional[int]):
    """The demo's backbone: the "cpu" profile's (DINOv2-S/14 at 56 px) unless another is named."""
    from ..backbones.load import load_backbone
    from ..training.profiles import PROFILES
    cpu = PROFILES["cpu"]
    name = name or cpu.backbone
    if name == cpu.backbone:
        return load_backbone(name, img_size=img_size or cpu.img_size)
    return load_backbone(name, img_size=img_size) if img_size else load_backbone(name)


def run(methods=DEFAULT_METHODS, tasks=DEFAULT_TASKS, backbone: Optional[str] = None, epochs: int = 10,
        n_train: int = REFIT_IMAGES, n_test: int = 500, batch_size: int = 32, seed: int = 0,
        length: int = 10, out: str = "demo_out", progress: bool = False, base_lr="reference",
        img_size: Optional[int] = None, amp: Optional[str] = "auto", threads="auto") -> List[Dict]:
    """Train every method on every task; return one result dict per (task, method).

    ``base_lr="reference"`` (the default) takes the learning rate that ``base_lr="auto"`` picked for
    the same task and method in the offline reference of this backbone (VTAB-1k sizes), and the
    method's default where the reference has no such cell (a search would double the demo's time);
    ``"auto"`` always searches; ``None`` uses the defaults.
    """
    from ..analysis.reference.offline_runs import reference_file, tuned_lr
    from ..backbones.load import backbone_name
    from ..config import TrainConfig
    from ..data.registry import load_task
    from ..methods.factory import make_model
    from ..methods.registry import inference_model, parse_method
    from ..training.batches import evaluate
    from ..training.loop import train

    vit = _backbone(backbone, img_size)
    reference = reference_file(backbone_name(vit), vit.patch_embed.img_size[0])  # the lrs picked for this backbone
    results = []
    for task in tasks:
        if n_train >= REFIT_IMAGES:  # the reference's refit: train800val200, no validation
            train_set, val_set = load_task(task, "trainval", vit, n=n_train, seed=seed), None
        else:
            train_set = load_task(task, "train", vit, n=n_train, seed=seed)
            val_set = load_task(task, "val", vit, n=max(50, n_train // 4), seed=seed)
        test_set = load_task(task, "test", vit, n=n_test, seed=seed)
        for method in methods:
            torch.manual_seed(seed)
            prompt_kw = {"length": length} if parse_method(method)[0].has_prompts else {}
            model = make_model(method, vit, train_set.num_classes, seed=seed, **prompt_kw)  # --seed reaches every method
            lr = base_lr
            if base_lr == "reference":  # the reference's pick; no cell yet: the method's default (no search)
                lr = tuned_lr(task, method, reference)
                lr = None if lr == "auto" else lr
            cfg = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(train_set)), base_lr=lr,
                              weight_decay=1e-4, seed=seed, warmup_epochs=1, progress=progress, amp=amp,
                              threads=threads)  # the reference protocol's recipe
            t0 = time.time()
            hist = train(model, train_set, val_set, cfg)
            fast = inference_model(model)
            test = evaluate(fast, test_set)
            rep = model.parameter_report()
            results.append({"task": task, "group": train_set.info.group, "method": method,
                            "accuracy": test["acc"], "val_acc": hist.best_val_acc,
                            "trainable": rep["trainable"], "percent": rep["percent"],
                            "seconds": time.time() - t0, "cached": hist.cached_features,
                            "status": hist.status, "base_lr": hist.base_lr, "amp": hist.amp,
                            "lr_from": "reference" if base_lr == "reference" and lr is not None else
                                       "default" if lr is None else "search" if lr == "auto" else "given",
                            "threads": hist.threads,
                            "search_seconds": hist.lr_search.seconds if hist.lr_search else 0.0})
            print(f"  {task:<12} {method:<12} acc={test['acc']:.3f}  trainable={rep['trainable']:>9,}  "
                  f"base_lr={hist.base_lr:<8.3g} ({results[-1]['lr_from']}) {time.time() - t0:5.1f}s", flush=True)
    return results


def directions_text(path=None) -> str:
    """The offline reference (``path``: another backbone's) next to the paper, or how to make it."""
    from ..analysis.reference.findings import format_directions, format_targets
    from ..errors import VPTError
    try:
        table = (format_directions(path) + "\n\nThe course's targets (see the README), checked on the offline reference:\n"
                 + format_targets(path))
    except VPTError as e:
        return f"(no offline reference to compare with: {e})"
    return ("What the course teaches, measured: group means of the offline reference (VTAB-1k protocol, 3 seeds, "
            "`python -m vpt_explore reference`)\nnext to the paper's (ViT-B/16, Table 1).\n" + table)


def format_table(results: List[Dict], tasks, methods) -> str:
    """Methods as rows, tasks as columns (test accuracy %), plus trainable params and time."""
    by = {(r["task"], r["method"]): r for r in results}
    head = f"{'method':<12}" + "".join(f"{t:>12}" for t in tasks) + f"{'mean':>8}{'trainable':>12}{'% of bb':>9}{'sec':>7}"
    lines = [head, "-" * len(head)]
    for m in methods:
        rows = [by[(t, m)] for t in tasks if (t, m) in by]
        if not rows:
            continue
        accs = "".join(f"{100 * by[(t, m)]['accuracy']:>12.1f}" if (t, m) in by else f"{'-':>12}" for t in tasks)
        mean = 100 * sum(r["accuracy"] for r in rows) / len(rows)
        lines.append(f"{m:<12}{accs}{mean:>8.1f}{rows[0]['trainable']:>12,}{rows[0]['percent']:>8.2f}%"
                     f"{sum(r['seconds'] for r in rows):>7.0f}")
    return "\n".join(lines)


def save_figure(results: List[Dict], tasks, methods, path: Path) -> Path:
    """Grouped bars (accuracy per task and method) and accuracy vs trainable parameters."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.6, 1])
    by = {(r["task"], r["method"]): r for r in results}
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, [100 * by[(t, m)]["accuracy"] if (t, m) in by else 0 for t in tasks], width, label=m)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({by[(t, methods[0])]['group']})" if (t, methods[0]) in by else t
                                      for t in tasks])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Transfer methods on the offline suite (cf. paper Table 1)")
    ax.legend(ncols=len(methods), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    for m in methods:
        rows = [by[(t, m)] for t in tasks if (t, m) in by]
        if rows:
            ax2.scatter(rows[0]["trainable"], 100 * sum(r["accuracy"] for r in rows) / len(rows), s=40)
            ax2.annotate(m, (rows[0]["trainable"], 100 * sum(r["accuracy"] for r in rows) / len(rows)),
                         fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_xlabel("trainable parameters per task (log)")
    ax2.set_ylabel("mean test accuracy (%)")
    ax2.set_title("Accuracy vs parameters tuned")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore demo", description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default=None,
                    help="dinov2-s14-offline (default, at 56 px: the 'cpu' profile) | tiny-dino | tiny | a timm name")
    ap.add_argument("--img-size", type=int, default=None, help="input size (DINOv2: a multiple of 14, 28-518)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help=f"default: the paper's headline methods; all seven: {' '.join(ALL_METHODS)}")
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=REFIT_IMAGES,
                    help="training images per task (default 1000: train800val200, the reference's refit; fewer: the "
                         "train split, validated on val)")
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--length", type=int, default=10, help="prompt length p")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-lr", default="reference",
                    help="'reference' (default: the lr base_lr='auto' picked for the offline reference, else a "
                         "search), 'auto' (always search on validation), 'default' (the method table) or a number")
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--progress", action="store_true", help="show a progress bar per run")
    a = ap.parse_args(argv)
    from ..methods.registry import parse_method
    from ..config import PromptConfig, TrainConfig
    from ..errors import ConfigError
    from ..data.registry import list_tasks
    for m in a.methods:
        parse_method(m)  # clear error for an unknown method before anything runs
    base_lr = None if a.base_lr == "default" else a.base_lr
    if base_lr not in (None, "auto", "reference"):
        try:
            base_lr = float(base_lr)
        except ValueError:
            raise ConfigError(f"--base-lr={a.base_lr!r} must be 'reference', 'auto', 'default' or a number > 0") from None
    TrainConfig(epochs=a.epochs, seed=a.seed, base_lr=None if base_lr == "reference" else base_lr)  # checks first
    PromptConfig(length=a.length)
    for flag, value in (("--n-train", a.n_train), ("--n-test", a.n_test)):
        if value < 1:
            raise ConfigError(f"{flag}={value} must be an integer >= 1")
    known = {t.name for t in list_tasks()}
    for t in a.tasks:
        if t not in known:
            from ..errors import bad_choice
            raise bad_choice("--tasks", t, sorted(known))
    from ..training.threads import pick_threads
    from ..training.recipe import resolve_amp
    amp = resolve_amp("auto", "cpu")[0]
    print(f"vpt_explore demo: backbone={a.backbone or 'dinov2-s14-offline'}, {pick_threads()} of {os.cpu_count()} "
          f"CPU threads (the free ones), amp={amp or 'fp32'}, offline, {a.n_train} train images/task, "
          f"{a.epochs} epochs, p={a.length}", flush=True)
    t0 = time.time()
    results = run(a.methods, a.tasks, a.backbone, a.epochs, a.n_train, a.n_test, seed=a.seed,
                  length=a.length, out=a.out, progress=a.progress, base_lr=base_lr, img_size=a.img_size)
    print()
    print(format_table(results, a.tasks, a.methods))
    from ..analysis.reference.compare import format_compare
    from ..analysis.reference.offline_runs import reference_file as _ref_file
    from ..errors import VPTError
    try:
        ref_path = _ref_file(a.backbone) if a.backbone else None
        print("\nYour runs next to the offline reference (same protocol, 3 seeds):\n" + format_compare(
            [{"task": r["task"], "method": r["method"], "acc": r["accuracy"]} for r in results], path=ref_path))
    except VPTError as e:
        print(f"(no offline reference for this backbone: {e})")
    search = sum(r["search_seconds"] for r in results)
    if search:
        print(f"(base_lr='auto': the learning-rate searches took {search:.0f} s of the "
              f"{sum(r['seconds'] for r in results):.0f} s of training)")
    from ..analysis.reference.offline_runs import reference_file
    print("\n" + directions_text(reference_file(a.backbone) if a.backbone else None))
    out = Path(a.out)
    fig = save_figure(results, a.tasks, a.methods, out / "demo.png")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nfigure: {fig}   results: {out / 'results.json'}   total {time.time() - t0:.0f}s")
    return 0
